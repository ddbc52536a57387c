//! The Wasm runtime: one wasmtime `Engine` with the pooling allocator and
//! epoch interruption, a disk cache of precompiled components, and the
//! sandbox each evaluation runs in, one module per world.
//!
//! It knows nothing of Kubernetes, HTTP or async runtimes: a guest's cluster
//! queries go to a [`ClusterImport`] and its PD reads to a [`PdReader`],
//! both given by the host.

mod admission;
mod cache;
mod command;
mod evaluator;
mod pd_access;
mod reconcile;
mod sandbox;
mod scheduler;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use admission::AdmissionPolicy;
pub use command::{CommandComponent, CommandExit, CommandRun};
pub use pd_access::PdReader;
pub use reconcile::ReconcilePolicy;
pub use sandbox::{ClusterImport, EvalError, Limits, NoCluster};
pub use scheduler::SchedulerPolicy;
use steward_wit::WIT_PACKAGE;

/// How often the epoch advances; deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The largest memory cap a policy may ask for; the pooling allocator
/// reserves address space for it per slot.
pub const MAX_MEMORY_MIB: u64 = 1024;

/// Linear memory the built-in guests start with (`--initial-memory` in
/// `.cargo/config.toml`); their allocator serves a call from it.
const GUEST_INITIAL_MEMORY: usize = 2 << 20;

/// Instances that may run at once; evaluations beyond it wait.
pub const MAX_CONCURRENT_INSTANCES: u32 = 128;

/// The hook a component implements, read from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Scheduler,
    Admission,
    Reconcile,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Scheduler => "scheduler",
            World::Admission => "admission",
            World::Reconcile => "reconcile",
        }
    }
}

/// A component's imports and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInterface {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// The shared engine and component cache.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    _ticker: Arc<EpochTicker>,
}

impl Runtime {
    /// `cache_dir`: where precompiled components live (None: no disk cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_CONCURRENT_INSTANCES * 2)
            .total_core_instances(MAX_CONCURRENT_INSTANCES * 8)
            .total_memories(MAX_CONCURRENT_INSTANCES * 4)
            .total_tables(MAX_CONCURRENT_INSTANCES * 8)
            .total_stacks(MAX_CONCURRENT_INSTANCES * 2)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // A fresh instance per evaluation would otherwise page-fault on
            // every page of linear memory it touches: keep the guests'
            // initial memory (2 MiB, see `.cargo/config.toml`) resident and
            // reset it on reuse, and the tables likewise (no `madvise`).
            .linear_memory_keep_resident(GUEST_INITIAL_MEMORY)
            .table_keep_resident(64 << 10)
            // Reset only the pages the last instance wrote (Linux 6.7+
            // PAGEMAP_SCAN), not the whole resident window.
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("failed to create the Wasm engine")?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            cache_dir,
            _ticker: Arc::new(ticker),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `wasm` (or loads it from the precompiled cache) and checks it
    /// is a component built against the WIT package this host serves.
    pub fn load(&self, wasm: &[u8]) -> Result<(Component, World)> {
        if !wasm.starts_with(b"\0asm") {
            bail!("not a WebAssembly file (no \\0asm header)");
        }
        if wasm.get(4..8) != Some(&[0x0d, 0x00, 0x01, 0x00]) {
            bail!(
                "a core Wasm module, not a component: build the policy for wasm32-wasip2 \
                 (cargo build --target wasm32-wasip2)"
            );
        }
        let component = cache::load(&self.engine, self.cache_dir.as_deref(), wasm)?;
        let world = self.check_contract(&component)?;
        Ok((component, world))
    }

    /// What `component` imports and exports, by name.
    pub fn interface(&self, component: &Component) -> ComponentInterface {
        let ty = component.component_type();
        ComponentInterface {
            imports: ty
                .imports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
            exports: ty
                .exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
        }
    }

    /// Which world the component implements, refusing foreign WIT versions
    /// and capabilities Steward does not grant.
    fn check_contract(&self, component: &Component) -> Result<World> {
        let ty = component.component_type();
        let imports: Vec<&str> = ty.imports(&self.engine).map(|(n, _)| n).collect();
        check_imports(&imports)?;
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let has = |n: &str| exports.iter().any(|e| e == n);
        let world = if has("filter") && has("prioritize") {
            World::Scheduler
        } else if has("review") {
            World::Admission
        } else if has("reconcile") {
            World::Reconcile
        } else {
            bail!(
                "the component exports none of Steward's worlds (exports: {}); build it against \
                 wit/ with one of the worlds scheduler, admission or reconcile",
                exports.join(", ")
            );
        };
        if !has("validate-settings") {
            bail!("the component does not export validate-settings");
        }
        Ok(world)
    }
}

/// Refuses imports from another version of Steward's WIT package, and
/// capabilities Steward does not grant (naming every one of them).
fn check_imports(names: &[&str]) -> Result<()> {
    for name in names {
        if let Some(rest) = name.strip_prefix("steward:policy/") {
            let version = rest.split_once('@').map_or("(none)", |(_, v)| v);
            if format!("steward:policy@{version}") != WIT_PACKAGE {
                bail!(
                    "the component was built against steward:policy@{version}, but this host \
                     serves {WIT_PACKAGE}; rebuild the policy with the matching SDK"
                );
            }
        }
    }
    let ungranted: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with("steward:policy/") && !sandbox::granted_import(n))
        .collect();
    if !ungranted.is_empty() {
        bail!(
            "the component imports {}, which Steward does not grant to policies (no \
             filesystem, network or clock access); remove that use from the policy",
            ungranted.join(", ")
        );
    }
    Ok(())
}

/// Advances the engine epoch every [`EPOCH_TICK`] so deadlines fire.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("steward-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::check_imports;

    fn check_import(name: &str) -> anyhow::Result<()> {
        check_imports(&[name])
    }

    #[test]
    fn imports_of_this_wit_version_and_std_plumbing_pass() {
        for name in [
            "steward:policy/cluster@0.2.0",
            "steward:policy/log@0.2.0",
            "wasi:cli/stderr@0.2.6",
            "wasi:io/streams@0.2.6",
            "wasi:random/insecure-seed@0.2.6",
        ] {
            assert!(check_import(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn another_wit_version_is_refused_naming_both() {
        let e = check_import("steward:policy/cluster@0.1.0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "built against steward:policy@0.1.0, but this host serves steward:policy@0.2.0"
            ),
            "{e}"
        );
    }

    #[test]
    fn ungranted_capabilities_are_refused() {
        for name in [
            "wasi:sockets/tcp@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
        ] {
            let e = check_import(name).unwrap_err().to_string();
            assert!(e.contains("does not grant"), "{name}: {e}");
        }
    }
}
