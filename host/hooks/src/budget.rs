//! Evaluation budgets: how many evaluations of one hook may run at once.
//!
//! Each hook has its own, so a flood of admission reviews, or reviews held
//! by a PD that does not answer, can never delay a filter kube-scheduler is
//! waiting for (it gives up after its `httpTimeout`). The budgets add up to
//! the runtime's instance pool, so a hook within its budget always finds a
//! free instance.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use steward_runtime::MAX_CONCURRENT_INSTANCES;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Evaluations of scheduler-extender requests at once.
pub const EXTENDER_EVALUATIONS: u32 = MAX_CONCURRENT_INSTANCES / 2;
/// Admission reviews at once (each may wait on PD within its deadline).
pub const ADMISSION_EVALUATIONS: u32 = MAX_CONCURRENT_INSTANCES * 3 / 8;
/// Reconcile evaluations at once.
pub const RECONCILE_EVALUATIONS: u32 =
    MAX_CONCURRENT_INSTANCES - EXTENDER_EVALUATIONS - ADMISSION_EVALUATIONS;

/// One hook's budget. Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// Its [`Budget::run_compute`] calls computing on runtime workers now.
    computing_here: Arc<AtomicUsize>,
}

impl Budget {
    pub fn new(evaluations: u32) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(evaluations as usize)),
            computing_here: Arc::default(),
        }
    }

    /// Runs `work` on a blocking thread (evaluations block: guests run
    /// synchronously and PD reads block) once the budget allows.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let permit = self.permit().await;
        on_blocking_thread(permit, work).await
    }

    /// [`Budget::run`] for work that only computes, bounded by its
    /// policies' deadlines (scheduler evaluations: no PD, no I/O). It runs
    /// on the calling runtime worker while another worker stays free to
    /// serve everything else, beyond that on a blocking thread: the two
    /// thread switches of a blocking thread nearly tripled the extender's
    /// answer time on a busy 2-core machine (BENCHMARKS.md).
    pub async fn run_compute<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let permit = self.permit().await;
        // All workers but one may compute (none on a current-thread runtime).
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        if self.computing_here.fetch_add(1, Ordering::AcqRel) >= workers - 1 {
            self.computing_here.fetch_sub(1, Ordering::AcqRel);
            return on_blocking_thread(permit, work).await;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Panicked(format!("the evaluation panicked: {message}"))
        });
        self.computing_here.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
        outcome
    }

    async fn permit(&self) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the budget's semaphore is never closed")
    }
}

async fn on_blocking_thread<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Panicked> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| Panicked(format!("the evaluation {e}")))
}

/// Evaluation work that panicked (a host bug): its request fails with this,
/// the server goes on.
#[derive(Debug)]
pub struct Panicked(String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The budgets of the hooks that serve requests.
#[derive(Clone)]
pub struct Budgets {
    pub extender: Budget,
    pub admission: Budget,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            extender: Budget::new(EXTENDER_EVALUATIONS),
            admission: Budget::new(ADMISSION_EVALUATIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> std::thread::ThreadId {
        std::thread::current().id()
    }

    #[test]
    fn computing_work_runs_on_the_worker_while_another_is_free() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::spawn(async {
                let caller = thread();
                let budget = Budget::new(1);
                assert_eq!(budget.run_compute(thread).await.unwrap(), caller);
                assert_ne!(budget.run(thread).await.unwrap(), caller);
            })
            .await
            .unwrap();
        });
    }

    #[tokio::test]
    async fn a_single_worker_never_computes() {
        let caller = thread();
        assert_ne!(Budget::new(1).run_compute(thread).await.unwrap(), caller);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_fails_the_work_not_the_worker() {
        let budget = Budget::new(1);
        let panicked = budget
            .run_compute(|| -> u32 { panic!("a host bug") })
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("a host bug"), "{panicked}");
        // The permit came back.
        assert_eq!(budget.run_compute(|| 7).await.unwrap(), 7);
    }
}
