//! The HTTP servers. They carry requests to the hooks and answers back:
//! the extender verbs under the configured prefix, `/healthz`, `/readyz`,
//! `/metrics` and `/status` over HTTP, and the admission webhook over HTTPS
//! ([`admission`], certificates in [`tls`]).

pub mod admission;
pub mod listener;
mod memory;
pub mod tls;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::time::{Duration, Instant};
use steward_hooks::Hooks;

use http_body::Body as _;
use steward_hooks::config::{Config, ConnectionLimits};
use steward_hooks::extender::{BadRequest, Verb};
use tokio_rustls::TlsAcceptor;

/// What the HTTP handlers carry requests to.
#[derive(Clone)]
pub struct App {
    pub hooks: Hooks,
    /// The extender listener's request bodies.
    pub body: BodyLimit,
    pub connections: ConnectionLimits,
}

/// How large a request body may be and how long it may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max_bytes: usize,
    pub read_timeout: Duration,
    /// The configuration field of `max_bytes`, for messages.
    pub setting: &'static str,
}

impl App {
    /// Starts the hooks of `config` ([`Hooks::start`]).
    pub async fn start(config: &Config) -> Result<App> {
        let hooks = Hooks::start(config).await?;
        Ok(App::new(config, hooks))
    }

    pub fn new(config: &Config, hooks: Hooks) -> App {
        App {
            hooks,
            body: BodyLimit {
                max_bytes: config.server.max_body_bytes,
                read_timeout: Duration::from_millis(config.server.connections.body_read_timeout_ms),
                setting: "server.maxBodyBytes",
            },
            connections: config.server.connections,
        }
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
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self)
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    raise_open_files_limit();
    tokio::spawn(memory::trim_periodically());
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
            webhook.connections,
        )?;
        tracing::info!(addr = %webhook.listen, "serving the admission webhook over HTTPS");
        let http = serve_on(listener, app, &config.scheduler.url_prefix);
        let (https, http) = tokio::join!(https, http);
        https?;
        return http;
    }
    serve_on(listener, app, &config.scheduler.url_prefix).await
}

/// Raises the soft limit on open files to the hard one: every connection
/// is a file, and the listeners' `maxConnections` should be what bites.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let was = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(?was, now = ?limit.current, "open files limit raised"),
            Err(e) => tracing::warn!("cannot raise the open files limit from {was:?}: {e}"),
        }
    }
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
    connections: ConnectionLimits,
) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
    let certs = tls::CertFiles::load(cert_file, key_file)?;
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    let body = BodyLimit {
        max_bytes: max_body_bytes,
        read_timeout: Duration::from_millis(connections.body_read_timeout_ms),
        setting: "admission.maxBodyBytes",
    };
    let router = admission::router(app, body);
    Ok(async move {
        let reloading = certs.watch();
        let served = listener::serve(
            listener,
            router,
            Some(acceptor),
            connections,
            shutdown_signal(),
        )
        .await;
        reloading.abort();
        served.context("the admission webhook server failed")
    })
}

/// Serves `app` on a bound listener until SIGINT or SIGTERM.
pub async fn serve_on(listener: tokio::net::TcpListener, app: App, url_prefix: &str) -> Result<()> {
    let connections = app.connections;
    let router = app.router(url_prefix);
    listener::serve(listener, router, None, connections, shutdown_signal())
        .await
        .context("the extender server failed")
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

/// Carries one evaluating extender request to the hook, off the reactor.
async fn evaluate(app: App, verb: Verb, body: Body) -> Response {
    let started = Instant::now();
    let response = match read_body(body, app.body).await {
        Err((code, message)) => text(code, message),
        Ok(bytes) => {
            let extender = app.hooks.extender.clone();
            let budget = &app.hooks.budgets.extender;
            let outcome = match verb {
                Verb::Filter => extender.serve_filter(budget, bytes).await,
                _ => {
                    budget
                        .run_compute(move || extender.serve(verb, &bytes))
                        .await
                }
            };
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
    app.hooks
        .metrics
        .request(verb.name(), response.status().as_u16(), started.elapsed());
    response
}

/// The body within `limit`: 413 when it is (or says it will be) larger,
/// 408 when it does not arrive in time, 400 when it cannot be read.
pub(crate) async fn read_body(body: Body, limit: BodyLimit) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes ({})",
                limit.max_bytes, limit.setting
            ),
        )
    };
    if body.size_hint().lower() > limit.max_bytes as u64 {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        limit.read_timeout,
        axum::body::to_bytes(body, limit.max_bytes),
    );
    match read.await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                limit.read_timeout.as_millis()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                cause = c.source();
            }
            Err((
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
    }
}

async fn filter(State(app): State<App>, body: Body) -> Response {
    evaluate(app, Verb::Filter, body).await
}

async fn prioritize(State(app): State<App>, body: Body) -> Response {
    evaluate(app, Verb::Prioritize, body).await
}

async fn preempt(State(app): State<App>, body: Body) -> Response {
    evaluate(app, Verb::Preempt, body).await
}

async fn bind(State(app): State<App>, body: Body) -> Response {
    let started = Instant::now();
    let response = match read_body(body, app.body).await {
        Err((code, message)) => text(code, message),
        Ok(bytes) => match app.hooks.extender.serve_bind(&bytes).await {
            Ok(body) => json(body),
            Err(BadRequest(message)) => text(StatusCode::BAD_REQUEST, message),
        },
    };
    app.hooks
        .metrics
        .request("bind", response.status().as_u16(), started.elapsed());
    response
}

/// An unknown path: the answer says what is served.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "nothing is served at {}; Steward serves the extender verbs (POST <urlPrefix>/filter, \
             /prioritize, /preempt, /bind), GET /healthz, /readyz, /metrics, /status, and the \
             admission webhook (POST /admission/validate/<policy>, /admission/mutate/<policy>) \
             on its HTTPS listener",
            uri.path()
        ),
    )
}

/// A known path asked with the wrong method.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not answer {method}: the hooks take POST, health and metrics GET",
            uri.path()
        ),
    )
}

/// Ready once the core kinds have synced and every kind each policy that
/// is not degraded needs has (see `steward_hooks::availability`).
async fn readyz(State(app): State<App>) -> Response {
    match app.hooks.readiness() {
        Ok(()) => text(StatusCode::OK, "ready".into()),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.hooks.metrics.encode(),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    axum::Json(app.hooks.status_report()).into_response()
}
