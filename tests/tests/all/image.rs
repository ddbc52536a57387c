//! Steward's container image (`deploy/image`): built by
//! `deploy/image/build.sh` with podman (a static musl `steward` and the
//! built-in policies, FROM scratch), run to check `--version` and that it
//! serves `/healthz` with the policies it holds, and pushed to a registry.

use std::path::Path;
use std::time::{Duration, Instant};

use steward::oci::{Reference, RegistryClient};
use steward_tests::registry::Registry;
use steward_tests::tools::{install, run, run_ok};
use steward_tests::{TempDir, example_snapshot, root};

/// Runs the image with podman the way this machine allows: runc (crun
/// refuses hybrid cgroups), cgroupfs, limits within the host's hard ones,
/// the host's network (the test talks to it on 127.0.0.1).
fn podman_run<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "run",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    all.extend_from_slice(args);
    all
}

/// Removes the image (and its containers) when dropped.
struct Image<'a> {
    podman: &'a Path,
    name: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        run(self.podman, &["rmi", "--force", &self.name], &[], &root());
    }
}

#[test]
fn the_image_builds_serves_healthz_and_pushes_to_a_registry() {
    let podman = install("tests/tools/image-tools.sh", &[]);
    let name = format!("localhost/steward-test:{}", std::process::id());
    // The `image-test` profile (nothing optimised): a cold optimised build
    // of wasmtime for a second target would take the test three times as
    // long; the recipe is the same. Its own target directory, so it never
    // waits on the tests' cargo builds; `nice`, so the tests running beside
    // it keep their CPU.
    let target_dir = xtask::target_dir().join("image");
    let build_sh = root().join("deploy/image/build.sh");
    let built = run_ok(
        Path::new("nice"),
        &["-n", "19", build_sh.to_str().unwrap(), &name],
        &[
            ("STEWARD_IMAGE_PROFILE", "image-test"),
            ("STEWARD_IMAGE_TARGET_DIR", target_dir.to_str().unwrap()),
        ],
        &root(),
    );
    assert_eq!(built.trim(), name);
    let image = Image {
        podman: &podman,
        name: name.clone(),
    };

    // FROM scratch: the binary, the policies and the CA roots, nothing else.
    let config = run_ok(
        &podman,
        &["image", "inspect", "--format", "{{json .Config}}", &name],
        &[],
        &root(),
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"][0], "/usr/bin/steward");

    let out = run_ok(
        &podman,
        &podman_run(&["--rm", &name, "--version"]),
        &[],
        &root(),
    );
    assert_eq!(out.trim(), format!("steward {}", env!("CARGO_PKG_VERSION")));

    // Serving: a configuration over the example snapshot with a policy
    // from the image's own directory.
    let dir = TempDir::new("image-serve");
    std::fs::copy(example_snapshot(), dir.path().join("snapshot.yaml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("steward.yaml"),
        format!(
            "cluster: {{snapshot: /etc/steward/snapshot.yaml}}\nserver: {{listen: 127.0.0.1:{port}}}\ncacheDir: /tmp\npolicies:\n- id: pd-quorum\n  hook: scheduler\n  module: /usr/lib/steward/policies/pd_quorum.wasm\n"
        ),
    )
    .unwrap();
    let container = format!("steward-test-{}", std::process::id());
    let volume = format!("{}:/etc/steward:ro", dir.path().display());
    run_ok(
        &podman,
        &podman_run(&[
            "--detach", "--name", &container, "--volume", &volume, "--tmpfs", "/tmp", &name,
        ]),
        &[],
        &root(),
    );
    let healthz = wait_healthz(port);
    let logs = run(&podman, &["logs", &container], &[], &root());
    run(&podman, &["rm", "--force", &container], &[], &root());
    assert!(
        healthz,
        "the container did not serve /healthz on 127.0.0.1:{port}: {}{}",
        logs.stdout, logs.stderr
    );

    // Pushed to a registry, where it is an OCI (or Docker) image manifest.
    let registry = Registry::start();
    let pushed = format!("{}:{}", registry.repo("steward"), env!("CARGO_PKG_VERSION"));
    run_ok(
        &podman,
        &[
            "push",
            "--tls-verify=false",
            &name,
            &format!("docker://{pushed}"),
        ],
        &[],
        &root(),
    );
    let reference: Reference = pushed.parse().unwrap();
    let manifest = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(RegistryClient::new(&[]).manifest_bytes(&reference))
        .unwrap()
        .expect("the registry has the pushed image");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.1).unwrap();
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(3),
        "{manifest}"
    );
    drop(image);
}

/// Whether `GET /healthz` on `port` answers 200 within 30 s.
fn wait_healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
