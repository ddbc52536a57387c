//! End-to-end scenarios on the real control plane: Steward in process,
//! cluster objects from a snapshot, and bounded waits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersion;
use kube::discovery::Scope;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use steward::config::Config;
use steward::server::App;

use crate::control_plane::doubles::Doubles;
use crate::control_plane::process::{Process, free_port, wait_until};
use crate::control_plane::{ControlPlane, KubeVersion};

/// The scheduler profile Steward's pods name (`deploy/`, the snapshot).
pub const SCHEDULER_NAME: &str = "steward-scheduler";

/// Where `deploy/` installs Steward.
pub const DEPLOY_NAMESPACE: &str = "steward-system";

/// Runs a scenario once on each Kubernetes release of
/// [`crate::control_plane::versions`], `body` getting the release. Each
/// run has its own runtime; runs (of every test) go one at a time: each
/// starts a whole control plane, and the machine has few cores. Every run
/// says on stderr which release it is on and how long it took; a failure on
/// one release does not skip the next, and the test then fails naming each
/// release that failed.
pub fn scenario<F, Fut>(name: &str, body: F)
where
    F: Fn(KubeVersion) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    log_steward();
    let mut failures = Vec::new();
    for version in crate::control_plane::versions() {
        if let Err(e) = scenario_on(name, version, body(version)) {
            failures.push(format!("{name} on Kubernetes {}: {e:#}", version.release()));
        }
    }
    if !failures.is_empty() {
        panic!("{}", failures.join("\n\n"));
    }
}

/// With `STEWARD_LOG` set (`warn`, `steward_hooks=debug`, ...), Steward's
/// log in this process goes to stderr, as `steward serve` writes it.
fn log_steward() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

fn scenario_on(
    name: &str,
    version: KubeVersion,
    body: impl Future<Output = Result<()>>,
) -> Result<()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("{name}: on Kubernetes {}", version.release());
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(body);
    // Stops Steward and the doubles; the servers stopped with the body.
    drop(runtime);
    crate::control_plane::finish_runs(outcome.is_ok());
    eprintln!(
        "{name}: on Kubernetes {} {} in {:.1} s",
        version.release(),
        if outcome.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    outcome
}

/// Steward's config for the cluster of `kubeconfig`: `policies` (one YAML
/// flow mapping each; `{stem}` names a built guest, as in
/// [`crate::expand_guests`]) and more top-level `sections`.
fn live_config(kubeconfig: &Path, policies: &[&str], sections: &str) -> String {
    let list: Vec<String> = policies.iter().map(|p| format!("- {p}")).collect();
    format!(
        "cluster: {{kubeconfig: {}}}\npolicies:\n{}\n{sections}\n",
        kubeconfig.display(),
        crate::expand_guests(&list.join("\n"))
    )
}

/// Steward serving the extender from the test process, its cluster source
/// the control plane's kubeconfig and its backend the Kubernetes API; and
/// the admission webhook over HTTPS when its config has an `admission`
/// section.
pub struct Steward {
    pub addr: SocketAddr,
    pub app: App,
    /// Where the admission webhook listens, if it serves one.
    pub webhook: Option<SocketAddr>,
}

impl Steward {
    /// Starts with `policies` (one YAML flow mapping per policy;
    /// `{stem}` names a built guest, as in [`crate::expand_guests`]) and
    /// `sections` (more top-level YAML of the config, such as
    /// `reconcile:`), and waits until its cluster cache has synced.
    pub async fn start(kubeconfig: &Path, policies: &[&str], sections: &str) -> Result<Steward> {
        Steward::start_config(&live_config(kubeconfig, policies, sections)).await
    }

    /// Starts with a whole configuration (its `server.listen` is not used:
    /// the extender listens on a free loopback port under `/scheduler`).
    pub async fn start_config(yaml: &str) -> Result<Steward> {
        let config = Config::parse(yaml).context("the scenario's Steward config")?;
        let app = App::start(&config).await?;
        let addr = crate::serve_under(app.clone(), "/scheduler").await;
        let webhook = match &config.admission {
            Some(webhook) => Some(
                crate::serve_admission(
                    app.clone(),
                    webhook.listen,
                    &config.resolve(&webhook.cert_file),
                    &config.resolve(&webhook.key_file),
                    webhook.max_body_bytes,
                )
                .await
                .context("Steward's admission webhook")?,
            ),
            None => None,
        };
        wait_ready(addr).await?;
        Ok(Steward { addr, app, webhook })
    }

    /// A counter of Steward's metrics: the sum of the series of `name`
    /// whose labels include every `label="value"` of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.app.hooks.metrics.encode();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// One replica of the Deployment: a `steward serve` process of the debug
/// binary, killed (SIGKILL) when dropped or by [`StewardProcess::kill`].
pub struct StewardProcess {
    pub process: Process,
    /// The extender (under `/scheduler`), `/readyz`, `/metrics`, `/status`.
    pub addr: SocketAddr,
    /// The admission webhook (HTTPS), when the config has `admission:`.
    pub webhook: Option<SocketAddr>,
}

impl StewardProcess {
    /// Starts `steward serve` named `name` (its log `<dir>/<name>.log`) with
    /// `kubeconfig`, `policies` (as [`Steward::start`]) and `sections`, in
    /// which `$webhook` stands for a free loopback address for the
    /// admission webhook; waits until it is ready.
    pub async fn start(
        name: &str,
        dir: &Path,
        kubeconfig: &Path,
        policies: &[&str],
        sections: &str,
    ) -> Result<StewardProcess> {
        let yaml = format!(
            "server: {{listen: '$extender'}}\n{}",
            live_config(kubeconfig, policies, sections)
        );
        StewardProcess::start_config(name, dir, &yaml).await
    }

    /// Starts `steward serve` with the whole configuration `yaml`, in which
    /// `$extender` and `$webhook` stand for free loopback addresses.
    pub async fn start_config(name: &str, dir: &Path, yaml: &str) -> Result<StewardProcess> {
        let free = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (addr, webhook) = (free(), free());
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            yaml.replace("$extender", &addr.to_string())
                .replace("$webhook", &webhook.to_string()),
        )?;
        let args = [
            "serve".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        let mut process = Process::start(name, &crate::steward_bin(), &args, dir)?;
        wait_until(&mut process, Duration::from_secs(60), || async move {
            crate::probe(addr, "/readyz").await.0 == 200
        })
        .await
        .with_context(|| format!("{name} to become ready"))?;
        Ok(StewardProcess {
            process,
            addr,
            webhook: yaml.contains("$webhook").then_some(webhook),
        })
    }

    /// Its resident memory now, in bytes.
    pub fn resident_bytes(&self) -> Result<u64> {
        resident_bytes(self.process.pid())
    }

    /// Kills the process at once (SIGKILL), as a crashed pod or lost node
    /// would end it: nothing is released.
    pub fn kill(self) {
        drop(self.process);
    }
}

/// Resident memory of process `pid` now (`VmRSS`), in bytes.
pub fn resident_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
        .context("no VmRSS in the process status")
}

/// The control plane with Steward as its scheduler's extender and the node
/// agents played: what every scenario starts from.
pub struct Cluster {
    pub steward: Steward,
    pub doubles: Doubles,
    pub control_plane: ControlPlane,
}

impl Cluster {
    /// Starts the control plane of `version`, installs the HwameiStor CRDs,
    /// creates the snapshot's objects of `kinds` (nodes come up Ready and
    /// untainted), then Steward with `policies` as the ServiceAccount of
    /// `deploy/` (its RBAC, not an admin), then kube-scheduler calling it.
    pub async fn start(
        version: KubeVersion,
        snapshot: &Path,
        kinds: &[&str],
        policies: &[&str],
    ) -> Result<Cluster> {
        Cluster::start_with(version, snapshot, kinds, policies, "").await
    }

    /// [`Cluster::start`] with `sections` of Steward's config besides its
    /// policies (see [`Steward::start`]).
    pub async fn start_with(
        version: KubeVersion,
        snapshot: &Path,
        kinds: &[&str],
        policies: &[&str],
        sections: &str,
    ) -> Result<Cluster> {
        let mut control_plane = ControlPlane::start(version).await?;
        let client = control_plane.client.clone();
        install_crds(
            &client,
            &crate::root().join("tests/control-plane/hwameistor-crds.yaml"),
        )
        .await?;
        let objects = read_objects(snapshot)?;
        let wanted: Vec<_> = objects
            .into_iter()
            .filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or_default()))
            .collect();
        for object in &wanted {
            create(&client, object.clone()).await?;
        }
        for node in wanted.iter().filter(|o| o["kind"] == "Node") {
            let name = node["metadata"]["name"].as_str().unwrap_or_default();
            untaint(&client, name).await?;
        }
        let steward_kubeconfig = deploy_service_account(&control_plane).await?;
        let steward = Steward::start(&steward_kubeconfig, policies, sections).await?;
        control_plane.start_scheduler(steward.addr).await?;
        let doubles = Doubles::start(&client, &["lvm.hwameistor.io", "disk.hwameistor.io"]);
        Ok(Cluster {
            steward,
            doubles,
            control_plane,
        })
    }

    pub fn client(&self) -> Client {
        self.control_plane.client.clone()
    }
}

/// Creates a Ready, untainted node `name` with `capacity` (as the node's
/// `capacity` and `allocatable`): a node a kubelet would have registered.
pub async fn add_ready_node(
    client: &Client,
    name: &str,
    capacity: serde_json::Value,
) -> Result<()> {
    create(
        client,
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }),
    )
    .await?;
    untaint(client, name).await
}

/// Creates `deploy/base`'s namespace, ServiceAccount and RBAC and returns
/// [`steward_kubeconfig`].
pub async fn deploy_service_account(control_plane: &ControlPlane) -> Result<PathBuf> {
    let client = &control_plane.client;
    let base = crate::root().join("deploy/base");
    for file in ["namespace.yaml", "rbac.yaml"] {
        for object in read_objects(&base.join(file))? {
            create(client, object).await?;
        }
    }
    steward_kubeconfig(control_plane).await
}

/// A kubeconfig authenticating as `deploy/`'s ServiceAccount, with a token
/// from the TokenRequest API (as a pod of the Deployment gets it).
pub async fn steward_kubeconfig(control_plane: &ControlPlane) -> Result<PathBuf> {
    let token = control_plane
        .service_account_token(DEPLOY_NAMESPACE, "steward")
        .await?;
    let path = control_plane.dir.join("steward.kubeconfig");
    std::fs::write(&path, control_plane.kubeconfig("steward", &token))?;
    Ok(path)
}

/// The documents of a multi-document YAML file, as JSON, empty ones left out.
pub fn read_objects(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_objects(&text, &path.display().to_string())
}

/// The documents of multi-document YAML text (`origin` names it in
/// errors), as JSON, empty ones left out.
pub fn parse_objects(text: &str, origin: &str) -> Result<Vec<serde_json::Value>> {
    let mut objects = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("{origin}: document {} is not YAML", i + 1))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// Creates the CRDs of `path` and waits until each is established.
pub async fn install_crds(client: &Client, path: &Path) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for object in read_objects(path)? {
        let crd: CustomResourceDefinition = serde_json::from_value(object)?;
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .with_context(|| format!("creating CRD {name}"))?;
        eventually(
            Duration::from_secs(30),
            &format!("CRD {name} to be established"),
            || async {
                let crd = crds.get(&name).await?;
                let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates an object as a snapshot shows it: server-set metadata and owner
/// references (their owners are not part of the snapshot) are dropped. A
/// Node keeps its status (nodes may set it on create); other kinds with a
/// status subresource get theirs written after creation, except workloads,
/// whose status belongs to their controller.
pub async fn create(client: &Client, mut object: serde_json::Value) -> Result<()> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let what = format!("{kind} {name}");
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "ownerReferences",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
    }
    let status = match kind.as_str() {
        "Node" => None,
        "StatefulSet" | "Deployment" | "Pod" | "PersistentVolumeClaim" => {
            object.as_object_mut().and_then(|o| o.remove("status"));
            None
        }
        _ => object.as_object_mut().and_then(|o| o.remove("status")),
    };
    let gvk = api_version
        .parse::<GroupVersion>()
        .with_context(|| format!("{what}: apiVersion {api_version}"))?
        .with_kind(&kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("{what}: the API does not serve {api_version} {kind}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let dynamic: DynamicObject = serde_json::from_value(object)?;
    api.create(&PostParams::default(), &dynamic)
        .await
        .with_context(|| format!("creating {what}"))?;
    if let Some(status) = status {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .with_context(|| format!("writing the status of {what}"))?;
    }
    Ok(())
}

/// Removes the taints a new node gets (`node.kubernetes.io/not-ready`,
/// which no node lifecycle controller lifts here).
pub async fn untaint(client: &Client, node: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .with_context(|| format!("removing the taints of node {node}"))?;
    Ok(())
}

/// Marks a node (un)schedulable, as `kubectl cordon`/`uncordon` do.
pub async fn cordon(client: &Client, node: &str, cordoned: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": cordoned}})),
        )
        .await
        .with_context(|| format!("cordoning node {node}"))?;
    Ok(())
}

/// The events about an object (by name) in a namespace.
pub async fn events_about(client: &Client, namespace: &str, name: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list.items)
}

/// The message of the first FailedScheduling event of pod `name` that
/// gives a reason of `policy`, waiting for it up to two minutes.
pub async fn scheduling_refusal(
    client: &Client,
    namespace: &str,
    name: &str,
    policy: &str,
) -> Result<String> {
    eventually(
        Duration::from_secs(120),
        &format!("a FailedScheduling event of pod {name} with {policy}'s reason"),
        || async {
            let events = events_about(client, namespace, name).await?;
            Ok(events.into_iter().find_map(|e| {
                let message = e.message.unwrap_or_default();
                (e.reason.as_deref() == Some("FailedScheduling")
                    && message.contains(&format!("{policy}: ")))
                .then_some(message)
            }))
        },
    )
    .await
}

/// Waits until the Steward serving on `addr` answers `/readyz` with 200;
/// on timeout the error gives its last answer.
pub async fn wait_ready(addr: SocketAddr) -> Result<()> {
    eventually(Duration::from_secs(60), "Steward to be ready", || async {
        match crate::get(addr, "/readyz").await {
            (200, _) => Ok(Some(())),
            (code, body) => bail!("/readyz answers {code}: {body}"),
        }
    })
    .await
}

/// Polls `check` every 200 ms until it yields a value; fails naming `what`
/// after `timeout`, with the last error if there was one.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if started.elapsed() > timeout {
            match last_error {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
