//! Steward in place of tidb-scheduler on a tidb-operator v1 cluster: it
//! reads the TidbCluster (topology key annotation, replicas, delete slots),
//! resolves pods owned by an Advanced StatefulSet, and reconciles and
//! guards Advanced StatefulSets as it does `apps/v1` ones. tidb-operator's
//! CRDs are ours (`tests/control-plane/tidb-operator-crds.yaml`, the fields
//! Steward reads); no tidb-operator runs, so the test plays its part (and
//! that of its Advanced StatefulSet controller).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use steward::cluster::ClusterQuery;
use steward::cluster::tidb::{ADVANCED_STATEFULSET, statefulset_resource};
use steward::reconcile::OPT_IN_LABEL;
use steward::server::App;
use steward_tests::control_plane::doubles::Doubles;
use steward_tests::control_plane::{ControlPlane, KubeVersion};
use steward_tests::e2e::{
    DEPLOY_NAMESPACE, SCHEDULER_NAME, Steward, create, events_about, eventually, install_crds,
    scenario, scheduling_refusal,
};
use steward_tests::pd_double::{DoubleMember, PdDouble};

use crate::reconcile::GATE;
use crate::safety::{Held, check_gate_steps, watch_held};
use crate::sources::{
    NAMESPACE, PD_QUORUM, ZONE, bare_cluster, pd_nodes, pd_statefulset, serve, write_config,
};
use crate::tidb::{admission_policies, pods_at, reconcile_policy, register_webhooks, webhook_tls};

/// Two nodes in zone-a, one in zone-b, one in zone-c.
const NODES: [(&str, Option<&str>); 4] = [
    ("a1", Some("zone-a")),
    ("a2", Some("zone-a")),
    ("b1", Some("zone-b")),
    ("c1", Some("zone-c")),
];

fn zone_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|(n, _)| *n == node)
        .and_then(|(_, z)| *z)
        .unwrap_or("none")
}

/// A TidbCluster `basic` whose PD has `replicas`, annotated with the zone
/// topology key and `annotations`.
fn tidb_cluster(replicas: u32, annotations: Value) -> Value {
    let mut all = json!({"pingcap.com/ha-topology-key": ZONE});
    all.as_object_mut()
        .expect("an object")
        .extend(annotations.as_object().cloned().unwrap_or_default());
    json!({
        "apiVersion": "pingcap.com/v1alpha1", "kind": "TidbCluster",
        "metadata": {"name": "basic", "namespace": NAMESPACE, "annotations": all},
        "spec": {"schedulerName": SCHEDULER_NAME, "pd": {"replicas": replicas}},
    })
}

/// Waits until Steward's cache holds `basic`'s TidbCluster (so the first
/// pod is already placed by it).
async fn steward_sees_tidb_cluster(app: &App) -> Result<()> {
    let query = ClusterQuery::new(app.hooks.cluster.clone());
    eventually(
        Duration::from_secs(30),
        "the TidbCluster in Steward's cache",
        || async { Ok(query.get_tidb_cluster(NAMESPACE, "basic").map(|_| ())) },
    )
    .await
}

/// Steward (pd-quorum only) on a control plane with tidb-operator's CRDs,
/// the zoned nodes, kube-scheduler and the kubelet double.
struct Running {
    app: App,
    _doubles: Doubles,
    control_plane: ControlPlane,
}

/// The control plane with the zoned nodes and tidb-operator's CRDs, and
/// Steward's ServiceAccount kubeconfig.
async fn tidb_operator_cluster(version: KubeVersion) -> Result<(ControlPlane, String)> {
    let (control_plane, kubeconfig) = bare_cluster(version, &NODES).await?;
    install_crds(
        &control_plane.client,
        &steward_tests::root().join("tests/control-plane/tidb-operator-crds.yaml"),
    )
    .await?;
    Ok((control_plane, kubeconfig))
}

async fn start(version: KubeVersion) -> Result<(Running, Client)> {
    let (mut control_plane, kubeconfig) = tidb_operator_cluster(version).await?;
    let client = control_plane.client.clone();
    // pd-quorum without a topologyKey: the TidbCluster's annotation decides.
    let file = control_plane.dir.join("steward.yaml");
    write_config(&file, &kubeconfig, &[PD_QUORUM])?;
    let (app, addr) = serve(&file).await?;
    control_plane.start_scheduler(addr).await?;
    let doubles = Doubles::start(&client, &[]);
    Ok((
        Running {
            app,
            _doubles: doubles,
            control_plane,
        },
        client,
    ))
}

/// A TidbCluster annotated `pingcap.com/ha-topology-key:
/// topology.kubernetes.io/zone`, Steward's pd-quorum without a
/// `topologyKey`: its PD StatefulSet goes one member per zone, and a fourth
/// member (four nodes, three zones) waits with the zone rule in its event.
#[test]
fn a_tidb_clusters_zone_annotation_places_pd_per_zone() {
    scenario(
        "a_tidb_clusters_zone_annotation_places_pd_per_zone",
        |version| async move {
            let (mut running, client) = start(version).await?;
            create(&client, tidb_cluster(4, json!({}))).await?;
            steward_sees_tidb_cluster(&running.app).await?;
            create(&client, pd_statefulset("basic", 4)).await?;
            let placed = pd_nodes(&client, "basic", 3).await?;
            let zones: std::collections::BTreeSet<&str> =
                placed.values().map(|n| zone_of(n)).collect();
            ensure!(zones.len() == 3, "PD members share a zone: {placed:?}");
            let refusal = scheduling_refusal(&client, NAMESPACE, "basic-pd-3", "pd-quorum").await?;
            ensure!(
                refusal.contains(&format!("{ZONE}=zone-a already has 1 pd pod(s) of basic"))
                    && refusal.contains("at most 1 of 4"),
                "the refusal names the zone rule: {refusal}"
            );
            running.control_plane.check().await
        },
    );
}

/// Pods of an Advanced StatefulSet (`apps.pingcap.com/v1`) with delete slot
/// 1: the test creates them as its controller would (ordinals 0, 2, 3) and
/// leaves the old pd-1 running in zone-b. pd-quorum resolves their owner,
/// does not count pd-1, and places the three desired members one per zone,
/// zone-b included.
#[test]
fn an_advanced_statefulsets_delete_slot_is_left_out_of_the_count() {
    scenario(
        "an_advanced_statefulsets_delete_slot_is_left_out_of_the_count",
        |version| async move {
            let (mut running, client) = start(version).await?;
            let slots = json!({"pd.tidb.pingcap.com/delete-slots": "[1]"});
            create(&client, tidb_cluster(3, slots)).await?;
            steward_sees_tidb_cluster(&running.app).await?;
            let uid = create_advanced_statefulset(&client, advanced_pd(json!({}))).await?;
            let query = ClusterQuery::new(running.app.hooks.cluster.clone());
            eventually(
                Duration::from_secs(30),
                "the Advanced StatefulSet in Steward's cache",
                || async {
                    let w = query.get_workload("AdvancedStatefulSet", NAMESPACE, "basic-pd");
                    Ok(w.filter(|w| w.desired_ordinals == [0, 2, 3]).map(|_| ()))
                },
            )
            .await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            pods.create(&PostParams::default(), &pd_pod(1, &uid, Some("b1")))
                .await
                .context("creating the leftover basic-pd-1 on b1")?;
            for ordinal in [0, 2, 3] {
                pods.create(&PostParams::default(), &pd_pod(ordinal, &uid, None))
                    .await
                    .with_context(|| format!("creating basic-pd-{ordinal}"))?;
            }
            let placed = pd_nodes(&client, "basic", 4).await?;
            let desired: BTreeMap<&String, &str> = placed
                .iter()
                .filter(|(pod, _)| pod.as_str() != "basic-pd-1")
                .map(|(pod, node)| (pod, zone_of(node)))
                .collect();
            let zones: std::collections::BTreeSet<&str> = desired.values().copied().collect();
            ensure!(
                zones.len() == 3 && zones.contains("zone-b"),
                "the desired members go one per zone, zone-b included: {placed:?}"
            );
            running.control_plane.check().await
        },
    );
}

/// The Advanced StatefulSets of the test's namespace.
fn advanced_statefulsets(client: &Client) -> Api<DynamicObject> {
    let resource = statefulset_resource(ADVANCED_STATEFULSET);
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
}

/// The Advanced StatefulSet `basic-pd` (3 replicas, delete slot 1: members
/// 0, 2 and 3) running [`PD_IMAGE`], with `labels` besides PD's.
fn advanced_pd(labels: Value) -> Value {
    let mut all = pd_labels();
    all.as_object_mut()
        .expect("an object")
        .extend(labels.as_object().cloned().unwrap_or_default());
    json!({
        "apiVersion": "apps.pingcap.com/v1", "kind": "StatefulSet",
        "metadata": {"name": "basic-pd", "namespace": NAMESPACE, "labels": all,
                     "annotations": {"delete-slots": "[1]"}},
        "spec": {
            "replicas": 3, "serviceName": "basic-pd-peer",
            "selector": {"matchLabels": pd_labels()},
            "template": {
                "metadata": {"labels": pd_labels()},
                "spec": {"containers": [{"name": "pd", "image": PD_IMAGE}]},
            },
        },
    })
}

/// Creates Advanced StatefulSet `object` and returns its uid.
async fn create_advanced_statefulset(client: &Client, object: Value) -> Result<String> {
    let object: DynamicObject = serde_json::from_value(object)?;
    let created = advanced_statefulsets(client)
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating the Advanced StatefulSet {}", object.name_any()))?;
    created
        .metadata
        .uid
        .context("the created Advanced StatefulSet has a uid")
}

fn pd_labels() -> Value {
    json!({
        "app.kubernetes.io/instance": "basic",
        "app.kubernetes.io/component": "pd",
        "app.kubernetes.io/managed-by": "tidb-operator",
    })
}

/// PD member `ordinal` as the Advanced StatefulSet controller creates it;
/// on `node` already when given one.
fn pd_pod(ordinal: u32, owner_uid: &str, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "schedulerName": SCHEDULER_NAME,
        "containers": [{"name": "pd", "image": PD_IMAGE}],
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("basic-pd-{ordinal}"), "namespace": NAMESPACE, "labels": pd_labels(),
            "ownerReferences": [{
                "apiVersion": "apps.pingcap.com/v1", "kind": "StatefulSet", "name": "basic-pd",
                "uid": owner_uid, "controller": true,
            }],
        },
        "spec": spec,
    }))
    .expect("a valid pod")
}

/// PD's image, and the one an upgrade rolls out.
const PD_IMAGE: &str = "pingcap/pd:v6.5.0";
const NEW_PD_IMAGE: &str = "pingcap/pd:v6.5.1";

/// `basic-pd`'s partition and protection.
fn held(set: &DynamicObject) -> Held {
    let partition = set.data["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok());
    Held::of(partition, set.annotations())
}

/// Whether PD's upgrade is over: its desired members 0, 2 and 3 ready at
/// the update revision with the new image, the partition held at 4 again
/// and the gate's state gone.
async fn pd_upgraded(client: &Client) -> Result<Option<()>> {
    let set = advanced_statefulsets(client).get("basic-pd").await?;
    let status = &set.data["status"];
    let update = status["updateRevision"].as_str().unwrap_or_default();
    if status["currentRevision"] != update
        || status["readyReplicas"] != 3
        || held(&set).partition != Some(4)
        || set.annotations().contains_key("steward.io/upgrade-gate")
    {
        return Ok(None);
    }
    let pods = pods_at(client, NAMESPACE, "pd", update, NEW_PD_IMAGE).await?;
    let upgraded = ["basic-pd-0", "basic-pd-2", "basic-pd-3"].map(|p| (p.to_string(), true));
    Ok((pods == upgraded).then_some(()))
}

/// basic's PD as an Advanced StatefulSet with delete slot 1 (members 0, 2
/// and 3), opted in to upgrade-gate; its controller played by the test, PD
/// by the PD double, tidb-guard behind `deploy/`'s webhooks. The gate holds
/// it at partition 4, past its highest desired ordinal (3 would restart
/// basic-pd-3), where a user can neither lower the partition nor `scale` it
/// past basic-pd-3, still a PD member. A new image: the gate steps the
/// partition 4→3→2→0 (slot 1 skipped), moves PD leadership from basic-pd-0
/// to basic-pd-3 (the highest upgraded member) before basic-pd-0 restarts,
/// and holds it at 4 again, the protection never below the partition.
#[test]
fn upgrade_gate_rolls_an_advanced_statefulset_over_its_desired_ordinals() {
    scenario(
        "upgrade_gate_rolls_an_advanced_statefulset_over_its_desired_ordinals",
        |version| async move {
            let (mut control_plane, kubeconfig) = tidb_operator_cluster(version).await?;
            let client = control_plane.client.clone();
            let pd = PdDouble::start(NAMESPACE, "basic").await;
            {
                let mut state = pd.state();
                state.members.retain(|m| m.name != "basic-pd-1");
                state.members.push(DoubleMember {
                    id: 1003,
                    name: "basic-pd-3".into(),
                    healthy: true,
                });
            }
            let (_tls, ca, admission) = webhook_tls();
            let mut policies = admission_policies(&pd.url());
            policies.push(reconcile_policy(&GATE, &pd.url()));
            let policies: Vec<&str> = policies.iter().map(String::as_str).collect();
            let sections = format!(
                "reconcile: {{leaseNamespace: {DEPLOY_NAMESPACE}, backoffBaseMs: 500, \
                 backoffMaxMs: 5000}}\n{admission}"
            );
            let steward = Steward::start(Path::new(&kubeconfig), &policies, &sections).await?;
            let webhook = steward
                .webhook
                .context("Steward serves no admission webhook")?;
            register_webhooks(&client, webhook, &ca).await?;
            let mut doubles = Doubles::start(&client, &[]);
            doubles.play_advanced_statefulsets(&client, NAMESPACE);
            create_advanced_statefulset(
                &client,
                advanced_pd(json!({OPT_IN_LABEL: "upgrade-gate"})),
            )
            .await?;
            let sets = advanced_statefulsets(&client);
            let at_four = Held::at(4);
            eventually(
                Duration::from_secs(120),
                "upgrade-gate to hold basic-pd at partition 4, its three members ready",
                || async {
                    let set = sets.get("basic-pd").await?;
                    let ready = set.data["status"]["readyReplicas"] == 3;
                    Ok((held(&set) == at_four && ready).then_some(()))
                },
            )
            .await?;
            let (seen, _watches) = watch_held(sets.clone(), "basic-pd", held);

            let params = PatchParams::default();
            let lowered = sets
                .patch(
                    "basic-pd",
                    &params,
                    &Patch::Merge(
                        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
                    ),
                )
                .await;
            ensure!(
                matches!(&lowered, Err(kube::Error::Api(e))
                    if e.message.contains("rollingUpdate.partition may not go from 4 to 0")),
                "a user's partition 0 is refused: {lowered:?}"
            );
            let scaled = sets
                .patch_scale(
                    "basic-pd",
                    &params,
                    &Patch::Merge(json!({"spec": {"replicas": 2}})),
                )
                .await;
            ensure!(
                matches!(&scaled, Err(kube::Error::Api(e))
                    if e.message.contains("PD still counts on: PD member basic-pd-3 (1003)")),
                "a user's scale to 2 is refused: basic-pd-3 is still a PD member: {scaled:?}"
            );

            sets.patch(
                "basic-pd",
                &params,
                &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "pd", "image": NEW_PD_IMAGE},
                ]}}}})),
            )
            .await
            .context("a user changes the PD image")?;
            eventually(
                Duration::from_secs(300),
                "PD's members 0, 2 and 3 to run the new image",
                || pd_upgraded(&client),
            )
            .await
            .with_context(|| format!("the watch saw {:?}", seen.lock()))?;
            check_gate_steps(&seen.lock(), &[4, 3, 2, 0, 4])?;
            {
                let pd = pd.state();
                ensure!(
                    pd.leader == "basic-pd-3"
                        && pd.count("POST /pd/api/v1/leader/transfer/basic-pd-3") == 1,
                    "PD leadership moved once, to basic-pd-3: leader {}, calls {:?}",
                    pd.leader,
                    pd.calls
                );
            }
            let events = events_about(&client, NAMESPACE, "basic-pd").await?;
            ensure!(
                events
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("UpgradeComplete")),
                "an UpgradeComplete Event on basic-pd"
            );
            control_plane.check().await
        },
    );
}
