//! `steward new <name> --hook scheduler|admission|reconcile`: a policy
//! crate to start from (as `kwctl scaffold` gives Kubewarden authors one),
//! which builds, tests inside Wasm and passes its fixture suite as written.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

/// The world the new policy implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Hook {
    Scheduler,
    Admission,
    Reconcile,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Scheduler => "scheduler",
            Hook::Admission => "admission",
            Hook::Reconcile => "reconcile",
        }
    }

    fn lib_rs(self) -> &'static str {
        match self {
            Hook::Scheduler => include_str!("../../templates/scheduler/lib.rs"),
            Hook::Admission => include_str!("../../templates/admission/lib.rs"),
            Hook::Reconcile => include_str!("../../templates/reconcile/lib.rs"),
        }
    }

    fn suite(self) -> &'static str {
        match self {
            Hook::Scheduler => include_str!("../../templates/scheduler/suite.yaml"),
            Hook::Admission => include_str!("../../templates/admission/suite.yaml"),
            Hook::Reconcile => include_str!("../../templates/reconcile/suite.yaml"),
        }
    }
}

const CARGO_TOML: &str = include_str!("../../templates/Cargo.toml.tmpl");
const CARGO_CONFIG: &str = include_str!("../../templates/cargo-config.toml");

/// The test runner of a crate outside a Steward checkout. Inside one, the
/// checkout's `.cargo/config.toml` sets it, and cargo would pick either.
const RUNNER: &str = r#"# `cargo test` runs each unit test inside Wasm, in its own instance.
runner = ["steward", "test-runner"]"#;
const CHECKOUT_RUNNER: &str = "# `cargo test` runs the unit tests with the checkout's runner.";

/// Where the new crate's `steward-sdk` dependency points.
#[derive(Debug, PartialEq, Eq)]
pub enum Sdk {
    /// The SDK of the Steward checkout the crate was created in, relative
    /// to the crate.
    Checkout(PathBuf),
    /// The SDK of the checkout this `steward` was built from.
    BuiltFrom(PathBuf),
    /// Neither exists: a version for the user to replace.
    Version(&'static str),
}

impl Sdk {
    /// The dependency's value in `Cargo.toml`.
    fn dependency(&self) -> String {
        // A JSON string is a valid TOML basic string.
        let quoted = |path: &Path| serde_json::Value::from(path.to_string_lossy()).to_string();
        match self {
            Sdk::Checkout(path) | Sdk::BuiltFrom(path) => format!("{{ path = {} }}", quoted(path)),
            Sdk::Version(version) => format!("\"{version}\""),
        }
    }

    /// What the user should know about the dependency.
    fn describe(&self) -> String {
        match self {
            Sdk::Checkout(path) => format!(
                "steward-sdk: path {} (this Steward checkout)",
                path.display()
            ),
            Sdk::BuiltFrom(path) => format!(
                "steward-sdk: path {} (the checkout this steward was built from); edit \
                 Cargo.toml to use another",
                path.display()
            ),
            Sdk::Version(version) => format!(
                "steward-sdk: version {version}, which is not on crates.io: point the dependency \
                 in Cargo.toml at a Steward checkout's guest-policies/sdk"
            ),
        }
    }
}

/// Writes the crate `name` for `hook` into `dir` (default `./<name>`),
/// which must not exist or be empty. Returns what to print.
pub fn create(name: &str, hook: Hook, dir: Option<&Path>) -> Result<String> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} already exists and is not empty: choose another --path",
            dir.display()
        );
    }
    for sub in ["src", "tests", ".cargo"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let absolute = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let sdk = find_sdk(&absolute);
    let manifest = CARGO_TOML
        .replace("{name}", name)
        .replace("{sdk}", &sdk.dependency());
    let (runner, runs_tests) = match sdk {
        Sdk::Checkout(_) => (CHECKOUT_RUNNER, "the checkout's steward test-runner"),
        Sdk::BuiltFrom(_) | Sdk::Version(_) => (RUNNER, "`steward` on PATH runs them"),
    };
    let config = CARGO_CONFIG.replace("{runner}", runner);
    let files = [
        ("Cargo.toml", manifest.as_str()),
        (".cargo/config.toml", config.as_str()),
        ("src/lib.rs", hook.lib_rs()),
        ("tests/suite.yaml", hook.suite()),
        (".gitignore", "/target\n"),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let wasm = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    Ok(format!(
        "Created {hook} policy `{name}` in {dir}\n\
         {sdk}\n\
         \n\
         Next, in {dir}:\n  \
         cargo test              # unit tests inside Wasm: {runs_tests}\n  \
         cargo build --release   # the component: {wasm}\n  \
         steward test {wasm} tests/suite.yaml\n  \
         steward push {wasm} REGISTRY/REPOSITORY:TAG\n",
        hook = hook.name(),
        dir = dir.display(),
        sdk = sdk.describe(),
    ))
}

/// Crate names cargo and the component file name both accept.
fn check_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a policy crate name: use lowercase letters, digits, `-` and `_`, \
             starting with a letter"
        );
    }
    Ok(())
}

/// The SDK the crate at `dir` (absolute) should depend on.
fn find_sdk(dir: &Path) -> Sdk {
    if let Some(checkout) = dir.ancestors().skip(1).find(|d| is_checkout(d)) {
        return Sdk::Checkout(relative(dir, &checkout.join("guest-policies/sdk")));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match built_from.canonicalize() {
        Ok(checkout) if is_checkout(&checkout) => {
            Sdk::BuiltFrom(checkout.join("guest-policies/sdk"))
        }
        _ => Sdk::Version(env!("CARGO_PKG_VERSION")),
    }
}

/// A Steward checkout: a workspace holding the SDK crate.
fn is_checkout(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("guest-policies/sdk/Cargo.toml"))
        .is_ok_and(|manifest| manifest.contains("name = \"steward-sdk\""))
}

/// `to` relative to `from`; both absolute.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    std::iter::repeat_n(Component::ParentDir, from.len() - common)
        .chain(to[common..].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_cargo() {
        assert!(check_name("my-policy_2").is_ok());
        for bad in ["", "2fast", "My-Policy", "my policy", "../x"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not a policy crate name"), "{e}");
        }
    }

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(
                Path::new("/r/policies/mine"),
                Path::new("/r/guest-policies/sdk")
            ),
            Path::new("../../guest-policies/sdk")
        );
        assert_eq!(
            relative(
                Path::new("/r/guest-policies/mine"),
                Path::new("/r/guest-policies/sdk")
            ),
            Path::new("../sdk")
        );
    }

    #[test]
    fn the_dependency_is_valid_toml() {
        let sdk = Sdk::BuiltFrom(PathBuf::from(r#"C:\odd "dir"\sdk"#));
        assert_eq!(sdk.dependency(), r#"{ path = "C:\\odd \"dir\"\\sdk" }"#);
        assert_eq!(Sdk::Version("0.1.0").dependency(), "\"0.1.0\"");
    }
}
