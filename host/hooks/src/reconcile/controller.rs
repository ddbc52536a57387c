//! The kube-runtime controller that drives [`Reconciler`]: it watches the
//! StatefulSets, their pods (through owner references) and their claims (by
//! the claim-template naming), and runs one reconcile per change or
//! requested requeue of those that opt in (label [`super::OPT_IN_LABEL`] or
//! annotation [`super::OPT_IN_ANNOTATION`]). An annotation cannot be selected on
//! by the API server, so every StatefulSet is watched and the others are
//! passed over here. It runs only while
//! this replica holds the Lease; the extender and admission hooks are served
//! by every replica.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::lease::{Elector, KubeLease, Timing};
use super::state::{same_version, statefulset_of_claim};
use super::{Effects, Reconciler, SystemClock, policy_ids};
use crate::config::ReconcileConfig;
use steward_cluster::{ClusterQuery, convert};

/// How often an idle workload is looked at again without any change.
const RESYNC: Duration = Duration::from_secs(300);

/// How soon a workload is looked at again when the cluster cache has not
/// yet seen the version that triggered its reconcile.
const CATCH_UP: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Never(String);

/// Runs the controller while this replica leads; never returns.
pub async fn run<E: Effects>(
    client: Client,
    reconciler: Arc<Reconciler<E>>,
    config: ReconcileConfig,
) {
    let identity = config.identity.clone().unwrap_or_else(default_identity);
    let lease = KubeLease::new(client.clone(), &config.lease_namespace, &config.lease_name);
    let elector = Elector::new(
        lease,
        identity,
        Timing::from_config(&config),
        Arc::new(SystemClock),
    );
    elector
        .lead(|| run_controller(client.clone(), reconciler.clone()))
        .await;
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "steward".into());
    format!("{host}_{}", std::process::id())
}

async fn run_controller<E: Effects>(client: Client, reconciler: Arc<Reconciler<E>>) {
    let statefulsets = Api::<StatefulSet>::all(client.clone());
    let controller = Controller::new(statefulsets, watcher::Config::default());
    let known = controller.store();
    controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<PersistentVolumeClaim>::all(client),
            watcher::Config::default(),
            move |claim| {
                let namespace = claim.namespace()?;
                let sets = known.state();
                let candidates: Vec<(String, Vec<String>)> = sets
                    .iter()
                    .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
                    .map(|s| {
                        let templates = s
                            .spec
                            .volume_claim_templates
                            .as_ref()
                            .map(|ts| ts.iter().filter_map(|t| t.metadata.name.clone()).collect())
                            .unwrap_or_default();
                        (s.name_any(), templates)
                    })
                    .collect();
                let name = statefulset_of_claim(
                    &claim.name_any(),
                    candidates.iter().map(|(n, t)| (n.as_str(), t.as_slice())),
                )?;
                Some(ObjectRef::<StatefulSet>::new(name).within(&namespace))
            },
        )
        .shutdown_on_signal()
        .run(reconcile::<E>, error_policy::<E>, reconciler)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile controller: {e}");
            }
        })
        .await;
}

async fn reconcile<E: Effects>(
    sts: Arc<StatefulSet>,
    reconciler: Arc<Reconciler<E>>,
) -> Result<Requeue, Never> {
    let namespace = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let workload = convert::workload(&sts);
    if policy_ids(&workload).is_empty() {
        // Not opted in: looked at again when it changes.
        return Ok(Requeue::await_change());
    }
    // The trigger comes from this controller's watch, the state policies
    // see from the cache's own. Planning on an older version than the
    // trigger could end idle (no requeue) and miss the change for good.
    let cached = ClusterQuery::new(reconciler.cluster.clone()).get_workload(
        "StatefulSet",
        &namespace,
        &name,
    );
    if !cached.is_some_and(|c| same_version(&c, &workload)) {
        return Ok(Requeue::requeue(CATCH_UP));
    }
    let report = reconciler.reconcile(&namespace, &name).await;
    Ok(Requeue::requeue(report.requeue_after.unwrap_or(RESYNC)))
}

fn error_policy<E: Effects>(_: Arc<StatefulSet>, e: &Never, _: Arc<Reconciler<E>>) -> Requeue {
    tracing::warn!("reconcile failed: {e}");
    Requeue::requeue(Duration::from_secs(5))
}
