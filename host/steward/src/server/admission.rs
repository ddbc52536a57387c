//! The webhook's routes: `POST /admission/validate/{policy}` and
//! `POST /admission/mutate/{policy}`, plus `/healthz` (served over HTTPS by
//! [`super::serve_admission_on`]).

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use steward_hooks::admission::Endpoint;

use crate::server::{App, BodyLimit, json, method_not_allowed, not_found, read_body, text};

/// The webhook routes.
pub fn router(app: App, body: BodyLimit) -> Router {
    Router::new()
        .route(
            "/admission/validate/{policy}",
            post(
                move |State(app): State<App>, Path(policy): Path<String>, request: Body| async move {
                    review(app, Endpoint::Validate, policy, request, body).await
                },
            ),
        )
        .route(
            "/admission/mutate/{policy}",
            post(
                move |State(app): State<App>, Path(policy): Path<String>, request: Body| async move {
                    review(app, Endpoint::Mutate, policy, request, body).await
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn review(
    app: App,
    endpoint: Endpoint,
    policy: String,
    request: Body,
    body: BodyLimit,
) -> Response {
    let started = Instant::now();
    let response = match read_body(request, body).await {
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
    app.hooks.metrics.request(
        endpoint.name(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
