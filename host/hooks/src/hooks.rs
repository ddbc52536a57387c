//! Every hook of one Steward process, built from its configuration: what
//! the server routes requests to and what the CLI evaluates with.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use steward_cluster::{Backend, ClusterCache, load_snapshot, watch_cluster};
use steward_runtime::Runtime;

use crate::actions::Executor;
use crate::admission::AdmissionHook;
use crate::availability;
use crate::budget::Budgets;
use crate::config::{ClusterSource, Config, SchedulerConfig};
use crate::extender::Extender;
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore};
use crate::reconcile::{Reconciler, SystemClock, controller};
use crate::reload::Reloader;
use crate::reload::status::{Report, Status};

/// The hooks, their cluster cache, metrics and policy status.
#[derive(Clone)]
pub struct Hooks {
    pub extender: Arc<Extender>,
    pub admission: Arc<AdmissionHook>,
    pub metrics: Arc<Metrics>,
    pub cluster: Arc<ClusterCache>,
    /// Each serving hook's evaluations at once.
    pub budgets: Budgets,
    /// Every policy's source, serving version and last reload error.
    pub status: Arc<Status>,
}

impl Hooks {
    /// Builds the runtime, loads the policies, starts the cluster source,
    /// the reloader that swaps in new policy versions and, with reconcile
    /// policies on a live cluster, the reconcile controller.
    pub async fn start(config: &Config) -> Result<Hooks> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let runtime = Runtime::new(config.cache_dir())?;
        let (reloader, policies) = Reloader::load(runtime, config.clone()).await?;
        let cluster = Arc::new(ClusterCache::new(Duration::from_secs(
            config.scheduler.in_flight_seconds,
        )));
        let (backend, live) = match &config.cluster {
            ClusterSource::Snapshot(path) => {
                let path = config.resolve(path);
                let n = load_snapshot(&cluster, &path)?;
                tracing::info!(objects = n, snapshot = %path.display(), "snapshot loaded");
                (Backend::Snapshot, None)
            }
            ClusterSource::Kubeconfig {
                path,
                discovery_interval,
            } => (Backend::connect(path).await?, Some(*discovery_interval)),
        };
        let filter_wait = Duration::from_millis(config.scheduler.filter_wait_ms);
        let hooks = Hooks::build(policies, cluster, backend, filter_wait);
        if let (Backend::Kubernetes { client, server }, Some(discovery_interval)) =
            (&hooks.extender.backend, live)
        {
            tokio::spawn(watch_cluster(
                client.clone(),
                server.clone(),
                hooks.cluster.clone(),
                hooks.extender.policies.wanted_kinds(),
                discovery_interval,
            ));
            tokio::spawn(steward_cluster::requeue_pods(
                client.clone(),
                hooks.cluster.clone(),
            ));
        }
        reloader.spawn(
            hooks.extender.policies.clone(),
            hooks.status.clone(),
            hooks.metrics.clone(),
        );
        hooks.start_reconcile(config);
        Ok(hooks)
    }

    /// Loads the configured policies over a snapshot, with no reloader or
    /// controller: what the CLI's one-shot commands evaluate with.
    pub async fn offline(config: &Config, cluster: Arc<ClusterCache>) -> Result<Hooks> {
        let runtime = Runtime::new(config.cache_dir())?;
        let policies = PolicySet::load(&runtime, config).await?;
        Ok(Hooks::new(policies, cluster, Backend::Snapshot))
    }

    /// Starts the reconcile controller when there are reconcile policies
    /// and a live cluster (it takes turns with other replicas by Lease).
    fn start_reconcile(&self, config: &Config) {
        let Backend::Kubernetes { client, .. } = &self.extender.backend else {
            return;
        };
        if self.extender.policies.current().reconcile.is_empty() {
            return;
        }
        let reconciler = Arc::new(Reconciler::new(
            self.extender.policies.clone(),
            self.cluster.clone(),
            Executor::new(&self.extender.backend, self.cluster.clone()),
            Arc::new(SystemClock),
            self.metrics.clone(),
            &config.reconcile,
        ));
        tokio::spawn(controller::run(
            client.clone(),
            reconciler,
            config.reconcile.clone(),
        ));
    }

    /// What `GET /status` reports: every policy's version and reload
    /// state, and the kinds missing for it.
    pub fn status_report(&self) -> Report {
        availability::with_missing_kinds(
            self.status.report(),
            &self.extender.policies.current(),
            &self.cluster,
        )
    }

    /// What `GET /readyz` answers (see [`availability::readiness`]).
    pub fn readiness(&self) -> Result<(), String> {
        availability::readiness(&self.extender.policies.current(), &self.cluster)
    }

    /// The hooks over `policies`, with the default `scheduler` settings.
    pub fn new(policies: PolicySet, cluster: Arc<ClusterCache>, backend: Backend) -> Hooks {
        let filter_wait = Duration::from_millis(SchedulerConfig::default().filter_wait_ms);
        Hooks::build(policies, cluster, backend, filter_wait)
    }

    fn build(
        policies: PolicySet,
        cluster: Arc<ClusterCache>,
        backend: Backend,
        filter_wait: Duration,
    ) -> Hooks {
        let metrics = Arc::new(Metrics::default());
        let policies = Arc::new(PolicyStore::new(policies));
        let admission = Arc::new(AdmissionHook {
            policies: policies.clone(),
            cluster: cluster.clone(),
            backend: backend.clone(),
            metrics: metrics.clone(),
            executor: Executor::new(&backend, cluster.clone()),
        });
        let mut extender = Extender::new(policies, cluster.clone(), metrics.clone(), backend);
        extender.filter_wait = filter_wait;
        let extender = Arc::new(extender);
        Hooks {
            extender,
            admission,
            metrics,
            cluster,
            budgets: Budgets::default(),
            status: Arc::new(Status::default()),
        }
    }
}
