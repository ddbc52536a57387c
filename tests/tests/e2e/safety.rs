//! TiDB's safety rules as operators meet them, on real control planes of
//! each release: the real `kubectl drain` of that release waits while PD
//! moves a TiKV store's leaders away, and `kubectl patch` cannot take a
//! StatefulSet's partition below what upgrade-gate protects while the
//! gate's own steps, carried out by the real StatefulSet controller, pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use steward_sdk::tidb::PROTECTED_PARTITION_ANNOTATION;
use steward_tests::control_plane::ControlPlane;
use steward_tests::e2e::{eventually, scenario};
use steward_tests::pd_double::Fault;

use crate::reconcile::{GATE, Watches, leaders_of, watch_named};
use crate::tidb::{NAMESPACE, NEW_TIKV_IMAGE, TIKV, partition, tidb_cluster, upgraded};

/// Runs the control plane's own kubectl as its admin (a user, not Steward).
async fn kubectl(control_plane: &ControlPlane, args: &[&str]) -> Result<Output> {
    let kubeconfig: &Path = &control_plane.admin_kubeconfig;
    tokio::process::Command::new(&control_plane.binaries.kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", control_plane.binaries.kubectl.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl drain` of the node of a TiKV pod whose store holds leaders:
/// tidb-guard refuses the eviction with 429 and begins the leader eviction
/// in PD; the drain retries (every 5 s) while PD moves the leaders, and
/// completes once none are left; the pod went with an empty store. With
/// no kubelet, the kubelet double finishes the graceful deletion the
/// eviction starts (on both releases the API server only sets
/// `deletionTimestamp` on a scheduled pod).
#[test]
fn kubectl_drain_waits_while_pd_moves_a_tikv_stores_leaders_away() {
    scenario(
        "kubectl_drain_waits_while_pd_moves_a_tikv_stores_leaders_away",
        |version| async move {
            let mut tidb = tidb_cluster(version, None, true).await?;
            let client = tidb.client.clone();
            const POD: &str = "basic-tikv-1";
            let store = tidb
                .pd
                .state()
                .store_of_pod(POD)
                .context("the PD double has a store for basic-tikv-1")?;
            let leaders = tidb.pd.state().leaders(store);
            ensure!(leaders > 0, "store {store} starts with leaders");
            // 10 leaders at 1 a second: the drain has to retry.
            tidb.pd.state().drain_per_second = 1.0;
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            let node = pods
                .get(POD)
                .await?
                .spec
                .and_then(|s| s.node_name)
                .context("basic-tikv-1 runs on a node")?;

            // The leaders on the store (and whether an eviction ran) when
            // the pod's deletion began.
            type Leaders = (Option<u64>, bool);
            let gone_with: Arc<Mutex<Option<Leaders>>> = Arc::default();
            let watch = {
                let (pd, gone_with) = (tidb.pd.clone(), gone_with.clone());
                let config = watcher::Config::default().fields(&format!("metadata.name={POD}"));
                let uid = pods.get(POD).await?.uid();
                tokio::spawn(async move {
                    let mut events = watcher::watcher(pods, config).boxed();
                    while let Some(event) = events.next().await {
                        let pod = match event {
                            Ok(Event::Apply(pod) | Event::Delete(pod)) => pod,
                            _ => continue,
                        };
                        let deleting = pod.metadata.deletion_timestamp.is_some();
                        if pod.uid() == uid && deleting {
                            gone_with.lock().get_or_insert(leaders_of(&pd, POD));
                        }
                    }
                })
            };
            let _watches = Watches(vec![watch]);

            let drained = kubectl(
                &tidb.cluster.control_plane,
                &[
                    "drain",
                    &node,
                    "--pod-selector=app.kubernetes.io/component=tikv",
                    "--ignore-daemonsets",
                    "--timeout=120s",
                ],
            )
            .await?;
            let (out, err) = (text(&drained.stdout), text(&drained.stderr));
            eprintln!("drain: {out}{err}");
            ensure!(
                drained.status.success(),
                "kubectl drain {node} failed ({}): {out}{err}",
                drained.status
            );
            ensure!(
                err.contains("will retry after 5s")
                    && err.contains("tidb-guard")
                    && err.contains(&format!("store {store}")),
                "the drain waited on tidb-guard's refusal, retrying: {err}"
            );
            ensure!(
                // 1.20 ends with `node/<name> evicted`, later ones with `drained`.
                out.contains(&format!("pod/{POD} evicted")),
                "the drain evicted {POD} and finished: {out}"
            );
            let seen = *gone_with.lock();
            ensure!(
                seen.is_some_and(|(left, _)| left == Some(0)),
                "{POD} was deleted with its store's leaders at {seen:?}, not 0"
            );
            ensure!(
                tidb.pd.state().count("POST /pd/api/v1/schedulers") == 1,
                "Steward began one leader eviction for store {store}"
            );
            tidb.cluster.control_plane.check().await
        },
    );
}

/// A StatefulSet version as the watch saw it: partition and protection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    pub partition: Option<i32>,
    pub protected: Option<i32>,
}

impl Held {
    /// Partition `partition`, protected there.
    pub fn at(partition: i32) -> Held {
        Held {
            partition: Some(partition),
            protected: Some(partition),
        }
    }

    /// The protection `annotations` hold, with `partition`.
    pub fn of(partition: Option<i32>, annotations: &BTreeMap<String, String>) -> Held {
        Held {
            partition,
            protected: annotations
                .get(PROTECTED_PARTITION_ANNOTATION)
                .and_then(|p| p.parse().ok()),
        }
    }
}

/// Records each distinct [`Held`] (by `held`) of object `name` of `api`
/// that a watch delivers, while the returned watch runs.
pub fn watch_held<K>(
    api: Api<K>,
    name: &str,
    held: impl Fn(&K) -> Held + Send + 'static,
) -> (Arc<Mutex<Vec<Held>>>, Watches)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::<Held>::new()));
    let watch = watch_named(api, name, {
        let seen = seen.clone();
        move |object| {
            let now = held(object);
            let mut seen = seen.lock();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    });
    (seen, Watches(vec![watch]))
}

/// The versions a watch saw took the partition through `steps` (each
/// partition counted once), the protection never missing nor below it.
pub fn check_gate_steps(seen: &[Held], steps: &[i32]) -> Result<()> {
    eprintln!("protection: {seen:?}");
    let partitions: Vec<i32> =
        seen.iter()
            .filter_map(|h| h.partition)
            .fold(Vec::new(), |mut steps, p| {
                if steps.last() != Some(&p) {
                    steps.push(p);
                }
                steps
            });
    ensure!(
        partitions == steps,
        "the gate's steps took the partition {partitions:?}, not {steps:?}"
    );
    ensure!(
        seen.iter()
            .all(|h| h.protected.is_some() && h.protected >= h.partition),
        "the protection was below the partition: {seen:?}"
    );
    Ok(())
}

/// upgrade-gate holds basic-tikv at partition 3 with
/// `steward.io/protected-partition: "3"`; during an upgrade whose first
/// store's leaders cannot leave, `kubectl patch` (a user) may neither
/// lower the partition nor lower or remove the protection, however it
/// combines them. Once PD moves the leaders the gate's own steps, by
/// Steward's ServiceAccount, take the partition 3, 2, 1, 0 and back to 3
/// through the real StatefulSet controller, the protection never below it.
#[test]
fn only_the_upgrade_gate_lowers_a_protected_partition() {
    scenario(
        "only_the_upgrade_gate_lowers_a_protected_partition",
        |version| async move {
            let mut tidb = tidb_cluster(version, Some(GATE), true).await?;
            let client = tidb.client.clone();
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
            let held = |set: &StatefulSet| Held::of(partition(set), set.annotations());
            let at_three = Held::at(3);
            eventually(
                Duration::from_secs(60),
                "upgrade-gate to protect basic-tikv's partition 3",
                || async { Ok((held(&sets.get(TIKV).await?) == at_three).then_some(())) },
            )
            .await?;
            let (seen, _watches) = watch_held(sets.clone(), TIKV, held);

            tidb.pd.set_fault(Fault::LeadersStuck);
            sets.patch(
                TIKV,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "tikv", "image": NEW_TIKV_IMAGE},
                ]}}}})),
            )
            .await
            .context("a user changes the TiKV image")?;
            let first = tidb
                .pd
                .state()
                .store_of_pod("basic-tikv-2")
                .context("a store for basic-tikv-2")?;
            eventually(
                Duration::from_secs(60),
                "the gate to evict basic-tikv-2's leaders",
                || async { Ok(tidb.pd.state().evicting.contains(&first).then_some(())) },
            )
            .await?;

            let control_plane = &tidb.cluster.control_plane;
            let partition_zero = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#;
            let lowered_too = format!(
                r#"{{"metadata":{{"annotations":{{"{PROTECTED_PARTITION_ANNOTATION}":"0"}}}},"spec":{{"updateStrategy":{{"rollingUpdate":{{"partition":0}}}}}}}}"#
            );
            let removed = format!("{PROTECTED_PARTITION_ANNOTATION}-");
            for (args, refusal) in [
                (
                    vec![
                        "patch",
                        "statefulset",
                        TIKV,
                        "-n",
                        NAMESPACE,
                        "-p",
                        partition_zero,
                    ],
                    "rollingUpdate.partition may not go from 3 to 0",
                ),
                (
                    vec![
                        "patch",
                        "statefulset",
                        TIKV,
                        "-n",
                        NAMESPACE,
                        "-p",
                        lowered_too.as_str(),
                    ],
                    "steward.io/protected-partition may not be lowered to 0",
                ),
                (
                    vec![
                        "annotate",
                        "statefulset",
                        TIKV,
                        "-n",
                        NAMESPACE,
                        removed.as_str(),
                    ],
                    "steward.io/protected-partition may not be removed",
                ),
            ] {
                let out = kubectl(control_plane, &args).await?;
                let err = text(&out.stderr);
                ensure!(
                    !out.status.success()
                        && err.contains("admission webhook \"tidb-guard.steward.io\" denied")
                        && err.contains(refusal),
                    "kubectl {args:?} is refused with `{refusal}`: {}{err}",
                    text(&out.stdout)
                );
            }
            ensure!(
                held(&sets.get(TIKV).await?) == at_three,
                "the refused patches changed nothing"
            );

            tidb.pd.set_fault(Fault::None);
            eventually(
                Duration::from_secs(300),
                "the TiKV pods to run the new image",
                || upgraded(&client),
            )
            .await
            .with_context(|| format!("the watch saw {:?}", seen.lock()))?;
            eventually(
                Duration::from_secs(30),
                "the protection back at 3",
                || async { Ok((held(&sets.get(TIKV).await?) == at_three).then_some(())) },
            )
            .await?;
            check_gate_steps(&seen.lock(), &[3, 2, 1, 0, 3])?;
            tidb.cluster.control_plane.check().await
        },
    );
}
