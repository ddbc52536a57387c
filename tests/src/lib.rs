//! Shared helpers of Steward's cross-crate tests: built guests, fixtures,
//! the example snapshot, servers on loopback, a real registry.

pub mod registry;
pub mod tools;

pub mod pd_double;
pub mod statefulsets;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use steward::Hooks;
use steward::cluster::{Backend, ClusterCache, load_snapshot};
use steward::config::Config;
use steward::policy::PolicySet;
use steward::runtime::Runtime;
use steward::server::App;

pub mod campaign;
pub mod control_plane;
pub mod e2e;

/// The repository root.
pub fn root() -> PathBuf {
    xtask::workspace_root()
}

/// A file under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures").join(path)
}

pub fn fixture_json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(path)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The bundled snapshot of the seed's cluster.
pub fn example_snapshot() -> PathBuf {
    root().join("deploy/examples/basic-cluster.yaml")
}

/// A built guest component (builds the guests on first use).
pub fn guest(stem: &str) -> PathBuf {
    xtask::guest_wasm(stem).expect("guest components build")
}

/// The `steward:policy` interfaces a component of `world` may import: its
/// world's, never another's.
pub fn world_interfaces(world: &str) -> &'static [&'static str] {
    match world {
        "scheduler" => &["types", "cluster", "log", "scheduling"],
        "admission" => &["types", "cluster", "log", "pd", "actions", "reviewing"],
        "reconcile" => &["types", "cluster", "log", "pd", "actions", "reconciling"],
        other => panic!("{other} is not one of Steward's worlds"),
    }
}

/// `steward inspect --json` of a component, checked to import only the
/// interfaces of the world it implements; returns that world.
pub fn inspect_world(wasm: &std::path::Path) -> String {
    let (ok, stdout, stderr) = steward(&["inspect", wasm.to_str().unwrap(), "--json"]);
    assert!(ok, "steward inspect {} failed: {stderr}", wasm.display());
    let inspected: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let world = inspected["world"].as_str().unwrap().to_string();
    for import in inspected["imports"].as_array().unwrap() {
        let import = import.as_str().unwrap();
        if let Some(rest) = import.strip_prefix("steward:policy/") {
            let interface = rest.split('@').next().unwrap();
            assert!(
                world_interfaces(&world).contains(&interface),
                "{} implements {world} but imports {import}",
                wasm.display()
            );
        }
    }
    world
}

/// The `steward` binary, built on first use in the profile this crate was
/// built in: debug for tests, release for benches.
pub fn steward_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            let mut build = xtask::cargo();
            build.args(["build", "-p", "steward", "--bin", "steward"]);
            if profile == "release" {
                build.arg("--release");
            }
            xtask::run(&mut build).expect("the steward binary builds");
            xtask::target_dir().join(profile).join("steward")
        })
        .clone()
}

/// Runs the `steward` binary; returns (success, stdout, stderr).
pub fn steward(args: &[&str]) -> (bool, String, String) {
    steward_with_env(args, &[])
}

/// Runs the `steward` binary with extra environment variables.
pub fn steward_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(steward_bin())
        .args(args)
        .env("STEWARD_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run steward");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("steward-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One engine for the whole test process (the pooling allocator reserves
/// address space per engine). Precompiled components go to a temp dir.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("steward-tests-{}", std::process::id()));
        Runtime::new(Some(dir)).expect("runtime starts")
    })
}

/// A configuration from YAML policies (see [`expand_guests`]), over the
/// example snapshot. The admission section names files [`serve_webhook`]
/// does not read.
pub fn config(policies_yaml: &str) -> Config {
    let yaml = format!(
        "cluster: {{snapshot: {}}}\n{}policies:\n{}",
        example_snapshot().display(),
        admission_section(policies_yaml),
        expand_guests(policies_yaml)
    );
    Config::parse(&yaml).expect("test config is valid")
}

/// Replaces each `{stem}` (lowercase letters, digits, `_`; e.g.
/// `{pd_quorum}`) with the path of that built guest component.
pub fn expand_guests(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let stem_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if stem_len > 0 && after[stem_len..].starts_with('}') {
            out.push_str(&guest(&after[..stem_len]).display().to_string());
            rest = &after[stem_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Loads `config`'s policies with the host's loader, on a thread of its
/// own: callers may be inside an async runtime.
pub fn load_policies(runtime: &Runtime, config: &Config) -> anyhow::Result<PolicySet> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(PolicySet::load(runtime, config))
        })
        .join()
        .expect("the loading thread does not panic")
    })
}

/// The app over the example snapshot with the given policies.
pub fn app(policies_yaml: &str) -> App {
    let config = config(policies_yaml);
    let policies = load_policies(runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    load_snapshot(&cluster, &example_snapshot()).expect("snapshot loads");
    App::new(&config, Hooks::new(policies, cluster, Backend::Snapshot))
}

/// The app over the example snapshot plus the admission fixtures' claims
/// and volumes (`tests/fixtures/admission/storage.yaml`).
pub fn admission_app(policies_yaml: &str) -> App {
    let config = config(policies_yaml);
    let policies = load_policies(runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    load_snapshot(&cluster, &example_snapshot()).expect("snapshot loads");
    load_snapshot(&cluster, &fixture("admission/storage.yaml")).expect("storage fixture loads");
    App::new(&config, Hooks::new(policies, cluster, Backend::Snapshot))
}

/// A webhook served over HTTPS on loopback with a certificate of a fresh
/// test CA, from files in a fresh directory.
pub struct Webhook {
    pub addr: SocketAddr,
    pub ca: tls::TestCa,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Webhook {
    /// A new keep-alive connection trusting the test CA.
    pub async fn connect(&self) -> tls::HttpsClient {
        tls::HttpsClient::connect(self.addr, self.ca.client_config())
            .await
            .expect("TLS connection to the webhook")
    }
}

/// Serves the app's admission webhook (body limit `max_body_bytes`).
pub async fn serve_webhook(app: App, max_body_bytes: usize) -> Webhook {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("steward-webhook-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ca = tls::TestCa::new();
    ca.issue("webhook-1").write(&cert_file, &key_file);
    let listen = "127.0.0.1:0".parse().expect("a socket address");
    let addr = serve_admission(app, listen, &cert_file, &key_file, max_body_bytes)
        .await
        .expect("webhook serves");
    Webhook {
        addr,
        ca,
        cert_file,
        key_file,
    }
}

/// Serves the app's admission webhook over HTTPS on `listen` (port 0: any
/// free port) with the certificate and key of these files, through
/// `steward serve`'s own [`steward::server::serve_admission_on`]; returns
/// the bound address.
pub async fn serve_admission(
    app: App,
    listen: SocketAddr,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    max_body_bytes: usize,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let https = steward::server::serve_admission_on(
        listener,
        app,
        cert_file,
        key_file,
        max_body_bytes,
        steward::config::ConnectionLimits::default(),
    )?;
    tokio::spawn(async move { https.await.expect("webhook serves") });
    Ok(addr)
}

/// An AdmissionReview fixture (`tests/fixtures/admission/<name>.json`).
pub fn review_fixture(name: &str) -> serde_json::Value {
    fixture_json(&format!("admission/{name}.json"))
}

/// A second build of the misbehave guest, told apart by its answers: the
/// same component with its rejection text changed from `misbehave rejects`
/// to `misbehave REJECTS`.
pub fn misbehave_variant() -> Vec<u8> {
    guest_variant("misbehave", "misbehave rejects ", "misbehave REJECTS ")
}

/// A second build of the misbehave-admission guest, told apart by its
/// answers: its `deny` text changed from `misbehave denies` to
/// `misbehave DENIES`.
pub fn misbehave_admission_variant() -> Vec<u8> {
    guest_variant(
        "misbehave_admission",
        "misbehave denies ",
        "misbehave DENIES ",
    )
}

/// A built guest with one text in its data replaced by another of the same
/// length, so the component stays valid and only its answers change.
fn guest_variant(stem: &str, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "a same-length replacement");
    let mut wasm = std::fs::read(guest(stem)).expect("guest built");
    let at = wasm
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("the {stem} guest holds the text `{from}`"));
    wasm[at..at + to.len()].copy_from_slice(to.as_bytes());
    wasm
}

/// Which build answered a filter request under the misbehave guest:
/// `rejects` (the built guest, `reject-all`), `REJECTS` (its variant),
/// `pass` (`pass` behaviour) or `other: <answer>`.
pub fn misbehave_answer(answer: &serde_json::Value) -> String {
    let failed = answer["FailedNodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let reasons: Vec<&str> = failed.values().filter_map(|v| v.as_str()).collect();
    // Reasons read `<policy id>: <the guest's reason>`.
    let all = |text: &str| !reasons.is_empty() && reasons.iter().all(|r| r.contains(text));
    if all("misbehave rejects ") {
        "rejects".into()
    } else if all("misbehave REJECTS ") {
        "REJECTS".into()
    } else if reasons.is_empty()
        && answer["NodeNames"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    {
        "pass".into()
    } else {
        format!("other: {answer}")
    }
}

/// POSTs the `filter-nodenames.json` fixture; returns (status, answer).
pub async fn filter_fixture(addr: SocketAddr) -> (u16, serde_json::Value) {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    let body = BODY.get_or_init(|| {
        std::fs::read(fixture("extender/filter-nodenames.json")).expect("fixture exists")
    });
    let (status, text) = post(addr, "/scheduler/filter", body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls `check` every 20 ms until it returns Some, for at most `limit`.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    limit: std::time::Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The admission webhook's section (HTTPS on an ephemeral port, `tls.crt`
/// and `tls.key` beside the config) when `policies_yaml` has an admission
/// policy: Steward refuses a webhook server with nothing to serve.
fn admission_section(policies_yaml: &str) -> &'static str {
    if policies_yaml.contains("hook: admission") {
        "admission: {listen: 127.0.0.1:0, certFile: tls.crt, keyFile: tls.key}\n"
    } else {
        ""
    }
}

/// A host started from a config file by [`serve_config`].
pub struct Served {
    /// The extender, `/status` and `/metrics`.
    pub addr: SocketAddr,
    /// The admission webhook (HTTPS), when an admission policy is configured.
    pub webhook: Option<Webhook>,
    /// The watched config file.
    pub config_file: PathBuf,
}

/// Writes `yaml` as `steward.yaml` in `dir` (see [`config_yaml`]) with the
/// webhook's certificate of a fresh test CA beside it, and starts the host
/// from it the way `steward serve` does: reloader, extender, and the
/// admission webhook over HTTPS.
pub async fn serve_config(dir: &std::path::Path, policies_yaml: &str) -> Served {
    let file = dir.join("steward.yaml");
    std::fs::write(&file, config_yaml(policies_yaml)).expect("write config");
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ca = tls::TestCa::new();
    ca.issue("webhook-1").write(&cert_file, &key_file);
    let config = Config::load(&file).expect("config is valid");
    let app = App::start(&config).await.expect("host starts");
    let webhook = match &config.admission {
        None => None,
        Some(admission) => Some(Webhook {
            addr: serve_admission(
                app.clone(),
                admission.listen,
                &config.resolve(&admission.cert_file),
                &config.resolve(&admission.key_file),
                admission.max_body_bytes,
            )
            .await
            .expect("the webhook serves"),
            ca,
            cert_file,
            key_file,
        }),
    };
    Served {
        addr: serve(app).await,
        webhook,
        config_file: file,
    }
}

/// A config file's text: the example snapshot, the admission webhook when
/// `rest` has an admission policy (see [`admission_section`]), then `rest`
/// (policies and registries).
pub fn config_yaml(rest: &str) -> String {
    format!(
        "cluster: {{snapshot: {}}}
cacheDir: {}
{}{rest}",
        example_snapshot().display(),
        std::env::temp_dir()
            .join(format!("steward-tests-{}", std::process::id()))
            .display(),
        admission_section(rest)
    )
}

/// pd-quorum over the example snapshot, selecting every pod.
pub const PD_QUORUM: &str = "- id: pd-quorum\n  hook: scheduler\n  module: {pd_quorum}\n";

/// local-pv over the example snapshot, selecting every pod.
pub const LOCAL_PV: &str = "- id: local-pv\n  hook: scheduler\n  module: {local_pv}\n";

/// Serves `app` on an ephemeral loopback port under `/scheduler`; returns
/// its address.
pub async fn serve(app: App) -> SocketAddr {
    serve_under(app, "/scheduler").await
}

/// Serves `app` with the extender verbs under `url_prefix`.
pub async fn serve_under(app: App, url_prefix: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        steward::server::serve_on(listener, app, url_prefix)
            .await
            .expect("test server runs");
    });
    addr
}

/// A minimal HTTP/1.1 client: one POST, returns (status, body).
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    request(addr, "POST", path, body).await
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, b"").await
}

/// A GET to a server that may not listen yet: status 0 if nothing does.
pub async fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => get(addr, path).await,
        Err(e) => (0, e.to_string()),
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer (and close) before reading an oversized body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// Joins a chunked HTTP body (the server streams large answers).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        if tail.len() < n {
            return body.to_string();
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
}
