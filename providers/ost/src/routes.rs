//! OST's routes in the gateway, beyond uploads (mounted from [`OstProvider::routes`]).
//!
//! Under `/v1/providers/ost` (tenant API key):
//! - `POST /presigned-post`: presigned S3 forms for a browser to post documents straight to
//!   OST's bucket. **Those bytes never pass through docgate**: no size, type or content check
//!   happens on them. So the route is off unless the tenant's configuration turns it on
//!   (`[tenants.options.ost] presigned_post = true`); the inspected browser path is an upload
//!   session. The S3 keys handed out are recorded as the tenant's.
//! - `POST /users/{user_id}/kyc`: KYC details for a user, checked first (required fields,
//!   formats, OST's country lists, the Ethereum address checksum: 422 listing every bad field,
//!   and OST is not called). Every `*_file_path` must be an S3 key
//!   this tenant owns, and the user becomes the tenant's on its first submission: another
//!   tenant's submission, status read or events for that user answer 404.
//! - `GET /users/{user_id}/kyc`: the user's KYC status and details at OST, for the owning
//!   tenant (`{"status": …, "details": …}`, OST's own `data` objects).
//! - `GET /events`: recorded webhook events about this tenant's users.
//!
//! Under `/v1/webhooks/ost` (no API key; OST's signature authenticates): `POST /`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use docgate_core::{
    host::HostRef, now_ms, registration::toml, registration::ConfigIssues, ApiTenant, OwnedRef,
    Problem, ProviderEvent, ProviderRoutes, TenantRef,
};
use http::{header, HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::{
    kyc::{self, KEY_REF, USER_REF},
    OstProvider,
};

const OST: &str = "ost";

/// The tenant option that turns on uninspected direct-to-S3 posts.
pub const PRESIGNED_POST: &str = "presigned_post";

/// The registration's check of `[tenants.options.ost]`.
pub fn check_tenant_options(options: &toml::Table) -> Result<(), ConfigIssues> {
    let mut issues = ConfigIssues::default();
    for (key, value) in options {
        match key.as_str() {
            PRESIGNED_POST if value.is_bool() => {}
            PRESIGNED_POST => issues.push(key.as_str(), "must be true or false"),
            other => issues.push(
                other,
                format!("unknown option (OST takes `{PRESIGNED_POST}`)"),
            ),
        }
    }
    issues.into_result(())
}

/// The routes OST mounts.
pub fn routes(ost: Arc<OstProvider>) -> ProviderRoutes {
    let api = Router::new()
        .route("/presigned-post", post(presigned_post))
        .route("/users/{user_id}/kyc", post(submit_kyc).get(kyc_status))
        .route("/events", get(events))
        .with_state(ost.clone());
    let webhook = Router::new().route("/", post(webhook)).with_state(ost);
    ProviderRoutes {
        api: Some(api),
        webhook: Some(webhook),
    }
}

type Answer = Result<Json<Value>, Problem>;

fn ost_tenant(tenant: &TenantRef) -> Result<(), Problem> {
    tenant.require(OST)
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::bad_request("the body must be a JSON object")),
        Err(e) => Err(Problem::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// Body: `{"files": {"document_id": "image/jpeg", "selfie": "image/png"}}`.
async fn presigned_post(
    State(ost): State<Arc<OstProvider>>,
    ApiTenant(tenant): ApiTenant,
    HostRef(host): HostRef,
    body: Bytes,
) -> Answer {
    ost_tenant(&tenant)?;
    if !tenant.flag(OST, PRESIGNED_POST) {
        return Err(Problem::forbidden(
            "direct-to-S3 posts are off for this tenant: their bytes bypass docgate's checks. \
             Use an upload session, or set [tenants.options.ost] presigned_post = true",
        ));
    }
    let files = requested_files(&json_object(&body)?)?;
    let forms = ost.presigned_post(&files).await?;
    for form in forms.as_object().into_iter().flat_map(|m| m.values()) {
        if let Some(key) = form["fields"]["key"].as_str() {
            host.claim(&tenant.name, OST, &OwnedRef::new(KEY_REF, key))
                .await?;
        }
    }
    Ok(Json(json!({ "file_upload_post": forms })))
}

fn requested_files(body: &Map<String, Value>) -> Result<BTreeMap<String, String>, Problem> {
    match body.get("files") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| {
                        Problem::invalid_field(&format!("files.{k}"), "a content type string")
                    })
            })
            .collect(),
        _ => Err(Problem::invalid_field(
            "files",
            "an object of slot → content type",
        )),
    }
}

/// The ownership ref of OST user `user_id` (ids are numbers: `011001` and `11001` are the
/// same user).
fn user_ref(user_id: &str) -> OwnedRef {
    let user_id = user_id.trim();
    let canonical = user_id
        .parse::<u64>()
        .map_or_else(|_| user_id.to_owned(), |n| n.to_string());
    OwnedRef::new(USER_REF, canonical)
}

fn no_such_user(user_id: &str) -> Problem {
    Problem::not_found(format!("no OST user `{}`", user_id.trim()))
}

/// `Ok` when `tenant` owns OST user `user_id`.
async fn own_user(host: &HostRef, tenant: &TenantRef, user_id: &str) -> Result<(), Problem> {
    if host.0.owns(&tenant.name, OST, &user_ref(user_id)).await? {
        Ok(())
    } else {
        Err(no_such_user(user_id))
    }
}

/// Claim OST user `user_id` for `tenant` (the first tenant to submit KYC for a user owns it).
/// `Ok(true)` when this call made the claim, `Ok(false)` when the tenant owned it before.
async fn claim_user(
    host: &HostRef,
    tenant: &TenantRef,
    subject: &OwnedRef,
    user_id: &str,
) -> Result<bool, Problem> {
    if host.0.owns(&tenant.name, OST, subject).await? {
        return Ok(false);
    }
    if host.0.claim(&tenant.name, OST, subject).await? {
        Ok(true)
    } else {
        Err(no_such_user(user_id))
    }
}

/// Body: the KYC fields as a JSON object (`first_name`, …, `document_id_file_path`, …).
async fn submit_kyc(
    State(ost): State<Arc<OstProvider>>,
    ApiTenant(tenant): ApiTenant,
    host: HostRef,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Answer {
    ost_tenant(&tenant)?;
    // Every bad field at once, before OST (or the user's ownership) is touched.
    let fields = kyc::validate_submission(&json_object(&body)?)?;
    let mut foreign = Vec::new();
    for key in kyc::referenced_keys(&fields) {
        if !host
            .0
            .owns(&tenant.name, OST, &OwnedRef::new(KEY_REF, &key))
            .await?
        {
            foreign.push(key);
        }
    }
    if !foreign.is_empty() {
        return Err(Problem::forbidden(
            "these document keys did not come from this tenant's uploads or presigned forms",
        )
        .with_extra("keys", foreign));
    }
    let subject = user_ref(&user_id);
    let claimed = claim_user(&host, &tenant, &subject, &user_id).await?;
    match ost.submit_kyc(&user_id, &fields).await {
        Ok(answer) => {
            // Claimed again: a concurrent submission of this tenant's for the same user, which
            // OST refused, may have released the claim meanwhile (it is ours whatever that did).
            if let Err(e) = host.0.claim(&tenant.name, OST, &subject).await {
                tracing::warn!(error = %e.title, "could not confirm the claim of an OST user after its submission");
            }
            Ok(Json(answer))
        }
        // OST refused (no such user, invalid fields): a claim made for it goes, or a tenant
        // could claim the ids OST will give other tenants' users next, and read their status
        // and details once they exist. An answer that may have been lost keeps the claim.
        Err(problem) if claimed && !problem.retryable() => {
            if let Err(e) = host.0.release(&tenant.name, OST, &subject).await {
                tracing::warn!(error = %e.title, "could not release an OST user claimed for a refused submission");
            }
            Err(problem)
        }
        Err(problem) => Err(problem),
    }
}

async fn kyc_status(
    State(ost): State<Arc<OstProvider>>,
    ApiTenant(tenant): ApiTenant,
    host: HostRef,
    Path(user_id): Path<String>,
) -> Answer {
    ost_tenant(&tenant)?;
    own_user(&host, &tenant, &user_id).await?;
    let status = ost.kyc_status(&user_id).await?;
    let details = ost.kyc_details(&user_id).await?;
    Ok(Json(json!({ "status": status, "details": details })))
}

/// Recorded events about this tenant's users, newest first.
async fn events(ApiTenant(tenant): ApiTenant, HostRef(host): HostRef) -> Answer {
    ost_tenant(&tenant)?;
    let events = host.events(&tenant.name, OST, 200).await?;
    Ok(Json(json!({ "events": events })))
}

/// OST's signed webhook. The signature and age are checked; the event is recorded and
/// answered at once (OST wants a 200 within 10 s).
///
/// An event id already recorded is acknowledged again with 200 and not recorded twice: OST
/// sends the same event afresh (new `request_timestamp`, new signature) whenever it did not
/// see our 200 — our answer lost, or later than its 10 s — and counts anything else as a failed
/// delivery, retried for 63 hours. A replay captured by someone else changes nothing either.
async fn webhook(
    State(ost): State<Arc<OstProvider>>,
    HostRef(host): HostRef,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let params = crate::webhook::params_from_body(content_type, &body)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let event = ost.verify_webhook(&params, now_ms() / 1000)?;
    let payload = Value::Object(event.params.clone());
    let recorded = ProviderEvent {
        provider: OST.into(),
        event_id: event.id.clone(),
        name: event.name.clone(),
        received_at: now_ms(),
        subject: event_user(&payload).map(|u| OwnedRef::new(USER_REF, u)),
        payload,
    };
    if host.record_event(&recorded).await? {
        tracing::info!(event = %event.id, name = %event.name, "OST webhook recorded");
        Ok((StatusCode::OK, Json(json!({ "received": event.id }))))
    } else {
        tracing::info!(event = %event.id, name = %event.name, "OST webhook sent again; kept once");
        Ok((
            StatusCode::OK,
            Json(json!({ "received": event.id, "already_received": true })),
        ))
    }
}

/// The OST user an event is about: `data.<result_type>.user_id`, or `.id` for user events.
fn event_user(payload: &Value) -> Option<String> {
    let data = payload.get("data")?;
    let kind = data.get("result_type")?.as_str()?;
    let object = data.get(kind)?;
    let id = object
        .get("user_id")
        .or_else(|| (kind == "user").then(|| object.get("id")).flatten())?;
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_attributed_to_their_user() {
        let kyc =
            json!({"data": {"result_type": "user_kyc", "user_kyc": {"user_id": 11001, "id": 7}}});
        assert_eq!(event_user(&kyc).as_deref(), Some("11001"));
        let user = json!({"data": {"result_type": "user", "user": {"id": "11493"}}});
        assert_eq!(event_user(&user).as_deref(), Some("11493"));
        assert_eq!(
            event_user(&json!({"data": {"result_type": "other", "other": {"id": 1}}})),
            None
        );
        assert_eq!(event_user(&json!({})), None);
    }

    #[test]
    fn tenant_options_are_checked() {
        let ok: toml::Table = toml::from_str("presigned_post = true").expect("toml");
        assert!(check_tenant_options(&ok).is_ok());
        let bad: toml::Table = toml::from_str("presigned_post = \"yes\"\nother = 1").expect("toml");
        assert_eq!(check_tenant_options(&bad).map_err(|e| e.0.len()), Err(2));
    }
}
