//! The abuse campaign: what hostile clients and floods throw at a running
//! `steward serve`, case by case. While each case's connections are still
//! open, a fresh client must get a filter answered and `/healthz` must
//! answer. Shared by the test (the server stays up and keeps serving) and
//! the bench (resident memory after the campaign, SPEC §8).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::e2e::StewardProcess;
use crate::pd_double::{Fault, PdDouble};
use crate::tls::{HttpsClient, TestCa};

/// How long a fresh client may wait for its answer while a case runs.
pub const FRESH_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// How many of each abuse the campaign throws.
pub struct Scale {
    /// Keep-alive connections that send nothing.
    pub idle: usize,
    /// Clients trickling headers that never end.
    pub slowloris: usize,
    /// Admission reviews held by a PD that never answers.
    pub reviews: usize,
    /// Repeated names in one filter request.
    pub node_names: usize,
    /// Nesting depth of a JSON body.
    pub nesting: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            idle: 1_000,
            slowloris: 200,
            reviews: 1_000,
            node_names: 100_000,
            nesting: 100_000,
        }
    }
}

/// One case: its name, and how long the fresh client waited.
#[derive(Debug)]
pub struct CaseReport {
    pub case: &'static str,
    pub fresh_client: Duration,
}

/// `steward serve` with pd-quorum on the bundled snapshot, and tidb-guard
/// behind an HTTPS webhook asking a PD double that accepts connections
/// and never answers.
pub struct Target {
    pub steward: StewardProcess,
    pub webhook: SocketAddr,
    pub ca: TestCa,
    _pd: PdDouble,
}

/// The bundled snapshot with `nodes` more nodes and `pods` more running
/// pods, written to `<dir>/snapshot.yaml`: the cache at SPEC §8's scale.
pub fn large_snapshot(dir: &Path, nodes: usize, pods: usize) -> Result<PathBuf> {
    use std::fmt::Write as _;
    let mut text = std::fs::read_to_string(crate::example_snapshot())?;
    for i in 0..nodes {
        let _ = write!(
            text,
            "\n---\n{}",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": format!("node-{i}"), "labels": {
                    "kubernetes.io/hostname": format!("node-{i}"),
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
                "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })
        );
    }
    for j in 0..pods {
        let _ = write!(
            text,
            "\n---\n{}",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{j}"), "namespace": format!("ns-{}", j % 50),
                             "uid": format!("uid-{j}"), "labels": {"app": format!("app-{}", j % 100)}},
                "spec": {"nodeName": format!("node-{}", j % nodes.max(1)),
                         "containers": [{"name": "main", "image": "pause",
                                         "resources": {"requests": {"cpu": "100m",
                                                                    "memory": "128Mi"}}}]},
                "status": {"phase": "Running"},
            })
        );
    }
    let path = dir.join("snapshot.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

impl Target {
    /// Starts the target over `snapshot` (the bundled one, or a
    /// [`large_snapshot`]) with its files in `dir`.
    pub async fn start(dir: &Path, snapshot: &Path) -> Result<Target> {
        let pd = PdDouble::start("tidb-cluster", "basic").await;
        pd.set_fault(Fault::Slow(Duration::from_secs(3_600)));
        let ca = TestCa::new();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        ca.issue("steward-webhook").write(&cert, &key);
        let yaml = format!(
            "cluster: {{snapshot: {snapshot}}}\n\
             server: {{listen: '$extender'}}\n\
             admission: {{listen: '$webhook', certFile: {cert}, keyFile: {key}}}\n\
             policies:\n{quorum}\
             - id: tidb-guard\n  hook: admission\n  module: {{tidb_guard}}\n  deadlineMs: 2000\n  \
             pd: {{url: '{pd}', timeoutMs: 1000}}\n",
            snapshot = snapshot.display(),
            cert = cert.display(),
            key = key.display(),
            quorum = crate::PD_QUORUM,
            pd = pd.url(),
        );
        let steward =
            StewardProcess::start_config("campaign", dir, &crate::expand_guests(&yaml)).await?;
        let webhook = steward.webhook.context("the campaign's webhook")?;
        Ok(Target {
            steward,
            webhook,
            ca,
            _pd: pd,
        })
    }

    /// A fresh client's filter and `/healthz`, both answered within
    /// [`FRESH_CLIENT_BOUND`]; how long they took.
    async fn fresh_client(&self, during: &str) -> Result<Duration> {
        let started = Instant::now();
        let answered = tokio::time::timeout(FRESH_CLIENT_BOUND, async {
            let (status, answer) = crate::filter_fixture(self.steward.addr).await;
            let (health, _) = crate::get(self.steward.addr, "/healthz").await;
            (status, answer, health)
        })
        .await
        .with_context(|| {
            format!("a fresh client was not answered within {FRESH_CLIENT_BOUND:?} {during}")
        })?;
        let (status, answer, health) = answered;
        ensure!(
            status == 200 && health == 200,
            "a fresh client {during} got filter {status} ({answer}), healthz {health}"
        );
        Ok(started.elapsed())
    }

    /// Runs every case in turn; fails at the first case during which a
    /// fresh client was not served or after which the server had exited.
    pub async fn run(&mut self, scale: &Scale) -> Result<Vec<CaseReport>> {
        let mut reports = Vec::new();
        let addr = self.steward.addr;

        let idle = open(addr, scale.idle, b"").await?;
        reports.push(self.case("idle keep-alive connections", idle).await?);

        let slow = open(
            addr,
            scale.slowloris,
            b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nX-",
        )
        .await?;
        reports.push(self.case("headers that never end", slow).await?);

        let huge = open(
            addr,
            1,
            b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n{",
        )
        .await?;
        reports.push(self.case("a 1 GiB Content-Length", huge).await?);

        let reviews = self.hold_reviews(scale.reviews).await?;
        let report = self
            .case("reviews waiting on a silent PD", Vec::new())
            .await?;
        for r in reviews {
            r.abort();
        }
        reports.push(report);

        let mut request: serde_json::Value = serde_json::from_slice(&std::fs::read(
            crate::fixture("extender/filter-nodenames.json"),
        )?)?;
        let names = request["NodeNames"].as_array().cloned().unwrap_or_default();
        request["NodeNames"] = names
            .iter()
            .cycle()
            .take(scale.node_names)
            .cloned()
            .collect();
        let (status, _) =
            crate::post(addr, "/scheduler/filter", request.to_string().as_bytes()).await;
        ensure!(status == 200, "repeated NodeNames got HTTP {status}");
        reports.push(self.case("repeated NodeNames", Vec::new()).await?);

        let nested = format!("{}{}", "[".repeat(scale.nesting), "]".repeat(scale.nesting));
        let (status, _) = crate::post(addr, "/scheduler/filter", nested.as_bytes()).await;
        ensure!(status == 400, "a deeply nested body got HTTP {status}");
        let mut https = HttpsClient::connect(self.webhook, self.ca.client_config()).await?;
        let (status, _) = https
            .post("/admission/validate/tidb-guard", nested.into_bytes())
            .await?;
        ensure!(status == 400, "a deeply nested review got HTTP {status}");
        reports.push(self.case("deeply nested bodies", Vec::new()).await?);
        Ok(reports)
    }

    /// `count` filter round trips (a new connection each, as
    /// kube-scheduler's extender client may open), first on a quiet server,
    /// then while `reviews` admission reviews wait on the silent PD; the
    /// latencies of each, sorted.
    pub async fn filters_beside_waiting_reviews(
        &self,
        reviews: usize,
        count: usize,
    ) -> Result<(Vec<Duration>, Vec<Duration>)> {
        let quiet = self.filter_latencies(count).await?;
        let held = self.hold_reviews(reviews).await?;
        let beside = self.filter_latencies(count).await;
        for r in held {
            r.abort();
        }
        Ok((quiet, beside?))
    }

    async fn filter_latencies(&self, count: usize) -> Result<Vec<Duration>> {
        let mut took = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let (status, answer) = crate::filter_fixture(self.steward.addr).await;
            ensure!(status == 200, "a filter got HTTP {status}: {answer}");
            took.push(started.elapsed());
        }
        took.sort_unstable();
        Ok(took)
    }

    /// A fresh client while `held` stay open; then they are closed.
    async fn case(&mut self, case: &'static str, held: Vec<TcpStream>) -> Result<CaseReport> {
        let fresh_client = self.fresh_client(&format!("during \"{case}\"")).await?;
        drop(held);
        self.steward
            .process
            .check_running()
            .with_context(|| format!("after \"{case}\""))?;
        Ok(CaseReport { case, fresh_client })
    }

    /// `count` reviews of a TiKV pod's deletion, each reading PD, over
    /// their own HTTPS connections; they stay waiting until aborted.
    async fn hold_reviews(&self, count: usize) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let review = serde_json::to_vec(&crate::review_fixture("pod-delete-basic-tikv-1"))?;
        let config: Arc<rustls::ClientConfig> = self.ca.client_config();
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let mut https = HttpsClient::connect(self.webhook, config.clone()).await?;
            let review = review.clone();
            held.push(tokio::spawn(async move {
                let _ = https.post("/admission/validate/tidb-guard", review).await;
            }));
        }
        // Let them reach the policy and start waiting on PD.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if held.iter().all(|r| r.is_finished()) {
            bail!("the reviews did not wait on the silent PD");
        }
        Ok(held)
    }
}

/// `count` connections to `addr`, each having sent `first`.
async fn open(addr: SocketAddr, count: usize, first: &[u8]) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).await?;
        if !first.is_empty() {
            s.write_all(first).await?;
        }
        streams.push(s);
    }
    Ok(streams)
}
