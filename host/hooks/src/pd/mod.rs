//! A client of PD's HTTP API (`/pd/api/v1/...`), the paths and JSON shapes
//! tidb-operator's `pkg/pdapi` uses, over plain HTTP or mutual TLS. Reads
//! serve the guests' `pd` import; writes serve the action executor. Every
//! call has a timeout.

mod tls;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use steward_runtime::PdReader;
use steward_wit::{Member, PdCluster, Store};

use crate::config::{PdConfig, PdTlsConfig};
use tls::TlsClients;
pub use tls::{SecretAccess, TlsSource};

/// Largest PD answer read (`/stores` of a large cluster is a few MiB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Where a policy's PD lives and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdEndpoint {
    /// Base URL with `{cluster}` and `{namespace}` placeholders.
    pub url: String,
    pub timeout: Duration,
    pub tls: Option<PdTlsConfig>,
}

impl PdEndpoint {
    pub fn from_config(c: &PdConfig) -> PdEndpoint {
        PdEndpoint {
            url: c.url.trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(c.timeout_ms),
            tls: c.tls.clone(),
        }
    }

    /// Where `cluster`'s PD is and how to reach it.
    pub fn base(&self, cluster: &PdCluster) -> PdBase {
        PdBase {
            url: self
                .url
                .replace("{cluster}", &cluster.name)
                .replace("{namespace}", &cluster.namespace),
            tls: self.tls.as_ref().map(|t| TlsSource::of(t, cluster)),
        }
    }
}

/// One TiDB cluster's PD: its base URL, and its TLS material if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdBase {
    pub url: String,
    pub tls: Option<TlsSource>,
}

impl PdBase {
    /// A PD reached over plain HTTP at `url`.
    pub fn plain(url: impl Into<String>) -> PdBase {
        PdBase {
            url: url.into(),
            tls: None,
        }
    }
}

impl std::fmt::Display for PdBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// A pooled HTTP/1.1 client of PD: plain HTTP (tidb-operator's default)
/// or HTTPS with the cluster's TLS material. Cheap to clone.
#[derive(Clone)]
pub struct PdClient {
    http: Client<HttpConnector, Full<Bytes>>,
    tls: Arc<TlsClients>,
}

impl Default for PdClient {
    fn default() -> Self {
        PdClient::new(SecretAccess::None)
    }
}

impl PdClient {
    /// A client that reads TLS Secrets through `secrets`.
    pub fn new(secrets: SecretAccess) -> PdClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        PdClient {
            http,
            tls: Arc::new(TlsClients::new(secrets)),
        }
    }
}

/// What went wrong talking to PD, as a sentence naming the PD.
pub type PdError = String;

/// A policy's PD reads: the runtime's [`PdReader`] over [`PdClient`].
/// Reads block the evaluating thread (never a reactor thread) on the
/// host's async runtime, each within the endpoint's timeout and the time
/// the runtime allows.
pub struct PdReads {
    pub client: PdClient,
    pub endpoint: PdEndpoint,
}

impl PdReads {
    fn block_on<T, F>(
        &self,
        cluster: &PdCluster,
        within: Duration,
        read: impl FnOnce(PdClient, PdBase, Duration) -> F,
    ) -> Result<T, PdError>
    where
        F: Future<Output = Result<T, PdError>>,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            "PD reads need the host's async runtime, which is not running".to_string()
        })?;
        let base = self.endpoint.base(cluster);
        let timeout = self.endpoint.timeout.min(within);
        handle.block_on(read(self.client.clone(), base, timeout))
    }
}

impl PdReader for PdReads {
    fn stores(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<Store>, PdError> {
        self.block_on(cluster, within, |c, base, t| async move {
            c.stores(&base, t).await
        })
    }
    fn members(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<Member>, PdError> {
        self.block_on(cluster, within, |c, base, t| async move {
            c.members(&base, t).await
        })
    }
    fn leader(&self, cluster: &PdCluster, within: Duration) -> Result<String, PdError> {
        self.block_on(cluster, within, |c, base, t| async move {
            c.leader(&base, t).await
        })
    }
    fn schedulers(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<String>, PdError> {
        self.block_on(cluster, within, |c, base, t| async move {
            c.schedulers(&base, t).await
        })
    }
}

impl PdClient {
    /// Every store PD lists (PD leaves Tombstones out by default).
    pub async fn stores(&self, base: &PdBase, timeout: Duration) -> Result<Vec<Store>, PdError> {
        let answer: wire::StoresInfo = self.get_json(base, "/pd/api/v1/stores", timeout).await?;
        Ok(answer
            .stores
            .into_iter()
            .map(wire::StoreInfo::lower)
            .collect())
    }

    /// Every member, with its health from `/health`.
    pub async fn members(&self, base: &PdBase, timeout: Duration) -> Result<Vec<Member>, PdError> {
        let members: wire::Members = self.get_json(base, "/pd/api/v1/members", timeout).await?;
        let health: Vec<wire::Health> = self.get_json(base, "/pd/api/v1/health", timeout).await?;
        Ok(members
            .members
            .into_iter()
            .map(|m| Member {
                healthy: health
                    .iter()
                    .any(|h| h.member_id == m.member_id && h.health),
                id: m.member_id,
                name: m.name,
                client_urls: m.client_urls,
            })
            .collect())
    }

    pub async fn leader(&self, base: &PdBase, timeout: Duration) -> Result<String, PdError> {
        let leader: wire::Member = self.get_json(base, "/pd/api/v1/leader", timeout).await?;
        Ok(leader.name)
    }

    /// Scheduler names. PD ≥ 4 runs one `evict-leader-scheduler` for all
    /// stores; it is listed as `evict-leader-scheduler-<id>` per store, as
    /// older PDs name it (tidb-operator's `filterLeaderEvictScheduler`).
    pub async fn schedulers(
        &self,
        base: &PdBase,
        timeout: Duration,
    ) -> Result<Vec<String>, PdError> {
        let mut names: Vec<String> = self
            .get_json(base, "/pd/api/v1/schedulers", timeout)
            .await?;
        if let Some(i) = names.iter().position(|n| n == "evict-leader-scheduler") {
            names.remove(i);
            let config: wire::EvictLeaderConfig = self
                .get_json(
                    base,
                    "/pd/api/v1/scheduler-config/evict-leader-scheduler/list",
                    timeout,
                )
                .await?;
            let mut ids: Vec<u64> = config
                .store_id_ranges
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            ids.sort_unstable();
            names.extend(
                ids.into_iter()
                    .map(|id| format!("evict-leader-scheduler-{id}")),
            );
        }
        Ok(names)
    }

    /// Adds the evict-leader scheduler for `store`. An existing one is fine.
    pub async fn evict_leader_begin(
        &self,
        base: &PdBase,
        store: u64,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let body = serde_json::json!({"name": "evict-leader-scheduler", "store_id": store});
        let (status, text) = self
            .call(
                base,
                Method::POST,
                "/pd/api/v1/schedulers",
                Some(body),
                timeout,
            )
            .await?;
        if status.is_success() {
            return Ok(());
        }
        // Older PDs refuse a second scheduler for the store ("scheduler existed").
        let running = self.schedulers(base, timeout).await?;
        if running.contains(&format!("evict-leader-scheduler-{store}")) {
            return Ok(());
        }
        Err(refused(
            base,
            "adding evict-leader-scheduler",
            status,
            &text,
        ))
    }

    /// Removes the evict-leader scheduler of `store`; absent is fine.
    pub async fn evict_leader_end(
        &self,
        base: &PdBase,
        store: u64,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let path = format!("/pd/api/v1/schedulers/evict-leader-scheduler-{store}");
        self.expect_ok(
            base,
            Method::DELETE,
            &path,
            timeout,
            "removing evict-leader-scheduler",
        )
        .await
    }

    /// Moves PD leadership to member `name`.
    pub async fn transfer_leader(
        &self,
        base: &PdBase,
        name: &str,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let path = format!("/pd/api/v1/leader/transfer/{name}");
        self.expect_ok(
            base,
            Method::POST,
            &path,
            timeout,
            "transferring the PD leader",
        )
        .await
    }

    /// Deletes PD member `id`; an unknown member is fine.
    pub async fn delete_member(
        &self,
        base: &PdBase,
        id: u64,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let path = format!("/pd/api/v1/members/id/{id}");
        self.expect_ok(
            base,
            Method::DELETE,
            &path,
            timeout,
            "deleting the PD member",
        )
        .await
    }

    /// Takes store `id` offline (`DELETE /pd/api/v1/store/{id}`): PD moves
    /// its regions away and then makes it a Tombstone. As tidb-operator's
    /// `DeleteStore`: a store PD no longer lists (Tombstone or unknown) or
    /// already Offline needs no call.
    pub async fn delete_store(
        &self,
        base: &PdBase,
        id: u64,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let stores = self.stores(base, timeout).await?;
        match stores.iter().find(|s| s.id == id) {
            None => return Ok(()),
            Some(s) if s.state == "Offline" || s.state == "Tombstone" => return Ok(()),
            Some(_) => {}
        }
        let path = format!("/pd/api/v1/store/{id}");
        self.expect_ok(
            base,
            Method::DELETE,
            &path,
            timeout,
            "taking the store offline",
        )
        .await
    }

    /// A write whose success is 2xx, or 404 (already done), as
    /// tidb-operator treats these calls.
    async fn expect_ok(
        &self,
        base: &PdBase,
        method: Method,
        path: &str,
        timeout: Duration,
        what: &str,
    ) -> Result<(), PdError> {
        let (status, text) = self.call(base, method, path, None, timeout).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(refused(base, what, status, &text))
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        base: &PdBase,
        path: &str,
        timeout: Duration,
    ) -> Result<T, PdError> {
        let (status, text) = self.call(base, Method::GET, path, None, timeout).await?;
        if !status.is_success() {
            return Err(refused(base, &format!("GET {path}"), status, &text));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("PD at {base} answered GET {path} with unexpected JSON: {e}"))
    }

    async fn call(
        &self,
        base: &PdBase,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, String), PdError> {
        let url = format!("{base}{path}");
        let what = format!("{method} {url}");
        let mut request = Request::builder().method(method).uri(&url);
        let bytes = match body {
            Some(json) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(bytes)).map_err(|e| {
            format!("PD base URL {base} is not usable: {e}; fix the policy's pd.url")
        })?;
        let exchange = async {
            let sent = match &base.tls {
                None => self.http.request(request).await,
                Some(source) => self.tls.client(source).await?.request(request).await,
            };
            let response = sent.map_err(|e| match &base.tls {
                Some(source) if e.is_connect() => format!(
                    "PD is unreachable over TLS: {what} failed: {}; check that {source} holds \
                     the CA that issued PD's certificate and a client certificate PD accepts",
                    cause(&e)
                ),
                _ => format!("PD is unreachable: {what} failed: {}", cause(&e)),
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading PD's answer to {what} failed: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("PD did not answer {what} within {}ms", timeout.as_millis()))?
    }
}

fn refused(base: &PdBase, what: &str, status: StatusCode, text: &str) -> PdError {
    let text: String = text.trim().chars().take(300).collect();
    format!("PD at {base} refused {what}: HTTP {status}: {text}")
}

/// The innermost cause of a client error (hyper hides the useful part).
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
