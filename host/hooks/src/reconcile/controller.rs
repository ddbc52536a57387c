//! The kube-runtime controllers that drive [`Reconciler`]: they watch the
//! StatefulSets of both APIs (`apps/v1`, and tidb-operator's Advanced
//! StatefulSets `apps.pingcap.com/v1` while the API server serves them),
//! their pods (through owner references) and their claims (by the
//! claim-template naming), and run one reconcile per change or requested
//! requeue of those that opt in (label [`super::OPT_IN_LABEL`] or
//! annotation [`super::OPT_IN_ANNOTATION`]). An annotation cannot be
//! selected on by the API server, so every StatefulSet is watched and the
//! others are passed over here. They run only while this replica holds the
//! Lease; the extender and admission hooks are served by every replica.

use std::fmt::Debug;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::DynamicObject;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::lease::{Elector, KubeLease, Timing};
use super::state::{same_version, statefulset_of_claim};
use super::{Effects, Reconciler, SystemClock, policy_ids};
use crate::config::ReconcileConfig;
use steward_cluster::kinds::{KindState, OptionalKind};
use steward_cluster::{ClusterQuery, convert, tidb};
use steward_wit::Workload;

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

/// How often the controller of Advanced StatefulSets checks whether the
/// API server serves them (the cluster cache's discovery finds out).
const KIND_CHECK: Duration = Duration::from_secs(1);

async fn run_controller<E: Effects>(client: Client, reconciler: Arc<Reconciler<E>>) {
    let apps = Source {
        api: Api::<StatefulSet>::all(client.clone()),
        dyntype: (),
        workload: convert::workload,
    };
    tokio::select! {
        () = control(client.clone(), apps, reconciler.clone()) => {}
        () = control_advanced(client, reconciler) => {}
    }
}

/// The StatefulSets of one API as the controller reads them.
struct Source<K: Resource> {
    api: Api<K>,
    dyntype: K::DynamicType,
    /// The object's workload record, as the cluster cache makes it.
    workload: fn(&K) -> Workload,
}

/// What each reconcile of one API's StatefulSets gets.
struct Context<K, E> {
    reconciler: Arc<Reconciler<E>>,
    workload: fn(&K) -> Workload,
}

/// Runs the controller of Advanced StatefulSets while the cluster cache
/// has them (the API server serves the kind); ends on a shutdown signal.
async fn control_advanced<E: Effects>(client: Client, reconciler: Arc<Reconciler<E>>) {
    let mut running: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    loop {
        let kind = OptionalKind::AdvancedStatefulSet;
        if reconciler.cluster.kind_state(kind) != KindState::Synced {
            running = None;
        } else if running.is_none() {
            let advanced = Source {
                api: Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource()),
                dyntype: kind.api_resource(),
                workload: |o| {
                    tidb::advanced_statefulset(&serde_json::to_value(o).unwrap_or_default())
                },
            };
            running = Some(Box::pin(control(
                client.clone(),
                advanced,
                reconciler.clone(),
            )));
        }
        match running.as_mut() {
            Some(controller) => tokio::select! {
                () = controller => return,
                () = tokio::time::sleep(KIND_CHECK) => {}
            },
            None => tokio::time::sleep(KIND_CHECK).await,
        }
    }
}

/// Runs the controller of `source`'s StatefulSets until a shutdown signal.
async fn control<K, E>(client: Client, source: Source<K>, reconciler: Arc<Reconciler<E>>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Debug + Eq + Hash + Unpin + Send + Sync + 'static,
    E: Effects,
{
    let Source {
        api,
        dyntype,
        workload,
    } = source;
    let controller = Controller::new_with(api, watcher::Config::default(), dyntype.clone());
    let known = controller.store();
    controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<PersistentVolumeClaim>::all(client),
            watcher::Config::default(),
            move |claim| {
                let namespace = claim.namespace()?;
                let sets: Vec<Workload> = known
                    .state()
                    .iter()
                    .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
                    .map(|s| workload(s))
                    .collect();
                let name = statefulset_of_claim(
                    &claim.name_any(),
                    sets.iter()
                        .map(|s| (s.name.as_str(), s.claim_templates.as_slice())),
                )?;
                Some(ObjectRef::<K>::new_with(name, dyntype.clone()).within(&namespace))
            },
        )
        .shutdown_on_signal()
        .run(
            reconcile::<K, E>,
            error_policy::<K, E>,
            Arc::new(Context {
                reconciler,
                workload,
            }),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile controller: {e}");
            }
        })
        .await;
}

async fn reconcile<K, E: Effects>(
    object: Arc<K>,
    context: Arc<Context<K, E>>,
) -> Result<Requeue, Never> {
    let workload = (context.workload)(&object);
    if policy_ids(&workload).is_empty() {
        // Not opted in: looked at again when it changes.
        return Ok(Requeue::await_change());
    }
    let (kind, namespace, name) = (&workload.kind, &workload.namespace, &workload.name);
    // The trigger comes from this controller's watch, the state policies
    // see from the cache's own. Planning on an older version than the
    // trigger could end idle (no requeue) and miss the change for good.
    let cached =
        ClusterQuery::new(context.reconciler.cluster.clone()).get_workload(kind, namespace, name);
    if !cached.is_some_and(|c| same_version(&c, &workload)) {
        return Ok(Requeue::requeue(CATCH_UP));
    }
    let report = context.reconciler.reconcile(kind, namespace, name).await;
    Ok(Requeue::requeue(report.requeue_after.unwrap_or(RESYNC)))
}

fn error_policy<K, E: Effects>(_: Arc<K>, e: &Never, _: Arc<Context<K, E>>) -> Requeue {
    tracing::warn!("reconcile failed: {e}");
    Requeue::requeue(Duration::from_secs(5))
}
