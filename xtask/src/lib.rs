//! Workspace automation for Steward, shared by the `cargo xtask` binary and by
//! integration tests that need the guest components (`build_guests`,
//! `guest_wasm`).
//!
//! Guests are built one cargo invocation per crate: building two policy crates
//! together would unify the SDK's world features and merge both worlds into
//! each component.

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
    ("misbehave", "misbehave"),
    ("local-storage-admission", "local_storage_admission"),
    ("tidb-guard", "tidb_guard"),
    ("misbehave-admission", "misbehave_admission"),
    ("upgrade-gate", "upgrade_gate"),
    ("failover", "failover"),
];

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

/// Builds every guest in [`GUESTS`] (one cargo invocation each) and returns
/// the directory of their `.wasm` files. Builds at most once per process on
/// success; concurrent callers wait for the first build.
pub fn build_guests() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    ensure_wasm_target()?;
    for (package, _) in GUESTS {
        run(cargo().args([
            "build",
            "-p",
            package,
            "--target",
            WASM_TARGET,
            "--profile",
            GUEST_PROFILE,
        ]))
        .with_context(|| format!("building guest `{package}` failed"))?;
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

/// Builds the guests and copies them into [`policy_dir`].
pub fn install_policies() -> Result<PathBuf> {
    let built = build_guests()?;
    let dir = policy_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (_, stem) in GUESTS {
        let file = format!("{stem}.wasm");
        std::fs::copy(built.join(&file), dir.join(&file))
            .with_context(|| format!("cannot copy {file} into {}", dir.display()))?;
    }
    Ok(dir)
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
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(path)
}
