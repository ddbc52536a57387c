//! Serving under pressure: no client, slow PD or careless edit can take the
//! extender away from kube-scheduler.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use steward_tests::pd_double::{Fault, PdDouble};
use steward_tests::{admission_app, fixture, review_fixture};
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
    let webhook = steward::server::admission::router(app.clone(), 1 << 20);
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
