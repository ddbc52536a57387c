//! The admission webhook over real HTTPS (a test CA generated here), with
//! AdmissionReview v1 bodies as kube-apiserver sends them and PD played by
//! the PD double: every rule of local-storage-admission and tidb-guard,
//! allowed and denied, dry run and not; modes, failure modes, bad input.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use steward::cluster::ClusterQuery;
use steward::server::App;
use steward::wit::Pod;
use steward_tests::pd_double::{Fault, PdDouble};
use steward_tests::{Webhook, admission_app, review_fixture, serve_webhook};

const LIMIT: usize = 1 << 20;

fn mutator() -> String {
    "- id: local-storage\n  hook: admission\n  module: {local_storage_admission}\n  mutate: true\n"
        .into()
}

fn guard(pd: &PdDouble, extra: &str) -> String {
    format!(
        "- id: tidb-guard\n  hook: admission\n  module: {{tidb_guard}}\n  deadlineMs: 2000\n  \
         pd: {{url: '{}', timeoutMs: 500}}\n{extra}",
        pd.url()
    )
}

struct Setup {
    app: App,
    webhook: Webhook,
}

async fn setup(policies: &str) -> Setup {
    let app = admission_app(policies);
    let webhook = serve_webhook(app.clone(), LIMIT).await;
    Setup { app, webhook }
}

/// The PD double of cluster `basic` and tidb-guard reading it.
async fn guarded() -> (PdDouble, Setup) {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    let s = setup(&guard(&pd, "")).await;
    (pd, s)
}

impl Setup {
    /// The metrics contain each of `lines`.
    fn assert_metrics(&self, lines: &[&str]) {
        let metrics = self.app.hooks.metrics.encode();
        for line in lines {
            assert!(metrics.contains(line), "{line} missing from\n{metrics}");
        }
    }

    /// POSTs a fixture (optionally as a dry run) on a fresh connection.
    /// The old object of a pod DELETE carries the pod's annotations as the
    /// cluster (the snapshot the actions write to) has them now, as
    /// kube-apiserver sends the stored object.
    async fn review(&self, path: &str, fixture: &str, dry_run: bool) -> Value {
        let mut body = review_fixture(fixture);
        body["request"]["dryRun"] = json!(dry_run);
        let old = &mut body["request"]["oldObject"];
        if old["kind"] == "Pod" {
            let name = old["metadata"]["name"].as_str().unwrap_or_default();
            let annotations: serde_json::Map<String, Value> = self
                .pod(name)
                .annotations
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            old["metadata"]["annotations"] = Value::Object(annotations);
        }
        let (status, text) = self.post(path, body.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{text}");
        let out: Value = serde_json::from_str(&text).expect("the answer is JSON");
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], body["request"]["uid"], "uid echoed");
        out["response"].clone()
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let mut client = self.webhook.connect().await;
        client.post(path, body).await.expect("request answered")
    }

    /// Pod `name` of namespace `tidb-cluster` as the cluster has it now.
    fn pod(&self, name: &str) -> Pod {
        ClusterQuery::new(self.app.hooks.cluster.clone())
            .get_pod("tidb-cluster", name)
            .expect("pod in the snapshot")
    }

    fn pod_annotation(&self, pod: &str, key: &str) -> Option<String> {
        self.pod(pod)
            .annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn patch(response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch is a string"))
        .expect("base64");
    serde_json::from_slice(&bytes).expect("the patch is JSON")
}

fn warning(response: &Value) -> &str {
    response["warnings"][0].as_str().expect("a warning")
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const EVICT_BEGIN: &str = "steward.io/evict-leader-begin-ms";

#[tokio::test]
async fn the_mutator_gives_pods_of_local_claims_the_steward_scheduler() {
    let s = setup(&mutator()).await;
    for fixture in ["pod-create-local-unbound", "pod-create-local-bound"] {
        for dry_run in [false, true] {
            let r = s
                .review("/admission/mutate/local-storage", fixture, dry_run)
                .await;
            assert_eq!(r["allowed"], true, "{r}");
            assert_eq!(
                patch(&r),
                json!([{"op": "replace", "path": "/spec/schedulerName", "value": "steward-scheduler"}]),
                "{fixture}"
            );
        }
    }
    let r = s
        .review(
            "/admission/mutate/local-storage",
            "pod-create-not-local",
            false,
        )
        .await;
    assert_eq!(r["allowed"], true);
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "{r}"
    );
}

#[tokio::test]
async fn a_tikv_pod_with_leaders_is_refused_while_pd_evicts_them() {
    let (pd, s) = guarded().await;
    pd.state().drain_per_second = 0.0;
    let path = "/admission/validate/tidb-guard";

    // A dry run decides the same but touches nothing.
    let r = s.review(path, "pod-delete-basic-tikv-1", true).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert!(message(&r).contains("Steward would begin evicting"), "{r}");
    assert!(pd.state().evicting.is_empty());
    assert_eq!(pd.state().count("POST /pd/api/v1/schedulers"), 0);
    assert_eq!(s.pod_annotation("basic-tikv-1", EVICT_BEGIN), None);

    let r = s.review(path, "pod-delete-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(
        message(&r).split(" Retry").next().unwrap(),
        "tidb-guard: TiKV pod tidb-cluster/basic-tikv-1: store 4 still holds 10 Raft leader(s); \
         Steward began evicting them through PD."
    );
    assert!(
        pd.state().evicting.contains(&4),
        "evict-leader scheduler added"
    );
    let began = s
        .pod_annotation("basic-tikv-1", EVICT_BEGIN)
        .expect("begin time recorded");
    assert!(began.parse::<i64>().unwrap() > 1_600_000_000_000);

    // A drain of the same pod waits too, without starting over, told to
    // retry as a PodDisruptionBudget tells it; the DELETE keeps 403.
    let r = s.review(path, "pod-eviction-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(
        (&r["status"]["code"], &r["status"]["reason"]),
        (&json!(429), &json!("TooManyRequests")),
        "{r}"
    );
    let r = s.review(path, "pod-delete-basic-tikv-1", false).await;
    assert_eq!(r["status"]["code"], 403, "{r}");
    assert!(r["status"].get("reason").is_none(), "{r}");
    let r = s.review(path, "pod-eviction-basic-tikv-1", false).await;
    assert!(
        message(&r).contains("evicting Raft leaders from store 4: 10 left"),
        "{r}"
    );
    assert_eq!(pd.state().count("POST /pd/api/v1/schedulers"), 1);

    // Leaders drain; once none are left the pod may go.
    pd.state().drain_per_second = 2_000.0;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pd.state().leaders(4), 0);
    for fixture in ["pod-delete-basic-tikv-1", "pod-eviction-basic-tikv-1"] {
        let r = s.review(path, fixture, false).await;
        assert_eq!(r["allowed"], true, "{fixture}: {r}");
    }

    // The recreated pod ends its store's eviction (not on a dry run).
    let r = s.review(path, "pod-create-basic-tikv-1", true).await;
    assert_eq!(r["allowed"], true);
    assert!(pd.state().evicting.contains(&4));
    let r = s.review(path, "pod-create-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], true);
    assert!(
        pd.state().evicting.is_empty(),
        "evict-leader scheduler removed"
    );
}

#[tokio::test]
async fn a_stuck_eviction_gives_way_after_the_timeout() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    pd.set_fault(Fault::LeadersStuck);
    let s = setup(&guard(&pd, "  settings: {evictLeaderTimeoutSeconds: 1}\n")).await;
    let path = "/admission/validate/tidb-guard";
    let r = s.review(path, "pod-delete-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], false);
    let r = s.review(path, "pod-delete-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], false, "still within the timeout");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = s.review(path, "pod-delete-basic-tikv-1", false).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        warning(&r).contains("still holds 10 Raft leader(s), but the leader eviction began"),
        "{r}"
    );
}

#[tokio::test]
async fn store_states_decide_a_tikv_removal() {
    let (pd, s) = guarded().await;
    let path = "/admission/validate/tidb-guard";
    for (state, allowed) in [("Offline", false), ("Tombstone", true), ("Down", true)] {
        pd.state().store(4).state = state.into();
        for dry_run in [false, true] {
            let r = s.review(path, "pod-delete-basic-tikv-1", dry_run).await;
            assert_eq!(r["allowed"], allowed, "{state}: {r}");
        }
    }
    let r = {
        pd.state().store(4).state = "Offline".into();
        s.review(path, "pod-eviction-basic-tikv-1", false).await
    };
    assert!(message(&r).contains("store 4 is Offline"), "{r}");
    assert!(
        pd.state().evicting.is_empty(),
        "no eviction for these states"
    );
}

#[tokio::test]
async fn the_pd_leader_hands_over_before_its_pod_goes() {
    let (pd, s) = guarded().await;
    let path = "/admission/validate/tidb-guard";

    let r = s.review(path, "pod-eviction-basic-pd-0", true).await;
    assert_eq!(r["allowed"], false);
    assert!(
        message(&r).contains("would move leadership to basic-pd-2"),
        "{r}"
    );
    assert_eq!(pd.state().leader, "basic-pd-0", "a dry run moves nothing");

    pd.state().member("basic-pd-2").healthy = false;
    let r = s.review(path, "pod-delete-basic-pd-0", false).await;
    assert_eq!(r["allowed"], false);
    assert!(
        message(&r).contains("is moving leadership to basic-pd-1"),
        "{r}"
    );
    assert_eq!(pd.state().leader, "basic-pd-1");

    for fixture in ["pod-delete-basic-pd-0", "pod-eviction-basic-pd-0"] {
        let r = s.review(path, fixture, false).await;
        assert_eq!(r["allowed"], true, "no longer the leader: {r}");
    }
    let r = s.review(path, "pod-delete-basic-pd-1", false).await;
    assert_eq!(r["allowed"], false, "the new leader is protected in turn");
    assert_eq!(pd.state().leader, "basic-pd-0");

    pd.state().leader = "basic-pd-1".into();
    pd.state().member("basic-pd-0").healthy = false;
    let r = s.review(path, "pod-delete-basic-pd-1", false).await;
    assert_eq!(r["allowed"], false);
    assert!(message(&r).contains("no other PD member is healthy"), "{r}");
    assert_eq!(pd.state().leader, "basic-pd-1");
}

#[tokio::test]
async fn partitions_and_pd_scale_downs_are_guarded() {
    let (pd, s) = guarded().await;
    let path = "/admission/validate/tidb-guard";
    for dry_run in [false, true] {
        let r = s
            .review(path, "sts-update-partition-below-protected", dry_run)
            .await;
        assert_eq!(r["allowed"], false);
        assert!(
            message(&r).contains("rollingUpdate.partition may not go from 2 to 0"),
            "{r}"
        );
        let r = s
            .review(path, "sts-update-partition-gate-step", dry_run)
            .await;
        assert_eq!(r["allowed"], true, "{r}");
        let r = s
            .review(path, "sts-update-partition-protection-lowered", dry_run)
            .await;
        assert_eq!(r["allowed"], false, "{r}");
        let r = s.review(path, "sts-update-pd-scale-down", dry_run).await;
        assert_eq!(r["allowed"], false, "basic-pd-2 is still a PD member: {r}");
        assert!(message(&r).contains("steward.io/scale-in=2"), "{r}");
    }
    pd.state().members.retain(|m| m.name != "basic-pd-2");
    let r = s.review(path, "sts-update-pd-scale-down", false).await;
    assert_eq!(
        r["allowed"], true,
        "all PD members healthy, basic-pd-2 gone: {r}"
    );
    pd.state().member("basic-pd-1").healthy = false;
    let r = s.review(path, "sts-update-pd-scale-down", false).await;
    assert_eq!(r["allowed"], false);
    assert!(
        message(&r).contains("member(s) basic-pd-1 are unhealthy"),
        "{r}"
    );
}

#[tokio::test]
async fn an_unreachable_or_slow_pd_gets_the_failure_mode() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    let policies = format!(
        "{}{}",
        guard(&pd, ""),
        guard(&pd, "  failureMode: fail-open\n").replace("id: tidb-guard", "id: tidb-guard-open")
    );
    let s = setup(&policies).await;
    for fault in [Fault::Unreachable, Fault::Slow(Duration::from_millis(800))] {
        pd.set_fault(fault);
        let r = s
            .review(
                "/admission/validate/tidb-guard",
                "pod-delete-basic-tikv-1",
                false,
            )
            .await;
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 500);
        let m = message(&r);
        assert!(m.ends_with("failing closed"), "{m}");
        assert!(
            m.contains("PD is unreachable") || m.contains("did not answer GET"),
            "{fault:?}: {m}"
        );
        let r = s
            .review(
                "/admission/validate/tidb-guard-open",
                "pod-delete-basic-tikv-1",
                false,
            )
            .await;
        assert_eq!(r["allowed"], true);
        assert!(warning(&r).ends_with("allowed (fail-open)"));
    }
}

#[tokio::test]
async fn warn_and_monitor_modes_never_refuse_or_act() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    let policies = format!(
        "{}{}",
        guard(&pd, "  mode: warn\n").replace("id: tidb-guard", "id: guard-warn"),
        guard(&pd, "  mode: monitor\n").replace("id: tidb-guard", "id: guard-monitor"),
    );
    let s = setup(&policies).await;
    let r = s
        .review(
            "/admission/validate/guard-warn",
            "pod-delete-basic-tikv-1",
            false,
        )
        .await;
    assert_eq!(r["allowed"], true);
    assert!(
        warning(&r).starts_with("guard-warn would deny: TiKV pod tidb-cluster/basic-tikv-1"),
        "{r}"
    );
    let r = s
        .review(
            "/admission/validate/guard-monitor",
            "pod-delete-basic-tikv-1",
            false,
        )
        .await;
    assert_eq!(r["allowed"], true);
    assert!(
        r.get("warnings").is_none() && r.get("status").is_none(),
        "{r}"
    );
    assert!(
        pd.state().evicting.is_empty(),
        "no side effect in warn or monitor mode"
    );
    assert_eq!(s.pod_annotation("basic-tikv-1", EVICT_BEGIN), None);
    s.assert_metrics(&[
        "steward_admission_verdicts_total{policy=\"guard-warn\",mode=\"warn\",verdict=\"denied\"} 1",
        "steward_admission_verdicts_total{policy=\"guard-monitor\",mode=\"monitor\",verdict=\"denied\"} 1",
        "steward_evaluations_total{policy=\"guard-monitor\",hook=\"admission\",outcome=\"ok\"} 1",
    ]);
}

fn misbehave(id: &str, behaviour: &str, extra: &str) -> String {
    format!(
        "- id: {id}\n  hook: admission\n  module: {{misbehave_admission}}\n  deadlineMs: 50\n  \
         settings: {{behaviour: {behaviour}}}\n{extra}"
    )
}

#[tokio::test]
async fn traps_deadlines_and_ungranted_patches_fail_by_mode() {
    let policies = [
        misbehave("trap", "trap", ""),
        misbehave("spin", "spin", ""),
        misbehave("spin-open", "spin", "  failureMode: fail-open\n"),
        misbehave("patch-ungranted", "patch", ""),
        misbehave("patch-granted", "patch", "  mutate: true\n"),
        misbehave("bad-patch", "bad-patch", "  mutate: true\n"),
        misbehave("deny", "deny", ""),
    ]
    .concat();
    let s = setup(&policies).await;
    let fixture = "pod-create-local-unbound";
    let cases = [
        ("/admission/validate/trap", "trap: policy trapped"),
        (
            "/admission/validate/spin",
            "spin: policy did not finish within its 50ms deadline",
        ),
        (
            "/admission/mutate/patch-ungranted",
            "is not granted mutation (set `mutate: true`",
        ),
        (
            "/admission/validate/patch-granted",
            "a patch on the validating endpoint",
        ),
        (
            "/admission/mutate/bad-patch",
            "has op `frobnicate`, not an RFC 6902 operation",
        ),
    ];
    for (path, expected) in cases {
        let r = s.review(path, fixture, false).await;
        assert_eq!(r["allowed"], false, "{path}: {r}");
        assert_eq!(r["status"]["code"], 500);
        assert!(message(&r).contains(expected), "{path}: {}", message(&r));
    }
    let r = s
        .review("/admission/validate/spin-open", fixture, false)
        .await;
    assert_eq!(r["allowed"], true);
    let r = s
        .review("/admission/mutate/patch-granted", fixture, false)
        .await;
    assert_eq!(
        patch(&r),
        json!([{"op": "add", "path": "/metadata/labels/misbehave", "value": "yes"}])
    );

    // Actions of a denial run, except on a dry run.
    let r = s
        .review("/admission/validate/deny", "pod-delete-basic-tikv-1", true)
        .await;
    assert_eq!(message(&r), "deny: misbehave denies basic-tikv-1");
    assert_eq!(
        s.pod_annotation("basic-tikv-1", "misbehave.steward.io/seen"),
        None
    );
    s.review("/admission/validate/deny", "pod-delete-basic-tikv-1", false)
        .await;
    assert_eq!(
        s.pod_annotation("basic-tikv-1", "misbehave.steward.io/seen")
            .as_deref(),
        Some("true")
    );

    s.assert_metrics(&[
        "steward_traps_total{policy=\"trap\"} 1",
        "steward_deadline_exceeded_total{policy=\"spin\"} 1",
        "steward_actions_total{policy=\"deny\",action=\"annotate\",outcome=\"ok\"} 1",
    ]);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_serving_goes_on() {
    let s = setup(&mutator()).await;
    let good = review_fixture("pod-create-local-unbound");
    let with = |pointer: &str, value: Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).expect("field exists") = value;
        v.to_string().into_bytes()
    };
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let path = "/admission/mutate/local-storage";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            path,
            b"{\"kind\": ".to_vec(),
            400,
            "the body is not an AdmissionReview",
        ),
        (
            path,
            b"[1, 2]".to_vec(),
            400,
            "the body is not an AdmissionReview",
        ),
        (
            path,
            with("/kind", json!("Pod")),
            400,
            "the body is a `Pod`, not an AdmissionReview",
        ),
        (
            path,
            with("/apiVersion", json!("admission.k8s.io/v1beta1")),
            400,
            "apiVersion `admission.k8s.io/v1beta1` is not served",
        ),
        (
            path,
            with("/request/uid", json!("")),
            400,
            "request.uid is missing",
        ),
        (
            path,
            no_request.to_string().into_bytes(),
            400,
            "has no request",
        ),
        (
            path,
            with("/request/object", json!({"spec": 5})),
            400,
            "request.object is not a Pod",
        ),
        (
            "/admission/mutate/no-such-policy",
            good.to_string().into_bytes(),
            404,
            "no admission policy `no-such-policy` is configured (configured: local-storage)",
        ),
        (
            path,
            vec![b' '; LIMIT + 1],
            413,
            "larger than 1048576 bytes",
        ),
    ];
    for (p, body, status, expected) in cases {
        let (code, text) = s.post(p, body).await;
        assert_eq!(code, status, "{expected}: {text}");
        assert!(text.contains(expected), "{expected}: {text}");
    }
    let r = s.review(path, "pod-create-local-unbound", false).await;
    assert_eq!(r["allowed"], true);
}

#[tokio::test]
async fn a_new_certificate_serves_new_handshakes_and_open_connections_go_on() {
    let s = setup(&mutator()).await;
    let body = review_fixture("pod-create-local-unbound")
        .to_string()
        .into_bytes();
    let mut open = s.webhook.connect().await;
    let old = open.server_cert.clone();
    assert_eq!(
        open.post("/admission/mutate/local-storage", body.clone())
            .await
            .unwrap()
            .0,
        200
    );

    let new = s.webhook.ca.issue("webhook-2");
    new.write(&s.webhook.cert_file, &s.webhook.key_file);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = s.webhook.connect().await.server_cert;
        if seen == new.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen, new.der,
        "new handshakes see the new certificate within 5s"
    );
    assert_ne!(old, new.der);

    assert!(
        open.is_open(),
        "the keep-alive connection survived the reload"
    );
    let (status, text) = open
        .post("/admission/mutate/local-storage", body)
        .await
        .expect("the old connection still answers");
    assert_eq!(status, 200, "{text}");
    assert_eq!(open.server_cert, old);

    // A broken pair is refused and the current one keeps serving.
    std::fs::write(&s.webhook.key_file, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(s.webhook.connect().await.server_cert, new.der);
}
