//! Safe scale-in on request (tidb-operator's `pd_scaler.go` and
//! `tikv_scaler.go`): the StatefulSet annotation `steward.io/scale-in: N`
//! asks for N replicas, and the replicas go one at a time, highest
//! desired ordinal first (an Advanced StatefulSet's delete slots
//! skipped), each only once PD no longer counts on it:
//!
//! - PD: only while the members that stay keep a healthy quorum; the PD
//!   leader's pod hands leadership to the lowest healthy ordinal first;
//!   the member is deleted from PD, then the replica and its claims go;
//! - TiKV: the store is taken offline in PD (`pd-store-delete`), and the
//!   replica and its claims go only once PD reports it Tombstone (lists it
//!   no more), however long PD takes to move its regions.
//!
//! Progress is the cluster's own state (the annotation, `spec.replicas`,
//! PD's members and stores), so a restarted host resumes where the last
//! stopped. PD unreachable fails the reconcile: nothing changes. tidb-guard
//! refuses a plain replicas decrease that would skip these steps.

use steward_sdk::pd::PdView;
use steward_sdk::reconcile::{Plan, WorkloadState};
use steward_sdk::tidb::{self, SCALE_IN_ANNOTATION};
use steward_sdk::{Action, EventType, labels};

use crate::failover::{Settings, claims_of};
use crate::tikv_exit::{self, StoreExit};

/// StatefulSet annotation: why the scale-in waits, so that the Event
/// saying so is emitted once per reason.
pub const SCALE_IN_WAITING_ANNOTATION: &str = "steward.io/scale-in-waiting";

/// The next step of a scale-in to `target` replicas.
pub fn reconcile(
    pd: &impl PdView,
    settings: &Settings,
    state: &WorkloadState,
    target: u32,
) -> Result<Plan, String> {
    let w = &state.workload;
    let component = tidb::component(&w.labels);
    if !matches!(component, Some("pd" | "tikv")) {
        return Ok(Plan::new());
    }
    let poll = settings.poll_ms.get();
    let waited = labels::get(&w.annotations, SCALE_IN_WAITING_ANNOTATION);
    // A step forward: the reason to wait, if any, is gone.
    let mut plan = match waited {
        Some(_) => Plan::new().remember(&w.name, SCALE_IN_WAITING_ANNOTATION, None),
        None => Plan::new(),
    };
    let waiting = |why: String| {
        let plan = Plan::new().requeue_after(poll);
        if waited == Some(why.as_str()) {
            return Ok(plan);
        }
        Ok(plan
            .remember(&w.name, SCALE_IN_WAITING_ANNOTATION, Some(why.clone()))
            .event(EventType::Normal, "ScaleInWaiting", why))
    };
    // The replica a step removes: the highest desired ordinal.
    let Some(&ordinal) = w.desired_ordinals.last().filter(|_| target < w.replicas) else {
        return Ok(plan.remember(&w.name, SCALE_IN_ANNOTATION, None).event(
            EventType::Normal,
            "ScaleInComplete",
            format!("{} runs {} replicas, as asked", w.name, w.replicas),
        ));
    };
    if component == Some("pd") && target == 0 {
        return Err(format!(
            "annotation {SCALE_IN_ANNOTATION} of StatefulSet {}/{} asks for 0 PD replicas: a \
             TiDB cluster needs at least one PD member; ask for 1 or more",
            w.namespace, w.name
        ));
    }
    if !tidb::failures(w)?.is_empty() {
        return waiting(format!(
            "scale-in of {} waits until failover has recovered its failures",
            w.name
        ));
    }
    let cluster = steward_sdk::pd::cluster_of(w)?;
    let pod = format!("{}-{ordinal}", w.name);
    if component == Some("pd") {
        let members = pd.members(&cluster)?;
        if let Some(member) = members.iter().find(|m| m.name == pod) {
            let staying: Vec<_> = members.iter().filter(|m| m.name != pod).collect();
            let healthy = staying.iter().filter(|m| m.healthy).count();
            if healthy < staying.len() / 2 + 1 {
                return waiting(format!(
                    "scale-in of {}: removing PD member {pod} would leave {healthy} healthy of {} \
                     members, fewer than a quorum",
                    w.name,
                    staying.len()
                ));
            }
            if pd.leader(&cluster)? == pod {
                // A quorum of the staying members is healthy: one leads next.
                let Some(heir) = staying
                    .iter()
                    .filter(|m| m.healthy)
                    .min_by_key(|m| steward_sdk::labels::ordinal(&m.name))
                    .map(|m| m.name.clone())
                else {
                    return waiting(format!("scale-in of {}: no PD member can lead", w.name));
                };
                return Ok(plan
                    .action(Action::PdTransferLeader((cluster, heir.clone())))
                    .event(
                        EventType::Normal,
                        "PDScaleIn",
                        format!("moving PD leadership from {pod} to {heir} before it leaves"),
                    )
                    .requeue_after(poll));
            }
            plan = plan
                .action(Action::PdDeleteMember((cluster, member.id)))
                .event(
                    EventType::Normal,
                    "PDScaleIn",
                    format!(
                        "deleted PD member {pod} ({}) from PD; its pod and claims go next",
                        member.id
                    ),
                );
        }
    } else {
        let stores = pd.stores(&cluster)?;
        match StoreExit::of(&stores, &pod, &cluster.name, &w.namespace) {
            StoreExit::Leaving {
                store,
                offline: true,
            } => {
                return waiting(format!(
                    "scale-in of {}: PD is moving the regions of store {} ({pod}) away",
                    w.name, store.id
                ));
            }
            StoreExit::Leaving { store, .. } => {
                let plan = plan.action(Action::PdStoreDelete((cluster.clone(), store.id)));
                return Ok(tikv_exit::taking_offline(plan, store, &pod).requeue_after(poll));
            }
            StoreExit::Gone => plan = tikv_exit::gone(plan, &pod),
        }
    }
    plan = plan.set_replicas(w.replicas - 1);
    for claim in claims_of(state, &pod) {
        plan = plan.action(Action::DeleteClaim(claim));
    }
    Ok(plan.requeue_after(poll))
}

#[cfg(test)]
mod tests {
    use steward_sdk::build::{claim, statefulset, workload_state};
    use steward_sdk::pd::{FakePd, member, store};
    use steward_sdk::{Store, labels};

    use super::*;

    fn asked(name: &str, component: &str, replicas: u32, target: u32) -> WorkloadState {
        let mut s = workload_state(
            statefulset(name, replicas)
                .component("basic", component)
                .annotation(SCALE_IN_ANNOTATION, &target.to_string()),
        );
        s.workload.claim_templates = vec![component.into()];
        s.claims = (0..replicas)
            .map(|o| claim(&format!("{component}-{name}-{o}")))
            .collect();
        s
    }

    fn tikv_store(ordinal: u32, id: u64) -> Store {
        let address = format!("basic-tikv-{ordinal}.basic-tikv-peer.default.svc:20160");
        store(id, &address, 1)
    }

    fn pd_of(n: u32) -> FakePd {
        (0..n)
            .fold(FakePd::default(), |pd, o| {
                pd.with_member(member(100 + u64::from(o), &format!("basic-pd-{o}")))
            })
            .with_leader("basic-pd-0")
    }

    /// The step towards the target the state's annotation asks for.
    fn run(pd: &FakePd, state: &WorkloadState) -> Plan {
        let target = tidb::scale_in_target(&state.workload).unwrap().unwrap();
        reconcile(pd, &Settings::default(), state, target).unwrap()
    }

    #[test]
    fn pd_members_leave_pd_one_at_a_time_before_their_pods() {
        let c = steward_sdk::pd::cluster("default", "basic");
        let state = asked("basic-pd", "pd", 3, 1);
        let mut pd = pd_of(3);
        assert_eq!(
            tidb::scale_in_target(&state.workload).unwrap(),
            Some(1),
            "the request is read from the StatefulSet"
        );
        let plan = run(&pd, &state);
        let changes: Vec<_> = plan.changes().cloned().collect();
        assert_eq!(
            changes,
            [
                Action::PdDeleteMember((c.clone(), 102)),
                Action::SetReplicas(2),
                Action::DeleteClaim("pd-basic-pd-2".into()),
            ],
            "the member leaves PD before its replica and claim"
        );
        pd.members.retain(|m| m.id != 102);
        let state = state.after(&plan);

        // Two members left: removing one keeps a quorum of one only if the
        // other is healthy. The scale-in says so once, and waits.
        pd.members[0].healthy = false;
        let plan = run(&pd, &state);
        assert!(
            !plan.changes().any(|a| !matches!(a, Action::Annotate(_))),
            "{plan:?}"
        );
        let waiting = state.clone().after(&plan);
        let why = labels::get(&waiting.workload.annotations, SCALE_IN_WAITING_ANNOTATION);
        assert!(
            why.unwrap().contains("would leave 0 healthy of 1 members"),
            "{why:?}"
        );
        assert_eq!(run(&pd, &waiting).changes().count(), 0, "said once");
        pd.members[0].healthy = true;
        let going_on = run(&pd, &waiting);
        assert!(
            going_on
                .actions
                .iter()
                .any(|a| matches!(a, Action::Annotate((_, l))
                if l.iter().any(|an| an.key == SCALE_IN_WAITING_ANNOTATION && an.value.is_none()))),
            "the reason is gone once it goes on: {going_on:?}"
        );

        // basic-pd-1 leads: leadership moves to basic-pd-0 first.
        pd.leader = "basic-pd-1".into();
        let plan = run(&pd, &state);
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdTransferLeader((c.clone(), "basic-pd-0".into()))]
        );
        pd.leader = "basic-pd-0".into();
        let plan = run(&pd, &state);
        assert!(plan.actions.contains(&Action::PdDeleteMember((c, 101))));
        assert!(plan.actions.contains(&Action::SetReplicas(1)));
        pd.members.retain(|m| m.id != 101);

        let done = run(&pd, &state.after(&plan));
        let state = asked("basic-pd", "pd", 1, 1).after(&done);
        assert_eq!(
            labels::get(&state.workload.annotations, SCALE_IN_ANNOTATION),
            None
        );
        assert!(
            done.actions
                .iter()
                .any(|a| matches!(a, Action::EmitEvent((_, r, _)) if r == "ScaleInComplete"))
        );
    }

    #[test]
    fn a_member_already_out_of_pd_only_loses_its_replica() {
        // A host stopped after deleting the member: the next one goes on.
        let mut pd = pd_of(3);
        pd.members.pop();
        let plan = run(&pd, &asked("basic-pd", "pd", 3, 2));
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [
                Action::SetReplicas(2),
                Action::DeleteClaim("pd-basic-pd-2".into())
            ]
        );
    }

    #[test]
    fn tikv_stores_go_offline_and_tombstone_before_their_replicas_highest_first() {
        let c = steward_sdk::pd::cluster("default", "basic");
        let state = asked("basic-tikv", "tikv", 4, 2);
        let three = FakePd::default()
            .with_store(tikv_store(0, 1))
            .with_store(tikv_store(1, 4))
            .with_store(tikv_store(2, 5));
        let four = three.clone().with_store(tikv_store(3, 6));
        let plan = run(&four, &state);
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdStoreDelete((c.clone(), 6))],
            "only the highest ordinal's store, and the replica stays"
        );
        // While PD moves its regions the store is Offline: a host (this one
        // or a new one) waits.
        let draining = three.clone().with_store(tikv_store(3, 6).state("Offline"));
        let plan = run(&draining, &state);
        assert!(
            !plan.changes().any(|a| !matches!(a, Action::Annotate(_))),
            "{plan:?}"
        );
        // Tombstone: PD lists it as such, or no more; the replica and its
        // claim go.
        let tombstone = three
            .clone()
            .with_store(tikv_store(3, 6).state("Tombstone"));
        for pd in [&tombstone, &three] {
            let plan = run(pd, &state);
            assert_eq!(
                plan.changes().cloned().collect::<Vec<_>>(),
                [
                    Action::SetReplicas(3),
                    Action::DeleteClaim("tikv-basic-tikv-3".into())
                ]
            );
        }
        let plan = run(&three, &state);
        let state = state.after(&plan);
        let plan = run(&three, &state);
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdStoreDelete((c, 5))]
        );
    }

    #[test]
    fn pd_unreachable_changes_nothing() {
        for (name, component) in [("basic-pd", "pd"), ("basic-tikv", "tikv")] {
            let e = reconcile(
                &FakePd::default().unreachable(),
                &Settings::default(),
                &asked(name, component, 3, 2),
                2,
            )
            .unwrap_err();
            assert!(e.contains("unreachable"), "{e}");
        }
    }

    #[test]
    fn scale_in_waits_for_failover_and_refuses_an_empty_pd() {
        let mut state = asked("basic-tikv", "tikv", 4, 3);
        state.workload = state.workload.annotation(
            tidb::FAILURES_ANNOTATION,
            r#"[{"pod":"basic-tikv-1","storeId":4}]"#,
        );
        let plan = run(&FakePd::default().with_store(tikv_store(3, 6)), &state);
        assert!(
            !plan.changes().any(|a| !matches!(a, Action::Annotate(_))),
            "{plan:?}"
        );
        let e = reconcile(
            &pd_of(3),
            &Settings::default(),
            &asked("basic-pd", "pd", 3, 0),
            0,
        )
        .unwrap_err();
        assert!(e.contains("at least one PD member"), "{e}");
    }
}
