//! Policy settings: the JSON document configured per policy, parsed into
//! the policy's own type.

use serde::de::DeserializeOwned;

/// A policy's settings. Derive `serde::Deserialize` (with
/// `#[serde(default)]` where fields may be left out) and implement
/// [`check`](Settings::check) for what the types cannot say.
pub trait Settings: DeserializeOwned {
    /// Refuses values the type admits but the policy cannot use (an empty
    /// label key, a zero timeout), naming the field and what to set.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Parses and checks settings JSON; an empty document or `null` is `{}`.
/// Errors start with `invalid settings:` and name the field by its path
/// (`divisors.ssd: invalid type: ...`).
pub fn parse<S: Settings>(json: &str) -> Result<S, String> {
    let json = match json.trim() {
        "" | "null" => "{}",
        json => json,
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let settings: S = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| format!("invalid settings: {}", describe(&e)))?;
    deserializer
        .end()
        .map_err(|e| format!("invalid settings: {e}"))?;
    settings
        .check()
        .map_err(|e| format!("invalid settings: {e}"))?;
    Ok(settings)
}

/// The error prefixed with where it is: the field's path, or its parent's
/// when the message names the field itself (``unknown field `x` ``,
/// `pollMs must be at least 1`).
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let message = e.inner().to_string();
    let mut segments: Vec<String> = e.path().iter().map(ToString::to_string).collect();
    if segments.last().is_some_and(|field| {
        message.starts_with(field.as_str()) || message.contains(&format!("`{field}`"))
    }) {
        segments.pop();
    }
    if segments.is_empty() {
        return message;
    }
    let mut path = String::new();
    for segment in segments {
        if !path.is_empty() && !segment.starts_with('[') {
            path.push('.');
        }
        path.push_str(&segment);
    }
    format!("{path}: {message}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::{Settings, parse};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        topology_key: String,
        #[serde(default)]
        weights: BTreeMap<String, u8>,
    }

    impl Settings for Sample {
        fn check(&self) -> Result<(), String> {
            match self.topology_key.as_str() {
                "" => Err("topologyKey must name a node label".into()),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn a_bad_value_is_named_by_its_path() {
        let e = parse::<Sample>(r#"{"topologyKey": "zone", "weights": {"ssd": 300}}"#).unwrap_err();
        assert!(
            e.starts_with("invalid settings: weights.ssd: invalid value: integer `300`"),
            "{e}"
        );
    }

    #[test]
    fn a_field_the_message_names_is_not_named_twice() {
        let e = parse::<Sample>(r#"{"topologyKye": "zone"}"#).unwrap_err();
        assert!(
            e.starts_with("invalid settings: unknown field `topologyKye`, expected `topologyKey`"),
            "{e}"
        );
    }

    #[test]
    fn the_check_runs_and_empty_means_defaults() {
        let e = parse::<Sample>("").unwrap_err();
        assert_eq!(e, "invalid settings: topologyKey must name a node label");
        let s: Sample = parse(r#" {"topologyKey": "zone"} "#).unwrap();
        assert_eq!(s.topology_key, "zone");
        assert!(parse::<Sample>(r#"{"topologyKey": "zone"} x"#).is_err());
    }
}
