//! The rules, written against [`ClusterView`] and [`PdView`] so they are
//! tested natively on fakes.

use serde::Deserialize;
use steward_sdk::admission::{AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::labels::{self, ordinal};
use steward_sdk::pd::{self, PdView};
use steward_sdk::tidb::{
    self, EVICT_LEADER_BEGIN_ANNOTATION, PROTECTED_PARTITION_ANNOTATION, SCALE_IN_ANNOTATION,
};
use steward_sdk::{Action, Annotation, EventType, PdCluster, Pod, Target, Workload, settings};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// How long a TiKV pod removal waits for its store's leaders to leave
    /// before it is allowed anyway (tidb-operator's `evictLeaderTimeout`,
    /// default 1500 minutes).
    pub evict_leader_timeout_seconds: u64,
    /// The users Steward's reconcile policies act as (its ServiceAccount
    /// in `deploy/`). Only they may lower a partition below, or lower or
    /// remove, `steward.io/protected-partition`, and lower the replicas of
    /// PD and TiKV StatefulSets past members PD still has: the API server
    /// authenticates the user, so no one else can pass for the gate, where
    /// anyone who may update the StatefulSet can write an annotation.
    pub steward_users: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            evict_leader_timeout_seconds: 1500 * 60,
            steward_users: vec!["system:serviceaccount:steward-system:steward".into()],
        }
    }
}

impl settings::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.evict_leader_timeout_seconds == 0 {
            return Err("evictLeaderTimeoutSeconds must be at least 1".into());
        }
        if self.steward_users.iter().any(|u| u.trim().is_empty()) {
            return Err("stewardUsers may not name an empty user".into());
        }
        Ok(())
    }
}

/// The verdict on one request; an `Err` (PD unreachable, a corrupt
/// annotation) leaves the decision to the policy's failure mode.
pub fn review(
    cluster: &impl ClusterView,
    pd: &impl PdView,
    s: &Settings,
    request: &AdmissionRequest,
) -> Result<Verdict, String> {
    if request.resource.2 == "statefulsets" && request.operation == "UPDATE" {
        // Steward's own steps: the upgrade gate's partitions, the scale-in's
        // replicas, each taken only once PD is ready for it.
        if s.steward_users.contains(&request.user_info.username) {
            return Ok(Verdict::allow());
        }
        if request.sub_resource.as_deref() == Some("scale") {
            return scale_update(cluster, pd, request);
        }
        if let (Some(new), Some(old)) = (&request.workload, &request.old_workload) {
            return statefulset_update(pd, old, new);
        }
        return Ok(Verdict::allow());
    }
    if request.resource.2 != "pods" {
        return Ok(Verdict::allow());
    }
    let Some(pod) = request.target_pod(cluster) else {
        return Ok(Verdict::allow());
    };
    let (Some(instance), Some(component)) =
        (tidb::instance(&pod.labels), tidb::component(&pod.labels))
    else {
        return Ok(Verdict::allow());
    };
    let pd_cluster = pd::cluster(&pod.namespace, instance);
    if request.removes_pod() {
        match component {
            "tikv" => tikv_removal(pd, s, request, &pod, instance, &pd_cluster),
            "pd" => pd_removal(pd, request, &pod, &pd_cluster),
            _ => Ok(Verdict::allow()),
        }
    } else if request.operation == "CREATE" && request.sub_resource.is_none() && component == "tikv"
    {
        tikv_creation(pd, &pod, instance, &pd_cluster)
    } else {
        Ok(Verdict::allow())
    }
}

/// A refusal of a pod removal that clears by itself (leaders leaving, PD
/// leadership moving, a store being emptied): a drain's eviction gets 429
/// and retries; a DELETE keeps 403.
fn refuse_until(request: &AdmissionRequest, message: String) -> Verdict {
    if request.evicts_pod() {
        Verdict::retry_later(message)
    } else {
        Verdict::deny(message)
    }
}

/// A user's StatefulSet update: the protected partition holds (neither the
/// partition below it nor the annotation lowered), and a scale-down leaves
/// PD's members and TiKV's data in place.
fn statefulset_update(pd: &impl PdView, old: &Workload, new: &Workload) -> Result<Verdict, String> {
    let who = format!("StatefulSet {}/{}", new.namespace, new.name);
    let (was, is) = (
        tidb::protected_partition(old)?,
        tidb::protected_partition(new)?,
    );
    if let Some(was) = was
        && is.is_none_or(|is| is < was)
    {
        let now = is.map_or("removed".into(), |is| format!("lowered to {is}"));
        return Ok(Verdict::deny(format!(
            "{who}: {PROTECTED_PARTITION_ANNOTATION} may not be {now}: an upgrade gate protects \
             partitions below {was} and only Steward moves the protection, as it steps"
        )));
    }
    let protected = was.max(is);
    let (from, to) = (old.partition.unwrap_or(0), new.partition.unwrap_or(0));
    if let Some(protected) = protected
        && to < from
        && to < protected
    {
        return Ok(Verdict::deny(format!(
            "{who}: rollingUpdate.partition may not go from {from} to {to}: an upgrade gate \
             protects partitions below {protected} ({PROTECTED_PARTITION_ANNOTATION}); it lowers \
             the partition itself, one ordinal at a time"
        )));
    }
    // An Advanced StatefulSet's new delete slots remove pods too.
    let removed = without(&old.desired_ordinals, &new.desired_ordinals);
    scale_down(pd, new, (old.replicas, new.replicas), &removed)
}

/// The ordinals of `from` that `to` lacks.
fn without(from: &[u32], to: &[u32]) -> Vec<u32> {
    from.iter().copied().filter(|o| !to.contains(o)).collect()
}

/// `kubectl scale` changes replicas through the `scale` subresource: the
/// review carries autoscaling/v1 Scale objects, so the StatefulSet itself
/// comes from the cluster view.
fn scale_update(
    cluster: &impl ClusterView,
    pd: &impl PdView,
    request: &AdmissionRequest,
) -> Result<Verdict, String> {
    let (from, to) = (
        scale_replicas(request.old_object.as_deref())?,
        scale_replicas(request.object.as_deref())?,
    );
    let kind = tidb::statefulset_kind(&request.resource.0);
    match cluster.get_workload(kind, &request.namespace, &request.name) {
        Some(workload) => {
            let removed = without(
                &tidb::ordinals_at(&workload, from),
                &tidb::ordinals_at(&workload, to),
            );
            scale_down(pd, &workload, (from, to), &removed)
        }
        None => Ok(Verdict::allow()),
    }
}

/// `spec.replicas` of a Scale object (absent means 0, as in the API).
fn scale_replicas(object: Option<&str>) -> Result<u32, String> {
    let text = object.ok_or("a scale UPDATE without its Scale objects")?;
    let scale: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("a Scale object is not JSON: {e}"))?;
    let replicas = scale["spec"]["replicas"].as_u64().unwrap_or(0);
    u32::try_from(replicas).map_err(|_| format!("a Scale object asks for {replicas} replicas"))
}

/// A user's PD or TiKV scale-down: the pods of the `removed` ordinals (the
/// highest ones when replicas go `from` → `to`; an Advanced StatefulSet's
/// new delete slots) are deleted at once, so it may remove only replicas PD
/// no longer knows (a PD member deleted, a TiKV store Tombstone), and PD's
/// only while every member is healthy. Anything else goes through
/// Steward's scale-in ([`SCALE_IN_ANNOTATION`]), one member at a time.
fn scale_down(
    pd: &impl PdView,
    workload: &Workload,
    (from, to): (u32, u32),
    removed: &[u32],
) -> Result<Verdict, String> {
    let component = tidb::component(&workload.labels);
    if removed.is_empty() || !matches!(component, Some("pd" | "tikv")) {
        return Ok(Verdict::allow());
    }
    let change = |of: &str| {
        if to < from {
            format!("scaling {of}from {from} to {to} replicas")
        } else {
            format!("changing {of}delete slots")
        }
    };
    let Some(instance) = tidb::instance(&workload.labels) else {
        return Ok(Verdict::allow());
    };
    let who = format!("StatefulSet {}/{}", workload.namespace, workload.name);
    let c = pd::cluster(&workload.namespace, instance);
    let in_pd: Vec<String> = if component == Some("pd") {
        let members = pd.members(&c)?;
        let unhealthy: Vec<&str> = members
            .iter()
            .filter(|m| !m.healthy)
            .map(|m| m.name.as_str())
            .collect();
        if !unhealthy.is_empty() {
            return Ok(Verdict::deny(format!(
                "{who}: {} while member(s) {} are unhealthy could lose PD's quorum; wait until \
                 every PD member is healthy",
                change("PD "),
                unhealthy.join(", ")
            )));
        }
        members
            .iter()
            .filter(|m| {
                tidb::ordinal_in(&m.name, &workload.name).is_some_and(|o| removed.contains(&o))
            })
            .map(|m| format!("PD member {} ({})", m.name, m.id))
            .collect()
    } else {
        let stores = pd.stores(&c)?;
        removed
            .iter()
            .filter_map(|o| {
                let pod = format!("{}-{o}", workload.name);
                let store = stores
                    .iter()
                    .find(|s| tidb::is_store_of(&s.address, &pod, instance, &workload.namespace))?;
                Some(format!("store {} of {pod} ({})", store.id, store.state))
            })
            .collect()
    };
    if in_pd.is_empty() {
        return Ok(Verdict::allow());
    }
    // Steward's scale-in takes the highest desired ordinals, as replicas alone do.
    let highest = without(
        &tidb::ordinals_at(workload, from),
        &tidb::ordinals_at(workload, to),
    );
    let how = if removed == highest {
        format!(
            "Steward scales in one member at a time, each leaving PD before its pod and claims \
             go: kubectl annotate statefulset {} -n {} {SCALE_IN_ANNOTATION}={to}",
            workload.name, workload.namespace
        )
    } else {
        "take each out of PD first (delete the PD member; delete the TiKV store and wait until \
         it is Tombstone), then change the delete slots"
            .to_string()
    };
    Ok(Verdict::deny(format!(
        "{who}: {} would delete pods PD still counts on: {}; {how}",
        change(""),
        in_pd.join(", ")
    )))
}

fn tikv_removal(
    pd: &impl PdView,
    s: &Settings,
    request: &AdmissionRequest,
    pod: &Pod,
    instance: &str,
    pd_cluster: &PdCluster,
) -> Result<Verdict, String> {
    let who = format!("TiKV pod {}/{}", pod.namespace, pod.name);
    let stores = pd.stores(pd_cluster)?;
    let Some(store) = stores
        .iter()
        .find(|st| tidb::is_store_of(&st.address, &pod.name, instance, &pod.namespace))
    else {
        return Ok(Verdict::allow());
    };
    let id = store.id;
    match store.state.as_str() {
        "Tombstone" | "Down" => return Ok(Verdict::allow()),
        "Up" => {}
        "Offline" => {
            return Ok(refuse_until(
                request,
                format!(
                    "{who}: store {id} is Offline: PD is moving its data away; removing the pod \
                     now would lose those replicas. Wait until the store is Tombstone"
                ),
            ));
        }
        other => {
            return Ok(Verdict::deny(format!(
                "{who}: store {id} is {other}; PD cannot move its leaders until it is Up again"
            )));
        }
    }
    if store.leader_count == 0 {
        return Ok(Verdict::allow());
    }
    let began = match labels::get(&pod.annotations, EVICT_LEADER_BEGIN_ANNOTATION) {
        None => None,
        Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
            format!(
                "annotation {EVICT_LEADER_BEGIN_ANNOTATION} of {who} is `{text}`, not Unix \
                 milliseconds; fix or remove it"
            )
        })?),
    };
    let timeout_ms = (s.evict_leader_timeout_seconds as i64).saturating_mul(1000);
    let leaders = store.leader_count;
    let begin = Action::PdEvictLeaderBegin((pd_cluster.clone(), id));
    let Some(began) = began else {
        let verb = if request.dry_run {
            "would begin"
        } else {
            "began"
        };
        let message = format!(
            "{who}: store {id} still holds {leaders} Raft leader(s); Steward {verb} evicting them \
             through PD. Retry once the store has none (or after {}s)",
            s.evict_leader_timeout_seconds
        );
        return Ok(refuse_until(request, message.clone())
            .action(begin)
            .action(Action::Annotate((
                Target::Pod(pod.name.clone()),
                vec![Annotation {
                    key: EVICT_LEADER_BEGIN_ANNOTATION.into(),
                    value: Some(request.now_ms.to_string()),
                }],
            )))
            .action(Action::EmitEvent((
                EventType::Normal,
                "EvictingLeaders".into(),
                message,
            ))));
    };
    let waited_ms = request.now_ms.saturating_sub(began);
    if waited_ms >= timeout_ms {
        return Ok(Verdict::allow().warning(format!(
            "{who}: store {id} still holds {leaders} Raft leader(s), but the leader eviction began \
             {}s ago, past the {}s timeout",
            waited_ms / 1000,
            s.evict_leader_timeout_seconds
        )));
    }
    let mut verdict = refuse_until(
        request,
        format!(
            "{who}: evicting Raft leaders from store {id}: {leaders} left after {}s (timeout \
             {}s); retry later",
            waited_ms / 1000,
            s.evict_leader_timeout_seconds
        ),
    );
    // PD may have lost the scheduler (restart, manual removal): ask again.
    if !pd
        .schedulers(pd_cluster)?
        .contains(&pd::evict_leader_scheduler(id))
    {
        verdict = verdict.action(begin);
    }
    Ok(verdict)
}

fn pd_removal(
    pd: &impl PdView,
    request: &AdmissionRequest,
    pod: &Pod,
    pd_cluster: &PdCluster,
) -> Result<Verdict, String> {
    let leader = pd.leader(pd_cluster)?;
    if leader != pod.name {
        return Ok(Verdict::allow());
    }
    let who = format!("PD pod {}/{}", pod.namespace, pod.name);
    let members = pd.members(pd_cluster)?;
    let Some(target) = transfer_target(&pod.name, &members) else {
        return Ok(Verdict::deny(format!(
            "{who} is the PD leader and no other PD member is healthy to take over; removing it \
             now would leave PD without a leader"
        )));
    };
    let verb = if request.dry_run {
        "would move"
    } else {
        "is moving"
    };
    let message =
        format!("{who} is the PD leader; Steward {verb} leadership to {target}. Retry once it has");
    Ok(refuse_until(request, message.clone())
        .action(Action::PdTransferLeader((pd_cluster.clone(), target)))
        .action(Action::EmitEvent((
            EventType::Normal,
            "TransferringPDLeader".into(),
            message,
        ))))
}

/// tidb-operator's choice: the highest healthy ordinal above the leader's
/// (already upgraded in a rolling upgrade), else the lowest below it.
fn transfer_target(leader: &str, members: &[steward_sdk::Member]) -> Option<String> {
    let mine = ordinal(leader);
    let mut healthy: Vec<(Option<u32>, &str)> = members
        .iter()
        .filter(|m| m.healthy && m.name != leader)
        .map(|m| (ordinal(&m.name), m.name.as_str()))
        .collect();
    healthy.sort();
    let above = healthy.iter().rev().find(|(o, _)| *o > mine);
    above
        .or_else(|| healthy.first())
        .map(|(_, name)| name.to_string())
}

fn tikv_creation(
    pd: &impl PdView,
    pod: &Pod,
    instance: &str,
    pd_cluster: &PdCluster,
) -> Result<Verdict, String> {
    // A TiKV that is not bootstrapped yet has no PD to ask: allow.
    let Ok(stores) = pd.stores(pd_cluster) else {
        return Ok(Verdict::allow());
    };
    let Some(store) = stores
        .iter()
        .find(|st| tidb::is_store_of(&st.address, &pod.name, instance, &pod.namespace))
    else {
        return Ok(Verdict::allow());
    };
    let running = pd.schedulers(pd_cluster).unwrap_or_default();
    if running.contains(&pd::evict_leader_scheduler(store.id)) {
        return Ok(
            Verdict::allow().action(Action::PdEvictLeaderEnd((pd_cluster.clone(), store.id)))
        );
    }
    Ok(Verdict::allow())
}

#[cfg(test)]
mod tests;
