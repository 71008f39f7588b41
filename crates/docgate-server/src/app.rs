//! The application state shared by every request, and the router.

use std::sync::Arc;

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post, put},
    Router,
};
use docgate_core::{Problem, SpoolDir};
use tokio::sync::Semaphore;

use crate::{
    body::ReadOutOnDrop,
    config::{DeliverySettings, Limits},
    delivery::Deliverer,
    http::ApiError,
    ledger::Ledger,
    metrics::Metrics,
    registry::Registry,
    routes,
    tenants::Tenants,
};

/// Everything a request handler may need.
#[derive(Debug)]
pub struct App {
    pub registry: Arc<Registry>,
    pub tenants: Arc<Tenants>,
    pub spool: SpoolDir,
    pub ledger: Arc<dyn Ledger>,
    pub deliverer: Arc<Deliverer>,
    pub limits: Limits,
    pub delivery: DeliverySettings,
    /// One permit per upload being received.
    pub upload_slots: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

pub type AppState = Arc<App>;

/// The whole HTTP API.
pub fn router(app: AppState) -> Router {
    let read_out = app.limits.read_out();
    Router::new()
        .route("/v1/uploads", post(routes::uploads::post_multipart))
        .route(
            "/v1/uploads/{key}",
            put(routes::uploads::put_raw).get(routes::uploads::get_upload),
        )
        .route("/v1/providers", get(routes::ops::providers))
        .route(
            "/v1/providers/ost/presigned-post",
            post(routes::ost::presigned_post),
        )
        .route(
            "/v1/providers/ost/users/{user_id}/kyc",
            post(routes::ost::submit_kyc),
        )
        .route("/v1/providers/ost/events", get(routes::ost::events))
        .route("/v1/webhooks/ost", post(routes::ost::webhook))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(|| async { ApiError(Problem::not_found("no such route")) })
        .method_not_allowed_fallback(|| async {
            ApiError(Problem::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ))
        })
        // Upload bodies are streamed by the handlers with their own limits; the extractor
        // limit only guards the small JSON/form bodies of the other routes.
        .layer(DefaultBodyLimit::max(1024 * 1024))
        // Whatever a handler leaves unread is read out after its answer (see ReadOutOnDrop).
        // A client that sent `Expect: 100-continue` and got a refusal sends no body: nothing
        // to read out.
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                if req.headers().contains_key(http::header::EXPECT) {
                    return req;
                }
                req.map(|body| axum::body::Body::new(ReadOutOnDrop::new(body, read_out)))
            },
        ))
        .with_state(app)
}
