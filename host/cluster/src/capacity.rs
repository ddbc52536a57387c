//! Storage queries of the cluster view: pools and disks per node id, in
//! batches, with the capacity Steward's own placements reserved.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::kinds::{OptionalKind, not_served_sentence};
use super::storage::{CsiCapacity, NO_POOL, Pool, PoolFigures};
use super::{ClusterQuery, State, selector_matches};
use steward_wit::{
    CapacitySource, LocalVolume, NodeDisks, NodeSelectorTerm, PoolColumns, PoolState, StorageClass,
};

/// Capacity reserved on one node.
#[derive(Default)]
struct Reserved {
    bytes: u64,
    volumes: u32,
    claims: Vec<u64>,
}

/// What one node's source says about one pool.
enum Figures {
    Ready(Pool),
    Missing(String),
    NotReady(String),
    Bad(String),
}

impl ClusterQuery {
    pub fn list_storage_classes(&self) -> Vec<StorageClass> {
        let s = self.cache.state.read();
        let mut out: Vec<StorageClass> = s.storage_classes.values().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn get_local_volume(&self, name: &str) -> Option<LocalVolume> {
        self.cache
            .state
            .read()
            .storage
            .local_volumes
            .get(name)
            .cloned()
    }

    pub fn node_id(&self, name: &str) -> Option<u32> {
        self.cache.state.read().nodes.id(name)
    }

    /// Kubernetes semantics: terms ORed, requirements ANDed; `matchFields`
    /// knows `metadata.name`. No terms: no node matches (an affinity that
    /// says nothing pins nothing; callers decide what that means).
    pub fn match_node_affinity(&self, terms: &[NodeSelectorTerm], ids: &[u32]) -> Vec<bool> {
        let s = self.cache.state.read();
        ids.iter()
            .map(|&id| {
                let Some(node) = s.nodes.nodes.get(id as usize).and_then(Option::as_ref) else {
                    return false;
                };
                let fields = [("metadata.name".to_string(), node.name.clone())];
                terms.iter().any(|t| {
                    (!t.match_expressions.is_empty() || !t.match_fields.is_empty())
                        && selector_matches(&node.labels, &t.match_expressions)
                        && selector_matches(&fields, &t.match_fields)
                })
            })
            .collect()
    }

    pub fn storage_nodes(&self, source: CapacitySource) -> Vec<u32> {
        let s = self.cache.state.read();
        let with = |present: &dyn Fn(usize) -> bool, len: usize| {
            (0..len).filter(|&i| present(i)).map(|i| i as u32).collect()
        };
        match source {
            CapacitySource::Hwameistor => {
                with(&|i| s.storage.lvm[i].is_some(), s.storage.lvm.len())
            }
            CapacitySource::Topolvm => with(
                &|i| !s.storage.topolvm[i].is_empty(),
                s.storage.topolvm.len(),
            ),
            CapacitySource::CsiStorageCapacity => {
                let live: Vec<u32> = (0..s.nodes.nodes.len() as u32)
                    .filter(|&i| s.nodes.nodes[i as usize].is_some())
                    .collect();
                let mut classes: Vec<&str> = s
                    .storage
                    .csi
                    .values()
                    .map(|c| c.storage_class.as_str())
                    .collect();
                classes.sort_unstable();
                classes.dedup();
                let mut covered = vec![false; s.nodes.nodes.len()];
                for class in classes {
                    for (id, found) in live.iter().zip(csi_by_node(&s, class, &live)) {
                        covered[*id as usize] |= found.is_some();
                    }
                }
                with(&|i| covered[i], covered.len())
            }
        }
    }

    pub fn pool_capacities(
        &self,
        source: CapacitySource,
        pool: &str,
        classes: &[String],
        except_pod: &str,
        ids: &[u32],
    ) -> PoolColumns {
        let s = self.cache.state.read();
        let reserved = self.reserved(&s, classes, except_pod);
        let columns = match source {
            CapacitySource::Hwameistor => s.storage.lvm_pools.pools.get(pool),
            CapacitySource::Topolvm => s.storage.topolvm_pools.pools.get(pool),
            CapacitySource::CsiStorageCapacity => None,
        };
        let csi =
            (source == CapacitySource::CsiStorageCapacity).then(|| csi_by_node(&s, pool, ids));
        let n = ids.len();
        let mut out = PoolColumns {
            state: Vec::with_capacity(n),
            schedulable: Vec::with_capacity(n),
            free_bytes: Vec::with_capacity(n),
            total_bytes: Vec::with_capacity(n),
            free_volumes: Vec::with_capacity(n),
            reserved_bytes: Vec::with_capacity(n),
            reserved_volumes: Vec::with_capacity(n),
        };
        for (i, &id) in ids.iter().enumerate() {
            // A pool no node reports has no column: its per-node objects
            // say why (an agent not Ready outranks a missing pool).
            let (state, pool) = match (columns, &csi) {
                (Some(c), _) => c.get(id),
                (None, Some(found)) => csi_figures(found[i].as_ref(), pool).state(),
                (None, None) => figures(&s, source, pool, id).state(),
            };
            let r = if reserved.is_empty() {
                None
            } else {
                reserved.get(&id)
            };
            out.state.push(state_code(state));
            out.schedulable.push(u8::from(schedulable(&s, id)));
            out.free_bytes.push(pool.free_bytes);
            out.total_bytes.push(pool.total_bytes);
            out.free_volumes.push(pool.free_volumes);
            out.reserved_bytes.push(r.map_or(0, |r| r.bytes));
            out.reserved_volumes.push(r.map_or(0, |r| r.volumes));
        }
        out
    }

    pub fn pool_problem(&self, source: CapacitySource, pool: &str, id: u32) -> Option<String> {
        let missing = self
            .cache
            .not_served(OptionalKind::of_source(source).iter().copied());
        if let Some(why) = not_served_sentence(&missing) {
            return Some(why);
        }
        let s = self.cache.state.read();
        let figures = figures(&s, source, pool, id);
        let node = s
            .nodes
            .names
            .get(id as usize)
            .map_or_else(|| format!("#{id}"), String::clone);
        match figures {
            Figures::Ready(_) => None,
            Figures::Missing(what) | Figures::NotReady(what) => Some(what.replace("{node}", &node)),
            Figures::Bad(why) => Some(why),
        }
    }

    pub fn free_disks(
        &self,
        disk_type: &str,
        classes: &[String],
        except_pod: &str,
        ids: &[u32],
    ) -> Vec<NodeDisks> {
        let s = self.cache.state.read();
        let mut reserved = self.reserved(&s, classes, except_pod);
        ids.iter()
            .map(|&id| {
                let mut claims = reserved.remove(&id).map(|r| r.claims).unwrap_or_default();
                claims.sort_unstable_by(|a, b| b.cmp(a));
                let node = s.storage.disks.get(id as usize).and_then(Option::as_ref);
                let (state, problem) = match node {
                    None => (PoolState::Missing, None),
                    Some(n) if n.state != "Ready" => (PoolState::NotReady, None),
                    Some(n) if !n.problems.is_empty() => {
                        (PoolState::BadData, Some(n.problems.join("; ")))
                    }
                    Some(_) => (PoolState::Ready, None),
                };
                let mut free: Vec<u64> = node
                    .into_iter()
                    .flat_map(|n| &n.disks)
                    .filter(|d| d.available && d.kind == disk_type)
                    .map(|d| d.capacity_bytes)
                    .collect();
                free.sort_unstable_by(|a, b| b.cmp(a));
                NodeDisks {
                    state,
                    schedulable: schedulable(&s, id),
                    free,
                    reserved: claims,
                    problem,
                }
            })
            .collect()
    }

    /// Capacity held per node by claims of `classes` that pods other than
    /// `except_pod` (and the hidden ones) were placed with and whose volumes
    /// the cache does not hold yet.
    fn reserved(
        &self,
        s: &State,
        classes: &[String],
        except_pod: &str,
    ) -> FxHashMap<u32, Reserved> {
        let mut out: FxHashMap<u32, Reserved> = FxHashMap::default();
        let ttl = self.cache.in_flight_ttl;
        for (uid, r) in &s.reservations {
            if uid == except_pod || self.hidden_pods.contains(uid) || r.since.elapsed() >= ttl {
                continue;
            }
            for name in &r.claims {
                let Some(claim) = s.claims.get(&(r.namespace.clone(), name.clone())) else {
                    continue;
                };
                let class = claim.storage_class.as_deref().unwrap_or_default();
                if !classes.iter().any(|c| c == class) || s.reflected(&r.namespace, name, &r.nodes)
                {
                    continue;
                }
                if s.in_flight(uid, ttl) {
                    self.in_flight_seen.lock().insert(uid.clone());
                }
                for &node in &r.nodes {
                    let e = out.entry(node).or_default();
                    e.bytes = e.bytes.saturating_add(claim.requested_bytes);
                    e.volumes = e.volumes.saturating_add(1);
                    e.claims.push(claim.requested_bytes);
                }
            }
        }
        out
    }
}

impl Figures {
    fn state(self) -> (PoolState, Pool) {
        match self {
            Figures::Ready(p) => (PoolState::Ready, p),
            Figures::Missing(_) => (PoolState::Missing, NO_POOL),
            Figures::NotReady(_) => (PoolState::NotReady, NO_POOL),
            Figures::Bad(_) => (PoolState::BadData, NO_POOL),
        }
    }
}

/// `state`'s code in `pool-columns.state` (its position in the WIT enum).
fn state_code(state: PoolState) -> u8 {
    match state {
        PoolState::Ready => 0,
        PoolState::Missing => 1,
        PoolState::NotReady => 2,
        PoolState::BadData => 3,
    }
}

fn schedulable(s: &State, id: u32) -> bool {
    s.nodes
        .nodes
        .get(id as usize)
        .and_then(Option::as_ref)
        .is_some_and(|n| n.ready && !n.unschedulable)
}

/// A source's figures for `pool` on node `id` (`{node}` in texts stands
/// for the node's name).
fn figures(s: &State, source: CapacitySource, pool: &str, id: u32) -> Figures {
    let from = |list: &[(String, PoolFigures)]| {
        list.iter()
            .find(|(name, _)| name == pool)
            .map(|(_, f)| match f {
                Ok(p) => Figures::Ready(*p),
                Err(e) => Figures::Bad(e.clone()),
            })
    };
    match source {
        CapacitySource::Hwameistor => {
            match s.storage.lvm.get(id as usize).and_then(Option::as_ref) {
                None => Figures::Missing(
                    "node {node} has no HwameiStor LocalStorageNode: HwameiStor's local-storage \
                     agent does not run there"
                        .into(),
                ),
                Some(n) if n.state != "Ready" => Figures::NotReady(format!(
                    "LocalStorageNode {{node}} is {}, not Ready",
                    if n.state.is_empty() {
                        "without a state"
                    } else {
                        &n.state
                    }
                )),
                Some(n) => from(&n.pools).unwrap_or_else(|| {
                    Figures::Missing(format!(
                        "LocalStorageNode {{node}} has no pool {pool} (it has {})",
                        if n.pools.is_empty() {
                            "none".to_string()
                        } else {
                            n.pools
                                .iter()
                                .map(|p| p.0.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ))
                }),
            }
        }
        CapacitySource::Topolvm => s
            .storage
            .topolvm
            .get(id as usize)
            .and_then(|caps| from(caps))
            .unwrap_or_else(|| {
                Figures::Missing(format!(
                    "node {{node}} has no annotation {}{pool}: TopoLVM reports no device class \
                     {pool} there",
                    super::storage::TOPOLVM_CAPACITY_PREFIX
                ))
            }),
        CapacitySource::CsiStorageCapacity => {
            csi_figures(csi_by_node(s, pool, &[id])[0].as_ref(), pool)
        }
    }
}

fn csi_figures(found: Option<&Result<u64, String>>, class: &str) -> Figures {
    match found {
        None => Figures::Missing(format!(
            "no CSIStorageCapacity object of storage class {class} covers node {{node}}"
        )),
        Some(Ok(free)) => Figures::Ready(Pool {
            free_bytes: *free,
            total_bytes: 0,
            free_volumes: u32::MAX,
        }),
        Some(Err(e)) => Figures::Bad(e.clone()),
    }
}

/// For each node id, the largest usable capacity among the
/// `CSIStorageCapacity` objects of `class` whose topology selects the node
/// (kube-scheduler accepts a node if any object has room), or the first
/// problem if none is usable. Objects selecting by one label value are
/// looked up by that value; others are matched node by node.
fn csi_by_node(s: &State, class: &str, ids: &[u32]) -> Vec<Option<Result<u64, String>>> {
    let objects: Vec<&CsiCapacity> = s
        .storage
        .csi
        .values()
        .filter(|c| c.storage_class == class && c.topology.is_some())
        .collect();
    let mut by_value: HashMap<(&str, &str), Vec<&CsiCapacity>> = HashMap::new();
    let mut general: Vec<&CsiCapacity> = Vec::new();
    for c in objects {
        match c.topology.as_deref() {
            Some([req])
                if req.operator == steward_wit::SelectorOperator::In && req.values.len() == 1 =>
            {
                by_value
                    .entry((req.key.as_str(), req.values[0].as_str()))
                    .or_default()
                    .push(c);
            }
            _ => general.push(c),
        }
    }
    let mut keys: Vec<&str> = by_value.keys().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    ids.iter()
        .map(|&id| {
            let node = s.nodes.nodes.get(id as usize).and_then(Option::as_ref)?;
            let mut best: Option<Result<u64, String>> = None;
            let indexed = keys.iter().flat_map(|k| {
                let v = node.labels.iter().find(|(l, _)| l == k).map(|(_, v)| v);
                v.and_then(|v| by_value.get(&(*k, v.as_str())))
                    .into_iter()
                    .flatten()
            });
            let matched = general.iter().filter(|c| {
                c.topology
                    .as_deref()
                    .is_some_and(|t| selector_matches(&node.labels, t))
            });
            for c in indexed.chain(matched) {
                best = match (best, &c.capacity) {
                    (Some(Ok(a)), Ok(b)) => Some(Ok(a.max(*b))),
                    (Some(Ok(a)), Err(_)) => Some(Ok(a)),
                    (_, Ok(b)) => Some(Ok(*b)),
                    (None, Err(e)) => Some(Err(e.clone())),
                    (Some(Err(e)), Err(_)) => Some(Err(e)),
                };
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ClusterCache;
    use crate::convert::requirement;
    use crate::kinds::KindState;
    use steward_wit::Node;

    fn node(name: &str, zone: &str) -> Node {
        Node {
            name: name.into(),
            labels: vec![
                ("kubernetes.io/hostname".into(), name.into()),
                ("zone".into(), zone.into()),
            ],
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        }
    }

    fn capacity(selector: Vec<steward_wit::SelectorRequirement>, bytes: u64) -> CsiCapacity {
        CsiCapacity {
            storage_class: "fast".into(),
            topology: Some(selector),
            capacity: Ok(bytes),
        }
    }

    fn storage_node(name: &str, state: &str, pools: &[&str]) -> serde_json::Value {
        let pools: serde_json::Map<String, serde_json::Value> = pools
            .iter()
            .map(|p| {
                let figures = serde_json::json!({
                    "totalCapacityBytes": 100, "usedCapacityBytes": 40, "totalVolumeCount": 10,
                });
                (p.to_string(), figures)
            })
            .collect();
        serde_json::json!({
            "metadata": {"name": name},
            "status": {"state": state, "pools": pools},
        })
    }

    /// A kind the API server stops serving takes its objects with it, and
    /// refusals then name the missing CRD rather than each node.
    #[test]
    fn an_unserved_kind_is_emptied_and_named_in_pool_problems() {
        let cache = Arc::new(ClusterCache::default());
        cache.upsert_node(node("a", "z"));
        cache.upsert_storage_node(&storage_node("a", "Ready", &["LocalStorage_PoolHDD"]));
        let q = ClusterQuery::new(cache.clone());
        let id = q.node_id("a").unwrap();
        let pool = "LocalStorage_PoolHDD";
        assert_eq!(q.pool_problem(CapacitySource::Hwameistor, pool, id), None);
        cache.clear_kind(OptionalKind::LocalStorageNode, KindState::NotServed);
        let caps = q.pool_capacities(CapacitySource::Hwameistor, pool, &[], "", &[id]);
        assert_eq!(caps.state, [state_code(PoolState::Missing)]);
        let problem = q
            .pool_problem(CapacitySource::Hwameistor, pool, id)
            .unwrap();
        assert!(
            problem.contains("CRD localstoragenodes.hwameistor.io"),
            "{problem}"
        );
        assert_eq!(
            q.storage_nodes(CapacitySource::Hwameistor),
            Vec::<u32>::new()
        );
        // TopoLVM reads Node annotations: nothing of it can be unserved.
        let topolvm = q.pool_problem(CapacitySource::Topolvm, "ssd", id).unwrap();
        assert!(topolvm.contains("has no annotation"), "{topolvm}");
    }

    /// The pool columns answer what each node's own object says, whatever
    /// order nodes, pools and removals arrive in.
    #[test]
    fn pool_columns_agree_with_each_nodes_object() {
        let cache = Arc::new(ClusterCache::default());
        for (n, z) in [("a", "z"), ("b", "z"), ("c", "z"), ("d", "z")] {
            cache.upsert_node(node(n, z));
        }
        cache.upsert_storage_node(&storage_node("a", "Maintain", &["LocalStorage_PoolHDD"]));
        cache.upsert_storage_node(&storage_node("b", "Ready", &["LocalStorage_PoolHDD"]));
        // A pool first seen after `a` went into maintenance.
        cache.upsert_storage_node(&storage_node("c", "Ready", &["LocalStorage_PoolSSD"]));
        cache.upsert_storage_node(&storage_node("d", "Ready", &["LocalStorage_PoolSSD"]));
        cache.remove_storage_node("d");
        let q = ClusterQuery::new(cache.clone());
        let ids: Vec<u32> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| q.node_id(n).unwrap())
            .collect();
        let s = cache.state.read();
        for pool in [
            "LocalStorage_PoolHDD",
            "LocalStorage_PoolSSD",
            "LocalStorage_PoolNVMe",
        ] {
            let caps = q.pool_capacities(CapacitySource::Hwameistor, pool, &[], "", &ids);
            for (i, &id) in ids.iter().enumerate() {
                let (state, figures) = figures(&s, CapacitySource::Hwameistor, pool, id).state();
                assert_eq!(caps.state[i], state_code(state), "{pool} on node {i}");
                assert_eq!(caps.free_bytes[i], figures.free_bytes);
                assert_eq!(caps.free_volumes[i], figures.free_volumes);
            }
        }
        let ssd = |i: usize| {
            q.pool_capacities(
                CapacitySource::Hwameistor,
                "LocalStorage_PoolSSD",
                &[],
                "",
                &ids,
            )
            .state[i]
        };
        drop(s);
        assert_eq!(
            [ssd(0), ssd(1), ssd(2), ssd(3)],
            [
                PoolState::NotReady,
                PoolState::Missing,
                PoolState::Ready,
                PoolState::Missing
            ]
            .map(state_code)
        );
    }

    #[test]
    fn csi_capacity_matches_by_label_value_or_by_any_selector() {
        let cache = Arc::new(ClusterCache::default());
        for (n, z) in [("a1", "a"), ("b1", "b"), ("c1", "c")] {
            cache.upsert_node(node(n, z));
        }
        let host = |n: &str| requirement("kubernetes.io/hostname", "In", &Some(vec![n.into()]));
        cache.upsert_csi_capacity("ns", "per-node", capacity(vec![host("a1")], 10));
        let zones = requirement("zone", "In", &Some(vec!["a".into(), "b".into()]));
        cache.upsert_csi_capacity("ns", "per-zone", capacity(vec![zones], 20));
        let q = ClusterQuery::new(cache.clone());
        let ids: Vec<u32> = ["a1", "b1", "c1"]
            .iter()
            .map(|n| q.node_id(n).unwrap())
            .collect();
        let caps = q.pool_capacities(CapacitySource::CsiStorageCapacity, "fast", &[], "", &ids);
        // a1: the larger of its two objects; b1: its zone's; c1: none.
        assert_eq!(caps.free_bytes[..2], [20, 20]);
        assert_eq!(caps.state[2], state_code(PoolState::Missing));
        assert_eq!(
            q.storage_nodes(CapacitySource::CsiStorageCapacity),
            ids[..2].to_vec()
        );
        assert_eq!(
            q.pool_problem(CapacitySource::CsiStorageCapacity, "fast", ids[2])
                .unwrap(),
            "no CSIStorageCapacity object of storage class fast covers node c1"
        );
    }
}
