//! A PD HTTP API double on 127.0.0.1: PD cannot run here, so this answers
//! PD's paths with PD's JSON shapes and models the behaviour policies rely
//! on:
//!
//! - an evict-leader scheduler drains its store's leaders at
//!   [`PdState::drain_per_second`], and they come back at the same rate once
//!   it is removed (PD ≥ 4 style: one `evict-leader-scheduler`, stores in
//!   its `scheduler-config/.../list`);
//! - a leader transfer makes the named healthy member the leader;
//! - a store taken offline (`DELETE /pd/api/v1/store/{id}`) is `Offline`
//!   while its regions and leaders move away at the same rate, then
//!   `Tombstone` (and left out of `/stores`, as PD does);
//! - stores heartbeat: one whose heartbeat stops becomes `Disconnected`
//!   after [`PdState::disconnect_after`] and `Down` after
//!   [`PdState::down_after`] (PD's `max-store-down-time`), and is `Up`
//!   again once it heartbeats;
//! - faults on demand: unreachable (connections are dropped), slow
//!   (answers after a delay), stuck (leader counts never move).
//!
//! State is plain data behind [`PdDouble::state`]; tests set it directly.
//! [`PdDouble::start_tls`] serves it over mutual TLS, as PD does for a
//! cluster with tidb-operator's `tlsCluster`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff;
use parking_lot::{Mutex, MutexGuard};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::tls::TestCa;

/// A TiKV store as PD tracks it.
#[derive(Debug, Clone)]
pub struct DoubleStore {
    pub id: u64,
    pub address: String,
    /// Up, Disconnected, Down, Offline or Tombstone.
    pub state: String,
    /// Current leaders (fractional while draining or returning).
    pub leaders: f64,
    /// Leaders the store holds when nothing evicts them.
    pub home_leaders: u64,
    pub regions: u64,
}

/// A PD member.
#[derive(Debug, Clone)]
pub struct DoubleMember {
    pub id: u64,
    pub name: String,
    pub healthy: bool,
}

/// Injected misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every connection is dropped without an answer.
    Unreachable,
    /// Every answer is delayed.
    Slow(Duration),
    /// Leader counts stay where they are, evicted or not.
    LeadersStuck,
}

#[derive(Debug)]
pub struct PdState {
    pub cluster_id: u64,
    pub stores: Vec<DoubleStore>,
    pub members: Vec<DoubleMember>,
    pub leader: String,
    /// Stores with an evict-leader scheduler.
    pub evicting: BTreeSet<u64>,
    /// Leaders moved off (or back onto) a store per second.
    pub drain_per_second: f64,
    pub fault: Fault,
    /// Every request: `METHOD /path`.
    pub calls: Vec<String>,
    /// Heartbeat age at which a store is `Disconnected` (PD: 20 s).
    pub disconnect_after: Duration,
    /// Heartbeat age at which a store is `Down` (PD's
    /// `schedule.max-store-down-time`, 30 min).
    pub down_after: Duration,
    /// Stores whose heartbeat stopped, with their last heartbeat; every
    /// other store heartbeats all the time.
    silent: BTreeMap<u64, Instant>,
    last_step: Instant,
    /// Offline stores: regions still to move away (fractional).
    removing: BTreeMap<u64, f64>,
}

impl PdState {
    /// Advances heartbeat ages and leader movement to now.
    fn step(&mut self) {
        let now = Instant::now();
        for (id, last) in &self.silent {
            let Some(s) = self.stores.iter_mut().find(|s| s.id == *id) else {
                continue;
            };
            if ["Up", "Disconnected", "Down"].contains(&s.state.as_str()) {
                let age = now.duration_since(*last);
                s.state = if age >= self.down_after {
                    "Down"
                } else if age >= self.disconnect_after {
                    "Disconnected"
                } else {
                    "Up"
                }
                .into();
            }
        }
        let moved = self.drain_per_second * now.duration_since(self.last_step).as_secs_f64();
        self.last_step = now;
        self.remove_offline_stores(moved);
        if self.fault == Fault::LeadersStuck {
            return;
        }
        for s in &mut self.stores {
            if self.evicting.contains(&s.id) {
                s.leaders = (s.leaders - moved).max(0.0);
            } else if s.state == "Up" {
                s.leaders = (s.leaders + moved).min(s.home_leaders as f64);
            }
        }
    }

    /// Offline stores lose `moved` regions and leaders; one with none left
    /// becomes a Tombstone.
    fn remove_offline_stores(&mut self, moved: f64) {
        for s in &mut self.stores {
            let Some(left) = self.removing.get_mut(&s.id) else {
                continue;
            };
            *left = (*left - moved).max(0.0);
            s.regions = left.ceil() as u64;
            s.leaders = (s.leaders - moved).max(0.0);
            if s.regions == 0 && s.leaders == 0.0 {
                s.state = "Tombstone".into();
                self.removing.remove(&s.id);
            }
        }
    }

    pub fn store(&mut self, id: u64) -> &mut DoubleStore {
        self.stores
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("the PD double has no store {id}"))
    }

    pub fn member(&mut self, name: &str) -> &mut DoubleMember {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("the PD double has no member {name}"))
    }

    /// The store of TiKV pod `pod` (its address is `<pod>.<peer service>...`).
    pub fn store_of_pod(&self, pod: &str) -> Option<u64> {
        let host = format!("{pod}.");
        self.stores
            .iter()
            .find(|s| s.address.starts_with(&host))
            .map(|s| s.id)
    }

    /// Store `id` stops heartbeating (its process or node went away); a
    /// store already silent keeps its last heartbeat.
    pub fn stop_heartbeat(&mut self, id: u64) {
        // Refuses (panics naming it) a store the double does not have.
        self.store(id);
        self.silent.entry(id).or_insert_with(Instant::now);
    }

    /// Store `id` heartbeats again: a `Disconnected` or `Down` store is
    /// `Up` at once.
    pub fn resume_heartbeat(&mut self, id: u64) {
        let store = self.store(id);
        if store.state == "Disconnected" || store.state == "Down" {
            store.state = "Up".into();
        }
        self.silent.remove(&id);
    }

    /// Whether store `id` heartbeats.
    pub fn is_heartbeating(&self, id: u64) -> bool {
        !self.silent.contains_key(&id)
    }

    /// When store `id` last heartbeat: now, unless it stopped.
    pub fn last_heartbeat(&self, id: u64) -> Instant {
        self.silent.get(&id).copied().unwrap_or_else(Instant::now)
    }

    /// Leaders store `id` holds now (as PD reports them: whole numbers).
    pub fn leaders(&mut self, id: u64) -> u64 {
        self.step();
        self.store(id).leaders.ceil() as u64
    }

    /// How many requests matched `METHOD /path` exactly.
    pub fn count(&self, call: &str) -> usize {
        self.calls.iter().filter(|c| *c == call).count()
    }

    fn member_json(&self, m: &DoubleMember, namespace: &str, cluster: &str) -> Value {
        let host = format!("{}.{cluster}-pd-peer.{namespace}.svc", m.name);
        json!({
            "name": m.name,
            "member_id": m.id,
            "peer_urls": [format!("http://{host}:2380")],
            "client_urls": [format!("http://{host}:2379")],
            "deploy_path": "/",
            "binary_version": "v6.1.0",
            "git_hash": "d82f4fab6cf37cd1eca9c3574984e12a7ae27c42",
            "dc_location": ""
        })
    }
}

struct Shared {
    state: Mutex<PdState>,
    /// Names used in member URLs.
    namespace: String,
    cluster: String,
}

/// A running PD double; stops when dropped.
pub struct PdDouble {
    pub addr: SocketAddr,
    /// Serves HTTPS, requiring client certificates.
    tls: bool,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for PdDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl PdDouble {
    /// A healthy three-PD, three-TiKV cluster `cluster` in `namespace`, as
    /// tidb-operator names it: stores 1, 4, 5 on `<cluster>-tikv-0..2` with
    /// 10 leaders each, PD members `<cluster>-pd-0..2`, leader `-pd-0`.
    /// Leaders drain at 1,000 per second.
    pub async fn start(namespace: &str, cluster: &str) -> PdDouble {
        PdDouble::serve(namespace, cluster, None).await
    }

    /// [`PdDouble::start`] over HTTPS with a certificate of `ca`, accepting
    /// only clients whose certificate `ca` issued.
    pub async fn start_tls(namespace: &str, cluster: &str, ca: &TestCa) -> PdDouble {
        let served = ca.issue(&format!("{cluster}-pd"));
        let chain = vec![CertificateDer::from(served.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).expect("PEM key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let clients = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider.clone())
            .build()
            .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .expect("server certificate");
        PdDouble::serve(
            namespace,
            cluster,
            Some(TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(namespace: &str, cluster: &str, tls: Option<TlsAcceptor>) -> PdDouble {
        let stores = [1u64, 4, 5]
            .iter()
            .enumerate()
            .map(|(i, &id)| DoubleStore {
                id,
                address: format!("{cluster}-tikv-{i}.{cluster}-tikv-peer.{namespace}.svc:20160"),
                state: "Up".into(),
                leaders: 10.0,
                home_leaders: 10,
                regions: 30,
            })
            .collect();
        let members = (0..3)
            .map(|i| DoubleMember {
                id: 1000 + i,
                name: format!("{cluster}-pd-{i}"),
                healthy: true,
            })
            .collect();
        let state = PdState {
            cluster_id: 7_135_066_345_917_612_345,
            stores,
            members,
            leader: format!("{cluster}-pd-0"),
            evicting: BTreeSet::new(),
            drain_per_second: 1_000.0,
            fault: Fault::None,
            calls: Vec::new(),
            disconnect_after: Duration::from_secs(20),
            down_after: Duration::from_secs(30 * 60),
            silent: BTreeMap::new(),
            last_step: Instant::now(),
            removing: BTreeMap::new(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            namespace: namespace.into(),
            cluster: cluster.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let addr = listener.local_addr().expect("bound");
        let secure = tls.is_some();
        let server = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        PdDouble {
            addr,
            tls: secure,
            shared,
            server,
        }
    }

    /// Base URL to configure as the policy's `pd.url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The state, with leader movement advanced to now; set it freely.
    pub fn state(&self) -> MutexGuard<'_, PdState> {
        let mut state = self.shared.state.lock();
        state.step();
        state
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let router = router(shared.clone());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        if shared.state.lock().fault == Fault::Unreachable {
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                let fault = shared.state.lock().fault;
                async move {
                    match fault {
                        // An error from the service closes the connection unanswered.
                        Fault::Unreachable => {
                            return Err(std::io::Error::other("the PD double is unreachable"));
                        }
                        Fault::Slow(delay) => tokio::time::sleep(delay).await,
                        Fault::None | Fault::LeadersStuck => {}
                    }
                    let response = router
                        .oneshot(req.map(Body::new))
                        .await
                        .unwrap_or_else(|e: Infallible| match e {});
                    Ok(response)
                }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
                // A client the CA did not certify fails the handshake.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

type Pd = State<Arc<Shared>>;

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/pd/api/v1/stores", get(stores))
        .route("/pd/api/v1/members", get(members))
        .route("/pd/api/v1/members/id/{id}", delete(delete_member))
        .route("/pd/api/v1/store/{id}", delete(delete_store))
        .route("/pd/api/v1/health", get(health))
        .route("/pd/api/v1/leader", get(leader))
        .route("/pd/api/v1/leader/transfer/{name}", post(transfer_leader))
        .route("/pd/api/v1/schedulers", get(schedulers).post(add_scheduler))
        .route("/pd/api/v1/schedulers/{name}", delete(remove_scheduler))
        .route(
            "/pd/api/v1/scheduler-config/evict-leader-scheduler/list",
            get(evict_leader_config),
        )
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_call,
        ))
        .with_state(shared)
}

async fn record_call(
    State(shared): Pd,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    {
        let mut state = shared.state.lock();
        state.step();
        state.calls.push(call);
    }
    next.run(request).await
}

/// `at` on the wall clock.
fn wall_time(at: Instant) -> jiff::Timestamp {
    let ago = jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
    jiff::Timestamp::now() - ago
}

/// PD answers errors as a JSON string.
fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!(message))).into_response()
}

async fn stores(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    let stores: Vec<Value> = state
        .stores
        .iter()
        .filter(|s| s.state != "Tombstone")
        .map(|s| {
            let leaders = s.leaders.ceil() as u64;
            let heartbeat = wall_time(state.last_heartbeat(s.id));
            let mut store = json!({
                "id": s.id,
                "address": s.address,
                "version": "6.1.0",
                "status_address": s.address.replace(":20160", ":20180"),
                "git_hash": "080d086832ae5ce2495352dccaf8df5d40f30687",
                "start_timestamp": 1_661_246_464,
                "deploy_path": "/",
                "last_heartbeat": heartbeat.as_nanosecond() as i64,
                "state_name": s.state
            });
            // metapb's `state` (omitted when Up, as PD's JSON omits zero):
            // Disconnected and Down are Up stores gone quiet.
            let meta_state = match s.state.as_str() {
                "Offline" => 1,
                "Tombstone" => 2,
                _ => 0,
            };
            if meta_state != 0 {
                store["state"] = meta_state.into();
            }
            json!({
                "store": store,
                "status": {
                    "capacity": "10GiB",
                    "available": "9GiB",
                    "used_size": "1GiB",
                    "leader_count": leaders,
                    "leader_weight": 1,
                    "leader_score": leaders,
                    "leader_size": leaders,
                    "region_count": s.regions,
                    "region_weight": 1,
                    "region_score": s.regions,
                    "region_size": s.regions,
                    "start_ts": "2022-08-23T09:21:04Z",
                    "last_heartbeat_ts": heartbeat.to_string(),
                    "uptime": "38m56s"
                }
            })
        })
        .collect();
    axum::Json(json!({"count": stores.len(), "stores": stores})).into_response()
}

async fn members(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    let list: Vec<Value> = state
        .members
        .iter()
        .map(|m| state.member_json(m, &shared.namespace, &shared.cluster))
        .collect();
    let leader = state
        .members
        .iter()
        .find(|m| m.name == state.leader)
        .map(|m| state.member_json(m, &shared.namespace, &shared.cluster));
    axum::Json(json!({
        "header": {"cluster_id": state.cluster_id},
        "members": list,
        "leader": leader,
        "etcd_leader": leader
    }))
    .into_response()
}

async fn health(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    let list: Vec<Value> = state
        .members
        .iter()
        .map(|m| {
            let mut j = state.member_json(m, &shared.namespace, &shared.cluster);
            let o = j.as_object_mut().expect("object");
            o.retain(|k, _| ["name", "member_id", "client_urls"].contains(&k.as_str()));
            o.insert("health".into(), m.healthy.into());
            j
        })
        .collect();
    axum::Json(list).into_response()
}

async fn leader(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    match state.members.iter().find(|m| m.name == state.leader) {
        Some(m) => {
            axum::Json(state.member_json(m, &shared.namespace, &shared.cluster)).into_response()
        }
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "no leader"),
    }
}

async fn transfer_leader(State(shared): Pd, Path(name): Path<String>) -> Response {
    let mut state = shared.state.lock();
    match state.members.iter().find(|m| m.name == name) {
        Some(m) if m.healthy => {
            state.leader = name;
            axum::Json(json!("The transfer command is submitted.")).into_response()
        }
        Some(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "member is not healthy"),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "leader transfer target not found",
        ),
    }
}

async fn delete_member(State(shared): Pd, Path(id): Path<u64>) -> Response {
    let mut state = shared.state.lock();
    let before = state.members.len();
    state.members.retain(|m| m.id != id);
    if state.members.len() == before {
        return error(StatusCode::NOT_FOUND, &format!("member id {id} not found"));
    }
    axum::Json(json!("The PD member is removed.")).into_response()
}

/// PD's `RemoveStore`: Up, Disconnected or Down → Offline; Offline stays;
/// a Tombstone cannot be removed again.
async fn delete_store(State(shared): Pd, Path(id): Path<u64>) -> Response {
    let mut state = shared.state.lock();
    let Some(store) = state.stores.iter_mut().find(|s| s.id == id) else {
        return error(StatusCode::NOT_FOUND, &format!("store id {id} not found"));
    };
    match store.state.as_str() {
        "Tombstone" => error(
            StatusCode::BAD_REQUEST,
            &format!("[PD:core:ErrStoreRemoved]store {id} has been removed"),
        ),
        "Offline" => axum::Json(json!("The store is set as Offline.")).into_response(),
        _ => {
            store.state = "Offline".into();
            let regions = store.regions as f64;
            state.removing.insert(id, regions);
            axum::Json(json!("The store is set as Offline.")).into_response()
        }
    }
}

async fn schedulers(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    let mut names = vec![
        "balance-hot-region-scheduler".to_string(),
        "balance-leader-scheduler".to_string(),
        "balance-region-scheduler".to_string(),
    ];
    if !state.evicting.is_empty() {
        names.push("evict-leader-scheduler".into());
    }
    axum::Json(names).into_response()
}

async fn add_scheduler(State(shared): Pd, body: axum::body::Bytes) -> Response {
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON");
    };
    if input["name"] != "evict-leader-scheduler" {
        return error(
            StatusCode::BAD_REQUEST,
            "the double only runs evict-leader-scheduler",
        );
    }
    let Some(id) = input["store_id"].as_u64() else {
        return error(StatusCode::BAD_REQUEST, "missing store_id");
    };
    let mut state = shared.state.lock();
    if !state.stores.iter().any(|s| s.id == id) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("store id {id} not found"),
        );
    }
    state.evicting.insert(id);
    axum::Json(json!("The scheduler is created.")).into_response()
}

async fn remove_scheduler(State(shared): Pd, Path(name): Path<String>) -> Response {
    let id = name
        .strip_prefix("evict-leader-scheduler-")
        .and_then(|id| id.parse::<u64>().ok());
    let mut state = shared.state.lock();
    match id {
        Some(id) if state.evicting.remove(&id) => {
            axum::Json(json!("The scheduler is removed.")).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "scheduler not found"),
    }
}

async fn evict_leader_config(State(shared): Pd) -> Response {
    let state = shared.state.lock();
    if state.evicting.is_empty() {
        return error(StatusCode::NOT_FOUND, "scheduler not found");
    }
    let ranges: BTreeMap<String, Value> = state
        .evicting
        .iter()
        .map(|id| (id.to_string(), json!([{"start-key": "", "end-key": ""}])))
        .collect();
    axum::Json(json!({"store-id-ranges": ranges})).into_response()
}
