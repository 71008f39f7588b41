//! Receipts: what the frontend gets back for an upload, now and on every later status query.
//!
//! A receipt is built from the ledger record only, so the answer to the original request, an
//! idempotent replay, `GET /v1/uploads/{id}` and the tenant notification always agree.

use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::{
    http::json_response,
    ledger::{Millis, UploadRecord, UploadStatus},
};
use docgate_core::{problem::problem_response, Problem};

/// A ledger time as RFC 3339 in UTC, always with milliseconds (`…T08:10:08.830Z`, never
/// `…08.83Z`): one width, so the strings sort as the times do.
pub fn rfc3339(ms: Millis) -> Value {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .map_or(Value::Null, Value::String)
}

/// The receipt JSON of an upload.
pub fn receipt(rec: &UploadRecord) -> Value {
    let documents: Vec<Value> = rec
        .documents
        .iter()
        .map(|d| serde_json::to_value(&d.meta).unwrap_or(Value::Null))
        .collect();
    let mut r = json!({
        "id": rec.id,
        "provider": rec.provider,
        "status": rec.status.as_str(),
        "documents": documents,
        "provider_reference": rec.provider_reference,
        "attempts": rec.attempts,
        "created_at": rfc3339(rec.created_at),
        "delivered_at": rec.delivered_at.map_or(Value::Null, rfc3339),
    });
    if let Some(obj) = r.as_object_mut() {
        if let Some(key) = &rec.idempotency_key {
            obj.insert("idempotency_key".into(), Value::String(key.clone()));
        }
        if !rec.status.is_terminal() {
            if let Some(next) = rec.next_attempt_at {
                obj.insert("next_attempt_at".into(), rfc3339(next));
            }
        }
        if let Some(err) = &rec.last_error {
            obj.insert("last_error".into(), Value::String(err.clone()));
        }
        if let Some(status) = rec.last_upstream_status {
            obj.insert("last_upstream_status".into(), Value::from(status));
        }
        if let Some(problem) = &rec.problem {
            obj.insert("problem".into(), problem.clone());
        }
        if rec.cancel_requested && !rec.status.is_terminal() {
            obj.insert("cancel_requested".into(), Value::Bool(true));
        }
        if let Some(at) = rec.erased_at {
            obj.insert("erased_at".into(), rfc3339(at));
        }
    }
    r
}

/// The HTTP answer for an upload in its current state: 201 delivered, 200 duplicate,
/// 202 still pending (with `Location`), or the recorded problem for rejected/failed ones.
pub fn upload_response(rec: &UploadRecord) -> Response {
    let location = format!("/v1/uploads/{}", rec.id);
    let mut res = match rec.status {
        UploadStatus::Delivered => json_response(StatusCode::CREATED, &receipt(rec)),
        UploadStatus::Duplicate => json_response(StatusCode::OK, &receipt(rec)),
        UploadStatus::Rejected | UploadStatus::Failed | UploadStatus::Canceled => {
            let mut problem = rec
                .problem
                .as_ref()
                .and_then(Problem::from_json)
                .unwrap_or_else(|| match rec.status {
                    UploadStatus::Canceled => {
                        Problem::new(StatusCode::CONFLICT, "upload_canceled", "Upload canceled")
                            .with_detail("an operator canceled this upload's delivery")
                    }
                    _ => Problem::internal("the upload failed without a recorded reason"),
                });
            problem
                .extra
                .insert("upload_id".into(), Value::String(rec.id.clone()));
            problem.extra.insert("receipt".into(), receipt(rec));
            problem_response(&problem)
        }
        UploadStatus::Received | UploadStatus::Delivering | UploadStatus::RetryScheduled => {
            json_response(StatusCode::ACCEPTED, &receipt(rec))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_one_width_so_they_sort_as_strings() {
        assert_eq!(
            rfc3339(1_764_490_208_830),
            json!("2025-11-30T08:10:08.830Z")
        );
        assert_eq!(
            rfc3339(1_764_490_208_000),
            json!("2025-11-30T08:10:08.000Z")
        );
        let earlier = rfc3339(1_764_490_208_827);
        let later = rfc3339(1_764_490_208_830);
        assert!(earlier.as_str() < later.as_str());
    }
}
