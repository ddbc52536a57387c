//! The extender over HTTP on loopback: good requests, bad input, health
//! and metrics. Bad input gets a 400 with a message, and the server keeps
//! serving.

use steward_tests::{PD_QUORUM, app, fixture, get, post, serve, serve_under};

fn good_request() -> Vec<u8> {
    std::fs::read(fixture("extender/filter-nodenames.json")).unwrap()
}

#[tokio::test]
async fn filter_over_http_answers_in_kind() {
    let addr = serve(app(PD_QUORUM)).await;
    let (status, body) = post(addr, "/scheduler/filter", &good_request()).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["NodeNames"].as_array().unwrap().len(), 4);
    assert_eq!(answer["Nodes"], serde_json::Value::Null);

    let full = std::fs::read(fixture("extender/filter-nodes.json")).unwrap();
    let (status, body) = post(addr, "/scheduler/filter", &full).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["Nodes"]["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_message_and_serving_goes_on() {
    let addr = serve(app(PD_QUORUM)).await;
    let mut unknown_field: serde_json::Value = serde_json::from_slice(&good_request()).unwrap();
    unknown_field["Surprise"] = serde_json::json!(1);
    let mut no_pod: serde_json::Value = serde_json::from_slice(&good_request()).unwrap();
    no_pod["Pod"] = serde_json::Value::Null;
    let mut no_nodes: serde_json::Value = serde_json::from_slice(&good_request()).unwrap();
    no_nodes["NodeNames"] = serde_json::Value::Null;
    let oversized = vec![b' '; 33 << 20];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            b"{\"Pod\": {".to_vec(),
            "cannot decode the filter request",
        ),
        (
            "not an object",
            b"[1, 2]".to_vec(),
            "cannot decode the filter request",
        ),
        (
            "missing Pod",
            no_pod.to_string().into_bytes(),
            "the request has no Pod",
        ),
        (
            "no candidates",
            no_nodes.to_string().into_bytes(),
            "neither Nodes nor NodeNames",
        ),
        (
            "unknown field",
            unknown_field.to_string().into_bytes(),
            "unknown field `Surprise`",
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(what, body, expected)| (what, body, expected, 400))
        .chain([(
            "oversized body",
            oversized,
            "larger than 33554432 bytes",
            413,
        )]);
    for (what, body, expected, code) in cases {
        let (status, message) = post(addr, "/scheduler/filter", &body).await;
        assert_eq!(status, code, "{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
        let (status, _) = post(addr, "/scheduler/filter", &good_request()).await;
        assert_eq!(status, 200, "after {what}");
    }
    let (status, message) = post(addr, "/scheduler/bind", b"{}").await;
    assert_eq!(status, 400);
    assert!(message.contains("missing field `PodName`"), "{message}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let addr = serve(app(PD_QUORUM)).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
    assert_eq!(get(addr, "/readyz").await.0, 200);
    post(addr, "/scheduler/filter", &good_request()).await;
    post(addr, "/scheduler/filter", b"nope").await;
    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "steward_evaluations_total{policy=\"pd-quorum\",hook=\"scheduler\",outcome=\"ok\"} 1",
        "steward_requests_total{endpoint=\"filter\",code=\"200\"} 1",
        "steward_requests_total{endpoint=\"filter\",code=\"400\"} 1",
        "steward_evaluation_duration_seconds_count{policy=\"pd-quorum\"} 1",
        // Both answers, the refused one too.
        "steward_request_duration_seconds_count{endpoint=\"filter\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let took: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("steward_request_duration_seconds_sum{endpoint=\"filter\"} "))
        .and_then(|sum| sum.parse().ok())
        .unwrap_or_else(|| panic!("no filter duration sum in\n{metrics}"));
    assert!(took > 0.0 && took < 10.0, "{took} s for two filters");
}

#[tokio::test]
async fn pods_no_policy_selects_pass_through() {
    let app = app(
        "- id: pd-quorum\n  hook: scheduler\n  module: {pd_quorum}\n  select: {schedulerNames: [someone-else]}\n",
    );
    let metrics = app.hooks.metrics.clone();
    let addr = serve(app).await;
    let (status, body) = post(addr, "/scheduler/filter", &good_request()).await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["NodeNames"].as_array().unwrap().len(), 4);
    assert_eq!(answer["FailedNodes"], serde_json::json!({}));
    assert!(metrics.encode().contains("steward_pass_through_total 1"));
    assert!(!metrics.encode().contains("outcome=\"ok\""));
}

#[tokio::test]
async fn the_url_prefix_is_configurable() {
    let addr = serve_under(app(PD_QUORUM), "/steward/v1").await;
    let (status, _) = post(addr, "/steward/v1/filter", &good_request()).await;
    assert_eq!(status, 200);
    let (status, _) = post(addr, "/scheduler/filter", &good_request()).await;
    assert_eq!(status, 404);
}
