//! Admission benchmarks (SPEC §8: p99 ≤ 0.5 ms in-process, ≥ 5,000
//! reviews/s over HTTPS keep-alive on 2 cores): local-storage-admission on
//! a pod CREATE, and tidb-guard on a TiKV pod DELETE (dry run, so PD state
//! stays put) whose store PD reports through the PD double, which answers
//! from memory over loopback HTTP. Prints medians, p99 and throughput.
//!
//! `cargo bench -p steward-tests --bench admission`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use steward::admission::Endpoint;
use steward::cli::bench::percentile;
use steward::server::App;
use steward_tests::pd_double::PdDouble;
use steward_tests::{admission_app, review_fixture, serve_webhook};

/// Concurrent keep-alive connections in the throughput runs.
const CONNECTIONS: usize = 16;
const THROUGHPUT_RUN: Duration = Duration::from_secs(5);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let pd = rt.block_on(PdDouble::start("tidb-cluster", "basic"));
    let policies = format!(
        "- id: local-storage\n  hook: admission\n  module: {{local_storage_admission}}\n  \
         mutate: true\n- id: tidb-guard\n  hook: admission\n  module: {{tidb_guard}}\n  \
         deadlineMs: 1000\n  pd: {{url: '{}'}}\n",
        pd.url()
    );
    let app = {
        let _entered = rt.enter();
        admission_app(&policies)
    };
    let cases = [
        (
            "local-storage-admission, pod CREATE (patch)",
            Endpoint::Mutate,
            "local-storage",
            "pod-create-local-unbound",
        ),
        (
            "tidb-guard, TiKV pod DELETE (dry run; PD read)",
            Endpoint::Validate,
            "tidb-guard",
            "pod-delete-basic-tikv-1",
        ),
    ];
    for (what, endpoint, policy, fixture) in cases {
        let mut body = review_fixture(fixture);
        body["request"]["dryRun"] = serde_json::json!(true);
        let body = body.to_string().into_bytes();
        let samples = in_process(&rt, &app, endpoint, policy, &body, 5_000);
        report(&format!("{what}, in-process"), &samples);
        let path = match endpoint {
            Endpoint::Validate => format!("/admission/validate/{policy}"),
            Endpoint::Mutate => format!("/admission/mutate/{policy}"),
        };
        let (count, elapsed) = over_https(&rt, &app, &path, &body);
        println!(
            "{:<60} {:>8.0} reviews/s   ({count} reviews in {:.1} s, {CONNECTIONS} keep-alive connections)",
            format!("{what}, HTTPS"),
            count as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    println!("PD double requests served: {}", pd.state().calls.len());
}

/// One review as the server does it: decode, evaluate (on this thread, a
/// blocking one, as `spawn_blocking` gives), encode; no network.
fn in_process(
    rt: &tokio::runtime::Runtime,
    app: &App,
    endpoint: Endpoint,
    policy: &str,
    body: &[u8],
    iterations: usize,
) -> Vec<Duration> {
    let _entered = rt.enter();
    let once = || {
        let reviewed = app
            .hooks
            .admission
            .review(endpoint, policy, body)
            .expect("the review is well formed");
        assert!(reviewed.pending().is_empty(), "a dry run performs nothing");
        let out = rt.block_on(app.hooks.admission.finish(reviewed));
        serde_json::to_vec(&out).expect("serializes")
    };
    steward::cli::bench::sample(
        iterations / 10,
        iterations,
        |_| (),
        |()| Ok::<_, Infallible>(once()),
    )
    .unwrap_or_else(|never| match never {})
}

/// Reviews per second from `CONNECTIONS` clients, each on its own
/// keep-alive TLS connection, all on the same 2-worker runtime as the
/// server.
fn over_https(rt: &tokio::runtime::Runtime, app: &App, path: &str, body: &[u8]) -> (u64, Duration) {
    rt.block_on(async {
        let webhook = serve_webhook(app.clone(), 8 << 20).await;
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut client = webhook.connect().await;
            // Warm the connection up.
            client.post(path, body.to_vec()).await.expect("review");
            let (done, stop, path, body) =
                (done.clone(), stop.clone(), path.to_string(), body.to_vec());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = client.post(&path, body.clone()).await.expect("review");
                    assert_eq!(status, 200);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(THROUGHPUT_RUN).await;
        stop.store(true, Ordering::Relaxed);
        let count = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        for c in clients {
            c.await.expect("client");
        }
        (count, elapsed)
    })
}

fn report(what: &str, sorted: &[Duration]) {
    println!(
        "{what:<60} median {:>7.1} µs   p99 {:>7.1} µs   (n={})",
        percentile(sorted, 50).as_secs_f64() * 1e6,
        percentile(sorted, 99).as_secs_f64() * 1e6,
        sorted.len()
    );
}
