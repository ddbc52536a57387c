//! Signed policies in cosign's format against a real registry: `steward
//! sign`/`verify`, the real cosign CLI (built from the Go module proxy)
//! verifying what Steward signed and the other way round, and a host that
//! requires signatures refusing a badly signed or unsigned version on swap
//! while the signed one keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use steward::oci::artifact::MANIFEST_MEDIA_TYPE;
use steward::oci::signature::{
    PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION, SigningKey, signature_tag,
};
use steward::oci::{Reference, RegistryClient};
use steward_tests::registry::Registry;
use steward_tests::tools::{go_tool, run, run_ok};
use steward_tests::{
    TempDir, filter_fixture, get, guest, misbehave_answer, misbehave_variant, serve_config,
    steward, wait_for,
};

use crate::oci::status;

/// A new key pair written as `NAME.key` (PKCS#8) and `NAME.pub` in `dir`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (_, private, public) = SigningKey::generate().unwrap();
    let (key, public_file) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    std::fs::write(&key, private).unwrap();
    std::fs::write(&public_file, public).unwrap();
    (key, public_file)
}

/// A key pair made by openssl: a SEC 1 `EC PRIVATE KEY` and its public key.
fn openssl_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let openssl = Path::new("openssl");
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run_ok(
        openssl,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            key.to_str().unwrap(),
        ],
        &[],
        dir,
    );
    run_ok(
        openssl,
        &[
            "ec",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
        &[],
        dir,
    );
    (key, public)
}

/// `steward push` of `file` to `tag`; the pinned reference it prints.
pub(crate) fn push(file: &Path, tag: &str) -> String {
    let (ok, out, err) = steward(&["push", file.to_str().unwrap(), tag]);
    assert!(ok, "{err}");
    out.trim().to_string()
}

fn sign(reference: &str, key: &Path) {
    let (ok, out, err) = steward(&["sign", reference, "--key", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(" signed: "), "{out}");
}

/// `steward verify`: (success, stdout, stderr).
fn verify(reference: &str, keys: &[&Path]) -> (bool, String, String) {
    let mut args = vec!["verify", reference];
    for k in keys {
        args.extend(["--key", k.to_str().unwrap()]);
    }
    steward(&args)
}

/// `cosign verify` of a key-signed artifact in a plain-HTTP registry
/// without a transparency log (nothing leaves 127.0.0.1).
fn cosign_verify(dir: &Path, reference: &str, key: &Path) -> steward_tests::tools::Output {
    run(
        &go_tool("cosign"),
        &[
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            reference,
        ],
        &[],
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steward_signs_in_cosigns_format_and_cosign_verifies_it() {
    let registry = Registry::start();
    let dir = TempDir::new("sign-round-trip");
    let (openssl_key, openssl_pub) = openssl_key_pair(dir.path(), "openssl");
    let (key, public) = key_pair(dir.path(), "second");
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let tag = format!("{}:1.0", registry.repo("steward/pd-quorum"));
    let pinned = push(&guest("pd_quorum"), &tag);

    let (ok, _, err) = verify(&tag, &[&openssl_pub]);
    assert!(!ok);
    assert!(
        err.contains("is not signed") && err.contains(".sig"),
        "{err}"
    );

    sign(&tag, &openssl_key);
    let (ok, out, err) = verify(&tag, &[&openssl_pub]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("{pinned}: signed by {}", openssl_pub.display())
    );
    let (ok, _, err) = verify(&pinned, &[&public]);
    assert!(!ok);
    assert!(
        err.contains("carries no valid signature") && err.contains("signed by none of the keys"),
        "{err}"
    );

    // A second signature is added beside the first.
    sign(&pinned, &key);
    let (ok, out, err) = verify(&tag, &[&stranger, &public]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("signed by {}", public.display())),
        "{out}"
    );

    // The layout cosign reads: the `sha256-<hex>.sig` tag, one
    // simple-signing layer per signature, each naming the artifact.
    let r: Reference = pinned.parse().unwrap();
    let digest = r.digest.clone().unwrap();
    let sig_ref = Reference {
        tag: Some(signature_tag(&digest).unwrap()),
        digest: None,
        ..r.clone()
    };
    let client = RegistryClient::new(&[]);
    let (_, bytes) = client.manifest_bytes(&sig_ref).await.unwrap().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    for layer in layers {
        assert_eq!(layer["mediaType"], PAYLOAD_MEDIA_TYPE);
        assert!(layer["annotations"][SIGNATURE_ANNOTATION].is_string());
        let payload = client
            .blob(
                &sig_ref,
                layer["digest"].as_str().unwrap(),
                layer["size"].as_u64().unwrap(),
            )
            .await
            .unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            digest.as_str()
        );
        assert_eq!(
            payload["critical"]["identity"]["docker-reference"],
            registry.repo("steward/pd-quorum").as_str()
        );
    }

    // The real cosign verifies both signatures, and refuses a stranger's key.
    for good in [&openssl_pub, &public] {
        let out = cosign_verify(dir.path(), &pinned, good);
        assert!(out.ok, "cosign refused {}: {}", good.display(), out.stderr);
        assert!(out.stdout.contains(&digest), "{}", out.stdout);
    }
    let out = cosign_verify(dir.path(), &pinned, &stranger);
    assert!(!out.ok, "cosign verified a stranger's key: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steward_verifies_what_cosign_signed() {
    let registry = Registry::start();
    let dir = TempDir::new("sign-cosign");
    let cosign = go_tool("cosign");
    let password = [("COSIGN_PASSWORD", "steward-tests")];
    run_ok(&cosign, &["generate-key-pair"], &password, dir.path());
    let pinned = push(
        &guest("misbehave"),
        &format!("{}:1", registry.repo("steward/misbehave")),
    );
    run_ok(
        &cosign,
        &[
            "sign",
            "--key",
            "cosign.key",
            // cosign 3's tag form without a transparency log or signing
            // config (they would reach the public Sigstore).
            "--use-signing-config=false",
            "--new-bundle-format=false",
            "--tlog-upload=false",
            "--allow-http-registry",
            "--yes",
            &pinned,
        ],
        &password,
        dir.path(),
    );
    let cosign_pub = dir.path().join("cosign.pub");
    let (ok, out, err) = verify(&pinned, &[&cosign_pub]);
    assert!(ok, "{err}");
    assert!(out.contains("signed by"), "{out}");
    let (_, other) = key_pair(dir.path(), "other");
    let (ok, _, err) = verify(&pinned, &[&other]);
    assert!(!ok);
    assert!(err.contains("carries no valid signature"), "{err}");
}

/// A host requiring signatures serves a signed version, refuses one signed
/// with another key and an unsigned one (the signed version keeps serving,
/// `/status` says why), and swaps a version in once it is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_without_a_valid_signature_is_refused_on_swap() {
    let registry = Registry::start();
    let dir = TempDir::new("sign-swap");
    let (trusted_key, trusted_pub) = key_pair(dir.path(), "trusted");
    let (wrong_key, _) = key_pair(dir.path(), "wrong");
    let variant = dir.path().join("variant.wasm");
    std::fs::write(&variant, misbehave_variant()).unwrap();
    let tag = format!("{}:live", registry.repo("steward/misbehave"));
    let first = push(&guest("misbehave"), &tag);
    sign(&first, &trusted_key);

    let addr = serve_config(
        dir.path(),
        &format!(
            "registries: {{pollIntervalMs: 200}}\nsignatures:\n  publicKeys: [trusted.pub]\npolicies:\n- id: misbehave\n  hook: scheduler\n  module: oci://{tag}\n  settings: {{behaviour: reject-all}}\n"
        ),
    )
    .await
    .addr;
    let answer = || async { misbehave_answer(&filter_fixture(addr).await.1) };
    assert_eq!(answer().await, "rejects");
    let s = status(addr).await;
    assert_eq!(s["state"], "serving");
    assert_eq!(s["signedBy"], trusted_pub.to_str().unwrap());

    // Signed with a key the host does not trust: refused, the first serves.
    let second = push(&variant, &tag);
    sign(&second, &wrong_key);
    let refused = degraded_with(addr, "carries no valid signature").await;
    assert_eq!(refused["resolved"], format!("oci://{first}").as_str());
    assert_eq!(answer().await, "rejects");
    let metrics = get(addr, "/metrics").await.1;
    assert!(
        metrics.contains(r#"steward_policy_reloads_total{policy="misbehave",outcome="signature"}"#),
        "{metrics}"
    );

    // Signed with the trusted key afterwards: the next poll swaps it in.
    sign(&second, &trusted_key);
    let swapped = wait_for(Duration::from_secs(10), || async {
        let s = status(addr).await;
        (s["resolved"] == format!("oci://{second}").as_str()).then_some(s)
    })
    .await
    .expect("the version signed afterwards never served");
    assert_eq!(swapped["state"], "serving");
    assert_eq!(answer().await, "REJECTS");

    // Unsigned: refused, saying so.
    let (ok, _, err) = steward(&[
        "push",
        guest("misbehave").to_str().unwrap(),
        &tag,
        "--annotation",
        "unsigned=yes",
    ]);
    assert!(ok, "{err}");
    let refused = degraded_with(addr, "is not signed").await;
    assert_eq!(refused["resolved"], format!("oci://{second}").as_str());
    assert_eq!(answer().await, "REJECTS");
}

/// Waits until the policy is degraded with an error containing `text`.
async fn degraded_with(addr: std::net::SocketAddr, text: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(10), || async {
        let s = status(addr).await;
        (s["state"] == "degraded" && s["lastError"].as_str().is_some_and(|e| e.contains(text)))
            .then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("no refusal mentioning `{text}` within 10 s"))
}
