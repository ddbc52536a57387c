//! Performing the side effects policies ask for (the `actions` vocabulary
//! of `wit/pd.wit`): PD calls through [`PdClient`], Kubernetes writes
//! through the API server, or, offline, edits of the snapshot in the cache.
//! Admission reviews and reconcile plans share this executor.

use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::pd::{PdClient, PdEndpoint, SecretAccess};
use steward_cluster::{Backend, ClusterCache, ClusterQuery, tidb};
use steward_wit::{Action, Annotation, EventType, Target};

/// The object an action list is about: Events are recorded on it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A StatefulSet of either API: its workload kind (`StatefulSet`, or
/// `AdvancedStatefulSet` for `apps.pingcap.com/v1`) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadRef<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

impl WorkloadRef<'_> {
    /// `StatefulSet ns/name` or `Advanced StatefulSet ns/name`, for messages.
    pub fn text(&self, namespace: &str) -> String {
        let what = if self.kind == tidb::ADVANCED_STATEFULSET {
            "Advanced StatefulSet"
        } else {
            "StatefulSet"
        };
        format!("{what} {namespace}/{}", self.name)
    }
}

/// Where one list of actions applies.
pub struct ActionContext<'a> {
    /// Namespace of the pods, claims and workload the actions name.
    pub namespace: &'a str,
    /// The StatefulSet `set-partition`, `set-replicas` and workload
    /// annotations apply to, if there is one.
    pub workload: Option<WorkloadRef<'a>>,
    pub subject: &'a Subject,
    /// The PD of the policy that asked.
    pub pd: &'a PdEndpoint,
}

/// Performs actions one at a time.
#[derive(Clone)]
pub struct Executor {
    pd: PdClient,
    cluster: Writer,
}

#[derive(Clone)]
enum Writer {
    /// Offline: the snapshot in the cache is the cluster.
    Snapshot(Arc<ClusterCache>),
    Kubernetes(kube::Client),
}

/// Metric label of an action.
pub fn name(action: &Action) -> &'static str {
    match action {
        Action::SetPartition(_) => "set-partition",
        Action::SetReplicas(_) => "set-replicas",
        Action::PdEvictLeaderBegin(_) => "pd-evict-leader-begin",
        Action::PdEvictLeaderEnd(_) => "pd-evict-leader-end",
        Action::PdTransferLeader(_) => "pd-transfer-leader",
        Action::PdDeleteMember(_) => "pd-delete-member",
        Action::PdStoreDelete(_) => "pd-store-delete",
        Action::DeletePod(_) => "delete-pod",
        Action::DeleteClaim(_) => "delete-claim",
        Action::Annotate(_) => "annotate",
        Action::EmitEvent(_) => "emit-event",
        Action::RequeueAfter(_) => "requeue-after",
    }
}

/// An action as a short sentence, for logs and monitor records.
pub fn describe(action: &Action) -> String {
    let cluster = |c: &steward_wit::PdCluster| format!("{}/{}", c.namespace, c.name);
    match action {
        Action::SetPartition(p) => format!("set the partition to {p}"),
        Action::SetReplicas(r) => format!("set replicas to {r}"),
        Action::PdEvictLeaderBegin((c, s)) => {
            format!("begin evicting leaders from store {s} of {}", cluster(c))
        }
        Action::PdEvictLeaderEnd((c, s)) => {
            format!("end evicting leaders from store {s} of {}", cluster(c))
        }
        Action::PdTransferLeader((c, m)) => {
            format!("transfer the PD leader of {} to {m}", cluster(c))
        }
        Action::PdDeleteMember((c, id)) => format!("delete PD member {id} of {}", cluster(c)),
        Action::PdStoreDelete((c, id)) => {
            format!("take store {id} of {} offline", cluster(c))
        }
        Action::DeletePod(p) => format!("delete pod {p}"),
        Action::DeleteClaim(c) => format!("delete claim {c}"),
        Action::Annotate((target, list)) => {
            let keys: Vec<&str> = list.iter().map(|a| a.key.as_str()).collect();
            format!("annotate {} ({})", target_text(target), keys.join(", "))
        }
        Action::EmitEvent((_, reason, _)) => format!("emit event {reason}"),
        Action::RequeueAfter(ms) => format!("requeue after {ms}ms"),
    }
}

fn target_text(target: &Target) -> String {
    match target {
        Target::Workload(n) => format!("StatefulSet {n}"),
        Target::Pod(n) => format!("pod {n}"),
        Target::Claim(n) => format!("claim {n}"),
    }
}

impl Executor {
    /// Writes go where the extender binds: the API server, or the snapshot.
    pub fn new(backend: &Backend, cache: Arc<ClusterCache>) -> Executor {
        let cluster = match backend {
            Backend::Snapshot => Writer::Snapshot(cache),
            Backend::Kubernetes { client, .. } => Writer::Kubernetes(client.clone()),
        };
        Executor {
            pd: PdClient::new(SecretAccess::of_backend(backend)),
            cluster,
        }
    }

    /// Performs one action; the error says what failed and why.
    /// `requeue-after` is the reconcile controller's to schedule: a no-op.
    pub async fn perform(&self, ctx: &ActionContext<'_>, action: &Action) -> Result<(), String> {
        let timeout = ctx.pd.timeout;
        match action {
            Action::PdEvictLeaderBegin((c, store)) => {
                self.pd
                    .evict_leader_begin(&ctx.pd.base(c), *store, timeout)
                    .await
            }
            Action::PdEvictLeaderEnd((c, store)) => {
                self.pd
                    .evict_leader_end(&ctx.pd.base(c), *store, timeout)
                    .await
            }
            Action::PdTransferLeader((c, member)) => {
                self.pd
                    .transfer_leader(&ctx.pd.base(c), member, timeout)
                    .await
            }
            Action::PdDeleteMember((c, id)) => {
                self.pd.delete_member(&ctx.pd.base(c), *id, timeout).await
            }
            Action::PdStoreDelete((c, id)) => {
                self.pd.delete_store(&ctx.pd.base(c), *id, timeout).await
            }
            Action::SetPartition(p) => {
                let workload = workload(ctx, "set-partition")?;
                self.set_workload(ctx.namespace, &workload, |w| w.partition = Some(*p), || {
                    json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": p}}}})
                })
                .await
            }
            Action::SetReplicas(r) => {
                let workload = workload(ctx, "set-replicas")?;
                self.set_workload(
                    ctx.namespace,
                    &workload,
                    |w| {
                        w.replicas = *r;
                        w.desired_ordinals =
                            steward_wit::ordinals::of_statefulset(&w.kind, &w.annotations, *r);
                    },
                    || json!({"spec": {"replicas": r}}),
                )
                .await
            }
            Action::DeletePod(name) => self.delete(ctx.namespace, &Target::Pod(name.clone())).await,
            Action::DeleteClaim(name) => {
                self.delete(ctx.namespace, &Target::Claim(name.clone()))
                    .await
            }
            Action::Annotate((target, list)) => self.annotate(ctx, target, list).await,
            Action::EmitEvent((kind, reason, message)) => {
                self.emit_event(ctx.subject, *kind, reason, message).await
            }
            Action::RequeueAfter(_) => Ok(()),
        }
    }

    async fn set_workload(
        &self,
        namespace: &str,
        workload: &WorkloadRef<'_>,
        edit: impl FnOnce(&mut steward_wit::Workload),
        patch: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), String> {
        match &self.cluster {
            Writer::Snapshot(cache) => {
                let mut w = ClusterQuery::new(cache.clone())
                    .get_workload(workload.kind, namespace, workload.name)
                    .ok_or_else(|| {
                        format!("{} is not in the snapshot", workload.text(namespace))
                    })?;
                edit(&mut w);
                cache.upsert_workload(w);
                Ok(())
            }
            Writer::Kubernetes(client) => {
                patch_workload(client, namespace, workload, &Patch::Merge(patch()))
                    .await
                    .map_err(|e| format!("patching {} failed: {e}", workload.text(namespace)))
            }
        }
    }

    async fn delete(&self, namespace: &str, target: &Target) -> Result<(), String> {
        match (&self.cluster, target) {
            (Writer::Snapshot(cache), Target::Pod(name)) => {
                cache.remove_pod(namespace, name);
                Ok(())
            }
            (Writer::Snapshot(cache), Target::Claim(name)) => {
                cache.remove_claim(namespace, name);
                Ok(())
            }
            (Writer::Kubernetes(client), Target::Pod(name)) => gone_is_fine(
                kube::Api::<core::Pod>::namespaced(client.clone(), namespace)
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )
            .map_err(|e| format!("deleting pod {namespace}/{name} failed: {e}")),
            (Writer::Kubernetes(client), Target::Claim(name)) => gone_is_fine(
                kube::Api::<core::PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )
            .map_err(|e| format!("deleting claim {namespace}/{name} failed: {e}")),
            (_, Target::Workload(name)) => Err(format!(
                "deleting StatefulSet {namespace}/{name} is not an action Steward performs"
            )),
        }
    }

    /// Sets or removes annotations of `target`; a workload target is the
    /// context's StatefulSet of its kind (an `apps/v1` one otherwise).
    async fn annotate(
        &self,
        ctx: &ActionContext<'_>,
        target: &Target,
        list: &[Annotation],
    ) -> Result<(), String> {
        let namespace = ctx.namespace;
        let kind = |name: &str| {
            ctx.workload
                .filter(|w| w.name == name)
                .map_or("StatefulSet", |w| w.kind)
        };
        let what = match target {
            Target::Workload(name) => WorkloadRef {
                kind: kind(name),
                name,
            }
            .text(namespace),
            _ => format!("{} in {namespace}", target_text(target)),
        };
        match &self.cluster {
            Writer::Snapshot(cache) => {
                let query = ClusterQuery::new(cache.clone());
                let missing = || format!("{what} is not in the snapshot");
                match target {
                    Target::Pod(name) => {
                        let mut pod = query.get_pod(namespace, name).ok_or_else(missing)?;
                        apply_annotations(&mut pod.annotations, list);
                        cache.upsert_pod(pod);
                    }
                    Target::Claim(name) => {
                        let mut claim = query.get_claim(namespace, name).ok_or_else(missing)?;
                        apply_annotations(&mut claim.annotations, list);
                        cache.upsert_claim(claim);
                    }
                    Target::Workload(name) => {
                        let mut w = query
                            .get_workload(kind(name), namespace, name)
                            .ok_or_else(missing)?;
                        apply_annotations(&mut w.annotations, list);
                        cache.upsert_workload(w);
                    }
                }
                Ok(())
            }
            Writer::Kubernetes(client) => {
                let annotations: serde_json::Map<String, serde_json::Value> = list
                    .iter()
                    .map(|a| {
                        (
                            a.key.clone(),
                            a.value.clone().map_or(serde_json::Value::Null, Into::into),
                        )
                    })
                    .collect();
                let patch = Patch::Merge(json!({"metadata": {"annotations": annotations}}));
                let params = PatchParams::default();
                let result = match target {
                    Target::Pod(name) => {
                        kube::Api::<core::Pod>::namespaced(client.clone(), namespace)
                            .patch(name, &params, &patch)
                            .await
                            .map(|_| ())
                    }
                    Target::Claim(name) => kube::Api::<core::PersistentVolumeClaim>::namespaced(
                        client.clone(),
                        namespace,
                    )
                    .patch(name, &params, &patch)
                    .await
                    .map(|_| ()),
                    Target::Workload(name) => {
                        let workload = WorkloadRef {
                            kind: kind(name),
                            name,
                        };
                        patch_workload(client, namespace, &workload, &patch).await
                    }
                };
                result.map_err(|e| format!("annotating {what} failed: {e}"))
            }
        }
    }

    async fn emit_event(
        &self,
        subject: &Subject,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), String> {
        let kind = match kind {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        match &self.cluster {
            Writer::Snapshot(_) => {
                tracing::info!(
                    object = %format!("{} {}/{}", subject.kind, subject.namespace, subject.name),
                    kind,
                    reason,
                    "event: {message}"
                );
                Ok(())
            }
            Writer::Kubernetes(client) => {
                let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                );
                let event = core::Event {
                    metadata: kube::api::ObjectMeta {
                        generate_name: Some(format!("{}.", subject.name)),
                        namespace: Some(subject.namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: core::ObjectReference {
                        api_version: Some(subject.api_version.clone()),
                        kind: Some(subject.kind.clone()),
                        name: Some(subject.name.clone()),
                        namespace: Some(subject.namespace.clone()),
                        uid: Some(subject.uid.clone()).filter(|u| !u.is_empty()),
                        ..Default::default()
                    },
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    type_: Some(kind.into()),
                    count: Some(1),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    source: Some(core::EventSource {
                        component: Some("steward".into()),
                        host: None,
                    }),
                    ..Default::default()
                };
                kube::Api::<core::Event>::namespaced(client.clone(), &subject.namespace)
                    .create(&PostParams::default(), &event)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        format!(
                            "recording event {reason} on {} {}/{} failed: {e}",
                            subject.kind, subject.namespace, subject.name
                        )
                    })
            }
        }
    }
}

fn workload<'a>(ctx: &ActionContext<'a>, action: &str) -> Result<WorkloadRef<'a>, String> {
    ctx.workload
        .ok_or_else(|| format!("{action} needs a StatefulSet, and the request is not about one"))
}

/// Patches a StatefulSet of either API (an Advanced one is a custom
/// resource).
async fn patch_workload(
    client: &kube::Client,
    namespace: &str,
    workload: &WorkloadRef<'_>,
    patch: &Patch<serde_json::Value>,
) -> Result<(), kube::Error> {
    let resource = tidb::statefulset_resource(workload.kind);
    kube::Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .patch(workload.name, &PatchParams::default(), patch)
        .await
        .map(|_| ())
}

fn gone_is_fine(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

fn apply_annotations(annotations: &mut Vec<(String, String)>, list: &[Annotation]) {
    for a in list {
        annotations.retain(|(k, _)| *k != a.key);
        if let Some(v) = &a.value {
            annotations.push((a.key.clone(), v.clone()));
        }
    }
}
