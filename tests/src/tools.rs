//! The real third-party tools the tests drive: installed or built once into
//! ~/.cache/steward by the project's scripts (idempotent; a lock makes
//! concurrent callers wait for one build), then run as child processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::root;

/// Runs one of the project's install scripts with `args`; returns the path
/// it prints.
pub fn install(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(root().join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {} failed ({})",
        args.join(" "),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A Go tool of tests/tools/ (`oras`, `helm`, `cosign`), built from the Go
/// module proxy on first use.
pub fn go_tool(name: &str) -> PathBuf {
    install("tests/tools/go-tool.sh", &[name])
}

/// What a tool run printed.
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin` with `args` and `env` in `cwd`; stdin is closed, so a tool
/// that would prompt fails instead.
pub fn run(bin: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run`], failing the test with the tool's output unless it succeeds;
/// returns stdout.
pub fn run_ok(bin: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> String {
    let out = run(bin, args, env, cwd);
    assert!(
        out.ok,
        "{} {} failed:\n{}\n{}",
        bin.display(),
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}
