//! local-pv through the real Wasm component and the host's cache: every
//! capacity source read from snapshot objects, bound volumes, bad data.

use std::sync::Arc;

use steward::cluster::Backend;
use steward::cluster::{ClusterCache, load_snapshot};
use steward::extender::CandidateNodes;
use steward::server::App;
use steward::wit::Pod;

const NODES: [&str; 4] = [
    "k8s-10-6-163-51",
    "k8s-10-6-163-52",
    "k8s-10-6-163-53",
    "k8s-10-6-163-54",
];

/// The example snapshot plus `extra` YAML documents (later objects replace
/// earlier ones of the same name), served by local-pv with `settings`.
fn app(settings: &str, extra: &str) -> App {
    let base = std::fs::read_to_string(steward_tests::example_snapshot()).unwrap();
    let path = std::env::temp_dir().join(format!(
        "steward-local-pv-{}-{:x}.yaml",
        std::process::id(),
        extra.len() * 31 + settings.len()
    ));
    std::fs::write(&path, format!("{base}\n---\n{extra}")).unwrap();
    let config = steward_tests::config(&format!(
        "{}  settings: {settings}\n",
        steward_tests::LOCAL_PV
    ));
    let policies =
        steward_tests::load_policies(steward_tests::runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    load_snapshot(&cluster, &path).expect("snapshot loads");
    let _ = std::fs::remove_file(&path);
    App::new(
        &config,
        steward::Hooks::new(policies, cluster, Backend::Snapshot),
    )
}

fn pod(app: &App, name: &str) -> Pod {
    app.hooks
        .cluster
        .all_pods()
        .into_iter()
        .find(|p| p.name == name)
        .expect("pod in snapshot")
}

fn all_nodes() -> CandidateNodes {
    CandidateNodes::Names(NODES.iter().map(|n| n.to_string()).collect())
}

fn node_doc(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
         kubernetes.io/hostname: {name}\n  annotations: {{{annotations}}}\nstatus:\n  \
         conditions:\n  - type: Ready\n    status: \"True\"\n---\n"
    )
}

fn storage_node_doc(name: &str, pool_fields: &str) -> String {
    format!(
        "apiVersion: hwameistor.io/v1alpha1\nkind: LocalStorageNode\nmetadata:\n  name: {name}\n\
         status:\n  state: Ready\n  pools:\n    LocalStorage_PoolHDD:\n      class: HDD\n      \
         {pool_fields}\n---\n"
    )
}

#[test]
fn hwameistor_pools_with_bad_figures_refuse_with_the_field_named() {
    let extra = storage_node_doc(
        NODES[2],
        "totalCapacityBytes: 536870912000\n      usedCapacityBytes: 0\n      \
         freeCapacityBytes: -1073741824",
    ) + &storage_node_doc(
        NODES[3],
        "totalCapacityBytes: 536870912000\n      usedCapacityBytes: half",
    );
    let app = app("{}", &extra);
    let out = app
        .hooks
        .extender
        .filter_pod(&pod(&app, "basic-pd-0"), all_nodes());
    assert_eq!(out.node_names.unwrap(), [NODES[0]]);
    assert_eq!(
        out.failed_nodes[NODES[2]],
        "local-pv: LocalStorageNode k8s-10-6-163-53 status.pools.LocalStorage_PoolHDD.\
         freeCapacityBytes is -1073741824, which is negative"
    );
    assert_eq!(
        out.failed_nodes[NODES[3]],
        "local-pv: LocalStorageNode k8s-10-6-163-54 status.pools.LocalStorage_PoolHDD.\
         usedCapacityBytes is `half`, not a number"
    );
    // Bad figures may be fixed by the agent's next report: resolvable.
    assert!(!out.failed_and_unresolvable_nodes.contains_key(NODES[2]));
    assert!(out.failed_and_unresolvable_nodes.contains_key(NODES[1]));
}

#[test]
fn topolvm_annotations_are_a_capacity_source() {
    let extra = node_doc(NODES[0], "capacity.topolvm.io/00default: bogus")
        + &node_doc(NODES[1], "")
        + &node_doc(NODES[2], "capacity.topolvm.io/00default: \"1073741824\"")
        + &node_doc(NODES[3], "capacity.topolvm.io/00default: \"536870912000\"");
    let app = app("{capacitySource: topolvm}", &extra);
    let pd0 = pod(&app, "basic-pd-0");
    let out = app.hooks.extender.filter_pod(&pd0, all_nodes());
    assert_eq!(out.node_names.unwrap(), [NODES[3]]);
    assert_eq!(
        out.failed_nodes[NODES[0]],
        "local-pv: node k8s-10-6-163-51 annotation capacity.topolvm.io/00default is `bogus`, not \
         a byte count (TopoLVM's topolvm-node writes the free bytes there)"
    );
    assert_eq!(
        out.failed_nodes[NODES[1]],
        "local-pv: node k8s-10-6-163-52 has no annotation capacity.topolvm.io/00default: \
         TopoLVM reports no device class 00default there"
    );
    assert_eq!(
        out.failed_nodes[NODES[2]],
        "local-pv: pool 00default on k8s-10-6-163-53 has 1 GiB free; the pod's new claims need \
         2 GiB"
    );
    // TopoLVM's score: 500 GiB free → log2(500) = 8.
    let scores = app
        .hooks
        .extender
        .prioritize_pod(&pd0, &CandidateNodes::Names(vec![NODES[3].into()]));
    assert_eq!(scores[0].score, 8);
}

fn capacity_doc(name: &str, node: &str, capacity: &str) -> String {
    format!(
        "apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata:\n  name: {name}\n  \
         namespace: hwameistor\nstorageClassName: hwameistor-storage-lvm-hdd\nnodeTopology:\n  \
         matchLabels:\n    kubernetes.io/hostname: {node}\ncapacity: {capacity}\n---\n"
    )
}

#[test]
fn csi_storage_capacity_objects_are_a_capacity_source() {
    let extra = capacity_doc("cap-51", NODES[0], "100Gi")
        + &capacity_doc("cap-53", NODES[2], "lots")
        + &capacity_doc("cap-54", NODES[3], "1Gi");
    let app = app("{capacitySource: csiStorageCapacity}", &extra);
    let out = app
        .hooks
        .extender
        .filter_pod(&pod(&app, "basic-pd-0"), all_nodes());
    assert_eq!(out.node_names.unwrap(), [NODES[0]]);
    assert_eq!(
        out.failed_nodes[NODES[1]],
        "local-pv: no CSIStorageCapacity object of storage class hwameistor-storage-lvm-hdd \
         covers node k8s-10-6-163-52"
    );
    assert!(
        out.failed_nodes[NODES[2]]
            .contains("CSIStorageCapacity cap-53 capacity: `lots` is not a Kubernetes quantity"),
        "{:?}",
        out.failed_nodes
    );
    assert!(out.failed_nodes[NODES[3]].contains("has 1 GiB free"));
}

fn bound_claim_docs(pv: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: pd-basic-pd-0\n  \
         namespace: tidb-cluster\nspec:\n  storageClassName: hwameistor-storage-lvm-hdd\n  \
         volumeName: pvc-pd-0\n  resources:\n    requests:\n      storage: 2Gi\nstatus:\n  \
         phase: Bound\n---\n{pv}"
    )
}

#[test]
fn a_bound_hwameistor_volume_brings_the_pod_back_to_its_replica() {
    let extra = bound_claim_docs(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pvc-pd-0\nspec:\n  csi:\n    \
         driver: lvm.hwameistor.io\n    volumeHandle: pvc-pd-0\n  capacity:\n    storage: 2Gi\n\
         status:\n  phase: Bound\n---\napiVersion: hwameistor.io/v1alpha1\nkind: LocalVolume\n\
         metadata:\n  name: pvc-pd-0\nspec:\n  poolName: LocalStorage_PoolHDD\n  \
         requiredCapacityBytes: 2147483648\n  replicaNumber: 1\n  config:\n    replicas:\n    \
         - hostname: k8s-10-6-163-53\nstatus:\n  state: Ready\n",
    );
    let app = app("{}", &extra);
    let out = app
        .hooks
        .extender
        .filter_pod(&pod(&app, "basic-pd-0"), all_nodes());
    assert_eq!(out.node_names.unwrap(), [NODES[2]]);
    assert_eq!(
        out.failed_nodes[NODES[0]],
        "local-pv: claim tidb-cluster/pd-basic-pd-0's volume pvc-pd-0 (LocalVolume pvc-pd-0) has \
         its replicas on k8s-10-6-163-53; the pod must run on one of them"
    );
}

#[test]
fn a_local_pv_without_node_affinity_is_refused_everywhere() {
    let extra = bound_claim_docs(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pvc-pd-0\nspec:\n  local:\n    \
         path: /mnt/disks/sdb\n  capacity:\n    storage: 2Gi\nstatus:\n  phase: Bound\n",
    );
    let app = app("{}", &extra);
    let out = app
        .hooks
        .extender
        .filter_pod(&pod(&app, "basic-pd-0"), all_nodes());
    assert!(out.node_names.unwrap().is_empty());
    assert!(
        out.failed_nodes[NODES[0]]
            .contains("volume pvc-pd-0 is a local volume without a required node affinity"),
        "{:?}",
        out.failed_nodes
    );
    assert_eq!(out.failed_and_unresolvable_nodes.len(), 4);
}

#[test]
fn a_maintained_storage_node_is_refused_and_the_rest_are_scored() {
    let extra = "apiVersion: hwameistor.io/v1alpha1\nkind: LocalStorageNode\nmetadata:\n  name: \
                 k8s-10-6-163-53\nstatus:\n  state: Maintain\n---\n"
        .to_string()
        + &storage_node_doc(
            NODES[3],
            "totalCapacityBytes: 536870912000\n      usedCapacityBytes: 526133493760",
        );
    let app = app("{scoring: binPack}", &extra);
    let pd0 = pod(&app, "basic-pd-0");
    let out = app.hooks.extender.filter_pod(&pd0, all_nodes());
    assert_eq!(out.node_names.unwrap(), [NODES[0], NODES[3]]);
    assert_eq!(
        out.failed_nodes[NODES[2]],
        "local-pv: LocalStorageNode k8s-10-6-163-53 is Maintain, not Ready"
    );
    // Bin-packing: 54 (10 GiB free, 8 left → 10 − 3) beats 51 (500 GiB).
    let scores = app.hooks.extender.prioritize_pod(
        &pd0,
        &CandidateNodes::Names(vec![NODES[0].into(), NODES[3].into()]),
    );
    assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), [2, 7]);
}
