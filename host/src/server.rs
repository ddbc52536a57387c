//! The HTTP server: extender verbs under the configured prefix, plus
//! `/healthz`, `/readyz`, `/metrics` and `/status`.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::actions::Executor;
use crate::admission::AdmissionHook;
use crate::cluster::{ClusterCache, load_snapshot, watch_cluster};
use crate::config::{ClusterSource, Config};
use crate::extender::{BadRequest, Binder, Extender};
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore};
use crate::reload::Reloader;
use crate::reload::status::Status;
use crate::runtime::{MAX_CONCURRENT_INSTANCES, Runtime};

/// Everything a request handler needs.
#[derive(Clone)]
pub struct App {
    pub extender: Arc<Extender>,
    pub admission: Arc<AdmissionHook>,
    pub metrics: Arc<Metrics>,
    pub cluster: Arc<ClusterCache>,
    /// Bounds concurrent evaluations to the instances the pool holds.
    pub permits: Arc<Semaphore>,
    pub max_body_bytes: usize,
    /// Every policy's source, serving version and last reload error.
    pub status: Arc<Status>,
}

impl App {
    /// Builds the runtime, loads the policies, starts the cluster source
    /// and the reloader that swaps in new policy versions.
    pub async fn start(config: &Config) -> Result<App> {
        let runtime = Runtime::new(config.cache_dir())?;
        let (reloader, policies) = Reloader::load(runtime, config.clone()).await?;
        let cluster = Arc::new(ClusterCache::new(std::time::Duration::from_secs(
            config.scheduler.in_flight_seconds,
        )));
        let binder = match &config.cluster {
            ClusterSource::Snapshot(path) => {
                let path = config.resolve(path);
                let n = load_snapshot(&cluster, &path)?;
                tracing::info!(objects = n, snapshot = %path.display(), "snapshot loaded");
                Binder::Snapshot
            }
            ClusterSource::Kubeconfig(path) => {
                let client = kube_client(path).await?;
                tokio::spawn(watch_cluster(client.clone(), cluster.clone()));
                Binder::Kubernetes(client)
            }
        };
        let app = App::new(config, policies, cluster, binder);
        reloader.spawn(
            app.extender.policies.clone(),
            app.status.clone(),
            app.metrics.clone(),
        );
        app.start_reconcile(config);
        Ok(app)
    }

    /// Starts the reconcile controller when there are reconcile policies
    /// and a live cluster (it takes turns with other replicas by Lease).
    fn start_reconcile(&self, config: &Config) {
        let Binder::Kubernetes(client) = &self.extender.binder else {
            return;
        };
        if self.extender.policies.current().reconcile.is_empty() {
            return;
        }
        let reconciler = Arc::new(crate::reconcile::Reconciler::new(
            self.extender.policies.clone(),
            self.cluster.clone(),
            Executor::new(&self.extender.binder, self.cluster.clone()),
            Arc::new(crate::reconcile::SystemClock),
            self.metrics.clone(),
            &config.reconcile,
        ));
        tokio::spawn(crate::reconcile::controller::run(
            client.clone(),
            reconciler,
            config.reconcile.clone(),
        ));
    }

    pub fn new(
        config: &Config,
        policies: PolicySet,
        cluster: Arc<ClusterCache>,
        binder: Binder,
    ) -> App {
        let metrics = Arc::new(Metrics::default());
        let policies = Arc::new(PolicyStore::new(policies));
        let admission = Arc::new(AdmissionHook {
            policies: policies.clone(),
            cluster: cluster.clone(),
            metrics: metrics.clone(),
            executor: Executor::new(&binder, cluster.clone()),
        });
        let extender = Arc::new(Extender {
            policies,
            cluster: cluster.clone(),
            metrics: metrics.clone(),
            binder,
        });
        App {
            extender,
            admission,
            metrics,
            cluster,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_INSTANCES as usize)),
            max_body_bytes: config.server.max_body_bytes,
            status: Arc::new(Status::default()),
        }
    }

    /// Runs `work` on a blocking thread while holding one of the
    /// evaluation permits.
    pub(crate) async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }

    pub fn router(self, url_prefix: &str) -> Router {
        let prefix = url_prefix.trim_end_matches('/');
        Router::new()
            .route(&format!("{prefix}/filter"), post(filter))
            .route(&format!("{prefix}/prioritize"), post(prioritize))
            .route(&format!("{prefix}/preempt"), post(preempt))
            .route(&format!("{prefix}/bind"), post(bind))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .with_state(self)
    }
}

async fn kube_client(kubeconfig: &str) -> Result<kube::Client> {
    let config = if kubeconfig.is_empty() {
        kube::Config::infer()
            .await
            .context("no in-cluster service account and no kubeconfig")?
    } else {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("cannot read kubeconfig {kubeconfig}"))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .with_context(|| format!("kubeconfig {kubeconfig} is not usable"))?
    };
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    let app = App::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(addr = %config.server.listen, prefix = %config.scheduler.url_prefix, "serving");
    if let Some(webhook) = &config.admission {
        let tls_listener = tokio::net::TcpListener::bind(webhook.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admission)", webhook.listen))?;
        let https = serve_admission_on(
            tls_listener,
            app.clone(),
            &config.resolve(&webhook.cert_file),
            &config.resolve(&webhook.key_file),
            webhook.max_body_bytes,
        )?;
        tracing::info!(addr = %webhook.listen, "serving the admission webhook over HTTPS");
        let http = serve_on(listener, app, &config.scheduler.url_prefix);
        let (https, http) = tokio::join!(https, http);
        https?;
        return http;
    }
    serve_on(listener, app, &config.scheduler.url_prefix).await
}

/// The admission webhook on a bound listener: the certificate and key
/// files are loaded now (so a bad one fails the start), then the returned
/// future serves HTTPS until SIGINT or SIGTERM.
pub fn serve_admission_on(
    listener: tokio::net::TcpListener,
    app: App,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    max_body_bytes: usize,
) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
    let certs = crate::admission::tls::CertFiles::load(cert_file, key_file)?;
    let router = crate::admission::server::router(app, max_body_bytes);
    Ok(crate::admission::server::serve_tls(
        listener,
        router,
        certs,
        shutdown_signal(),
    ))
}

/// Serves `app` on a bound listener until SIGINT or SIGTERM.
pub async fn serve_on(listener: tokio::net::TcpListener, app: App, url_prefix: &str) -> Result<()> {
    axum::serve(listener, app.router(url_prefix))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

pub(crate) fn text(code: StatusCode, message: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// A 200 answer with a JSON body.
pub(crate) fn json(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Reads, decodes and evaluates one extender request off the reactor.
async fn evaluate<A, R>(
    app: App,
    endpoint: &'static str,
    body: Body,
    verb: impl FnOnce(&Extender, A) -> Result<R, BadRequest> + Send + 'static,
) -> Response
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    let response = match read_body(body, app.max_body_bytes).await {
        Err(message) => text(StatusCode::BAD_REQUEST, message),
        Ok(bytes) => {
            let extender = app.extender.clone();
            let outcome = app
                .run_blocking(move || {
                    let args: A = serde_json::from_slice(&bytes).map_err(|e| {
                        BadRequest(format!("cannot decode the {endpoint} request: {e}"))
                    })?;
                    let result = verb(&extender, args)?;
                    Ok::<_, BadRequest>(serde_json::to_vec(&result).expect("answers serialize"))
                })
                .await;
            match outcome {
                Ok(Ok(body)) => json(body),
                Ok(Err(BadRequest(message))) => text(StatusCode::BAD_REQUEST, message),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("evaluation failed: {e}"),
                ),
            }
        }
    };
    app.metrics.request(endpoint, response.status().as_u16());
    response
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, String> {
    read_body_or_status(body, limit, "server.maxBodyBytes")
        .await
        .map_err(|(_, message)| message)
}

/// The body, or 413 when it is over `limit` (configured as `setting`) and
/// 400 when it cannot be read.
pub(crate) async fn read_body_or_status(
    body: Body,
    limit: usize,
    setting: &str,
) -> Result<Bytes, (StatusCode, String)> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {limit} bytes ({setting})"),
                );
            }
            cause = c.source();
        }
        (
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )
    })
}

async fn filter(State(app): State<App>, body: Body) -> Response {
    evaluate(app, "filter", body, |e, args| e.filter(args)).await
}

async fn prioritize(State(app): State<App>, body: Body) -> Response {
    evaluate(app, "prioritize", body, |e, args| e.prioritize(args)).await
}

async fn preempt(State(app): State<App>, body: Body) -> Response {
    evaluate(app, "preempt", body, |e, args| e.preempt(args)).await
}

async fn bind(State(app): State<App>, body: Body) -> Response {
    let response = match read_body(body, app.max_body_bytes).await {
        Err(message) => text(StatusCode::BAD_REQUEST, message),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("cannot decode the bind request: {e}"),
            ),
            Ok(args) => axum::Json(app.extender.bind(args).await).into_response(),
        },
    };
    app.metrics.request("bind", response.status().as_u16());
    response
}

async fn readyz(State(app): State<App>) -> Response {
    if app.cluster.is_synced() {
        text(StatusCode::OK, "ready".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster cache has not synced yet".into(),
        )
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    axum::Json(app.status.report()).into_response()
}
