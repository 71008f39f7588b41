//! OST's routes beyond uploads.
//!
//! - `POST /v1/providers/ost/presigned-post`: browser uploads straight to S3. docgate signs the
//!   OST call, so the browser never sees OST credentials; the S3 keys handed out are recorded
//!   as this tenant's.
//! - `POST /v1/providers/ost/users/{user_id}/kyc`: forwards KYC details. Every `*_file_path`
//!   must be a key this tenant got from docgate (an upload receipt or a presigned form): one
//!   tenant can never point OST at another tenant's documents.
//! - `POST /v1/webhooks/ost`: OST's signed events. Signature, age and replays are checked; the
//!   event is recorded and answered 200 at once (OST wants an answer within 10 s).
//! - `GET /v1/providers/ost/events`: recorded events, for tenants that use OST.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use docgate_core::Problem;
use http::{header, HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::{
    app::AppState,
    http::{json_response, ApiError},
    ledger::{now_ms, ProviderEvent},
    tenants::Tenant,
};

const OST: &str = "ost";

fn ost_tenant<'a>(
    app: &'a AppState,
    headers: &HeaderMap,
) -> Result<(&'a Tenant, &'a docgate_ost::OstProvider), Problem> {
    let tenant = app.tenants.authenticate(headers)?;
    let ost = app
        .registry
        .ost
        .as_deref()
        .ok_or_else(|| Problem::not_found("OST is not configured on this gateway"))?;
    if !tenant.may_use(OST) {
        return Err(Problem::forbidden(format!(
            "tenant `{}` may not use provider `ost`",
            tenant.name
        )));
    }
    Ok((tenant, ost))
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::bad_request("the body must be a JSON object")),
        Err(e) => Err(Problem::bad_request(format!("the body is not JSON: {e}"))),
    }
}

fn ledger_problem(e: crate::ledger::LedgerError) -> Problem {
    Problem::internal(format!("ledger: {e}"))
}

/// Body: `{"files": {"document_id": "image/jpeg", "selfie": "image/png"}}`.
pub async fn presigned_post(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result: Result<Response, Problem> = async {
        let (tenant, ost) = ost_tenant(&app, &headers)?;
        let body = json_object(&body)?;
        let files: BTreeMap<String, String> = match body.get("files") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| {
                            Problem::invalid_field(&format!("files.{k}"), "a content type string")
                        })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(Problem::invalid_field(
                    "files",
                    "an object of slot → content type",
                ))
            }
        };
        let forms = ost.presigned_post(&files).await?;
        let keys: Vec<String> = forms
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|f| f["fields"]["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        app.ledger
            .add_references(&tenant.name, OST, &keys, "presigned-post")
            .await
            .map_err(ledger_problem)?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "file_upload_post": forms }),
        ))
    }
    .await;
    result.unwrap_or_else(|p| ApiError(p).into_response())
}

/// Body: the KYC fields as a JSON object (`first_name`, …, `document_id_file_path`, …).
pub async fn submit_kyc(
    State(app): State<AppState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result: Result<Response, Problem> = async {
        let (tenant, ost) = ost_tenant(&app, &headers)?;
        let fields: BTreeMap<String, Value> = json_object(&body)?.into_iter().collect();
        let mut foreign = Vec::new();
        for key in docgate_ost::kyc::referenced_keys(&fields) {
            if !app
                .ledger
                .owns_reference(&tenant.name, OST, &key)
                .await
                .map_err(ledger_problem)?
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
        let data = ost.submit_kyc(&user_id, &fields).await?;
        // Events about this user are this tenant's to see.
        app.ledger
            .add_references(&tenant.name, OST, &[user_reference(&user_id)], "kyc-submit")
            .await
            .map_err(ledger_problem)?;
        Ok(json_response(StatusCode::OK, &data))
    }
    .await;
    result.unwrap_or_else(|p| ApiError(p).into_response())
}

/// OST's signed webhook. Not tenant-authenticated: the signature is the authentication.
pub async fn webhook(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result: Result<Response, Problem> = async {
        let ost = app
            .registry
            .ost
            .as_deref()
            .ok_or_else(|| Problem::not_found("OST is not configured on this gateway"))?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let params = docgate_ost::webhook::params_from_body(content_type, &body)
            .map_err(|e| Problem::bad_request(e.to_string()))?;
        let event = ost.verify_webhook(&params, now_ms() / 1000)?;
        let recorded = ProviderEvent {
            provider: OST.into(),
            event_id: event.id.clone(),
            name: event.name.clone(),
            received_at: now_ms(),
            payload: Value::Object(event.params.clone()),
        };
        if !app
            .ledger
            .record_event(&recorded)
            .await
            .map_err(ledger_problem)?
        {
            return Err(
                Problem::new(StatusCode::CONFLICT, "webhook_replayed", "Webhook replayed")
                    .with_detail(format!("event {} was already received", event.id)),
            );
        }
        tracing::info!(event = %event.id, name = %event.name, "OST webhook recorded");
        Ok(json_response(
            StatusCode::OK,
            &json!({ "received": event.id }),
        ))
    }
    .await;
    result.unwrap_or_else(|p| {
        app.metrics.rejected(&p.code);
        ApiError(p).into_response()
    })
}

/// The reference that ties an OST user to the tenant that submitted their KYC.
fn user_reference(user_id: &str) -> String {
    format!("user:{}", user_id.trim())
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

/// Recorded OST events about users this tenant submitted, newest first. Events that cannot be
/// attributed to one of the tenant's users are not shown: tenants never see each other's.
pub async fn events(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let result: Result<Response, Problem> = async {
        let (tenant, _) = ost_tenant(&app, &headers)?;
        let mut visible = Vec::new();
        for event in app
            .ledger
            .list_events(OST, 200)
            .await
            .map_err(ledger_problem)?
        {
            let Some(user) = event_user(&event.payload) else {
                continue;
            };
            if app
                .ledger
                .owns_reference(&tenant.name, OST, &user_reference(&user))
                .await
                .map_err(ledger_problem)?
            {
                visible.push(event);
            }
        }
        Ok(json_response(StatusCode::OK, &json!({ "events": visible })))
    }
    .await;
    result.unwrap_or_else(|p| ApiError(p).into_response())
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
}
