//! `cargo xtask <command>`: see `USAGE`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use xtask::{
    build_guests, cargo, ensure_wasm_target, install_policies, policy_dir, policy_fixture_suites,
    policy_wasm_tests, run, show, target_dir, workspace_root,
};

const USAGE: &str = "\
Usage: cargo xtask <command> [args...]

Commands:
  build          `policies`, then `cargo build --release -p steward`
  policies [DIR] build the guest components (wasm32-wasip2, profile `guest`)
                 and copy the built-in policies (guest-policies/) to DIR
                 (default: target/policies/)
  demo [args]    build, then run `steward simulate --config
                 deploy/examples/steward.yaml [args]`; exits with its code
  test [args]    build the guests, then `cargo test --workspace [args]`
                 (e.g. `cargo xtask test -- --nocapture`), then every
                 policy's unit tests inside Wasm (`cargo test --target
                 wasm32-wasip2 -p <policy>`) and its fixture suites
                 (`steward test <policy>.wasm guest-policies/<policy>/tests/*.yaml`);
                 the end-to-end tests (tests/tests/e2e/) run on Kubernetes
                 1.20.2 and 1.37.2 (STEWARD_E2E_KUBERNETES=1.20 or 1.37
                 for one) and build each on their first run (1.20: apt,
                 7-10 min; 1.37: Go module proxy, 20-40 min; cached in
                 ~/.cache/steward)
  ci [args]      `cargo fmt --all --check`, `cargo clippy --workspace
                 --all-targets -- -D warnings`, then the same as `test`
  help           print this help (also `-h`, `--help`)

Cargo honours CARGO_TARGET_DIR; guests land in
<target>/wasm32-wasip2/guest/<name>.wasm.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "build" if rest.is_empty() => build(),
        "policies" if rest.len() <= 1 => policies(rest.first().map(PathBuf::from)),
        "demo" => return demo(rest),
        "test" => test(rest),
        "ci" => ci(rest),
        "build" => {
            eprintln!("error: `build` takes no arguments\n\n{USAGE}");
            return ExitCode::from(2);
        }
        "policies" => {
            eprintln!("error: `policies` takes at most one directory\n\n{USAGE}");
            return ExitCode::from(2);
        }
        other => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The guests, the built-in policies copied to `dir` (default
/// target/policies/).
fn policies(dir: Option<PathBuf>) -> Result<()> {
    let dir = dir.unwrap_or_else(policy_dir);
    install_policies(&dir)?;
    eprintln!("policies installed in {}", dir.display());
    Ok(())
}

/// Policies, then the release host.
fn build() -> Result<()> {
    policies(None)?;
    run(cargo().args(["build", "--release", "-p", "steward"]))
}

/// Builds, then runs the simulation and exits with its exit code.
fn demo(extra: &[String]) -> ExitCode {
    if let Err(e) = build() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let steward = target_dir().join("release").join("steward");
    let mut cmd = Command::new(&steward);
    cmd.current_dir(workspace_root())
        .args(["simulate", "--config", "deploy/examples/steward.yaml"])
        .args(extra);
    eprintln!("+ {}", show(&cmd));
    match cmd
        .status()
        .with_context(|| format!("cannot start {}", steward.display()))
    {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("error: steward simulate was killed ({status})");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Guests, then the whole workspace's tests (native); `extra` is passed on to
/// `cargo test`.
fn test(extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    build_guests()?;
    run(cargo().args(["test", "--workspace"]).args(extra))?;
    policy_wasm_tests()?;
    policy_fixture_suites()
}

/// Format and lint checks, then `test`.
fn ci(extra: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    test(extra)
}
