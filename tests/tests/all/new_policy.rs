//! `steward new` as a policy author uses it: each hook's new crate, outside
//! this workspace, passes its unit tests inside Wasm, builds into a
//! component of its own world alone, passes its fixture suite, and the
//! scheduler one is pushed to a real registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use steward_tests::registry::Registry;
use steward_tests::{TempDir, inspect_world, root, steward, steward_bin};

/// Runs `cargo` in `dir` as an author would: the crate's own cargo config,
/// `steward` on PATH for the test runner. The crates share a target
/// directory under this workspace's, so a second run only rebuilds them.
fn cargo(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let steward_dir = steward_bin().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(steward_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", xtask::target_dir().join("new-policies"))
        .env("STEWARD_LOG", "warn")
        .output()
        .expect("cargo runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `steward new <name> --hook <hook>` into `parent`; returns the crate.
fn new_policy(parent: &Path, name: &str, hook: &str) -> PathBuf {
    let dir = parent.join(name);
    let (ok, stdout, stderr) =
        steward(&["new", name, "--hook", hook, "--path", dir.to_str().unwrap()]);
    assert!(ok, "steward new failed: {stderr}");
    let sdk = root().join("guest-policies/sdk");
    assert!(
        stdout.contains(&format!(
            "steward-sdk: path {} (the checkout this steward was built from)",
            sdk.canonicalize().unwrap().display()
        )),
        "{stdout}"
    );
    // The workspace's versions: no registry lookups, no surprise upgrades.
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    dir
}

/// Tests, builds and suite-tests the crate; returns its component.
fn build_and_check(dir: &Path, name: &str, hook: &str) -> PathBuf {
    let (ok, stdout, stderr) = cargo(dir, &["test", "--target", "wasm32-wasip2"]);
    assert!(ok, "cargo test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");

    let (ok, _, stderr) = cargo(dir, &["build", "--target", "wasm32-wasip2", "--release"]);
    assert!(ok, "cargo build failed:\n{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let wasm = xtask::target_dir()
        .join("new-policies/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));

    let suite = dir.join("tests/suite.yaml");
    let (ok, stdout, stderr) = steward(&["test", wasm.to_str().unwrap(), suite.to_str().unwrap()]);
    assert!(ok, "the template's suite failed:\n{stdout}\n{stderr}");

    assert_eq!(inspect_world(&wasm), hook);
    wasm
}

#[test]
fn new_policies_build_test_and_push_outside_the_workspace() {
    let parent = TempDir::new("new-policy");
    for hook in ["admission", "reconcile"] {
        let name = format!("my-{hook}");
        let dir = new_policy(parent.path(), &name, hook);
        build_and_check(&dir, &name, hook);
    }

    let dir = new_policy(parent.path(), "my-scheduler", "scheduler");
    let wasm = build_and_check(&dir, "my-scheduler", "scheduler");
    let registry = Registry::start();
    let tag = format!("{}:0.1.0", registry.repo("policies/my-scheduler"));
    let (ok, stdout, stderr) = steward(&["push", wasm.to_str().unwrap(), &tag]);
    assert!(ok, "push failed: {stderr}");
    assert!(
        stdout.trim().starts_with(&format!(
            "{}@sha256:",
            registry.repo("policies/my-scheduler")
        )),
        "{stdout}"
    );
    let (ok, stdout, stderr) = steward(&["inspect", &tag]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("world:       scheduler"), "{stdout}");

    let (ok, _, stderr) = steward(&[
        "new",
        "my-scheduler",
        "--hook",
        "scheduler",
        "--path",
        dir.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("already exists and is not empty"),
        "{stderr}"
    );
}
