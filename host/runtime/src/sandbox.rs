//! The sandbox one evaluation runs in: a fresh store with a deadline, a
//! memory cap, no WASI capabilities, and read-only cluster queries answered
//! by the host's [`ClusterImport`].

use std::sync::Arc;
use std::time::Duration;

use steward_wit::common::steward::policy::{cluster, log, types};
use steward_wit::{
    CapacitySource, Claim, LocalVolume, LogLevel, Node, NodeDisks, NodeSelectorTerm, Pod,
    PoolColumns, SelectorRequirement, StorageClass, TidbCluster, Volume, Workload,
};
use wasmtime::component::{HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::EPOCH_TICK;
use crate::pd_access::PdAccess;

/// What answers a guest's `cluster` queries: the host's cluster cache, or
/// [`NoCluster`].
pub trait ClusterImport: cluster::Host + Send + 'static {}

impl<T: cluster::Host + Send + 'static> ClusterImport for T {}

/// Per-policy resource bounds of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
}

/// Guest output kept for error messages (a panic prints its message here).
const CAPTURED_OUTPUT: usize = 16 << 10;

/// Why an evaluation produced no verdict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("did not finish within its {}ms deadline", .0.as_millis())]
    Deadline(Duration),
    #[error("exceeded its memory cap of {} MiB", .0 >> 20)]
    Memory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Guest(String),
    #[error("returned an invalid answer: {0}")]
    Invalid(String),
}

impl EvalError {
    /// Metric label of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::Deadline(_) => "deadline",
            EvalError::Memory(_) => "memory",
            EvalError::Trap(_) => "trap",
            EvalError::Guest(_) => "error",
            EvalError::Invalid(_) => "invalid",
        }
    }
}

/// Imports a policy may have besides Steward's own: the plumbing Rust's std
/// needs for output, exit and hashing. No filesystem, sockets or clocks.
pub fn granted_import(name: &str) -> bool {
    const GRANTED: [&str; 3] = ["wasi:io/", "wasi:cli/", "wasi:random/"];
    GRANTED.iter().any(|p| name.starts_with(p))
}

/// Store data of one evaluation.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    output: MemoryOutputPipe,
    cluster: Box<dyn ClusterImport>,
    policy_id: Arc<str>,
    /// PD reads for policies whose world imports `pd`; None refuses them.
    pub(crate) pd: Option<PdAccess>,
}

impl GuestState {
    /// A policy's state: no WASI capabilities, output captured for errors.
    fn new(policy_id: Arc<str>, cluster: Box<dyn ClusterImport>, limits: Limits) -> GuestState {
        let output = MemoryOutputPipe::new(CAPTURED_OUTPUT);
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        GuestState::with_wasi(policy_id, cluster, limits, wasi, output)
    }

    /// A state with the given WASI context; `output` is what [`classify`]
    /// quotes when the guest traps.
    fn with_wasi(
        policy_id: Arc<str>,
        cluster: Box<dyn ClusterImport>,
        limits: Limits,
        wasi: WasiCtx,
        output: MemoryOutputPipe,
    ) -> GuestState {
        GuestState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                max: limits.memory_bytes,
                hit: false,
            },
            output,
            cluster,
            policy_id,
            pd: None,
        }
    }
}

/// Refuses memory growth past the cap and remembers that it did, so the
/// resulting guest abort is reported as what it is.
struct MemoryCap {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A linker with every import Steward grants, for any world.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::<GuestState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    cluster::add_to_linker::<_, ClusterData>(&mut linker, |s| &mut *s.cluster)?;
    log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// A fresh store for one evaluation, with its deadline armed.
pub fn store(
    engine: &Engine,
    policy_id: Arc<str>,
    cluster: impl ClusterImport,
    limits: Limits,
) -> Store<GuestState> {
    let state = GuestState::new(policy_id, Box::new(cluster), limits);
    armed(engine, state, limits)
}

/// A fresh store for a policy's own unit tests (`steward test-runner`):
/// unlike a policy, libtest gets the WASI context it needs (arguments,
/// environment, working directory). The runner shows the guest's output
/// itself, so [`classify`] does not quote it.
pub fn test_store(
    engine: &Engine,
    cluster: impl ClusterImport,
    limits: Limits,
    wasi: WasiCtx,
) -> Store<GuestState> {
    let unquoted = MemoryOutputPipe::new(0);
    let state = GuestState::with_wasi("test".into(), Box::new(cluster), limits, wasi, unquoted);
    armed(engine, state, limits)
}

fn armed(engine: &Engine, state: GuestState, limits: Limits) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    let ticks = limits.deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64;
    store.set_epoch_deadline(ticks.max(1));
    store.epoch_deadline_trap();
    store
}

/// Turns a wasmtime failure into the reason a person can act on.
pub fn classify(err: wasmtime::Error, store: &Store<GuestState>, limits: Limits) -> EvalError {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return EvalError::Deadline(limits.deadline);
    }
    if store.data().memory.hit {
        return EvalError::Memory(limits.memory_bytes);
    }
    let said = String::from_utf8_lossy(&store.data().output.contents())
        .trim()
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    let trap = err
        .downcast_ref::<Trap>()
        .map(|t| t.to_string())
        .unwrap_or_else(|| format!("{err:#}"));
    if said.is_empty() {
        EvalError::Trap(trap)
    } else {
        EvalError::Trap(format!("{trap} (guest output: {said})"))
    }
}

impl types::Host for GuestState {}

impl log::Host for GuestState {
    fn emit(&mut self, level: LogLevel, message: String) {
        let policy = &*self.policy_id;
        match level {
            LogLevel::Debug => tracing::debug!(policy, "{message}"),
            LogLevel::Info => tracing::info!(policy, "{message}"),
            LogLevel::Warn => tracing::warn!(policy, "{message}"),
            LogLevel::Error => tracing::error!(policy, "{message}"),
        }
    }
}

/// Projects the store's data onto its [`ClusterImport`] for the linker.
struct ClusterData;

impl HasData for ClusterData {
    type Data<'a> = &'a mut dyn ClusterImport;
}

/// A cluster with nothing in it: what `validate-settings` and a policy's
/// own unit tests query.
pub struct NoCluster;

impl cluster::Host for NoCluster {
    fn list_pods(&mut self, _: String, _: Vec<SelectorRequirement>) -> Vec<Pod> {
        Vec::new()
    }
    fn get_pod(&mut self, _: String, _: String) -> Option<Pod> {
        None
    }
    fn list_nodes(&mut self, _: Vec<SelectorRequirement>) -> Vec<Node> {
        Vec::new()
    }
    fn get_node(&mut self, _: String) -> Option<Node> {
        None
    }
    fn get_claim(&mut self, _: String, _: String) -> Option<Claim> {
        None
    }
    fn get_volume(&mut self, _: String) -> Option<Volume> {
        None
    }
    fn get_storage_class(&mut self, _: String) -> Option<StorageClass> {
        None
    }
    fn get_workload(&mut self, _: String, _: String, _: String) -> Option<Workload> {
        None
    }
    fn get_tidb_cluster(&mut self, _: String, _: String) -> Option<TidbCluster> {
        None
    }
    fn node_label_ids(&mut self, _: String, nodes: Vec<u32>) -> Vec<u32> {
        vec![u32::MAX; nodes.len()]
    }
    fn node_name(&mut self, _: u32) -> Option<String> {
        None
    }
    fn node_names(&mut self, ids: Vec<u32>) -> Vec<Option<String>> {
        vec![None; ids.len()]
    }
    fn label_text(&mut self, _: String, _: u32) -> Option<String> {
        None
    }
    fn label_id(&mut self, _: String, _: String) -> Option<u32> {
        None
    }
    fn node_label_id(&mut self, _: String, _: String) -> Option<u32> {
        None
    }
    fn list_storage_classes(&mut self) -> Vec<StorageClass> {
        Vec::new()
    }
    fn get_local_volume(&mut self, _: String) -> Option<LocalVolume> {
        None
    }
    fn node_id(&mut self, _: String) -> Option<u32> {
        None
    }
    fn match_node_affinity(&mut self, _: Vec<NodeSelectorTerm>, nodes: Vec<u32>) -> Vec<bool> {
        vec![false; nodes.len()]
    }
    fn storage_nodes(&mut self, _: CapacitySource) -> Vec<u32> {
        Vec::new()
    }
    fn pool_capacities(
        &mut self,
        _: CapacitySource,
        _: String,
        _: Vec<String>,
        _: String,
        _: Vec<u32>,
    ) -> PoolColumns {
        PoolColumns {
            state: Vec::new(),
            schedulable: Vec::new(),
            free_bytes: Vec::new(),
            total_bytes: Vec::new(),
            free_volumes: Vec::new(),
            reserved_bytes: Vec::new(),
            reserved_volumes: Vec::new(),
        }
    }
    fn pool_problem(&mut self, _: CapacitySource, _: String, _: u32) -> Option<String> {
        None
    }
    fn free_disks(&mut self, _: String, _: Vec<String>, _: String, _: Vec<u32>) -> Vec<NodeDisks> {
        Vec::new()
    }
}
