//! A real Kubernetes control plane on 127.0.0.1 for end-to-end tests (SPEC §7):
//! etcd, kube-apiserver (RBAC, token auth, default admission plugins),
//! kube-controller-manager (no node lifecycle controller) and kube-scheduler
//! whose extender is Steward. Binaries come from
//! `tests/control-plane/kubernetes-binaries.sh` (built once, cached outside
//! the clone). There is no kubelet: nodes are API objects and
//! [`doubles`] play the kubelet and the CSI provisioner.
//!
//! Everything runs under one directory (certificates, configs, etcd data,
//! logs). Dropping the [`ControlPlane`] kills every process by PID;
//! [`finish_runs`] then removes the directories, or keeps and prints them
//! when the test failed.

pub mod doubles;
pub mod pki;
pub mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;

use k8s_openapi::api::core::v1::ServiceAccount;
use pki::{Pki, ServiceAccountKey};
use process::{Process, free_port, wait_until};

/// How long each server may take to become ready (the machine may be busy
/// compiling on both cores).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The cached Kubernetes 1.20.2 binaries and etcd.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Runs `tests/control-plane/kubernetes-binaries.sh` once per process:
    /// instant on a warm cache, a 7–10 minute build on a cold one (progress
    /// on stderr). Fails, never skips, when they cannot be built.
    pub fn ensure() -> Result<Binaries> {
        static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
        BINARIES
            .get_or_init(|| Binaries::build().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn build() -> Result<Binaries> {
        let script = crate::root().join("tests/control-plane/kubernetes-binaries.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): the end-to-end tests need kube-apiserver, kube-scheduler, \
                 kube-controller-manager, kubectl 1.20.2 and etcd, built from Debian packages \
                 with apt (as root or with sudo) and network access to deb.debian.org; see its \
                 output above and its log",
                script.display(),
                out.status
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
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits
    /// until the API serves and the controllers work (the `default`
    /// ServiceAccount has its token). The scheduler comes later, once the
    /// extender it calls is listening: [`ControlPlane::start_scheduler`].
    /// On failure the servers started so far are stopped and the directory
    /// with their logs is kept.
    pub async fn start() -> Result<ControlPlane> {
        let binaries = tokio::task::spawn_blocking(Binaries::ensure).await??;
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
            "control plane (etcd, kube-apiserver, kube-controller-manager) ready in {:?} under {}",
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
        let kcm = start_controller_manager(
            dir,
            &binaries,
            &pki,
            &admin_kubeconfig,
            &service_accounts,
            &client,
        )
        .await?;
        processes.push(kcm);
        Ok(ControlPlane {
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

    /// Starts kube-scheduler with the KubeSchedulerConfiguration Steward
    /// ships for Kubernetes 1.20 (`deploy/overlays/scheduler-v1beta1`),
    /// pointed at the extender on `extender` and at this control plane.
    pub async fn start_scheduler(&mut self, extender: SocketAddr) -> Result<()> {
        self.start_scheduler_with(Some(extender), None).await
    }

    /// [`ControlPlane::start_scheduler`], or without `extender` the same
    /// profile with kube-scheduler's default plugins only (the baseline
    /// the throughput benchmark compares with); `client_rate` is the
    /// scheduler's API client (qps, burst) instead of 1.20's 50/100.
    pub async fn start_scheduler_with(
        &mut self,
        extender: Option<SocketAddr>,
        client_rate: Option<(u32, u32)>,
    ) -> Result<()> {
        let shipped = crate::root().join("deploy/overlays/scheduler-v1beta1/kube-scheduler.yaml");
        let text = std::fs::read_to_string(&shipped)
            .with_context(|| format!("cannot read {}", shipped.display()))?;
        let mut config: serde_json::Value = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML", shipped.display()))?;
        let health = format!("127.0.0.1:{}", free_port());
        config["clientConnection"] =
            serde_json::json!({"kubeconfig": self.scheduler_kubeconfig.display().to_string()});
        if let Some((qps, burst)) = client_rate {
            config["clientConnection"]["qps"] = qps.into();
            config["clientConnection"]["burst"] = burst.into();
        }
        config["leaderElection"] = serde_json::json!({"leaderElect": false});
        config["healthzBindAddress"] = health.clone().into();
        config["metricsBindAddress"] = health.clone().into();
        let extenders = config["extenders"]
            .as_array_mut()
            .filter(|e| e.len() == 1)
            .with_context(|| format!("{} should configure one extender", shipped.display()))?;
        let url = extenders[0]["urlPrefix"].as_str().unwrap_or_default();
        let path = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path.to_string())
            .with_context(|| {
                format!(
                    "{}: urlPrefix {url} is not http://127.0.0.1:<port>/<path>",
                    shipped.display()
                )
            })?;
        match extender {
            Some(extender) => {
                extenders[0]["urlPrefix"] = format!("http://{extender}/{path}").into();
            }
            None => extenders.clear(),
        }
        let config_path = self.dir.join("kube-scheduler.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;

        let args = vec![
            format!("--config={}", config_path.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            "--port=0".into(),
            format!("--cert-dir={}", self.dir.join("scheduler").display()),
            "--v=2".into(),
        ];
        let mut scheduler = Process::start(
            "kube-scheduler",
            &self.binaries.kube_scheduler,
            &args,
            &self.logs(),
        )?;
        let addr: SocketAddr = health.parse()?;
        wait_until(&mut scheduler, READY_TIMEOUT, || async move {
            crate::probe(addr, "/healthz").await.0 == 200
        })
        .await?;
        self.processes.push(scheduler);
        Ok(())
    }

    /// A kubeconfig for this control plane authenticating with `token`.
    pub fn kubeconfig(&self, user: &str, token: &str) -> String {
        kubeconfig(&self.server, &self.pki.ca_cert, user, token)
    }

    /// Fails with the end of its log if any server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(Process::check_running)
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
    let args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--insecure-port=0".into(),
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

async fn start_controller_manager(
    dir: &Path,
    binaries: &Binaries,
    pki: &Pki,
    kubeconfig: &Path,
    service_accounts: &ServiceAccountKey,
    client: &Client,
) -> Result<Process> {
    let args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--controllers=*,-nodelifecycle".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()),
        "--port=0".into(),
        format!("--cert-dir={}", dir.join("controller-manager").display()),
        "--leader-elect=false".into(),
        format!(
            "--service-account-private-key-file={}",
            service_accounts.private.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        "--profiling=false".into(),
    ];
    let mut kcm = Process::start(
        "kube-controller-manager",
        &binaries.kube_controller_manager,
        &args,
        &dir.join("logs"),
    )?;
    // Pods need their namespace's `default` ServiceAccount and its token
    // (ServiceAccount admission): both come from the controllers.
    wait_until(&mut kcm, READY_TIMEOUT, || {
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "default");
        async move {
            matches!(api.get_opt("default").await,
                Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
        }
    })
    .await?;
    Ok(kcm)
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

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
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
