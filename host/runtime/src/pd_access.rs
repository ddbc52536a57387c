//! The `pd` import: guests read PD through a [`PdReader`] the host gives.
//!
//! Evaluations run synchronously, so a PD read blocks the evaluating
//! thread. Each read may take no longer than what is left of the policy's
//! deadline: the epoch deadline counts wall time, host calls included, so a
//! read may never outlive it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_wit::pd_common::steward::policy::{actions, pd};
use steward_wit::{Member, PdCluster, Store};
use wasmtime::component::{HasSelf, Linker};

use crate::sandbox::GuestState;

/// How the host reads PD for a guest. Each call blocks its thread for at
/// most `within` and answers an error a person can act on.
pub trait PdReader: Send + Sync {
    fn stores(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<Store>, String>;
    fn members(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<Member>, String>;
    fn leader(&self, cluster: &PdCluster, within: Duration) -> Result<String, String>;
    fn schedulers(&self, cluster: &PdCluster, within: Duration) -> Result<Vec<String>, String>;
}

/// What one evaluation may ask PD, and until when.
#[derive(Clone)]
pub struct PdAccess {
    pub reader: Arc<dyn PdReader>,
    pub deadline_at: Instant,
}

impl PdAccess {
    /// Runs `read` with the time left before the deadline.
    fn call<T>(
        &self,
        read: impl FnOnce(&dyn PdReader, Duration) -> Result<T, String>,
    ) -> Result<T, String> {
        let left = self.deadline_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no time is left before the policy's deadline to ask PD".into());
        }
        read(&*self.reader, left)
    }
}

/// Adds the `pd` and `actions` imports to a linker.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    pd::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    actions::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

impl GuestState {
    fn pd(&self) -> Result<&PdAccess, String> {
        self.pd
            .as_ref()
            .ok_or_else(|| "this policy is not granted PD access".to_string())
    }
}

impl actions::Host for GuestState {}

impl pd::Host for GuestState {
    fn stores(&mut self, cluster: PdCluster) -> Result<Vec<Store>, String> {
        self.pd()?.call(|pd, within| pd.stores(&cluster, within))
    }
    fn members(&mut self, cluster: PdCluster) -> Result<Vec<Member>, String> {
        self.pd()?.call(|pd, within| pd.members(&cluster, within))
    }
    fn leader(&mut self, cluster: PdCluster) -> Result<String, String> {
        self.pd()?.call(|pd, within| pd.leader(&cluster, within))
    }
    fn schedulers(&mut self, cluster: PdCluster) -> Result<Vec<String>, String> {
        self.pd()?
            .call(|pd, within| pd.schedulers(&cluster, within))
    }
}
