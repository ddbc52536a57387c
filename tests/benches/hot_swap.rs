//! Hot-swap benchmarks: file change → new version serving (builds already
//! in the precompiled cache, and builds never seen before), and start with
//! all built-in policies with and without the precompiled cache. Prints
//! median and p99 per case.
//!
//! `cargo bench -p steward-tests --bench hot_swap`

use std::path::Path;
use std::time::{Duration, Instant};

use steward::config::Config;
use steward::server::App;
use steward_tests::{TempDir, config_yaml, guest, misbehave_variant};

const CACHED_SWAPS: usize = 200;
const FRESH_SWAPS: usize = 30;
const STARTS: usize = 20;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(swaps());
    starts();
}

/// The serving component's digest.
fn serving(app: &App) -> String {
    app.hooks.extender.policies.current().scheduler[0]
        .digest
        .clone()
}

/// Replaces `path` atomically and waits (polling the store every 0.2 ms)
/// until the new component serves; returns how long that took.
async fn swap(app: &App, path: &Path, bytes: &[u8]) -> Duration {
    let want = steward::oci::digest(bytes);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
    let changed = Instant::now();
    while serving(app) != want {
        assert!(
            changed.elapsed() < Duration::from_secs(30),
            "the swap never happened"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    changed.elapsed()
}

/// `wasm` with a custom section named `steward-bench` holding `n`: the
/// same component under a new digest, so it must be compiled again.
fn fresh_build(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = b"steward-bench";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

async fn swaps() {
    let dir = TempDir::new("bench-swap");
    let module = dir.path().join("policy.wasm");
    let built = std::fs::read(guest("misbehave")).expect("misbehave built");
    let variant = misbehave_variant();
    std::fs::write(&module, &built).expect("write");
    let file = dir.path().join("steward.yaml");
    let yaml = config_yaml(&format!(
        "policies:\n- id: misbehave\n  hook: scheduler\n  module: {}\n  settings: {{behaviour: reject-all}}\n",
        module.display()
    ));
    std::fs::write(&file, yaml).expect("write config");
    let config = Config::load(&file).expect("config");
    let app = App::start(&config).await.expect("host starts");

    // Both builds in the precompiled cache (the first swap to each compiles).
    swap(&app, &module, &variant).await;
    swap(&app, &module, &built).await;
    let mut cached = Vec::with_capacity(CACHED_SWAPS);
    for k in 0..CACHED_SWAPS {
        let bytes = if k % 2 == 0 { &variant } else { &built };
        cached.push(swap(&app, &module, bytes).await);
    }
    report(
        "file change → new version serving, build in the precompiled cache",
        &mut cached,
    );

    let mut fresh = Vec::with_capacity(FRESH_SWAPS);
    for n in 0..FRESH_SWAPS {
        let bytes = fresh_build(&built, n as u32 + std::process::id());
        fresh.push(swap(&app, &module, &bytes).await);
    }
    report(
        "file change → new version serving, new build (compiled)",
        &mut fresh,
    );
}

/// Engine plus every built-in policy, from scratch each time.
fn starts() {
    let config = steward_tests::config(steward_tests::PD_QUORUM);
    let start = |cache: Option<&Path>| {
        let t = Instant::now();
        let runtime =
            steward::runtime::Runtime::new(cache.map(Path::to_path_buf)).expect("runtime");
        steward_tests::load_policies(&runtime, &config).expect("policies load");
        t.elapsed()
    };
    let mut compiled: Vec<Duration> = (0..STARTS).map(|_| start(None)).collect();
    report(
        "start: engine + built-in policies, no cache (compiling)",
        &mut compiled,
    );
    let cache = TempDir::new("bench-start-cache");
    start(Some(cache.path()));
    let mut precompiled: Vec<Duration> = (0..STARTS).map(|_| start(Some(cache.path()))).collect();
    report(
        "start: engine + built-in policies, precompiled cache",
        &mut precompiled,
    );
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{what:<70} median {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );
}
