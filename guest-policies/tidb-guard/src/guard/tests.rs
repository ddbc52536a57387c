use steward_sdk::admission::Verdict;
use steward_sdk::build::{
    create_pod, delete_pod, evict_pod, pod, scale_statefulset, statefulset, update_statefulset,
};
use steward_sdk::cluster::FakeCluster;
use steward_sdk::pd::{FakePd, evict_leader_scheduler, member, store};
use steward_sdk::{Action, Pod};

use super::*;

const NS: &str = "tidb-cluster";

fn tikv(i: u32) -> Pod {
    pod(&format!("basic-tikv-{i}"))
        .in_namespace(NS)
        .component("basic", "tikv")
}

fn pd_pod(i: u32) -> Pod {
    pod(&format!("basic-pd-{i}"))
        .in_namespace(NS)
        .component("basic", "pd")
}

fn address(i: u32) -> String {
    format!("basic-tikv-{i}.basic-tikv-peer.{NS}.svc:20160")
}

fn stores(leaders: u64, state: &str) -> FakePd {
    FakePd::default()
        .with_store(store(1, &address(0), 10))
        .with_store(store(4, &address(1), leaders).state(state))
}

fn pd_members() -> FakePd {
    FakePd::default()
        .with_member(member(11, "basic-pd-0"))
        .with_member(member(12, "basic-pd-1"))
        .with_member(member(13, "basic-pd-2"))
        .with_leader("basic-pd-1")
}

/// `basic`'s PD StatefulSet with 3 replicas.
fn pd_statefulset() -> Workload {
    statefulset("basic-pd", 3)
        .in_namespace(NS)
        .label("app.kubernetes.io/instance", "basic")
        .label("app.kubernetes.io/component", "pd")
}

fn run(pd: &FakePd, request: &AdmissionRequest) -> Verdict {
    review(&FakeCluster::default(), pd, &Settings::default(), request).unwrap()
}

#[test]
fn tikv_removal_with_leaders_begins_eviction_and_is_denied() {
    let pd = stores(7, "Up");
    let v = run(&pd, &delete_pod(tikv(1)).at(5_000));
    assert!(!v.allowed);
    let message = v.message.clone().unwrap();
    assert!(
        message.contains("store 4 still holds 7 Raft leader(s); Steward began evicting"),
        "{message}"
    );
    assert_eq!(
        v.actions[0],
        Action::PdEvictLeaderBegin((pd::cluster(NS, "basic"), 4))
    );
    assert_eq!(
        v.actions[1],
        Action::Annotate((
            Target::Pod("basic-tikv-1".into()),
            vec![Annotation {
                key: EVICT_LEADER_BEGIN_ANNOTATION.into(),
                value: Some("5000".into())
            }]
        ))
    );
}

#[test]
fn an_eviction_names_the_pod_and_the_guard_looks_it_up() {
    let cluster = FakeCluster::default().with_pod(tikv(1));
    let request = evict_pod(&tikv(1)).at(5_000);
    let v = review(&cluster, &stores(7, "Up"), &Settings::default(), &request).unwrap();
    assert!(!v.allowed);
    assert_eq!(v.actions.len(), 3, "{:?}", v.actions);
    let v = run(&stores(7, "Up"), &request);
    assert!(v.allowed, "a pod the cache does not know passes");
}

#[test]
fn refusals_that_clear_answer_an_eviction_429_and_a_delete_403() {
    let cluster = FakeCluster::default().with_pod(tikv(1)).with_pod(pd_pod(1));
    let code = |pd: &FakePd, request: &AdmissionRequest| {
        let v = review(&cluster, pd, &Settings::default(), request).unwrap();
        assert!(!v.allowed, "{request:?}");
        v.code
    };
    let evicting = tikv(1).annotation(EVICT_LEADER_BEGIN_ANNOTATION, "1000");
    let draining = stores(3, "Up").with_scheduler(&evict_leader_scheduler(4));
    for (pd, pod) in [
        (stores(7, "Up"), tikv(1)),
        (draining, evicting),
        (stores(7, "Offline"), tikv(1)),
        (pd_members(), pd_pod(1)),
    ] {
        let cluster = FakeCluster::default().with_pod(pod.clone());
        let evict = review(
            &cluster,
            &pd,
            &Settings::default(),
            &evict_pod(&pod).at(2_000),
        );
        assert_eq!(evict.unwrap().code, Some(429), "{pod:?}");
        assert_eq!(code(&pd, &delete_pod(pod)), None, "a DELETE keeps 403");
    }
    // What will not clear by itself stays 403 for a drain too.
    assert_eq!(code(&stores(7, "Disconnected"), &evict_pod(&tikv(1))), None);
    let alone = FakePd::default()
        .with_member(member(12, "basic-pd-1"))
        .with_member(member(11, "basic-pd-0").unhealthy())
        .with_leader("basic-pd-1");
    assert_eq!(code(&alone, &evict_pod(&pd_pod(1))), None);
}

#[test]
fn a_dry_run_says_it_would_begin() {
    let v = run(&stores(7, "Up"), &delete_pod(tikv(1)).dry_run());
    assert!(v.message.unwrap().contains("Steward would begin evicting"));
}

#[test]
fn tikv_removal_waits_for_zero_leaders_or_the_timeout() {
    let evicting = tikv(1).annotation(EVICT_LEADER_BEGIN_ANNOTATION, "1000");
    let pd = stores(3, "Up").with_scheduler(&evict_leader_scheduler(4));
    let v = run(&pd, &delete_pod(evicting.clone()).at(61_000));
    assert!(!v.allowed);
    assert_eq!(
        v.message.as_deref(),
        Some(
            "TiKV pod tidb-cluster/basic-tikv-1: evicting Raft leaders from store 4: 3 left after \
             60s (timeout 90000s); retry later"
        )
    );
    assert!(v.actions.is_empty(), "the scheduler is still running");

    let lost = stores(3, "Up");
    let v = run(&lost, &delete_pod(evicting.clone()).at(61_000));
    assert_eq!(
        v.actions,
        [Action::PdEvictLeaderBegin((pd::cluster(NS, "basic"), 4))]
    );

    let v = run(&stores(0, "Up"), &delete_pod(evicting.clone()).at(61_000));
    assert!(v.allowed && v.actions.is_empty());

    let s = settings::parse::<Settings>(r#"{"evictLeaderTimeoutSeconds": 60}"#).unwrap();
    let v = review(
        &FakeCluster::default(),
        &pd,
        &s,
        &delete_pod(evicting).at(61_000),
    )
    .unwrap();
    assert!(v.allowed);
    assert!(
        v.warnings[0].contains("past the 60s timeout"),
        "{:?}",
        v.warnings
    );
}

#[test]
fn store_states_decide_without_leaders() {
    for (state, allowed) in [
        ("Tombstone", true),
        ("Down", true),
        ("Offline", false),
        ("Disconnected", false),
    ] {
        let v = run(&stores(5, state), &delete_pod(tikv(1)));
        assert_eq!(v.allowed, allowed, "{state}: {:?}", v.message);
        assert!(v.actions.is_empty());
    }
    let v = run(&stores(5, "Offline"), &delete_pod(tikv(1)));
    assert!(v.message.unwrap().contains("store 4 is Offline"));
    let v = run(&stores(5, "Up"), &delete_pod(tikv(2)));
    assert!(v.allowed, "a pod without a store passes");
}

#[test]
fn pd_unreachable_is_an_error_for_the_failure_mode() {
    let e = review(
        &FakeCluster::default(),
        &FakePd::default().unreachable(),
        &Settings::default(),
        &delete_pod(tikv(1)),
    )
    .unwrap_err();
    assert!(e.contains("unreachable"), "{e}");
}

#[test]
fn removing_the_pd_leader_moves_leadership_first() {
    let v = run(&pd_members(), &delete_pod(pd_pod(1)));
    assert!(!v.allowed);
    assert_eq!(
        v.actions[0],
        Action::PdTransferLeader((pd::cluster(NS, "basic"), "basic-pd-2".into()))
    );
    assert!(
        v.message
            .unwrap()
            .contains("moving leadership to basic-pd-2")
    );

    let highest_leads = pd_members().with_leader("basic-pd-2");
    let v = run(&highest_leads, &delete_pod(pd_pod(2)));
    assert_eq!(
        v.actions[0],
        Action::PdTransferLeader((pd::cluster(NS, "basic"), "basic-pd-0".into()))
    );

    let mut sick = pd_members();
    sick.members[2] = member(13, "basic-pd-2").unhealthy();
    let v = run(&sick, &delete_pod(pd_pod(1)));
    assert_eq!(
        v.actions[0],
        Action::PdTransferLeader((pd::cluster(NS, "basic"), "basic-pd-0".into()))
    );

    let alone = FakePd::default()
        .with_member(member(12, "basic-pd-1"))
        .with_member(member(11, "basic-pd-0").unhealthy())
        .with_leader("basic-pd-1");
    let v = run(&alone, &delete_pod(pd_pod(1)));
    assert!(!v.allowed && v.actions.is_empty());

    let v = run(&pd_members(), &delete_pod(pd_pod(0)));
    assert!(v.allowed, "a follower may go");
}

/// The user Steward acts as in `deploy/`.
const STEWARD: &str = "system:serviceaccount:steward-system:steward";

#[test]
fn partitions_below_the_protected_value_are_refused() {
    let old = statefulset("basic-tikv", 3)
        .in_namespace(NS)
        .partition(2)
        .annotation(PROTECTED_PARTITION_ANNOTATION, "2");
    let lowered = old.clone().partition(1);
    let v = run(
        &FakePd::default(),
        &update_statefulset(old.clone(), lowered.clone()),
    );
    assert!(!v.allowed);
    assert!(v.message.unwrap().contains("may not go from 2 to 1"));
    assert!(
        run(
            &FakePd::default(),
            &update_statefulset(old.clone(), lowered).by(STEWARD)
        )
        .allowed,
        "the gate's own step"
    );

    // Lowering the protection with the partition proves nothing: anyone
    // who may update the StatefulSet may write its annotations.
    let mut stepped = old.clone().partition(1);
    stepped.annotations = vec![(PROTECTED_PARTITION_ANNOTATION.into(), "1".into())];
    let v = run(
        &FakePd::default(),
        &update_statefulset(old.clone(), stepped.clone()),
    );
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(
        message.contains("steward.io/protected-partition may not be lowered to 1"),
        "{message}"
    );
    assert!(
        run(
            &FakePd::default(),
            &update_statefulset(old.clone(), stepped).by(STEWARD)
        )
        .allowed
    );
    // Nor may it be removed first, to lower the partition afterwards.
    let mut removed = old.clone();
    removed.annotations.clear();
    let v = run(
        &FakePd::default(),
        &update_statefulset(old.clone(), removed),
    );
    assert!(v.message.unwrap().contains("may not be removed"));

    let raised = old.clone().partition(3);
    assert!(run(&FakePd::default(), &update_statefulset(old.clone(), raised)).allowed);

    let unprotected = statefulset("basic-tikv", 3).in_namespace(NS).partition(2);
    let v = run(
        &FakePd::default(),
        &update_statefulset(unprotected.clone(), unprotected.partition(0)),
    );
    assert!(v.allowed);

    let mut corrupt = old.clone();
    corrupt.annotations = vec![(PROTECTED_PARTITION_ANNOTATION.into(), "two".into())];
    let e = review(
        &FakeCluster::default(),
        &FakePd::default(),
        &Settings::default(),
        &update_statefulset(corrupt.clone(), corrupt.partition(0)),
    )
    .unwrap_err();
    assert!(e.contains("not a partition number"), "{e}");
}

#[test]
fn steward_users_are_a_setting() {
    let s = settings::parse::<Settings>(r#"{"stewardUsers": ["gate"]}"#).unwrap();
    let old = statefulset("basic-tikv", 3)
        .in_namespace(NS)
        .partition(2)
        .annotation(PROTECTED_PARTITION_ANNOTATION, "2");
    let request = update_statefulset(old.clone(), old.partition(0));
    let verdict = |r: &AdmissionRequest| {
        review(&FakeCluster::default(), &FakePd::default(), &s, r)
            .unwrap()
            .allowed
    };
    assert!(verdict(&request.clone().by("gate")));
    assert!(!verdict(&request.by(STEWARD)));
    let e = settings::parse::<Settings>(r#"{"stewardUsers": [" "]}"#).unwrap_err();
    assert!(e.contains("stewardUsers may not name an empty user"), "{e}");
}

#[test]
fn pd_scale_down_needs_every_member_healthy_and_the_removed_ones_out_of_pd() {
    let old = pd_statefulset();
    let down = old.clone().replicas(2);
    let v = run(
        &pd_members(),
        &update_statefulset(old.clone(), down.clone()),
    );
    assert!(!v.allowed, "basic-pd-2 is still a member");
    let message = v.message.unwrap();
    assert!(
        message.contains(
            "scaling from 3 to 2 replicas would delete pods PD still counts on: PD member \
             basic-pd-2 (13); Steward scales in one member at a time"
        ) && message.ends_with(
            "kubectl annotate statefulset basic-pd -n tidb-cluster steward.io/scale-in=2"
        ),
        "{message}"
    );
    let mut left = pd_members();
    left.members.pop();
    assert!(run(&left, &update_statefulset(old.clone(), down.clone())).allowed);
    assert!(
        run(
            &pd_members(),
            &update_statefulset(old.clone(), down.clone()).by(STEWARD)
        )
        .allowed,
        "Steward's own scale-in step"
    );

    let mut sick = left.clone();
    sick.members[0] = member(11, "basic-pd-0").unhealthy();
    let v = run(&sick, &update_statefulset(old.clone(), down.clone()));
    assert!(!v.allowed);
    assert!(
        v.message
            .unwrap()
            .contains("member(s) basic-pd-0 are unhealthy")
    );

    let up = old.clone().replicas(4);
    assert!(run(&sick, &update_statefulset(old.clone(), up)).allowed);

    let e = review(
        &FakeCluster::default(),
        &FakePd::default().unreachable(),
        &Settings::default(),
        &update_statefulset(old, down),
    )
    .unwrap_err();
    assert!(e.contains("unreachable"), "{e}");
}

#[test]
fn tikv_scale_down_needs_the_removed_stores_tombstone() {
    let old = statefulset("basic-tikv", 3)
        .in_namespace(NS)
        .component("basic", "tikv");
    let down = old.clone().replicas(1);
    let pd = stores(0, "Offline");
    let v = run(&pd, &update_statefulset(old.clone(), down.clone()));
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(
        message.contains("PD still counts on: store 4 of basic-tikv-1 (Offline)"),
        "{message}"
    );
    let tombstones = FakePd::default().with_store(store(1, &address(0), 10));
    assert!(run(&tombstones, &update_statefulset(old, down)).allowed);
}

#[test]
fn kubectl_scale_of_pd_needs_every_member_healthy_too() {
    let cluster = FakeCluster::default().with_workload(pd_statefulset());
    let mut left = pd_members();
    left.members.pop();
    let mut sick = left.clone();
    sick.members[0] = member(11, "basic-pd-0").unhealthy();
    let scale = |pd: &FakePd, to: u32| {
        let request = scale_statefulset(NS, "basic-pd", 3, to);
        review(&cluster, pd, &Settings::default(), &request).unwrap()
    };
    assert!(scale(&left, 2).allowed);
    assert!(!scale(&pd_members(), 2).allowed);
    let v = scale(&sick, 2);
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(
        message.contains("scaling PD from 3 to 2 replicas while member(s) basic-pd-0"),
        "{message}"
    );
    assert!(scale(&sick, 4).allowed, "scaling up passes");
    let unknown = scale_statefulset(NS, "other", 3, 2);
    let v = review(&cluster, &sick, &Settings::default(), &unknown).unwrap();
    assert!(v.allowed, "a StatefulSet the cache does not know passes");

    let mut corrupt = scale_statefulset(NS, "basic-pd", 3, 2);
    corrupt.object = Some("{".into());
    let e = review(&cluster, &sick, &Settings::default(), &corrupt).unwrap_err();
    assert!(e.contains("a Scale object is not JSON"), "{e}");
}

/// `basic`'s PD as an Advanced StatefulSet of 3 replicas with delete slot
/// 1: members 0, 2 and 3.
fn advanced_pd_statefulset() -> Workload {
    pd_statefulset().advanced(&[1])
}

fn advanced_pd_members() -> FakePd {
    FakePd::default().with_members_of("basic-pd", &[0, 2, 3], 11)
}

#[test]
fn an_advanced_statefulsets_protected_partition_holds() {
    let old = advanced_pd_statefulset()
        .partition(4)
        .annotation(PROTECTED_PARTITION_ANNOTATION, "4");
    let lowered = update_statefulset(old.clone(), old.partition(2));
    let v = run(&FakePd::default(), &lowered);
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(message.contains("may not go from 4 to 2"), "{message}");
    assert!(run(&FakePd::default(), &lowered.by(STEWARD)).allowed);
}

#[test]
fn kubectl_scale_of_an_advanced_statefulset_removes_its_highest_desired_member() {
    let cluster = FakeCluster::default().with_workload(advanced_pd_statefulset());
    let request = scale_statefulset(NS, "basic-pd", 3, 2).advanced();
    let scale = |cluster: &FakeCluster| {
        review(
            cluster,
            &advanced_pd_members(),
            &Settings::default(),
            &request,
        )
        .unwrap()
    };
    let v = scale(&cluster);
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(
        message.contains("PD still counts on: PD member basic-pd-3 (14); Steward scales in")
            && message.ends_with("steward.io/scale-in=2"),
        "{message}"
    );
    // The apps/v1 StatefulSet of that name is another object.
    let v = scale(&FakeCluster::default().with_workload(pd_statefulset()));
    assert!(v.allowed, "{v:?}");
}

#[test]
fn a_new_delete_slot_may_not_remove_a_member_pd_still_has() {
    let old = advanced_pd_statefulset();
    // Slot 2 deleted too, one replica fewer: basic-pd-2 goes, not basic-pd-3.
    let new = pd_statefulset().replicas(2).advanced(&[1, 2]);
    assert_eq!(new.desired_ordinals, [0, 3]);
    let v = run(
        &advanced_pd_members(),
        &update_statefulset(old.clone(), new.clone()),
    );
    assert!(!v.allowed);
    let message = v.message.unwrap();
    assert!(
        message.contains(
            "scaling from 3 to 2 replicas would delete pods PD still counts on: PD member \
             basic-pd-2 (13); take each out of PD first"
        ),
        "{message}"
    );
    let mut left = advanced_pd_members();
    left.members.retain(|m| m.name != "basic-pd-2");
    assert!(run(&left, &update_statefulset(old, new)).allowed);
}

#[test]
fn a_new_tikv_pod_ends_its_store_eviction() {
    let pd = stores(0, "Up").with_scheduler(&evict_leader_scheduler(4));
    let v = run(&pd, &create_pod(tikv(1)));
    assert!(v.allowed);
    assert_eq!(
        v.actions,
        [Action::PdEvictLeaderEnd((pd::cluster(NS, "basic"), 4))]
    );
    let v = run(&stores(0, "Up"), &create_pod(tikv(1)));
    assert!(v.allowed && v.actions.is_empty());
}

#[test]
fn other_pods_pass_without_asking_pd() {
    let pd = FakePd::default().unreachable();
    for p in [pod("web-0"), pod("basic-tidb-0").component("basic", "tidb")] {
        assert!(run(&pd, &delete_pod(p)).allowed);
    }
    assert!(pd.calls.borrow().is_empty());
}
