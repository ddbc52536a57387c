//! The crate layout's promise (README, Layout): the runtime crate, the
//! sandbox's trusted base, depends on no Kubernetes or HTTP crate, and on
//! an async runtime only through wasmtime's WASI.

fn cargo_tree(args: &[&str]) -> String {
    let out = xtask::cargo()
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The crate names in `cargo tree` output, one per line.
fn names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

#[test]
fn the_runtime_crate_links_no_kubernetes_http_or_async_runtime_of_its_own() {
    let tree = cargo_tree(&["-p", "steward-runtime"]);
    let crates = names(&tree);
    assert!(crates.contains(&"wasmtime"), "{tree}");
    for banned in [
        "kube",
        "kube-client",
        "k8s-openapi",
        "axum",
        "hyper",
        "hyper-util",
        "reqwest",
    ] {
        assert!(
            !crates.contains(&banned),
            "steward-runtime depends on {banned}:\n{tree}"
        );
    }
    // tokio is there only because wasmtime-wasi needs it.
    let tokio = cargo_tree(&["-p", "steward-runtime", "-i", "tokio", "--depth", "1"]);
    assert_eq!(names(&tokio), ["tokio", "wasmtime-wasi"], "{tokio}");
}
