//! Which policies can serve with the kinds the API server has. A policy
//! whose required kinds (its capacity sources') are not served is
//! degraded: it still evaluates, seeing none of those objects, and
//! `GET /status` says which kinds are missing. Kinds a policy only reads
//! where served (tidb-operator's) never degrade it. Readiness: the core
//! kinds have synced, and every served kind of each policy that is not
//! degraded has.

use steward_cluster::ClusterCache;
use steward_cluster::kinds::{KindState, not_served_sentence};

use crate::policy::PolicySet;
use crate::reload::status::{Report, State};

/// `report` with each serving policy of `set` whose kinds are not served
/// marked degraded, and why.
pub fn with_missing_kinds(mut report: Report, set: &PolicySet, cluster: &ClusterCache) -> Report {
    for p in &set.scheduler {
        let missing = cluster.not_served(p.required_kinds());
        let Some(why) = not_served_sentence(&missing) else {
            continue;
        };
        if let Some(status) = report.policies.iter_mut().find(|s| s.id == p.id) {
            if status.state == State::Serving {
                status.state = State::Degraded;
            }
            status.missing_kinds = Some(why);
        }
    }
    report
}

/// Ready, or why not: the core kinds have not synced, or a kind a policy
/// that is not degraded needs is still being listed.
pub fn readiness(set: &PolicySet, cluster: &ClusterCache) -> Result<(), String> {
    if !cluster.is_synced() {
        return Err("the cluster cache has not synced yet".into());
    }
    for p in &set.scheduler {
        if !cluster.not_served(p.required_kinds()).is_empty() {
            continue;
        }
        if let Some(kind) = p
            .kinds()
            .into_iter()
            .find(|&k| cluster.kind_state(k) == KindState::Listing)
        {
            return Err(format!(
                "policy {} waits for the initial list of {kind}",
                p.id
            ));
        }
    }
    Ok(())
}
