//! The `steward` command as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn steward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env("STEWARD_LOG", "warn")
        .output()
        .expect("steward runs")
}

fn root() -> PathBuf {
    xtask::workspace_root()
}

/// A config file over the example snapshot with the built pd-quorum, in a
/// directory of its own: tests run in parallel and must not rewrite each
/// other's file while `steward` reads it.
fn config_file(extra: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "steward-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("steward.yaml");
    let yaml = format!(
        "cluster: {{snapshot: {}}}\ncacheDir: {}\npolicies:\n- id: pd-quorum\n  hook: scheduler\n  module: {}\n{extra}",
        root().join("deploy/examples/basic-cluster.yaml").display(),
        dir.join("modules").display(),
        xtask::guest_wasm("pd_quorum").unwrap().display(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn simulate_places_the_example_cluster() {
    let out = steward(&[
        "simulate",
        "--config",
        config_file("").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placements: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let placed = placements.as_array().unwrap();
    assert_eq!(placed.len(), 6);
    assert!(
        placed.iter().all(|p| p["node"].is_string()),
        "{placements:#}"
    );

    let table = steward(&["simulate", "--config", config_file("").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("placed 6 of 6 pending pods"), "{text}");
}

/// A config over the example snapshot with both example scheduler policies
/// and local-storage-admission (its webhook listener is never started).
fn bench_config() -> PathBuf {
    config_file(&format!(
        "- id: local-pv\n  hook: scheduler\n  module: {}\n  select: {{schedulerNames: [steward-scheduler]}}\n\
         - id: local-storage-admission\n  hook: admission\n  module: {}\n  mutate: true\n\
         admission: {{listen: 127.0.0.1:0, certFile: unused.pem, keyFile: unused.pem}}\n",
        xtask::guest_wasm("local_pv").unwrap().display(),
        xtask::guest_wasm("local_storage_admission")
            .unwrap()
            .display(),
    ))
}

fn bench(extra: &[&str]) -> Output {
    let config = bench_config();
    let mut args = vec!["bench", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    steward(&args)
}

#[test]
fn bench_times_every_policy_and_hook_on_the_example_snapshot() {
    let out = bench(&["--requests", "20", "--warmup", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "policy", "hook", "pods", "n", "failed", "median", "µs", "p99", "µs", "max", "µs",
            "evals/s"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let hooks: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        hooks,
        [
            ("pd-quorum", "filter"),
            ("pd-quorum", "prioritize"),
            ("local-pv", "filter"),
            ("local-pv", "prioritize"),
            ("local-storage-admission", "review"),
        ]
    );
    for row in &rows {
        let number = |i: usize| -> f64 { row[i].parse().unwrap_or_else(|_| panic!("{row:?}")) };
        assert_eq!(row.len(), 9, "{row:?}");
        // The example snapshot's six pending pods (3 PD, 3 TiKV).
        assert_eq!(number(2), 6.0, "{row:?}");
        assert_eq!(number(3), 20.0, "{row:?}");
        assert_eq!(number(4), 0.0, "{row:?}");
        let (median, p99, max) = (number(5), number(6), number(7));
        assert!(0.0 < median && median <= p99 && p99 <= max, "{row:?}");
        assert!(number(8) > 0.0, "{row:?}");
    }

    let one = bench(&["--policy", "local-pv", "--requests", "3", "--warmup", "0"]);
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(
        one.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().skip(1).all(|l| l.starts_with("local-pv ")),
        "{text}"
    );
}

#[test]
fn bench_names_an_unknown_policy_and_a_snapshot_without_pending_pods() {
    let out = bench(&["--policy", "pd-quorom", "--requests", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no scheduler or admission policy `pd-quorom` is configured")
            && err.contains("pd-quorum, local-pv, local-storage-admission"),
        "{err}"
    );

    let settled =
        std::env::temp_dir().join(format!("steward-cli-{}-settled.yaml", std::process::id()));
    std::fs::write(
        &settled,
        "kind: Node\napiVersion: v1\nmetadata: {name: n1}\n---\nkind: Pod\napiVersion: v1\n\
         metadata: {name: web, namespace: default}\nspec: {nodeName: n1, schedulerName: \
         steward-scheduler, containers: [{name: web, image: nginx}]}\nstatus: {phase: Running}\n",
    )
    .unwrap();
    let out = bench(&[
        "--policy",
        "pd-quorum",
        "--snapshot",
        settled.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the snapshot has no pending pod that policy `pd-quorum` selects"),
        "{err}"
    );
}

/// `steward run` of the fixture filter request against pd-quorum.
fn run_pd_quorum(settings: &str) -> Output {
    let wasm = xtask::guest_wasm("pd_quorum").unwrap();
    let snapshot = root().join("deploy/examples/basic-cluster.yaml");
    let request = root().join("tests/fixtures/extender/filter-nodenames.json");
    steward(&[
        "run",
        "--module",
        wasm.to_str().unwrap(),
        "--settings",
        settings,
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
    ])
}

#[test]
fn run_answers_one_request() {
    let out = run_pd_quorum(r#"{"topologyKey": "topology.kubernetes.io/zone"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["NodeNames"].as_array().unwrap().len(), 4);

    let bad = run_pd_quorum(r#"{"topologyKye": "x"}"#);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("settings rejected") && err.contains("topologyKye"),
        "{err}"
    );
}

#[test]
fn invalid_config_stops_serve_naming_the_field() {
    let out = steward(&[
        "serve",
        "--config",
        config_file("  memoryMiB: 4096\n").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policies[0].memoryMiB: 4096 is outside 1..=1024"),
        "{err}"
    );
}

#[test]
fn help_lists_the_commands() {
    let out = steward(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve",
        "new",
        "run",
        "simulate",
        "bench",
        "test",
        "test-runner",
    ] {
        assert!(text.contains(command), "{text}");
    }
}

/// Builds the unit tests of the test-only crate `wasm-unit-tests` for
/// wasm32-wasip2 and returns the test binary (with `deliberate-failures`,
/// some fail on purpose).
fn wasm_unit_tests(deliberate_failures: bool) -> PathBuf {
    xtask::ensure_wasm_target().unwrap();
    let mut cmd = xtask::cargo();
    cmd.args([
        "test",
        "--target",
        xtask::WASM_TARGET,
        "-p",
        "wasm-unit-tests",
        "--lib",
        "--no-run",
        "--message-format=json",
    ]);
    if deliberate_failures {
        cmd.args(["--features", "deliberate-failures"]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the test binary")
}

/// `steward test-runner` on a test binary, from the crate's directory as
/// cargo runs it.
fn test_runner(wasm: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("test-runner")
        .arg(wasm)
        .args(args)
        .current_dir(root().join("tests/guests/wasm-unit-tests"))
        .env("STEWARD_LOG", "warn")
        .output()
        .expect("steward runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn test_runner_reports_every_failure_with_its_message_and_keeps_going() {
    let wasm = wasm_unit_tests(true);
    let (code, out) = test_runner(&wasm, &[]);
    assert_eq!(code, 101, "{out}");
    for line in [
        "test tests::majority_of_three_is_two ... ok",
        "test tests::fake_cluster_finds_its_node ... ok",
        "test tests::host_cluster_imports_are_linked_to_an_empty_cluster ... ok",
        "test tests::ignored_on_purpose ... ignored",
        "test tests::deliberate::majority_of_four_is_wrong ... FAILED",
        "test tests::deliberate::after_the_failures_still_runs ... ok",
        "test tests::zero_replicas_panic - should panic ... ok",
        "test tests::deliberate::should_panic_but_does_not - should panic ... FAILED",
        "test tests::deliberate::should_panic_with_another_message - should panic ... FAILED",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    // The failure's own output and panic message, not only the trap.
    let failure = out
        .split("---- tests::deliberate::majority_of_four_is_wrong ----")
        .nth(1)
        .expect("the failure is reported");
    for text in [
        "checking four replicas",
        "deliberate failure",
        "left: 3",
        "right: 2",
    ] {
        assert!(failure.contains(text), "missing `{text}` in:\n{out}");
    }
    assert!(out.contains("(test did not panic as expected)"), "{out}");
    assert!(
        out.contains(
            "panic message: \"the actual message\"\n expected substring: \"a different message\""
        ),
        "{out}"
    );
    assert!(
        out.contains("test result: FAILED. 5 passed; 3 failed; 1 ignored"),
        "{out}"
    );
}

#[test]
fn test_runner_passes_a_green_binary_and_honours_libtest_selection() {
    let wasm = wasm_unit_tests(false);
    let (code, out) = test_runner(&wasm, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("test result: ok. 4 passed; 0 failed; 1 ignored"),
        "{out}"
    );

    let (code, out) = test_runner(&wasm, &["majority"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("running 1 test "), "{out}");
    assert!(
        out.contains("tests::majority_of_three_is_two ... ok"),
        "{out}"
    );

    let (code, out) = test_runner(&wasm, &["--ignored"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("test tests::ignored_on_purpose ... ok"),
        "{out}"
    );
    assert!(out.contains("1 passed; 0 failed; 0 ignored"), "{out}");

    let (code, out) = test_runner(&wasm, &["--list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tests::zero_replicas_panic: test"), "{out}");
}

#[test]
fn test_runner_refuses_what_is_not_a_test_binary() {
    let (code, out) = test_runner(&xtask::guest_wasm("pd_quorum").unwrap(), &[]);
    assert_ne!(code, 0);
    assert!(out.contains("not a wasi:cli command"), "{out}");
}

/// `steward test` of pd-quorum's built component with a suite.
fn suite(path: &std::path::Path) -> Output {
    policy_suite("pd_quorum", path)
}

/// `steward test` of a built policy (`stem`.wasm) with a suite.
fn policy_suite(stem: &str, path: &std::path::Path) -> Output {
    steward(&[
        "test",
        xtask::guest_wasm(stem).unwrap().to_str().unwrap(),
        path.to_str().unwrap(),
    ])
}

#[test]
fn a_wrong_expectation_fails_the_suite_with_a_clear_report() {
    let dir = std::env::temp_dir().join(format!("steward-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wrong.yaml");
    let yaml = format!(
        "hook: scheduler\ncluster:\n  snapshot: {}\ncases:\n\
         - name: right\n  filter: {{pod: tidb-cluster/basic-pd-0, nodes: [k8s-10-6-163-51], passes: [k8s-10-6-163-51]}}\n\
         - name: wrong\n  cluster: {{placements: {{tidb-cluster/basic-pd-0: k8s-10-6-163-51}}}}\n  \
           filter:\n    pod: tidb-cluster/basic-pd-1\n    nodes: [k8s-10-6-163-51, k8s-10-6-163-52]\n    \
           passes: [k8s-10-6-163-51, k8s-10-6-163-52]\n    fails: {{k8s-10-6-163-52: quorum}}\n",
        root().join("deploy/examples/basic-cluster.yaml").display()
    );
    std::fs::write(&path, yaml).unwrap();
    let out = suite(&path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "case right ... ok",
        "case wrong ... FAILED",
        "passing nodes: expected [k8s-10-6-163-51, k8s-10-6-163-52], got [k8s-10-6-163-52]",
        "- k8s-10-6-163-51 failed: pd-quorum: kubernetes.io/hostname=k8s-10-6-163-51 already has 1 pd pod(s)",
        "node k8s-10-6-163-52: expected to fail matching `quorum`, but it passed",
        "suite result: FAILED. 1 passed; 1 failed",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn every_shipped_policy_suite_passes() {
    for (stem, package, cases) in [
        ("pd_quorum", "pd-quorum", 12),
        ("local_pv", "local-pv", 11),
        ("tidb_guard", "tidb-guard", 22),
        ("local_storage_admission", "local-storage-admission", 11),
        ("upgrade_gate", "upgrade-gate", 5),
        ("failover", "failover", 9),
    ] {
        let path = root().join(format!("guest-policies/{package}/tests/suite.yaml"));
        let out = policy_suite(stem, &path);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("suite result: ok. {cases} passed; 0 failed")),
            "{text}"
        );
    }
}

#[test]
fn a_wrong_review_expectation_fails_the_suite_with_a_clear_report() {
    let dir = std::env::temp_dir().join(format!("steward-review-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wrong.yaml");
    let fixture = |name: &str| {
        root()
            .join("tests/fixtures/admission")
            .join(name)
            .display()
            .to_string()
    };
    let yaml = format!(
        "hook: admission\ncluster:\n  snapshot: {snapshot}\n\
         pd:\n  stores: [{{id: 2, address: basic-tikv-1.basic-tikv-peer.tidb-cluster.svc:20160, leaderCount: 5}}]\n  \
           members: [{{name: basic-pd-0}}, {{name: basic-pd-1}}]\n  leader: basic-pd-0\n\
         cases:\n\
         - name: right\n  review:\n    request: {delete}\n    allowed: false\n    \
           message: 'store 2 still holds 5 Raft leader'\n    actions: [pd-evict-leader-begin, annotate, emit-event]\n\
         - name: wrong verdict\n  review:\n    request: {delete}\n    dryRun: true\n    allowed: true\n    \
           warnings: [evicting]\n    patch: [{{op: add, path: /metadata/labels, value: {{}}}}]\n    actions: [pd-evict-leader-begin]\n\
         - name: wrong leader\n  pd: {{members: [{{name: basic-pd-0}}, {{name: basic-pd-1}}], leader: basic-pd-1}}\n  review:\n    \
           request: {pd_delete}\n    allowed: false\n    message: 'is the PD leader'\n\
         - name: wrong hook\n  filter: {{pod: tidb-cluster/basic-pd-0, passes: []}}\n",
        snapshot = root().join("deploy/examples/basic-cluster.yaml").display(),
        delete = fixture("pod-delete-basic-tikv-1.json"),
        pd_delete = fixture("pod-delete-basic-pd-0.json"),
    );
    std::fs::write(&path, yaml).unwrap();
    let out = policy_suite("tidb_guard", &path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "case right ... ok",
        "case wrong verdict ... FAILED",
        "expected allowed, got denied: \"tidb-guard: TiKV pod tidb-cluster/basic-tikv-1: store 2 \
         still holds 5 Raft leader(s); Steward would begin evicting them through PD.",
        "warnings: expected [`evicting`], got []",
        "patch: expected [{\"op\":\"add\",\"path\":\"/metadata/labels\",\"value\":{}}], got []",
        "actions: expected [\"pd-evict-leader-begin\"], got []",
        "case wrong leader ... FAILED",
        "expected denied, got allowed",
        "message: expected one matching `is the PD leader`, got none",
        "case wrong hook ... FAILED",
        "the suite's hook is Admission, whose policies cannot answer this case's check (it is \
         for Scheduler policies)",
        "suite result: FAILED. 1 passed; 3 failed",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn a_wrong_plan_expectation_fails_the_suite_with_a_clear_report() {
    let dir = std::env::temp_dir().join(format!("steward-plan-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wrong.yaml");
    let yaml = format!(
        "hook: reconcile\ncluster:\n  snapshot: {snapshot}\n\
         pd:\n  stores: [{{id: 1, address: basic-tikv-0.basic-tikv-peer.tidb-cluster.svc:20160, state: Down}}]\n\
         cases:\n\
         - name: right\n  reconcile: {{statefulSet: tidb-cluster/basic-tikv, nowMs: 1700000000000, actions: [annotate, requeue-after]}}\n\
         - name: wrong plan\n  reconcile:\n    statefulSet: tidb-cluster/basic-tikv\n    nowMs: 1700000000000\n    \
           actions: [set-replicas]\n    described: ['set the replicas to 4']\n\
         - name: wrong failure\n  reconcile: {{statefulSet: tidb-cluster/basic-tikv, nowMs: 1700000000000, error: unreachable}}\n\
         - name: missing workload\n  reconcile: {{statefulSet: tidb-cluster/basic-tidb, nowMs: 0, actions: []}}\n",
        snapshot = root().join("deploy/examples/basic-cluster.yaml").display(),
    );
    std::fs::write(&path, yaml).unwrap();
    let out = policy_suite("failover", &path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "case right ... ok",
        "case wrong plan ... FAILED",
        "actions: expected [\"set-replicas\"], got [\"annotate\", \"requeue-after\"]",
        "actions: expected descriptions matching [`set the replicas to 4`], got \
         [\"annotate StatefulSet basic-tikv (steward.io/failover)\", \"requeue after 5000ms\"]",
        "case wrong failure ... FAILED",
        "expected the plan to fail matching `unreachable`, got actions",
        "case missing workload ... FAILED",
        "StatefulSet tidb-cluster/basic-tidb is not in the case's cluster",
        "suite result: FAILED. 1 passed; 3 failed",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
