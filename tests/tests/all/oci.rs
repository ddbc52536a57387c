//! OCI distribution against a real registry (Debian's docker-registry on
//! 127.0.0.1): `steward push`/`pull`/`inspect`, digest checks, a host that
//! follows a tag, and interop with the ORAS Python SDK.

use std::time::Duration;

use steward::oci::artifact::{
    ANNOTATION_CREATED, ANNOTATION_SOURCE, ANNOTATION_TITLE, ANNOTATION_VERSION, CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
use steward::oci::digest;
use steward::oci::{Artifact, ComponentConfig, PushMeta, Reference, RegistryClient};
use steward_tests::registry::{Registry, oras};
use steward_tests::{
    TempDir, filter_fixture, get, guest, misbehave_answer, misbehave_variant, serve_config,
    steward, steward_with_env, wait_for,
};

fn client() -> RegistryClient {
    RegistryClient::new(&[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_and_inspect_round_trip_through_a_real_registry() {
    let registry = Registry::start();
    let dir = TempDir::new("oci-round-trip");
    let wasm_path = guest("pd_quorum");
    let wasm = std::fs::read(&wasm_path).unwrap();
    let tag = format!("{}:1.0", registry.repo("steward/pd-quorum"));

    let (ok, stdout, stderr) = steward(&[
        "push",
        wasm_path.to_str().unwrap(),
        &tag,
        "--source",
        "https://example.com/steward",
        "-a",
        "com.example.team=scheduling",
    ]);
    assert!(ok, "push failed: {stderr}");
    let pushed: Reference = stdout.trim().parse().expect("push prints a reference");
    assert_eq!(pushed.repository, "steward/pd-quorum");
    assert_eq!(pushed.tag, None);
    let manifest_digest = pushed
        .digest
        .clone()
        .expect("an immutable @sha256 reference");

    // What the registry serves under the tag is exactly what was pushed.
    let pulled = client().pull(&tag.parse().unwrap()).await.unwrap();
    assert_eq!(pulled.digest(), manifest_digest);
    assert_eq!(pulled.wasm, wasm);
    let m = &pulled.manifest;
    assert_eq!(m.media_type.as_deref(), Some(MANIFEST_MEDIA_TYPE));
    assert_eq!(m.artifact_type.as_deref(), Some(CONFIG_MEDIA_TYPE));
    assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, LAYER_MEDIA_TYPE);
    assert_eq!(m.layers[0].digest, digest(&wasm));
    assert_eq!(m.layers[0].annotations[ANNOTATION_TITLE], "pd_quorum.wasm");
    assert_eq!(m.annotations[ANNOTATION_VERSION], "1.0");
    assert_eq!(
        m.annotations[ANNOTATION_SOURCE],
        "https://example.com/steward"
    );
    assert_eq!(m.annotations["com.example.team"], "scheduling");
    assert!(m.annotations.contains_key(ANNOTATION_CREATED));
    let config = pulled.config.expect("the CNCF Wasm config");
    assert_eq!(
        (config.architecture.as_str(), config.os.as_str()),
        ("wasm", "wasip2")
    );
    assert_eq!(config.layer_digests, [digest(&wasm)]);
    let component = config.component.expect("component section");
    assert_eq!(
        component.target.as_deref(),
        Some("steward:policy/scheduler@0.2.0")
    );
    assert!(component.exports.contains(&"filter".to_string()));
    assert!(
        component
            .imports
            .contains(&"steward:policy/cluster@0.2.0".to_string())
    );

    // Pull by the printed reference.
    let out = dir.path().join("pulled.wasm");
    let (ok, stdout, stderr) = steward(&["pull", stdout.trim(), "-o", out.to_str().unwrap()]);
    assert!(ok, "pull failed: {stderr}");
    assert_eq!(stdout.trim(), pushed.to_string());
    assert_eq!(std::fs::read(&out).unwrap(), wasm);

    // Inspect the artifact and the file.
    let (ok, text, stderr) = steward(&["inspect", &pushed.to_string()]);
    assert!(ok, "inspect failed: {stderr}");
    for line in [
        format!("source:      oci://{pushed}"),
        format!("digest:      {}", digest(&wasm)),
        format!("manifest:    {manifest_digest}"),
        "world:       scheduler".into(),
        "wit package: steward:policy@0.2.0".into(),
        "annotation:  org.opencontainers.image.version=1.0".into(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains("exports:     validate-settings, filter, prioritize"),
        "{text}"
    );
    let (ok, json, _) = steward(&["inspect", "--json", out.to_str().unwrap()]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["world"], "scheduler");
    assert_eq!(json["digest"], digest(&wasm).as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_is_refused() {
    let registry = Registry::start();
    let dir = TempDir::new("oci-tamper");
    let wasm_path = guest("misbehave");
    let tag = format!("{}:1", registry.repo("steward/tampered"));
    let (ok, _, stderr) = steward(&["push", wasm_path.to_str().unwrap(), &tag]);
    assert!(ok, "{stderr}");
    let layer = digest(&std::fs::read(&wasm_path).unwrap());
    // Corrupt the stored layer behind the registry's back.
    std::fs::write(
        registry.blob_file(&layer),
        b"\0asm\x0d\0\x01\0 not what was pushed",
    )
    .unwrap();

    let out = dir.path().join("p.wasm");
    let (ok, _, stderr) = steward(&["pull", &tag, "-o", out.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("digest mismatch: blob {layer}")),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written from a failed pull");

    let (ok, _, stderr) = steward(&[
        "pull",
        &format!(
            "{}@sha256:{}",
            registry.repo("steward/tampered"),
            "0".repeat(64)
        ),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("MANIFEST_UNKNOWN"), "{stderr}");
}

/// A host configured with a registry tag picks up each newly pushed
/// version without a restart, refuses a broken one, and keeps serving when
/// the registry goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_following_a_tag_serves_each_newly_pushed_version() {
    let mut registry = Registry::start();
    let dir = TempDir::new("oci-follow");
    let variant = dir.path().join("variant.wasm");
    std::fs::write(&variant, misbehave_variant()).unwrap();
    let repo = registry.repo("steward/misbehave");
    let tag = format!("{repo}:live");
    let push = |file: &std::path::Path| {
        let (ok, out, err) = steward(&["push", file.to_str().unwrap(), &tag]);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let first = push(&guest("misbehave"));

    let addr = serve_config(
        dir.path(),
        &format!(
            "registries: {{pollIntervalMs: 200}}\npolicies:\n- id: misbehave\n  hook: scheduler\n  module: oci://{tag}\n  settings: {{behaviour: reject-all}}\n"
        ),
    )
    .await
    .addr;
    let answer = || async { misbehave_answer(&filter_fixture(addr).await.1) };
    assert_eq!(answer().await, "rejects");
    let status = status(addr).await;
    assert_eq!(status["resolved"], format!("oci://{first}").as_str());
    assert_eq!(status["version"], "live");

    let second = push(&variant);
    let swapped = wait_for(Duration::from_secs(10), || async {
        (answer().await == "REJECTS").then_some(())
    })
    .await;
    assert!(swapped.is_some(), "the newly pushed version never served");
    // The status follows the swap a moment later.
    let resolved = format!("oci://{second}");
    let s = wait_for(Duration::from_secs(5), || async {
        let s = self::status(addr).await;
        (s["resolved"] == resolved.as_str()).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("the status never showed {resolved}"));
    assert_eq!(s["state"], "serving");
    assert_eq!(s["generation"], 2);

    // A broken artifact under the tag is refused; the last good one serves.
    let broken = Artifact::new(
        b"\0asm\x0d\0\x01\0truncated".to_vec(),
        ComponentConfig {
            exports: vec![],
            imports: vec![],
            target: None,
        },
        &PushMeta::default(),
    );
    client().push(&tag.parse().unwrap(), &broken).await.unwrap();
    let refused = wait_for(Duration::from_secs(10), || async {
        let s = self::status(addr).await;
        (s["state"] == "degraded").then_some(s)
    })
    .await
    .expect("the broken version is refused");
    let error = refused["lastError"].as_str().unwrap();
    assert!(error.contains("the component does not compile"), "{error}");
    assert_eq!(refused["resolved"], format!("oci://{second}").as_str());
    assert_eq!(answer().await, "REJECTS");
    let metrics = get(addr, "/metrics").await.1;
    assert!(
        metrics
            .contains(r#"steward_policy_reloads_total{policy="misbehave",outcome="component"} 1"#),
        "{metrics}"
    );

    // The registry goes away: the error shows, the policy keeps serving.
    registry.stop();
    let unreachable = wait_for(Duration::from_secs(10), || async {
        let s = self::status(addr).await;
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("is unreachable"))
            .then_some(s)
    })
    .await
    .expect("the unreachable registry shows in the status");
    assert_eq!(unreachable["state"], "degraded");
    assert_eq!(answer().await, "REJECTS");
}

/// The first policy's entry of `GET /status`.
pub(crate) async fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = get(addr, "/status").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["policies"][0].clone()
}

const ORAS_PULL: &str = r#"
import json, sys, oras.client
ref, outdir = sys.argv[1], sys.argv[2]
c = oras.client.OrasClient(insecure=True)
print(json.dumps({"manifest": c.get_manifest(ref), "files": c.pull(target=ref, outdir=outdir)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pulls_what_steward_pushed_with_the_cncf_media_types() {
    let registry = Registry::start();
    let dir = TempDir::new("oci-oras-pull");
    let wasm_path = guest("pd_quorum");
    let (ok, pushed, err) = steward(&[
        "push",
        wasm_path.to_str().unwrap(),
        &format!("{}:2.0", registry.repo("steward/pd-quorum")),
    ]);
    assert!(ok, "{err}");
    let out = oras(
        ORAS_PULL,
        &[pushed.trim(), dir.path().to_str().unwrap()],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("the script prints JSON");
    let m = &v["manifest"];
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
    assert_eq!(m["annotations"][ANNOTATION_VERSION], "2.0");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{v}");
    let file = std::path::Path::new(files[0].as_str().unwrap());
    assert_eq!(file.file_name().unwrap(), "pd_quorum.wasm");
    assert_eq!(
        std::fs::read(file).unwrap(),
        std::fs::read(&wasm_path).unwrap()
    );
}

const ORAS_PUSH: &str = r#"
import json, sys, oras.client
ref = sys.argv[1]
c = oras.client.OrasClient(insecure=True)
r = c.push(target=ref, files=["policy.wasm:application/wasm"],
           manifest_config="config.json:application/vnd.wasm.config.v0+json")
print(r.status_code)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_loads_a_policy_oras_pushed_with_the_cncf_media_types() {
    let registry = Registry::start();
    let dir = TempDir::new("oci-oras-push");
    let wasm = stage_cncf_files(dir.path());
    let tag = format!("{}:oras", registry.repo("steward/from-oras"));
    let out = oras(ORAS_PUSH, &[&tag], dir.path());
    assert_eq!(out.trim(), "201", "{out}");

    let (ok, text, err) = steward(&["inspect", &tag]);
    assert!(ok, "{err}");
    assert!(text.contains("world:       scheduler"), "{text}");

    let addr = serve_misbehave(dir.path(), &tag).await;
    assert_eq!(status(addr).await["digest"], digest(&wasm).as_str());
}

/// Writes the misbehave guest as `policy.wasm` and its CNCF Wasm config as
/// `config.json` in `dir`, for another tool to push; returns the component.
pub(crate) fn stage_cncf_files(dir: &std::path::Path) -> Vec<u8> {
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    std::fs::write(dir.join("policy.wasm"), &wasm).unwrap();
    let config = serde_json::json!({
        "created": "2026-11-22T00:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest(&wasm)],
        "component": {"exports": ["filter"], "imports": [], "target": null}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    wasm
}

/// Serves the misbehave policy (rejecting every node) from the registry
/// reference `reference`, with its config in `dir`; checks it answers.
pub(crate) async fn serve_misbehave(
    dir: &std::path::Path,
    reference: &str,
) -> std::net::SocketAddr {
    let addr = serve_config(
        dir,
        &format!(
            "policies:\n- id: misbehave\n  hook: scheduler\n  module: oci://{reference}\n  settings: {{behaviour: reject-all}}\n"
        ),
    )
    .await
    .addr;
    assert_eq!(misbehave_answer(&filter_fixture(addr).await.1), "rejects");
    addr
}

/// Credentials come from the Docker config file (`$DOCKER_CONFIG`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_docker_config() {
    let registry = Registry::start_with_user("alice", "s3cret:pw");
    let dir = TempDir::new("oci-auth");
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let wasm_path = guest("misbehave");
    let tag = format!("{}:1", registry.repo("private/misbehave"));
    let docker_env = [("DOCKER_CONFIG", docker.to_str().unwrap())];

    let (ok, _, stderr) =
        steward_with_env(&["push", wasm_path.to_str().unwrap(), &tag], &docker_env);
    assert!(!ok);
    assert!(
        stderr.contains("asks for credentials") && stderr.contains("docker login"),
        "{stderr}"
    );

    // base64("alice:wrong")
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6d3Jvbmc="}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let (ok, _, stderr) =
        steward_with_env(&["push", wasm_path.to_str().unwrap(), &tag], &docker_env);
    assert!(!ok);
    assert!(stderr.contains("refused the credentials"), "{stderr}");

    // base64("alice:s3cret:pw")
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"YWxpY2U6czNjcmV0OnB3"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let (ok, pushed, stderr) =
        steward_with_env(&["push", wasm_path.to_str().unwrap(), &tag], &docker_env);
    assert!(ok, "{stderr}");
    let out = dir.path().join("p.wasm");
    let (ok, _, stderr) = steward_with_env(
        &["pull", pushed.trim(), "-o", out.to_str().unwrap()],
        &docker_env,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(out).unwrap(),
        std::fs::read(wasm_path).unwrap()
    );
}

/// Credentials come from the Docker config's credential helpers:
/// `credHelpers` for one registry, `credsStore` for all, run as
/// `docker-credential-<name> get` from PATH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_docker_credential_helpers() {
    let registry = Registry::start_with_user("alice", "s3cret:pw");
    let dir = TempDir::new("oci-cred-helpers");
    let (docker, bin) = (dir.path().join("docker"), dir.path().join("bin"));
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.path().join("asked.log");
    // A helper that knows alice's password for this registry only, and
    // logs what it was asked.
    let helper = bin.join("docker-credential-steward-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\necho \"$server\" >> {}\nif [ \"$server\" = {} ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret:pw\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            asked.display(),
            registry.host()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("DOCKER_CONFIG", docker.to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    let config = |json: String| std::fs::write(docker.join("config.json"), json).unwrap();
    let wasm_path = guest("misbehave");
    let tag = format!("{}:1", registry.repo("private/misbehave"));

    config(format!(
        r#"{{"credHelpers":{{"{}":"steward-test"}}}}"#,
        registry.host()
    ));
    let (ok, pushed, stderr) = steward_with_env(&["push", wasm_path.to_str().unwrap(), &tag], &env);
    assert!(ok, "{stderr}");
    assert!(
        std::fs::read_to_string(&asked)
            .unwrap()
            .lines()
            .all(|l| l == registry.host()),
        "the helper was asked for another registry"
    );

    config(r#"{"credsStore":"steward-test"}"#.to_string());
    let out = dir.path().join("p.wasm");
    let (ok, _, stderr) =
        steward_with_env(&["pull", pushed.trim(), "-o", out.to_str().unwrap()], &env);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(out).unwrap(),
        std::fs::read(&wasm_path).unwrap()
    );

    // A helper for another registry is not asked; without credentials the
    // registry's demand is reported.
    config(r#"{"credHelpers":{"other.example.com":"steward-test"}}"#.to_string());
    let (ok, _, stderr) = steward_with_env(&["pull", pushed.trim(), "-o", "x.wasm"], &env);
    assert!(!ok);
    assert!(stderr.contains("asks for credentials"), "{stderr}");

    config(r#"{"credsStore":"not-installed"}"#.to_string());
    let (ok, _, stderr) = steward_with_env(&["pull", pushed.trim(), "-o", "x.wasm"], &env);
    assert!(!ok);
    assert!(
        stderr.contains("cannot run `docker-credential-not-installed`"),
        "{stderr}"
    );
}
