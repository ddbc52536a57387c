//! The reconcile controller core against an in-memory cluster (a model of
//! the StatefulSet controller, `steward_tests::statefulsets`) and the PD
//! double over HTTP, with a fast clock: rolling upgrades through the
//! upgrade-gate guest, a host restart in the middle, PD outages, and
//! failover and scale-in through the failover guest.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use steward::actions::{ActionContext, Executor};
use steward::cluster::Backend;
use steward::config::ReconcileConfig;
use steward::metrics::Metrics;
use steward::policy::PolicyStore;
use steward::reconcile::{Clock, Effects, Reconciler};
use steward::wit::{Action, EventType};
use steward_tests::pd_double::{Fault, PdDouble};
use steward_tests::statefulsets::{CLUSTER, Cluster, NAMESPACE, Violation};

struct FastClock(AtomicI64);

impl Clock for FastClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One performed action, with what PD said at that moment.
#[derive(Debug, Clone)]
struct Performed {
    statefulset: String,
    action: Action,
    /// For a TiKV partition step: leaders of the store whose pod restarts.
    leaders: Option<u64>,
}

/// Performs through the snapshot executor (the cache is the cluster) and
/// records every action.
struct Recorder {
    executor: Executor,
    pd: Arc<PdDouble>,
    log: Arc<Mutex<Vec<Performed>>>,
}

impl Effects for Recorder {
    async fn perform(&self, ctx: &ActionContext<'_>, action: &Action) -> Result<(), String> {
        let statefulset = ctx
            .workload
            .map_or_else(String::new, |w| w.name.to_string());
        let leaders = match action {
            Action::SetPartition(p) if statefulset == format!("{CLUSTER}-tikv") => {
                let pod = format!("{statefulset}-{p}.");
                let mut state = self.pd.state();
                let id = state
                    .stores
                    .iter()
                    .find(|s| s.address.starts_with(&pod))
                    .map(|s| s.id);
                id.map(|id| state.leaders(id))
            }
            _ => None,
        };
        self.log.lock().push(Performed {
            statefulset,
            action: action.clone(),
            leaders,
        });
        self.executor.perform(ctx, action).await
    }
}

struct Harness {
    cluster: Cluster,
    pd: Arc<PdDouble>,
    clock: Arc<FastClock>,
    log: Arc<Mutex<Vec<Performed>>>,
    policies_yaml: String,
}

const GATE_SETTINGS: &str = "{evictLeaderTimeoutSeconds: 60, leaderReturnTimeoutSeconds: 30, leaderReturnMinimum: 1, pollMs: 1000}";

impl Harness {
    async fn start(policies: &[(&str, &str)], failover_settings: &str) -> Harness {
        let pd = Arc::new(PdDouble::start(NAMESPACE, CLUSTER).await);
        let policies_yaml = format!(
            "- id: upgrade-gate\n  hook: reconcile\n  module: {{upgrade_gate}}\n  deadlineMs: 5000\n  pd: {{url: '{url}', timeoutMs: 500}}\n  settings: {GATE_SETTINGS}\n\
             - id: failover\n  hook: reconcile\n  module: {{failover}}\n  deadlineMs: 5000\n  pd: {{url: '{url}', timeoutMs: 500}}\n  settings: {failover_settings}\n",
            url = pd.url()
        );
        Harness {
            cluster: Cluster::tidb(3, policies),
            pd,
            clock: Arc::new(FastClock(AtomicI64::new(1_700_000_000_000))),
            log: Arc::default(),
            policies_yaml,
        }
    }

    /// A new host: policies loaded afresh, no memory but the cluster's.
    fn host(&self) -> Reconciler<Recorder> {
        let config = steward_tests::config(&self.policies_yaml);
        let set =
            steward_tests::load_policies(steward_tests::runtime(), &config).expect("policies load");
        Reconciler::new(
            Arc::new(PolicyStore::new(set)),
            self.cluster.cache.clone(),
            Recorder {
                executor: Executor::new(&Backend::Snapshot, self.cluster.cache.clone()),
                pd: self.pd.clone(),
                log: self.log.clone(),
            },
            self.clock.clone(),
            Arc::new(Metrics::default()),
            &ReconcileConfig::default(),
        )
    }

    /// Ticks the cluster and reconciles `statefulsets` once per simulated
    /// second until `done` or `max` seconds.
    async fn run(
        &mut self,
        host: &Reconciler<Recorder>,
        statefulsets: &[&str],
        max: u32,
        step_ms: i64,
        done: impl Fn(&Harness) -> bool,
    ) -> bool {
        for _ in 0..max {
            self.cluster.tick(&self.pd);
            for name in statefulsets {
                let report = host.reconcile("StatefulSet", NAMESPACE, name).await;
                assert_eq!(report.error, None, "reconcile of {name}");
            }
            self.clock.0.fetch_add(step_ms, Ordering::SeqCst);
            if done(self) {
                return true;
            }
        }
        false
    }

    /// [`Harness::run`] over both StatefulSets, a second a step.
    async fn upgrade(
        &mut self,
        host: &Reconciler<Recorder>,
        max: u32,
        done: impl Fn(&Harness) -> bool,
    ) -> bool {
        self.run(host, &["basic-pd", "basic-tikv"], max, 1000, done)
            .await
    }

    fn partitions(&self, statefulset: &str) -> Vec<u32> {
        self.log
            .lock()
            .iter()
            .filter(|p| p.statefulset == statefulset)
            .filter_map(|p| match p.action {
                Action::SetPartition(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Every `spec.replicas` set, in order.
    fn replica_changes(&self) -> Vec<u32> {
        self.log
            .lock()
            .iter()
            .filter_map(|p| match p.action {
                Action::SetReplicas(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn events(&self, reason: &str) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .filter_map(|p| match &p.action {
                Action::EmitEvent((_, r, m)) if r == reason => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn upgraded(&self) -> bool {
        ["basic-pd", "basic-tikv"].iter().all(|n| {
            let w = self.cluster.workload(n);
            w.current_revision == w.update_revision
                && w.update_revision.ends_with("-r2")
                && w.partition == Some(w.replicas)
                && !w
                    .annotations
                    .iter()
                    .any(|(k, _)| k == "steward.io/upgrade-gate")
        })
    }

    /// Every guarantee of a graceful rolling upgrade, checked on the record.
    fn assert_graceful(&self) {
        assert_eq!(self.cluster.violations, Vec::<Violation>::new());
        for sts in ["basic-pd", "basic-tikv"] {
            assert_eq!(
                self.partitions(sts),
                [3, 2, 1, 0, 3],
                "{sts}: held at replicas, lowered 3..0 one by one, held again after"
            );
        }
        let log = self.log.lock().clone();
        let timeouts = self.events("EvictLeaderTimeout");
        for p in log.iter().filter(|p| p.statefulset == "basic-tikv") {
            if let (Action::SetPartition(n), Some(leaders)) = (&p.action, p.leaders)
                && *n < 3
            {
                let pod = format!("basic-tikv-{n}");
                assert!(
                    leaders == 0 || timeouts.iter().any(|m| m.contains(&format!("pod {pod} "))),
                    "{pod} restarted holding {leaders} leaders without a timeout Event"
                );
            }
        }
        let position = |sts: &str, partition: u32| {
            log.iter()
                .position(|p| {
                    p.statefulset == sts
                        && matches!(p.action, Action::SetPartition(n) if n == partition)
                })
                .unwrap()
        };
        assert!(
            position("basic-pd", 0) < position("basic-tikv", 2),
            "PD upgrades before TiKV"
        );
        assert!(
            self.pd.state().evicting.is_empty(),
            "evict-leader schedulers left behind"
        );
    }
}

async fn upgrading_cluster() -> (Harness, Reconciler<Recorder>) {
    let mut h = Harness::start(&[("pd", "upgrade-gate"), ("tikv", "upgrade-gate")], "{}").await;
    let host = h.host();
    let held = h
        .upgrade(&host, 5, |h| {
            h.cluster.workload("basic-tikv").partition == Some(3)
                && h.cluster.workload("basic-pd").partition == Some(3)
        })
        .await;
    assert!(held, "idle StatefulSets are held at partition = replicas");
    h.cluster.change_template("basic-pd", "r2");
    h.cluster.change_template("basic-tikv", "r2");
    (h, host)
}

/// PD and TiKV under the failover guest: a 60s period, one failure at most.
async fn failover_cluster() -> (Harness, Reconciler<Recorder>) {
    let h = Harness::start(
        &[("pd", "failover"), ("tikv", "failover")],
        "{failoverPeriodSeconds: 60, maxFailoverCount: 1, pollMs: 1000}",
    )
    .await;
    let host = h.host();
    (h, host)
}

#[tokio::test]
async fn a_rolling_upgrade_restarts_one_pod_at_a_time_with_leaders_moved_first() {
    let (mut h, host) = upgrading_cluster().await;
    let finished = h.upgrade(&host, 400, Harness::upgraded).await;
    assert!(
        finished,
        "upgrade did not finish; partitions pd {:?} tikv {:?}",
        h.partitions("basic-pd"),
        h.partitions("basic-tikv")
    );
    h.assert_graceful();
    let log = h.log.lock();
    let position = |wanted: &dyn Fn(&Performed) -> bool| log.iter().position(wanted);
    let transfer = position(
        &|p| matches!(&p.action, Action::EmitEvent((_, reason, _)) if reason == "PDLeaderTransfer"),
    );
    let leader_restart = position(&|p| {
        p.statefulset == format!("{CLUSTER}-pd") && matches!(p.action, Action::SetPartition(0))
    });
    assert!(
        matches!((transfer, leader_restart), (Some(t), Some(r)) if t < r),
        "the PD leader (pd-0) was moved away before its pod restarted: leader transfer at \
         {transfer:?}, pd-0's partition step at {leader_restart:?}"
    );
    drop(log);
    let begins = h
        .log
        .lock()
        .iter()
        .filter(|p| matches!(p.action, Action::PdEvictLeaderBegin(_)))
        .count();
    assert_eq!(begins, 3, "one eviction per TiKV store");
}

#[tokio::test]
async fn leaders_that_never_drain_restart_after_the_timeout_with_an_event() {
    let (mut h, host) = upgrading_cluster().await;
    h.pd.set_fault(Fault::LeadersStuck);
    let finished = h.upgrade(&host, 800, Harness::upgraded).await;
    assert!(finished, "tikv partitions {:?}", h.partitions("basic-tikv"));
    h.assert_graceful();
    assert_eq!(
        h.events("EvictLeaderTimeout").len(),
        3,
        "{:?}",
        h.events("EvictLeaderTimeout")
    );
}

#[tokio::test]
async fn a_new_host_resumes_a_half_done_upgrade_from_the_cluster_alone() {
    let (mut h, host) = upgrading_cluster().await;
    let midway = h
        .upgrade(&host, 400, |h| h.partitions("basic-tikv").contains(&1))
        .await;
    assert!(midway);
    drop(host);
    let host = h.host();
    let finished = h.upgrade(&host, 400, Harness::upgraded).await;
    assert!(finished, "tikv partitions {:?}", h.partitions("basic-tikv"));
    h.assert_graceful();
}

#[tokio::test]
async fn pd_unreachable_changes_nothing_records_an_event_and_backs_off() {
    let (mut h, host) = upgrading_cluster().await;
    let evicting = h
        .upgrade(&host, 400, |h| h.partitions("basic-tikv").contains(&2))
        .await;
    assert!(evicting);
    h.pd.set_fault(Fault::Unreachable);
    let before = h.cluster.workload("basic-tikv");
    let mut delays = Vec::new();
    for _ in 0..3 {
        h.cluster.tick(&h.pd);
        let report = host.reconcile("StatefulSet", NAMESPACE, "basic-tikv").await;
        let error = report.error.expect("the reconcile fails");
        assert!(error.contains("PD is unreachable"), "{error}");
        assert!(
            matches!(
                report.performed.as_slice(),
                [Action::EmitEvent((EventType::Warning, reason, message))] if reason == "ReconcileFailed" && message.contains("unreachable")
            ),
            "{:?}",
            report.performed
        );
        delays.push(report.requeue_after.unwrap());
    }
    assert_eq!(delays, [1, 2, 4].map(Duration::from_secs));
    let after = h.cluster.workload("basic-tikv");
    assert_eq!(
        (after.partition, after.replicas),
        (before.partition, before.replicas)
    );
    h.pd.set_fault(Fault::None);
    let finished = h.upgrade(&host, 400, Harness::upgraded).await;
    assert!(finished);
    h.assert_graceful();
}

#[tokio::test]
async fn a_pd_failure_adds_one_replica_after_the_period_and_recovers_by_itself() {
    let (mut h, host) = failover_cluster().await;
    h.cluster.fail_pod("basic-pd-1");
    h.pd.state().member("basic-pd-1").healthy = false;
    let started = h.clock.now_ms();
    let scaled = h
        .run(&host, &["basic-pd"], 30, 10_000, |h| {
            h.cluster.workload("basic-pd").replicas == 4
        })
        .await;
    assert!(scaled, "no failover");
    let waited = h.clock.now_ms() - started;
    assert!(
        waited >= 60_000,
        "failed after {waited}ms, before the 60s period"
    );
    assert!(
        !h.pd.state().members.iter().any(|m| m.id == 1001),
        "the failed member left PD"
    );
    let recovered = h
        .run(&host, &["basic-pd"], 60, 10_000, |h| {
            let w = h.cluster.workload("basic-pd");
            w.replicas == 3 && h.cluster.pods("basic-pd").len() == 3 && w.annotations.is_empty()
        })
        .await;
    assert!(
        recovered,
        "replicas {}",
        h.cluster.workload("basic-pd").replicas
    );
    assert_eq!(
        h.replica_changes(),
        [4, 3],
        "exactly one extra replica, then back"
    );
    let mut names: Vec<String> =
        h.pd.state()
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect();
    names.sort();
    assert_eq!(names, ["basic-pd-0", "basic-pd-1", "basic-pd-2"]);
    assert!(h.pd.state().members.iter().all(|m| m.healthy));
}

#[tokio::test]
async fn a_tikv_failure_is_capped_and_scaled_back_when_asked_once_its_store_is_tombstone() {
    let (mut h, host) = failover_cluster().await;
    for (pod, store) in [("basic-tikv-1", 4), ("basic-tikv-2", 5)] {
        h.cluster.fail_pod(pod);
        h.pd.state().store(store).state = "Down".into();
    }
    let scaled = h
        .run(&host, &["basic-tikv"], 30, 10_000, |h| {
            h.cluster.workload("basic-tikv").replicas == 4
        })
        .await;
    assert!(scaled);
    // Two stores down, cap 1: one extra replica and a FailoverLimit Event.
    h.run(&host, &["basic-tikv"], 20, 10_000, |_| false).await;
    assert_eq!(h.cluster.workload("basic-tikv").replicas, 4);
    assert_eq!(h.events("FailoverLimit").len(), 1);
    // The stores come back: TiKV keeps its extra replica...
    for (pod, store) in [("basic-tikv-1", 4), ("basic-tikv-2", 5)] {
        let mut p = h.cluster.pod(pod).unwrap();
        p.ready = true;
        h.cluster.cache.upsert_pod(p);
        h.pd.state().store(store).state = "Up".into();
    }
    h.pd.state()
        .stores
        .push(steward_tests::pd_double::DoubleStore {
            id: 6,
            address: format!("basic-tikv-3.basic-tikv-peer.{NAMESPACE}.svc:20160"),
            state: "Up".into(),
            leaders: 10.0,
            home_leaders: 10,
            regions: 30,
        });
    h.run(&host, &["basic-tikv"], 10, 10_000, |_| false).await;
    assert_eq!(
        h.cluster.workload("basic-tikv").replicas,
        4,
        "TiKV recovery waits to be asked"
    );
    // ...until asked: the highest ordinal's store goes offline in PD, and
    // the replica stays while its regions move (held here: nothing moves).
    h.pd.state().drain_per_second = 0.0;
    let mut w = h.cluster.workload("basic-tikv");
    w.annotations
        .push(("steward.io/recover-failover".into(), "true".into()));
    h.cluster.cache.upsert_workload(w);
    h.run(&host, &["basic-tikv"], 10, 10_000, |_| false).await;
    assert_eq!(h.pd.state().count("DELETE /pd/api/v1/store/6"), 1);
    assert_eq!(h.pd.state().store(6).state, "Offline");
    assert_eq!(
        h.cluster.workload("basic-tikv").replicas,
        4,
        "the replica stays until its store is Tombstone"
    );
    assert_eq!(h.events("TiKVScaleIn").len(), 1);
    // The regions move (at once): Tombstone, then the replica goes.
    h.pd.state().drain_per_second = 1e9;
    let back = h
        .run(&host, &["basic-tikv"], 10, 10_000, |h| {
            h.cluster.workload("basic-tikv").replicas == 3
        })
        .await;
    assert!(back);
    assert_eq!(h.pd.state().store(6).state, "Tombstone");
    let w = h.cluster.workload("basic-tikv");
    assert!(w.annotations.is_empty(), "{:?}", w.annotations);
    assert_eq!(
        h.replica_changes(),
        [4, 3],
        "one extra replica, back once Tombstone"
    );
    for (id, state) in [(1, "Up"), (4, "Up"), (5, "Up")] {
        assert_eq!(h.pd.state().store(id).state, state, "store {id}");
    }
}

/// Asks for a scale-in of `statefulset` to `replicas` (as `kubectl annotate`).
fn ask_scale_in(h: &Harness, statefulset: &str, replicas: u32) {
    let mut w = h.cluster.workload(statefulset);
    w.annotations
        .push(("steward.io/scale-in".into(), replicas.to_string()));
    h.cluster.cache.upsert_workload(w);
}

/// `statefulset` runs `replicas` pods and the scale-in request is gone.
fn scaled_in(h: &Harness, statefulset: &str, replicas: u32) -> bool {
    let w = h.cluster.workload(statefulset);
    w.replicas == replicas
        && h.cluster.pods(statefulset).len() == replicas as usize
        && !w
            .annotations
            .iter()
            .any(|(k, _)| k == "steward.io/scale-in")
}

#[tokio::test]
async fn a_scale_in_takes_each_member_out_of_pd_before_its_pod_across_a_host_restart() {
    let (mut h, host) = failover_cluster().await;
    // PD 3 -> 1, its leader among the members leaving.
    h.pd.state().leader = "basic-pd-2".into();
    ask_scale_in(&h, "basic-pd", 1);
    let done = h
        .run(&host, &["basic-pd"], 30, 1000, |h| {
            scaled_in(h, "basic-pd", 1)
        })
        .await;
    assert!(done, "replicas {}", h.cluster.workload("basic-pd").replicas);
    assert_eq!(h.cluster.violations, Vec::<Violation>::new());
    let members: Vec<String> =
        h.pd.state()
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect();
    assert_eq!(members, ["basic-pd-0"]);
    assert_eq!(h.pd.state().leader, "basic-pd-0");
    let order: Vec<String> = h
        .log
        .lock()
        .iter()
        .filter(|p| {
            matches!(
                p.action,
                Action::PdTransferLeader(_) | Action::PdDeleteMember(_) | Action::SetReplicas(_)
            )
        })
        .map(|p| steward::actions::describe(&p.action))
        .collect();
    assert_eq!(
        order,
        [
            "transfer the PD leader of tidb/basic to basic-pd-0",
            "delete PD member 1002 of tidb/basic",
            "set replicas to 2",
            "delete PD member 1001 of tidb/basic",
            "set replicas to 1",
        ],
        "each member leaves PD before its replica, highest first"
    );
    for claim in ["pd-basic-pd-1", "pd-basic-pd-2"] {
        assert!(
            h.cluster.query().get_claim(NAMESPACE, claim).is_none(),
            "{claim}"
        );
    }

    // TiKV 3 -> 2: the store goes offline and the replica waits while PD
    // moves its regions (held here).
    h.pd.state().drain_per_second = 0.0;
    ask_scale_in(&h, "basic-tikv", 2);
    h.run(&host, &["basic-tikv"], 5, 1000, |_| false).await;
    assert_eq!(h.pd.state().count("DELETE /pd/api/v1/store/5"), 1);
    assert_eq!(h.pd.state().store(5).state, "Offline");
    assert_eq!(h.cluster.workload("basic-tikv").replicas, 3);

    // A new host, with PD unreachable: nothing changes.
    let host = h.host();
    h.pd.set_fault(Fault::Unreachable);
    let before = h.cluster.workload("basic-tikv");
    let report = host.reconcile("StatefulSet", NAMESPACE, "basic-tikv").await;
    assert!(report.error.unwrap().contains("PD is unreachable"));
    assert!(
        report.performed.iter().all(
            |a| matches!(a, Action::EmitEvent((EventType::Warning, r, _)) if r == "ReconcileFailed")
        ),
        "{:?}",
        report.performed
    );
    let after = h.cluster.workload("basic-tikv");
    assert_eq!(
        (after.replicas, after.annotations),
        (before.replicas, before.annotations)
    );
    h.pd.set_fault(Fault::None);

    // The regions move: Tombstone, then the replica and its claim go.
    h.pd.state().drain_per_second = 1e9;
    let done = h
        .run(&host, &["basic-tikv"], 10, 1000, |h| {
            scaled_in(h, "basic-tikv", 2)
        })
        .await;
    assert!(done);
    assert_eq!(h.pd.state().store(5).state, "Tombstone");
    assert_eq!(h.pd.state().count("DELETE /pd/api/v1/store/5"), 1);
    assert!(
        h.cluster
            .query()
            .get_claim(NAMESPACE, "tikv-basic-tikv-2")
            .is_none()
    );
    assert_eq!(h.cluster.violations, Vec::<Violation>::new());
    assert_eq!(h.events("TiKVScaleIn").len(), 2, "offline, then removed");
}
