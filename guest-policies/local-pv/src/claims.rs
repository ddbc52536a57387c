//! What the pod's claims ask of a node: bound local volumes pin it, new
//! claims of a local provisioner need room in a pool or free disks.

use steward_sdk::cluster::ClusterView;
use steward_sdk::{NodeSelectorTerm, Pod, SelectorOperator, StorageClass, labels};

use crate::settings::{HWAMEISTOR_LVM, Settings, Source};

/// A bound claim's volume lives on specific nodes.
pub enum Pin {
    /// A HwameiStor LVM volume: its replica hosts, or only the node it is
    /// published on.
    Replicas {
        claim: String,
        volume: String,
        hosts: Vec<String>,
        published: Option<String>,
    },
    /// A local PV's required node affinity.
    Affinity {
        claim: String,
        volume: String,
        terms: Vec<NodeSelectorTerm>,
    },
}

/// A new claim carved from a pool.
#[derive(Clone, Debug)]
pub struct PoolClaim {
    pub claim: String,
    pub bytes: u64,
    /// `replicaNumber` of its class (HwameiStor HA volumes: 2 or more).
    pub replicas: u32,
}

/// The pod's new claims of one pool.
#[derive(Debug)]
pub struct PoolDemand {
    /// The capacity source's pool name.
    pub pool: String,
    /// Storage classes whose claims draw on this pool (their reservations
    /// count against it).
    pub classes: Vec<String>,
    pub claims: Vec<PoolClaim>,
}

impl PoolDemand {
    pub fn bytes(&self) -> u64 {
        self.claims.iter().map(|c| c.bytes).sum()
    }
    pub fn volumes(&self) -> u32 {
        self.claims.len() as u32
    }
    /// Replicas the pool's HA claims need on distinct nodes, if any.
    pub fn ha_replicas(&self) -> Option<u32> {
        self.claims
            .iter()
            .map(|c| c.replicas)
            .filter(|&r| r >= 2)
            .max()
    }
}

/// The pod's new whole-disk claims of one disk type.
#[derive(Debug)]
pub struct DiskDemand {
    pub disk_type: String,
    pub classes: Vec<String>,
    /// (claim, bytes), largest first.
    pub claims: Vec<(String, u64)>,
}

/// Everything the pod's claims require.
#[derive(Default)]
pub struct Demands {
    pub pins: Vec<Pin>,
    pub pools: Vec<PoolDemand>,
    pub disks: Vec<DiskDemand>,
}

/// Why the pod cannot be placed anywhere.
pub struct Blocked {
    pub reason: String,
    /// Waiting (the cache catching up) will not help.
    pub unresolvable: bool,
}

fn blocked(reason: String, unresolvable: bool) -> Blocked {
    Blocked {
        reason,
        unresolvable,
    }
}

/// The pool a class's claims draw on, for the configured capacity source.
pub fn pool_of(s: &Settings, class: &StorageClass) -> Result<String, String> {
    let param = |k: &str| labels::get(&class.parameters, k);
    match s.capacity_source {
        Source::Hwameistor => match param("poolClass") {
            Some(c @ ("HDD" | "SSD" | "NVMe")) => Ok(format!("LocalStorage_Pool{c}")),
            other => Err(format!(
                "storage class {} has poolClass {}; HwameiStor pools are HDD, SSD or NVMe",
                class.name,
                other.map_or("unset".to_string(), |c| format!("`{c}`"))
            )),
        },
        Source::Topolvm => Ok(param("topolvm.io/device-class")
            .unwrap_or("00default")
            .to_string()),
        Source::CsiStorageCapacity => Ok(class.name.clone()),
    }
}

fn replica_number(class: &StorageClass) -> Result<u32, String> {
    match labels::get(&class.parameters, "replicaNumber") {
        None => Ok(1),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                format!(
                    "storage class {} has replicaNumber `{v}`; it must be a whole number of at \
                 least 1",
                    class.name
                )
            }),
    }
}

/// Reads the pod's claims. `Err` when no node can take the pod.
pub fn demands(cluster: &impl ClusterView, s: &Settings, pod: &Pod) -> Result<Demands, Blocked> {
    let mut out = Demands::default();
    let mut all_classes: Option<Vec<StorageClass>> = None;
    for name in &pod.claims {
        let who = format!("claim {}/{name}", pod.namespace);
        let Some(claim) = cluster.get_claim(&pod.namespace, name) else {
            return Err(blocked(
                format!("{who} of the pod is not in Steward's cluster cache yet"),
                false,
            ));
        };
        match claim.phase.as_str() {
            "Bound" => {
                if let Some(pin) = pin(cluster, s, &who, claim.volume_name.as_deref())? {
                    out.pins.push(pin);
                }
            }
            "Pending" => {
                let Some(class) = claim
                    .storage_class
                    .as_deref()
                    .and_then(|c| cluster.get_storage_class(c))
                else {
                    // No class, or an unknown one: a static volume, not ours.
                    continue;
                };
                if class.binding_mode != "WaitForFirstConsumer" || !s.is_local(&class.provisioner) {
                    continue;
                }
                let classes = all_classes.get_or_insert_with(|| cluster.list_storage_classes());
                if s.disk_provisioners.contains(&class.provisioner) {
                    add_disk_claim(&mut out, classes, &class, name, claim.requested_bytes)?;
                } else {
                    add_pool_claim(&mut out, s, classes, &class, name, claim.requested_bytes)?;
                }
            }
            phase => {
                return Err(blocked(
                    format!(
                        "{who} is {phase}: its volume is lost or unusable, so no node can \
                         serve it; recover or recreate the claim"
                    ),
                    true,
                ));
            }
        }
    }
    Ok(out)
}

fn add_pool_claim(
    out: &mut Demands,
    s: &Settings,
    classes: &[StorageClass],
    class: &StorageClass,
    claim: &str,
    bytes: u64,
) -> Result<(), Blocked> {
    let pool = pool_of(s, class).map_err(|e| blocked(e, true))?;
    let replicas = replica_number(class).map_err(|e| blocked(e, true))?;
    let entry = match out.pools.iter_mut().position(|d| d.pool == pool) {
        Some(i) => &mut out.pools[i],
        None => {
            let sharing = classes
                .iter()
                .filter(|c| {
                    s.lvm_provisioners.contains(&c.provisioner)
                        && pool_of(s, c).as_deref() == Ok(pool.as_str())
                })
                .map(|c| c.name.clone())
                .collect();
            out.pools.push(PoolDemand {
                pool,
                classes: sharing,
                claims: Vec::new(),
            });
            out.pools.last_mut().expect("just pushed")
        }
    };
    entry.claims.push(PoolClaim {
        claim: claim.to_string(),
        bytes,
        replicas,
    });
    Ok(())
}

fn add_disk_claim(
    out: &mut Demands,
    classes: &[StorageClass],
    class: &StorageClass,
    claim: &str,
    bytes: u64,
) -> Result<(), Blocked> {
    let Some(disk_type) = labels::get(&class.parameters, "diskType") else {
        return Err(blocked(
            format!(
                "storage class {} has no diskType parameter, so the kind of disk its claims \
                 need is unknown",
                class.name
            ),
            true,
        ));
    };
    let entry = match out.disks.iter_mut().position(|d| d.disk_type == disk_type) {
        Some(i) => &mut out.disks[i],
        None => {
            let sharing = classes
                .iter()
                .filter(|c| {
                    c.provisioner == class.provisioner
                        && labels::get(&c.parameters, "diskType") == Some(disk_type)
                })
                .map(|c| c.name.clone())
                .collect();
            out.disks.push(DiskDemand {
                disk_type: disk_type.to_string(),
                classes: sharing,
                claims: Vec::new(),
            });
            out.disks.last_mut().expect("just pushed")
        }
    };
    entry.claims.push((claim.to_string(), bytes));
    entry.claims.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(())
}

/// Where a bound claim's volume pins the pod, if it is a local volume.
fn pin(
    cluster: &impl ClusterView,
    s: &Settings,
    who: &str,
    volume: Option<&str>,
) -> Result<Option<Pin>, Blocked> {
    let Some(volume) = volume else {
        return Err(blocked(
            format!("{who} is Bound but names no volume; Steward waits for the claim to settle"),
            false,
        ));
    };
    let Some(pv) = cluster.get_volume(volume) else {
        return Err(blocked(
            format!(
                "{who} is bound to volume {volume}, which Steward's cluster cache does not hold yet"
            ),
            false,
        ));
    };
    let driver = pv.csi_driver.as_deref().unwrap_or_default();
    if driver == HWAMEISTOR_LVM {
        let handle = pv.csi_handle.clone().unwrap_or_default();
        match cluster.get_local_volume(&handle) {
            Some(lv) if lv.migrating => {
                return Err(blocked(
                    format!(
                        "{who}'s volume {volume} (LocalVolume {handle}) is being migrated to \
                         another node; the pod waits for the migration to finish"
                    ),
                    false,
                ));
            }
            Some(lv) if lv.replica_hosts.is_empty() => {
                return Err(blocked(
                    format!(
                        "{who}'s volume {volume} (LocalVolume {handle}) has no replicas placed \
                         yet (spec.config is empty)"
                    ),
                    false,
                ));
            }
            Some(lv) => {
                return Ok(Some(Pin::Replicas {
                    claim: who.to_string(),
                    volume: format!("{volume} (LocalVolume {handle})"),
                    hosts: lv.replica_hosts,
                    published: lv.published_node,
                }));
            }
            // No LocalVolume: fall back to the PV's own node affinity.
            None => {}
        }
    }
    let local = pv.local_path.is_some() || s.is_local(driver);
    if pv.node_affinity.is_empty() {
        if local {
            return Err(blocked(
                format!(
                    "{who}'s volume {volume} is a local volume{} without a required node \
                     affinity, so no node can be shown to hold its data; give the PersistentVolume \
                     spec.nodeAffinity.required",
                    if driver == HWAMEISTOR_LVM {
                        " whose LocalVolume is not in the cache and"
                    } else {
                        ""
                    }
                ),
                true,
            ));
        }
        return Ok(None);
    }
    if !local {
        // Network volumes with topology: kube-scheduler's VolumeBinding
        // already applies their affinity.
        return Ok(None);
    }
    Ok(Some(Pin::Affinity {
        claim: who.to_string(),
        volume: volume.to_string(),
        terms: pv.node_affinity,
    }))
}

/// A node affinity in words: `kubernetes.io/hostname in (n2)`.
pub fn describe_terms(terms: &[NodeSelectorTerm]) -> String {
    let requirement = |r: &steward_sdk::SelectorRequirement| {
        let op = match r.operator {
            SelectorOperator::In => "in",
            SelectorOperator::NotIn => "not in",
            SelectorOperator::Exists => "exists",
            SelectorOperator::DoesNotExist => "does not exist",
            SelectorOperator::Gt => ">",
            SelectorOperator::Lt => "<",
        };
        if r.values.is_empty() {
            format!("{} {op}", r.key)
        } else {
            format!("{} {op} ({})", r.key, r.values.join(", "))
        }
    };
    terms
        .iter()
        .map(|t| {
            t.match_expressions
                .iter()
                .chain(&t.match_fields)
                .map(requirement)
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}
