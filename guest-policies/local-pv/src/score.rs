//! `prioritize`: 0..=10 per candidate from the free capacity of the pools
//! the pod's new claims draw on (formulas in the crate docs).

use steward_sdk::cluster::ClusterView;
use steward_sdk::scheduler::{Candidates, NodeScore};
use steward_sdk::{Pod, PoolCapacity, PoolState};

use crate::claims::{self, PoolDemand};
use crate::settings::{Scoring, Settings};

/// TopoLVM's `capacityToScore`: `log2(free GiB / divisor)` clamped to
/// 1..=10; under 1 GiB scores 1 if anything is free, else 0.
pub fn capacity_to_score(bytes: u64, divisor: f64) -> u8 {
    let gib = bytes >> 30;
    if gib == 0 {
        return u8::from(bytes > 0);
    }
    let score = (gib as f64 / divisor).log2().floor();
    score.clamp(1.0, 10.0) as u8
}

/// HwameiStor's per-volume score: the share of the pool's free space left
/// after the volume, in percent (`int((free - request) / free * 100)`).
pub fn hwameistor_volume_score(free: u64, request: u64) -> i64 {
    if free == 0 {
        return 0;
    }
    ((free as f64 - request as f64) / free as f64 * 100.0) as i64
}

fn node_score(s: &Settings, d: &PoolDemand, p: &PoolCapacity) -> u8 {
    if p.state != PoolState::Ready {
        return 0;
    }
    let free = p.free_bytes.saturating_sub(p.reserved_bytes);
    let divisor = s.divisor_of(&d.pool);
    match s.scoring {
        Scoring::Spread => capacity_to_score(free, divisor),
        Scoring::BinPack if free < d.bytes() => 0,
        Scoring::BinPack => 10 - capacity_to_score(free - d.bytes(), divisor),
        Scoring::Hwameistor => {
            let sum: i64 = d
                .claims
                .iter()
                .map(|c| hwameistor_volume_score(free, c.bytes).max(0))
                .sum();
            (sum / d.claims.len().max(1) as i64 / 10).clamp(0, 10) as u8
        }
    }
}

/// Scores candidates; no new pool claims means no preference (empty list).
pub fn prioritize(
    cluster: &impl ClusterView,
    s: &Settings,
    pod: &Pod,
    nodes: &Candidates,
) -> Vec<NodeScore> {
    if pod.claims.is_empty() || nodes.nodes.is_empty() {
        return Vec::new();
    }
    let Ok(demands) = claims::demands(cluster, s, pod) else {
        return Vec::new();
    };
    if demands.pools.is_empty() {
        return Vec::new();
    }
    let mut scores = vec![10u8; nodes.nodes.len()];
    let source = s.capacity_source.wit();
    for d in &demands.pools {
        let pools = cluster.pool_capacities(source, &d.pool, &d.classes, &pod.uid, &nodes.nodes);
        for (score, p) in scores.iter_mut().zip(pools.iter()) {
            *score = (*score).min(node_score(s, d, &p));
        }
    }
    scores
        .into_iter()
        .enumerate()
        .map(|(i, score)| NodeScore {
            node: i as u32,
            score,
        })
        .collect()
}
