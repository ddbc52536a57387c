//! The webhook's HTTPS server: `POST /admission/validate/{policy}` and
//! `POST /admission/mutate/{policy}`, plus `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::CertFiles;
use crate::server::{App, json, read_body_or_status, text};
use steward_hooks::admission::Endpoint;

/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook routes.
pub fn router(app: App, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/admission/validate/{policy}",
            post(
                move |State(app): State<App>, Path(policy): Path<String>, body: Body| async move {
                    review(app, Endpoint::Validate, policy, body, max_body_bytes).await
                },
            ),
        )
        .route(
            "/admission/mutate/{policy}",
            post(
                move |State(app): State<App>, Path(policy): Path<String>, body: Body| async move {
                    review(app, Endpoint::Mutate, policy, body, max_body_bytes).await
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

async fn review(
    app: App,
    endpoint: Endpoint,
    policy: String,
    body: Body,
    limit: usize,
) -> Response {
    let response = match read_body_or_status(body, limit, "admission.maxBodyBytes").await {
        Err((code, message)) => text(code, message),
        Ok(bytes) => {
            let hook = app.hooks.admission.clone();
            let decided = app
                .hooks
                .budgets
                .admission
                .run(move || hook.review(endpoint, &policy, &bytes))
                .await;
            match decided {
                Ok(Ok(reviewed)) => {
                    let out = app.hooks.admission.finish(reviewed).await;
                    json(serde_json::to_vec(&out).expect("a review serializes"))
                }
                Ok(Err(rejected)) => text(
                    StatusCode::from_u16(rejected.status).unwrap_or(StatusCode::BAD_REQUEST),
                    rejected.message,
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("review failed: {e}"),
                ),
            }
        }
    };
    app.hooks
        .metrics
        .request(endpoint.name(), response.status().as_u16());
    response
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then
/// lets open connections finish their requests.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    certs: Arc<CertFiles>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    let watcher = certs.watch();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("webhook accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watch = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "webhook TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watch.watch(conn).await {
                tracing::debug!(%peer, "webhook connection ended: {e}");
            }
        });
    }
    watcher.abort();
    drop(listener);
    tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .context("open webhook connections did not finish within 10s")
}
