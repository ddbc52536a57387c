//! The `pd` import: guests read PD through the host's [`PdClient`].
//!
//! Evaluations run synchronously on a blocking thread, so a PD read blocks
//! that thread on the async client. Each read's timeout is the policy's PD
//! timeout cut to what is left of its deadline: the epoch deadline counts
//! wall time, host calls included, so a read may never outlive it.

use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};

use super::bindings::pd_common::steward::policy::{actions, pd};
use super::bindings::{Member, PdCluster, Store};
use super::sandbox::GuestState;
use crate::pd::{PdClient, PdEndpoint};

/// What one evaluation may ask PD, and until when.
#[derive(Clone)]
pub struct PdAccess {
    pub client: PdClient,
    pub endpoint: PdEndpoint,
    pub deadline_at: Instant,
}

impl PdAccess {
    fn call<T, F>(
        &self,
        cluster: &PdCluster,
        read: impl FnOnce(PdClient, String, Duration) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<T, String>>,
    {
        let left = self.deadline_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no time is left before the policy's deadline to ask PD".into());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            "PD reads need the host's async runtime, which is not running".to_string()
        })?;
        let base = self.endpoint.base(cluster);
        handle.block_on(read(
            self.client.clone(),
            base,
            self.endpoint.timeout.min(left),
        ))
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
        self.pd()?.call(
            &cluster,
            |c, base, t| async move { c.stores(&base, t).await },
        )
    }
    fn members(&mut self, cluster: PdCluster) -> Result<Vec<Member>, String> {
        self.pd()?.call(
            &cluster,
            |c, base, t| async move { c.members(&base, t).await },
        )
    }
    fn leader(&mut self, cluster: PdCluster) -> Result<String, String> {
        self.pd()?.call(
            &cluster,
            |c, base, t| async move { c.leader(&base, t).await },
        )
    }
    fn schedulers(&mut self, cluster: PdCluster) -> Result<Vec<String>, String> {
        self.pd()?.call(&cluster, |c, base, t| async move {
            c.schedulers(&base, t).await
        })
    }
}
