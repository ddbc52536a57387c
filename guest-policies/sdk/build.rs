//! Writes `__generate!`, `wit_bindgen::generate!` over Steward's WIT
//! package by absolute path: the export macros expand it in the policy
//! crate, where a relative `path` would name the policy's directory.

use std::path::Path;

fn main() {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
    let wit = wit.canonicalize().unwrap_or_else(|e| {
        panic!(
            "Steward's WIT package is not at {} ({e}): the SDK builds from a Steward checkout's \
             guest-policies/sdk",
            wit.display()
        )
    });
    // The output names the package, not its contents.
    println!("cargo::rerun-if-changed=build.rs");
    let path = wit.to_str().expect("the WIT package's path is UTF-8");
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
