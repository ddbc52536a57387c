//! The sandbox one evaluation runs in: a fresh store with a deadline, a
//! memory cap, no WASI capabilities, and read-only cluster queries.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::EPOCH_TICK;
use super::bindings::common::steward::policy::{cluster, log, types};
use super::bindings::{
    CapacitySource, Claim, LocalVolume, LogLevel, Node, NodeDisks, NodeSelectorTerm, Pod,
    PoolColumns, SelectorRequirement, StorageClass, Volume, Workload,
};
use crate::cluster::ClusterQuery;

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
    cluster: ClusterQuery,
    policy_id: Arc<str>,
    /// PD reads for policies whose world imports `pd`; None refuses them.
    pub(super) pd: Option<super::PdAccess>,
}

impl GuestState {
    /// A policy's state: no WASI capabilities, output captured for errors.
    fn new(policy_id: Arc<str>, cluster: ClusterQuery, limits: Limits) -> GuestState {
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
        cluster: ClusterQuery,
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
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    cluster::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// A fresh store for one evaluation, with its deadline armed.
pub fn store(
    engine: &Engine,
    policy_id: Arc<str>,
    cluster: ClusterQuery,
    limits: Limits,
) -> Store<GuestState> {
    armed(engine, GuestState::new(policy_id, cluster, limits), limits)
}

/// A fresh store for a policy's own unit tests (`steward test-runner`):
/// unlike a policy, libtest gets the WASI context it needs (arguments,
/// environment, working directory). The runner shows the guest's output
/// itself, so [`classify`] does not quote it.
pub fn test_store(
    engine: &Engine,
    cluster: ClusterQuery,
    limits: Limits,
    wasi: WasiCtx,
) -> Store<GuestState> {
    let unquoted = MemoryOutputPipe::new(0);
    let state = GuestState::with_wasi("test".into(), cluster, limits, wasi, unquoted);
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

impl cluster::Host for GuestState {
    fn list_pods(&mut self, namespace: String, selector: Vec<SelectorRequirement>) -> Vec<Pod> {
        self.cluster.list_pods(&namespace, &selector)
    }
    fn get_pod(&mut self, namespace: String, name: String) -> Option<Pod> {
        self.cluster.get_pod(&namespace, &name)
    }
    fn list_nodes(&mut self, selector: Vec<SelectorRequirement>) -> Vec<Node> {
        self.cluster.list_nodes(&selector)
    }
    fn get_node(&mut self, name: String) -> Option<Node> {
        self.cluster.get_node(&name)
    }
    fn get_claim(&mut self, namespace: String, name: String) -> Option<Claim> {
        self.cluster.get_claim(&namespace, &name)
    }
    fn get_volume(&mut self, name: String) -> Option<Volume> {
        self.cluster.get_volume(&name)
    }
    fn get_storage_class(&mut self, name: String) -> Option<StorageClass> {
        self.cluster.get_storage_class(&name)
    }
    fn get_workload(&mut self, kind: String, namespace: String, name: String) -> Option<Workload> {
        self.cluster.get_workload(&kind, &namespace, &name)
    }
    fn node_name(&mut self, id: u32) -> Option<String> {
        self.cluster.node_name(id)
    }
    fn node_names(&mut self, ids: Vec<u32>) -> Vec<Option<String>> {
        self.cluster.node_names(&ids)
    }
    fn label_text(&mut self, key: String, id: u32) -> Option<String> {
        self.cluster.label_text(&key, id)
    }
    fn label_id(&mut self, key: String, text: String) -> Option<u32> {
        self.cluster.label_id(&key, &text)
    }
    fn node_label_id(&mut self, node: String, key: String) -> Option<u32> {
        self.cluster.node_label_id(&node, &key)
    }
    fn list_storage_classes(&mut self) -> Vec<StorageClass> {
        self.cluster.list_storage_classes()
    }
    fn get_local_volume(&mut self, name: String) -> Option<LocalVolume> {
        self.cluster.get_local_volume(&name)
    }
    fn node_id(&mut self, name: String) -> Option<u32> {
        self.cluster.node_id(&name)
    }
    fn match_node_affinity(&mut self, terms: Vec<NodeSelectorTerm>, nodes: Vec<u32>) -> Vec<bool> {
        self.cluster.match_node_affinity(&terms, &nodes)
    }
    fn storage_nodes(&mut self, source: CapacitySource) -> Vec<u32> {
        self.cluster.storage_nodes(source)
    }
    fn pool_capacities(
        &mut self,
        source: CapacitySource,
        pool: String,
        storage_classes: Vec<String>,
        except_pod: String,
        nodes: Vec<u32>,
    ) -> PoolColumns {
        self.cluster
            .pool_capacities(source, &pool, &storage_classes, &except_pod, &nodes)
    }
    fn pool_problem(&mut self, source: CapacitySource, pool: String, node: u32) -> Option<String> {
        self.cluster.pool_problem(source, &pool, node)
    }
    fn free_disks(
        &mut self,
        disk_type: String,
        storage_classes: Vec<String>,
        except_pod: String,
        nodes: Vec<u32>,
    ) -> Vec<NodeDisks> {
        self.cluster
            .free_disks(&disk_type, &storage_classes, &except_pod, &nodes)
    }
}
