//! Scheduling throughput on a real Kubernetes control plane (issue 7), on
//! each release of `STEWARD_E2E_KUBERNETES` (unset: 1.20.2 and 1.37.2):
//! pods/s the real kube-scheduler places with Steward as its extender
//! against the same scheduler profile without an extender, 100 nodes and
//! 500 pods, measured in one run, each on a fresh control plane. The last
//! lines say `with / without (v1.20.2): <ratio>`, one per release.
//! `STEWARD_BENCH_NODES` and `STEWARD_BENCH_PODS` change the counts (a
//! quick check of the bench itself, not a figure to record).
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
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward_tests::control_plane::{ControlPlane, KubeVersion, finish_runs, versions};
use steward_tests::e2e::{
    SCHEDULER_NAME, Steward, add_ready_node, create, deploy_service_account, install_crds,
};

/// Nodes and pods of a run, unless `STEWARD_BENCH_NODES`/`_PODS` say otherwise.
const NODES: usize = 100;
const PODS: usize = 500;
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

/// How many nodes and pods each run has.
#[derive(Clone, Copy)]
struct Counts {
    nodes: usize,
    pods: usize,
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
        }
    }
}

/// One run's outcome.
struct Run {
    took: Duration,
    pods: usize,
    /// Evaluations per policy (with Steward only).
    evaluations: Vec<(&'static str, f64)>,
}

impl Run {
    fn pods_per_second(&self) -> f64 {
        self.pods as f64 / self.took.as_secs_f64()
    }
}

fn main() {
    let counts = Counts::from_env();
    let mut ratios = Vec::new();
    for version in versions() {
        let (without, with) = measure(version, counts);
        println!(
            "Kubernetes {} (scheduler profile of {}): {} nodes, {} pods, client {} qps / {} burst",
            version.release(),
            version.deploy_flavour(),
            counts.nodes,
            counts.pods,
            CLIENT_RATE.0,
            CLIENT_RATE.1
        );
        println!(
            "without extender: {} pods bound in {:.2} s = {:.0} pods/s",
            counts.pods,
            without.took.as_secs_f64(),
            without.pods_per_second()
        );
        println!(
            "with Steward:     {} pods bound in {:.2} s = {:.0} pods/s",
            counts.pods,
            with.took.as_secs_f64(),
            with.pods_per_second()
        );
        for (policy, count) in &with.evaluations {
            println!("  {policy}: {count} evaluations");
        }
        let ratio = with.pods_per_second() / without.pods_per_second();
        println!("with / without ({}): {ratio:.2}", version.release());
        ratios.push((version, ratio));
    }
    // The ratios last, one line per release.
    if ratios.len() > 1 {
        println!();
        for (version, ratio) in ratios {
            println!("with / without ({}): {ratio:.2}", version.release());
        }
    }
}

/// The runs without and with Steward on `version`.
fn measure(version: KubeVersion, counts: Counts) -> (Run, Run) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        // Without Steward first: Steward's tasks outlive their run.
        let without = run(version, counts, false)
            .await
            .context("the run without the extender")?;
        let with = run(version, counts, true)
            .await
            .context("the run with Steward")?;
        anyhow::Ok((without, with))
    });
    drop(runtime);
    finish_runs(outcome.is_ok());
    match outcome {
        Ok(runs) => runs,
        Err(e) => panic!("on Kubernetes {}: {e:#}", version.release()),
    }
}

/// Starts a control plane of `version` with `counts.nodes` nodes and
/// kube-scheduler (calling Steward or not), then measures from the first
/// pod created until every pod has a node.
async fn run(version: KubeVersion, counts: Counts, with_steward: bool) -> Result<Run> {
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
    let steward = if with_steward {
        // Steward is ready once it has listed HwameiStor's objects too.
        install_crds(
            &client,
            &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
        )
        .await?;
        let kubeconfig = deploy_service_account(&control_plane).await?;
        let steward = Steward::start(&kubeconfig, POLICIES, "").await?;
        control_plane
            .start_scheduler_with(Some(steward.addr), Some(CLIENT_RATE))
            .await?;
        Some(steward)
    } else {
        control_plane
            .start_scheduler_with(None, Some(CLIENT_RATE))
            .await?;
        None
    };

    let bound = tokio::spawn(all_bound(client.clone(), counts.pods));
    let started = Instant::now();
    futures::stream::iter(0..counts.pods)
        .map(|i| add_pod(&client, i))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let finished = tokio::time::timeout(Duration::from_secs(600), bound)
        .await
        .context("the pods were not all bound within 600 s")???;
    control_plane.check().await?;
    let evaluations = match &steward {
        Some(steward) => ["pd-quorum", "local-pv"]
            .into_iter()
            .map(|policy| {
                let label = format!("policy=\"{policy}\"");
                let count =
                    steward.metric("steward_evaluations_total", &[&label, "outcome=\"ok\""]);
                (policy, count)
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Run {
        took: finished.duration_since(started),
        pods: counts.pods,
        evaluations,
    })
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
