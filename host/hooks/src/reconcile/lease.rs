//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it: a replica takes the Lease when it is free or
//! its holder has not renewed it within the lease duration, renews it every
//! retry period, and steps down when it could not renew within the renew
//! deadline. Every write carries the `resourceVersion` it read, so two
//! replicas racing for the Lease cannot both win.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use super::Clock;
use crate::config::ReconcileConfig;

/// The fields of a Lease leader election uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub duration_seconds: i32,
    pub acquire_ms: i64,
    pub renew_ms: i64,
    pub transitions: i32,
    /// The version read; empty for a Lease not yet created.
    pub resource_version: String,
}

/// Why a Lease write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote the Lease since it was read.
    #[error("the Lease changed since it was read")]
    Conflict,
    #[error("{0}")]
    Api(String),
}

/// Where the Lease lives: the API server, or memory in tests.
pub trait LeaseStore: Send + Sync + 'static {
    fn get(&self) -> impl Future<Output = Result<Option<LeaseRecord>, LeaseError>> + Send;
    /// Creates the Lease; [`LeaseError::Conflict`] if it exists.
    fn create(
        &self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, LeaseError>> + Send;
    /// Replaces the Lease if it still has `record.resource_version`.
    fn replace(
        &self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, LeaseError>> + Send;
}

/// Timing of the election (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Timing {
    pub fn from_config(c: &ReconcileConfig) -> Timing {
        Timing {
            lease_duration: Duration::from_secs(c.lease_duration_seconds),
            renew_deadline: Duration::from_secs(c.renew_deadline_seconds),
            retry_period: Duration::from_secs(c.retry_period_seconds),
        }
    }
}

/// One replica's side of the election.
pub struct Elector<S> {
    store: S,
    identity: String,
    timing: Timing,
    clock: Arc<dyn Clock>,
}

impl<S: LeaseStore> Elector<S> {
    pub fn new(store: S, identity: String, timing: Timing, clock: Arc<dyn Clock>) -> Elector<S> {
        Elector {
            store,
            identity,
            timing,
            clock,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease; true when this replica holds it now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let now = self.clock.now_ms();
        let duration_seconds = self.timing.lease_duration.as_secs() as i32;
        let Some(current) = self.store.get().await? else {
            let record = LeaseRecord {
                holder: Some(self.identity.clone()),
                duration_seconds,
                acquire_ms: now,
                renew_ms: now,
                transitions: 0,
                resource_version: String::new(),
            };
            return match self.store.create(&record).await {
                Ok(_) => Ok(true),
                Err(LeaseError::Conflict) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mine = current.holder.as_deref() == Some(self.identity.as_str());
        let held = current.holder.as_deref().is_some_and(|h| !h.is_empty());
        let expires = current.renew_ms + i64::from(current.duration_seconds) * 1000;
        if held && !mine && now < expires {
            return Ok(false);
        }
        let record = LeaseRecord {
            holder: Some(self.identity.clone()),
            duration_seconds,
            acquire_ms: if mine { current.acquire_ms } else { now },
            renew_ms: now,
            transitions: if mine {
                current.transitions
            } else {
                current.transitions + 1
            },
            resource_version: current.resource_version,
        };
        match self.store.replace(&record).await {
            Ok(_) => Ok(true),
            Err(LeaseError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (if held) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(current) = self.store.get().await? else {
            return Ok(());
        };
        if current.holder.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let record = LeaseRecord {
            holder: None,
            duration_seconds: 1,
            renew_ms: self.clock.now_ms(),
            ..current
        };
        self.store.replace(&record).await.map(|_| ())
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "became the reconcile leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("taking the reconcile Lease failed: {e}"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period; returns when a renewal did not succeed
    /// within the renew deadline (leadership is lost).
    pub async fn keep(&self) {
        loop {
            let renewed = tokio::time::timeout(self.timing.renew_deadline, async {
                loop {
                    match self.try_acquire_or_renew().await {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(e) => tracing::warn!("renewing the reconcile Lease failed: {e}"),
                    }
                    tokio::time::sleep(self.timing.retry_period).await;
                }
            })
            .await;
            if renewed.is_err() {
                tracing::warn!(identity = %self.identity, "lost the reconcile Lease");
                return;
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Runs `work` for as long as this replica leads, again after every
    /// re-election; never returns.
    pub async fn lead<F, W>(&self, mut work: W)
    where
        W: FnMut() -> F,
        F: Future<Output = ()>,
    {
        loop {
            self.acquire().await;
            tokio::select! {
                () = work() => {
                    if let Err(e) = self.release().await {
                        tracing::warn!("releasing the reconcile Lease failed: {e}");
                    }
                }
                () = self.keep() => {}
            }
        }
    }
}

/// The Lease object on the API server.
pub struct KubeLease {
    api: Api<Lease>,
    name: String,
}

impl KubeLease {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> KubeLease {
        KubeLease {
            api: Api::namespaced(client, namespace),
            name: name.into(),
        }
    }

    fn object(&self, r: &LeaseRecord) -> Lease {
        let time = |ms: i64| {
            k8s_openapi::jiff::Timestamp::from_millisecond(ms)
                .ok()
                .map(MicroTime)
        };
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: Some(r.resource_version.clone()).filter(|v| !v.is_empty()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: r.holder.clone(),
                lease_duration_seconds: Some(r.duration_seconds),
                acquire_time: time(r.acquire_ms),
                renew_time: time(r.renew_ms),
                lease_transitions: Some(r.transitions),
                ..Default::default()
            }),
        }
    }
}

fn record(lease: Lease) -> LeaseRecord {
    let spec = lease.spec.unwrap_or_default();
    let ms = |t: Option<MicroTime>| t.map_or(0, |t| t.0.as_millisecond());
    LeaseRecord {
        holder: spec.holder_identity,
        duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_ms: ms(spec.acquire_time),
        renew_ms: ms(spec.renew_time),
        transitions: spec.lease_transitions.unwrap_or(0),
        resource_version: lease.metadata.resource_version.unwrap_or_default(),
    }
}

fn api_error(e: kube::Error, what: &str) -> LeaseError {
    match e {
        kube::Error::Api(s) if s.code == 409 => LeaseError::Conflict,
        other => LeaseError::Api(format!("{what} the reconcile Lease failed: {other}")),
    }
}

impl LeaseStore for KubeLease {
    async fn get(&self) -> Result<Option<LeaseRecord>, LeaseError> {
        self.api
            .get_opt(&self.name)
            .await
            .map(|l| l.map(record))
            .map_err(|e| api_error(e, "reading"))
    }

    async fn create(&self, r: &LeaseRecord) -> Result<LeaseRecord, LeaseError> {
        self.api
            .create(&PostParams::default(), &self.object(r))
            .await
            .map(record)
            .map_err(|e| api_error(e, "creating"))
    }

    async fn replace(&self, r: &LeaseRecord) -> Result<LeaseRecord, LeaseError> {
        self.api
            .replace(&self.name, &PostParams::default(), &self.object(r))
            .await
            .map(record)
            .map_err(|e| api_error(e, "updating"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use parking_lot::Mutex;

    use super::*;

    /// A Lease in memory with the API server's optimistic concurrency.
    #[derive(Clone, Default)]
    struct MemoryLease(Arc<Mutex<Option<LeaseRecord>>>);

    impl LeaseStore for MemoryLease {
        async fn get(&self) -> Result<Option<LeaseRecord>, LeaseError> {
            Ok(self.0.lock().clone())
        }
        async fn create(&self, r: &LeaseRecord) -> Result<LeaseRecord, LeaseError> {
            let mut slot = self.0.lock();
            if slot.is_some() {
                return Err(LeaseError::Conflict);
            }
            let stored = LeaseRecord {
                resource_version: "1".into(),
                ..r.clone()
            };
            *slot = Some(stored.clone());
            Ok(stored)
        }
        async fn replace(&self, r: &LeaseRecord) -> Result<LeaseRecord, LeaseError> {
            let mut slot = self.0.lock();
            let current = slot.as_ref().ok_or(LeaseError::Api("no Lease".into()))?;
            if current.resource_version != r.resource_version {
                return Err(LeaseError::Conflict);
            }
            let next: u64 = current.resource_version.parse::<u64>().unwrap() + 1;
            let stored = LeaseRecord {
                resource_version: next.to_string(),
                ..r.clone()
            };
            *slot = Some(stored.clone());
            Ok(stored)
        }
    }

    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn timing() -> Timing {
        Timing::from_config(&ReconcileConfig::default())
    }

    fn elector(store: &MemoryLease, id: &str, clock: &Arc<ManualClock>) -> Elector<MemoryLease> {
        Elector::new(store.clone(), id.into(), timing(), clock.clone())
    }

    #[tokio::test]
    async fn exactly_one_replica_holds_the_lease_until_it_expires() {
        let store = MemoryLease::default();
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let a = elector(&store, "a", &clock);
        let b = elector(&store, "b", &clock);
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert!(!b.try_acquire_or_renew().await.unwrap());
        // a renews within the duration: b stays out.
        clock.0.fetch_add(10_000, Ordering::SeqCst);
        assert!(a.try_acquire_or_renew().await.unwrap());
        clock.0.fetch_add(14_000, Ordering::SeqCst);
        assert!(!b.try_acquire_or_renew().await.unwrap());
        // a stops renewing: after 15 s b takes over, counting a transition.
        clock.0.fetch_add(1_001, Ordering::SeqCst);
        assert!(b.try_acquire_or_renew().await.unwrap());
        assert!(!a.try_acquire_or_renew().await.unwrap());
        let lease = store.0.lock().clone().unwrap();
        assert_eq!(lease.holder.as_deref(), Some("b"));
        assert_eq!(lease.transitions, 1);
        assert_eq!(lease.duration_seconds, 15);
    }

    #[tokio::test]
    async fn a_write_based_on_a_stale_read_loses() {
        let store = MemoryLease::default();
        let clock = Arc::new(ManualClock(AtomicI64::new(0)));
        let a = elector(&store, "a", &clock);
        assert!(a.try_acquire_or_renew().await.unwrap());
        let stale = store.get().await.unwrap().unwrap();
        assert!(a.try_acquire_or_renew().await.unwrap());
        let theft = LeaseRecord {
            holder: Some("b".into()),
            ..stale
        };
        assert!(matches!(
            store.replace(&theft).await,
            Err(LeaseError::Conflict)
        ));
        assert_eq!(
            store.0.lock().as_ref().unwrap().holder.as_deref(),
            Some("a")
        );
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once() {
        let store = MemoryLease::default();
        let clock = Arc::new(ManualClock(AtomicI64::new(0)));
        let a = elector(&store, "a", &clock);
        let b = elector(&store, "b", &clock);
        assert!(a.try_acquire_or_renew().await.unwrap());
        b.release().await.unwrap();
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "b's release did not free a's lease"
        );
        a.release().await.unwrap();
        assert!(b.try_acquire_or_renew().await.unwrap());
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_steps_down_within_the_renew_deadline() {
        let store = MemoryLease::default();
        let clock = Arc::new(ManualClock(AtomicI64::new(0)));
        let quick = Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_millis(200),
            retry_period: Duration::from_millis(50),
        };
        let a = Elector::new(store.clone(), "a".into(), quick, clock.clone());
        a.acquire().await;
        // Another writer takes the Lease behind a's back (e.g. a was partitioned).
        let mut theft = store.get().await.unwrap().unwrap();
        theft.holder = Some("b".into());
        store.replace(&theft).await.unwrap();
        let started = tokio::time::Instant::now();
        a.keep().await;
        let took = started.elapsed();
        assert!(took >= quick.renew_deadline, "{took:?}");
        assert!(took < quick.renew_deadline * 3, "{took:?}");
    }
}
