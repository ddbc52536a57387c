//! Evaluation budgets: how many evaluations of one hook may run at once.
//!
//! Each hook has its own, so a flood of admission reviews, or reviews held
//! by a PD that does not answer, can never delay a filter kube-scheduler is
//! waiting for (it gives up after its `httpTimeout`). The budgets add up to
//! the runtime's instance pool, so a hook within its budget always finds a
//! free instance.

use std::sync::Arc;

use steward_runtime::MAX_CONCURRENT_INSTANCES;
use tokio::sync::Semaphore;
use tokio::task::JoinError;

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
}

impl Budget {
    pub fn new(evaluations: u32) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(evaluations as usize)),
        }
    }

    /// Runs `work` on a blocking thread (evaluations block: guests run
    /// synchronously and PD reads block) once the budget allows.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the budget's semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
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
