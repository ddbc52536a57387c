//! Local storage the cache knows per node: HwameiStor `LocalStorageNode`
//! pools and `LocalDiskNode` disks, TopoLVM capacity annotations,
//! `CSIStorageCapacity` objects, and HwameiStor `LocalVolume`s. Custom
//! resources arrive as JSON (dynamic objects); every figure is checked once
//! at ingest, so a bad one becomes a per-node problem text instead of a
//! silent zero.

use std::collections::HashMap;

use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use serde_json::Value;

use steward_wit::{LocalVolume, PoolState, SelectorRequirement};

/// TopoLVM's node annotation prefix: `capacity.topolvm.io/<device-class>`
/// holds the device class's free bytes.
pub const TOPOLVM_CAPACITY_PREFIX: &str = "capacity.topolvm.io/";

/// HwameiStor's annotation marking a volume being migrated.
const MIGRATE_STATE_ANNOTATION: &str = "hwameistor.io/volume-migrate-state";

/// A pool's usable figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub free_bytes: u64,
    /// 0 when the source does not report a size.
    pub total_bytes: u64,
    /// `u32::MAX` when unlimited.
    pub free_volumes: u32,
}

/// A pool's figures, or why they cannot be used.
pub type PoolFigures = Result<Pool, String>;

/// A HwameiStor `LocalStorageNode`.
#[derive(Debug, Clone)]
pub struct StorageNode {
    /// `status.state`: Ready, Maintain, Offline (empty when not reported).
    pub state: String,
    pub pools: Vec<(String, PoolFigures)>,
}

/// One disk of a HwameiStor `LocalDiskNode`.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Disk type (the pool class: HDD, SSD, NVMe).
    pub kind: String,
    pub capacity_bytes: u64,
    /// State `Available`: not in use by any volume.
    pub available: bool,
}

/// A HwameiStor `LocalDiskNode`.
#[derive(Debug, Clone)]
pub struct DiskNode {
    pub state: String,
    pub disks: Vec<Disk>,
    /// Disks whose figures could not be read.
    pub problems: Vec<String>,
}

/// A `CSIStorageCapacity` object: free bytes of one storage class on the
/// nodes its topology selects.
#[derive(Debug, Clone)]
pub struct CsiCapacity {
    pub storage_class: String,
    /// `None`: the storage is reachable from no node (`nodeTopology` unset).
    pub topology: Option<Vec<SelectorRequirement>>,
    pub capacity: Result<u64, String>,
}

fn object_name(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An integer field of a custom resource: a JSON number or a decimal
/// string. `Ok(None)` when absent.
fn integer(v: &Value, field: &str) -> Result<Option<i64>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{field} is {n}, not a whole number of bytes or volumes")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{field} is `{s}`, not a number")),
        Some(other) => Err(format!("{field} is {other}, not a number")),
    }
}

/// The figures of one `LocalStorageNode.status.pools` entry.
fn storage_pool(node: &str, name: &str, p: &Value) -> PoolFigures {
    let at = |e: String| format!("LocalStorageNode {node} status.pools.{name}.{e}");
    let total = integer(p, "totalCapacityBytes").map_err(at)?.unwrap_or(0);
    let used = integer(p, "usedCapacityBytes").map_err(at)?.unwrap_or(0);
    let reported_free = integer(p, "freeCapacityBytes").map_err(at)?;
    let total_volumes = integer(p, "totalVolumeCount").map_err(at)?;
    let used_volumes = integer(p, "usedVolumeCount").map_err(at)?.unwrap_or(0);
    let negative = [
        ("totalCapacityBytes", Some(total)),
        ("usedCapacityBytes", Some(used)),
        ("freeCapacityBytes", reported_free),
        ("totalVolumeCount", total_volumes),
        ("usedVolumeCount", Some(used_volumes)),
    ]
    .into_iter()
    .find_map(|(f, v)| v.filter(|&v| v < 0).map(|v| (f, v)));
    if let Some((field, value)) = negative {
        return Err(at(format!("{field} is {value}, which is negative")));
    }
    if used > total {
        return Err(at(format!(
            "usedCapacityBytes ({used}) exceeds totalCapacityBytes ({total})"
        )));
    }
    let free_volumes = match total_volumes {
        None => u32::MAX,
        Some(t) => u32::try_from((t - used_volumes).max(0)).unwrap_or(u32::MAX - 1),
    };
    Ok(Pool {
        free_bytes: (total - used) as u64,
        total_bytes: total as u64,
        free_volumes,
    })
}

/// A `LocalStorageNode` (named after its node) → (node name, pools).
pub fn storage_node(v: &Value) -> (String, StorageNode) {
    let name = object_name(v);
    let status = v.get("status");
    let state = status
        .and_then(|s| s.get("state"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut pools: Vec<(String, PoolFigures)> = status
        .and_then(|s| s.get("pools"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(pool, p)| (pool.clone(), storage_pool(&name, pool, p)))
        .collect();
    pools.sort_by(|a, b| a.0.cmp(&b.0));
    (name, StorageNode { state, pools })
}

/// A `LocalDiskNode` → (node name, disks).
pub fn disk_node(v: &Value) -> (String, DiskNode) {
    let node = v
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| object_name(v));
    let status = v.get("status");
    let state = status
        .and_then(|s| s.get("state"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut disks = Vec::new();
    let mut problems = Vec::new();
    for (class, pool) in status
        .and_then(|s| s.get("pools"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for d in pool
            .get("disks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let dev = d.get("devPath").and_then(Value::as_str).unwrap_or("?");
            match integer(d, "capacityBytes") {
                Ok(Some(c)) if c >= 0 => disks.push(Disk {
                    kind: d
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or(class)
                        .to_string(),
                    capacity_bytes: c as u64,
                    available: d.get("state").and_then(Value::as_str) == Some("Available"),
                }),
                Ok(Some(c)) => problems.push(format!(
                    "LocalDiskNode {node} disk {dev}: capacityBytes is {c}, which is negative"
                )),
                Ok(None) => problems.push(format!(
                    "LocalDiskNode {node} disk {dev} has no capacityBytes"
                )),
                Err(e) => problems.push(format!("LocalDiskNode {node} disk {dev}: {e}")),
            }
        }
    }
    (
        node,
        DiskNode {
            state,
            disks,
            problems,
        },
    )
}

/// A HwameiStor `LocalVolume`.
pub fn local_volume(v: &Value) -> LocalVolume {
    let spec = v.get("spec").unwrap_or(&Value::Null);
    let status = v.get("status").unwrap_or(&Value::Null);
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    LocalVolume {
        name: object_name(v),
        pool_name: text(spec, "poolName").unwrap_or_default(),
        required_bytes: integer(spec, "requiredCapacityBytes")
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(0) as u64,
        replica_number: integer(spec, "replicaNumber")
            .ok()
            .flatten()
            .unwrap_or(1)
            .clamp(0, i64::from(u32::MAX)) as u32,
        replica_hosts: spec
            .pointer("/config/replicas")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| text(r, "hostname"))
            .collect(),
        published_node: text(status, "publishedNode").filter(|n| !n.is_empty()),
        state: text(status, "state").unwrap_or_default(),
        migrating: v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(MIGRATE_STATE_ANNOTATION))
            .and_then(Value::as_str)
            == Some("migrateStarted"),
    }
}

/// TopoLVM's `capacity.topolvm.io/<device-class>` annotations of a node:
/// (device class, free bytes or why the value is unusable).
pub fn topolvm_capacity(
    node: &str,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<(String, PoolFigures)> {
    let mut out: Vec<(String, PoolFigures)> = annotations
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let class = k.strip_prefix(TOPOLVM_CAPACITY_PREFIX)?;
            let figures = v
                .trim()
                .parse::<u64>()
                .map(|free| Pool {
                    free_bytes: free,
                    total_bytes: 0,
                    free_volumes: u32::MAX,
                })
                .map_err(|_| {
                    format!(
                        "node {node} annotation {k} is `{v}`, not a byte count (TopoLVM's \
                         topolvm-node writes the free bytes there)"
                    )
                });
            Some((class.to_string(), figures))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A `CSIStorageCapacity` object.
pub fn csi_capacity(c: &CSIStorageCapacity) -> CsiCapacity {
    let name = c.metadata.name.clone().unwrap_or_default();
    CsiCapacity {
        storage_class: c.storage_class_name.clone(),
        topology: c.node_topology.as_ref().map(super::convert::selector),
        capacity: match &c.capacity {
            None => Err(format!(
                "CSIStorageCapacity {name} does not report a capacity (unknown)"
            )),
            Some(q) => steward_wit::quantity::parse(&q.0)
                .map_err(|e| format!("CSIStorageCapacity {name} capacity: {e}")),
        },
    }
}

/// One pool's state and figures on every node, one column per figure, by
/// node id: a batch query over thousands of nodes reads them in order
/// instead of following each node's object to its pool list.
#[derive(Default)]
pub struct PoolColumn {
    pub state: Vec<PoolState>,
    pub free_bytes: Vec<u64>,
    pub total_bytes: Vec<u64>,
    pub free_volumes: Vec<u32>,
}

impl PoolColumn {
    fn set(&mut self, id: u32, state: PoolState, pool: Pool) {
        let i = id as usize;
        if self.state.len() <= i {
            self.state.resize(i + 1, PoolState::Missing);
            self.free_bytes.resize(i + 1, 0);
            self.total_bytes.resize(i + 1, 0);
            self.free_volumes.resize(i + 1, 0);
        }
        self.state[i] = state;
        self.free_bytes[i] = pool.free_bytes;
        self.total_bytes[i] = pool.total_bytes;
        self.free_volumes[i] = pool.free_volumes;
    }

    /// Node `id`'s state and figures (`Missing` and zeros if never set).
    pub fn get(&self, id: u32) -> (PoolState, Pool) {
        let i = id as usize;
        match self.state.get(i) {
            Some(&state) => (
                state,
                Pool {
                    free_bytes: self.free_bytes[i],
                    total_bytes: self.total_bytes[i],
                    free_volumes: self.free_volumes[i],
                },
            ),
            None => (PoolState::Missing, NO_POOL),
        }
    }
}

/// Figures of a pool that is not usable.
pub const NO_POOL: Pool = Pool {
    free_bytes: 0,
    total_bytes: 0,
    free_volumes: 0,
};

/// Every pool name a source reports, with its column; kept in step with
/// the source's per-node objects.
#[derive(Default)]
pub struct PoolColumns {
    pub pools: HashMap<String, PoolColumn>,
    /// By node id: the node's object is there and its agent is Ready
    /// (`None`: no object), for columns of pool names first seen later.
    ready: Vec<Option<bool>>,
}

impl PoolColumns {
    /// Node `id` now reports `pools` (`None`: no object; `Some(false)`: an
    /// object whose agent is not Ready, so no pool of it is usable).
    pub fn set_node(&mut self, id: u32, ready: Option<bool>, pools: &[(String, PoolFigures)]) {
        set_slot(&mut self.ready, id, ready);
        for (name, _) in pools {
            if !self.pools.contains_key(name) {
                let mut column = PoolColumn::default();
                for (other, &r) in self.ready.iter().enumerate() {
                    if r == Some(false) {
                        column.set(other as u32, PoolState::NotReady, NO_POOL);
                    }
                }
                self.pools.insert(name.clone(), column);
            }
        }
        for (name, column) in &mut self.pools {
            let figures = pools.iter().find(|(n, _)| n == name).map(|(_, f)| f);
            let (state, pool) = match (ready, figures) {
                (None, _) | (_, None) => (PoolState::Missing, NO_POOL),
                (Some(false), Some(_)) => (PoolState::NotReady, NO_POOL),
                (Some(true), Some(Ok(p))) => (PoolState::Ready, *p),
                (Some(true), Some(Err(_))) => (PoolState::BadData, NO_POOL),
            };
            column.set(id, state, pool);
        }
    }
}

/// Storage facts by node id (the node table's ids) and by name.
#[derive(Default)]
pub struct StorageTables {
    pub lvm: Vec<Option<StorageNode>>,
    /// The pools of `lvm` in columns.
    pub lvm_pools: PoolColumns,
    pub disks: Vec<Option<DiskNode>>,
    pub topolvm: Vec<Vec<(String, PoolFigures)>>,
    /// The device classes of `topolvm` in columns.
    pub topolvm_pools: PoolColumns,
    /// By (namespace, name).
    pub csi: HashMap<(String, String), CsiCapacity>,
    pub local_volumes: HashMap<String, LocalVolume>,
}

/// Sets slot `id` of a table indexed by node id, growing it as needed.
pub fn set_slot<T: Default>(table: &mut Vec<T>, id: u32, value: T) {
    let i = id as usize;
    if table.len() <= i {
        table.resize_with(i + 1, T::default);
    }
    table[i] = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hwameistor_pool_reads_free_as_total_minus_used() {
        let (name, node) = storage_node(&json!({
            "metadata": {"name": "n1"},
            "status": {"state": "Ready", "pools": {"LocalStorage_PoolSSD": {
                "totalCapacityBytes": 100i64 << 30, "usedCapacityBytes": 40i64 << 30,
                "freeCapacityBytes": 60i64 << 30, "totalVolumeCount": 1000, "usedVolumeCount": 10
            }}}
        }));
        assert_eq!(name, "n1");
        assert_eq!(node.state, "Ready");
        assert_eq!(
            node.pools[0].1,
            Ok(Pool {
                free_bytes: 60 << 30,
                total_bytes: 100 << 30,
                free_volumes: 990
            })
        );
    }

    #[test]
    fn bad_pool_figures_become_problems_naming_the_field() {
        let (_, node) = storage_node(&json!({
            "metadata": {"name": "n3"},
            "status": {"state": "Ready", "pools": {
                "LocalStorage_PoolHDD": {"totalCapacityBytes": 100, "usedCapacityBytes": 10,
                                         "freeCapacityBytes": -5},
                "LocalStorage_PoolSSD": {"totalCapacityBytes": "lots"},
                "LocalStorage_PoolNVMe": {"totalCapacityBytes": 10, "usedCapacityBytes": 20}
            }}
        }));
        let problem = |pool: &str| {
            node.pools
                .iter()
                .find(|p| p.0 == pool)
                .unwrap()
                .1
                .clone()
                .unwrap_err()
        };
        assert_eq!(
            problem("LocalStorage_PoolHDD"),
            "LocalStorageNode n3 status.pools.LocalStorage_PoolHDD.freeCapacityBytes is -5, \
             which is negative"
        );
        assert!(problem("LocalStorage_PoolSSD").contains("totalCapacityBytes is `lots`"));
        assert!(problem("LocalStorage_PoolNVMe").contains("exceeds totalCapacityBytes"));
    }

    #[test]
    fn topolvm_annotations_parse_or_explain() {
        let mut a = std::collections::BTreeMap::new();
        a.insert("capacity.topolvm.io/ssd".to_string(), "107374182400".into());
        a.insert("capacity.topolvm.io/hdd".to_string(), "10Gi".into());
        a.insert("other".to_string(), "x".into());
        let caps = topolvm_capacity("n1", Some(&a));
        assert_eq!(caps.len(), 2);
        assert!(
            caps[0]
                .1
                .as_ref()
                .unwrap_err()
                .contains("is `10Gi`, not a byte count")
        );
        assert_eq!(caps[1].1.as_ref().unwrap().free_bytes, 100 << 30);
    }

    #[test]
    fn a_local_volume_lists_its_replica_hosts() {
        let v = local_volume(&json!({
            "metadata": {"name": "pvc-1", "annotations": {
                "hwameistor.io/volume-migrate-state": "migrateStarted"}},
            "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1024,
                     "replicaNumber": 2, "config": {"replicas": [
                         {"hostname": "n1"}, {"hostname": "n2"}]}},
            "status": {"state": "Ready", "publishedNode": "n2"}
        }));
        assert_eq!(v.replica_hosts, ["n1", "n2"]);
        assert_eq!(v.published_node.as_deref(), Some("n2"));
        assert!(v.migrating);
        assert_eq!(v.replica_number, 2);
    }
}
