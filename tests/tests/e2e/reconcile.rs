//! The reconcile hooks end to end on real Kubernetes control planes, each
//! release the harness runs (`steward_tests::control_plane`): Steward, as
//! the ServiceAccount of `deploy/`, reconciles the seed's `basic` TiDB
//! cluster ([`crate::tidb`]: TiKV opted in by the annotation alone, PD by
//! the label); the real StatefulSet controller carries out what it decides;
//! the kubelet and TiKV's heartbeats are played by the doubles and PD by
//! the PD double.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use steward_tests::e2e::{
    Cluster, DEPLOY_NAMESPACE, SCHEDULER_NAME, StewardProcess, events_about, eventually, scenario,
};
use steward_tests::example_snapshot;
use steward_tests::pd_double::PdDouble;
use steward_tests::tls::{HttpsClient, TestCa};
use tokio::task::JoinHandle;

use crate::tidb::{
    CLUSTER, KINDS, NAMESPACE, NEW_TIKV_IMAGE, Reconcile, TIKV, Tidb, partition, pod_ready,
    reconcile_policy, revision, run_tidb, tidb_cluster, upgraded,
};

/// upgrade-gate as these scenarios run it: leaders get long enough to
/// leave, reconciles come often.
pub const GATE: Reconcile<'static> = Reconcile {
    policy: "upgrade-gate",
    module: "upgrade_gate",
    settings: "{evictLeaderTimeoutSeconds: 600, leaderReturnTimeoutSeconds: 120, \
               leaderReturnMinimum: 1, pollMs: 500}",
};

/// Aborts background watches when dropped.
pub struct Watches(pub Vec<JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Calls `seen` with every version of the StatefulSet `name` a watch
/// delivers.
pub fn watch_statefulset(
    client: &Client,
    name: &str,
    seen: impl FnMut(&StatefulSet) + Send + 'static,
) -> JoinHandle<()> {
    watch_named(Api::namespaced(client.clone(), NAMESPACE), name, seen)
}

/// Calls `seen` with every version of object `name` of `api` a watch
/// delivers.
pub fn watch_named<K>(
    api: Api<K>,
    name: &str,
    mut seen: impl FnMut(&K) + Send + 'static,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if let Ok(Event::Apply(set) | Event::InitApply(set)) = event {
                seen(&set);
            }
        }
    })
}

/// A partition value the controller set, with what PD said of the store
/// about to restart (the pod of that ordinal) when the watch saw it.
#[derive(Debug, Clone, PartialEq)]
struct PartitionStep {
    partition: i32,
    leaders: Option<u64>,
    evicting: bool,
}

/// A TiKV pod the StatefulSet controller deleted, with its store's leaders
/// when the watch saw the deletion.
#[derive(Debug, Clone, PartialEq)]
struct Restart {
    pod: String,
    revision: String,
    leaders: Option<u64>,
}

/// What the upgrade scenario's watches saw.
#[derive(Debug, Default)]
struct Seen {
    partitions: Vec<PartitionStep>,
    restarts: Vec<Restart>,
    /// Moments two or more TiKV pods were unavailable at once.
    violations: Vec<String>,
}

/// The leaders of TiKV pod `pod`'s store now, and whether an evict-leader
/// scheduler runs for it.
pub fn leaders_of(pd: &PdDouble, pod: &str) -> (Option<u64>, bool) {
    let mut state = pd.state();
    match state.store_of_pod(pod) {
        Some(id) => (Some(state.leaders(id)), state.evicting.contains(&id)),
        None => (None, false),
    }
}

/// Records the TiKV StatefulSet's partition values and its pods' deletions
/// and availability, each with the PD double's state at that moment.
fn watch_upgrade(client: &Client, pd: &Arc<PdDouble>, seen: &Arc<Mutex<Seen>>) -> Watches {
    let partitions = {
        let (pd, seen) = (pd.clone(), seen.clone());
        watch_statefulset(client, TIKV, move |set| {
            let Some(p) = partition(set) else { return };
            let mut seen = seen.lock();
            if seen.partitions.last().map(|s| s.partition) == Some(p) {
                return;
            }
            let (leaders, evicting) = leaders_of(&pd, &format!("{TIKV}-{p}"));
            seen.partitions.push(PartitionStep {
                partition: p,
                leaders,
                evicting,
            });
        })
    };
    let pods = {
        let (pd, seen) = (pd.clone(), seen.clone());
        let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let config = watcher::Config::default().labels("app.kubernetes.io/component=tikv");
        tokio::spawn(async move {
            let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
            let mut deleted: BTreeSet<String> = BTreeSet::new();
            let mut events = watcher::watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                let gone = match event {
                    Ok(Event::Init) => {
                        pods.clear();
                        continue;
                    }
                    Ok(Event::InitApply(pod)) => {
                        pods.insert(pod.name_any(), pod);
                        continue;
                    }
                    Ok(Event::InitDone) | Err(_) => None,
                    Ok(Event::Apply(pod)) => {
                        let deleting = pod.metadata.deletion_timestamp.is_some();
                        pods.insert(pod.name_any(), pod.clone());
                        deleting.then_some(pod)
                    }
                    Ok(Event::Delete(pod)) => {
                        pods.remove(&pod.name_any());
                        Some(pod)
                    }
                };
                let mut seen = seen.lock();
                if let Some(pod) = gone
                    && deleted.insert(pod.uid().unwrap_or_default())
                {
                    let (leaders, _) = leaders_of(&pd, &pod.name_any());
                    seen.restarts.push(Restart {
                        pod: pod.name_any(),
                        revision: revision(&pod),
                        leaders,
                    });
                }
                let unavailable: Vec<String> = (0..3)
                    .map(|o| format!("{TIKV}-{o}"))
                    .filter(|name| !pods.get(name).is_some_and(pod_ready))
                    .collect();
                if unavailable.len() > 1 {
                    seen.violations
                        .push(format!("unavailable at once: {unavailable:?}"));
                }
            }
        })
    };
    Watches(vec![partitions, pods])
}

/// Gives the TiKV StatefulSet the new image and waits until the upgrade is
/// over; `midway` runs once the first lowered partition is seen. Returns
/// what the watches saw.
async fn upgrade_tikv<F>(tidb: &Tidb, midway: impl FnOnce() -> F) -> Result<Seen>
where
    F: Future<Output = Result<()>>,
{
    let client = tidb.client.clone();
    {
        // Leaders take 2 s to drain (10 at 5/s): a partition lowered
        // before they left would be seen with leaders on the store. A
        // restarting store is Disconnected after 1 s without heartbeats.
        let mut pd = tidb.pd.state();
        pd.drain_per_second = 5.0;
        pd.disconnect_after = Duration::from_secs(1);
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _watches = watch_upgrade(&client, &tidb.pd, &seen);
    let started = Instant::now();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    sets.patch(
        TIKV,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "tikv", "image": NEW_TIKV_IMAGE},
        ]}}}})),
    )
    .await?;
    eventually(
        Duration::from_secs(120),
        "upgrade-gate to lower the TiKV partition",
        || async {
            Ok(seen
                .lock()
                .partitions
                .iter()
                .any(|s| s.partition < 3)
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("the watches saw {:?}", seen.lock()))?;
    midway().await?;
    eventually(
        Duration::from_secs(300),
        "the TiKV pods to run the new image",
        || upgraded(&client),
    )
    .await
    .with_context(|| format!("the watches saw {:?}", seen.lock()))?;
    eprintln!("upgrade: three TiKV pods rolled in {:?}", started.elapsed());
    let seen = std::mem::take(&mut *seen.lock());
    eprintln!(
        "upgrade: partitions {:?}; restarts {:?}",
        seen.partitions, seen.restarts
    );
    Ok(seen)
}

/// The upgrade went as upgrade-gate promises: the partition lowered
/// 3→2→1→0 one step at a time, each only once PD had moved every leader
/// off the store whose pod restarts next; the pods recreated one by one,
/// never two unavailable at once; the partition held at 3 again, one
/// eviction per store and none left in PD.
async fn check_upgrade(tidb: &Tidb, seen: &Seen) -> Result<()> {
    let partitions: Vec<i32> = seen.partitions.iter().map(|s| s.partition).collect();
    ensure!(
        partitions == [3, 2, 1, 0, 3],
        "the partition went {partitions:?}, not 3, 2, 1, 0 and back to 3"
    );
    for step in seen.partitions.iter().filter(|s| s.partition < 3) {
        ensure!(
            step.leaders == Some(0) && step.evicting,
            "partition {} was set while the store of {TIKV}-{} held {:?} leaders \
             (eviction running: {})",
            step.partition,
            step.partition,
            step.leaders,
            step.evicting
        );
    }
    let restarted: Vec<&str> = seen.restarts.iter().map(|r| r.pod.as_str()).collect();
    ensure!(
        restarted == ["basic-tikv-2", "basic-tikv-1", "basic-tikv-0"],
        "the StatefulSet controller deleted {restarted:?}"
    );
    let old = &seen.restarts[0].revision;
    for r in &seen.restarts {
        ensure!(
            r.leaders == Some(0) && &r.revision == old,
            "{r:?}: deleted at the old revision {old} with no leaders"
        );
    }
    ensure!(
        seen.violations.is_empty(),
        "two TiKV pods were unavailable at once: {:?}",
        seen.violations
    );
    {
        let pd = tidb.pd.state();
        ensure!(
            pd.evicting.is_empty(),
            "evict-leader schedulers left in PD for stores {:?}",
            pd.evicting
        );
        let evictions = pd.count("POST /pd/api/v1/schedulers");
        ensure!(
            evictions == 3,
            "one eviction per store (3 stores), PD saw {evictions}"
        );
        ensure!(
            pd.stores.iter().all(|s| s.state == "Up"),
            "every store is Up again: {:?}",
            pd.stores
        );
    }
    let events = events_about(&tidb.client, NAMESPACE, TIKV).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("UpgradeComplete")),
        "an UpgradeComplete Event on {TIKV}"
    );
    let sets: Api<StatefulSet> = Api::namespaced(tidb.client.clone(), NAMESPACE);
    ensure!(
        partition(&sets.get("basic-pd").await?) == Some(3),
        "basic-pd, unchanged, stays held at partition 3"
    );
    Ok(())
}

/// The seed's TiKV StatefulSet gets a new image: upgrade-gate lowers the
/// partition 3→2→1→0 one step at a time, each only once PD has moved every
/// leader off the store whose pod restarts next; the real StatefulSet
/// controller recreates the pods one by one; the gate then holds the
/// partition at 3 again and no evict-leader scheduler is left in PD.
#[test]
fn an_image_change_restarts_tikv_pods_one_by_one_after_their_leaders_left() {
    scenario(
        "an_image_change_restarts_tikv_pods_one_by_one_after_their_leaders_left",
        |version| async move {
            let mut tidb = tidb_cluster(version, Some(GATE), false).await?;
            let seen = upgrade_tikv(&tidb, || async { Ok(()) }).await?;
            check_upgrade(&tidb, &seen).await?;
            tidb.cluster.control_plane.check().await
        },
    );
}

/// The holder of Steward's reconcile Lease.
async fn lease_holder(client: &Client) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
    Ok(leases
        .get_opt("steward-reconcile")
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

/// Two replicas, as the bundle deploys them: two `steward serve`
/// processes both serve the extender and the admission webhook, exactly
/// one holds the Lease and reconciles. The leader is killed (SIGKILL)
/// midway through a TiKV upgrade: the other takes the Lease once it
/// expires, resumes from the state upgrade-gate keeps in the cluster, and
/// finishes the upgrade without taking any step twice.
#[test]
fn the_second_replica_takes_over_an_upgrade_when_the_leader_dies() {
    scenario(
        "the_second_replica_takes_over_an_upgrade_when_the_leader_dies",
        |version| async move {
            const LEASE_SECONDS: u64 = 4;
            let pd = Arc::new(PdDouble::start(NAMESPACE, CLUSTER).await);
            // kube-scheduler's extender here passes every node; the
            // replicas under test reconcile.
            let pass = "{id: pass, hook: scheduler, module: '{misbehave}', \
                        settings: {behaviour: pass}}";
            let cluster =
                Cluster::start_with(version, &example_snapshot(), KINDS, &[pass], "").await?;
            let dir = cluster.control_plane.dir.clone();
            let kubeconfig = steward_tests::e2e::steward_kubeconfig(&cluster.control_plane).await?;
            let (cert, key) = (dir.join("replicas-tls.crt"), dir.join("replicas-tls.key"));
            let ca = TestCa::new();
            ca.issue("steward-webhook").write(&cert, &key);
            let gate = reconcile_policy(&GATE, &pd.url());
            let mutator = format!(
                "{{id: local-storage-admission, hook: admission, \
                 module: '{{local_storage_admission}}', mutate: true, \
                 settings: {{schedulerName: {SCHEDULER_NAME}}}}}"
            );
            let mut replicas = BTreeMap::new();
            for name in ["replica-a", "replica-b"] {
                let sections = format!(
                    "admission: {{listen: '$webhook', certFile: {}, keyFile: {}}}\n\
                     reconcile: {{leaseNamespace: {DEPLOY_NAMESPACE}, identity: {name}, \
                     leaseDurationSeconds: {LEASE_SECONDS}, renewDeadlineSeconds: 3, \
                     retryPeriodSeconds: 1, backoffBaseMs: 500, backoffMaxMs: 5000}}",
                    cert.display(),
                    key.display()
                );
                let policies = [pass, gate.as_str(), mutator.as_str()];
                let replica =
                    StewardProcess::start(name, &dir, &kubeconfig, &policies, &sections).await?;
                replicas.insert(name.to_string(), replica);
            }
            // Both serve the extender and the webhook.
            for (name, replica) in &replicas {
                let (status, answer) = steward_tests::filter_fixture(replica.addr).await;
                ensure!(
                    status == 200,
                    "{name}'s extender answers a filter: {answer}"
                );
                let webhook = replica.webhook.context("a replica without its webhook")?;
                let mut https = HttpsClient::connect(webhook, ca.client_config()).await?;
                let review =
                    serde_json::to_vec(&steward_tests::review_fixture("pod-create-local-unbound"))?;
                let (status, answer) = https
                    .post("/admission/mutate/local-storage-admission", review)
                    .await?;
                ensure!(status == 200, "{name}'s webhook answers a review: {answer}");
            }
            let tidb = run_tidb(cluster, pd, Some("upgrade-gate"), None).await?;
            let leader = eventually(Duration::from_secs(30), "a Lease holder", || {
                lease_holder(&tidb.client)
            })
            .await?;
            ensure!(
                replicas.contains_key(&leader),
                "one of the two replicas holds the Lease, not {leader}"
            );
            let killed_at = std::cell::Cell::new(None);
            let seen = upgrade_tikv(&tidb, || async {
                replicas
                    .remove(&leader)
                    .context("the leader's process")?
                    .kill();
                killed_at.set(Some(Instant::now()));
                eprintln!("two replicas: killed the leader {leader} midway");
                Ok(())
            })
            .await?;
            let survivor = replicas.keys().next().context("the other replica")?.clone();
            ensure!(
                lease_holder(&tidb.client).await?.as_deref() == Some(survivor.as_str()),
                "the surviving replica {survivor} holds the Lease"
            );
            check_upgrade(&tidb, &seen).await?;
            let killed_at = killed_at.get().context("the leader was killed")?;
            eprintln!(
                "two replicas: {survivor} finished the upgrade {:?} after the leader died",
                killed_at.elapsed()
            );
            let mut tidb = tidb;
            tidb.cluster.control_plane.check().await
        },
    );
}

/// Marks node `name` NotReady, as the node lifecycle controller does when
/// its kubelet stops posting status.
async fn mark_node_not_ready(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"},
            ]}})),
        )
        .await
        .with_context(|| format!("setting the Ready condition of node {name}"))?;
    Ok(())
}

fn unix_ms(at: Instant) -> i64 {
    let wall = SystemTime::now() - at.elapsed();
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A TiKV pod's node goes NotReady and its store stops heartbeating: PD
/// calls the store Disconnected, then Down; once Kubernetes and PD have
/// agreed for the failover period, the failover policy records the failure
/// on the StatefulSet and adds exactly one replica, which the real
/// StatefulSet controller creates and the scheduler places.
#[test]
fn a_down_store_on_a_not_ready_node_gets_one_extra_replica_after_the_period() {
    scenario(
        "a_down_store_on_a_not_ready_node_gets_one_extra_replica_after_the_period",
        |version| async move {
            const PERIOD: Duration = Duration::from_secs(5);
            let settings = format!(
                "{{failoverPeriodSeconds: {}, maxFailoverCount: 3, pollMs: 500}}",
                PERIOD.as_secs()
            );
            let reconcile = Reconcile {
                policy: "failover",
                module: "failover",
                settings: &settings,
            };
            let mut tidb = tidb_cluster(version, Some(reconcile), false).await?;
            let client = tidb.client.clone();
            let down_after = Duration::from_secs(3);
            {
                let mut pd = tidb.pd.state();
                pd.disconnect_after = Duration::from_secs(1);
                pd.down_after = down_after;
            }
            let replicas = Arc::new(Mutex::new(Vec::<i32>::new()));
            let _watches = Watches(vec![watch_statefulset(&client, TIKV, {
                let replicas = replicas.clone();
                move |set| {
                    let r = set.spec.replicas.unwrap_or(1);
                    let mut seen = replicas.lock();
                    if seen.last() != Some(&r) {
                        seen.push(r);
                    }
                }
            })]);

            let failing = format!("{TIKV}-1");
            let store = tidb
                .pd
                .state()
                .store_of_pod(&failing)
                .context("the PD double has a store for basic-tikv-1")?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            let node = pods
                .get(&failing)
                .await?
                .spec
                .and_then(|s| s.node_name)
                .context("basic-tikv-1 runs on a node")?;
            mark_node_not_ready(&client, &node).await?;
            eventually(
                Duration::from_secs(30),
                "PD to call the store of basic-tikv-1 Down",
                || async { Ok((tidb.pd.state().store(store).state == "Down").then_some(())) },
            )
            .await?;
            let silent_since = tidb.pd.state().last_heartbeat(store);
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
            eventually(
                Duration::from_secs(60),
                "one extra TiKV replica, ready",
                || async {
                    let set = sets.get(TIKV).await?;
                    let four = set.spec.replicas == Some(4);
                    let ready = set.status.and_then(|s| s.ready_replicas) == Some(4);
                    Ok((four && ready).then_some(()))
                },
            )
            .await?;
            // Longer than another period: the failure is counted once.
            tokio::time::sleep(PERIOD + Duration::from_secs(2)).await;

            let history = replicas.lock().clone();
            ensure!(
                history == [3, 4],
                "TiKV replicas went {history:?}, not 3 then 4"
            );
            let set = sets.get(TIKV).await?;
            let failures: serde_json::Value = serde_json::from_str(
                set.annotations()
                    .get("steward.io/failures")
                    .context("the failure store is persisted on the StatefulSet")?,
            )?;
            let entries = failures.as_array().context("a list of failures")?;
            ensure!(
                entries.len() == 1
                    && entries[0]["pod"] == failing.as_str()
                    && entries[0]["storeId"] == store,
                "the failure store names basic-tikv-1 and store {store}: {failures}"
            );
            let down_ms = unix_ms(silent_since) + down_after.as_millis() as i64;
            let decided_ms = entries[0]["createdAtMs"].as_i64().unwrap_or_default();
            ensure!(
                decided_ms >= down_ms + PERIOD.as_millis() as i64,
                "the failure was recorded {} ms after PD called the store Down, before the \
             {PERIOD:?} period",
                decided_ms - down_ms
            );
            let events = events_about(&client, NAMESPACE, TIKV).await?;
            ensure!(
                events
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("Unhealthy")
                        && e.message.as_deref().is_some_and(|m| m.contains(&failing))),
                "an Unhealthy Event names {failing}"
            );
            let extra = pods.get(&format!("{TIKV}-3")).await?;
            let extra_node = extra.spec.and_then(|s| s.node_name);
            ensure!(
                extra_node.as_deref().is_some_and(|n| n != node),
                "the extra replica runs elsewhere than the NotReady node {node}, not on {extra_node:?}"
            );
            tidb.cluster.control_plane.check().await
        },
    );
}
