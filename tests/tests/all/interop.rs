//! OCI interop with the real tools of the ecosystem against a real
//! registry: the ORAS CLI (built from the Go module proxy) and `wkg` (the
//! Bytecode Alliance's Wasm package CLI, from crates.io), each pulling what
//! `steward push` stored and pushing what Steward pulls and serves.

use steward::oci::artifact::{CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use steward::oci::digest;
use steward_tests::registry::Registry;
use steward_tests::tools::{go_tool, install, run_ok};
use steward_tests::{TempDir, guest, steward};

use crate::oci::{serve_misbehave, stage_cncf_files, status};
use crate::signing::push;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oras_cli_pulls_what_steward_pushed_and_the_host_serves_what_it_pushed_by_digest() {
    let registry = Registry::start();
    let dir = TempDir::new("interop-oras-cli");
    let oras = go_tool("oras");
    let wasm_path = guest("pd_quorum");
    let pinned = push(
        &wasm_path,
        &format!("{}:1.0", registry.repo("steward/pd-quorum")),
    );
    let pinned = pinned.as_str();

    let manifest = run_ok(
        &oras,
        &["manifest", "fetch", "--plain-http", pinned],
        &[],
        dir.path(),
    );
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
    let out = dir.path().join("pulled");
    run_ok(
        &oras,
        &["pull", "--plain-http", pinned, "-o", out.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(
        std::fs::read(out.join("pd_quorum.wasm")).unwrap(),
        std::fs::read(&wasm_path).unwrap(),
        "oras wrote another file than Steward pushed"
    );

    // The other way: the ORAS CLI pushes the CNCF layout; the host serves
    // it from a pinned `oci://...@sha256:` reference.
    let wasm = stage_cncf_files(dir.path());
    let tag = format!("{}:oras-cli", registry.repo("steward/from-oras-cli"));
    run_ok(
        &oras,
        &[
            "push",
            "--plain-http",
            "--config",
            &format!("config.json:{CONFIG_MEDIA_TYPE}"),
            &tag,
            &format!("policy.wasm:{LAYER_MEDIA_TYPE}"),
        ],
        &[],
        dir.path(),
    );
    let manifest_digest = run_ok(&oras, &["resolve", "--plain-http", &tag], &[], dir.path());
    let by_digest = format!(
        "{}@{}",
        registry.repo("steward/from-oras-cli"),
        manifest_digest.trim()
    );
    let addr = serve_misbehave(dir.path(), &by_digest).await;
    let s = status(addr).await;
    assert_eq!(s["resolved"], format!("oci://{by_digest}").as_str());
    assert_eq!(s["digest"], digest(&wasm).as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wkg_pulls_what_steward_pushed_and_steward_serves_what_wkg_pushed() {
    let registry = Registry::start();
    let dir = TempDir::new("interop-wkg");
    let wkg = install("tests/tools/wkg.sh", &[]);
    // wkg reaches this registry over plain HTTP, and reads no Docker
    // config of the machine.
    let env = [
        ("WKG_OCI_INSECURE", registry.host()),
        ("DOCKER_CONFIG", dir.path().display().to_string()),
        ("HOME", dir.path().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let wasm_path = guest("pd_quorum");
    let pinned = push(
        &wasm_path,
        &format!("{}:1.0", registry.repo("steward/pd-quorum")),
    );
    let out = dir.path().join("from-steward.wasm");
    run_ok(
        &wkg,
        &["oci", "pull", &pinned, "-o", out.to_str().unwrap()],
        &env,
        dir.path(),
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&wasm_path).unwrap(),
        "wkg wrote another component than Steward pushed"
    );

    // wkg's own push (its layout of the CNCF artifact), pulled and served.
    let wasm_path = guest("misbehave");
    let tag = format!("{}:wkg", registry.repo("steward/from-wkg"));
    run_ok(
        &wkg,
        &["oci", "push", &tag, wasm_path.to_str().unwrap()],
        &env,
        dir.path(),
    );
    let pulled = dir.path().join("from-wkg.wasm");
    let (ok, _, err) = steward(&["pull", &tag, "-o", pulled.to_str().unwrap()]);
    assert!(ok, "{err}");
    let wasm = std::fs::read(&wasm_path).unwrap();
    assert_eq!(std::fs::read(&pulled).unwrap(), wasm);
    let addr = serve_misbehave(dir.path(), &tag).await;
    assert_eq!(status(addr).await["digest"], digest(&wasm).as_str());
}
