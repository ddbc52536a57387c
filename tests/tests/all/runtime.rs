//! Loading components: the precompiled cache, and refusing what is not a
//! Steward policy of this WIT version.

use std::time::Instant;

use steward::runtime::{Runtime, World};
use steward_tests::guest;

#[test]
fn precompiled_components_are_cached_and_reused() {
    let dir = std::env::temp_dir().join(format!("steward-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let wasm = std::fs::read(guest("pd_quorum")).unwrap();

    let runtime = Runtime::new(Some(dir.clone())).unwrap();
    let started = Instant::now();
    let (_, world) = runtime.load(&wasm).unwrap();
    let compiled = started.elapsed();
    assert_eq!(world, World::Scheduler);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&steward::oci::digest(&wasm)[7..]),
        "{name}"
    );

    // A second engine (a restart) deserializes instead of compiling.
    let restarted = Runtime::new(Some(dir.clone())).unwrap();
    let started = Instant::now();
    restarted.load(&wasm).unwrap();
    let loaded = started.elapsed();
    assert!(
        loaded < compiled,
        "cached load {loaded:?} vs compile {compiled:?}"
    );

    // A corrupt cache entry is not trusted: the component compiles again.
    std::fs::write(&files[0], b"garbage").unwrap();
    let (_, world) = Runtime::new(Some(dir.clone()))
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert_eq!(world, World::Scheduler);
    assert!(
        std::fs::read(&files[0]).unwrap().len() > 1000,
        "cache entry rewritten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_is_not_a_policy_is_refused_with_a_reason() {
    let runtime = steward_tests::runtime();
    let text = |r: anyhow::Result<_>| match r {
        Ok(_) => panic!("loaded what is not a policy"),
        Err(e) => format!("{e:#}"),
    };
    assert!(text(runtime.load(b"hello")).contains("not a WebAssembly file"));
    let core_module = b"\0asm\x01\0\0\0";
    assert!(text(runtime.load(core_module)).contains("a core Wasm module, not a component"));
    let mut truncated = std::fs::read(guest("pd_quorum")).unwrap();
    truncated.truncate(truncated.len() / 2);
    assert!(text(runtime.load(&truncated)).contains("does not compile"));
}

#[test]
fn a_component_built_against_another_wit_version_is_refused_naming_both() {
    let wasm = std::fs::read(guest("foreign_wit")).unwrap();
    let error = match steward_tests::runtime().load(&wasm) {
        Ok(_) => panic!("a component of steward:policy@0.1.0 loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(
            "built against steward:policy@0.1.0, but this host serves steward:policy@0.2.0"
        ),
        "{error}"
    );
}

#[test]
fn a_component_that_reads_files_is_refused_naming_the_import() {
    let wasm = std::fs::read(guest("reads_files")).unwrap();
    let error = match steward_tests::runtime().load(&wasm) {
        Ok(_) => panic!("a component importing wasi:filesystem loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("wasi:filesystem/preopens") && error.contains("does not grant"),
        "{error}"
    );
}
