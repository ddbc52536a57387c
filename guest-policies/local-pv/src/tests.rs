//! The worked examples of HwameiStor's scheduler (domain-rules §2a) and
//! TopoLVM's extender (§3), one test each, plus bad data.

use steward_sdk::build::{claim, disks, local_volume, node, pod, pool, storage_class, volume};
use steward_sdk::cluster::FakeCluster;
use steward_sdk::{CapacitySource, Pod, PoolState};

use super::*;
use crate::settings::{Scoring, Source};

const GIB: u64 = 1 << 30;
const SSD_CLASS: &str = "hwameistor-storage-lvm-ssd";
const SSD_POOL: &str = "LocalStorage_PoolSSD";

fn ssd_class() -> steward_sdk::StorageClass {
    storage_class(SSD_CLASS, "lvm.hwameistor.io")
        .param("poolClass", "SSD")
        .param("replicaNumber", "1")
}

/// n1 as in the worked example: SSD pool of 100 GiB, 40 GiB used.
fn example_cluster() -> FakeCluster {
    FakeCluster::default()
        .with_node(node("n1"))
        .with_node(node("n2"))
        .with_node(node("n3"))
        .with_storage_class(ssd_class())
        .with_pool(pool("n1", SSD_POOL, 100 * GIB, 40 * GIB).free_volumes(990))
        .with_pool(pool("n2", SSD_POOL, 100 * GIB, 0))
        .with_pool(pool("n3", SSD_POOL, 100 * GIB, 88 * GIB))
        .with_claim(claim("data-1").class(SSD_CLASS).requesting(30 * GIB))
        .with_claim(claim("data-2").class(SSD_CLASS).requesting(20 * GIB))
}

fn two_claims() -> Pod {
    pod("app-0").pending().claim("data-1").claim("data-2")
}

/// (accepted nodes, reasons of the refused ones in candidate order).
fn run(c: &FakeCluster, s: &Settings, p: &Pod, names: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = filter(c, s, p, &c.candidates(names, &[]));
    let accepted = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !out.is_rejected(*i))
        .map(|(_, n)| n.to_string())
        .collect();
    let mut refused: Vec<(usize, &str)> = out.iter().collect();
    refused.sort_by_key(|r| r.0);
    (
        accepted,
        refused.iter().map(|(_, r)| r.to_string()).collect(),
    )
}

fn scores(c: &FakeCluster, s: &Settings, p: &Pod, names: &[&str]) -> Vec<u8> {
    prioritize(c, s, p, &c.candidates(names, &[]))
        .iter()
        .map(|n| n.score)
        .collect()
}

#[test]
fn two_new_claims_of_one_pool_are_summed() {
    let c = example_cluster();
    let (accepted, why) = run(&c, &Settings::default(), &two_claims(), &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n1", "n2"]);
    assert_eq!(
        why,
        ["pool LocalStorage_PoolSSD on n3 has 12 GiB free; the pod's new claims need 50 GiB"]
    );
}

#[test]
fn hwameistor_scores_of_the_worked_example() {
    // Candidate queue priority: int((1 - 50/60) * 100).
    assert_eq!(hwameistor_volume_score(60 * GIB, 50 * GIB), 16);
    // Plugin score: 50 and 66, mean 58 → 5 on the extender's 0..10.
    assert_eq!(hwameistor_volume_score(60 * GIB, 30 * GIB), 50);
    assert_eq!(hwameistor_volume_score(60 * GIB, 20 * GIB), 66);
    let s = Settings {
        scoring: Scoring::Hwameistor,
        ..Settings::default()
    };
    assert_eq!(scores(&example_cluster(), &s, &two_claims(), &["n1"]), [5]);
}

#[test]
fn a_claim_bound_to_a_volume_on_n2_pins_the_pod_there() {
    let c = example_cluster()
        .with_claim(claim("old").class(SSD_CLASS).bound_to("pv-old"))
        .with_volume(volume("pv-old").csi("lvm.hwameistor.io", "lv-old"))
        .with_local_volume(local_volume("lv-old").replica_on("n2"));
    let p = pod("app-0").pending().claim("old").claim("data-1");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n2"]);
    assert!(
        why[0].contains("volume pv-old (LocalVolume lv-old) has its replicas on n2"),
        "{why:?}"
    );

    // n2 must also have room for the new claim.
    let mut full = c.clone();
    full.pools
        .retain(|p| !(p.node == "n2" && p.name == SSD_POOL));
    let full = full.with_pool(pool("n2", SSD_POOL, 100 * GIB, 90 * GIB));
    let (accepted, why) = run(&full, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert!(accepted.is_empty());
    assert_eq!(
        why[1],
        "pool LocalStorage_PoolSSD on n2 has 10 GiB free; the pod's new claims need 30 GiB"
    );
}

#[test]
fn a_published_volume_admits_only_its_published_node() {
    let c = example_cluster()
        .with_claim(claim("old").bound_to("pv-old"))
        .with_volume(volume("pv-old").csi("lvm.hwameistor.io", "lv-old"))
        .with_local_volume(
            local_volume("lv-old")
                .replica_on("n1")
                .replica_on("n2")
                .published_on("n2"),
        );
    let p = pod("app-0").pending().claim("old");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n2"]);
    assert!(why[0].contains("not the published node"), "{why:?}");
}

#[test]
fn an_ha_claim_needs_two_nodes_with_room() {
    let ha = ssd_class().param("replicaNumber", "2");
    let mut c = example_cluster();
    c.storage_classes = vec![ha];
    let p = two_claims();
    // n1 and n2 have 50 GiB free: two replicas fit.
    let (accepted, _) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n1", "n2"]);

    // n2 in maintenance: only n1 qualifies, so no node may take the pod.
    c.pools.retain(|p| p.node != "n2");
    let c = c.with_pool(pool("n2", SSD_POOL, 100 * GIB, 0).broken(
        PoolState::NotReady,
        "LocalStorageNode n2 is Maintain, not Ready",
    ));
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert!(accepted.is_empty());
    assert!(
        why[0].contains("need 2 replicas on distinct Ready nodes, but only 1 node(s) have 50 GiB free in pool LocalStorage_PoolSSD (n1)"),
        "{why:?}"
    );
    assert_eq!(why[1], "LocalStorageNode n2 is Maintain, not Ready");
}

#[test]
fn volume_slots_count_like_bytes() {
    let mut c = example_cluster();
    c.pools.retain(|p| p.node != "n2");
    let c = c.with_pool(pool("n2", SSD_POOL, 100 * GIB, 0).free_volumes(1));
    let (accepted, why) = run(&c, &Settings::default(), &two_claims(), &["n2"]);
    assert!(accepted.is_empty());
    assert_eq!(
        why,
        ["pool LocalStorage_PoolSSD on n2 can hold 1 more volume(s); the pod's new claims need 2"]
    );
}

#[test]
fn reservations_of_placed_pods_count_against_the_pool() {
    let mut c = example_cluster();
    c.pools.retain(|p| p.node != "n2");
    let c = c.with_pool(pool("n2", SSD_POOL, 100 * GIB, 0).reserved(60 * GIB, 1));
    let (accepted, why) = run(&c, &Settings::default(), &two_claims(), &["n2"]);
    assert!(accepted.is_empty());
    assert_eq!(
        why,
        [
            "pool LocalStorage_PoolSSD on n2 has 40 GiB free (100 GiB reported, 60 GiB of it \
          reserved for claims of pods placed there whose volumes the source does not count \
          yet); the pod's new claims need 50 GiB"
        ]
    );
    // Waiting can help: the reservation expires or its volume appears.
    let out = filter(
        &c,
        &Settings::default(),
        &two_claims(),
        &c.candidates(&["n2"], &[]),
    );
    let (_, rejected) = out.into_parts();
    assert!(!rejected[0].2);
}

#[test]
fn nodes_without_the_pool_or_with_bad_figures_say_why() {
    let c = example_cluster().with_node(node("n4")).with_node(node("n5")).with_pool(
        pool("n5", SSD_POOL, 0, 0).broken(
            PoolState::BadData,
            "LocalStorageNode n5 status.pools.LocalStorage_PoolSSD.freeCapacityBytes is -5, which is negative",
        ),
    );
    let (accepted, why) = run(&c, &Settings::default(), &two_claims(), &["n4", "n5"]);
    assert!(accepted.is_empty());
    assert_eq!(why[0], "node n4 has no pool LocalStorage_PoolSSD");
    assert!(why[1].contains("freeCapacityBytes is -5, which is negative"));
}

#[test]
fn a_local_pv_without_affinity_is_refused_not_waved_through() {
    let c = example_cluster()
        .with_claim(claim("old").bound_to("pv-local"))
        .with_volume(volume("pv-local").local("/mnt/disks/ssd1"));
    let p = pod("app-0").pending().claim("old");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2"]);
    assert!(accepted.is_empty());
    assert!(
        why[0].contains("volume pv-local is a local volume without a required node affinity"),
        "{why:?}"
    );
}

#[test]
fn a_local_pv_goes_where_its_affinity_says() {
    let c = example_cluster()
        .with_claim(claim("old").bound_to("pv-local"))
        .with_volume(
            volume("pv-local")
                .local("/mnt/disks/ssd1")
                .pinned("kubernetes.io/hostname", "n3"),
        );
    let p = pod("app-0").pending().claim("old");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n3"]);
    assert!(
        why[0].contains("its node affinity requires kubernetes.io/hostname in (n3)"),
        "{why:?}"
    );
}

#[test]
fn claims_of_other_provisioners_and_immediate_classes_are_not_ours() {
    let c = example_cluster()
        .with_storage_class(storage_class("nfs", "nfs.csi.k8s.io"))
        .with_storage_class(ssd_class().immediate())
        .with_claim(claim("shared").class("nfs").requesting(1000 * GIB))
        .with_claim(claim("static").requesting(1000 * GIB));
    let p = pod("app-0").pending().claim("shared").claim("static");
    let (accepted, _) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted.len(), 3);
    assert!(scores(&c, &Settings::default(), &p, &["n1"]).is_empty());
}

#[test]
fn an_unknown_pool_class_is_refused_everywhere() {
    let mut c = example_cluster();
    c.storage_classes = vec![ssd_class().param("poolClass", "Tape")];
    let (accepted, why) = run(&c, &Settings::default(), &two_claims(), &["n1"]);
    assert!(accepted.is_empty());
    assert!(why[0].contains("poolClass `Tape`; HwameiStor pools are HDD, SSD or NVMe"));
}

fn disk_cluster(state_ready: bool) -> FakeCluster {
    let mut n2 = disks("n2", "SSD", &[200 * GIB, 100 * GIB]);
    if !state_ready {
        n2.disks.state = PoolState::NotReady;
    }
    FakeCluster::default()
        .with_node(node("n1"))
        .with_node(node("n2"))
        .with_node(node("n3"))
        .with_storage_class(
            storage_class("hwameistor-storage-disk-ssd", "disk.hwameistor.io")
                .param("diskType", "SSD"),
        )
        .with_disks(disks("n1", "SSD", &[100 * GIB]))
        .with_disks(n2)
        .with_disks(disks("n3", "SSD", &[100 * GIB, 100 * GIB]))
        .with_claim(
            claim("d-1")
                .class("hwameistor-storage-disk-ssd")
                .requesting(150 * GIB),
        )
        .with_claim(
            claim("d-2")
                .class("hwameistor-storage-disk-ssd")
                .requesting(50 * GIB),
        )
}

#[test]
fn disk_claims_go_largest_first_to_the_largest_free_disks() {
    let c = disk_cluster(true);
    let p = pod("db-0").pending().claim("d-1").claim("d-2");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n1", "n2", "n3"]);
    assert_eq!(accepted, ["n2"]);
    assert_eq!(
        why,
        [
            "node n1 has 1 free SSD disk(s); the pod's new disk claims need 2",
            "node n3's free SSD disks are too small: a claim of 150 GiB would get a disk of 100 \
             GiB (claims go largest first to the largest disks)"
        ]
    );
    // Disk volumes are not scored (HwameiStor scores them 0): no preference.
    assert!(scores(&c, &Settings::default(), &p, &["n2"]).is_empty());
}

#[test]
fn a_disk_node_that_is_not_ready_is_refused() {
    let c = disk_cluster(false);
    let p = pod("db-0").pending().claim("d-2");
    let (accepted, why) = run(&c, &Settings::default(), &p, &["n2"]);
    assert!(accepted.is_empty());
    assert_eq!(why, ["LocalDiskNode n2 is not Ready"]);
}

#[test]
fn topolvm_capacity_to_score_examples() {
    assert_eq!(capacity_to_score(500 * GIB, 1.0), 8);
    assert_eq!(capacity_to_score(2048 * GIB, 1.0), 10);
    assert_eq!(capacity_to_score(GIB / 2, 1.0), 1);
    assert_eq!(capacity_to_score(0, 1.0), 0);
    assert_eq!(capacity_to_score(GIB, 1.0), 1);
    assert_eq!(capacity_to_score(500 * GIB, 10.0), 5);
}

fn topolvm_cluster() -> FakeCluster {
    let tl = |node: &str, dc: &str, free: u64| {
        pool(node, dc, 0, 0)
            .source(CapacitySource::Topolvm)
            .free_volumes(u32::MAX)
            .reserved(0, 0)
            .with_free(free)
    };
    FakeCluster::default()
        .with_node(node("both"))
        .with_node(node("small-hdd"))
        .with_node(node("no-hdd"))
        .with_storage_class(
            storage_class("topolvm-ssd", "topolvm.io").param("topolvm.io/device-class", "ssd"),
        )
        .with_storage_class(
            storage_class("topolvm-hdd", "topolvm.io").param("topolvm.io/device-class", "hdd"),
        )
        .with_pool(tl("both", "ssd", 500 * GIB))
        .with_pool(tl("both", "hdd", 2048 * GIB))
        .with_pool(tl("small-hdd", "ssd", 500 * GIB))
        .with_pool(tl("small-hdd", "hdd", 512 * GIB))
        .with_pool(tl("no-hdd", "ssd", 500 * GIB))
        .with_claim(claim("fast").class("topolvm-ssd").requesting(100 * GIB))
        .with_claim(claim("big").class("topolvm-hdd").requesting(1024 * GIB))
}

trait WithFree {
    fn with_free(self, free: u64) -> Self;
}

impl WithFree for steward_sdk::cluster::FakePool {
    fn with_free(mut self, free: u64) -> Self {
        self.capacity.free_bytes = free;
        self
    }
}

fn topolvm_settings() -> Settings {
    Settings {
        lvm_provisioners: vec!["topolvm.io".into()],
        disk_provisioners: Vec::new(),
        capacity_source: Source::Topolvm,
        ..Settings::default()
    }
}

#[test]
fn topolvm_a_node_needs_every_device_class_with_room() {
    let c = topolvm_cluster();
    let p = pod("app-0").pending().claim("fast").claim("big");
    let (accepted, why) = run(
        &c,
        &topolvm_settings(),
        &p,
        &["both", "small-hdd", "no-hdd"],
    );
    assert_eq!(accepted, ["both"]);
    assert_eq!(
        why,
        [
            "pool hdd on small-hdd has 512 GiB free; the pod's new claims need 1 TiB",
            "node no-hdd has no pool hdd"
        ]
    );
}

#[test]
fn topolvm_score_is_the_minimum_over_device_classes() {
    let c = topolvm_cluster();
    let p = pod("app-0").pending().claim("fast").claim("big");
    // ssd 500 GiB → 8, hdd 2 TiB → 10: min 8. With divisor 10 on ssd: 5.
    assert_eq!(scores(&c, &topolvm_settings(), &p, &["both"]), [8]);
    let mut s = topolvm_settings();
    s.divisors.insert("ssd".into(), 10.0);
    assert_eq!(scores(&c, &s, &p, &["both"]), [5]);
}

#[test]
fn bin_pack_prefers_the_fullest_pool_that_still_fits() {
    let c = example_cluster();
    let s = Settings {
        scoring: Scoring::BinPack,
        ..Settings::default()
    };
    // n1: 60 GiB free − 50 → 10 GiB left (score 3) → 7; n2: 50 GiB left
    // (5) → 5; n3 cannot take the claims → 0.
    assert_eq!(
        scores(&c, &s, &two_claims(), &["n1", "n2", "n3"]),
        [7, 5, 0]
    );
    // Spread: n2 (100 GiB free) above n1 (60 GiB).
    assert_eq!(
        scores(&c, &Settings::default(), &two_claims(), &["n1", "n2", "n3"]),
        [5, 6, 3]
    );
}

#[test]
fn settings_are_checked() {
    assert!(steward_sdk::settings::parse::<Settings>("").is_ok());
    let e = steward_sdk::settings::parse::<Settings>(r#"{"divisor": 0}"#).unwrap_err();
    assert!(e.contains("divisor is 0; divisors must be positive"), "{e}");
    let e = steward_sdk::settings::parse::<Settings>(r#"{"capacitySource": "nfs"}"#).unwrap_err();
    assert!(e.contains("unknown variant `nfs`"), "{e}");
    let s = steward_sdk::settings::parse::<Settings>(
        r#"{"capacitySource": "csiStorageCapacity", "lvmProvisioners": ["topolvm.io"], "scoring": "binPack"}"#,
    )
    .unwrap();
    assert_eq!(s.capacity_source, Source::CsiStorageCapacity);
}

#[test]
fn the_configured_capacity_source_is_the_one_needed() {
    use steward_sdk::scheduler::validate_settings;
    let needs = |json: &str| {
        validate_settings::<crate::LocalPv>(json)
            .unwrap()
            .capacity_sources
    };
    assert_eq!(needs(""), [CapacitySource::Hwameistor]);
    assert_eq!(
        needs(r#"{"capacitySource": "topolvm"}"#),
        [CapacitySource::Topolvm]
    );
    assert_eq!(
        needs(r#"{"capacitySource": "csiStorageCapacity"}"#),
        [CapacitySource::CsiStorageCapacity]
    );
}
