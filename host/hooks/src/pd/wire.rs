//! PD's JSON answers, as `pkg/pdapi` of tidb-operator reads them (PD's
//! `server/api` types). Unknown fields are ignored: PD adds fields often.

use std::collections::BTreeMap;

use serde::Deserialize;

use steward_wit::Store;

/// `GET /pd/api/v1/stores`.
#[derive(Deserialize)]
pub struct StoresInfo {
    #[serde(default)]
    pub stores: Vec<StoreInfo>,
}

#[derive(Deserialize)]
pub struct StoreInfo {
    pub store: MetaStore,
    #[serde(default)]
    pub status: StoreStatus,
}

#[derive(Deserialize)]
pub struct MetaStore {
    pub id: u64,
    #[serde(default)]
    pub address: String,
    /// Up, Disconnected, Down, Offline or Tombstone.
    #[serde(default)]
    pub state_name: String,
    /// Unix nanoseconds of the last heartbeat.
    #[serde(default)]
    pub last_heartbeat: i64,
}

#[derive(Deserialize, Default)]
pub struct StoreStatus {
    #[serde(default)]
    pub leader_count: u64,
    #[serde(default)]
    pub region_count: u64,
}

impl StoreInfo {
    pub fn lower(self) -> Store {
        Store {
            id: self.store.id,
            address: self.store.address,
            state: self.store.state_name,
            leader_count: self.status.leader_count,
            region_count: self.status.region_count,
            last_heartbeat_ms: self.store.last_heartbeat / 1_000_000,
        }
    }
}

/// `GET /pd/api/v1/members`.
#[derive(Deserialize)]
pub struct Members {
    #[serde(default)]
    pub members: Vec<Member>,
}

/// A member, as in `/members` and `/leader`.
#[derive(Deserialize)]
pub struct Member {
    pub name: String,
    #[serde(default)]
    pub member_id: u64,
    #[serde(default)]
    pub client_urls: Vec<String>,
}

/// One entry of `GET /pd/api/v1/health`.
#[derive(Deserialize)]
pub struct Health {
    #[serde(default)]
    pub member_id: u64,
    #[serde(default)]
    pub health: bool,
}

/// `GET /pd/api/v1/scheduler-config/evict-leader-scheduler/list`.
#[derive(Deserialize)]
pub struct EvictLeaderConfig {
    #[serde(rename = "store-id-ranges", default)]
    pub store_id_ranges: BTreeMap<String, serde_json::Value>,
}
