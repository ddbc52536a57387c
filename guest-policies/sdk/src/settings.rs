//! Policy settings: the JSON document configured per policy.

use serde::de::DeserializeOwned;

/// Parses settings JSON into `T`; an empty document means all defaults.
/// The error names the policy's field and what is wrong with it.
pub fn parse<T: DeserializeOwned + Default>(settings: &str) -> Result<T, String> {
    if settings.trim().is_empty() || settings.trim() == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))
}
