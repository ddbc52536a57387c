//! The node agents the control plane has no binaries for, played by the
//! test: the kubelet (pods on a node run and are ready; deleted pods go
//! away), an external CSI provisioner (claims the scheduler placed get a
//! volume on that node) and, on demand, TiKV's heartbeats to the PD double.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward::cluster::SELECTED_NODE_ANNOTATION;
use tokio::task::JoinHandle;

use crate::pd_double::PdDouble;

const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Background tasks playing node agents; aborted when dropped.
pub struct Doubles {
    tasks: Vec<JoinHandle<()>>,
}

impl Doubles {
    /// Starts the kubelet of every node and the provisioner of the storage
    /// classes whose provisioner is one of `provisioners`.
    pub fn start(client: &Client, provisioners: &[&str]) -> Doubles {
        let provisioners: BTreeSet<String> = provisioners.iter().map(|p| p.to_string()).collect();
        Doubles {
            tasks: vec![
                tokio::spawn(kubelet(client.clone())),
                tokio::spawn(provision(client.clone(), provisioners)),
            ],
        }
    }
}

impl Doubles {
    /// Also plays the TiKV processes of `namespace` towards `pd`: see
    /// [`tikv_heartbeats`].
    pub fn play_tikv(&mut self, client: &Client, pd: Arc<PdDouble>, namespace: &str) {
        self.tasks.push(tokio::spawn(tikv_heartbeats(
            client.clone(),
            pd,
            namespace.to_string(),
        )));
    }
}

impl Drop for Doubles {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every pod bound to a node is marked Running with ready containers; a
/// pod being deleted is removed at once (the kubelet's final delete).
async fn kubelet(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(pod) => pod,
            Err(e) => {
                eprintln!("kubelet double: watch error: {e}");
                continue;
            }
        };
        let Some(spec) = pod.spec.as_ref().filter(|s| s.node_name.is_some()) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let result = if pod.metadata.deletion_timestamp.is_some() {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: pod.uid().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                other => other.map(|_| ()),
            }
        } else if !is_ready(&pod) {
            let containers: Vec<_> = spec
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "image": c.image.clone().unwrap_or_default(),
                        "imageID": "", "ready": true, "started": true, "restartCount": 0,
                        "state": {"running": {}},
                    })
                })
                .collect();
            let condition = |t: &str| json!({"type": t, "status": "True"});
            let status = json!({"status": {
                "phase": "Running",
                "conditions": [condition("PodScheduled"), condition("Initialized"),
                               condition("ContainersReady"), condition("Ready")],
                "containerStatuses": containers,
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            eprintln!("kubelet double: pod {name}: {e}");
        }
    }
}

/// The store of a TiKV pod heartbeats to PD while the pod runs Ready on a
/// Ready node, and stops when the pod is deleted or restarting or its node
/// is not Ready; the PD double ages silent stores to Disconnected and Down.
async fn tikv_heartbeats(client: Client, pd: Arc<PdDouble>, namespace: String) {
    let tikv = watcher::Config::default().labels("app.kubernetes.io/component=tikv");
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let pod_events = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::namespaced(client.clone(), &namespace), tikv),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let node_events = reflector::reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let mut events = futures::stream::select(pod_events, node_events);
    while events.next().await.is_some() {
        let mut state = pd.state();
        let stores: Vec<(u64, String)> = state
            .stores
            .iter()
            .map(|s| (s.id, s.address.clone()))
            .collect();
        for (id, address) in stores {
            let pod = address.split('.').next().unwrap_or_default();
            let running = pods
                .get(&ObjectRef::new(pod).within(&namespace))
                .is_some_and(|p| runs_on_ready_node(&p, &nodes));
            if running {
                state.resume_heartbeat(id);
            } else {
                state.stop_heartbeat(id);
            }
        }
    }
}

fn runs_on_ready_node(pod: &Pod, nodes: &Store<Node>) -> bool {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let node_ready = node
        .and_then(|n| nodes.get(&ObjectRef::new(&n)))
        .and_then(|n| n.status.clone()?.conditions)
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    pod.metadata.deletion_timestamp.is_none() && is_ready(pod) && node_ready
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A claim of one of `provisioners` with a selected node and no volume
/// gets a volume with node affinity to that node, pre-bound to the claim;
/// the PV controller completes the binding.
async fn provision(client: Client, provisioners: BTreeSet<String>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut events = watcher(claims, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(claim) = event else { continue };
        let spec = claim.spec.clone().unwrap_or_default();
        let Some(node) = claim.annotations().get(SELECTED_NODE_ANNOTATION).cloned() else {
            continue;
        };
        if spec.volume_name.is_some() || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(class_name) = spec.storage_class_name.clone() else {
            continue;
        };
        let class = match classes.get_opt(&class_name).await {
            Ok(Some(c)) if provisioners.contains(&c.provisioner) => c,
            _ => continue,
        };
        let uid = claim.uid().unwrap_or_default();
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let fs_type = class
            .parameters
            .as_ref()
            .and_then(|p| p.get("csi.storage.k8s.io/fstype"))
            .cloned();
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {
                "name": format!("pvc-{uid}"),
                "annotations": {PROVISIONED_BY: class.provisioner},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_default(),
                "volumeMode": spec.volume_mode.clone(),
                "persistentVolumeReclaimPolicy":
                    class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class_name,
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": claim.namespace(), "name": claim.name_any(), "uid": uid,
                },
                "csi": {"driver": class.provisioner, "volumeHandle": format!("pvc-{uid}"),
                        "fsType": fs_type},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
                ]}]}},
            },
        }))
        .expect("a valid PersistentVolume");
        match volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => eprintln!("provisioner double: claim {}: {e}", claim.name_any()),
        }
    }
}
