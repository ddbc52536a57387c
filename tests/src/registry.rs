//! A real OCI registry for tests: Debian's `docker-registry` (distribution
//! 2.8), installed by `tests/registry/docker-registry.sh`, started on a free
//! 127.0.0.1 port with its storage in a temp dir, killed by PID on drop.
//! Also the ORAS Python SDK (`tests/registry/oras.sh`) for interop tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::tools::install;

/// A running registry; stopped (by PID) and its storage removed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> Registry {
        Registry::start_with(|_| String::new())
    }

    /// A registry that asks for `user`/`password` (HTTP Basic, htpasswd).
    pub fn start_with_user(user: &str, password: &str) -> Registry {
        Registry::start_with(|dir| {
            let hash = oras(
                "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(5)).decode())",
                &[user, password],
                dir,
            );
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: steward-tests\n    path: {}\n",
                htpasswd.display()
            )
        })
    }

    /// `prepare` writes what the registry needs into its dir and returns
    /// extra config lines.
    fn start_with(prepare: impl FnOnce(&Path) -> String) -> Registry {
        let bin = install("tests/registry/docker-registry.sh", &[]);
        let dir = TempDir::new("registry");
        let extra_config = prepare(dir.path());
        let addr = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra_config}",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let registry = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not listen on {addr} within 15 s; log: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:<port>/<repository>`.
    pub fn repo(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    /// The file the registry keeps a blob in (to corrupt it in tests).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry now (it is unreachable afterwards).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The Python of the venv holding the ORAS SDK.
pub fn oras_python() -> PathBuf {
    install("tests/registry/oras.sh", &[])
}

/// Runs `script` with the ORAS venv's Python and `args`; returns stdout,
/// failing the test with stderr when it fails.
pub fn oras(script: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(oras_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "ORAS script failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
