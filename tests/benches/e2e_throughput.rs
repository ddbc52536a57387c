//! Scheduling throughput on a real Kubernetes control plane (issue 7), on
//! each release of `STEWARD_E2E_KUBERNETES` (unset: 1.20.2 and 1.37.2):
//! pods/s the real kube-scheduler places with Steward as its extender
//! against the same scheduler profile without an extender, 100 nodes and
//! 500 pods, measured in one run, each on a fresh control plane. The last
//! lines say `with / without (v1.20.2): <ratio>`, one per release.
//! `STEWARD_BENCH_NODES` and `STEWARD_BENCH_PODS` change the counts (a
//! quick check of the bench itself, not a figure to record).
//!
//! This machine's runs spread widely, so each release is measured in
//! rounds (`STEWARD_BENCH_ROUNDS`, default 3) of one run per setup; a
//! ratio line gives the median of the rounds' ratios, then each.
//!
//! Two more runs per round: a minimal extender in Steward's place (every
//! node passes, no preference, the bind through the API server), what the
//! extender protocol itself costs on this machine, the floor of any
//! extender's ratio; and Steward without `bindVerb`, kube-scheduler
//! binding each pod itself (tidb-scheduler's setup). Each run prints the CPU each part used
//! per pod over the measured time (kube-scheduler, the API server, etcd,
//! the controllers, the extender, the bench's own pod creator and watcher),
//! how busy the machine was and the API server's work per pod (requests by
//! verb and resource, watch events sent by kind); the Steward run also
//! Steward's mean time per request by endpoint.
//!
//! The pods are TiDB server pods of a TidbCluster (no volumes): both
//! placement policies of `deploy/base` select them and are evaluated for
//! every pod. Both runs raise kube-scheduler's API client rate to the same
//! 500 qps / 1,000 burst (the default 50/100 would cap binding in both
//! runs and hide the extender's cost).
//!
//! `cargo bench -p steward-tests --bench e2e_throughput`

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Json;
use axum::routing::post;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use steward_tests::control_plane::process::{from_ticks, own_threads_cpu_time};
use steward_tests::control_plane::{ControlPlane, KubeVersion, client_for, finish_runs, versions};
use steward_tests::e2e::{
    SCHEDULER_NAME, Steward, add_ready_node, create, deploy_service_account, install_crds,
};

/// Nodes and pods of a run, unless `STEWARD_BENCH_NODES`/`_PODS` say otherwise.
const NODES: usize = 100;
const PODS: usize = 500;
/// Rounds per release, unless `STEWARD_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
const NAMESPACE: &str = "bench";
/// kube-scheduler's API client (qps, burst) in both runs.
const CLIENT_RATE: (u32, u32) = (500, 1_000);
/// How many pod creations are in flight at once.
const CREATE_CONCURRENCY: usize = 32;

/// pd-quorum and local-pv as `deploy/base/steward.yaml` runs them.
const POLICIES: &[&str] = &[
    "{id: pd-quorum, hook: scheduler, module: '{pd_quorum}', failureMode: fail-closed, \
     deadlineMs: 100, select: {schedulerNames: [steward-scheduler], \
     matchLabels: {app.kubernetes.io/managed-by: tidb-operator}}, \
     settings: {topologyKey: kubernetes.io/hostname}}",
    "{id: local-pv, hook: scheduler, module: '{local_pv}', failureMode: fail-closed, \
     deadlineMs: 100, select: {schedulerNames: [steward-scheduler]}, \
     settings: {capacitySource: hwameistor, scoring: spread}}",
];

/// How many nodes and pods each run has, and how many rounds.
#[derive(Clone, Copy)]
struct Counts {
    nodes: usize,
    pods: usize,
    rounds: usize,
}

impl Counts {
    fn from_env() -> Counts {
        let get = |name: &str, default: usize| match std::env::var(name) {
            Ok(value) => value
                .parse()
                .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
            Err(_) => default,
        };
        Counts {
            nodes: get("STEWARD_BENCH_NODES", NODES),
            pods: get("STEWARD_BENCH_PODS", PODS),
            rounds: get("STEWARD_BENCH_ROUNDS", ROUNDS).max(1),
        }
    }
}

/// Who answers kube-scheduler's extender calls in a run.
#[derive(Clone, Copy, PartialEq)]
enum Extender {
    /// Nobody: the profile without an extender.
    None,
    /// [`minimal_extender`].
    Minimal,
    /// Steward with `deploy/base`'s placement policies.
    Steward,
    /// The same, kube-scheduler binding each pod itself (no `bindVerb`).
    StewardNoBind,
}

impl Extender {
    fn label(self) -> &'static str {
        match self {
            Extender::None => "without extender",
            Extender::Minimal => "minimal extender",
            Extender::Steward => "with Steward",
            Extender::StewardNoBind => "Steward, no bind",
        }
    }

    /// The name of the threads of the runtime it runs on in this process
    /// (its CPU is theirs).
    fn threads(self) -> &'static str {
        match self {
            Extender::None => "no-extender",
            Extender::Minimal => "minimal-ext",
            // Also Steward's epoch thread, `steward-epoch`.
            Extender::Steward | Extender::StewardNoBind => "steward",
        }
    }
}

/// One run's outcome.
struct Run {
    took: Duration,
    pods: usize,
    /// CPU used over the measured time, by part.
    cpu: Vec<(String, Duration)>,
    /// Cores busy on average over the measured time, of `cores`.
    busy: f64,
    cores: usize,
    /// Evaluations per policy (with Steward only).
    evaluations: Vec<(&'static str, f64)>,
    /// Steward's requests and mean time per request, by endpoint.
    endpoints: Vec<(&'static str, f64, Duration)>,
    /// What the API server did over the measured time: requests by verb
    /// and resource, and watch events sent by kind; the largest counts.
    api: Vec<(String, f64)>,
}

impl Run {
    fn pods_per_second(&self) -> f64 {
        self.pods as f64 / self.took.as_secs_f64()
    }

    fn print(&self, extender: Extender) {
        println!(
            "{:<17} {} pods bound in {:.2} s = {:.0} pods/s",
            format!("{}:", extender.label()),
            self.pods,
            self.took.as_secs_f64(),
            self.pods_per_second()
        );
        let per_pod: Vec<String> = self
            .cpu
            .iter()
            .map(|(part, used)| {
                let ms = used.as_secs_f64() * 1e3 / self.pods as f64;
                format!("{part} {ms:.2} ms")
            })
            .collect();
        println!("  CPU per pod: {}", per_pod.join(", "));
        println!("  machine: {:.2} of {} cores busy", self.busy, self.cores);
        let api: Vec<String> = self
            .api
            .iter()
            .map(|(what, count)| format!("{what} {:.1}", count / self.pods as f64))
            .collect();
        println!("  API server per pod: {}", api.join(", "));
        for (policy, count) in &self.evaluations {
            println!("  {policy}: {count} evaluations");
        }
        if !self.endpoints.is_empty() {
            let means: Vec<String> = self
                .endpoints
                .iter()
                .map(|(endpoint, count, mean)| {
                    format!("{endpoint} {:.3} ms ({count})", mean.as_secs_f64() * 1e3)
                })
                .collect();
            println!("  Steward's mean answer time: {}", means.join(", "));
        }
    }
}

fn main() {
    let counts = Counts::from_env();
    let mut ratios = Vec::new();
    for version in versions() {
        println!(
            "Kubernetes {} (scheduler profile of {}): {} nodes, {} pods, client {} qps / {} burst, {} rounds",
            version.release(),
            version.deploy_flavour(),
            counts.nodes,
            counts.pods,
            CLIENT_RATE.0,
            CLIENT_RATE.1,
            counts.rounds
        );
        let (mut minimal, mut steward, mut no_bind) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=counts.rounds {
            println!("round {round}:");
            let runs = measure(version, counts);
            for (extender, run) in &runs {
                run.print(*extender);
            }
            let rate = |wanted: Extender| {
                runs.iter()
                    .find(|(extender, _)| *extender == wanted)
                    .map(|(_, run)| run.pods_per_second())
                    .expect("every extender ran")
            };
            let without = rate(Extender::None);
            minimal.push(rate(Extender::Minimal) / without);
            steward.push(rate(Extender::Steward) / without);
            no_bind.push(rate(Extender::StewardNoBind) / without);
        }
        let minimal = Ratios::new(minimal);
        let steward = Ratios::new(steward);
        let no_bind = Ratios::new(no_bind);
        println!(
            "minimal extender / without ({}): {minimal}",
            version.release()
        );
        println!(
            "Steward, kube-scheduler binding / without ({}): {no_bind}",
            version.release()
        );
        println!("with / without ({}): {steward}", version.release());
        ratios.push((version, steward));
    }
    // The ratios last, one line per release.
    if ratios.len() > 1 {
        println!();
        for (version, ratio) in ratios {
            println!("with / without ({}): {ratio}", version.release());
        }
    }
}

/// One setup's ratios to the run without an extender, a round each.
struct Ratios(Vec<f64>);

impl Ratios {
    fn new(mut ratios: Vec<f64>) -> Ratios {
        ratios.sort_by(f64::total_cmp);
        Ratios(ratios)
    }
}

/// `<median> (<each, lowest first>)`.
impl std::fmt::Display for Ratios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let each: Vec<String> = self.0.iter().map(|r| format!("{r:.2}")).collect();
        write!(f, "{:.2} ({})", self.0[self.0.len() / 2], each.join(", "))
    }
}

/// The runs without an extender, with the minimal one and with Steward on
/// `version`.
fn measure(version: KubeVersion, counts: Counts) -> Vec<(Extender, Run)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let mut runs = Vec::new();
        for extender in [
            Extender::None,
            Extender::Minimal,
            Extender::Steward,
            Extender::StewardNoBind,
        ] {
            let run = run(version, counts, extender)
                .await
                .with_context(|| format!("the run {}", extender.label()))?;
            runs.push((extender, run));
        }
        anyhow::Ok(runs)
    });
    drop(runtime);
    finish_runs(outcome.is_ok());
    match outcome {
        Ok(runs) => runs,
        Err(e) => panic!("on Kubernetes {}: {e:#}", version.release()),
    }
}

/// Starts a control plane of `version` with `counts.nodes` nodes and
/// kube-scheduler calling `extender` (on a runtime of its own, so its CPU
/// is told apart), then measures from the first pod created until every
/// pod has a node.
async fn run(version: KubeVersion, counts: Counts, extender: Extender) -> Result<Run> {
    let mut control_plane = ControlPlane::start(version).await?;
    let client = control_plane.client.clone();
    futures::stream::iter(0..counts.nodes)
        .map(|i| add_node(&client, i))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    create(
        &client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .await?;
    control_plane.wait_service_account(NAMESPACE).await?;
    let extender_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(extender.threads())
        .build()?;
    let mut steward = None;
    // Both extenders act as deploy/'s ServiceAccount (its API requests cost
    // the API server more than an administrator's: RBAC, token checks).
    let kubeconfig = match extender {
        Extender::None => None,
        _ => Some(deploy_service_account(&control_plane).await?),
    };
    let addr = match (extender, kubeconfig) {
        (Extender::Minimal, Some(kubeconfig)) => {
            let client = client_for(&kubeconfig).await?;
            Some(extender_runtime.spawn(minimal_extender(client)).await??)
        }
        (Extender::Steward | Extender::StewardNoBind, Some(kubeconfig)) => {
            // Steward is ready once it has listed HwameiStor's objects too.
            install_crds(
                &client,
                &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
            )
            .await?;
            let started = extender_runtime
                .spawn(async move { Steward::start(&kubeconfig, POLICIES, "").await })
                .await??;
            let addr = started.addr;
            steward = Some(started);
            Some(addr)
        }
        _ => None,
    };
    match (extender, addr) {
        (Extender::StewardNoBind, Some(addr)) => {
            control_plane
                .start_scheduler_binding_itself_with(addr, Some(CLIENT_RATE))
                .await?
        }
        _ => {
            control_plane
                .start_scheduler_with(addr, Some(CLIENT_RATE))
                .await?
        }
    }

    let bound = tokio::spawn(all_bound(client.clone(), counts.pods));
    let api_before = api_work(&client).await?;
    let cpu_before = cpu_use(&control_plane, extender)?;
    let machine_before = machine_cpu()?;
    let started = Instant::now();
    futures::stream::iter(0..counts.pods)
        .map(|i| add_pod(&client, i))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let finished = tokio::time::timeout(Duration::from_secs(600), bound)
        .await
        .context("the pods were not all bound within 600 s")???;
    let took = finished.duration_since(started);
    let cpu = cpu_use(&control_plane, extender)?
        .into_iter()
        .zip(cpu_before)
        .map(|((part, after), (_, before))| (part, after.saturating_sub(before)))
        .collect();
    let (machine_busy, cores) = machine_cpu()?;
    let mut api: Vec<(String, f64)> = api_work(&client)
        .await?
        .into_iter()
        .map(|(what, after)| {
            let before = api_before.get(&what).copied().unwrap_or(0.0);
            (what, after - before)
        })
        .filter(|(_, count)| *count >= counts.pods as f64 / 10.0)
        .collect();
    api.sort_by(|a, b| b.1.total_cmp(&a.1));
    let busy = machine_busy.saturating_sub(machine_before.0).as_secs_f64() / took.as_secs_f64();
    control_plane.check().await?;
    let (evaluations, endpoints) = match &steward {
        Some(steward) => (
            ["pd-quorum", "local-pv"]
                .into_iter()
                .map(|policy| {
                    let label = format!("policy=\"{policy}\"");
                    let count =
                        steward.metric("steward_evaluations_total", &[&label, "outcome=\"ok\""]);
                    (policy, count)
                })
                .collect(),
            ["filter", "prioritize", "bind"]
                .into_iter()
                .map(|endpoint| {
                    let label = format!("endpoint=\"{endpoint}\"");
                    let count = steward.metric("steward_request_duration_seconds_count", &[&label]);
                    let sum = steward.metric("steward_request_duration_seconds_sum", &[&label]);
                    (
                        endpoint,
                        count,
                        Duration::from_secs_f64(sum / count.max(1.0)),
                    )
                })
                .filter(|(_, count, _)| *count > 0.0)
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    drop(steward);
    extender_runtime.shutdown_background();
    Ok(Run {
        took,
        pods: counts.pods,
        cpu,
        busy,
        cores,
        evaluations,
        endpoints,
        api,
    })
}

/// The API server's counters so far: requests by verb and resource
/// (`apiserver_request_total`) and watch events sent by kind or resource
/// (`apiserver_watch_events_total`), from its `/metrics`.
async fn api_work(client: &Client) -> Result<std::collections::BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut work = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            series
                .split_once(&format!("{name}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or("", |(value, _)| value)
        };
        let what = if series.starts_with("apiserver_request_total{") {
            let sub = label("subresource");
            let resource = if sub.is_empty() {
                label("resource").to_string()
            } else {
                format!("{}/{sub}", label("resource"))
            };
            format!("{} {resource}", label("verb"))
        } else if series.starts_with("apiserver_watch_events_total{") {
            // By kind up to 1.3x, by resource since.
            let kind = match label("kind") {
                "" => label("resource"),
                kind => kind,
            };
            format!("watch events {kind}")
        } else {
            continue;
        };
        *work.entry(what).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(work)
}

/// The CPU time used so far by each server of the control plane, the
/// extender's threads and the rest of this process (the bench creating and
/// watching pods).
fn cpu_use(control_plane: &ControlPlane, extender: Extender) -> Result<Vec<(String, Duration)>> {
    let mut parts = control_plane.cpu_times()?;
    let (_, process) =
        steward_tests::control_plane::process::cpu_time(std::path::Path::new("/proc/self/stat"))?;
    let extender_cpu = own_threads_cpu_time(extender.threads())?;
    if extender != Extender::None {
        parts.push(("extender".into(), extender_cpu));
    }
    parts.push(("bench client".into(), process.saturating_sub(extender_cpu)));
    Ok(parts)
}

/// The CPU time all cores have been busy so far (`/proc/stat`: all but
/// idle and iowait), and how many cores there are.
fn machine_cpu() -> Result<(Duration, usize)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("/proc/stat has no `cpu` line")?
        .split_whitespace()
        .map(|t| {
            t.parse()
                .context("/proc/stat: a tick count is not a number")
        })
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let busy: u64 =
        ticks.iter().sum::<u64>() - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0);
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    Ok((from_ticks(busy), cores))
}

/// The least an extender answers: every node passes, no preference, and
/// the bind through the API server with `client`. Serves on a free
/// loopback port.
async fn minimal_extender(client: Client) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new()
        .route(
            "/scheduler/filter",
            post(|Json(args): Json<Value>| async move {
                Json(json!({"NodeNames": args["NodeNames"], "FailedNodes": {}, "Error": ""}))
            }),
        )
        .route("/scheduler/prioritize", post(|| async { Json(json!([])) }))
        .route(
            "/scheduler/bind",
            post(move |Json(args): Json<Value>| bind(client.clone(), args)),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// The minimal extender's bind: a Binding of the pod to the node.
async fn bind(client: Client, args: Value) -> Json<Value> {
    let field = |name: &str| args[name].as_str().unwrap_or_default().to_string();
    let (namespace, name) = (field("PodNamespace"), field("PodName"));
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(field("PodUID")),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(field("Node")),
            ..Default::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let error = match pods
        .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => String::new(),
        Err(e) => format!("binding {namespace}/{name}: {e}"),
    };
    Json(json!({"Error": error}))
}

/// A Ready, untainted node with room for many small pods.
async fn add_node(client: &Client, i: usize) -> Result<()> {
    let name = format!("node-{i:03}");
    let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "110"});
    add_ready_node(client, &name, capacity).await
}

/// A TiDB server pod of the TidbCluster `bench`, for Steward's profile.
async fn add_pod(client: &Client, i: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": format!("bench-tidb-{i}"),
            "labels": {
                "app.kubernetes.io/managed-by": "tidb-operator",
                "app.kubernetes.io/instance": "bench",
                "app.kubernetes.io/component": "tidb",
            },
        },
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "containers": [{"name": "tidb", "image": "pingcap/tidb:v6.1.0",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod bench-tidb-{i}"))?;
    Ok(())
}

/// Watches the namespace's pods; returns when `count` of them have a node.
async fn all_bound(client: Client, count: usize) -> Result<Instant> {
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let mut events = watcher(pods, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut bound = BTreeSet::new();
    while let Some(pod) = events.try_next().await? {
        if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
            bound.insert(pod.name_any());
            if bound.len() == count {
                return Ok(Instant::now());
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}
