//! Kubernetes API objects → the typed records guests see. Done once at
//! ingest, so queries only copy small records.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1::StorageClass as K8sStorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use steward_wit::{
    Claim, Node, NodeSelectorTerm, Owner, Pod, SelectorOperator, SelectorRequirement, StorageClass,
    Taint, Volume, Workload,
};

/// Annotations never worth copying into a guest: large and not policy input.
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

fn map(m: &Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
    m.iter()
        .flatten()
        .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn text(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn owner(meta: &ObjectMeta) -> Option<Owner> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: if o.kind == "StatefulSet" {
                // An Advanced StatefulSet gets a kind of its own.
                let group = o.api_version.rsplit_once('/').map_or("", |(g, _)| g);
                steward_wit::ordinals::statefulset_kind(group).into()
            } else {
                o.kind.clone()
            },
            name: o.name.clone(),
        })
}

fn condition_true<'a>(
    mut conditions: impl Iterator<Item = (&'a str, &'a str)>,
    kind: &str,
) -> bool {
    conditions.any(|(t, s)| t == kind && s == "True")
}

pub fn pod(p: &core::Pod) -> Pod {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    Pod {
        namespace: text(&p.metadata.namespace),
        name: text(&p.metadata.name),
        uid: text(&p.metadata.uid),
        labels: map(&p.metadata.labels),
        annotations: map(&p.metadata.annotations),
        owner: owner(&p.metadata),
        node_name: spec.and_then(|s| s.node_name.clone()),
        scheduler_name: spec
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| "default-scheduler".into()),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        ready: condition_true(
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        ),
        deleting: p.metadata.deletion_timestamp.is_some(),
        claims: spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect(),
        in_flight: false,
    }
}

/// The pod's `PodScheduled` condition when kube-scheduler set it False (an
/// attempt failed), as `reason: message`; `None` otherwise.
pub fn scheduling_failure(p: &core::Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default()
            )
        })
}

pub fn node(n: &core::Node) -> Node {
    Node {
        name: text(&n.metadata.name),
        labels: map(&n.metadata.labels),
        ready: condition_true(
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        ),
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        taints: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: t.key.clone(),
                value: text(&t.value),
                effect: t.effect.clone(),
            })
            .collect(),
    }
}

/// Storage quantity in bytes; unparsable quantities count as 0 and are
/// logged, so one bad object cannot stop ingestion.
fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>, what: &str) -> u64 {
    let Some(q) = q else { return 0 };
    steward_wit::quantity::parse(&q.0).unwrap_or_else(|e| {
        tracing::warn!("{what}: {e}");
        0
    })
}

pub fn claim(c: &core::PersistentVolumeClaim) -> Claim {
    let spec = c.spec.as_ref();
    let name = text(&c.metadata.name);
    Claim {
        namespace: text(&c.metadata.namespace),
        uid: text(&c.metadata.uid),
        labels: map(&c.metadata.labels),
        annotations: map(&c.metadata.annotations),
        storage_class: spec.and_then(|s| s.storage_class_name.clone()),
        phase: c
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        volume_name: spec
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty()),
        requested_bytes: bytes(
            spec.and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage")),
            &format!("claim {name} storage request"),
        ),
        access_modes: spec
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default(),
        deleting: c.metadata.deletion_timestamp.is_some(),
        name,
    }
}

/// A selector requirement from its Kubernetes spelling (`In`, `NotIn`,
/// `Exists`, `DoesNotExist`, `Gt`, `Lt`).
pub fn requirement(key: &str, operator: &str, values: &Option<Vec<String>>) -> SelectorRequirement {
    let (operator, values) = match operator {
        "In" => (SelectorOperator::In, values.clone()),
        "NotIn" => (SelectorOperator::NotIn, values.clone()),
        "Exists" => (SelectorOperator::Exists, None),
        "DoesNotExist" => (SelectorOperator::DoesNotExist, None),
        "Gt" => (SelectorOperator::Gt, values.clone()),
        "Lt" => (SelectorOperator::Lt, values.clone()),
        // An operator the API server would not accept: a requirement
        // nothing satisfies, rather than one everything satisfies.
        _ => (SelectorOperator::In, None),
    };
    SelectorRequirement {
        key: key.to_string(),
        operator,
        values: values.unwrap_or_default(),
    }
}

pub fn volume(v: &core::PersistentVolume) -> Volume {
    let spec = v.spec.as_ref();
    let name = text(&v.metadata.name);
    Volume {
        labels: map(&v.metadata.labels),
        annotations: map(&v.metadata.annotations),
        capacity_bytes: bytes(
            spec.and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage")),
            &format!("volume {name} capacity"),
        ),
        storage_class: spec.and_then(|s| s.storage_class_name.clone()),
        phase: v
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        claim: spec
            .and_then(|s| s.claim_ref.as_ref())
            .map(|r| (text(&r.namespace), text(&r.name))),
        csi_driver: spec.and_then(|s| s.csi.as_ref()).map(|c| c.driver.clone()),
        csi_handle: spec
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone()),
        local_path: spec.and_then(|s| s.local.as_ref()).map(|l| l.path.clone()),
        node_affinity: spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|r| {
                r.node_selector_terms
                    .iter()
                    .map(|t| NodeSelectorTerm {
                        match_expressions: t
                            .match_expressions
                            .iter()
                            .flatten()
                            .map(|e| requirement(&e.key, &e.operator, &e.values))
                            .collect(),
                        match_fields: t
                            .match_fields
                            .iter()
                            .flatten()
                            .map(|e| requirement(&e.key, &e.operator, &e.values))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        name,
    }
}

pub fn storage_class(c: &K8sStorageClass) -> StorageClass {
    StorageClass {
        name: text(&c.metadata.name),
        provisioner: c.provisioner.clone(),
        parameters: map(&c.parameters),
        binding_mode: c
            .volume_binding_mode
            .clone()
            .unwrap_or_else(|| "Immediate".into()),
        reclaim_policy: c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
    }
}

pub fn selector(s: &LabelSelector) -> Vec<SelectorRequirement> {
    let labels = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| requirement(k, "In", &Some(vec![v.clone()])));
    let expressions = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| requirement(&e.key, &e.operator, &e.values));
    labels.chain(expressions).collect()
}

pub fn workload(s: &StatefulSet) -> Workload {
    let spec = Some(&s.spec);
    let status = s.status.as_ref();
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let count = |v: Option<i32>| v.unwrap_or(0).max(0) as u32;
    Workload {
        kind: "StatefulSet".into(),
        namespace: text(&s.metadata.namespace),
        name: text(&s.metadata.name),
        uid: text(&s.metadata.uid),
        labels: map(&s.metadata.labels),
        annotations: map(&s.metadata.annotations),
        replicas: count(Some(spec.and_then(|s| s.replicas).unwrap_or(1))),
        partition: strategy
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .map(|p| p.max(0) as u32),
        update_strategy: strategy
            .and_then(|u| u.type_.clone())
            .unwrap_or_else(|| "RollingUpdate".into()),
        generation: s.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        status_replicas: count(status.map(|s| s.replicas)),
        ready_replicas: count(status.and_then(|s| s.ready_replicas)),
        updated_replicas: count(status.and_then(|s| s.updated_replicas)),
        current_revision: status
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_default(),
        update_revision: status
            .and_then(|s| s.update_revision.clone())
            .unwrap_or_default(),
        selector: spec.map(|s| selector(&s.selector)).unwrap_or_default(),
        claim_templates: spec
            .and_then(|s| s.volume_claim_templates.as_ref())
            .into_iter()
            .flatten()
            .map(|t| text(&t.metadata.name))
            .collect(),
        desired_ordinals: (0..count(Some(spec.and_then(|s| s.replicas).unwrap_or(1)))).collect(),
    }
}
