//! The node agents and controllers the control plane has no binaries for,
//! played by the test: the kubelet (pods on a node run and are ready;
//! deleted pods go away), an external CSI provisioner (claims the scheduler
//! placed get a volume on that node) and, on demand, TiKV's heartbeats to
//! the PD double and tidb-operator's Advanced StatefulSet controller.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use steward::cluster::{SELECTED_NODE_ANNOTATION, tidb};
use steward::wit::ordinals;
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

impl Doubles {
    /// Also plays tidb-operator's Advanced StatefulSet controller in
    /// `namespace`: see [`advanced_statefulsets`].
    pub fn play_advanced_statefulsets(&mut self, client: &Client, namespace: &str) {
        self.tasks.push(tokio::spawn(advanced_statefulsets(
            client.clone(),
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

/// How often the Advanced StatefulSet double takes a step.
const ADVANCED_STEP: Duration = Duration::from_millis(200);

/// The Advanced StatefulSet controller (pingcap/advanced-statefulset) as
/// far as the tests need it, one step per set every [`ADVANCED_STEP`],
/// `OrderedReady` with a `RollingUpdate` partition like the `apps/v1` one
/// but over the desired ordinals (replicas skipping the delete slots): a
/// missing desired pod is created once those below it are Ready (on the
/// nodes in turn, by ordinal); once every pod is Ready, a pod outside the
/// desired ordinals is deleted, else the highest one at or above the
/// partition that is not at the update revision. The status says what the
/// controller reports, revisions named after a hash of the template.
async fn advanced_statefulsets(client: Client, namespace: String) {
    let resource = tidb::statefulset_resource(tidb::ADVANCED_STATEFULSET);
    let sets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(ADVANCED_STEP).await;
        let list = match sets.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!("advanced statefulset double: listing: {e}");
                continue;
            }
        };
        for set in list {
            if let Err(e) = advanced_step(&sets, &pods, &nodes, &set).await {
                eprintln!("advanced statefulset double: {}: {e}", set.name_any());
            }
        }
    }
}

async fn advanced_step(
    sets: &Api<DynamicObject>,
    pods: &Api<Pod>,
    nodes: &Api<Node>,
    set: &DynamicObject,
) -> Result<(), kube::Error> {
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    let spec = &set.data["spec"];
    let replicas = spec["replicas"].as_u64().unwrap_or(1) as u32;
    let annotations: Vec<(String, String)> = set.annotations().clone().into_iter().collect();
    let desired = ordinals::of_statefulset(tidb::ADVANCED_STATEFULSET, &annotations, replicas);
    let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
        .as_u64()
        .unwrap_or(0) as u32;
    let mut hasher = DefaultHasher::new();
    spec["template"].to_string().hash(&mut hasher);
    let update = format!("{name}-{:x}", hasher.finish() & 0xff_ffff);
    let status = &set.data["status"];
    let current = status["currentRevision"]
        .as_str()
        .unwrap_or(&update)
        .to_string();
    let owned: Vec<Pod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let ordinal = |p: &Pod| {
        p.name_any()
            .rsplit_once('-')
            .and_then(|(_, o)| o.parse::<u32>().ok())
    };
    let revision = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
    let up = |p: &Pod| is_ready(p) && p.metadata.deletion_timestamp.is_none();
    let missing = desired
        .iter()
        .copied()
        .find(|&o| !owned.iter().any(|p| ordinal(p) == Some(o)));
    if let Some(o) = missing {
        if owned.iter().filter(|p| ordinal(p) < Some(o)).all(up) {
            let at = if o >= partition { &update } else { &current };
            let mut names: Vec<String> = nodes
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            names.sort();
            let node = names.get(o as usize % names.len().max(1)).cloned();
            let pod = advanced_pod(set, o, at, node);
            pods.create(&PostParams::default(), &pod).await?;
        }
    } else if owned.iter().all(up) {
        let mut doomed: Vec<&Pod> = owned
            .iter()
            .filter(|p| ordinal(p).is_some_and(|o| !desired.contains(&o)))
            .collect();
        if doomed.is_empty() {
            doomed = owned
                .iter()
                .filter(|p| ordinal(p).is_some_and(|o| o >= partition) && revision(p) != update)
                .collect();
        }
        if let Some(pod) = doomed.into_iter().max_by_key(|p| ordinal(p)) {
            pods.delete(&pod.name_any(), &DeleteParams::default())
                .await?;
        }
    }
    let updated = owned.iter().filter(|p| revision(p) == update).count();
    let ready = owned.iter().filter(|p| up(p)).count();
    let settled = owned.len() == desired.len() && updated == desired.len() && ready == updated;
    let observed = json!({
        "observedGeneration": set.metadata.generation,
        "replicas": owned.len(),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "currentRevision": if settled { &update } else { &current },
        "updateRevision": update,
    });
    if *status != observed {
        sets.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": observed})),
        )
        .await?;
    }
    Ok(())
}

/// The label the StatefulSet controllers put on a pod: its revision.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Pod `ordinal` of Advanced StatefulSet `set` at `revision`, from its
/// template, owned by it, on `node`.
fn advanced_pod(set: &DynamicObject, ordinal: u32, revision: &str, node: Option<String>) -> Pod {
    let owner = tidb::statefulset_resource(tidb::ADVANCED_STATEFULSET);
    let template = &set.data["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[REVISION_LABEL] = json!(revision);
    let mut spec = template["spec"].clone();
    spec["nodeName"] = node.map_or(Value::Null, Value::from);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{}-{ordinal}", set.name_any()),
            "namespace": set.namespace(),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": owner.api_version, "kind": owner.kind,
                "name": set.name_any(), "uid": set.uid(), "controller": true,
            }],
        },
        "spec": spec,
    }))
    .expect("a pod from the Advanced StatefulSet's template")
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
