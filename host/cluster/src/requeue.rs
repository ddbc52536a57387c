//! Requeueing pods kube-scheduler parked: a pod a filter refused while
//! another pod it depends on was in flight becomes schedulable once that
//! pod is bound, but kube-scheduler 1.20 moves a pod an extender refused
//! only on a pod update of its own or after a minute in its unschedulable
//! queue. Touching an annotation of the pod is such an update (on every
//! release); kube-scheduler then retries it at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Patch, PatchParams};

use crate::ClusterCache;

/// The annotation Steward sets on a pod to have kube-scheduler retry it:
/// when it did and why.
pub const REQUEUE_ANNOTATION: &str = "steward.io/requeued";

/// Patches each pod [`ClusterCache::next_requeue`] hands over. Runs until
/// the process stops; a pod that is gone or cannot be patched is logged
/// and skipped (kube-scheduler retries it on its own, only later).
pub async fn requeue_pods(client: kube::Client, cache: Arc<ClusterCache>) {
    loop {
        for (namespace, name) in cache.next_requeue().await {
            let pods: kube::Api<k8s::Pod> = kube::Api::namespaced(client.clone(), &namespace);
            let stamp = format!(
                "{} ms after the epoch: a pod it waited for was bound or failed",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            );
            let patch = serde_json::json!({
                "metadata": {"annotations": {REQUEUE_ANNOTATION: stamp}}
            });
            match pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::debug!(pod = %format!("{namespace}/{name}"), "requeued"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(
                    "cannot annotate pod {namespace}/{name} so that kube-scheduler retries it \
                     (it retries on its own within a minute): {e}"
                ),
            }
        }
    }
}
