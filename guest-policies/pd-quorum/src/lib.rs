//! pd-quorum: places PD and TiKV pods so that losing one topology domain
//! never loses a Raft majority (tidb-operator's tidb-scheduler HA predicate).
//!
//! - PD: at most `max(1, (replicas + 1) / 2 - 1)` pods per domain.
//! - TiKV: one per domain until three domains host TiKV, then
//!   `ceil(replicas / 3)`; fewer than 3 replicas: no limit.
//! - Only the least-loaded eligible domains stay open (strict balancing).
//! - Failure members and ordinals beyond `replicas` are not counted.
//! - Nodes without the topology label are never eligible.
//! - A pod whose claim is bound, offered exactly one node, goes back there.
//! - While another pod of the same component is between filter and bind,
//!   the pod waits: counts are only trustworthy one placement at a time.

mod quorum;

pub use quorum::{Settings, filter};

use steward_sdk::Pod;
use steward_sdk::cluster::ClusterView;
use steward_sdk::scheduler::{Candidates, FilterResult, SchedulerPolicy};

pub struct PdQuorum;

impl SchedulerPolicy for PdQuorum {
    type Settings = Settings;

    fn node_labels(s: &Settings) -> Vec<String> {
        vec![s.topology_key.clone()]
    }

    fn filter(
        cluster: &impl ClusterView,
        s: &Settings,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String> {
        Ok(filter(cluster, s, pod, nodes).into())
    }
}

steward_sdk::export_scheduler_policy!(PdQuorum);
