//! The worked examples of tidb-scheduler's HA predicate, one test each.

use steward_sdk::Pod;
use steward_sdk::build::{claim, node, pod, statefulset, tidb_cluster, tidb_component};
use steward_sdk::cluster::FakeCluster;
use steward_sdk::tidb::{ADVANCED_STATEFULSET, FAILURES_ANNOTATION};

use super::*;

const ZONE: &str = "topology.kubernetes.io/zone";

fn member(component: &str, ordinal: u32) -> Pod {
    pod(&format!("basic-{component}-{ordinal}")).component("basic", component)
}

/// Names of the candidate nodes the filter lets through.
fn accepted(cluster: &FakeCluster, s: &Settings, pod: &Pod, names: &[&str]) -> Vec<String> {
    let out = filter(
        cluster,
        s,
        pod,
        &cluster.candidates(names, &[&s.topology_key]),
    );
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| !out.is_rejected(*i))
        .map(|(_, n)| n.to_string())
        .collect()
}

fn reasons(cluster: &FakeCluster, s: &Settings, pod: &Pod, names: &[&str]) -> Vec<String> {
    let out = filter(
        cluster,
        s,
        pod,
        &cluster.candidates(names, &[&s.topology_key]),
    );
    out.iter().map(|(_, r)| r.to_string()).collect()
}

fn cluster_with(sts: steward_sdk::Workload, pods: Vec<Pod>) -> FakeCluster {
    let mut c = FakeCluster::default().with_workload(sts);
    for n in ["A", "B", "C", "D"] {
        c = c.with_node(node(n));
    }
    c.pods = pods;
    c
}

#[test]
fn pd_of_three_avoids_nodes_that_already_hold_one() {
    let c = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 1).on("B")],
    );
    let s = Settings::default();
    let p = member("pd", 2).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["C", "D"]);
}

#[test]
fn pd_with_only_full_candidates_is_refused_with_reasons() {
    let c = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 1).on("B")],
    );
    let s = Settings::default();
    let p = member("pd", 2).pending();
    let candidates: &[&str] = &["A", "B"];
    assert!(accepted(&c, &s, &p, candidates).is_empty());
    let why = reasons(&c, &s, &p, candidates);
    assert_eq!(why.len(), 2);
    assert!(
        why[0]
            .contains("kubernetes.io/hostname=A already has 1 pd pod(s) of basic; at most 1 of 3"),
        "{why:?}"
    );
}

#[test]
fn pd_of_five_fills_only_the_least_loaded_domain() {
    let c = cluster_with(
        statefulset("basic-pd", 5),
        vec![
            member("pd", 0).on("A"),
            member("pd", 1).on("A"),
            member("pd", 2).on("B"),
            member("pd", 3).on("C"),
        ],
    );
    let s = Settings::default();
    let p = member("pd", 4).pending();
    let candidates: &[&str] = &["A", "B", "C", "D"];
    assert_eq!(accepted(&c, &s, &p, candidates), ["D"]);
    let why = reasons(&c, &s, &p, candidates);
    assert!(why[0].contains("at most 2 of 5"), "{why:?}");
    assert!(
        why[1].contains("least-loaded domains are filled first"),
        "{why:?}"
    );
}

#[test]
fn pd_limit_follows_replicas() {
    let max = |r| Component::Pd.max_per_domain(r, 0);
    assert_eq!(
        [1, 2, 3, 4, 5, 6, 7].map(max),
        [1, 2, 3, 4, 5, 6, 7].map(|r| Some(match r {
            5 | 6 => 2,
            7 => 3,
            _ => 1,
        }))
    );
    let tikv = |r| Component::Tikv.max_per_domain(r, 3);
    assert_eq!([3, 4, 5, 6, 7, 8].map(tikv), [1, 2, 2, 2, 3, 3].map(Some));
}

#[test]
fn tikv_stays_one_per_domain_until_three_domains_are_used() {
    let c = cluster_with(
        statefulset("basic-tikv", 4),
        vec![member("tikv", 0).on("A"), member("tikv", 1).on("B")],
    );
    let s = Settings::default();
    let p = member("tikv", 2).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["C", "D"]);

    // Three domains in use: ceil(4/3) = 2 per domain, least-loaded first.
    let c = cluster_with(
        statefulset("basic-tikv", 4),
        vec![
            member("tikv", 0).on("A"),
            member("tikv", 1).on("B"),
            member("tikv", 2).on("C"),
        ],
    );
    let p = member("tikv", 3).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C"]), ["A", "B", "C"]);
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["D"]);
}

#[test]
fn tikv_below_three_replicas_has_no_limit() {
    let c = cluster_with(
        statefulset("basic-tikv", 2),
        vec![member("tikv", 0).on("A")],
    );
    let s = Settings::default();
    let p = member("tikv", 1).pending();
    let c = c.with_node(node("E").without_label("kubernetes.io/hostname"));
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "E"]), ["A", "B"]);
}

#[test]
fn zone_topology_counts_per_zone_and_skips_unlabelled_nodes() {
    let mut c = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 1).on("C")],
    );
    c.nodes = vec![
        node("A").label(ZONE, "z1"),
        node("B").label(ZONE, "z1"),
        node("C").label(ZONE, "z2"),
        node("D").label(ZONE, "z3"),
        node("E"),
    ];
    let s = Settings {
        topology_key: ZONE.into(),
    };
    let p = member("pd", 2).pending();
    let candidates: &[&str] = &["A", "B", "C", "D", "E"];
    assert_eq!(accepted(&c, &s, &p, candidates), ["D"]);
    let out = filter(&c, &s, &p, &c.candidates(candidates, &[ZONE]));
    let e = out.iter().find(|(i, _)| *i == 4).unwrap().1;
    assert!(e.contains("no topology.kubernetes.io/zone label"), "{e}");
}

#[test]
fn failure_members_and_undesired_ordinals_are_not_counted() {
    // tikv-1 on B failed; failover raised replicas to 4. Its domain is free again.
    let sts = statefulset("basic-tikv", 4).annotation(
        FAILURES_ANNOTATION,
        r#"[{"pod":"basic-tikv-1","storeId":5,"createdAtMs":1}]"#,
    );
    let c = cluster_with(
        sts,
        vec![
            member("tikv", 0).on("A"),
            member("tikv", 1).on("B"),
            member("tikv", 2).on("C"),
        ],
    );
    let s = Settings::default();
    let p = member("tikv", 3).pending();
    // Domains in use (A, C) < 3, so max 1: B and D are open.
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["B", "D"]);

    // basic-pd-3 is beyond replicas 3 (scaled in): it does not count.
    let c = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 3).on("B")],
    );
    let p = member("pd", 1).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C"]), ["B", "C"]);
}

#[test]
fn a_pod_with_a_bound_claim_returns_to_its_only_node() {
    let c = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 1).on("B")],
    )
    .with_claim(claim("pd-basic-pd-2").bound_to("pv-2"));
    let s = Settings::default();
    let p = member("pd", 2).pending().claim("pd-basic-pd-2");
    assert_eq!(accepted(&c, &s, &p, &["A"]), ["A"]);
    // With more than one candidate the quorum rule applies again.
    assert_eq!(accepted(&c, &s, &p, &["A", "C"]), ["C"]);
}

#[test]
fn members_in_flight_count_in_every_domain_against_the_limit() {
    let s = Settings::default();
    let candidates: &[&str] = &["A", "B", "C"];
    // Three PD replicas: one per domain, so a member in flight anywhere
    // leaves no domain open.
    let three = cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).pending().in_flight()],
    );
    let p1 = member("pd", 1).pending();
    assert!(accepted(&three, &s, &p1, candidates).is_empty());
    let why = reasons(&three, &s, &p1, candidates);
    assert!(
        why[0].contains("and basic-pd-0 may still land there"),
        "{why:?}"
    );
    // The in-flight pod itself is not held back by its own earlier attempt.
    let p0 = member("pd", 0).pending();
    assert_eq!(accepted(&three, &s, &p0, candidates), candidates);

    // Five replicas: two per domain, so a second member goes at once.
    let five = |members: Vec<Pod>| cluster_with(statefulset("basic-pd", 5), members);
    let c = five(vec![member("pd", 0).pending().in_flight()]);
    assert_eq!(accepted(&c, &s, &p1, candidates), candidates);
    // One placed on A and one in flight: A could reach three, B and C not.
    let c = five(vec![
        member("pd", 0).on("A"),
        member("pd", 2).pending().in_flight(),
    ]);
    assert_eq!(accepted(&c, &s, &p1, candidates), ["B", "C"]);
    // Two in flight: either could join the third anywhere.
    let c = five(vec![
        member("pd", 0).pending().in_flight(),
        member("pd", 2).pending().in_flight(),
    ]);
    assert!(accepted(&c, &s, &p1, candidates).is_empty());
}

#[test]
fn other_pods_pass_untouched() {
    let c = FakeCluster::default()
        .with_node(node("A"))
        .with_node(node("B"));
    let s = Settings::default();
    let tidb = pod("basic-tidb-0").component("basic", "tidb");
    assert_eq!(accepted(&c, &s, &tidb, &["A", "B"]), ["A", "B"]);
    let plain = pod("web-0");
    assert_eq!(accepted(&c, &s, &plain, &["A"]), ["A"]);
}

#[test]
fn a_member_without_a_statefulset_is_refused_with_a_reason() {
    let c = FakeCluster::default().with_node(node("A"));
    let s = Settings::default();
    let mut p = member("pd", 0).pending();
    p.owner = None;
    let why = reasons(&c, &s, &p, &["A"]);
    assert!(why[0].contains("has no owning StatefulSet"), "{why:?}");
}

#[test]
fn settings_are_checked() {
    assert_eq!(
        settings::parse::<Settings>("").unwrap().topology_key,
        "kubernetes.io/hostname"
    );
    assert!(settings::parse::<Settings>(r#"{"topologyKey": ""}"#).is_err());
    let e = settings::parse::<Settings>(r#"{"topologyKye": "zone"}"#).unwrap_err();
    assert!(e.contains("unknown field `topologyKye`"), "{e}");
}

/// Nodes A and B in zone z1, C in z2, D in z3, E without a zone.
fn zoned(c: FakeCluster) -> FakeCluster {
    FakeCluster {
        nodes: vec![
            node("A").label(ZONE, "z1"),
            node("B").label(ZONE, "z1"),
            node("C").label(ZONE, "z2"),
            node("D").label(ZONE, "z3"),
            node("E"),
        ],
        ..c
    }
}

#[test]
fn the_tidb_clusters_annotation_names_the_topology_key() {
    let c = zoned(cluster_with(
        statefulset("basic-pd", 3),
        vec![member("pd", 0).on("A"), member("pd", 1).on("C")],
    ))
    .with_tidb_cluster(
        tidb_cluster("basic")
            .ha_topology_key(ZONE)
            .with_pd(tidb_component(3)),
    );
    // The setting (hostname) is only the default: the zones count here.
    let s = Settings::default();
    let p = member("pd", 2).pending();
    let candidates: &[&str] = &["A", "B", "C", "D", "E"];
    assert_eq!(accepted(&c, &s, &p, candidates), ["D"]);
    let why = reasons(&c, &s, &p, candidates);
    assert!(
        why.iter()
            .any(|r| r.contains("topology.kubernetes.io/zone=z1 already has 1 pd pod(s)")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|r| r.contains("node has no topology.kubernetes.io/zone label")),
        "{why:?}"
    );
    // Without the annotation the setting applies: one PD per host.
    let plain = FakeCluster {
        tidb_clusters: vec![tidb_cluster("basic").with_pd(tidb_component(3))],
        ..c
    };
    assert_eq!(accepted(&plain, &s, &p, candidates), ["B", "D", "E"]);
}

#[test]
fn replicas_come_from_the_tidb_cluster_counting_deleted_failure_members() {
    // The StatefulSet still says 4; PD's spec says 4 and pd-1's member was
    // deleted from PD, so tidb-operator wants 5 pods: at most 2 per domain.
    let members = vec![
        member("pd", 0).on("A"),
        member("pd", 1).on("D"),
        member("pd", 2).on("B"),
        member("pd", 3).on("C"),
    ];
    let c = cluster_with(statefulset("basic-pd", 4), members).with_tidb_cluster(
        tidb_cluster("basic").with_pd(tidb_component(4).failure("basic-pd-1", true)),
    );
    let s = Settings::default();
    let p = member("pd", 4).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C"]), ["A", "B", "C"]);
    // pd-1 is a failure member: its node D is free again, the least loaded.
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["D"]);
    // A failure member still in PD adds no replica: at most 1 per domain.
    let c = FakeCluster {
        tidb_clusters: vec![
            tidb_cluster("basic").with_pd(tidb_component(4).failure("basic-pd-1", false)),
        ],
        ..c
    };
    assert!(accepted(&c, &s, &p, &["A", "B", "C"]).is_empty());
}

#[test]
fn tikv_failure_stores_come_from_the_tidb_cluster() {
    // The StatefulSet carries no failure store of Steward's: tidb-operator
    // recorded tikv-1 in status.tikv.failureStores and wants 4 replicas.
    let c = cluster_with(
        statefulset("basic-tikv", 4),
        vec![
            member("tikv", 0).on("A"),
            member("tikv", 1).on("B"),
            member("tikv", 2).on("C"),
        ],
    )
    .with_tidb_cluster(
        tidb_cluster("basic").with_tikv(tidb_component(3).failure("basic-tikv-1", true)),
    );
    let s = Settings::default();
    let p = member("tikv", 3).pending();
    // Domains in use (A, C) < 3, so max 1: B and D are open.
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["B", "D"]);
}

#[test]
fn members_in_the_tidb_clusters_delete_slots_do_not_count() {
    // Delete slot 1 of 3 PD replicas: pd-0, pd-2 and pd-3 are desired, and
    // pd-1 (on B) is on its way out.
    let c = cluster_with(
        statefulset("basic-pd", 3),
        vec![
            member("pd", 0).on("A"),
            member("pd", 1).on("B"),
            member("pd", 2).on("C"),
        ],
    )
    .with_tidb_cluster(tidb_cluster("basic").with_pd(tidb_component(3).delete_slots(&[1])));
    let s = Settings::default();
    let p = member("pd", 3).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["B", "D"]);
}

#[test]
fn an_advanced_statefulset_owner_is_resolved_with_its_delete_slots() {
    let advanced = |p: Pod| Pod {
        owner: Some(steward_sdk::Owner {
            kind: ADVANCED_STATEFULSET.into(),
            name: "basic-pd".into(),
        }),
        ..p
    };
    let c = cluster_with(
        statefulset("basic-pd", 3).advanced(&[2]),
        vec![
            advanced(member("pd", 0)).on("A"),
            advanced(member("pd", 1)).on("B"),
            advanced(member("pd", 2)).on("C"),
        ],
    );
    let s = Settings::default();
    // Slot 2 deleted: 0, 1 and 3 are desired; pd-2 on C does not count.
    let p = advanced(member("pd", 3)).pending();
    assert_eq!(accepted(&c, &s, &p, &["A", "B", "C", "D"]), ["C", "D"]);
    // A pod owned by a StatefulSet the cache lacks waits, naming its kind.
    let lost = member("pd", 3).pending();
    let why = reasons(&c, &s, &lost, &["A"]);
    assert!(
        why[0].contains("StatefulSet default/basic-pd of pod basic-pd-3 is not in the cluster"),
        "{why:?}"
    );
}
