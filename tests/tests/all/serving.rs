//! Serving under pressure: no client, slow PD or careless edit can take the
//! extender away from kube-scheduler.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use steward::cluster::{Backend, ClusterCache};
use steward::config::ConnectionLimits;
use steward::server::App;
use steward_tests::campaign::{Scale, Target};
use steward_tests::pd_double::{Fault, PdDouble};
use steward_tests::{admission_app, filter_fixture, fixture, review_fixture, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Reviews held on a PD that accepts connections and never answers.
const WAITING_REVIEWS: usize = 1_000;

/// Each review of a TiKV pod's deletion reads PD, which here never answers:
/// the review waits out its PD timeout. Before each hook had its own
/// evaluation budget, 1,000 such reviews queued a filter behind them for
/// seconds (7 s was seen, past kube-scheduler's `httpTimeout: 5s`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reviews_waiting_on_a_silent_pd_never_delay_a_filter() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    pd.set_fault(Fault::Slow(Duration::from_secs(60)));
    let policies = format!(
        "{}- id: tidb-guard\n  hook: admission\n  module: {{tidb_guard}}\n  deadlineMs: 2000\n  \
         pd: {{url: '{}', timeoutMs: 500}}\n",
        steward_tests::PD_QUORUM,
        pd.url()
    );
    let app = admission_app(&policies);
    let body = webhook_body_limit();
    let webhook = steward::server::admission::router(app.clone(), body);
    let extender = app.clone().router("/scheduler");

    let review = review_fixture("pod-delete-basic-tikv-1").to_string();
    let reviews: Vec<_> = (0..WAITING_REVIEWS)
        .map(|_| {
            let request = Request::post("/admission/validate/tidb-guard")
                .header("content-type", "application/json")
                .body(Body::from(review.clone()))
                .unwrap();
            tokio::spawn(webhook.clone().oneshot(request))
        })
        .collect();
    // Let the reviews take every evaluation they may and start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let filter = Request::post("/scheduler/filter")
        .header("content-type", "application/json")
        .body(Body::from(
            std::fs::read(fixture("extender/filter-nodenames.json")).unwrap(),
        ))
        .unwrap();
    let started = Instant::now();
    let answer = extender.oneshot(filter).await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status(), 200);
    assert!(
        took < Duration::from_secs(1),
        "the filter waited {took:?} behind reviews held by PD"
    );
    let pending = reviews.iter().filter(|r| !r.is_finished()).count();
    assert!(
        pending > WAITING_REVIEWS / 2,
        "the reviews were still waiting on PD when the filter was answered ({pending} pending)"
    );
    for r in reviews {
        r.abort();
    }
}

/// The webhook's body limit in these tests: 1 MiB within 10 s.
fn webhook_body_limit() -> steward::server::BodyLimit {
    steward::server::BodyLimit {
        max_bytes: 1 << 20,
        read_timeout: Duration::from_secs(10),
        setting: "admission.maxBodyBytes",
    }
}

/// Limits short enough for a test: 300 ms for headers, bodies and idling,
/// 20 connections.
fn tightly_limited() -> App {
    let mut app = steward_tests::app(steward_tests::PD_QUORUM);
    app.connections = ConnectionLimits {
        header_read_timeout_ms: 300,
        body_read_timeout_ms: 300,
        idle_timeout_ms: 300,
        max_connections: 20,
    };
    app.body.read_timeout = Duration::from_millis(300);
    app
}

/// What the server sends on `stream` until it closes it, if it does
/// within `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("the server accepts")
}

/// Before the listeners had limits, idle keep-alive connections, clients
/// that never finished their headers or body, and a 1 GiB Content-Length
/// were all held open for as long as the client liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_oversized_clients_are_disconnected() {
    let addr = serve(tightly_limited()).await;
    let bound = Duration::from_secs(3);

    // Idle keep-alive: one request answered, then the connection is closed.
    let mut idle = connect(addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = until_closed(&mut idle, bound).await;
    assert!(
        seen.as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 200")),
        "an idle keep-alive connection was answered, then closed: {seen:?}"
    );

    // Slowloris: headers one byte at a time, never finished.
    let mut slow = connect(addr).await;
    slow.write_all(b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        if slow.write_all(b"X").await.is_err() {
            break true;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ if started.elapsed() > bound => break false,
            _ => {}
        }
    };
    assert!(closed, "a client trickling its headers is held open");

    // A body that never finishes: 408.
    let mut stalled = connect(addr).await;
    stalled
        .write_all(
            b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Pod\"",
        )
        .await
        .unwrap();
    let seen = until_closed(&mut stalled, bound).await.unwrap_or_default();
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");

    // A 1 GiB Content-Length: 413 at once, like the webhook.
    let mut huge = connect(addr).await;
    huge.write_all(
        b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n{",
    )
    .await
    .unwrap();
    let seen = until_closed(&mut huge, bound).await.unwrap_or_default();
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");
    assert!(seen.contains("server.maxBodyBytes"), "{seen}");
}

/// Five times as many silent connections as the listener takes: each is
/// dropped once idle, and a fresh client is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_client_is_served_while_silent_connections_fill_the_cap() {
    let addr = serve(tightly_limited()).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(connect(addr).await);
    }
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(10), filter_fixture(addr)).await;
    let (status, _) = answered.expect("a fresh client was answered while the cap was full");
    assert_eq!(status, 200);
    eprintln!(
        "answered after {:?} behind 100 silent connections",
        started.elapsed()
    );
    let mut closed = 0;
    for mut s in silent {
        if until_closed(&mut s, Duration::from_secs(3)).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(closed, 100, "every silent connection is closed");
}

/// Small protocol errors each get a status and a sentence: unknown paths,
/// wrong methods, repeated node names, reviews without a kind or without
/// the object a CREATE carries.
#[tokio::test]
async fn small_protocol_errors_get_clear_answers() {
    let app = steward_tests::app(steward_tests::PD_QUORUM);
    let addr = serve(app).await;
    let (status, body) = steward_tests::get(addr, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("nothing is served at /nope"), "{body}");
    let (status, body) = steward_tests::get(addr, "/scheduler/filter").await;
    assert_eq!(status, 405);
    assert!(
        body.contains("/scheduler/filter does not answer GET"),
        "{body}"
    );

    // One repeat, and 100,000 repeats of the four nodes' names: each
    // node answered once, in its first place.
    let mut request: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("extender/filter-nodenames.json")).unwrap())
            .unwrap();
    let names = request["NodeNames"].as_array().unwrap().clone();
    let once_again: Vec<_> = names.iter().chain(&names[..1]).cloned().collect();
    for repeated in [
        once_again,
        names.iter().cycle().take(100_000).cloned().collect(),
    ] {
        request["NodeNames"] = repeated.into();
        let (status, body) =
            steward_tests::post(addr, "/scheduler/filter", request.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut answered: Vec<String> = answer["NodeNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .chain(
                answer["FailedNodes"]
                    .as_object()
                    .into_iter()
                    .flat_map(|f| f.keys().cloned()),
            )
            .collect();
        answered.sort();
        let mut expected: Vec<String> = names.iter().map(|n| n.as_str().unwrap().into()).collect();
        expected.sort();
        assert_eq!(answered, expected, "{answer}");
    }

    let app = admission_app(
        "- id: local-storage\n  hook: admission\n  module: {local_storage_admission}\n  mutate: true\n",
    );
    let body = webhook_body_limit();
    let webhook = steward::server::admission::router(app, body);
    let review = |body: serde_json::Value| {
        let webhook = webhook.clone();
        async move {
            let request = Request::post("/admission/mutate/local-storage")
                .body(Body::from(body.to_string()))
                .unwrap();
            let answer = webhook.oneshot(request).await.unwrap();
            let status = answer.status().as_u16();
            let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let mut create = review_fixture("pod-create-local-unbound");
    create["request"]["object"] = serde_json::Value::Null;
    let (status, message) = review(create).await;
    assert_eq!(status, 400);
    assert!(message.contains("request.object is missing"), "{message}");
    let mut no_kind = review_fixture("pod-create-local-unbound");
    no_kind["kind"] = "".into();
    let (status, message) = review(no_kind).await;
    assert_eq!(status, 400);
    assert!(message.contains("the body has no kind"), "{message}");
}

/// The abuse campaign against the real `steward serve` process: idle and
/// trickling connections, a 1 GiB Content-Length, 1,000 reviews held by a
/// silent PD, 100,000 repeated node names and 100,000-deep JSON. During
/// each a fresh client is answered, and the server is still up after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abuse_campaign_leaves_the_server_up_and_serving() {
    let dir = steward_tests::TempDir::new("campaign");
    let mut target = Target::start(dir.path(), &steward_tests::example_snapshot())
        .await
        .unwrap();
    let reports = target.run(&Scale::default()).await.unwrap();
    for r in &reports {
        eprintln!(
            "campaign: {}: fresh client answered in {:?}",
            r.case, r.fresh_client
        );
    }
    assert_eq!(reports.len(), 6, "{reports:?}");
}

/// A bind the API server cannot take is answered as kube-scheduler
/// expects (an `Error` in a 200 answer, from this message), and the
/// message names the API server to check.
#[tokio::test]
async fn a_bind_that_cannot_reach_the_api_server_names_it() {
    let dir = steward_tests::TempDir::new("bind-unreachable");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: c, context: {cluster: k, user: u}}]\n",
    )
    .unwrap();
    let backend = Backend::connect(&kubeconfig.display().to_string())
        .await
        .unwrap();
    let cache = ClusterCache::default();
    let refused = backend
        .bind(&cache, "tidb-cluster", "basic-pd-0", "uid-0", "node-a")
        .await
        .unwrap_err();
    assert!(
        refused.contains("binding pod tidb-cluster/basic-pd-0 to node node-a through the API server at https://127.0.0.1:1"),
        "{refused}"
    );
}

/// The allocator's options are set before `main` in every binary that
/// links Steward (this test binary too), not only in `steward` itself.
#[test]
fn the_allocator_gives_memory_back_within_its_purge_delay() {
    assert_eq!(
        steward::allocator::purge_delay_ms(),
        steward::allocator::PURGE_DELAY_MS
    );
}
