//! Where the cluster is: a live API server, or the snapshot the cache was
//! loaded from. Hooks that write (bind, act) go through it.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1 as k8s;
use kube::api::PostParams;

use crate::{ClusterCache, convert};

/// A live cluster or an offline snapshot.
#[derive(Clone)]
pub enum Backend {
    /// Offline: the snapshot in the cache is the cluster.
    Snapshot,
    /// A Kubernetes API server, and its URL for messages.
    Kubernetes {
        client: kube::Client,
        server: String,
    },
}

impl Backend {
    /// A live cluster reached with `kubeconfig` (`""`: in-cluster, or the
    /// default kubeconfig).
    pub async fn connect(kubeconfig: &str) -> Result<Backend> {
        let config = if kubeconfig.is_empty() {
            kube::Config::infer()
                .await
                .context("no in-cluster service account and no kubeconfig")?
        } else {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig)
                .with_context(|| format!("cannot read kubeconfig {kubeconfig}"))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {kubeconfig} is not usable"))?
        };
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .with_context(|| format!("cannot build a client of the API server at {server}"))?;
        Ok(Backend::Kubernetes { client, server })
    }

    /// Binds a pod to a node — the `binding` subresource on a live cluster,
    /// the cache itself offline — and records the placement in `cache` so
    /// the next filter counts it before the watch shows it. The error says
    /// which pod and node, and why.
    pub async fn bind(
        &self,
        cache: &ClusterCache,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
    ) -> Result<(), String> {
        let (client, server) = match self {
            Backend::Snapshot => {
                return if cache.bind_in_place(namespace, name, node) {
                    Ok(())
                } else {
                    Err(format!("pod {namespace}/{name} is not in the snapshot"))
                };
            }
            Backend::Kubernetes { client, server } => (client, server),
        };
        let api: kube::Api<k8s::Pod> = kube::Api::namespaced(client.clone(), namespace);
        let binding = k8s::Binding {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(uid.to_string()),
                ..Default::default()
            },
            target: k8s::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                cache.record_binding(uid, namespace, name, node);
                Ok(())
            }
            Err(e) => {
                cache.abandon_placement(uid);
                Err(format!(
                    "binding pod {namespace}/{name} to node {node} through the API server at \
                     {server} failed: {e}"
                ))
            }
        }
    }

    /// Reads claim `namespace/name` from the API server into `cache` when
    /// the watch has not delivered it yet: the StatefulSet controller
    /// creates a claim and its pod back to back, so a pod's review can
    /// arrive first. Offline the snapshot is all there is. Returns whether
    /// the claim exists.
    pub async fn read_claim(
        &self,
        cache: &ClusterCache,
        namespace: &str,
        name: &str,
    ) -> Result<bool, String> {
        let Backend::Kubernetes { client, server } = self else {
            return Ok(false);
        };
        let api: kube::Api<k8s::PersistentVolumeClaim> =
            kube::Api::namespaced(client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(claim)) => {
                cache.upsert_claim(convert::claim(&claim));
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(format!(
                "reading claim {namespace}/{name} from the API server at {server} failed: {e}"
            )),
        }
    }
}
