//! The failover decision for one reconcile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steward_sdk::pd::PdView;
use steward_sdk::reconcile::{Plan, PollMs, WorkloadState};
use steward_sdk::tidb::{self, FAILURES_ANNOTATION, Failure};
use steward_sdk::{Action, EventType, Member, Store, labels};

use crate::tikv_exit::{self, StoreExit};

/// StatefulSet annotation holding [`FailoverState`] (JSON).
pub const FAILOVER_ANNOTATION: &str = "steward.io/failover";
/// StatefulSet annotation an operator sets to `"true"` to recover TiKV
/// failures (scale back to the spec); the policy removes it when done.
pub const RECOVER_ANNOTATION: &str = "steward.io/recover-failover";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// How long Kubernetes and PD must agree a member is down
    /// (tidb-operator's `--pd-failover-period`/`--tikv-failover-period`, 5 min).
    pub failover_period_seconds: u64,
    /// Most failures (extra replicas) at once; 0 disables failover.
    pub max_failover_count: u32,
    /// Recover TiKV failures as soon as every store is Up again, without
    /// waiting for the recover annotation.
    pub recover_tikv: bool,
    /// Wait between two looks.
    pub poll_ms: PollMs,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failover_period_seconds: 300,
            max_failover_count: 3,
            recover_tikv: false,
            poll_ms: PollMs::default(),
        }
    }
}

impl steward_sdk::Settings for Settings {}

/// What failover remembers besides the failure store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverState {
    /// `spec.replicas` without the failover replicas, while there are
    /// failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_replicas: Option<u32>,
    /// Pods both Kubernetes and PD see down, since when (Unix ms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suspects: BTreeMap<String, i64>,
    /// The failover limit was reported (once per episode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limit_reported: bool,
    /// A TiKV scale-back under way: once begun it runs to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in: Option<ScaleIn>,
}

/// TiKV scale-back progress (tidb-operator's scale-in): the extra replicas
/// leave one at a time, highest ordinal first, each only after PD has
/// moved its store's regions away and made the store a Tombstone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleIn {
    /// The store PD was asked to take offline, awaited until Tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_store: Option<u64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Component {
    Pd,
    Tikv,
}

/// The next steps for one workload.
pub fn reconcile(
    pd: &impl PdView,
    settings: &Settings,
    state: &WorkloadState,
) -> Result<Plan, String> {
    let w = &state.workload;
    let component = match tidb::component(&w.labels) {
        Some("pd") => Component::Pd,
        Some("tikv") => Component::Tikv,
        _ => return Ok(Plan::new()),
    };
    let cluster = steward_sdk::pd::cluster_of(w)?;
    let instance = cluster.name.clone();
    let mut failures = tidb::failures(w)?;
    let before_failures = failures.clone();
    let mut fs: FailoverState = match labels::get(&w.annotations, FAILOVER_ANNOTATION) {
        None => FailoverState::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!(
                "annotation {FAILOVER_ANNOTATION} of StatefulSet {}/{} is not failover state \
                 ({e}); fix or remove it",
                w.namespace, w.name
            )
        })?,
    };
    let before_fs = fs.clone();
    let base = if failures.is_empty() {
        w.replicas
    } else {
        fs.base_replicas.unwrap_or(w.replicas)
    };
    let (members, stores) = match component {
        Component::Pd => (pd.members(&cluster)?, Vec::new()),
        Component::Tikv => (Vec::new(), pd.stores(&cluster)?),
    };
    let view = View {
        state,
        instance: &instance,
        members: &members,
        stores: &stores,
        component,
    };
    let now = state.now_ms;
    let mut plan = Plan::new();
    // The members failover keeps: those of the spec's replicas.
    let kept = tidb::ordinals_at(w, base);

    // Who is down in both Kubernetes' and PD's eyes, and since when.
    let mut suspects = BTreeMap::new();
    for &o in &kept {
        let pod = format!("{}-{o}", w.name);
        if failures.iter().any(|f| f.pod == pod) {
            continue;
        }
        if view.kubernetes_down(o) && view.pd_down(&pod) {
            suspects.insert(pod.clone(), *fs.suspects.get(&pod).unwrap_or(&now));
        }
    }
    fs.suspects = suspects;

    // One new failure per reconcile, once the period is over; none while
    // a scale-back runs (the suspicion times wait for it).
    let scaling_in = fs.scale_in.is_some();
    let period = settings.failover_period_seconds as i64 * 1000;
    let due = fs
        .suspects
        .iter()
        .find(|(_, since)| now - **since >= period)
        .map(|(pod, since)| (pod.clone(), *since));
    if let Some((pod, since)) = due.clone().filter(|_| !scaling_in) {
        if failures.len() as u32 >= settings.max_failover_count {
            if !fs.limit_reported {
                fs.limit_reported = true;
                plan = plan.event(
                    EventType::Warning,
                    "FailoverLimit",
                    format!(
                        "pod {pod} is down, but {} failures already reach maxFailoverCount {}; \
                         no further replica is added",
                        failures.len(),
                        settings.max_failover_count
                    ),
                );
            }
        } else {
            fs.suspects.remove(&pod);
            let (member_id, store_id) = (
                view.member(&pod).map(|m| m.id),
                view.store(&pod).map(|s| s.id),
            );
            failures.push(Failure {
                pod: pod.clone(),
                member_id,
                store_id,
                created_at_ms: now,
                deleted: false,
            });
            plan = plan.event(
                EventType::Warning,
                "Unhealthy",
                format!(
                    "pod {pod} has been down in Kubernetes and PD for {}s; adding a replica",
                    (now - since) / 1000
                ),
            );
        }
    }

    // A failed PD member leaves PD; its pod and claims go, so it comes back empty.
    if component == Component::Pd {
        for f in failures.iter_mut().filter(|f| !f.deleted) {
            if let Some(id) = f.member_id {
                plan = plan.action(Action::PdDeleteMember((cluster.clone(), id)));
            }
            plan = plan.action(Action::DeletePod(f.pod.clone()));
            for c in view.claims_of(&f.pod) {
                plan = plan.action(Action::DeleteClaim(c));
            }
            plan = plan.event(
                EventType::Warning,
                "PDMemberDeleted",
                format!(
                    "failed PD member {} was deleted from PD with its pod and claims",
                    f.pod
                ),
            );
            f.deleted = true;
        }
    }

    // Recovery.
    let recover_asked =
        settings.recover_tikv || labels::get(&w.annotations, RECOVER_ANNOTATION) == Some("true");
    let recover = !failures.is_empty()
        && (scaling_in
            || (due.is_none()
                && failures == before_failures
                && view.all_healthy(&kept)
                && (component == Component::Pd || recover_asked)));
    let mut target = base + failures.len() as u32;
    let mut removed_claims = Vec::new();
    // The failover replicas: desired now, not at the spec's replicas.
    let extra: Vec<u32> = w
        .desired_ordinals
        .iter()
        .copied()
        .filter(|o| !kept.contains(o))
        .collect();
    if let Some(highest) = extra
        .last()
        .filter(|_| recover && component == Component::Tikv)
    {
        // Scale back by one: the highest ordinal's store goes offline in PD
        // first, and its replica and claims only once PD reports Tombstone.
        let pod = format!("{}-{highest}", w.name);
        let scale_in = fs.scale_in.get_or_insert_with(ScaleIn::default);
        match StoreExit::of(&stores, &pod, &instance, &w.namespace) {
            StoreExit::Leaving { store, offline } => {
                if !offline {
                    plan = plan.action(Action::PdStoreDelete((cluster.clone(), store.id)));
                }
                if scale_in.offline_store != Some(store.id) {
                    scale_in.offline_store = Some(store.id);
                    plan = tikv_exit::taking_offline(plan, store, &pod);
                }
                target = w.replicas;
            }
            StoreExit::Gone => {
                scale_in.offline_store = None;
                target = w.replicas - 1;
                removed_claims = view.claims_of(&pod);
                plan = tikv_exit::gone(plan, &pod);
            }
        }
    }
    if recover && (component == Component::Pd || target == base) {
        if component == Component::Pd {
            let leader = pd.leader(&cluster)?;
            let added = |name: &str| {
                labels::ordinal(name).is_some_and(|o| !kept.contains(&o))
                    && name.starts_with(&w.name)
            };
            if let Some(first) = kept.first().filter(|_| added(&leader)) {
                let to = format!("{}-{first}", w.name);
                return Ok(plan
                    .action(Action::PdTransferLeader((cluster, to)))
                    .requeue_after(settings.poll_ms.get()));
            }
            for m in members.iter().filter(|m| added(&m.name)) {
                plan = plan.action(Action::PdDeleteMember((cluster.clone(), m.id)));
            }
        }
        target = base;
        failures.clear();
        fs = FailoverState::default();
        plan = plan.event(
            EventType::Normal,
            "FailoverRecovered",
            format!("every member is healthy again; scaling back to {base} replicas"),
        );
        if component == Component::Tikv && labels::get(&w.annotations, RECOVER_ANNOTATION).is_some()
        {
            plan = plan.remember(&w.name, RECOVER_ANNOTATION, None);
        }
    }
    if failures.is_empty() {
        fs.base_replicas = None;
        fs.limit_reported = false;
    } else {
        fs.base_replicas = Some(base);
    }
    if failures != before_failures {
        let value = (!failures.is_empty())
            .then(|| serde_json::to_string(&failures).expect("failures serialise"));
        plan = plan.remember(&w.name, FAILURES_ANNOTATION, value);
    }
    if fs != before_fs {
        let value = (fs != FailoverState::default())
            .then(|| serde_json::to_string(&fs).expect("failover state serialises"));
        plan = plan.remember(&w.name, FAILOVER_ANNOTATION, value);
    }
    if w.replicas != target {
        plan = plan.set_replicas(target);
    }
    if recover && component == Component::Pd {
        for o in extra {
            removed_claims.extend(view.claims_of(&format!("{}-{o}", w.name)));
        }
    }
    for c in removed_claims {
        plan = plan.action(Action::DeleteClaim(c));
    }
    Ok(plan.requeue_after(settings.poll_ms.get()))
}

struct View<'a> {
    state: &'a WorkloadState,
    instance: &'a str,
    members: &'a [Member],
    stores: &'a [Store],
    component: Component,
}

impl View<'_> {
    fn member(&self, pod: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == pod)
    }

    fn store(&self, pod: &str) -> Option<&Store> {
        tikv_exit::store_of(
            self.stores,
            pod,
            self.instance,
            &self.state.workload.namespace,
        )
    }

    /// The pod is missing, not ready, or on a node that is not Ready.
    fn kubernetes_down(&self, ordinal: u32) -> bool {
        let Some(r) = self.state.replica(ordinal) else {
            return true;
        };
        let node_down = r.pod.node_name.as_ref().is_some_and(|n| {
            self.state
                .nodes
                .iter()
                .find(|node| &node.name == n)
                .is_none_or(|node| !node.ready)
        });
        !r.pod.ready || node_down
    }

    /// PD reports the member unhealthy or the store `Down`.
    fn pd_down(&self, pod: &str) -> bool {
        match self.component {
            Component::Pd => self.member(pod).is_some_and(|m| !m.healthy),
            Component::Tikv => self.store(pod).is_some_and(|s| s.state == "Down"),
        }
    }

    /// Every kept ordinal's pod is ready and healthy in PD.
    fn all_healthy(&self, kept: &[u32]) -> bool {
        kept.iter().all(|&o| {
            let pod = format!("{}-{o}", self.state.workload.name);
            let ready = self
                .state
                .replica(o)
                .is_some_and(|r| r.pod.ready && !r.pod.deleting);
            ready
                && match self.component {
                    Component::Pd => self.member(&pod).is_some_and(|m| m.healthy),
                    Component::Tikv => self.store(&pod).is_some_and(|s| s.state == "Up"),
                }
        })
    }

    fn claims_of(&self, pod: &str) -> Vec<String> {
        claims_of(self.state, pod)
    }
}

/// Claims of the workload's pod `pod` (`<template>-<pod>`) that exist.
pub(crate) fn claims_of(state: &WorkloadState, pod: &str) -> Vec<String> {
    state
        .workload
        .claim_templates
        .iter()
        .map(|t| format!("{t}-{pod}"))
        .filter(|name| state.claims.iter().any(|c| &c.name == name))
        .collect()
}

#[cfg(test)]
mod tests {
    use steward_sdk::build::{node, statefulset, workload_state};
    use steward_sdk::pd::{FakePd, member, store};

    use super::*;

    fn pd_state() -> WorkloadState {
        let mut s = workload_state(statefulset("basic-pd", 3).component("basic", "pd"));
        s.workload.claim_templates = vec!["pd".into()];
        s.claims = (0..3)
            .map(|o| steward_sdk::build::claim(&format!("pd-basic-pd-{o}")))
            .collect();
        s.nodes = (0..3).map(|o| node(&format!("node-{o}"))).collect();
        s
    }

    fn pd() -> FakePd {
        FakePd::default()
            .with_member(member(1000, "basic-pd-0"))
            .with_member(member(1001, "basic-pd-1").unhealthy())
            .with_member(member(1002, "basic-pd-2"))
            .with_leader("basic-pd-0")
    }

    fn settings() -> Settings {
        Settings {
            failover_period_seconds: 60,
            max_failover_count: 1,
            ..Settings::default()
        }
    }

    /// [`settings`] that recover TiKV without being asked.
    fn recovering() -> Settings {
        Settings {
            recover_tikv: true,
            ..settings()
        }
    }

    /// StatefulSet `name` (`component` of cluster `basic`) with `replicas`,
    /// `failures` recorded and 3 replicas before them.
    fn failed_over(
        name: &str,
        component: &str,
        replicas: u32,
        failures: &[Failure],
    ) -> WorkloadState {
        let s = workload_state(statefulset(name, replicas).component("basic", component));
        with_failures(s, failures)
    }

    /// `s` with `failures` recorded and 3 replicas before them.
    fn with_failures(mut s: WorkloadState, failures: &[Failure]) -> WorkloadState {
        s.workload = s
            .workload
            .annotation(
                FAILURES_ANNOTATION,
                &serde_json::to_string(failures).unwrap(),
            )
            .annotation(FAILOVER_ANNOTATION, r#"{"baseReplicas":3}"#);
        s
    }

    /// `component` of cluster `basic` as an Advanced StatefulSet of
    /// `replicas` with delete slot 1, its pods' claims and nodes.
    fn advanced(component: &str, replicas: u32) -> WorkloadState {
        let name = format!("basic-{component}");
        let mut s = workload_state(
            statefulset(&name, replicas)
                .component("basic", component)
                .advanced(&[1]),
        );
        s.workload.claim_templates = vec![component.into()];
        let ordinals = s.workload.desired_ordinals.clone();
        s.claims = ordinals
            .iter()
            .map(|o| steward_sdk::build::claim(&format!("{component}-{name}-{o}")))
            .collect();
        s.nodes = ordinals
            .iter()
            .map(|o| node(&format!("node-{o}")))
            .collect();
        s
    }

    /// The failure of TiKV pod `ordinal`, whose store is `store_id`.
    fn tikv_failure(ordinal: u32, store_id: u64) -> Failure {
        Failure {
            pod: format!("basic-tikv-{ordinal}"),
            member_id: None,
            store_id: Some(store_id),
            created_at_ms: 0,
            deleted: false,
        }
    }

    /// The store `id` (one leader) of TiKV pod `ordinal`.
    fn tikv_store(ordinal: u32, id: u64) -> Store {
        let address = format!("basic-tikv-{ordinal}.basic-tikv-peer.default.svc:20160");
        store(id, &address, 1)
    }

    /// PD with the stores of `basic-tikv-0` to `basic-tikv-2`.
    fn three_stores() -> FakePd {
        FakePd::default()
            .with_store(tikv_store(0, 1))
            .with_store(tikv_store(1, 4))
            .with_store(tikv_store(2, 5))
    }

    #[test]
    fn pd_alone_or_kubernetes_alone_is_no_failure() {
        // PD says unhealthy, the pod is ready.
        let plan = reconcile(&pd(), &settings(), &pd_state().at(10_000_000)).unwrap();
        assert_eq!(plan.changes().count(), 0);
        // The pod is not ready, PD says healthy.
        let healthy = FakePd {
            members: pd()
                .members
                .into_iter()
                .map(|mut m| {
                    m.healthy = true;
                    m
                })
                .collect(),
            ..pd()
        };
        let plan = reconcile(&healthy, &settings(), &pd_state().not_ready(1)).unwrap();
        assert_eq!(plan.changes().count(), 0);
    }

    #[test]
    fn a_pd_failure_after_the_period_adds_one_replica_deletes_the_member_and_is_capped() {
        let s = pd_state().not_ready(1).at(1_000);
        let plan = reconcile(&pd(), &settings(), &s).unwrap();
        assert!(!plan.changes().any(|a| matches!(a, Action::SetReplicas(_))));
        let s = s.after(&plan).at(60_999);
        let plan = reconcile(&pd(), &settings(), &s).unwrap();
        assert!(
            !plan.changes().any(|a| matches!(a, Action::SetReplicas(_))),
            "not before the period"
        );
        let s = s.at(61_000);
        let plan = reconcile(&pd(), &settings(), &s).unwrap();
        let c = steward_sdk::pd::cluster("default", "basic");
        for a in [
            Action::PdDeleteMember((c, 1001)),
            Action::DeletePod("basic-pd-1".into()),
            Action::DeleteClaim("pd-basic-pd-1".into()),
            Action::SetReplicas(4),
        ] {
            assert!(plan.actions.contains(&a), "{a:?} missing from {plan:?}");
        }
        let s = s.after(&plan);
        let failures = tidb::failures(&s.workload).unwrap();
        assert_eq!((failures.len(), failures[0].deleted), (1, true));

        // A second member fails: the cap (1) holds replicas at 4, one Event.
        let mut worse = pd();
        worse.members[2].healthy = false;
        let s = s.not_ready(2).at(100_000);
        let s = s
            .clone()
            .after(&reconcile(&worse, &settings(), &s).unwrap())
            .at(200_000);
        let plan = reconcile(&worse, &settings(), &s).unwrap();
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::SetReplicas(_)))
        );
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a, Action::EmitEvent((_, r, _)) if r == "FailoverLimit"))
        );
    }

    #[test]
    fn pd_recovers_by_itself_once_all_are_healthy() {
        let failure = vec![Failure {
            pod: "basic-pd-1".into(),
            member_id: Some(1001),
            store_id: None,
            created_at_ms: 0,
            deleted: true,
        }];
        let s = failed_over("basic-pd", "pd", 4, &failure).at(500_000);
        let all = FakePd::default()
            .with_member(member(1000, "basic-pd-0"))
            .with_member(member(2001, "basic-pd-1"))
            .with_member(member(1002, "basic-pd-2"))
            .with_member(member(1003, "basic-pd-3"))
            .with_leader("basic-pd-0");
        let plan = reconcile(&all, &settings(), &s).unwrap();
        let c = steward_sdk::pd::cluster("default", "basic");
        assert!(plan.actions.contains(&Action::PdDeleteMember((c, 1003))));
        assert!(plan.actions.contains(&Action::SetReplicas(3)));
        let s = s.after(&plan);
        assert!(tidb::failures(&s.workload).unwrap().is_empty());
    }

    #[test]
    fn tikv_recovers_only_when_asked_taking_the_extra_store_offline_first() {
        let mut s = failed_over("basic-tikv", "tikv", 4, &[tikv_failure(1, 4)]);
        s.workload.claim_templates = vec!["tikv".into()];
        s.claims = (0..4)
            .map(|o| steward_sdk::build::claim(&format!("tikv-basic-tikv-{o}")))
            .collect();
        let base = three_stores();
        let up = base.clone().with_store(tikv_store(3, 6));
        let plan = reconcile(&up, &settings(), &s).unwrap();
        assert_eq!(
            plan.changes().count(),
            0,
            "TiKV keeps its extra store until asked"
        );
        let c = steward_sdk::pd::cluster("default", "basic");
        let offline = Action::PdStoreDelete((c, 6));
        assert!(
            reconcile(&up, &recovering(), &s)
                .unwrap()
                .actions
                .contains(&offline)
        );

        // Asked: the highest ordinal's store goes offline, the replica stays.
        let mut asked = s.clone();
        asked.workload = asked.workload.annotation(RECOVER_ANNOTATION, "true");
        let plan = reconcile(&up, &settings(), &asked).unwrap();
        assert!(plan.actions.contains(&offline), "{plan:?}");
        assert!(
            !plan
                .changes()
                .any(|a| matches!(a, Action::SetReplicas(_) | Action::DeleteClaim(_))),
            "{plan:?}"
        );
        // While PD moves its regions the store is Offline: nothing more, even
        // with the request withdrawn (the scale-back is remembered).
        let mut waiting = asked.after(&plan);
        waiting
            .workload
            .annotations
            .retain(|(k, _)| k != RECOVER_ANNOTATION);
        let draining = base.clone().with_store(tikv_store(3, 6).state("Offline"));
        let plan = reconcile(&draining, &settings(), &waiting).unwrap();
        assert!(
            !plan.changes().any(|a| matches!(
                a,
                Action::SetReplicas(_) | Action::DeleteClaim(_) | Action::PdStoreDelete(_)
            )),
            "{plan:?}"
        );
        // Tombstone (PD lists it no more): the replica and its claim go,
        // and the failures are recovered.
        let plan = reconcile(&base, &settings(), &waiting).unwrap();
        for a in [
            Action::SetReplicas(3),
            Action::DeleteClaim("tikv-basic-tikv-3".into()),
        ] {
            assert!(plan.actions.contains(&a), "{a:?} missing from {plan:?}");
        }
        let after = waiting.after(&plan);
        assert!(tidb::failures(&after.workload).unwrap().is_empty());
        assert_eq!(
            labels::get(&after.workload.annotations, FAILOVER_ANNOTATION),
            None
        );
        assert_eq!(
            reconcile(&base, &settings(), &after)
                .unwrap()
                .changes()
                .count(),
            0,
            "done"
        );
    }

    #[test]
    fn tikv_scales_back_one_store_at_a_time_from_the_highest_ordinal() {
        let s = failed_over(
            "basic-tikv",
            "tikv",
            5,
            &[tikv_failure(1, 4), tikv_failure(2, 5)],
        );
        let auto = recovering();
        let c = steward_sdk::pd::cluster("default", "basic");
        let three = three_stores();
        let four = three.clone().with_store(tikv_store(3, 6));
        let five = four.clone().with_store(tikv_store(4, 7));
        let plan = reconcile(&five, &auto, &s).unwrap();
        assert!(
            plan.actions
                .contains(&Action::PdStoreDelete((c.clone(), 7)))
        );
        assert!(
            !plan
                .actions
                .contains(&Action::PdStoreDelete((c.clone(), 6)))
        );
        let s = s.after(&plan);
        let plan = reconcile(&four, &auto, &s).unwrap();
        assert!(plan.actions.contains(&Action::SetReplicas(4)), "{plan:?}");
        let s = s.after(&plan);
        assert_eq!(
            tidb::failures(&s.workload).unwrap().len(),
            2,
            "not done yet"
        );
        let plan = reconcile(&four, &auto, &s).unwrap();
        assert!(plan.actions.contains(&Action::PdStoreDelete((c, 6))));
        let s = s.after(&plan);
        let plan = reconcile(&three, &auto, &s).unwrap();
        assert!(plan.actions.contains(&Action::SetReplicas(3)), "{plan:?}");
        assert!(tidb::failures(&s.after(&plan).workload).unwrap().is_empty());
    }

    #[test]
    fn an_advanced_statefulset_watches_its_desired_members_and_adds_the_next_ordinal() {
        // Slot 1 is deleted: its old store, Down, is no member of the set.
        let pd = FakePd::default()
            .with_store(tikv_store(0, 1))
            .with_store(tikv_store(1, 4).state("Down"))
            .with_store(tikv_store(2, 5).state("Down"))
            .with_store(tikv_store(3, 6));
        let s = advanced("tikv", 3).not_ready(2).at(1_000);
        let s = s.clone().after(&reconcile(&pd, &settings(), &s).unwrap());
        let s = s.at(61_000);
        let plan = reconcile(&pd, &settings(), &s).unwrap();
        assert!(plan.actions.contains(&Action::SetReplicas(4)), "{plan:?}");
        let s = s.after(&plan);
        let failed: Vec<String> = tidb::failures(&s.workload)
            .unwrap()
            .into_iter()
            .map(|f| f.pod)
            .collect();
        assert_eq!(failed, ["basic-tikv-2"]);
        assert_eq!(s.workload.desired_ordinals, [0, 2, 3, 4]);
    }

    #[test]
    fn an_advanced_statefulset_scales_back_from_its_highest_desired_ordinal() {
        let s = with_failures(advanced("tikv", 4), &[tikv_failure(2, 5)]);
        let c = steward_sdk::pd::cluster("default", "basic");
        let kept = FakePd::default()
            .with_store(tikv_store(0, 1))
            .with_store(tikv_store(2, 5))
            .with_store(tikv_store(3, 6));
        let all = kept.clone().with_store(tikv_store(4, 7));
        let plan = reconcile(&all, &recovering(), &s).unwrap();
        assert!(
            plan.actions
                .contains(&Action::PdStoreDelete((c.clone(), 7))),
            "{plan:?}"
        );
        assert!(!plan.actions.contains(&Action::PdStoreDelete((c, 6))));
        let plan = reconcile(&kept, &recovering(), &s.after(&plan)).unwrap();
        for a in [
            Action::SetReplicas(3),
            Action::DeleteClaim("tikv-basic-tikv-4".into()),
        ] {
            assert!(plan.actions.contains(&a), "{a:?} missing from {plan:?}");
        }
    }

    #[test]
    fn an_advanced_pd_recovers_by_removing_only_the_failover_member() {
        let failure = Failure {
            pod: "basic-pd-2".into(),
            member_id: Some(1002),
            store_id: None,
            created_at_ms: 0,
            deleted: true,
        };
        let s = with_failures(advanced("pd", 4), &[failure]).at(500_000);
        let members = FakePd::default()
            .with_member(member(1000, "basic-pd-0"))
            .with_member(member(2002, "basic-pd-2"))
            .with_member(member(1003, "basic-pd-3"))
            .with_member(member(1004, "basic-pd-4"));
        let c = steward_sdk::pd::cluster("default", "basic");
        let plan = reconcile(&members.clone().with_leader("basic-pd-4"), &settings(), &s).unwrap();
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdTransferLeader((c.clone(), "basic-pd-0".into()))]
        );
        let plan = reconcile(&members.with_leader("basic-pd-0"), &settings(), &s).unwrap();
        let changes: Vec<_> = plan
            .changes()
            .filter(|a| !matches!(a, Action::Annotate(_)))
            .cloned()
            .collect();
        assert_eq!(
            changes,
            [
                Action::PdDeleteMember((c, 1004)),
                Action::SetReplicas(3),
                Action::DeleteClaim("pd-basic-pd-4".into()),
            ]
        );
    }
}
