//! The `steward` command: `serve`, and the one-shot commands that evaluate
//! with the same hooks without a server ([`simulate`], [`bench`], `run`),
//! start policies ([`new`]), test them ([`testing`]) and move them through
//! registries ([`oci`]).

pub mod bench;
pub mod new;
pub mod oci;
pub mod simulate;
pub mod testing;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use steward_cluster::{ClusterCache, load_snapshot};
use steward_hooks::Hooks;
use steward_hooks::config::{ClusterSource, Config, default_cache_dir};
use steward_hooks::extender;
use steward_oci::signature::{self, PublicKey, SigningKey};
use steward_oci::{PushMeta, Reference, RegistryClient};
use steward_runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Kubernetes scheduler, admission and reconcile hooks as sandboxed Wasm policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the hooks (scheduler extender, health, metrics).
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Evaluate one request file against one policy and print the answer.
    Run {
        /// The policy component (.wasm).
        #[arg(long)]
        module: PathBuf,
        /// The policy's settings (JSON).
        #[arg(long, default_value = "{}")]
        settings: String,
        /// Cluster snapshot (multi-document YAML) the policy queries.
        #[arg(long)]
        snapshot: PathBuf,
        /// The request body, as kube-scheduler would send it.
        #[arg(long)]
        request: PathBuf,
        /// Which extender verb the request is for.
        #[arg(long, value_enum, default_value = "filter")]
        verb: Verb,
    },
    /// Place the pending pods of a snapshot with the configured policies and
    /// report where each lands and why other nodes were refused.
    Simulate {
        /// Configuration file; its cluster source must be a snapshot.
        #[arg(long, short)]
        config: PathBuf,
        /// Use this snapshot instead of the configured one.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Time each policy's hooks in process on the snapshot's pending pods:
    /// scheduler filter and prioritize against every node, admission review
    /// of a pod CREATE; prints n, median, p99, max and evaluations/s per
    /// policy and hook.
    Bench {
        /// Configuration file; its cluster source must be a snapshot.
        #[arg(long, short)]
        config: PathBuf,
        /// Use this snapshot instead of the configured one.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// Only this policy (its id in the configuration).
        #[arg(long)]
        policy: Option<String>,
        /// Timed evaluations per policy and hook.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Untimed evaluations before the timed ones.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
    },
    /// Create a policy crate: Cargo.toml, src/lib.rs with a unit test,
    /// tests/suite.yaml and the cargo config that builds and tests it in
    /// Wasm.
    New {
        /// The crate's name (lowercase letters, digits, `-`, `_`).
        name: String,
        /// The hook the policy serves.
        #[arg(long, value_enum)]
        hook: new::Hook,
        /// The directory to create (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Run a fixture suite (cases of request, settings and cluster with the
    /// expected verdict) against a policy; exits 1 if any case fails.
    Test {
        /// The policy component (.wasm).
        policy: PathBuf,
        /// The suite (YAML); see the format in `steward::cli::testing::suite`.
        suite: PathBuf,
    },
    /// Run a policy's unit tests compiled to Wasm, each in its own instance
    /// (cargo's runner for `cargo test --target wasm32-wasip2`).
    TestRunner {
        /// The test binary cargo built (`target/wasm32-wasip2/.../*.wasm`).
        test_binary: PathBuf,
        /// libtest arguments (filters, `--exact`, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        libtest_args: Vec<String>,
    },
    /// Push a policy component to an OCI registry (CNCF Wasm layout) and
    /// print its immutable `registry/repository@sha256:...` reference.
    Push {
        /// The policy component (.wasm).
        file: PathBuf,
        /// Where to: registry/repository:tag (`oci://` optional).
        reference: Reference,
        /// org.opencontainers.image.version (default: the tag).
        #[arg(long)]
        version: Option<String>,
        /// org.opencontainers.image.source, e.g. the repository URL.
        #[arg(long)]
        source: Option<String>,
        /// The config's author field.
        #[arg(long)]
        author: Option<String>,
        /// Further manifest annotations, `key=value` (repeatable).
        #[arg(long = "annotation", short = 'a', value_parser = key_value)]
        annotations: Vec<(String, String)>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a policy component from an OCI registry, verifying its digests.
    Pull {
        /// registry/repository:tag or registry/repository@sha256:...
        reference: Reference,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show a policy's world, WIT package, imports, exports, digest and
    /// (for registry artifacts) annotations.
    Inspect {
        /// A .wasm file, or a registry reference.
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Sign a policy in a registry in cosign's format: a simple-signing
    /// payload naming its manifest digest, signed with an ECDSA P-256 key,
    /// stored under the `sha256-<digest>.sig` tag (`cosign verify --key`
    /// checks it).
    Sign {
        /// registry/repository:tag or registry/repository@sha256:...
        reference: Reference,
        /// The private key, PEM (PKCS#8 `PRIVATE KEY` or `EC PRIVATE KEY`).
        #[arg(long)]
        key: PathBuf,
        /// Annotations signed with the payload, `key=value` (repeatable).
        #[arg(long = "annotation", short = 'a', value_parser = key_value)]
        annotations: Vec<(String, String)>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check that a policy in a registry carries a cosign signature by one of
    /// the given public keys; exits 1 if it does not.
    Verify {
        /// registry/repository:tag or registry/repository@sha256:...
        reference: Reference,
        /// A public key, PEM `PUBLIC KEY` (repeatable: any one may have
        /// signed).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Reach this registry (host:port) over plain HTTP (repeatable; also
    /// STEWARD_INSECURE_REGISTRIES). Loopback registries always are.
    #[arg(long = "insecure", value_name = "REGISTRY")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.insecure)
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[derive(Clone, Copy, ValueEnum)]
enum Verb {
    Filter,
    Prioritize,
    Preempt,
}

impl From<Verb> for extender::Verb {
    fn from(v: Verb) -> extender::Verb {
        match v {
            Verb::Filter => extender::Verb::Filter,
            Verb::Prioritize => extender::Verb::Prioritize,
            Verb::Preempt => extender::Verb::Preempt,
        }
    }
}

/// The `steward` binary's entry point.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            tokio::runtime::Runtime::new()?.block_on(crate::server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            module,
            settings,
            snapshot,
            request,
            verb,
        } => {
            let settings: serde_json::Value =
                serde_json::from_str(&settings).context("--settings is not JSON")?;
            let config = Config::single_policy(snapshot, module, settings);
            let extender = offline_hooks(&config)?.extender;
            let body = std::fs::read(&request)
                .with_context(|| format!("cannot read request {}", request.display()))?;
            let answer = extender
                .serve(verb.into(), &body)
                .with_context(|| format!("request {}", request.display()))?;
            let answer: serde_json::Value = serde_json::from_slice(&answer)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            config,
            snapshot,
            json,
        } => {
            let config = snapshot_config(&config, snapshot)?;
            let extender = offline_hooks(&config)?.extender;
            let placements = simulate::run(&extender);
            if json {
                println!("{}", serde_json::to_string_pretty(&placements)?);
            } else {
                print!("{}", simulate::render(&placements));
            }
            let all_placed = placements.iter().all(|p| p.node.is_some());
            Ok(if all_placed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Bench {
            config,
            snapshot,
            policy,
            requests,
            warmup,
        } => {
            let config = snapshot_config(&config, snapshot)?;
            let hooks = offline_hooks(&config)?;
            let options = bench::Options {
                policy,
                requests,
                warmup,
            };
            let timings = bench::run(&hooks, &config, &snapshot_path(&config)?, &options)?;
            print!("{}", bench::render(&timings));
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, hook, path } => {
            print!("{}", new::create(&name, hook, path.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { policy, suite } => {
            let runtime = Runtime::new(default_cache_dir())?;
            let reports = testing::suite::run(&runtime, &policy, &suite)?;
            print!("{}", testing::suite::render(&suite, &reports));
            Ok(if reports.iter().all(|r| r.differences.is_empty()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::TestRunner {
            test_binary,
            libtest_args,
        } => {
            let runtime = Runtime::new(None)?;
            let code = testing::libtest::run(&runtime, &test_binary, &libtest_args)?;
            Ok(ExitCode::from(code))
        }
        Command::Push {
            file,
            reference,
            version,
            source,
            author,
            annotations,
            registry,
        } => {
            let runtime = Runtime::new(default_cache_dir())?;
            let meta = PushMeta {
                title: None,
                author,
                version,
                source,
                annotations: annotations.into_iter().collect(),
            };
            let pushed = tokio::runtime::Runtime::new()?.block_on(oci::push(
                &runtime,
                &registry.client(),
                &file,
                &reference,
                meta,
            ))?;
            println!("{pushed}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull {
            reference,
            output,
            registry,
        } => {
            let pulled = tokio::runtime::Runtime::new()?.block_on(oci::pull(
                &registry.client(),
                &reference,
                &output,
            ))?;
            println!("{pulled}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            target,
            json,
            registry,
        } => {
            let runtime = Runtime::new(default_cache_dir())?;
            let inspection = tokio::runtime::Runtime::new()?.block_on(oci::inspect(
                &runtime,
                &registry.client(),
                &target,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inspection)?);
            } else {
                print!("{}", inspection.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign {
            reference,
            key,
            annotations,
            registry,
        } => {
            let key = SigningKey::load(&key)?;
            let signed = tokio::runtime::Runtime::new()?.block_on(signature::sign(
                &registry.client(),
                &reference,
                &key,
                annotations.into_iter().collect(),
            ))?;
            println!("{} signed: {}", signed.artifact, signed.signature);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            reference,
            keys,
            registry,
        } => verify(&reference, &keys, &registry.client()),
    }
}

/// Verifies `reference` against `keys`; prints what verified it.
fn verify(reference: &Reference, keys: &[PathBuf], client: &RegistryClient) -> Result<ExitCode> {
    let keys = keys
        .iter()
        .map(|k| PublicKey::load(k))
        .collect::<Result<Vec<_>>>()?;
    let verified = tokio::runtime::Runtime::new()?.block_on(async {
        let digest = client.resolve(reference).await?;
        signature::verify(client, reference, &digest, &keys).await
    });
    match verified {
        Ok(v) => {
            println!("{}: signed by {}", v.artifact, v.key);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.chain().any(|c| c.is::<signature::Unverified>()) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}

/// The configuration at `path`, its snapshot replaced by `snapshot` if given.
fn snapshot_config(path: &std::path::Path, snapshot: Option<PathBuf>) -> Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(s) = snapshot {
        config.cluster = ClusterSource::Snapshot(std::path::absolute(s)?);
    }
    Ok(config)
}

/// The configured snapshot file.
fn snapshot_path(config: &Config) -> Result<PathBuf> {
    match &config.cluster {
        ClusterSource::Snapshot(path) => Ok(config.resolve(path)),
        ClusterSource::Kubeconfig { .. } => bail!(
            "this command needs a snapshot as its cluster source: set cluster.snapshot in the \
             configuration or pass --snapshot"
        ),
    }
}

/// The hooks over the configured snapshot, without a server.
fn offline_hooks(config: &Config) -> Result<Hooks> {
    let snapshot = snapshot_path(config)?;
    let cluster = Arc::new(ClusterCache::default());
    load_snapshot(&cluster, &snapshot)?;
    tokio::runtime::Runtime::new()?.block_on(Hooks::offline(config, cluster))
}
