//! The upgrade gate's decision for one reconcile.

use serde::{Deserialize, Serialize};
use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::{PdView, evict_leader_scheduler};
use steward_sdk::reconcile::{Plan, PollMs, Replica, WorkloadState};
use steward_sdk::{Action, EventType, PdCluster, Store, Workload, labels, tidb};

/// StatefulSet annotation holding [`GateState`] (JSON) while an upgrade
/// runs.
pub const GATE_ANNOTATION: &str = "steward.io/upgrade-gate";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Longest wait for a TiKV store's leaders to drain before its pod is
    /// restarted anyway (tidb-operator's `evictLeaderTimeout`, 1500 min).
    pub evict_leader_timeout_seconds: u64,
    /// Longest wait for leaders to come back after a restart
    /// (`waitLeaderTransferBackTimeout`, 400 s).
    pub leader_return_timeout_seconds: u64,
    /// Stores that held fewer leaders before the upgrade are not waited
    /// for (tidb-operator: 200).
    pub leader_return_minimum: u64,
    /// Wait between two looks while something is in progress.
    pub poll_ms: PollMs,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            evict_leader_timeout_seconds: 1500 * 60,
            leader_return_timeout_seconds: 400,
            leader_return_minimum: 200,
            poll_ms: PollMs::default(),
        }
    }
}

impl steward_sdk::Settings for Settings {}

/// What the gate remembers while an upgrade runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateState {
    /// The update revision being rolled out.
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicting: Option<Leaders>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returning: Option<Leaders>,
    /// Why the upgrade waits (the Event was emitted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// A TiKV store whose leaders are being moved off (or back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaders {
    pub store: u64,
    pub pod: String,
    /// When the eviction began (or ended), Unix ms.
    pub since_ms: i64,
    /// Leaders the store held when the eviction began.
    pub before: u64,
}

impl GateState {
    fn read(w: &Workload) -> Result<Option<GateState>, String> {
        labels::get(&w.annotations, GATE_ANNOTATION)
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    format!(
                        "annotation {GATE_ANNOTATION} of StatefulSet {}/{} is not the gate's \
                         state ({e}); remove it to restart the upgrade gating",
                        w.namespace, w.name
                    )
                })
            })
            .transpose()
    }

    fn save(&self, plan: Plan, w: &Workload) -> Plan {
        let json = serde_json::to_string(self).expect("gate state serialises");
        plan.remember(&w.name, GATE_ANNOTATION, Some(json))
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Component {
    Pd,
    Tikv,
    Tidb,
    Other,
}

/// Components that must finish upgrading before this one may start.
fn earlier(c: Component) -> &'static [&'static str] {
    match c {
        Component::Pd | Component::Other => &[],
        Component::Tikv => &["pd"],
        Component::Tidb => &["pd", "tikv"],
    }
}

enum Return {
    Wait,
    /// Go on, after this plan.
    Done(Plan),
}

struct Ctx<'a, P> {
    pd: &'a P,
    settings: &'a Settings,
    state: &'a WorkloadState,
    component: Component,
    /// The PD cluster, or why it is unknown.
    cluster: Result<PdCluster, String>,
    instance: Option<&'a str>,
}

/// The next steps for one workload.
pub fn reconcile(
    cluster: &impl ClusterView,
    pd: &impl PdView,
    settings: &Settings,
    state: &WorkloadState,
) -> Result<Plan, String> {
    let w = &state.workload;
    if w.update_strategy != "RollingUpdate" {
        return Ok(Plan::new());
    }
    let instance = tidb::instance(&w.labels);
    let component = match tidb::component(&w.labels) {
        Some("pd") => Component::Pd,
        Some("tikv") => Component::Tikv,
        Some("tidb") => Component::Tidb,
        _ => Component::Other,
    };
    let ctx = Ctx {
        pd,
        settings,
        state,
        component,
        cluster: steward_sdk::pd::cluster_of(w),
        instance,
    };
    let gate = GateState::read(w)?;
    if w.observed_generation < w.generation {
        // The StatefulSet controller has not caught up with the latest
        // spec: its revisions and counts describe an older one.
        return Ok(Plan::new().requeue_after(settings.poll_ms.get()));
    }
    if !upgrading(w, &state.replicas) {
        return ctx.finish(gate);
    }
    let mut gate = match gate {
        Some(g) if g.revision == w.update_revision => g,
        stale => return ctx.start(stale),
    };
    ctx.step(cluster, &mut gate)
}

/// Sets the partition to `partition` and the protection tidb-guard
/// enforces (`steward.io/protected-partition`) with it, so that no one but
/// Steward lowers the partition further. The protection is raised before
/// the partition and lowered after it: in between, it never lets a user
/// below what the gate allows.
fn hold(mut plan: Plan, w: &Workload, partition: u32) -> Result<Plan, String> {
    let protected = tidb::protected_partition(w)?;
    let protect = |plan: Plan| {
        if protected == Some(partition) {
            return plan;
        }
        plan.remember(
            &w.name,
            tidb::PROTECTED_PARTITION_ANNOTATION,
            Some(partition.to_string()),
        )
    };
    let lowering = protected.is_some_and(|p| partition < p);
    if !lowering {
        plan = protect(plan);
    }
    if w.partition != Some(partition) {
        plan = plan.set_partition(partition);
    }
    if lowering {
        plan = protect(plan);
    }
    Ok(plan)
}

/// A template change not yet rolled out to every desired pod.
fn upgrading(w: &Workload, replicas: &[Replica]) -> bool {
    w.current_revision != w.update_revision
        || replicas
            .iter()
            .any(|r| w.desired_ordinals.contains(&r.ordinal) && r.revision != w.update_revision)
}

fn ready(r: &Replica) -> bool {
    r.pod.ready && !r.pod.deleting
}

impl<P: PdView> Ctx<'_, P> {
    fn w(&self) -> &Workload {
        &self.state.workload
    }

    fn poll(&self, plan: Plan) -> Plan {
        plan.requeue_after(self.settings.poll_ms.get())
    }

    fn pd_cluster(&self) -> Result<&PdCluster, String> {
        self.cluster.as_ref().map_err(String::clone)
    }

    /// The PD store of TiKV pod `pod`.
    fn store_of(&self, stores: &[Store], pod: &str) -> Option<Store> {
        let instance = self.instance?;
        stores
            .iter()
            .find(|s| tidb::is_store_of(&s.address, pod, instance, &self.w().namespace))
            .cloned()
    }

    /// Nothing (left) to upgrade: clean up after an upgrade, keep the
    /// partition where it holds every pod.
    fn finish(&self, gate: Option<GateState>) -> Result<Plan, String> {
        let w = self.w();
        let mut plan = Plan::new();
        if let Some(gate) = gate {
            if self.component == Component::Tikv {
                if let Some(returning) = &gate.returning {
                    match self.leaders_returning(returning)? {
                        Return::Wait => return Ok(self.poll(Plan::new())),
                        Return::Done(done) => plan = done,
                    }
                }
                let c = self.pd_cluster()?;
                let running = self.pd.schedulers(c)?;
                for s in self.pd.stores(c)? {
                    if running.contains(&evict_leader_scheduler(s.id)) {
                        plan = plan.action(Action::PdEvictLeaderEnd((c.clone(), s.id)));
                    }
                }
            }
            plan = plan.remember(&w.name, GATE_ANNOTATION, None).event(
                EventType::Normal,
                "UpgradeComplete",
                format!("every pod runs revision {}", w.update_revision),
            );
        }
        hold(plan, w, tidb::held_partition(w))
    }

    /// A new update revision: hold every pod and remember the revision. A
    /// stale eviction is ended.
    fn start(&self, stale: Option<GateState>) -> Result<Plan, String> {
        let w = self.w();
        let mut plan = Plan::new();
        if let (Some(evicting), Ok(c)) = (stale.and_then(|g| g.evicting), &self.cluster) {
            plan = plan.action(Action::PdEvictLeaderEnd((c.clone(), evicting.store)));
        }
        let plan = hold(plan, w, tidb::held_partition(w))?;
        let gate = GateState {
            revision: w.update_revision.clone(),
            ..GateState::default()
        };
        let plan = gate.save(plan, w).event(
            EventType::Normal,
            "UpgradeStarted",
            format!(
                "rolling {} pods to revision {}, highest ordinal first",
                w.replicas, w.update_revision
            ),
        );
        Ok(self.poll(plan))
    }

    fn step(&self, cluster: &impl ClusterView, gate: &mut GateState) -> Result<Plan, String> {
        let w = self.w();
        let partition = w.partition.unwrap_or(0);
        let stores = match self.component {
            Component::Tikv => self.pd.stores(self.pd_cluster()?)?,
            _ => Vec::new(),
        };
        for &ordinal in w.desired_ordinals.iter().rev() {
            let pod_name = format!("{}-{ordinal}", w.name);
            let replica = self.state.replica(ordinal);
            let Some(replica) = replica.filter(|r| r.revision == w.update_revision) else {
                if replica.is_none()
                    || partition <= ordinal
                    || replica.is_some_and(|r| r.pod.deleting)
                {
                    return Ok(self.poll(Plan::new()));
                }
                return self.before_restart(cluster, gate, ordinal, &stores);
            };
            if !ready(replica) {
                return Ok(self.poll(Plan::new()));
            }
            match self.component {
                Component::Pd => {
                    let members = self.pd.members(self.pd_cluster()?)?;
                    if !members.iter().any(|m| m.name == pod_name && m.healthy) {
                        return Ok(self.poll(Plan::new()));
                    }
                }
                Component::Tikv => {
                    let store = self.store_of(&stores, &pod_name);
                    if store.as_ref().is_some_and(|s| s.state != "Up") {
                        return Ok(self.poll(Plan::new()));
                    }
                    if let Some(e) = gate.evicting.take_if(|e| e.pod == pod_name) {
                        let c = self.pd_cluster()?.clone();
                        gate.returning = Some(Leaders {
                            since_ms: self.state.now_ms,
                            ..e.clone()
                        });
                        let plan = Plan::new().action(Action::PdEvictLeaderEnd((c, e.store)));
                        return Ok(self.poll(gate.save(plan, w)));
                    }
                    if let Some(r) = gate.returning.clone().filter(|r| r.pod == pod_name) {
                        return Ok(match self.leaders_returning(&r)? {
                            Return::Wait => self.poll(Plan::new()),
                            Return::Done(plan) => {
                                gate.returning = None;
                                self.poll(gate.save(plan, w))
                            }
                        });
                    }
                }
                Component::Tidb | Component::Other => {}
            }
        }
        // Every pod is at the update revision; the StatefulSet status has
        // not caught up yet.
        Ok(self.poll(Plan::new()))
    }

    /// Whether the leaders of `r`'s store are back (2/3 of before), or
    /// the wait is over (the plan then carries the Event saying so).
    fn leaders_returning(&self, r: &Leaders) -> Result<Return, String> {
        let c = self.pd_cluster()?;
        let leaders = self
            .pd
            .stores(c)?
            .into_iter()
            .find(|s| s.id == r.store)
            .map_or(0, |s| s.leader_count);
        let back = r.before < self.settings.leader_return_minimum || leaders * 3 >= r.before * 2;
        if back {
            return Ok(Return::Done(Plan::new()));
        }
        let timeout = self.settings.leader_return_timeout_seconds as i64 * 1000;
        if self.state.now_ms < r.since_ms + timeout {
            return Ok(Return::Wait);
        }
        Ok(Return::Done(Plan::new().event(
            EventType::Warning,
            "LeaderReturnTimeout",
            format!(
                "store {} of pod {} has {leaders} of its {} leaders back after {}s; going on",
                r.store, r.pod, r.before, self.settings.leader_return_timeout_seconds
            ),
        )))
    }

    /// Ordinal `ordinal` is the next to restart: check the cluster, move
    /// leaders off it, then lower the partition to it.
    fn before_restart(
        &self,
        cluster: &impl ClusterView,
        gate: &mut GateState,
        ordinal: u32,
        stores: &[Store],
    ) -> Result<Plan, String> {
        let w = self.w();
        let pod_name = format!("{}-{ordinal}", w.name);
        if let Some(reason) = self.blocked(cluster, stores)? {
            if gate.blocked.as_deref() == Some(reason.as_str()) {
                return Ok(self.poll(Plan::new()));
            }
            gate.blocked = Some(reason.clone());
            let plan = Plan::new().event(
                EventType::Normal,
                "UpgradeBlocked",
                format!("not restarting pod {pod_name}: {reason}"),
            );
            return Ok(self.poll(gate.save(plan, w)));
        }
        gate.blocked = None;
        let mut plan = Plan::new();
        match self.component {
            Component::Pd => {
                let c = self.pd_cluster()?;
                if self.pd.leader(c)? == pod_name {
                    let members = self.pd.members(c)?;
                    let healthy = |o: u32| {
                        let name = format!("{}-{o}", w.name);
                        members.iter().any(|m| m.name == name && m.healthy)
                    };
                    // tidb-operator's choice: the highest healthy desired
                    // ordinal above (upgraded), else the lowest below.
                    let desired = &w.desired_ordinals;
                    let target = desired
                        .iter()
                        .rev()
                        .find(|&&o| o > ordinal && healthy(o))
                        .or_else(|| desired.iter().find(|&&o| o < ordinal && healthy(o)));
                    if let Some(t) = target {
                        let target = format!("{}-{t}", w.name);
                        let plan = Plan::new()
                            .action(Action::PdTransferLeader((c.clone(), target.clone())))
                            .event(
                                EventType::Normal,
                                "PDLeaderTransfer",
                                format!("moving PD leadership from {pod_name} to {target} before restarting it"),
                            );
                        return Ok(self.poll(plan));
                    }
                    steward_sdk::log(
                        steward_sdk::LogLevel::Warn,
                        &format!(
                            "no healthy PD member to take over from {pod_name}; restarting it as leader"
                        ),
                    );
                }
            }
            Component::Tikv => {
                if let Some(store) = self.store_of(stores, &pod_name) {
                    let c = self.pd_cluster()?;
                    match &gate.evicting {
                        Some(e) if e.pod == pod_name && e.store == store.id => {
                            if store.leader_count > 0 {
                                let timeout =
                                    self.settings.evict_leader_timeout_seconds as i64 * 1000;
                                if self.state.now_ms < e.since_ms + timeout {
                                    return Ok(self.poll(Plan::new()));
                                }
                                plan = plan.event(
                                    EventType::Warning,
                                    "EvictLeaderTimeout",
                                    format!(
                                        "store {} of pod {pod_name} still holds {} leaders after \
                                         {}s of eviction; restarting it anyway",
                                        store.id,
                                        store.leader_count,
                                        self.settings.evict_leader_timeout_seconds
                                    ),
                                );
                            }
                        }
                        _ => {
                            gate.evicting = Some(Leaders {
                                store: store.id,
                                pod: pod_name.clone(),
                                since_ms: self.state.now_ms,
                                before: store.leader_count,
                            });
                            let plan = Plan::new()
                                .action(Action::PdEvictLeaderBegin((c.clone(), store.id)));
                            return Ok(self.poll(gate.save(plan, w)));
                        }
                    }
                }
            }
            Component::Tidb | Component::Other => {}
        }
        let plan = hold(gate.save(plan, w), w, ordinal)?.event(
            EventType::Normal,
            "UpgradeStep",
            format!(
                "restarting pod {pod_name} at revision {} (partition {ordinal})",
                w.update_revision
            ),
        );
        Ok(self.poll(plan))
    }

    /// Why no pod may restart now, if anything stops it.
    fn blocked(
        &self,
        cluster: &impl ClusterView,
        stores: &[Store],
    ) -> Result<Option<String>, String> {
        let w = self.w();
        if w.status_replicas != w.replicas
            || self
                .state
                .replicas
                .iter()
                .any(|r| !w.desired_ordinals.contains(&r.ordinal))
        {
            return Ok(Some(format!(
                "the StatefulSet is scaling ({} of {} replicas)",
                w.status_replicas, w.replicas
            )));
        }
        if let Some(r) = self.state.replicas.iter().find(|r| !ready(r)) {
            return Ok(Some(format!("pod {} is not ready", r.pod.name)));
        }
        if let Some(instance) = self.instance {
            for other in earlier(self.component) {
                let name = format!("{instance}-{other}");
                if let Some(o) = tidb::statefulset(cluster, &w.kind, &w.namespace, &name)
                    && (o.current_revision != o.update_revision
                        || o.status_replicas != o.replicas
                        || o.ready_replicas < o.replicas)
                {
                    return Ok(Some(format!(
                        "{other} ({name}) is upgrading or scaling and goes first"
                    )));
                }
            }
        }
        if self.component == Component::Other
            || self.component == Component::Tidb && self.cluster.is_err()
        {
            return Ok(None);
        }
        let c = self.pd_cluster()?;
        if let Some(m) = self.pd.members(c)?.into_iter().find(|m| !m.healthy) {
            return Ok(Some(format!("PD member {} is unhealthy", m.name)));
        }
        let stores = if stores.is_empty() {
            self.pd.stores(c)?
        } else {
            stores.to_vec()
        };
        if let Some(s) = stores
            .iter()
            .find(|s| s.state != "Up" && s.state != "Tombstone")
        {
            return Ok(Some(format!("TiKV store {} is {}", s.id, s.state)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use steward_sdk::build::{statefulset, workload_state};
    use steward_sdk::cluster::FakeCluster;
    use steward_sdk::pd::{FakePd, member, store};
    use steward_sdk::reconcile::POLL_MS;

    use super::*;

    const NS: &str = "default";

    /// basic's TiKV, held by the gate at partition 3.
    fn tikv_state() -> WorkloadState {
        workload_state(
            statefulset("basic-tikv", 3)
                .component("basic", "tikv")
                .partition(3)
                .annotation(tidb::PROTECTED_PARTITION_ANNOTATION, "3"),
        )
    }

    /// TiKV with a new revision `r2` not rolled out yet.
    fn tikv_upgrading() -> WorkloadState {
        let mut state = tikv_state();
        state.workload = state.workload.updating_to("r2");
        state
    }

    /// The gate's state once it has started the upgrade to `r2`.
    fn started() -> GateState {
        GateState {
            revision: "r2".into(),
            ..GateState::default()
        }
    }

    /// The eviction of `basic-tikv-2`'s store (300 leaders) begun at 0.
    fn evicting_tikv_2() -> Leaders {
        Leaders {
            store: 5,
            pod: "basic-tikv-2".into(),
            since_ms: 0,
            before: 300,
        }
    }

    fn pd() -> FakePd {
        let addr = |i: u32| format!("basic-tikv-{i}.basic-tikv-peer.{NS}.svc:20160");
        FakePd::default()
            .with_store(store(1, &addr(0), 300))
            .with_store(store(4, &addr(1), 300))
            .with_store(store(5, &addr(2), 300))
            .with_member(member(1000, "basic-pd-0"))
            .with_member(member(1001, "basic-pd-1"))
            .with_member(member(1002, "basic-pd-2"))
            .with_leader("basic-pd-0")
    }

    fn with_gate(mut s: WorkloadState, gate: &GateState) -> WorkloadState {
        s.workload.annotations.retain(|(k, _)| k != GATE_ANNOTATION);
        s.workload = s
            .workload
            .annotation(GATE_ANNOTATION, &serde_json::to_string(gate).unwrap());
        s
    }

    fn gate_of(plan: &Plan) -> Option<GateState> {
        plan.actions.iter().find_map(|a| match a {
            Action::Annotate((_, list)) => list
                .iter()
                .find(|a| a.key == GATE_ANNOTATION)
                .and_then(|a| a.value.as_deref())
                .map(|v| serde_json::from_str(v).unwrap()),
            _ => None,
        })
    }

    fn partition_of(plan: &Plan) -> Option<u32> {
        plan.actions.iter().find_map(|a| match a {
            Action::SetPartition(p) => Some(*p),
            _ => None,
        })
    }

    fn run(state: &WorkloadState, pd: &FakePd) -> Plan {
        reconcile(&FakeCluster::default(), pd, &Settings::default(), state).unwrap()
    }

    #[test]
    fn settings_refuse_a_zero_poll_and_default_to_the_sdk_poll() {
        let e = steward_sdk::settings::parse::<Settings>(r#"{"pollMs": 0}"#).unwrap_err();
        assert!(e.contains("pollMs must be at least 1"), "{e}");
        let s: Settings = steward_sdk::settings::parse("").unwrap();
        assert_eq!(s.poll_ms.get(), POLL_MS);
    }

    /// The protection a plan writes, if it writes one.
    fn protection_of(plan: &Plan) -> Option<Option<String>> {
        plan.actions.iter().find_map(|a| match a {
            Action::Annotate((_, list)) => list
                .iter()
                .find(|a| a.key == tidb::PROTECTED_PARTITION_ANNOTATION)
                .map(|a| a.value.clone()),
            _ => None,
        })
    }

    /// Where in `plan` the partition is set and the protection written.
    fn partition_and_protection(plan: &Plan) -> (usize, usize) {
        let at = |wanted: fn(&Action) -> bool| plan.actions.iter().position(wanted).unwrap();
        (
            at(|a| matches!(a, Action::SetPartition(_))),
            at(|a| {
                matches!(a, Action::Annotate((_, l))
                    if l.iter().any(|a| a.key == tidb::PROTECTED_PARTITION_ANNOTATION))
            }),
        )
    }

    #[test]
    fn an_idle_workload_is_held_at_partition_replicas_and_protected_there() {
        let mut state = tikv_state();
        state.workload.partition = None;
        state.workload.annotations.clear();
        let plan = run(&state, &pd());
        assert_eq!(partition_of(&plan), Some(3));
        assert_eq!(protection_of(&plan), Some(Some("3".into())));
        let (partition, protection) = partition_and_protection(&plan);
        assert!(
            protection < partition,
            "raised before the partition: {plan:?}"
        );
        assert_eq!(run(&tikv_state(), &pd()).changes().count(), 0);
    }

    #[test]
    fn each_step_lowers_the_protection_after_the_partition() {
        let state = with_gate(tikv_upgrading(), &started());
        let mut drained = pd();
        drained.stores[2].leader_count = 0;
        let gate = GateState {
            evicting: Some(evicting_tikv_2()),
            ..started()
        };
        let plan = run(&with_gate(state, &gate), &drained);
        assert_eq!(partition_of(&plan), Some(2));
        assert_eq!(protection_of(&plan), Some(Some("2".into())));
        let (partition, protection) = partition_and_protection(&plan);
        assert!(
            partition < protection,
            "lowered after the partition: {plan:?}"
        );
    }

    #[test]
    fn a_spec_the_statefulset_controller_has_not_observed_is_waited_for() {
        // Just created: no status yet, so no revision to compare.
        let mut state = tikv_state();
        state.workload.observed_generation = 0;
        state.workload.current_revision = String::new();
        state.workload.update_revision = String::new();
        let plan = run(&state, &pd());
        assert_eq!(plan.changes().count(), 0, "{plan:?}");
        assert!(plan.actions.contains(&Action::RequeueAfter(POLL_MS)));
        // Observed: an idle workload, no upgrade started.
        let plan = run(&tikv_state(), &pd());
        assert_eq!(plan.changes().count(), 0);
        assert!(gate_of(&plan).is_none());
    }

    #[test]
    fn a_new_revision_starts_gated_then_evicts_the_highest_store_first() {
        let state = tikv_upgrading();
        let plan = run(&state, &pd());
        assert_eq!(gate_of(&plan).unwrap().revision, "r2");
        assert_eq!(partition_of(&plan), None, "partition already at replicas");

        let state = with_gate(state, &gate_of(&plan).unwrap()).at(1_000);
        let plan = run(&state, &pd());
        let c = steward_sdk::pd::cluster(NS, "basic");
        assert!(
            plan.actions.contains(&Action::PdEvictLeaderBegin((c, 5))),
            "{plan:?}"
        );
        let gate = gate_of(&plan).unwrap();
        let e = gate.evicting.as_ref().unwrap();
        assert_eq!(
            (e.store, e.pod.as_str(), e.since_ms, e.before),
            (5, "basic-tikv-2", 1_000, 300)
        );
        assert_eq!(partition_of(&plan), None, "no restart while leaders remain");

        // Leaders still there: wait; none left: lower the partition to 2.
        let state = with_gate(state, &gate);
        assert_eq!(run(&state, &pd()).changes().count(), 0);
        let mut drained = pd();
        drained.stores[2].leader_count = 0;
        assert_eq!(partition_of(&run(&state, &drained)), Some(2));
    }

    #[test]
    fn the_eviction_timeout_restarts_anyway_with_a_warning() {
        let state = tikv_upgrading();
        let gate = GateState {
            evicting: Some(evicting_tikv_2()),
            ..started()
        };
        let settings = Settings {
            evict_leader_timeout_seconds: 60,
            ..Settings::default()
        };
        let early = with_gate(state.clone(), &gate).at(59_999);
        let plan = reconcile(&FakeCluster::default(), &pd(), &settings, &early).unwrap();
        assert_eq!(partition_of(&plan), None);
        let late = with_gate(state, &gate).at(60_000);
        let plan = reconcile(&FakeCluster::default(), &pd(), &settings, &late).unwrap();
        assert_eq!(partition_of(&plan), Some(2));
        assert!(plan.actions.iter().any(|a| matches!(a, Action::EmitEvent((EventType::Warning, r, m)) if r == "EvictLeaderTimeout" && m.contains("300 leaders"))), "{plan:?}");
    }

    #[test]
    fn the_pd_leader_is_moved_to_a_healthy_upgraded_member_before_its_restart() {
        let mut state = workload_state(
            statefulset("basic-pd", 3)
                .component("basic", "pd")
                .partition(1),
        )
        .with_revision(2, "r2")
        .with_revision(1, "r2");
        state.workload = state.workload.updating_to("r2");
        let state = with_gate(state, &started());
        let plan = run(&state, &pd());
        let c = steward_sdk::pd::cluster(NS, "basic");
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdTransferLeader((c, "basic-pd-2".into()))]
        );
        let moved = pd().with_leader("basic-pd-2");
        assert_eq!(partition_of(&run(&state, &moved)), Some(0));
    }

    #[test]
    fn tikv_waits_for_pd_and_an_unhealthy_cluster_blocks() {
        let state = with_gate(tikv_upgrading(), &started());
        let pd_set = statefulset("basic-pd", 3)
            .component("basic", "pd")
            .updating_to("p2");
        let cluster = FakeCluster::default().with_workload(pd_set);
        let plan = reconcile(&cluster, &pd(), &Settings::default(), &state).unwrap();
        assert!(
            gate_of(&plan)
                .unwrap()
                .blocked
                .unwrap()
                .contains("pd (basic-pd) is upgrading")
        );
        assert!(
            !plan
                .changes()
                .any(|a| matches!(a, Action::SetPartition(_) | Action::PdEvictLeaderBegin(_)))
        );

        let mut sick = pd();
        sick.members[1].healthy = false;
        let plan = run(&state, &sick);
        assert!(
            gate_of(&plan)
                .unwrap()
                .blocked
                .unwrap()
                .contains("basic-pd-1 is unhealthy")
        );
        // The same reason again: no second Event.
        let again = with_gate(state, &gate_of(&plan).unwrap());
        assert!(
            run(&again, &sick)
                .actions
                .iter()
                .all(|a| matches!(a, Action::RequeueAfter(_)))
        );
    }

    #[test]
    fn after_the_restart_the_eviction_ends_and_leaders_must_return() {
        let mut state = tikv_state().with_revision(2, "r2");
        state.workload = state.workload.updating_to("r2").partition(2);
        let gate = GateState {
            evicting: Some(evicting_tikv_2()),
            ..started()
        };
        let state = with_gate(state, &gate).at(5_000);
        let mut empty = pd();
        empty.stores[2].leader_count = 0;
        let plan = run(&state, &empty);
        let c = steward_sdk::pd::cluster(NS, "basic");
        assert!(plan.actions.contains(&Action::PdEvictLeaderEnd((c, 5))));
        let gate = gate_of(&plan).unwrap();
        assert_eq!(gate.returning.as_ref().unwrap().since_ms, 5_000);

        let state = with_gate(tikv_state().with_revision(2, "r2"), &gate);
        let mut state = state.at(6_000);
        state.workload = state.workload.updating_to("r2").partition(2);
        empty.stores[2].leader_count = 199;
        assert_eq!(run(&state, &empty).changes().count(), 0, "below 2/3 of 300");
        empty.stores[2].leader_count = 200;
        let plan = run(&state, &empty);
        assert_eq!(gate_of(&plan).unwrap().returning, None);
    }

    /// basic's PD as an Advanced StatefulSet of 3 replicas with delete
    /// slot 1 (members 0, 2 and 3), held at partition 4, upgrading to `r2`.
    fn advanced_pd_upgrading() -> WorkloadState {
        let mut state = workload_state(
            statefulset("basic-pd", 3)
                .component("basic", "pd")
                .advanced(&[1])
                .partition(4)
                .annotation(tidb::PROTECTED_PARTITION_ANNOTATION, "4"),
        );
        state.workload = state.workload.updating_to("r2");
        with_gate(state, &started())
    }

    fn advanced_pd_members() -> FakePd {
        FakePd::default().with_members_of("basic-pd", &[0, 2, 3], 1000)
    }

    #[test]
    fn an_advanced_statefulset_is_held_past_its_highest_desired_ordinal() {
        let mut idle = workload_state(
            statefulset("basic-pd", 3)
                .component("basic", "pd")
                .advanced(&[1]),
        );
        let plan = run(&idle, &advanced_pd_members());
        // Partition 3 would restart basic-pd-3 on a template change.
        assert_eq!(partition_of(&plan), Some(4), "{plan:?}");
        assert_eq!(protection_of(&plan), Some(Some("4".into())));
        idle.workload = idle
            .workload
            .partition(4)
            .annotation(tidb::PROTECTED_PARTITION_ANNOTATION, "4");
        assert_eq!(run(&idle, &advanced_pd_members()).changes().count(), 0);
    }

    #[test]
    fn an_advanced_statefulset_steps_through_its_desired_ordinals_only() {
        let pd = advanced_pd_members();
        let state = advanced_pd_upgrading();
        let plan = run(&state, &pd);
        assert_eq!(partition_of(&plan), Some(3), "{plan:?}");
        assert_eq!(protection_of(&plan), Some(Some("3".into())));

        let mut state = state.with_revision(3, "r2");
        state.workload = state.workload.partition(3);
        assert_eq!(partition_of(&run(&state, &pd)), Some(2));

        // basic-pd-0 leads: leadership goes to the highest upgraded desired
        // member, basic-pd-3, not to the deleted slot's basic-pd-1.
        let mut state = state.with_revision(2, "r2");
        state.workload = state.workload.partition(2);
        let plan = run(&state, &pd);
        let c = steward_sdk::pd::cluster(NS, "basic");
        assert_eq!(
            plan.changes().cloned().collect::<Vec<_>>(),
            [Action::PdTransferLeader((c, "basic-pd-3".into()))]
        );
        // Moved: the partition skips slot 1.
        assert_eq!(
            partition_of(&run(&state, &pd.with_leader("basic-pd-3"))),
            Some(0)
        );
    }

    #[test]
    fn a_pod_in_a_delete_slot_blocks_the_upgrade_as_scaling() {
        let mut state = advanced_pd_upgrading();
        let mut leftover = state.replicas[0].clone();
        leftover.ordinal = 1;
        leftover.pod.name = "basic-pd-1".into();
        state.replicas.insert(1, leftover);
        let plan = run(&state, &advanced_pd_members());
        assert_eq!(partition_of(&plan), None, "{plan:?}");
        let blocked = gate_of(&plan).unwrap().blocked.unwrap();
        assert!(blocked.contains("the StatefulSet is scaling"), "{blocked}");
    }

    #[test]
    fn pd_unreachable_fails_the_reconcile() {
        let state = with_gate(tikv_upgrading(), &started());
        let e = reconcile(
            &FakeCluster::default(),
            &pd().unreachable(),
            &Settings::default(),
            &state,
        )
        .unwrap_err();
        assert!(e.contains("unreachable"), "{e}");
    }
}
