//! The `steward` command as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// A config file over the example snapshot with the built pd-quorum.
fn config_file(extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "steward-cli-{}-{}",
        std::process::id(),
        extra.len()
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
    for command in ["serve", "run", "simulate"] {
        assert!(text.contains(command), "{text}");
    }
}
