//! Steward on any cluster: it watches the kinds its configured policies
//! need, serves without the CRDs of policies it does not run, reports a
//! policy whose kinds are missing degraded while the others serve, and
//! picks a CRD installed later up without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use steward::cluster::ClusterQuery;
use steward::config::Config;
use steward::server::App;
use steward::wit::CapacitySource;
use steward_tests::control_plane::doubles::Doubles;
use steward_tests::control_plane::{ControlPlane, KubeVersion};
use steward_tests::e2e::{
    SCHEDULER_NAME, create, deploy_service_account, eventually, install_crds, scenario,
    scheduling_refusal, untaint,
};

pub const NAMESPACE: &str = "sources";

pub const PD_QUORUM: &str = "{id: pd-quorum, hook: scheduler, module: '{pd_quorum}', \
                         failureMode: fail-closed, select: {schedulerNames: [steward-scheduler]}}";
const LOCAL_PV: &str = "{id: local-pv, hook: scheduler, module: '{local_pv}', \
                        failureMode: fail-closed, select: {schedulerNames: [steward-scheduler]}}";

/// The provisioner of the CSI scenario's storage class (played by the
/// provisioner double).
const CSI_DRIVER: &str = "csi.steward.test";
const CSI_CLASS: &str = "csi-local";

/// The control plane with `nodes` (Ready, untainted; each with its zone
/// label when given one), the test namespace, and Steward's
/// ServiceAccount kubeconfig; no CRDs.
pub async fn bare_cluster(
    version: KubeVersion,
    nodes: &[(&str, Option<&str>)],
) -> Result<(ControlPlane, String)> {
    let mut control_plane = ControlPlane::start(version).await?;
    let client = control_plane.client.clone();
    for &(name, zone) in nodes {
        create(&client, node(name, zone)).await?;
        untaint(&client, name).await?;
    }
    create(
        &client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .await?;
    control_plane.wait_service_account(NAMESPACE).await?;
    let kubeconfig = deploy_service_account(&control_plane).await?;
    Ok((control_plane, kubeconfig.display().to_string()))
}

/// The node label of zones.
pub const ZONE: &str = "topology.kubernetes.io/zone";

fn node(name: &str, zone: Option<&str>) -> Value {
    let resources = json!({"cpu": "8", "memory": "16Gi", "pods": "110"});
    let mut labels = json!({"kubernetes.io/hostname": name});
    if let Some(zone) = zone {
        labels[ZONE] = json!(zone);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": resources, "allocatable": resources,
        },
    })
}

/// A PD StatefulSet of TiDB cluster `instance` without volumes.
pub fn pd_statefulset(instance: &str, replicas: u32) -> Value {
    let labels = json!({
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": "pd",
        "app.kubernetes.io/managed-by": "tidb-operator",
    });
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": format!("{instance}-pd"), "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": format!("{instance}-pd-peer"),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "schedulerName": SCHEDULER_NAME,
                    "containers": [{"name": "pd", "image": "pingcap/pd:v6.5.0"}],
                },
            },
        },
    })
}

/// Writes Steward's config file with `policies` and a one-second
/// discovery interval.
pub fn write_config(file: &Path, kubeconfig: &str, policies: &[&str]) -> Result<()> {
    let list: Vec<String> = policies.iter().map(|p| format!("- {p}")).collect();
    let yaml = format!(
        "cluster: {{kubeconfig: {kubeconfig}, discoveryIntervalSeconds: 1}}\npolicies:\n{}\n",
        steward_tests::expand_guests(&list.join("\n"))
    );
    std::fs::write(file, yaml).with_context(|| format!("cannot write {}", file.display()))
}

/// Steward started from `file` as `steward serve` is (its config watched),
/// serving on loopback once ready.
pub async fn serve(file: &Path) -> Result<(App, std::net::SocketAddr)> {
    let config = Config::load(file)?;
    let app = App::start(&config).await?;
    let addr = steward_tests::serve_under(app.clone(), "/scheduler").await;
    steward_tests::e2e::wait_ready(addr).await?;
    Ok((app, addr))
}

/// The `/status` entry of policy `id`.
pub async fn policy_status(addr: std::net::SocketAddr, id: &str) -> Result<Value> {
    let (code, body) = steward_tests::get(addr, "/status").await;
    ensure!(code == 200, "/status answered {code}: {body}");
    let report: Value = serde_json::from_str(&body)?;
    report["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == id).cloned())
        .with_context(|| format!("/status has no policy {id}: {body}"))
}

/// Waits until `count` pods of `instance`'s PD are bound; returns pod →
/// node.
pub async fn pd_nodes(
    client: &Client,
    instance: &str,
    count: usize,
) -> Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!("app.kubernetes.io/instance={instance},app.kubernetes.io/component=pd");
    eventually(
        Duration::from_secs(300),
        &format!("{count} PD pods of {instance} bound"),
        || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let bound: BTreeMap<String, String> = list
                .items
                .iter()
                .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
                .collect();
            Ok((bound.len() == count).then_some(bound))
        },
    )
    .await
}

/// The distinct values of a placement.
pub fn distinct(placed: &BTreeMap<String, String>) -> BTreeSet<&String> {
    placed.values().collect()
}

/// Steward with only pd-quorum on a cluster without HwameiStor's CRDs is
/// ready and places a PD StatefulSet one member per node; local-pv added
/// to its configuration is degraded (naming the missing CRDs) while
/// pd-quorum keeps placing; once the CRDs are installed, local-pv serves
/// and sees HwameiStor's objects, without a restart.
#[test]
fn steward_serves_without_hwameistor_crds_and_picks_them_up_later() {
    scenario(
        "steward_serves_without_hwameistor_crds_and_picks_them_up_later",
        |version| async move {
            let nodes = [("node-a", None), ("node-b", None), ("node-c", None)];
            let (mut control_plane, kubeconfig) = bare_cluster(version, &nodes).await?;
            let client = control_plane.client.clone();
            let file = control_plane.dir.join("steward.yaml");
            write_config(&file, &kubeconfig, &[PD_QUORUM])?;
            let (app, addr) = serve(&file).await?;
            control_plane.start_scheduler(addr).await?;
            let _doubles = Doubles::start(&client, &[]);

            create(&client, pd_statefulset("basic", 3)).await?;
            let placed = pd_nodes(&client, "basic", 3).await?;
            ensure!(
                distinct(&placed).len() == 3,
                "PD members share a node: {placed:?}"
            );
            let status = policy_status(addr, "pd-quorum").await?;
            ensure!(status["state"] == "serving", "pd-quorum: {status}");

            // local-pv (HwameiStor source) joins the configuration.
            write_config(&file, &kubeconfig, &[PD_QUORUM, LOCAL_PV])?;
            let degraded = eventually(
                Duration::from_secs(30),
                "local-pv reported degraded",
                || async {
                    let status = policy_status(addr, "local-pv").await.ok();
                    Ok(status.filter(|s| s["state"] == "degraded"))
                },
            )
            .await?;
            let why = degraded["missingKinds"].as_str().unwrap_or_default();
            for crd in [
                "localstoragenodes.hwameistor.io",
                "localdisknodes.hwameistor.io",
                "localvolumes.hwameistor.io",
            ] {
                ensure!(why.contains(crd), "the reason names {crd}: {degraded}");
            }
            let (code, body) = steward_tests::get(addr, "/readyz").await;
            ensure!(code == 200, "ready with local-pv degraded: {code} {body}");
            let status = policy_status(addr, "pd-quorum").await?;
            ensure!(status["state"] == "serving", "pd-quorum: {status}");
            create(&client, pd_statefulset("other", 3)).await?;
            let placed = pd_nodes(&client, "other", 3).await?;
            ensure!(
                distinct(&placed).len() == 3,
                "PD members of other share a node: {placed:?}"
            );

            // HwameiStor is installed: local-pv serves and sees its objects.
            install_crds(
                &client,
                &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
            )
            .await?;
            eventually(Duration::from_secs(30), "local-pv serving", || async {
                let status = policy_status(addr, "local-pv").await?;
                Ok(
                    (status["state"] == "serving" && status["missingKinds"].is_null())
                        .then_some(()),
                )
            })
            .await?;
            create(
                &client,
                json!({
                    "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalStorageNode",
                    "metadata": {"name": "node-a"},
                    "spec": {"hostname": "node-a", "storageIP": "10.0.0.1"},
                    "status": {"state": "Ready", "pools": {"LocalStorage_PoolHDD": {
                        "class": "HDD", "totalCapacityBytes": 1_u64 << 40,
                        "usedCapacityBytes": 0, "totalVolumeCount": 100,
                    }}},
                }),
            )
            .await?;
            let query = ClusterQuery::new(app.hooks.cluster.clone());
            let node_a = query.node_id("node-a").context("node-a in the cache")?;
            eventually(
                Duration::from_secs(30),
                "the LocalStorageNode of node-a in Steward's cache",
                || async {
                    Ok((query.storage_nodes(CapacitySource::Hwameistor) == [node_a]).then_some(()))
                },
            )
            .await?;
            let (code, body) = steward_tests::get(addr, "/readyz").await;
            ensure!(
                code == 200,
                "ready with every policy serving: {code} {body}"
            );
            control_plane.check().await
        },
    );
}

/// local-pv with `capacitySource: csiStorageCapacity`. Kubernetes 1.37
/// serves `storage.k8s.io/v1` CSIStorageCapacity: a claim goes to the node
/// whose object has room, and a claim no node has room for waits with the
/// figures in its event. 1.20 does not serve it: the policy is degraded
/// and its refusals say so.
#[test]
fn csi_storage_capacity_is_read_where_served_and_reported_missing_where_not() {
    scenario(
        "csi_storage_capacity_is_read_where_served_and_reported_missing_where_not",
        |version| async move {
            let (mut control_plane, kubeconfig) =
                bare_cluster(version, &[("csi-a", None), ("csi-b", None)]).await?;
            let client = control_plane.client.clone();
            let file = control_plane.dir.join("steward.yaml");
            let policy = format!(
                "{{id: local-pv, hook: scheduler, module: '{{local_pv}}', failureMode: \
                 fail-closed, select: {{schedulerNames: [{SCHEDULER_NAME}]}}, settings: \
                 {{capacitySource: csiStorageCapacity, lvmProvisioners: [{CSI_DRIVER}], \
                 diskProvisioners: []}}}}"
            );
            write_config(&file, &kubeconfig, &[policy.as_str()])?;
            let (_app, addr) = serve(&file).await?;
            control_plane.start_scheduler(addr).await?;
            let _doubles = Doubles::start(&client, &[CSI_DRIVER]);
            create(
                &client,
                json!({
                    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": CSI_CLASS}, "provisioner": CSI_DRIVER,
                    "volumeBindingMode": "WaitForFirstConsumer",
                }),
            )
            .await?;
            let served = !matches!(version, KubeVersion::V1_20);
            if served {
                for (node, capacity) in [("csi-a", "1Gi"), ("csi-b", "100Gi")] {
                    create(
                        &client,
                        json!({
                            "apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
                            "metadata": {"name": format!("{node}-capacity"), "namespace": NAMESPACE},
                            "storageClassName": CSI_CLASS,
                            "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}},
                            "capacity": capacity,
                        }),
                    )
                    .await?;
                }
            } else {
                let status = policy_status(addr, "local-pv").await?;
                let why = status["missingKinds"].as_str().unwrap_or_default();
                ensure!(
                    status["state"] == "degraded"
                        && why.contains("storage.k8s.io/v1 CSIStorageCapacity"),
                    "local-pv on {}: {status}",
                    version.release()
                );
            }
            for (name, size) in [("small", "10Gi"), ("huge", "500Gi")] {
                create(&client, claim(name, size)).await?;
                create(&client, pod_with_claim(name)).await?;
            }
            let huge = scheduling_refusal(&client, NAMESPACE, "huge", "local-pv").await?;
            eprintln!("csi: pod huge refused: {huge}");
            if served {
                // 100 GiB, less what pod small reserved if it was placed
                // on csi-b first.
                ensure!(
                    huge.contains(&format!("pool {CSI_CLASS} on csi-b has 100 GiB free"))
                        || huge.contains(&format!(
                            "pool {CSI_CLASS} on csi-b has 90 GiB free (100 GiB reported"
                        )),
                    "the refusal gives csi-b's CSIStorageCapacity figure: {huge}"
                );
                let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
                let node = eventually(Duration::from_secs(120), "pod small bound", || async {
                    let pod = pods.get("small").await?;
                    Ok(pod.spec.and_then(|s| s.node_name))
                })
                .await?;
                ensure!(
                    node == "csi-b",
                    "pod small (10 GiB) went to {node}; only csi-b's capacity has room"
                );
            } else {
                ensure!(
                    huge.contains("does not serve storage.k8s.io/v1 CSIStorageCapacity"),
                    "the refusal names the missing API: {huge}"
                );
            }
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            let huge_pod = pods.get("huge").await?;
            ensure!(
                huge_pod.spec.and_then(|s| s.node_name).is_none(),
                "pod huge was bound although no node has room"
            );
            control_plane.check().await
        },
    );
}

fn claim(name: &str, size: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": CSI_CLASS,
            "resources": {"requests": {"storage": size}},
        },
    })
}

fn pod_with_claim(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "containers": [{"name": "app", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
        },
    })
}
