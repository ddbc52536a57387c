//! Writes `__generate!`, `wit_bindgen::generate!` over Steward's WIT
//! package by absolute path: the export macros expand it in the policy
//! crate, where a relative `path` would name the policy's directory.

use std::path::Path;

fn main() {
    // Read when the script runs, not compiled in: checkouts sharing a
    // target directory share this script's binary.
    let sdk = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let wit = Path::new(&sdk).join("../../wit");
    let wit = wit.canonicalize().unwrap_or_else(|e| {
        panic!(
            "Steward's WIT package is not at {} ({e}): the SDK builds from a Steward checkout's \
             guest-policies/sdk",
            wit.display()
        )
    });
    let path = wit.to_str().expect("the WIT package's path is UTF-8");
    // The output names the package's absolute path, not its contents. Two
    // checkouts sharing a target directory share this script's output, so
    // it must run again when the path it wrote goes away or changes (cargo
    // records this line's path as written, absolute).
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={path}");
    let source = format!(
        r#"/// `wit_bindgen::generate!` over Steward's WIT package, for the export macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __generate {{
    ($($options:tt)*) => {{
        $crate::__private::wit_bindgen::generate!({{
            path: {path:?},
            runtime_path: "::steward_sdk::__private::wit_bindgen::rt",
            $($options)*
        }});
    }};
}}
"#
    );
    let out =
        Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("generate.rs");
    std::fs::write(&out, source).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
