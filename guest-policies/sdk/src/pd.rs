//! PD (TiDB's Placement Driver) behind one trait, so policy logic runs the
//! same on the host's PD import inside Wasm ([`HostPd`]) and on an
//! in-memory [`FakePd`] in native unit tests.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::bindings::steward::policy::pd as host;
use crate::{Member, PdCluster, Store, Workload, tidb};

/// Read access to the PD of a TiDB cluster. Errors are the host's
/// sentences (PD unreachable, timed out, answered nonsense).
pub trait PdView {
    fn stores(&self, cluster: &PdCluster) -> Result<Vec<Store>, String>;
    fn members(&self, cluster: &PdCluster) -> Result<Vec<Member>, String>;
    /// Name of the PD leader.
    fn leader(&self, cluster: &PdCluster) -> Result<String, String>;
    /// Names of the schedulers PD runs.
    fn schedulers(&self, cluster: &PdCluster) -> Result<Vec<String>, String>;
}

/// The host's PD access, through the `pd` import.
pub struct HostPd;

impl PdView for HostPd {
    fn stores(&self, cluster: &PdCluster) -> Result<Vec<Store>, String> {
        host::stores(cluster)
    }
    fn members(&self, cluster: &PdCluster) -> Result<Vec<Member>, String> {
        host::members(cluster)
    }
    fn leader(&self, cluster: &PdCluster) -> Result<String, String> {
        host::leader(cluster)
    }
    fn schedulers(&self, cluster: &PdCluster) -> Result<Vec<String>, String> {
        host::schedulers(cluster)
    }
}

/// The PD cluster of a TiDB cluster `name` in `namespace`.
pub fn cluster(namespace: &str, name: &str) -> PdCluster {
    PdCluster {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The PD cluster of the TiDB cluster a workload belongs to (its
/// [`tidb::INSTANCE_LABEL`]).
pub fn cluster_of(workload: &Workload) -> Result<PdCluster, String> {
    let instance = tidb::instance(&workload.labels).ok_or_else(|| {
        format!(
            "StatefulSet {}/{} has no {} label: which TiDB cluster's PD to ask is unknown",
            workload.namespace,
            workload.name,
            tidb::INSTANCE_LABEL
        )
    })?;
    Ok(cluster(&workload.namespace, instance))
}

/// Name of PD's evict-leader scheduler for a store.
pub fn evict_leader_scheduler(store_id: u64) -> String {
    format!("evict-leader-scheduler-{store_id}")
}

/// A store in state `Up` with `leaders` leaders (and as many regions).
pub fn store(id: u64, address: &str, leaders: u64) -> Store {
    Store {
        id,
        address: address.into(),
        state: "Up".into(),
        leader_count: leaders,
        region_count: leaders,
        last_heartbeat_ms: 0,
    }
}

impl Store {
    pub fn state(mut self, state: &str) -> Self {
        self.state = state.into();
        self
    }
}

/// A healthy PD member whose client URL follows tidb-operator's naming.
pub fn member(id: u64, name: &str) -> Member {
    Member {
        id,
        name: name.into(),
        client_urls: vec![format!("http://{name}:2379")],
        healthy: true,
    }
}

impl Member {
    pub fn unhealthy(mut self) -> Self {
        self.healthy = false;
        self
    }
}

/// An in-memory PD for unit tests: one state for every cluster asked about,
/// or an error for every call when `unreachable` is set.
#[derive(Default, Clone)]
pub struct FakePd {
    pub stores: Vec<Store>,
    pub members: Vec<Member>,
    pub leader: String,
    pub schedulers: Vec<String>,
    pub unreachable: bool,
    /// How many calls each method got, by name.
    pub calls: RefCell<BTreeMap<&'static str, u32>>,
}

impl FakePd {
    pub fn with_store(mut self, store: Store) -> Self {
        self.stores.push(store);
        self
    }
    pub fn with_member(mut self, member: Member) -> Self {
        self.members.push(member);
        self
    }
    /// Healthy members `<statefulset>-<ordinal>` of `ordinals`, member id
    /// `first_id + ordinal`, the first of them leading.
    pub fn with_members_of(self, statefulset: &str, ordinals: &[u32], first_id: u64) -> Self {
        let pd = ordinals.iter().fold(self, |pd, &o| {
            pd.with_member(member(
                first_id + u64::from(o),
                &format!("{statefulset}-{o}"),
            ))
        });
        match ordinals.first() {
            Some(o) => pd.with_leader(&format!("{statefulset}-{o}")),
            None => pd,
        }
    }
    pub fn with_leader(mut self, name: &str) -> Self {
        self.leader = name.into();
        self
    }
    pub fn with_scheduler(mut self, name: &str) -> Self {
        self.schedulers.push(name.into());
        self
    }
    pub fn unreachable(mut self) -> Self {
        self.unreachable = true;
        self
    }

    fn answer<T: Clone>(
        &self,
        method: &'static str,
        cluster: &PdCluster,
        value: &T,
    ) -> Result<T, String> {
        *self.calls.borrow_mut().entry(method).or_default() += 1;
        if self.unreachable {
            return Err(format!(
                "PD of {}/{} is unreachable (fake)",
                cluster.namespace, cluster.name
            ));
        }
        Ok(value.clone())
    }
}

impl PdView for FakePd {
    fn stores(&self, cluster: &PdCluster) -> Result<Vec<Store>, String> {
        self.answer("stores", cluster, &self.stores)
    }
    fn members(&self, cluster: &PdCluster) -> Result<Vec<Member>, String> {
        self.answer("members", cluster, &self.members)
    }
    fn leader(&self, cluster: &PdCluster) -> Result<String, String> {
        self.answer("leader", cluster, &self.leader)
    }
    fn schedulers(&self, cluster: &PdCluster) -> Result<Vec<String>, String> {
        self.answer("schedulers", cluster, &self.schedulers)
    }
}
