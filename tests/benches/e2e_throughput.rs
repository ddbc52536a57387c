//! Scheduling throughput on a real Kubernetes 1.20.2 control plane (issue 7):
//! pods/s the real kube-scheduler places with Steward as its extender
//! against the same scheduler profile without an extender, 100 nodes and
//! 500 pods, measured in one run, each on a fresh control plane.
//!
//! The pods are TiDB server pods of a TidbCluster (no volumes): both
//! placement policies of `deploy/base` select them and are evaluated for
//! every pod. Both runs raise kube-scheduler's API client rate to the same
//! 500 qps / 1,000 burst (1.20 defaults to 50/100, which would cap binding
//! in both runs and hide the extender's cost).
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
use steward_tests::control_plane::{ControlPlane, KubeVersion, finish_runs};
use steward_tests::e2e::{
    SCHEDULER_NAME, Steward, create, deploy_service_account, install_crds, untaint,
};

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

/// One run's outcome.
struct Run {
    took: Duration,
    /// Evaluations per policy (with Steward only).
    evaluations: Vec<(&'static str, f64)>,
}

impl Run {
    fn pods_per_second(&self) -> f64 {
        PODS as f64 / self.took.as_secs_f64()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        // Without Steward first: Steward's tasks outlive their run.
        let without = run(false).await.context("the run without the extender")?;
        let with = run(true).await.context("the run with Steward")?;
        anyhow::Ok((without, with))
    });
    drop(runtime);
    finish_runs(outcome.is_ok());
    let (without, with) = match outcome {
        Ok(runs) => runs,
        Err(e) => panic!("{e:#}"),
    };
    println!(
        "{NODES} nodes, {PODS} pods, kube-scheduler 1.20.2, client {} qps / {} burst",
        CLIENT_RATE.0, CLIENT_RATE.1
    );
    println!(
        "without extender: {PODS} pods bound in {:.2} s = {:.0} pods/s",
        without.took.as_secs_f64(),
        without.pods_per_second()
    );
    println!(
        "with Steward:     {PODS} pods bound in {:.2} s = {:.0} pods/s",
        with.took.as_secs_f64(),
        with.pods_per_second()
    );
    for (policy, count) in &with.evaluations {
        println!("  {policy}: {count} evaluations");
    }
    println!(
        "with / without: {:.2}",
        with.pods_per_second() / without.pods_per_second()
    );
}

/// Starts a control plane with [`NODES`] nodes and kube-scheduler (calling
/// Steward or not), then measures from the first pod created until every
/// pod has a node.
async fn run(with_steward: bool) -> Result<Run> {
    let mut control_plane = ControlPlane::start(KubeVersion::V1_20).await?;
    let client = control_plane.client.clone();
    futures::stream::iter(0..NODES)
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

    let bound = tokio::spawn(all_bound(client.clone()));
    let started = Instant::now();
    futures::stream::iter(0..PODS)
        .map(|i| add_pod(&client, i))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let finished = tokio::time::timeout(Duration::from_secs(600), bound)
        .await
        .context("the pods were not all bound within 600 s")???;
    control_plane.check_running()?;
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
        evaluations,
    })
}

/// A Ready, untainted node with room for many small pods.
async fn add_node(client: &Client, i: usize) -> Result<()> {
    let name = format!("node-{i:03}");
    let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "110"});
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
    untaint(client, &name).await
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

/// Watches the namespace's pods; returns when [`PODS`] of them have a node.
async fn all_bound(client: Client) -> Result<Instant> {
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let mut events = watcher(pods, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut bound = BTreeSet::new();
    while let Some(pod) = events.try_next().await? {
        if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
            bound.insert(pod.name_any());
            if bound.len() == PODS {
                return Ok(Instant::now());
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}
