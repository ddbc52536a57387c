//! The workload state a reconcile policy sees, read from the cluster cache:
//! the StatefulSet, its pods by ordinal, its claims and the pods' nodes.

use steward_cluster::ClusterQuery;
use steward_wit::{Pod, Replica, Workload, WorkloadState};

/// Label the StatefulSet controller puts on each pod: the revision the pod
/// was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The state of `workload` as the cache has it, at `now_ms`.
pub fn observe(query: &ClusterQuery, workload: Workload, now_ms: i64) -> WorkloadState {
    let mut replicas: Vec<Replica> = query
        .list_pods(&workload.namespace, &workload.selector)
        .into_iter()
        .filter_map(|pod| replica_of(&workload, pod))
        .collect();
    replicas.sort_by_key(|r| r.ordinal);
    // Claims of every slot up to the highest desired ordinal or pod.
    let past_desired = workload.desired_ordinals.last().map_or(0, |o| o + 1);
    let past_pods = replicas.last().map_or(0, |r| r.ordinal + 1);
    let ordinals = past_desired.max(past_pods);
    let (namespace, name) = (&workload.namespace, &workload.name);
    let claims = workload
        .claim_templates
        .iter()
        .flat_map(|template| {
            (0..ordinals)
                .filter_map(move |o| query.get_claim(namespace, &claim_name(template, name, o)))
        })
        .collect();
    let mut node_names: Vec<&str> = replicas
        .iter()
        .filter_map(|r| r.pod.node_name.as_deref())
        .collect();
    node_names.sort_unstable();
    node_names.dedup();
    let nodes = node_names
        .into_iter()
        .filter_map(|n| query.get_node(n))
        .collect();
    WorkloadState {
        workload,
        replicas,
        claims,
        nodes,
        now_ms,
    }
}

/// Whether two views of one StatefulSet agree on everything a policy
/// reads of it (spec, status, labels and annotations).
pub fn same_version(a: &Workload, b: &Workload) -> bool {
    a.uid == b.uid
        && a.generation == b.generation
        && a.observed_generation == b.observed_generation
        && a.replicas == b.replicas
        && a.partition == b.partition
        && a.update_strategy == b.update_strategy
        && a.status_replicas == b.status_replicas
        && a.ready_replicas == b.ready_replicas
        && a.updated_replicas == b.updated_replicas
        && a.current_revision == b.current_revision
        && a.update_revision == b.update_revision
        && a.labels == b.labels
        && a.annotations == b.annotations
}

/// The claim the StatefulSet controller creates from `template` for
/// ordinal `ordinal`.
pub fn claim_name(template: &str, statefulset: &str, ordinal: u32) -> String {
    format!("{template}-{statefulset}-{ordinal}")
}

/// `pod` as a replica of `workload`, if the StatefulSet owns it.
fn replica_of(workload: &Workload, pod: Pod) -> Option<Replica> {
    let owned = pod
        .owner
        .as_ref()
        .is_some_and(|o| o.kind == workload.kind && o.name == workload.name);
    if !owned {
        return None;
    }
    let ordinal = pod
        .name
        .strip_prefix(&workload.name)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    let revision = pod
        .labels
        .iter()
        .find(|(k, _)| k == REVISION_LABEL)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Some(Replica {
        ordinal,
        revision,
        pod,
    })
}

/// The StatefulSet a claim name belongs to, among `(name, claim
/// templates)` of the known StatefulSets: `<template>-<name>-<ordinal>`.
pub fn statefulset_of_claim<'a>(
    claim: &str,
    statefulsets: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Option<&'a str> {
    let (prefix, ordinal) = claim.rsplit_once('-')?;
    ordinal.parse::<u32>().ok()?;
    statefulsets.into_iter().find_map(|(name, templates)| {
        templates
            .iter()
            .any(|t| prefix.strip_prefix(t.as_str()) == Some(&format!("-{name}")))
            .then_some(name)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use steward_cluster::ClusterCache;
    use steward_wit::{Claim, build};

    /// A settled three-replica TiKV StatefulSet held at its partition.
    pub(in crate::reconcile) fn workload() -> Workload {
        build::statefulset("tidb", "basic-tikv", 3)
            .partition(3)
            .claim_templates(&["tikv"])
    }

    fn pod(name: &str, owner: &str, revision: Option<&str>) -> Pod {
        let pod = build::pod("tidb", name).of_statefulset(owner);
        match revision {
            Some(r) => pod.label(REVISION_LABEL, r),
            None => pod,
        }
    }

    fn claim(name: &str) -> Claim {
        Claim {
            namespace: "tidb".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: vec![],
            annotations: vec![],
            storage_class: None,
            phase: "Bound".into(),
            volume_name: None,
            requested_bytes: 0,
            access_modes: vec![],
            deleting: false,
        }
    }

    #[test]
    fn owned_pods_by_ordinal_with_revision_and_template_claims() {
        let cache = Arc::new(ClusterCache::default());
        cache.upsert_pod(pod("basic-tikv-2", "basic-tikv", Some("r2")));
        cache.upsert_pod(pod("basic-tikv-0", "basic-tikv", None));
        cache.upsert_pod(pod("basic-tikv-extra-0", "basic-tikv-extra", Some("x")));
        cache.upsert_pod(pod("basic-pd-0", "basic-pd", Some("p")));
        cache.upsert_claim(claim("tikv-basic-tikv-0"));
        cache.upsert_claim(claim("tikv-basic-tikv-2"));
        cache.upsert_claim(claim("pd-basic-pd-0"));
        let state = observe(&ClusterQuery::new(cache), workload(), 42);
        let seen: Vec<(u32, &str)> = state
            .replicas
            .iter()
            .map(|r| (r.ordinal, r.revision.as_str()))
            .collect();
        assert_eq!(seen, [(0, ""), (2, "r2")]);
        let claims: Vec<&str> = state.claims.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(claims, ["tikv-basic-tikv-0", "tikv-basic-tikv-2"]);
        assert_eq!(state.now_ms, 42);
    }

    #[test]
    fn views_differ_when_the_status_or_annotations_moved_on() {
        let cached = workload();
        assert!(same_version(&cached, &workload()));
        let mut newer = workload();
        newer.update_revision = "r2".into();
        assert!(!same_version(&cached, &newer));
        let mut annotated = workload();
        annotated
            .annotations
            .push(("steward.io/upgrade-gate".into(), "{}".into()));
        assert!(!same_version(&cached, &annotated));
    }

    #[test]
    fn claims_map_back_to_their_statefulset() {
        let pd = vec!["pd".to_string()];
        let tikv = vec!["tikv".to_string(), "raft".to_string()];
        let sets = || [("basic-pd", pd.as_slice()), ("basic-tikv", tikv.as_slice())];
        assert_eq!(
            statefulset_of_claim("raft-basic-tikv-4", sets()),
            Some("basic-tikv")
        );
        assert_eq!(
            statefulset_of_claim("pd-basic-pd-0", sets()),
            Some("basic-pd")
        );
        assert_eq!(statefulset_of_claim("pd-basic-tikv-0", sets()), None);
        assert_eq!(statefulset_of_claim("pd-basic-pd-x", sets()), None);
    }
}
