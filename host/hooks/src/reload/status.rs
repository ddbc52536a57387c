//! What `GET /status` reports: every policy with its source, the version
//! that serves, and the last reload error; and the config file's state.

use parking_lot::RwLock;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The newest version serves.
    Serving,
    /// A newer version was refused and the last good one serves, or the
    /// API server does not serve a kind the policy needs
    /// (`missingKinds` says which).
    Degraded,
    /// No version could be loaded; the policy does not serve.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub id: String,
    pub hook: String,
    /// The configured source: a path or `oci://` reference.
    pub source: String,
    pub state: State,
    /// `sha256:` of the serving component.
    pub digest: Option<String>,
    /// For registry sources, the immutable reference that serves.
    pub resolved: Option<String>,
    /// The artifact's `org.opencontainers.image.version`, if any.
    pub version: Option<String>,
    /// The public key that signed the serving version, when
    /// `signatures.publicKeys` requires signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Versions swapped in since start (1: the first one).
    pub generation: u64,
    pub loaded_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Why the policy is degraded for want of cluster data: a sentence
    /// naming the kinds (and their CRDs) the API server does not serve.
    pub missing_kinds: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The watched config file.
    pub file: Option<String>,
    pub loaded_at: Option<String>,
    /// Why the newest config file was refused (the previous one applies).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub config: ConfigStatus,
    pub policies: Vec<PolicyStatus>,
}

/// Shared between the reloader (writes) and the status endpoint (reads).
#[derive(Default)]
pub struct Status {
    report: RwLock<Report>,
}

impl Status {
    pub fn report(&self) -> Report {
        self.report.read().clone()
    }

    pub fn set(&self, report: Report) {
        *self.report.write() = report;
    }
}

/// Now, RFC 3339.
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}
