//! PD as a fixture suite describes it: stores, members, leader and
//! schedulers, served on 127.0.0.1 at the paths and in the JSON shapes of
//! PD's HTTP API, so policies read it through the host's real `pd` import
//! and PD client. Only reads are answered: suites check the actions a
//! policy asks for, Steward never performs them there.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// What PD reports while a case runs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdState {
    #[serde(default)]
    pub stores: Vec<PdStore>,
    #[serde(default)]
    pub members: Vec<PdMember>,
    /// The leading member's name; none: PD answers `/leader` with an error.
    pub leader: Option<String>,
    /// Scheduler names, e.g. `evict-leader-scheduler-1`.
    #[serde(default)]
    pub schedulers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdStore {
    pub id: u64,
    /// `<pod>.<cluster>-tikv-peer.<namespace>.svc:20160` for tidb-operator's TiKV.
    pub address: String,
    /// Up, Disconnected, Down, Offline or Tombstone.
    #[serde(default = "up")]
    pub state: String,
    #[serde(default)]
    pub leader_count: u64,
    #[serde(default)]
    pub region_count: u64,
    /// Unix milliseconds of the last heartbeat.
    #[serde(default)]
    pub last_heartbeat_ms: i64,
}

fn up() -> String {
    "Up".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdMember {
    pub name: String,
    /// Member id; default: the member's position in the list, from 1.
    pub id: Option<u64>,
    #[serde(default = "yes")]
    pub healthy: bool,
    #[serde(default)]
    pub client_urls: Vec<String>,
}

fn yes() -> bool {
    true
}

impl PdState {
    fn members_json(&self) -> Vec<serde_json::Value> {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({
                    "name": m.name,
                    "member_id": m.id.unwrap_or(i as u64 + 1),
                    "client_urls": m.client_urls,
                })
            })
            .collect()
    }
}

type Shared = Arc<Mutex<PdState>>;

/// A PD answering from a [`PdState`] the suite sets before each case. It
/// owns the async runtime the host's PD reads run on: evaluate within
/// [`FixturePd::enter`].
pub struct FixturePd {
    runtime: tokio::runtime::Runtime,
    state: Shared,
    url: String,
}

impl FixturePd {
    /// Starts serving on a free port of 127.0.0.1.
    pub fn start() -> Result<FixturePd> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the async runtime of the suite's PD")?;
        let state = Shared::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                0,
            ))))
            .context("cannot listen on 127.0.0.1 for the suite's PD")?;
        let url = format!("http://{}", listener.local_addr()?);
        let router = Router::new()
            .route("/pd/api/v1/stores", get(stores))
            .route("/pd/api/v1/members", get(members))
            .route("/pd/api/v1/health", get(health))
            .route("/pd/api/v1/leader", get(leader))
            .route("/pd/api/v1/schedulers", get(schedulers))
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, router).await });
        Ok(FixturePd {
            runtime,
            state,
            url,
        })
    }

    /// The base URL policies are configured with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces what PD reports.
    pub fn set(&self, state: PdState) {
        *lock(&self.state) = state;
    }

    /// Makes the runtime current on this thread, so PD reads of guests
    /// evaluated here reach this PD.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, PdState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn stores(State(state): State<Shared>) -> Json<serde_json::Value> {
    let state = lock(&state);
    let stores: Vec<serde_json::Value> = state
        .stores
        .iter()
        .map(|s| {
            json!({
                "store": {
                    "id": s.id,
                    "address": s.address,
                    "state_name": s.state,
                    "last_heartbeat": s.last_heartbeat_ms.saturating_mul(1_000_000),
                },
                "status": {"leader_count": s.leader_count, "region_count": s.region_count},
            })
        })
        .collect();
    Json(json!({"count": stores.len(), "stores": stores}))
}

async fn members(State(state): State<Shared>) -> Json<serde_json::Value> {
    let state = lock(&state);
    let leader = state.leader.as_ref().and_then(|name| {
        state
            .members_json()
            .into_iter()
            .find(|m| m["name"] == **name)
    });
    Json(json!({"members": state.members_json(), "leader": leader}))
}

async fn health(State(state): State<Shared>) -> Json<serde_json::Value> {
    let state = lock(&state);
    let health: Vec<serde_json::Value> = state
        .members_json()
        .into_iter()
        .zip(&state.members)
        .map(|(m, member)| {
            json!({
                "name": m["name"],
                "member_id": m["member_id"],
                "client_urls": m["client_urls"],
                "health": member.healthy,
            })
        })
        .collect();
    Json(json!(health))
}

async fn leader(State(state): State<Shared>) -> Response {
    let state = lock(&state);
    let found = state.leader.as_ref().and_then(|name| {
        state
            .members_json()
            .into_iter()
            .find(|m| m["name"] == **name)
    });
    match found {
        Some(member) => Json(member).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!("no leader"))).into_response(),
    }
}

async fn schedulers(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(json!(lock(&state).schedulers))
}
