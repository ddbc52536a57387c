//! A real Kubernetes control plane on 127.0.0.1 for end-to-end tests (SPEC §7):
//! etcd, kube-apiserver (RBAC, token auth, default admission plugins),
//! kube-controller-manager (no node lifecycle controller) and kube-scheduler
//! whose extender is Steward, of one of the Kubernetes releases of
//! [`KubeVersion`]. Binaries come from `tests/control-plane/` (built once per
//! release, cached outside the clone): `kubernetes-binaries.sh` builds 1.20.2
//! from Debian's sources, `kubernetes-1.37.sh` 1.37.2 from the Go module
//! proxy. [`versions`] says which releases a test run covers. There is no
//! kubelet: nodes are API objects and [`doubles`] play the kubelet and the
//! CSI provisioner.
//!
//! Everything runs under one directory (certificates, configs, etcd data,
//! logs). Dropping the [`ControlPlane`] kills every process by PID;
//! [`finish_runs`] then removes the directories, or keeps and prints them
//! when the test failed.

pub mod doubles;
pub mod pki;
pub mod process;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kube::Client;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use pki::{Pki, ServiceAccountKey};
use process::{Process, free_port, wait_until};

/// How long each server may take to become ready (the machine may be busy
/// compiling on both cores).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable choosing the Kubernetes releases of a test run:
/// `1.20`, `1.37`, a comma-separated list of them, or unset (or `all`) for
/// every release of [`KubeVersion::ALL`].
pub const VERSIONS_ENV: &str = "STEWARD_E2E_KUBERNETES";

/// A Kubernetes release the end-to-end tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KubeVersion {
    /// 1.20.2: the seed's cluster; built from Debian's source package with
    /// Debian's Go. KubeSchedulerConfiguration v1beta1.
    V1_20,
    /// 1.37.2: current Kubernetes; built from the Go module proxy.
    /// KubeSchedulerConfiguration v1.
    V1_37,
}

impl KubeVersion {
    /// Every release the harness runs, oldest first.
    pub const ALL: [KubeVersion; 2] = [KubeVersion::V1_20, KubeVersion::V1_37];

    /// `1.20`, `1.37`: the spelling of [`VERSIONS_ENV`].
    pub fn minor(self) -> &'static str {
        match self {
            KubeVersion::V1_20 => "1.20",
            KubeVersion::V1_37 => "1.37",
        }
    }

    /// The exact release, as `kubectl version` prints it.
    pub fn release(self) -> &'static str {
        match self {
            KubeVersion::V1_20 => "v1.20.2",
            KubeVersion::V1_37 => "v1.37.2",
        }
    }

    /// The flavour of `deploy/` for this release, relative to the
    /// repository: the one whose KubeSchedulerConfiguration API version
    /// its kube-scheduler reads (v1beta1 up to 1.22, v1 from 1.25).
    pub fn deploy_flavour(self) -> &'static str {
        match self {
            KubeVersion::V1_20 => "deploy/overlays/scheduler-v1beta1",
            KubeVersion::V1_37 => "deploy/base",
        }
    }

    /// The script that builds (or finds) this release's binaries.
    fn script(self) -> PathBuf {
        crate::root().join(match self {
            KubeVersion::V1_20 => "tests/control-plane/kubernetes-binaries.sh",
            KubeVersion::V1_37 => "tests/control-plane/kubernetes-1.37.sh",
        })
    }

    /// What the script needs, for its failure message.
    fn needs(self) -> &'static str {
        match self {
            KubeVersion::V1_20 => {
                "built from Debian packages with apt (as root or with sudo) and network \
                 access to deb.debian.org"
            }
            KubeVersion::V1_37 => {
                "built with Go >= 1.26 from the Go module proxy (20-40 minutes on a cold \
                 Go cache)"
            }
        }
    }

    /// The ServiceAccount token Secrets of the token controller: gone since
    /// Kubernetes 1.24 (tokens come from the TokenRequest API).
    fn has_legacy_tokens(self) -> bool {
        self == KubeVersion::V1_20
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.minor())
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = anyhow::Error;

    /// `1.20`, `v1.20` or `v1.20.2` (and the same for 1.37).
    fn from_str(s: &str) -> Result<KubeVersion> {
        let s = s.trim();
        let bare = s.strip_prefix('v').unwrap_or(s);
        KubeVersion::ALL
            .into_iter()
            .find(|v| bare == v.minor() || s == v.release())
            .with_context(|| {
                let known: Vec<&str> = KubeVersion::ALL.iter().map(|v| v.minor()).collect();
                format!(
                    "unknown Kubernetes release {s:?} (the harness runs {})",
                    known.join(", ")
                )
            })
    }
}

/// The releases this test run covers, from [`VERSIONS_ENV`] (every release
/// when unset, empty or `all`). Panics on a release the harness does not
/// know, so a typo never silently runs nothing.
pub fn versions() -> Vec<KubeVersion> {
    let wanted = std::env::var(VERSIONS_ENV).unwrap_or_default();
    parse_versions(&wanted).unwrap_or_else(|e| panic!("{VERSIONS_ENV}={wanted:?}: {e:#}"))
}

fn parse_versions(wanted: &str) -> Result<Vec<KubeVersion>> {
    if wanted.trim().is_empty() || wanted.trim() == "all" {
        return Ok(KubeVersion::ALL.to_vec());
    }
    let mut versions = wanted
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<KubeVersion>>>()?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}

/// The cached binaries of one Kubernetes release, and etcd.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub version: KubeVersion,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Runs `version`'s build script once per process: instant on a warm
    /// cache, a long build on a cold one (1.20: 7–10 minutes; 1.37: 20–40;
    /// progress on stderr). Fails, never skips, when they cannot be built.
    pub fn ensure(version: KubeVersion) -> Result<Binaries> {
        static BINARIES: [OnceLock<Result<Binaries, String>>; KubeVersion::ALL.len()] =
            [const { OnceLock::new() }; KubeVersion::ALL.len()];
        BINARIES[version as usize]
            .get_or_init(|| Binaries::build(version).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn build(version: KubeVersion) -> Result<Binaries> {
        let script = version.script();
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): the end-to-end tests need kube-apiserver, kube-scheduler, \
                 kube-controller-manager, kubectl {} and etcd, {}; see its output above and \
                 its log",
                script.display(),
                out.status,
                version.release(),
                version.needs()
            );
        }
        let paths: HashMap<String, PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p.clone())))
            .collect();
        let get = |name: &str| {
            paths
                .get(name)
                .cloned()
                .with_context(|| format!("{} did not report a {name} binary", script.display()))
        };
        Ok(Binaries {
            version,
            etcd: get("etcd")?,
            kube_apiserver: get("kube-apiserver")?,
            kube_controller_manager: get("kube-controller-manager")?,
            kube_scheduler: get("kube-scheduler")?,
            kubectl: get("kubectl")?,
        })
    }
}

/// A bearer token and the user it authenticates.
struct User {
    name: &'static str,
    groups: &'static str,
    token: String,
}

/// The running control plane. See the module documentation.
pub struct ControlPlane {
    pub version: KubeVersion,
    pub dir: PathBuf,
    pub binaries: Binaries,
    pub pki: Pki,
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// Kubeconfig of a `system:masters` user.
    pub admin_kubeconfig: PathBuf,
    /// Client of that user.
    pub client: Client,
    scheduler_kubeconfig: PathBuf,
    processes: Vec<Process>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager of `version`
    /// and waits until the API serves and the controllers work (pods can be
    /// created in `default`: see [`ControlPlane::wait_service_account`]).
    /// The scheduler comes later, once the extender it calls is listening:
    /// [`ControlPlane::start_scheduler`]. On failure the servers started so
    /// far are stopped and the directory with their logs is kept.
    pub async fn start(version: KubeVersion) -> Result<ControlPlane> {
        let binaries = tokio::task::spawn_blocking(move || Binaries::ensure(version)).await??;
        let dir = std::env::temp_dir().join(format!(
            "steward-e2e-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        RUN_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        let began = Instant::now();
        let mut processes = Vec::new();
        let started = Self::start_in(&dir, binaries, &mut processes).await?;
        eprintln!(
            "control plane {} (etcd, kube-apiserver, kube-controller-manager) ready in {:?} \
             under {}",
            version.release(),
            began.elapsed(),
            dir.display()
        );
        Ok(started)
    }

    async fn start_in(
        dir: &Path,
        binaries: Binaries,
        processes: &mut Vec<Process>,
    ) -> Result<ControlPlane> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let pki = Pki::create(&dir.join("pki"))?;
        let admin = User {
            name: "admin",
            groups: "system:masters",
            token: random_hex(16),
        };
        let scheduler = User {
            name: "system:kube-scheduler",
            groups: "",
            token: random_hex(16),
        };
        let tokens = dir.join("tokens.csv");
        let lines: Vec<String> = [&admin, &scheduler]
            .iter()
            .map(|u| match u.groups {
                "" => format!("{},{},{}", u.token, u.name, u.name),
                groups => format!("{},{},{},\"{groups}\"", u.token, u.name, u.name),
            })
            .collect();
        std::fs::write(&tokens, lines.join("\n") + "\n")?;

        let etcd_url = start_etcd(dir, &binaries, processes).await?;
        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = |path: PathBuf, user: &User| -> Result<PathBuf> {
            std::fs::write(
                &path,
                kubeconfig(&server, &pki.ca_cert, user.name, &user.token),
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        };
        let admin_kubeconfig = kubeconfig(dir.join("admin.kubeconfig"), &admin)?;
        let scheduler_kubeconfig = kubeconfig(dir.join("scheduler.kubeconfig"), &scheduler)?;
        let service_accounts = pki.service_account_key()?;
        let apiserver = start_apiserver(
            dir,
            &binaries,
            &pki,
            port,
            &etcd_url,
            &tokens,
            &service_accounts,
        )?;
        processes.push(apiserver);
        let client = client_for(&admin_kubeconfig).await?;
        wait_apiserver_ready(processes.last_mut().expect("just pushed"), &client).await?;
        let mut kcm =
            start_controller_manager(dir, &binaries, &pki, &admin_kubeconfig, &service_accounts)?;
        // Pods need their namespace's `default` ServiceAccount (and on 1.20
        // its token): both come from the controllers.
        let version = binaries.version;
        wait_until(&mut kcm, READY_TIMEOUT, || {
            let client = client.clone();
            async move { default_service_account(&client, version, "default").await }
        })
        .await?;
        processes.push(kcm);
        Ok(ControlPlane {
            version,
            dir: dir.to_path_buf(),
            binaries,
            pki,
            server,
            admin_kubeconfig,
            client,
            scheduler_kubeconfig,
            processes: std::mem::take(processes),
        })
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The log (stdout and stderr) of server `name`: `etcd`,
    /// `kube-apiserver`, `kube-controller-manager` or `kube-scheduler`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// Starts kube-scheduler with the KubeSchedulerConfiguration Steward
    /// ships for this release (1.20: `deploy/overlays/scheduler-v1beta1`'s
    /// v1beta1; 1.37: `deploy/base`'s v1), pointed at the extender on
    /// `extender` and at this control plane.
    pub async fn start_scheduler(&mut self, extender: SocketAddr) -> Result<()> {
        self.start_scheduler_with(Some(extender), None).await
    }

    /// [`ControlPlane::start_scheduler`], or without `extender` the same
    /// profile with kube-scheduler's default plugins only (the baseline
    /// the throughput benchmark compares with); `client_rate` is the
    /// scheduler's API client (qps, burst) instead of the default 50/100.
    pub async fn start_scheduler_with(
        &mut self,
        extender: Option<SocketAddr>,
        client_rate: Option<(u32, u32)>,
    ) -> Result<()> {
        let (config, origin) = self.shipped_scheduler_config()?;
        let kubeconfig = self.scheduler_kubeconfig.clone();
        self.run_scheduler(config, &origin, &kubeconfig, extender, client_rate, false)
            .await
    }

    /// [`ControlPlane::start_scheduler`] without the extender's `bindVerb`:
    /// kube-scheduler binds every pod itself, and Steward learns of each
    /// binding from its watch (the setup of tidb-scheduler).
    pub async fn start_scheduler_binding_itself(&mut self, extender: SocketAddr) -> Result<()> {
        self.start_scheduler_binding_itself_with(extender, None)
            .await
    }

    /// [`ControlPlane::start_scheduler_binding_itself`] with its API client
    /// at `client_rate` (qps, burst) when given.
    pub async fn start_scheduler_binding_itself_with(
        &mut self,
        extender: SocketAddr,
        client_rate: Option<(u32, u32)>,
    ) -> Result<()> {
        let (mut config, origin) = self.shipped_scheduler_config()?;
        for extender in config["extenders"].as_array_mut().into_iter().flatten() {
            extender.as_object_mut().map(|e| e.remove("bindVerb"));
        }
        let kubeconfig = self.scheduler_kubeconfig.clone();
        self.run_scheduler(
            config,
            &origin,
            &kubeconfig,
            Some(extender),
            client_rate,
            false,
        )
        .await
    }

    /// The KubeSchedulerConfiguration Steward ships for this release, its
    /// leader election off; and its path, for messages.
    fn shipped_scheduler_config(&self) -> Result<(serde_json::Value, String)> {
        let shipped = crate::root()
            .join(self.version.deploy_flavour())
            .join("kube-scheduler.yaml");
        let text = std::fs::read_to_string(&shipped)
            .with_context(|| format!("cannot read {}", shipped.display()))?;
        let mut config: serde_json::Value = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML", shipped.display()))?;
        config["leaderElection"] = serde_json::json!({"leaderElect": false});
        Ok((config, shipped.display().to_string()))
    }

    /// Runs kube-scheduler as `deploy/`'s sidecar runs it: `config` (a
    /// KubeSchedulerConfiguration of this release's API version, as the
    /// bundle's ConfigMap holds it; `origin` names it in errors), its
    /// leader election kept, authenticating with `kubeconfig` (the
    /// ServiceAccount's) also for the delegated authentication and
    /// authorization of its secure port (in a pod, the in-cluster
    /// configuration), its extender at `extender`. Its log:
    /// [`ControlPlane::log`] of `kube-scheduler`.
    pub async fn start_sidecar_scheduler(
        &mut self,
        config: serde_json::Value,
        origin: &str,
        kubeconfig: &Path,
        extender: SocketAddr,
    ) -> Result<()> {
        self.run_scheduler(config, origin, kubeconfig, Some(extender), None, true)
            .await
    }

    async fn run_scheduler(
        &mut self,
        mut config: serde_json::Value,
        origin: &str,
        kubeconfig: &Path,
        extender: Option<SocketAddr>,
        client_rate: Option<(u32, u32)>,
        delegate: bool,
    ) -> Result<()> {
        config["clientConnection"] =
            serde_json::json!({"kubeconfig": kubeconfig.display().to_string()});
        if let Some((qps, burst)) = client_rate {
            config["clientConnection"]["qps"] = qps.into();
            config["clientConnection"]["burst"] = burst.into();
        }
        // 1.20 serves /healthz over plain HTTP on an address of its own
        // (v1beta1); v1 has no such field and 1.37 serves it on the secure
        // port only, with a certificate of this control plane's CA.
        let health = match self.version {
            KubeVersion::V1_20 => {
                let health = format!("127.0.0.1:{}", free_port());
                config["healthzBindAddress"] = health.clone().into();
                config["metricsBindAddress"] = health.clone().into();
                health
            }
            KubeVersion::V1_37 => format!("127.0.0.1:{}", free_port()),
        };
        let extenders = config["extenders"]
            .as_array_mut()
            .filter(|e| e.len() == 1)
            .with_context(|| format!("{origin} should configure one extender"))?;
        let url = extenders[0]["urlPrefix"].as_str().unwrap_or_default();
        let path = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path.to_string())
            .with_context(|| {
                format!("{origin}: urlPrefix {url} is not http://127.0.0.1:<port>/<path>")
            })?;
        match extender {
            Some(extender) => {
                extenders[0]["urlPrefix"] = format!("http://{extender}/{path}").into();
            }
            None => extenders.clear(),
        }
        let config_path = self.dir.join("kube-scheduler.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;

        let mut args = vec![
            format!("--config={}", config_path.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", self.dir.join("scheduler").display()),
            "--v=2".into(),
        ];
        if delegate {
            args.push(format!(
                "--authentication-kubeconfig={}",
                kubeconfig.display()
            ));
            args.push(format!(
                "--authorization-kubeconfig={}",
                kubeconfig.display()
            ));
        }
        let addr: SocketAddr = health.parse()?;
        let secure = match self.version {
            KubeVersion::V1_20 => {
                args.push(format!("--secure-port={}", free_port()));
                args.push("--port=0".into());
                None
            }
            KubeVersion::V1_37 => {
                let serving = self.pki.serving("kube-scheduler", &["127.0.0.1"])?;
                args.push(format!("--secure-port={}", addr.port()));
                args.push(format!("--tls-cert-file={}", serving.cert.display()));
                args.push(format!("--tls-private-key-file={}", serving.key.display()));
                let mut config = kube::Config::new(format!("https://{addr}").parse()?);
                config.root_cert_file = Some(self.pki.ca_cert.clone());
                Some(Client::try_from(config)?)
            }
        };
        let mut scheduler = Process::start(
            "kube-scheduler",
            &self.binaries.kube_scheduler,
            &args,
            &self.logs(),
        )?;
        wait_until(&mut scheduler, READY_TIMEOUT, || {
            let secure = secure.clone();
            async move {
                match secure {
                    // /healthz is always allowed, even anonymously.
                    Some(client) => {
                        let req = http::Request::get("/healthz")
                            .body(Vec::new())
                            .expect("a valid request");
                        matches!(client.request_text(req).await, Ok(body) if body == "ok")
                    }
                    None => crate::probe(addr, "/healthz").await.0 == 200,
                }
            }
        })
        .await?;
        self.processes.push(scheduler);
        Ok(())
    }

    /// A token of the ServiceAccount `namespace/name`, valid for a day, from
    /// the TokenRequest API (every release; Kubernetes 1.24+ no longer
    /// creates token Secrets). Waits up to a minute for the account.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let accounts: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let began = Instant::now();
        loop {
            match accounts
                .create_token_request(name, &PostParams::default(), &request)
                .await
            {
                Ok(answer) => match answer.status.and_then(|s| s.token) {
                    Some(token) if !token.is_empty() => return Ok(token),
                    _ => bail!("the TokenRequest of {namespace}/{name} returned no token"),
                },
                Err(kube::Error::Api(e)) if e.code == 404 && began.elapsed() < READY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("requesting a token of ServiceAccount {namespace}/{name}")
                    });
                }
            }
        }
    }

    /// Waits until pods can be created in `namespace`: its `default`
    /// ServiceAccount exists (the ServiceAccount admission plugin refuses
    /// pods before) and, on 1.20, has its token Secret (which 1.20's
    /// plugin mounts).
    pub async fn wait_service_account(&mut self, namespace: &str) -> Result<()> {
        let (client, version) = (self.client.clone(), self.version);
        let kcm = self
            .processes
            .iter_mut()
            .find(|p| p.name == "kube-controller-manager")
            .context("kube-controller-manager is not running")?;
        wait_until(kcm, READY_TIMEOUT, || {
            let client = client.clone();
            async move { default_service_account(&client, version, namespace).await }
        })
        .await
    }

    /// A kubeconfig for this control plane authenticating with `token`.
    pub fn kubeconfig(&self, user: &str, token: &str) -> String {
        kubeconfig(&self.server, &self.pki.ca_cert, user, token)
    }

    /// The deprecated APIs requested of kube-apiserver since it started
    /// (its `apiserver_requested_deprecated_apis` metric), each as
    /// `group/version resource[/subresource] (removed in <release>)`.
    pub async fn deprecated_apis_requested(&self) -> Result<Vec<String>> {
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a valid request");
        let text = self
            .client
            .request_text(req)
            .await
            .context("reading kube-apiserver's /metrics")?;
        let label = |line: &str, name: &str| -> String {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let mut apis: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("apiserver_requested_deprecated_apis{"))
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .map(|l| {
                let (group, version) = (label(l, "group"), label(l, "version"));
                let mut resource = label(l, "resource");
                let sub = label(l, "subresource");
                if !sub.is_empty() {
                    resource = format!("{resource}/{sub}");
                }
                let removed = label(l, "removed_release");
                let gv = if group.is_empty() {
                    version
                } else {
                    format!("{group}/{version}")
                };
                if removed.is_empty() {
                    format!("{gv} {resource}")
                } else {
                    format!("{gv} {resource} (removed in {removed})")
                }
            })
            .collect();
        apis.sort();
        apis.dedup();
        Ok(apis)
    }

    /// Fails with the end of its log if any server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(Process::check_running)
    }

    /// The CPU time each of its servers has used so far, by name.
    pub fn cpu_times(&self) -> Result<Vec<(String, Duration)>> {
        self.processes
            .iter()
            .map(|p| Ok((p.name.clone(), p.cpu_time()?)))
            .collect()
    }

    /// [`ControlPlane::check_running`], and fails if a client (Steward,
    /// kube-scheduler, kubectl, the test) asked for an API this release
    /// calls deprecated: see [`ControlPlane::deprecated_apis_requested`].
    /// What kube-controller-manager requests itself is left out: 1.20's
    /// garbage collector watches `extensions/v1beta1` Ingresses, 1.37's
    /// endpoints controller writes `v1` Endpoints of Services.
    pub async fn check(&mut self) -> Result<()> {
        self.check_running()?;
        let controllers = match self.version {
            KubeVersion::V1_20 => "extensions/v1beta1 ingresses",
            KubeVersion::V1_37 => "v1 endpoints",
        };
        let deprecated: Vec<String> = self
            .deprecated_apis_requested()
            .await?
            .into_iter()
            .filter(|api| !api.starts_with(&format!("{controllers} ")) && api != controllers)
            .collect();
        ensure!(
            deprecated.is_empty(),
            "deprecated APIs of Kubernetes {} were requested: {}",
            self.version.release(),
            deprecated.join(", ")
        );
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Stop in reverse start order: scheduler, controllers, API, etcd.
        while let Some(p) = self.processes.pop() {
            drop(p);
        }
    }
}

/// Directories of the control planes this process started and
/// [`finish_runs`] has not handled yet.
static RUN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Call once the control planes of a test are dropped: removes their
/// directories after a success; after a failure (or with
/// `STEWARD_E2E_KEEP` set) keeps them and prints where they are.
pub fn finish_runs(succeeded: bool) {
    let dirs = std::mem::take(&mut *RUN_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        if succeeded && std::env::var_os("STEWARD_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            eprintln!("control plane logs and state kept in {}", dir.display());
        }
    }
}

async fn start_etcd(
    dir: &Path,
    binaries: &Binaries,
    processes: &mut Vec<Process>,
) -> Result<String> {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = vec![
        "--name=steward-e2e".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=steward-e2e={peer_url}"),
        "--unsafe-no-fsync".into(),
    ];
    processes.push(Process::start(
        "etcd",
        &binaries.etcd,
        &args,
        &dir.join("logs"),
    )?);
    let addr: SocketAddr = format!("127.0.0.1:{client}").parse()?;
    wait_until(
        processes.last_mut().expect("just pushed"),
        READY_TIMEOUT,
        || async move {
            matches!(crate::probe(addr, "/health").await, (200, body) if body.contains("true"))
        },
    )
    .await?;
    Ok(url)
}

fn start_apiserver(
    dir: &Path,
    binaries: &Binaries,
    pki: &Pki,
    port: u16,
    etcd_url: &str,
    tokens: &Path,
    service_accounts: &ServiceAccountKey,
) -> Result<Process> {
    let serving = pki.serving(
        "kube-apiserver",
        &[
            "127.0.0.1",
            "10.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ],
    )?;
    let mut args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver").display()),
        format!("--tls-cert-file={}", serving.cert.display()),
        format!("--tls-private-key-file={}", serving.key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!("--token-auth-file={}", tokens.display()),
        "--authorization-mode=RBAC".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!(
            "--service-account-key-file={}",
            service_accounts.public.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            service_accounts.private.display()
        ),
        "--profiling=false".into(),
    ];
    match binaries.version {
        // Insecure serving was removed in 1.24.
        KubeVersion::V1_20 => args.push("--insecure-port=0".into()),
        // 1.37 refuses a loopback --advertise-address for the `kubernetes`
        // Service's endpoints unless it keeps none.
        KubeVersion::V1_37 => args.push("--endpoint-reconciler-type=none".into()),
    }
    Process::start(
        "kube-apiserver",
        &binaries.kube_apiserver,
        &args,
        &dir.join("logs"),
    )
}

/// `/readyz` (every post-start hook, bootstrap RBAC included) answers ok.
async fn wait_apiserver_ready(apiserver: &mut Process, client: &Client) -> Result<()> {
    wait_until(apiserver, READY_TIMEOUT, || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a valid request");
            matches!(client.request_text(req).await, Ok(body) if body == "ok")
        }
    })
    .await
}

fn start_controller_manager(
    dir: &Path,
    binaries: &Binaries,
    pki: &Pki,
    kubeconfig: &Path,
    service_accounts: &ServiceAccountKey,
) -> Result<Process> {
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--controllers=*,-nodelifecycle".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()),
        format!("--cert-dir={}", dir.join("controller-manager").display()),
        "--leader-elect=false".into(),
        format!(
            "--service-account-private-key-file={}",
            service_accounts.private.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        "--profiling=false".into(),
    ];
    if binaries.version == KubeVersion::V1_20 {
        // Insecure serving was removed in 1.24.
        args.push("--port=0".into());
    }
    Process::start(
        "kube-controller-manager",
        &binaries.kube_controller_manager,
        &args,
        &dir.join("logs"),
    )
}

/// Whether `namespace`'s `default` ServiceAccount exists, with its token
/// Secret on releases that still create one.
async fn default_service_account(client: &Client, version: KubeVersion, namespace: &str) -> bool {
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    match api.get_opt("default").await {
        Ok(Some(sa)) => {
            !version.has_legacy_tokens() || sa.secrets.as_ref().is_some_and(|s| !s.is_empty())
        }
        _ => false,
    }
}

fn kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {user}\n\
         current-context: e2e\n",
        ca.display()
    )
}

/// A client from a kubeconfig file. Tests see every answer as the API
/// server gave it: kube's client would otherwise retry a 429 (a refused
/// eviction, say) for many minutes.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// `bytes` random bytes as hex (tokens, unique names).
fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{KubeVersion, parse_versions};

    #[test]
    fn versions_come_from_the_environment_spelling() {
        let all = KubeVersion::ALL.to_vec();
        assert_eq!(parse_versions("").unwrap(), all);
        assert_eq!(parse_versions(" all ").unwrap(), all);
        assert_eq!(parse_versions("1.37").unwrap(), [KubeVersion::V1_37]);
        assert_eq!(parse_versions("v1.20.2").unwrap(), [KubeVersion::V1_20]);
        assert_eq!(parse_versions("1.37, 1.20,1.37").unwrap(), all);
        let error = parse_versions("1.21").unwrap_err().to_string();
        assert!(error.contains("1.20, 1.37"), "{error}");
        assert_eq!(KubeVersion::V1_37.to_string(), "1.37");
    }
}
