//! Placement latency on a real Kubernetes control plane (issue 16), on
//! each release of `STEWARD_E2E_KUBERNETES` (unset: 1.20.2 and 1.37.2):
//! the time from creating a TidbCluster-like set of pods (the example
//! snapshot's `basic-pd` and `basic-tikv` StatefulSets, Parallel, 5
//! replicas each, a HwameiStor claim per pod) until all 10 are bound, on 6
//! nodes in 3 zones, with pd-quorum spreading each component by zone
//! and local-pv checking the pools. Each release is measured with Steward
//! binding (`bindVerb`, as `deploy/` ships it) and with kube-scheduler
//! binding (no `bindVerb`), `STEWARD_BENCH_RUNS` runs each (default 5),
//! every run in a fresh namespace of one control plane per setup. Every
//! run checks the quorum rule (at most 2 of 5 members of a component per
//! zone). Prints each run, then median and max per setup; the last line
//! `placement: <seconds>s` is the largest median of all setups.
//!
//! `cargo bench -p steward-tests --bench placement_latency`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward_tests::control_plane::doubles::Doubles;
use steward_tests::control_plane::{ControlPlane, KubeVersion, finish_runs, versions};
use steward_tests::e2e::{
    Steward, create, deploy_service_account, install_crds, read_objects, untaint,
};

/// Runs per setup unless `STEWARD_BENCH_RUNS` says otherwise.
const RUNS: usize = 5;
/// Members of each component.
const REPLICAS: u32 = 5;
/// Nodes, spread over `ZONES`.
const NODES: usize = 6;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
const ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Most members of one component a zone may hold: 5 PD members keep a
/// quorum of 3 when a zone with 2 goes; 5 TiKV replicas over 3 zones hold
/// at most ceil(5/3) per zone.
const MAX_PER_ZONE: usize = 2;
/// The snapshot's node (and LocalStorageNode) every bench node copies.
const MODEL_NODE: &str = "k8s-10-6-163-51";

/// pd-quorum by zone and local-pv on HwameiStor's pools, as `deploy/base`
/// runs them.
const POLICIES: &[&str] = &[
    "{id: pd-quorum, hook: scheduler, module: '{pd_quorum}', failureMode: fail-closed, \
     select: {schedulerNames: [steward-scheduler], \
     matchLabels: {app.kubernetes.io/managed-by: tidb-operator}}, \
     settings: {topologyKey: topology.kubernetes.io/zone}}",
    "{id: local-pv, hook: scheduler, module: '{local_pv}', failureMode: fail-closed, \
     select: {schedulerNames: [steward-scheduler]}, \
     settings: {capacitySource: hwameistor, scoring: spread}}",
];

/// Who binds the pods.
#[derive(Clone, Copy, PartialEq)]
enum Binder {
    /// Steward, through the extender's `bindVerb`.
    Steward,
    /// kube-scheduler itself (no `bindVerb`).
    Scheduler,
}

impl Binder {
    fn name(self) -> &'static str {
        match self {
            Binder::Steward => "with bindVerb",
            Binder::Scheduler => "without bindVerb",
        }
    }
}

fn main() {
    let runs = match std::env::var("STEWARD_BENCH_RUNS") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|e| panic!("STEWARD_BENCH_RUNS={value:?}: {e}")),
        Err(_) => RUNS,
    };
    let mut medians = Vec::new();
    for version in versions() {
        for binder in [Binder::Steward, Binder::Scheduler] {
            let took = measure(version, binder, runs);
            let mut sorted = took.clone();
            sorted.sort();
            let median = sorted[sorted.len() / 2];
            let max = sorted[sorted.len() - 1];
            println!(
                "Kubernetes {} {}: {REPLICAS} PD + {REPLICAS} TiKV pods on {NODES} nodes in \
                 {} zones, {} runs: median {:.2} s, max {:.2} s",
                version.release(),
                binder.name(),
                ZONES.len(),
                took.len(),
                median.as_secs_f64(),
                max.as_secs_f64()
            );
            medians.push(median);
        }
    }
    let worst = medians.into_iter().max().unwrap_or_default();
    println!("placement: {:.2}s", worst.as_secs_f64());
}

/// `runs` placements on one control plane of `version`, each in its own
/// namespace; how long each took.
fn measure(version: KubeVersion, binder: Binder, runs: usize) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let mut control_plane = ControlPlane::start(version).await?;
        let client = control_plane.client.clone();
        let _steward_and_doubles = start(&mut control_plane, binder).await?;
        let mut took = Vec::with_capacity(runs);
        for run in 0..runs {
            let namespace = format!("placement-{run}");
            let one = place(&mut control_plane, &client, &namespace)
                .await
                .with_context(|| format!("run {run} ({namespace})"))?;
            println!(
                "  {} {} run {run}: all {} pods bound in {:.2} s",
                version.release(),
                binder.name(),
                2 * REPLICAS,
                one.as_secs_f64()
            );
            took.push(one);
        }
        control_plane.check().await?;
        anyhow::Ok(took)
    });
    drop(runtime);
    finish_runs(outcome.is_ok());
    outcome.unwrap_or_else(|e| {
        panic!(
            "on Kubernetes {} {}: {e:#}",
            version.release(),
            binder.name()
        )
    })
}

/// The nodes, HwameiStor's objects, Steward and kube-scheduler (binding
/// as `binder` says), and the node agents' doubles.
async fn start(control_plane: &mut ControlPlane, binder: Binder) -> Result<(Steward, Doubles)> {
    let client = control_plane.client.clone();
    install_crds(
        &client,
        &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
    )
    .await?;
    let snapshot = read_objects(&steward_tests::example_snapshot())?;
    for object in snapshot.iter().filter(|o| o["kind"] == "StorageClass") {
        create(&client, object.clone()).await?;
    }
    let models: Vec<&serde_json::Value> = snapshot
        .iter()
        .filter(|o| {
            ["Node", "LocalStorageNode"].contains(&o["kind"].as_str().unwrap_or_default())
                && o["metadata"]["name"] == MODEL_NODE
        })
        .collect();
    for i in 0..NODES {
        let name = format!("bench-node-{i}");
        for model in &models {
            let renamed = serde_json::to_string(model)?.replace(MODEL_NODE, &name);
            let mut object: serde_json::Value = serde_json::from_str(&renamed)?;
            if object["kind"] == "Node" {
                object["metadata"]["labels"][ZONE_KEY] = ZONES[i % ZONES.len()].into();
            }
            create(&client, object).await?;
        }
        untaint(&client, &name).await?;
    }
    let kubeconfig = deploy_service_account(control_plane).await?;
    let steward = Steward::start(&kubeconfig, POLICIES, "").await?;
    match binder {
        Binder::Steward => control_plane.start_scheduler(steward.addr).await?,
        Binder::Scheduler => {
            control_plane
                .start_scheduler_binding_itself(steward.addr)
                .await?
        }
    }
    let doubles = Doubles::start(&client, &["lvm.hwameistor.io"]);
    Ok((steward, doubles))
}

/// Creates the PD and TiKV StatefulSets in a new `namespace` and waits
/// until every pod is bound; checks the quorum rule; the time it took.
async fn place(
    control_plane: &mut ControlPlane,
    client: &Client,
    namespace: &str,
) -> Result<Duration> {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
    )
    .await?;
    control_plane.wait_service_account(namespace).await?;
    let sets: Vec<serde_json::Value> = read_objects(&steward_tests::example_snapshot())?
        .into_iter()
        .filter(|o| o["kind"] == "StatefulSet")
        .map(|mut set| {
            set["metadata"]["namespace"] = namespace.into();
            set["spec"]["replicas"] = REPLICAS.into();
            set
        })
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let bound = tokio::spawn(all_bound(pods, 2 * REPLICAS as usize));
    let started = Instant::now();
    for set in sets {
        create(client, set).await?;
    }
    let placed = tokio::time::timeout(Duration::from_secs(600), bound)
        .await
        .context("the pods were not all bound within 600 s")???;
    let took = placed.0.duration_since(started);
    check_quorum(client, &placed.1).await?;
    Ok(took)
}

/// Watches `pods` until `count` of them have a node: when, and pod → node.
async fn all_bound(pods: Api<Pod>, count: usize) -> Result<(Instant, BTreeMap<String, String>)> {
    let mut events = watcher(pods, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut bound = BTreeMap::new();
    while let Some(pod) = events.try_next().await? {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            bound.insert(pod.name_any(), node);
            if bound.len() == count {
                return Ok((Instant::now(), bound));
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// No zone holds more than [`MAX_PER_ZONE`] members of a component.
async fn check_quorum(client: &Client, placed: &BTreeMap<String, String>) -> Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut zone_of = BTreeMap::new();
    for node in placed.values().collect::<BTreeSet<_>>() {
        let zone = nodes
            .get(node)
            .await?
            .labels()
            .get(ZONE_KEY)
            .cloned()
            .with_context(|| format!("node {node} has no {ZONE_KEY} label"))?;
        zone_of.insert(node.clone(), zone);
    }
    for component in ["pd", "tikv"] {
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for (pod, node) in placed {
            if pod.starts_with(&format!("basic-{component}-")) {
                *per_zone.entry(zone_of[node].as_str()).or_default() += 1;
            }
        }
        ensure!(
            per_zone.values().all(|&n| n <= MAX_PER_ZONE),
            "{component} members per zone {per_zone:?} break the quorum rule (at most \
             {MAX_PER_ZONE}); placement {placed:?}"
        );
    }
    Ok(())
}
