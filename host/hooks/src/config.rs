//! The configuration file (YAML). Invalid configuration is refused at start
//! with a message naming the field.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use steward_cluster::DEFAULT_DISCOVERY_INTERVAL;
use steward_oci::signature::PublicKey;
use steward_runtime::MAX_MEMORY_MIB;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Where cluster state comes from.
    pub cluster: ClusterSource,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// The HTTPS admission webhook server; needed by admission policies.
    #[serde(default)]
    pub admission: Option<AdmissionServerConfig>,
    /// The reconcile controller (leader election, retry backoff).
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// Directory of precompiled components; default `~/.cache/steward/modules`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub registries: RegistriesConfig,
    /// Signatures required of policies pulled from registries.
    #[serde(default)]
    pub signatures: SignaturesConfig,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Directory the config file is in; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself (watched by `serve`), when loaded from one.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// How policies are fetched from OCI registries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegistriesConfig {
    /// Registries (`host:port`) reached over plain HTTP. Loopback
    /// registries always are; `STEWARD_INSECURE_REGISTRIES` adds more.
    pub insecure: Vec<String>,
    /// How often a tag is checked for a new digest.
    pub poll_interval_ms: u64,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            insecure: Vec::new(),
            poll_interval_ms: 60_000,
        }
    }
}

/// Which signatures a policy pulled from a registry must carry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SignaturesConfig {
    /// PEM public keys (ECDSA P-256, as `cosign generate-key-pair` and
    /// openssl write them). When any is set, every `oci://` policy version
    /// must carry a cosign signature by one of them, or it is refused.
    pub public_keys: Vec<PathBuf>,
}

/// Where a policy's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ModuleSource {
    /// A local file, watched for changes.
    File(PathBuf),
    /// `oci://registry/repository:tag` (polled for a new digest) or
    /// `oci://registry/repository@sha256:...` (pinned, never changes).
    Oci(steward_oci::Reference),
}

impl TryFrom<String> for ModuleSource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with("oci://") {
            s.parse()
                .map(ModuleSource::Oci)
                .map_err(|e: anyhow::Error| e.to_string())
        } else if s.is_empty() {
            Err("empty: give a .wasm path or oci://registry/repository:tag".into())
        } else {
            Ok(ModuleSource::File(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::File(path) => write!(f, "{}", path.display()),
            ModuleSource::Oci(r) => write!(f, "oci://{r}"),
        }
    }
}

/// Exactly one of `snapshot` or `kubeconfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ClusterFields")]
pub enum ClusterSource {
    /// A multi-document YAML of Kubernetes objects.
    Snapshot(PathBuf),
    /// A live cluster, watched.
    Kubeconfig {
        /// A kubeconfig file; `""` uses the in-cluster service account or
        /// the default kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
        path: String,
        /// How often the API server's discovery is asked which of the
        /// kinds the policies need it serves (a CRD installed or removed
        /// later is picked up within this).
        discovery_interval: Duration,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterFields {
    snapshot: Option<PathBuf>,
    kubeconfig: Option<String>,
    discovery_interval_seconds: Option<u64>,
}

impl TryFrom<ClusterFields> for ClusterSource {
    type Error = String;

    fn try_from(f: ClusterFields) -> Result<Self, String> {
        match (f.snapshot, f.kubeconfig, f.discovery_interval_seconds) {
            (Some(_), None, Some(_)) => Err(
                "discoveryIntervalSeconds applies to a kubeconfig source; a snapshot is read once"
                    .into(),
            ),
            (Some(s), None, None) => Ok(ClusterSource::Snapshot(s)),
            (None, Some(_), Some(0)) => Err("discoveryIntervalSeconds must be at least 1".into()),
            (None, Some(path), seconds) => Ok(ClusterSource::Kubeconfig {
                path,
                discovery_interval: seconds.map_or(DEFAULT_DISCOVERY_INTERVAL, Duration::from_secs),
            }),
            _ => Err(
                "set exactly one of snapshot (a YAML file of objects) or kubeconfig \
                      (a kubeconfig path, or \"\" for in-cluster)"
                    .into(),
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP server (extender, health, metrics).
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    pub connections: ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8686)),
            max_body_bytes: 32 << 20,
            connections: ConnectionLimits::default(),
        }
    }
}

/// What one listener grants its clients. A client past a limit is
/// disconnected, so slow, idle or numerous clients cannot take the server
/// away from the ones it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this time.
    pub header_read_timeout_ms: u64,
    /// Its body must arrive within this time once the headers have.
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection without a request for this long is closed
    /// (kube-scheduler's and kube-apiserver's clients reconnect).
    pub idle_timeout_ms: u64,
    /// Open connections at most; further clients wait to be accepted.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 90_000,
            max_connections: 4096,
        }
    }
}

impl ConnectionLimits {
    fn check(&self, section: &str) -> Result<()> {
        for (field, ms) in [
            ("headerReadTimeoutMs", self.header_read_timeout_ms),
            ("bodyReadTimeoutMs", self.body_read_timeout_ms),
            ("idleTimeoutMs", self.idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                bail!("{section}.connections.{field}: {ms} is outside 100..=3600000");
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!(
                "{section}.connections.maxConnections: {} is outside 1..=1000000",
                self.max_connections
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Path prefix of the extender verbs (kube-scheduler's `urlPrefix` path).
    pub url_prefix: String,
    /// How long a filtered pod counts as in flight without a binding.
    pub in_flight_seconds: u64,
    /// How long a filter that refused nodes because other pods are in
    /// flight waits for them to be bound before answering (0: never).
    pub filter_wait_ms: u64,
}

/// The longest `scheduler.filterWaitMs`: well under kube-scheduler's
/// default extender `httpTimeout` (5 s), with room for the evaluations.
pub const MAX_FILTER_WAIT_MS: u64 = 4_000;

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            url_prefix: "/scheduler".into(),
            in_flight_seconds: 30,
            filter_wait_ms: 2_000,
        }
    }
}

/// The admission webhook's HTTPS listener. The certificate and key files
/// (PEM) are re-read when they change; open connections keep going.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionServerConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Largest AdmissionReview accepted (kube-apiserver sends at most a few
    /// MiB: an object and its old version).
    #[serde(default = "default_admission_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub connections: ConnectionLimits,
}

fn default_admission_body_bytes() -> usize {
    8 << 20
}

/// Refuses a request-body limit no real request fits in.
fn check_body_limit(field: &str, bytes: usize) -> Result<()> {
    const RANGE: std::ops::RangeInclusive<usize> = 1024..=(1 << 30);
    if !RANGE.contains(&bytes) {
        bail!(
            "{field}: {bytes} is outside {}..={} (bytes); every request would be refused",
            RANGE.start(),
            RANGE.end()
        );
    }
    Ok(())
}

/// The reconcile controller: only the holder of the Lease reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Namespace of the `coordination.k8s.io/v1` Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    /// Identity written into the Lease; default the host name.
    pub identity: Option<String>,
    /// client-go defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub lease_duration_seconds: u64,
    pub renew_deadline_seconds: u64,
    pub retry_period_seconds: u64,
    /// Retry after a failed reconcile: doubles from the base to the cap.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            lease_namespace: "kube-system".into(),
            lease_name: "steward-reconcile".into(),
            identity: None,
            lease_duration_seconds: 15,
            renew_deadline_seconds: 10,
            retry_period_seconds: 2,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Scheduler,
    Admission,
    Reconcile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Errors refuse: every node fails, every review is denied.
    #[default]
    FailClosed,
    /// Errors are logged and the policy is skipped.
    FailOpen,
}

/// What an admission policy's verdicts do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionMode {
    /// Denials deny, patches apply, actions run.
    #[default]
    Enforce,
    /// Denials become warnings on an allowed request; patches apply;
    /// actions are skipped (nothing was refused that they would resolve).
    Warn,
    /// Everything is allowed unchanged; what the policy would have done is
    /// logged and counted.
    Monitor,
}

impl AdmissionMode {
    pub fn name(self) -> &'static str {
        match self {
            AdmissionMode::Enforce => "enforce",
            AdmissionMode::Warn => "warn",
            AdmissionMode::Monitor => "monitor",
        }
    }
}

/// How a policy reaches the PD of a TiDB cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PdConfig {
    /// Base URL; `{cluster}` and `{namespace}` are replaced by the TiDB
    /// cluster's name and namespace (tidb-operator's service naming).
    pub url: String,
    /// Timeout of one PD call. A guest's PD reads also stop at its deadline.
    pub timeout_ms: u64,
    /// Mutual TLS, for TiDB clusters with `tlsCluster` enabled; plain HTTP
    /// when absent.
    pub tls: Option<PdTlsConfig>,
}

/// Where the PD client finds the CA that issued PD's certificate and its
/// own client certificate and key: files (paths may contain `{cluster}` and
/// `{namespace}`), or a Secret in the TiDB cluster's namespace holding
/// `ca.crt`, `tls.crt` and `tls.key`, as tidb-operator's
/// `<cluster>-cluster-client-secret` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdTlsConfig {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The Secret's name; `{cluster}` is replaced by the TiDB cluster's.
    pub secret: Option<String>,
}

impl PdTlsConfig {
    fn check(&self, at: &str) -> Result<()> {
        match (&self.secret, &self.ca_file, &self.cert_file, &self.key_file) {
            (Some(_), None, None, None) | (None, Some(_), None, None) => Ok(()),
            (None, Some(_), Some(_), Some(_)) => Ok(()),
            (Some(_), ..) => {
                bail!("{at}.pd.tls: give either secret or caFile/certFile/keyFile, not both")
            }
            (None, None, ..) => bail!(
                "{at}.pd.tls: name the CA of PD's certificate with caFile (and the client \
                 certificate with certFile and keyFile), or a Secret with secret"
            ),
            (None, Some(_), ..) => {
                bail!("{at}.pd.tls: certFile and keyFile go together: give both or neither")
            }
        }
    }
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig {
            url: "http://{cluster}-pd.{namespace}:2379".into(),
            timeout_ms: 1_000,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    pub id: String,
    pub hook: Hook,
    /// The component: a `.wasm` path, or an `oci://` reference.
    pub module: ModuleSource,
    /// Which pods the policy sees; empty selects every pod.
    #[serde(default)]
    pub select: PodSelectorConfig,
    /// The policy's own settings, handed to it as JSON.
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    #[serde(default = "default_memory_mib", rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Admission policies: what a verdict does.
    #[serde(default)]
    pub mode: AdmissionMode,
    /// Admission policies: whether the policy may return a JSONPatch.
    #[serde(default)]
    pub mutate: bool,
    /// Where the policy's PD reads and PD actions go.
    #[serde(default)]
    pub pd: PdConfig,
}

fn default_deadline_ms() -> u64 {
    100
}

fn default_memory_mib() -> u64 {
    64
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSelectorConfig {
    #[serde(default)]
    pub scheduler_names: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<MatchExpression>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchExpression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Config::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.file = Some(path.to_path_buf());
        config
            .signature_keys()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config> {
        let de = serde_norway::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // YAML errors may already start with the path.
            if path == "." || inner.starts_with(&format!("{path}: ")) {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("{path}: {inner}")
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !self.scheduler.url_prefix.starts_with('/') {
            bail!("scheduler.urlPrefix: must start with `/`");
        }
        if self.scheduler.filter_wait_ms > MAX_FILTER_WAIT_MS {
            bail!(
                "scheduler.filterWaitMs: {} is above {MAX_FILTER_WAIT_MS}; a filter that waits \
                 longer risks kube-scheduler's extender httpTimeout (5 s by default)",
                self.scheduler.filter_wait_ms
            );
        }
        check_body_limit("server.maxBodyBytes", self.server.max_body_bytes)?;
        self.server.connections.check("server")?;
        if let Some(admission) = &self.admission {
            check_body_limit("admission.maxBodyBytes", admission.max_body_bytes)?;
            admission.connections.check("admission")?;
            if !self.policies.iter().any(|p| p.hook == Hook::Admission) {
                bail!(
                    "admission: the webhook server would serve no policy; add a policy with \
                     hook: admission or remove the admission section"
                );
            }
        }
        if self.policies.is_empty() {
            bail!(
                "policies: none configured, so every request would pass unexamined; add at \
                 least one policy"
            );
        }
        let r = &self.reconcile;
        if !(r.retry_period_seconds < r.renew_deadline_seconds
            && r.renew_deadline_seconds < r.lease_duration_seconds)
        {
            bail!(
                "reconcile: retryPeriodSeconds ({}) < renewDeadlineSeconds ({}) < \
                 leaseDurationSeconds ({}) must hold",
                r.retry_period_seconds,
                r.renew_deadline_seconds,
                r.lease_duration_seconds
            );
        }
        if r.backoff_base_ms == 0 || r.backoff_max_ms < r.backoff_base_ms {
            bail!("reconcile: backoffBaseMs must be at least 1 and at most backoffMaxMs");
        }
        if !(100..=86_400_000).contains(&self.registries.poll_interval_ms) {
            bail!(
                "registries.pollIntervalMs: {} is outside 100..=86400000",
                self.registries.poll_interval_ms
            );
        }
        let mut ids = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            if p.id.is_empty() || !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!(
                    "{at}.id: `{}` must be non-empty letters, digits and `-`",
                    p.id
                );
            }
            if !ids.insert(&p.id) {
                bail!("{at}.id: `{}` is used by an earlier policy", p.id);
            }
            if !(1..=60_000).contains(&p.deadline_ms) {
                bail!("{at}.deadlineMs: {} is outside 1..=60000", p.deadline_ms);
            }
            if !(1..=MAX_MEMORY_MIB).contains(&p.memory_mib) {
                bail!(
                    "{at}.memoryMiB: {} is outside 1..={MAX_MEMORY_MIB}",
                    p.memory_mib
                );
            }
            if p.hook != Hook::Admission && (p.mutate || p.mode != AdmissionMode::Enforce) {
                bail!("{at}: mode and mutate apply to admission policies only");
            }
            if p.hook == Hook::Admission && self.admission.is_none() {
                bail!(
                    "{at}: an admission policy needs the admission section (listen, certFile, \
                     keyFile) for the HTTPS webhook server"
                );
            }
            if !p.pd.url.starts_with("http://") && !p.pd.url.starts_with("https://") {
                bail!(
                    "{at}.pd.url: `{}` must start with http:// or https://",
                    p.pd.url
                );
            }
            match (&p.pd.tls, p.pd.url.starts_with("https://")) {
                (Some(tls), true) => tls.check(&at)?,
                (Some(_), false) => bail!(
                    "{at}.pd.url: `{}` is plain HTTP but pd.tls is set; use https://",
                    p.pd.url
                ),
                (None, true) => bail!(
                    "{at}.pd.url: `{}` is HTTPS; PD's certificates come from the cluster's own \
                     CA, so name it (and the client certificate) in pd.tls",
                    p.pd.url
                ),
                (None, false) => {}
            }
            if !(1..=60_000).contains(&p.pd.timeout_ms) {
                bail!(
                    "{at}.pd.timeoutMs: {} is outside 1..=60000",
                    p.pd.timeout_ms
                );
            }
            for (j, e) in p.select.match_expressions.iter().enumerate() {
                if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&e.operator.as_str()) {
                    bail!(
                        "{at}.select.matchExpressions[{j}].operator: `{}` is not one of In, NotIn, \
                         Exists, DoesNotExist",
                        e.operator
                    );
                }
            }
        }
        Ok(())
    }

    /// What is legal but probably not meant, as sentences to log loudly.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.policies.iter().any(|p| p.hook == Hook::Scheduler) {
            warnings.push(format!(
                "no policy has hook: scheduler, so the extender under {} passes every pod to \
                 every node; point kube-scheduler at it only if that is meant",
                self.scheduler.url_prefix
            ));
        }
        warnings
    }

    /// A configuration with one scheduler policy selecting every pod, over
    /// a snapshot (for `steward run`).
    pub fn single_policy(
        snapshot: PathBuf,
        module: PathBuf,
        settings: serde_json::Value,
    ) -> Config {
        Config {
            cluster: ClusterSource::Snapshot(snapshot),
            server: ServerConfig::default(),
            scheduler: SchedulerConfig::default(),
            admission: None,
            reconcile: ReconcileConfig::default(),
            cache_dir: None,
            registries: RegistriesConfig::default(),
            signatures: SignaturesConfig::default(),
            policies: vec![PolicyConfig {
                id: module
                    .file_stem()
                    .map(|s| s.to_string_lossy().replace('_', "-"))
                    .unwrap_or_else(|| "policy".into()),
                hook: Hook::Scheduler,
                module: ModuleSource::File(module),
                select: PodSelectorConfig::default(),
                settings,
                failure_mode: FailureMode::FailClosed,
                deadline_ms: default_deadline_ms(),
                memory_mib: default_memory_mib(),
                mode: AdmissionMode::Enforce,
                mutate: false,
                pd: PdConfig::default(),
            }],
            base_dir: PathBuf::new(),
            file: None,
        }
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The public keys of `signatures.publicKeys`, read now: they are read
    /// again for every registry version, so a rotated key file applies to
    /// the next version without a restart.
    pub fn signature_keys(&self) -> Result<Vec<PublicKey>> {
        self.signatures
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, path)| {
                PublicKey::load(&self.resolve(path))
                    .with_context(|| format!("signatures.publicKeys[{i}]"))
            })
            .collect()
    }

    /// The precompiled-component cache directory.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(dir) => Some(self.resolve(dir)),
            None => default_cache_dir(),
        }
    }
}

/// `~/.cache/steward/modules`: precompiled components when the config
/// names no `cacheDir` (or there is no config).
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/steward/modules"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "cluster: {snapshot: s.yaml}\npolicies:\n- id: pd-quorum\n  hook: scheduler\n  module: p.wasm\n";

    fn refusal(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("the configuration was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let zero = refusal(&format!("{MINIMAL}server: {{maxBodyBytes: 0}}\n"));
        assert!(
            zero.starts_with("server.maxBodyBytes: 0 is outside 1024..="),
            "{zero}"
        );
        let none = refusal("cluster: {snapshot: s.yaml}\npolicies: []\n");
        assert!(none.starts_with("policies: none configured"), "{none}");
        let wait = refusal(&format!("{MINIMAL}scheduler: {{filterWaitMs: 5000}}\n"));
        assert!(
            wait.starts_with("scheduler.filterWaitMs: 5000 is above 4000"),
            "{wait}"
        );
        let idle = refusal(&format!(
            "{MINIMAL}admission: {{listen: 127.0.0.1:8443, certFile: c, keyFile: k}}\n"
        ));
        assert!(
            idle.starts_with("admission: the webhook server would serve no policy"),
            "{idle}"
        );
    }

    #[test]
    fn no_scheduler_policy_is_legal_but_warned_about() {
        let admission_only = "cluster: {snapshot: s.yaml}\nadmission: {listen: 127.0.0.1:8443, \
             certFile: c, keyFile: k}\npolicies:\n- id: guard\n  hook: admission\n  module: g.wasm\n";
        let c = Config::parse(admission_only).unwrap();
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("passes every pod to every node"),
            "{warnings:?}"
        );
        assert!(Config::parse(MINIMAL).unwrap().warnings().is_empty());
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8686");
        assert_eq!(c.scheduler.url_prefix, "/scheduler");
        assert_eq!(c.scheduler.filter_wait_ms, 2_000);
        let p = &c.policies[0];
        assert_eq!((p.deadline_ms, p.memory_mib), (100, 64));
        assert_eq!(p.failure_mode, FailureMode::FailClosed);
        assert_eq!(p.module, ModuleSource::File("p.wasm".into()));
        assert_eq!(c.registries, RegistriesConfig::default());
    }

    #[test]
    fn modules_come_from_files_or_oci_references() {
        let c =
            Config::parse(&MINIMAL.replace("p.wasm", "oci://127.0.0.1:5000/steward/pd-quorum:1.0"))
                .unwrap();
        let ModuleSource::Oci(r) = &c.policies[0].module else {
            panic!("an OCI source: {:?}", c.policies[0].module);
        };
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("steward/pd-quorum", Some("1.0"))
        );
        assert_eq!(
            c.policies[0].module.to_string(),
            "oci://127.0.0.1:5000/steward/pd-quorum:1.0"
        );
    }

    #[test]
    fn admission_policies_read_mode_mutation_and_pd() {
        let c = Config::parse(
            "cluster: {snapshot: s.yaml}\nadmission: {listen: 127.0.0.1:8443, certFile: c.pem, \
             keyFile: k.pem}\npolicies:\n- id: guard\n  hook: admission\n  module: g.wasm\n  \
             mode: warn\n  mutate: true\n  pd: {url: 'http://127.0.0.1:2379'}\n",
        )
        .unwrap();
        let a = c.admission.as_ref().unwrap();
        assert_eq!((a.listen.port(), a.max_body_bytes), (8443, 8 << 20));
        let p = &c.policies[0];
        assert_eq!((p.mode, p.mutate), (AdmissionMode::Warn, true));
        assert_eq!(
            (p.pd.url.as_str(), p.pd.timeout_ms),
            ("http://127.0.0.1:2379", 1_000)
        );
        let e = Config::parse(
            "cluster: {snapshot: s.yaml}\nadmission: {listen: 127.0.0.1:8443, certFile: c.pem, \
             keyFile: k.pem}\npolicies:\n- id: guard\n  hook: admission\n  module: g.wasm\n  \
             pd: {url: 'pd:2379'}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[0].pd.url: `pd:2379` must start"),
            "{e}"
        );
    }

    #[test]
    fn pd_tls_needs_https_and_one_source_of_material() {
        let with_pd = |pd: &str| format!("{MINIMAL}  pd: {pd}\n");
        let files = "tls: {caFile: '/tls/{cluster}/ca.crt', certFile: /tls/c, keyFile: /tls/k}";
        let c = Config::parse(&with_pd(&format!(
            "{{url: 'https://{{cluster}}-pd:2379', {files}}}"
        )))
        .unwrap();
        let tls = c.policies[0].pd.tls.clone().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some("/tls/{cluster}/ca.crt"));
        let secret =
            "{url: 'https://{cluster}-pd:2379', tls: {secret: '{cluster}-cluster-client-secret'}}";
        assert!(Config::parse(&with_pd(secret)).is_ok());
        for (pd, says) in [
            (
                "{url: 'https://pd:2379'}",
                "policies[0].pd.url: `https://pd:2379` is HTTPS; PD's certificates come from",
            ),
            (
                "{url: 'http://pd:2379', tls: {secret: s}}",
                "is plain HTTP but pd.tls is set",
            ),
            (
                "{url: 'https://pd:2379', tls: {secret: s, caFile: c}}",
                "give either secret or caFile/certFile/keyFile, not both",
            ),
            (
                "{url: 'https://pd:2379', tls: {caFile: c, certFile: x}}",
                "certFile and keyFile go together",
            ),
            (
                "{url: 'https://pd:2379', tls: {certFile: x, keyFile: y}}",
                "name the CA of PD's certificate with caFile",
            ),
        ] {
            let e = refusal(&with_pd(pd));
            assert!(e.contains(says), "{pd}: {e}");
        }
    }

    #[test]
    fn discovery_runs_every_30_s_unless_set_for_a_kubeconfig_source() {
        let live = |cluster: &str| {
            Config::parse(&MINIMAL.replace("cluster: {snapshot: s.yaml}", cluster))
                .map(|c| c.cluster)
        };
        let interval = |cluster: &str| match live(cluster).unwrap() {
            ClusterSource::Kubeconfig {
                discovery_interval, ..
            } => discovery_interval,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            interval("cluster: {kubeconfig: ''}"),
            Duration::from_secs(30)
        );
        assert_eq!(
            interval("cluster: {kubeconfig: '', discoveryIntervalSeconds: 2}"),
            Duration::from_secs(2)
        );
        let e = live("cluster: {kubeconfig: '', discoveryIntervalSeconds: 0}").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = live("cluster: {snapshot: s.yaml, discoveryIntervalSeconds: 5}").unwrap_err();
        assert!(
            e.to_string().contains("applies to a kubeconfig source"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse(&format!("{MINIMAL}  deadline: 5\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[0]: unknown field `deadline`"),
            "{e}"
        );
        let e = Config::parse(&format!("{MINIMAL}  memoryMiB: 4096\n")).unwrap_err();
        assert!(e.to_string().contains("policies[0].memoryMiB: 4096"), "{e}");
        let e = Config::parse(&MINIMAL.replace("scheduler\n", "schedular\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[0].hook: unknown variant `schedular`"),
            "{e}"
        );
        let e = Config::parse("cluster: {}\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("cluster: set exactly one of snapshot"),
            "{e}"
        );
        let e = Config::parse(&MINIMAL.replace("scheduler\n", "admission\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[0]: an admission policy needs the admission section"),
            "{e}"
        );
        let e = Config::parse(&format!("{MINIMAL}  mutate: true\n")).unwrap_err();
        assert!(e.to_string().contains("admission policies only"), "{e}");
        let e = Config::parse(&MINIMAL.replace("p.wasm", "oci://p:1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[0]: `oci://p:1` is not an OCI reference"),
            "{e}"
        );
        let twice = format!("{MINIMAL}- id: pd-quorum\n  hook: scheduler\n  module: q.wasm\n");
        let e = Config::parse(&twice).unwrap_err();
        assert!(
            e.to_string()
                .contains("policies[1].id: `pd-quorum` is used"),
            "{e}"
        );
    }

    #[test]
    fn signature_keys_are_read_at_load_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("steward-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("steward.yaml");
        std::fs::write(
            &file,
            format!("{MINIMAL}signatures:\n  publicKeys: [keys/release.pub]\n"),
        )
        .unwrap();
        let e = format!("{:#}", Config::load(&file).unwrap_err());
        assert!(
            e.contains("signatures.publicKeys[0]") && e.contains("cannot read the public key"),
            "{e}"
        );
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let (_, _, public) = steward_oci::signature::SigningKey::generate().unwrap();
        std::fs::write(dir.join("keys/release.pub"), public).unwrap();
        let config = Config::load(&file).unwrap();
        let keys = config.signature_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].name,
            dir.join("keys/release.pub").display().to_string()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
