//! Guests that trap, loop forever, allocate without bound or answer
//! nonsense: each ends within its deadline or cap, yields the policy's
//! failure mode, and the next request is served normally.

use std::time::{Duration, Instant};

use steward::extender::CandidateNodes;
use steward::wit::Pod;
use steward_tests::{app, config, runtime};

const NODES: [&str; 2] = ["k8s-10-6-163-51", "k8s-10-6-163-53"];

fn nodes() -> CandidateNodes {
    CandidateNodes::Names(NODES.iter().map(|n| n.to_string()).collect())
}

/// A short deadline only for the endless loop: every other behaviour must be
/// ended by its own limit even on a loaded machine.
fn misbehaving(behaviour: &str, mode: &str) -> String {
    let deadline_ms = if behaviour == "spin" { 50 } else { 5_000 };
    format!(
        "- id: misbehave\n  hook: scheduler\n  module: {{misbehave}}\n  settings: {{behaviour: {behaviour}}}\n  failureMode: {mode}\n  deadlineMs: {deadline_ms}\n  memoryMiB: 16\n"
    )
}

/// The error that refused loading `config`'s policies.
fn load_error(config: &steward::config::Config) -> String {
    match steward_tests::load_policies(runtime(), config) {
        Ok(_) => panic!("the policy loaded"),
        Err(e) => format!("{e:#}"),
    }
}

fn any_pod(app: &steward::server::App) -> Pod {
    app.hooks.cluster.all_pods().into_iter().next().unwrap()
}

/// Filters once with a misbehaving policy followed by pd-quorum.
fn failed_reason(behaviour: &str) -> (String, Duration) {
    let app = app(&misbehaving(behaviour, "fail-closed"));
    let pod = any_pod(&app);
    let started = Instant::now();
    let answer = app.hooks.extender.filter_pod(&pod, nodes());
    let took = started.elapsed();
    assert_eq!(
        answer.node_names.unwrap(),
        Vec::<String>::new(),
        "{behaviour}: fail-closed fails every node"
    );
    (answer.failed_nodes[NODES[0]].clone(), took)
}

#[test]
fn a_trap_fails_closed_with_the_guest_message() {
    let (reason, _) = failed_reason("trap");
    assert!(reason.starts_with("misbehave: policy trapped"), "{reason}");
    assert!(reason.ends_with("failing closed"), "{reason}");
}

#[test]
fn an_endless_loop_stops_at_the_deadline() {
    let (reason, took) = failed_reason("spin");
    assert!(
        reason.contains("did not finish within its 50ms deadline"),
        "{reason}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn unbounded_allocation_stops_at_the_memory_cap() {
    let (reason, took) = failed_reason("hog");
    assert!(
        reason.contains("exceeded its memory cap of 16 MiB"),
        "{reason}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn an_error_and_an_invalid_answer_are_reported() {
    let (reason, _) = failed_reason("error");
    assert!(
        reason.contains("returned an error: misbehave: deliberate error"),
        "{reason}"
    );
    let (reason, _) = failed_reason("bad-index");
    assert!(
        reason.contains("returned an invalid answer: rejection of node #999999"),
        "{reason}"
    );
}

#[test]
fn fail_open_lets_the_pod_through() {
    for behaviour in ["trap", "spin", "hog"] {
        let app = app(&misbehaving(behaviour, "fail-open"));
        let answer = app.hooks.extender.filter_pod(&any_pod(&app), nodes());
        assert_eq!(answer.node_names.unwrap(), NODES, "{behaviour}");
        assert!(answer.failed_nodes.is_empty());
    }
}

#[test]
fn the_next_request_is_served_after_each_failure() {
    // One app, one policy that traps only for pods labelled so: the same
    // policy instance pool serves a normal request right after.
    let app = app(&format!(
        "{}- id: rejecter\n  hook: scheduler\n  module: {{misbehave}}\n  settings: {{behaviour: reject-all}}\n",
        misbehaving("spin", "fail-open")
    ));
    let pod = any_pod(&app);
    for _ in 0..3 {
        let answer = app.hooks.extender.filter_pod(&pod, nodes());
        assert_eq!(
            answer.failed_nodes[NODES[0]],
            format!("rejecter: misbehave rejects {}", NODES[0])
        );
    }
    let metrics = app.hooks.metrics.encode();
    assert!(
        metrics.contains("steward_deadline_exceeded_total{policy=\"misbehave\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "steward_evaluations_total{policy=\"rejecter\",hook=\"scheduler\",outcome=\"ok\"} 3"
        ),
        "{metrics}"
    );
}

#[test]
fn rejected_settings_refuse_the_policy_at_load() {
    let picky = config(
        "- id: picky\n  hook: scheduler\n  module: {misbehave}\n  settings: {behaviour: sleepy-settings}\n",
    );
    let text = load_error(&picky);
    assert!(text.contains("policy picky"), "{text}");
    assert!(
        text.contains("settings rejected: invalid settings: misbehave: settings rejected"),
        "{text}"
    );
    let typo = config(
        "- id: typo\n  hook: scheduler\n  module: {misbehave}\n  settings: {behaviour: dance}\n",
    );
    let text = load_error(&typo);
    assert!(text.contains("dance"), "{text}");
}

#[test]
fn deadlines_hold_when_only_the_policies_are_kept() {
    // `steward run` keeps the loaded policies but not the Runtime handle
    // that created them; the epoch ticker must live as long as they do.
    let config = config(&misbehaving("spin", "fail-closed"));
    let policies = {
        let runtime = steward::runtime::Runtime::new(None).unwrap();
        steward_tests::load_policies(&runtime, &config).unwrap()
    };
    let cluster = std::sync::Arc::new(steward::cluster::ClusterCache::default());
    steward::cluster::load_snapshot(&cluster, &steward_tests::example_snapshot()).unwrap();
    let hooks = steward::Hooks::new(policies, cluster, steward::cluster::Backend::Snapshot);
    let app = steward::server::App::new(&config, hooks);
    let started = Instant::now();
    let answer = app.hooks.extender.filter_pod(&any_pod(&app), nodes());
    assert!(
        answer.failed_nodes[NODES[0]].contains("deadline"),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
