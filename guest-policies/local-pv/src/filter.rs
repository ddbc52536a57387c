//! The filter: pins of bound local volumes, room for new claims per pool
//! and per disk type, and enough nodes for HA claims.

use steward_sdk::cluster::ClusterView;
use steward_sdk::filter::Rejections;
use steward_sdk::quantity::Bytes;
use steward_sdk::scheduler::Candidates;
use steward_sdk::{NodeDisks, Pod, PoolCapacity, PoolState};

use crate::claims::{self, Blocked, DiskDemand, Pin, PoolDemand};
use crate::settings::Settings;

/// Each refused candidate with the first reason it was refused for.
struct Verdict {
    open: Vec<bool>,
    out: Rejections,
}

impl Verdict {
    fn refuse(&mut self, i: usize, reason: impl FnOnce() -> String, unresolvable: bool) {
        if self.open[i] {
            self.open[i] = false;
            self.out.reject(i, reason(), unresolvable);
        }
    }

    fn open(&self, i: usize) -> bool {
        self.open[i]
    }
}

fn name(cluster: &impl ClusterView, id: u32) -> String {
    cluster.node_name(id).unwrap_or_else(|| format!("#{id}"))
}

/// Why a node's pool cannot take a demand. Texts are written once every
/// refused node is known, so their names come in one query.
enum Shortfall {
    Unusable(PoolState),
    Bytes { free: u64, reserved: u64, room: u64 },
    Volumes { free: u32, room: u32 },
}

/// Decides which candidate nodes the pod's claims rule out. Pods without
/// claims of local volumes pass untouched.
pub fn filter(
    cluster: &impl ClusterView,
    s: &Settings,
    pod: &Pod,
    nodes: &Candidates,
) -> Rejections {
    let count = nodes.nodes.len();
    if count == 0 || pod.claims.is_empty() {
        return Rejections::default();
    }
    let mut v = Verdict {
        open: vec![true; count],
        out: Rejections::default(),
    };
    let demands = match claims::demands(cluster, s, pod) {
        Ok(d) => d,
        Err(Blocked {
            reason,
            unresolvable,
        }) => {
            let mut out = Rejections::default();
            for i in 0..count {
                out.reject(i, &reason, unresolvable);
            }
            return out;
        }
    };
    for pin in &demands.pins {
        check_pin(cluster, pin, &nodes.nodes, &mut v);
    }
    for d in &demands.pools {
        check_pool(cluster, s, pod, d, &nodes.nodes, &mut v);
    }
    for d in &demands.disks {
        check_disks(cluster, pod, d, &nodes.nodes, &mut v);
    }
    v.out
}

fn check_pin(cluster: &impl ClusterView, pin: &Pin, ids: &[u32], v: &mut Verdict) {
    match pin {
        Pin::Replicas {
            claim,
            volume,
            hosts,
            published,
        } => {
            let allowed: Vec<u32> = match published {
                Some(node) => cluster.node_id(node).into_iter().collect(),
                None => hosts.iter().filter_map(|h| cluster.node_id(h)).collect(),
            };
            let reason = || match published {
                Some(node) => format!(
                    "{claim}'s volume {volume} is published on {node}: not the published node"
                ),
                None => format!(
                    "{claim}'s volume {volume} has its replicas on {}; the pod must run on one \
                     of them",
                    hosts.join(", ")
                ),
            };
            let mut text: Option<String> = None;
            for (i, id) in ids.iter().enumerate() {
                if !allowed.contains(id) {
                    let t = text.get_or_insert_with(reason).clone();
                    v.refuse(i, || t, true);
                }
            }
        }
        Pin::Affinity {
            claim,
            volume,
            terms,
        } => {
            let matched = cluster.match_node_affinity(terms, ids);
            let reason = format!(
                "{claim}'s local volume {volume} is on another node: its node affinity requires {}",
                claims::describe_terms(terms)
            );
            for (i, ok) in matched.into_iter().enumerate() {
                if !ok {
                    v.refuse(i, || reason.clone(), true);
                }
            }
        }
    }
}

/// Room left for the pod in a pool: (bytes, volumes), reservations taken.
fn room(p: &PoolCapacity) -> (u64, u32) {
    (
        p.free_bytes.saturating_sub(p.reserved_bytes),
        p.free_volumes.saturating_sub(p.reserved_volumes),
    )
}

/// Whether a node's pool takes the whole demand.
fn fits(p: &PoolCapacity, d: &PoolDemand) -> bool {
    let (bytes, volumes) = room(p);
    p.state == PoolState::Ready && bytes >= d.bytes() && volumes >= d.volumes()
}

fn check_pool(
    cluster: &impl ClusterView,
    s: &Settings,
    pod: &Pod,
    d: &PoolDemand,
    ids: &[u32],
    v: &mut Verdict,
) {
    let source = s.capacity_source.wit();
    let pools = cluster.pool_capacities(source, &d.pool, &d.classes, &pod.uid, ids);
    let need = d.bytes();
    let volumes = d.volumes();
    let mut short: Vec<(usize, u32, Shortfall)> = Vec::new();
    for (i, (p, &id)) in pools.iter().zip(ids).enumerate() {
        if !v.open(i) {
            continue;
        }
        let (bytes, slots) = room(&p);
        if p.state != PoolState::Ready {
            short.push((i, id, Shortfall::Unusable(p.state)));
        } else if bytes < need {
            let (free, reserved) = (p.free_bytes, p.reserved_bytes);
            short.push((
                i,
                id,
                Shortfall::Bytes {
                    free,
                    reserved,
                    room: bytes,
                },
            ));
        } else if slots < volumes {
            let free = p.free_volumes;
            short.push((i, id, Shortfall::Volumes { free, room: slots }));
        }
    }
    let short_ids: Vec<u32> = short.iter().map(|&(_, id, _)| id).collect();
    let names = cluster.node_names(&short_ids);
    for ((i, id, shortfall), node) in short.into_iter().zip(names) {
        let node = || node.unwrap_or_else(|| format!("#{id}"));
        match shortfall {
            Shortfall::Unusable(state) => {
                let why = || {
                    cluster
                        .pool_problem(source, &d.pool, id)
                        .unwrap_or_else(|| format!("pool {} on {} is not usable", d.pool, node()))
                };
                // Bad figures may be fixed by the agent's next report.
                v.refuse(i, why, state != PoolState::BadData);
            }
            Shortfall::Bytes {
                free,
                reserved,
                room,
            } => {
                let reserved_text = if reserved > 0 {
                    format!(
                        " ({} reported, {} of it reserved for claims of pods placed there \
                         whose volumes the source does not count yet)",
                        Bytes(free),
                        Bytes(reserved)
                    )
                } else {
                    String::new()
                };
                let reason = || {
                    format!(
                        "pool {} on {} has {} free{reserved_text}; the pod's new claims need {}",
                        d.pool,
                        node(),
                        Bytes(room),
                        Bytes(need)
                    )
                };
                v.refuse(i, reason, free < need);
            }
            Shortfall::Volumes { free, room } => {
                let reason = || {
                    format!(
                        "pool {} on {} can hold {room} more volume(s); the pod's new claims \
                         need {volumes}",
                        d.pool,
                        node()
                    )
                };
                v.refuse(i, reason, free < volumes);
            }
        }
    }
    if let Some(replicas) = d.ha_replicas() {
        check_ha(cluster, s, pod, d, replicas, ids, v);
    }
}

/// HA claims need `replicas` distinct schedulable nodes cluster-wide whose
/// pool takes the demand (HwameiStor places the other replicas there).
fn check_ha(
    cluster: &impl ClusterView,
    s: &Settings,
    pod: &Pod,
    d: &PoolDemand,
    replicas: u32,
    ids: &[u32],
    v: &mut Verdict,
) {
    let source = s.capacity_source.wit();
    let all = cluster.storage_nodes(source);
    let pools = cluster.pool_capacities(source, &d.pool, &d.classes, &pod.uid, &all);
    let eligible: Vec<u32> = all
        .iter()
        .zip(pools.iter())
        .filter(|(_, p)| p.schedulable && fits(p, d))
        .map(|(&id, _)| id)
        .collect();
    if eligible.len() >= replicas as usize {
        return;
    }
    let ha: Vec<&str> = d
        .claims
        .iter()
        .filter(|c| c.replicas >= 2)
        .map(|c| c.claim.as_str())
        .collect();
    let names: Vec<String> = eligible.iter().map(|&id| name(cluster, id)).collect();
    let reason = format!(
        "HA claim(s) {} of pod {}/{} need {replicas} replicas on distinct Ready nodes, but only \
         {} node(s) have {} free in pool {}{}",
        ha.join(", "),
        pod.namespace,
        pod.name,
        eligible.len(),
        Bytes(d.bytes()),
        d.pool,
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    );
    for i in 0..ids.len() {
        v.refuse(i, || reason.clone(), false);
    }
}

/// Whole-disk claims: enough free disks of the type, largest claim to
/// largest disk (reserved claims of other pods take disks first).
fn check_disks(
    cluster: &impl ClusterView,
    pod: &Pod,
    d: &DiskDemand,
    ids: &[u32],
    v: &mut Verdict,
) {
    let disks = cluster.free_disks(&d.disk_type, &d.classes, &pod.uid, ids);
    for (i, (n, &id)) in disks.iter().zip(ids).enumerate() {
        if !v.open(i) {
            continue;
        }
        if let Some((reason, unresolvable)) = disk_refusal(n, d, &name(cluster, id)) {
            v.refuse(i, || reason, unresolvable);
        }
    }
}

fn disk_refusal(n: &NodeDisks, d: &DiskDemand, node: &str) -> Option<(String, bool)> {
    let kind = &d.disk_type;
    match n.state {
        PoolState::Ready => {}
        PoolState::Missing => {
            return Some((format!("node {node} has no HwameiStor LocalDiskNode"), true));
        }
        PoolState::NotReady => {
            return Some((format!("LocalDiskNode {node} is not Ready"), true));
        }
        PoolState::BadData => {
            let why = n.problem.clone().unwrap_or_default();
            return Some((
                format!("LocalDiskNode {node} has unusable figures: {why}"),
                false,
            ));
        }
    }
    let mut wanted: Vec<u64> = n
        .reserved
        .iter()
        .copied()
        .chain(d.claims.iter().map(|c| c.1))
        .collect();
    wanted.sort_unstable_by(|a, b| b.cmp(a));
    if wanted.len() > n.free.len() {
        let reserved = if n.reserved.is_empty() {
            String::new()
        } else {
            format!(
                ", {} of them reserved for pods placed there whose volumes the source does \
                 not count yet",
                n.reserved.len()
            )
        };
        return Some((
            format!(
                "node {node} has {} free {kind} disk(s){reserved}; the pod's new disk claims \
                 need {}",
                n.free.len(),
                d.claims.len()
            ),
            true,
        ));
    }
    let short = wanted.iter().zip(&n.free).find(|(w, f)| w > f);
    short.map(|(w, f)| {
        (
            format!(
                "node {node}'s free {kind} disks are too small: a claim of {} would get a \
                 disk of {} (claims go largest first to the largest disks)",
                Bytes(*w),
                Bytes(*f)
            ),
            true,
        )
    })
}
