//! Resident memory of `steward serve` through the abuse campaign
//! (`steward_tests::campaign`) with 5,000 nodes and 50,000 pods cached: at
//! rest, at its peak, and once the campaign's clients are gone (SPEC §8:
//! at most 150 MB, also after it); then filter latency over HTTP, quiet
//! and while 1,000 admission reviews wait on a PD that never answers.
//!
//! `cargo bench -p steward-tests --bench campaign` (see BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use steward::cli::bench::percentile;
use steward_tests::campaign::{Scale, Target, large_snapshot};
use steward_tests::e2e::resident_bytes;

/// The cache at SPEC §8's scale.
const NODES: usize = 5_000;
const PODS: usize = 50_000;

/// How long the server is left alone after the campaign before measuring.
const SETTLE: Duration = Duration::from_secs(10);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let dir = steward_tests::TempDir::new("campaign-bench");
        let snapshot = large_snapshot(dir.path(), NODES, PODS).expect("the snapshot is written");
        let mut target = Target::start(dir.path(), &snapshot)
            .await
            .expect("steward serve starts");
        let rest = target.steward.resident_bytes().expect("RSS");
        let pid = target.steward.process.pid();
        let peak = Arc::new(AtomicU64::new(rest));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(now) = resident_bytes(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let reports = target.run(&Scale::default()).await.expect("the campaign");
        for r in &reports {
            println!(
                "{:<34} fresh client answered in {:>8.1?}",
                r.case, r.fresh_client
            );
        }
        tokio::time::sleep(SETTLE).await;
        sampler.abort();
        let after = target.steward.resident_bytes().expect("RSS");
        println!(
            "resident memory: at rest {:.0} MiB, peak {:.0} MiB, {}s after the campaign {:.0} MiB",
            mib(rest),
            mib(peak.load(Ordering::Relaxed)),
            SETTLE.as_secs(),
            mib(after)
        );
        let (quiet, beside) = target
            .filters_beside_waiting_reviews(1_000, 300)
            .await
            .expect("filters beside waiting reviews");
        for (what, took) in [("quiet", &quiet), ("1,000 reviews waiting on PD", &beside)] {
            println!(
                "filter over HTTP, {what}: median {:?}, p99 {:?}",
                percentile(took, 50),
                percentile(took, 99)
            );
        }
        println!("rss after campaign: {:.0} MiB", mib(after));
    });
}
