//! Workspace automation for Steward, shared by the `cargo xtask` binary and by
//! integration tests that need the guest components (`build_guests`,
//! `guest_wasm`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The target guests are compiled for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The cargo profile guests are built with (see the root `Cargo.toml`).
pub const GUEST_PROFILE: &str = "guest";

/// Guest crates: (package name, wasm file stem).
pub const GUESTS: &[(&str, &str)] = &[
    ("pd-quorum", "pd_quorum"),
    ("local-pv", "local_pv"),
    ("misbehave", "misbehave"),
    ("local-storage-admission", "local_storage_admission"),
    ("tidb-guard", "tidb_guard"),
    ("misbehave-admission", "misbehave_admission"),
    ("upgrade-gate", "upgrade_gate"),
    ("failover", "failover"),
    ("foreign-wit", "foreign_wit"),
    ("reads-files", "reads_files"),
];

/// Guests built without Rust's `std` (and so without wit-bindgen's `std`
/// feature): a cargo invocation of their own, as one invocation unifies
/// the features of every package it builds.
pub const STD_FREE_GUESTS: &[(&str, &str)] = &[("lean-noop", "lean_noop")];

/// The workspace root: the nearest directory with a `[workspace]` manifest
/// above the running package (cargo sets `CARGO_MANIFEST_DIR` for `cargo run`
/// and `cargo test`) or the current directory. Found at run time, not
/// compile time: checkouts that share a target directory can end up running
/// each other's binaries, which must still act on their own checkout.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// `$CARGO_TARGET_DIR` (made absolute) if set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&dir))
                    .unwrap_or(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The cargo to run: `$CARGO` (set when running under cargo), else `cargo`.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    // Pin the target dir we compute, so a relative `CARGO_TARGET_DIR` means
    // the same directory whatever the child's working directory.
    if std::env::var_os("CARGO_TARGET_DIR").is_some_and(|v| !v.is_empty()) {
        cmd.env("CARGO_TARGET_DIR", target_dir());
    }
    cmd
}

/// Prints `+ <command>` to stderr, runs it with inherited stdio and fails
/// unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A command as a shell-like line, for logs and errors.
pub fn show(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes sure the `wasm32-wasip2` standard library is installed, adding it
/// with rustup (only) when it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    // Cheap check that works without rustup: the target's std in the sysroot.
    let rustc = std::env::var_os("RUSTC")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "rustc".into());
    if let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output()
        && out.status.success()
    {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
            return Ok(());
        }
    }

    let out = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the {WASM_TARGET} target is not installed and rustup is not on PATH: \
             install the {WASM_TARGET} standard library for this toolchain \
             (with rustup: `rustup target add {WASM_TARGET}`)"
        ),
        Err(e) => return Err(e).context("cannot run `rustup target list --installed`"),
    };
    if !out.status.success() {
        bail!(
            "`rustup target list --installed` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Directory holding the built guests' `<stem>.wasm` files.
pub fn guest_dir() -> PathBuf {
    target_dir().join(WASM_TARGET).join(GUEST_PROFILE)
}

/// Builds every guest in [`GUESTS`] (one cargo invocation) and in
/// [`STD_FREE_GUESTS`] (another) and returns the directory of their
/// `.wasm` files. Builds at most once per process on
/// success; concurrent callers wait for the first build.
pub fn build_guests() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    ensure_wasm_target()?;
    for guests in [GUESTS, STD_FREE_GUESTS] {
        run(cargo()
            .args(["build", "--target", WASM_TARGET, "--profile", GUEST_PROFILE])
            .args(packages(guests.iter().copied())))
        .context("building the guests failed")?;
    }
    let dir = guest_dir();
    *built = Some(dir.clone());
    Ok(dir)
}

/// Where `cargo xtask build` puts the built policies for configurations to
/// name (`deploy/examples/steward.yaml` does): `<root>/target/policies`.
pub fn policy_dir() -> PathBuf {
    workspace_root().join("target").join("policies")
}

/// Builds the guests and copies the built-in policies ([`policy_crates`],
/// not the test guests) into `dir`.
pub fn install_policies(dir: &Path) -> Result<()> {
    let built = build_guests()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (_, stem) in policy_crates() {
        let file = format!("{stem}.wasm");
        std::fs::copy(built.join(&file), dir.join(&file))
            .with_context(|| format!("cannot copy {file} into {}", dir.display()))?;
    }
    Ok(())
}

/// Path of the built guest component `<stem>.wasm` (see [`GUESTS`]), building
/// the guests first if this process has not yet.
pub fn guest_wasm(stem: &str) -> Result<PathBuf> {
    let path = build_guests()?.join(format!("{stem}.wasm"));
    if !path.is_file() {
        bail!(
            "guest component {} does not exist (known guests: {})",
            path.display(),
            GUESTS
                .iter()
                .chain(STD_FREE_GUESTS)
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(path)
}

/// The guest crates that are policies (their crate lives under
/// `guest-policies/`, unlike test-only guests): (package, wasm file stem).
pub fn policy_crates() -> Vec<(&'static str, &'static str)> {
    GUESTS
        .iter()
        .copied()
        .filter(|(package, _)| policy_dir_of(package).is_some())
        .collect()
}

/// The directory under `guest-policies/` whose manifest names `package`.
fn policy_dir_of(package: &str) -> Option<PathBuf> {
    let name = format!("name = \"{package}\"");
    std::fs::read_dir(workspace_root().join("guest-policies"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == name))
        })
}

/// A policy crate's fixture suites: every `tests/*.yaml` of the crate.
pub fn policy_suites(package: &str) -> Result<Vec<PathBuf>> {
    let Some(dir) = policy_dir_of(package).map(|d| d.join("tests")) else {
        return Ok(Vec::new());
    };
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut suites: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    suites.sort();
    Ok(suites)
}

/// `-p <package>` for each guest.
fn packages<'a>(guests: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<&'a str> {
    guests.flat_map(|(package, _)| ["-p", package]).collect()
}

/// Runs every policy crate's unit tests inside Wasm: `cargo test --target
/// wasm32-wasip2 -p <policy> -p ...`, through the runner set in
/// `.cargo/config.toml`.
pub fn policy_wasm_tests() -> Result<()> {
    ensure_wasm_target()?;
    // The runner is `cargo run -p steward`: build it here, with progress.
    run(cargo().args(["build", "-p", "steward"]))?;
    run(cargo()
        .args(["test", "--target", WASM_TARGET])
        .args(packages(policy_crates().into_iter())))
    .context("the policies' unit tests failed inside Wasm")
}

/// Runs every policy crate's fixture suites with `steward test` against
/// its built component.
pub fn policy_fixture_suites() -> Result<()> {
    let guests = build_guests()?;
    run(cargo().args(["build", "-p", "steward"]))?;
    let steward = target_dir().join("debug").join("steward");
    for (package, stem) in policy_crates() {
        let suites = policy_suites(package)?;
        if suites.is_empty() {
            eprintln!(
                "warning: policy `{package}` has no fixture suite (tests/*.yaml in its crate)"
            );
        }
        for suite in suites {
            let mut cmd = Command::new(&steward);
            cmd.current_dir(workspace_root())
                .arg("test")
                .arg(guests.join(format!("{stem}.wasm")))
                .arg(&suite)
                .env("STEWARD_LOG", "warn");
            run(&mut cmd).with_context(|| format!("fixture suite {} failed", suite.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_the_guests_under_guest_policies_with_their_suites() {
        let policies = policy_crates();
        assert!(
            policies.contains(&("pd-quorum", "pd_quorum")),
            "{policies:?}"
        );
        assert!(!policies.iter().any(|(p, _)| *p == "misbehave"));
        let suites = policy_suites("pd-quorum").unwrap();
        assert!(
            suites
                .iter()
                .any(|s| s.ends_with("guest-policies/pd-quorum/tests/suite.yaml")),
            "{suites:?}"
        );
        assert!(policy_suites("misbehave").unwrap().is_empty());
    }
}
