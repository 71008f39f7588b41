//! Operational routes: what providers accept, health, readiness, metrics.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use docgate_core::Problem;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::{app::AppState, auth::Caller, http::json_response};

/// `GET /v1/providers`: every provider the tenant may use, with its fields and policy, so a
/// frontend can validate before uploading.
pub async fn providers(State(app): State<AppState>, Caller(tenant): Caller) -> Response {
    let list: Vec<_> = app
        .registry
        .all()
        .filter(|p| tenant.may_use(p.name()))
        .map(|p| {
            json!({
                "name": p.name(),
                "description": p.description(),
                "fields": p.fields(),
                "policy": p.policy(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "providers": list }))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Write, commit and remove a tiny object: the spool takes writes.
async fn spool_probe(spool: &docgate_core::SpoolDir) -> std::io::Result<()> {
    let key = format!(
        "{}ready-{}",
        crate::spool_keys::TMP,
        uuid::Uuid::new_v4().simple()
    );
    let mut probe = spool.store().put(&key).await?;
    probe.write(bytes::Bytes::from_static(b"ready")).await?;
    probe.commit().await?;
    spool.store().delete(&key).await
}

/// `GET /readyz`: the ledger answers, the spool is writable and storage is above the
/// reserve (`limits.min_free_space`): a replica that would refuse uploads with 507 is not
/// ready for them.
pub async fn readyz(State(app): State<AppState>) -> Response {
    // Details go to the log, not to this unauthenticated route.
    let ledger = match app.ledger.ping().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness: ledger unavailable");
            "unavailable"
        }
    };
    let spool = match spool_probe(&app.spool).await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness: spool not writable");
            "not_writable"
        }
    };
    let storage = if app.admission.space.shortage().is_some() {
        "low"
    } else {
        "ok"
    };
    if ledger == "ok" && spool == "ok" && storage == "ok" {
        let body = json!({"status": "ready", "ledger": ledger, "spool": spool, "storage": storage});
        return json_response(StatusCode::OK, &body);
    }
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready")
        .with_detail("this replica cannot take uploads now; see ledger, spool and storage")
        .with_extra("status", "not_ready")
        .with_extra("ledger", ledger)
        .with_extra("spool", spool)
        .with_extra("storage", storage)
        .into_response()
}

/// `GET /metrics`: Prometheus text format (0.0.4).
pub async fn metrics(State(app): State<AppState>) -> Response {
    let counts = app.ledger.status_counts().await.unwrap_or_default();
    let uploads: Vec<(String, &str, u64)> = counts
        .into_iter()
        .map(|(p, s, n)| (p, s.as_str(), n))
        .collect();
    let spool_bytes = match app.spool.store().list("").await {
        Ok(objects) => objects.iter().map(|o| o.size).sum(),
        Err(_) => 0,
    };
    let mut res = app.metrics.render(&uploads, spool_bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    res
}
