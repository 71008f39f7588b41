//! Sila's JSON envelope, for every answer the emulator gives.
//!
//! Sila answers JSON for everything, errors included, and real clients depend on it: the
//! Python SDK calls `response.json()` unconditionally on uploads and raises on anything else,
//! the Node SDK crashes its process. So the emulator never lets axum's plain-text defaults
//! (404, 405, 413, extractor rejections) or an injected fault reach a client: each goes
//! through [`failure`].

use std::time::Instant;

use axum::{
    response::{IntoResponse, Response},
    Json,
};
use http::StatusCode;
use serde_json::{json, Map, Value};

/// `response_time_ms` as Sila writes it: a string of milliseconds.
pub fn elapsed(started: Instant) -> String {
    started.elapsed().as_millis().to_string()
}

/// A `success: true` answer with the endpoint's own fields.
pub fn success(message: &str, started: Instant, fields: Map<String, Value>) -> Response {
    let mut with_message = Map::new();
    with_message.insert("message".into(), message.into());
    with_message.extend(fields);
    success_without_message(started, with_message)
}

/// A `success: true` answer for the endpoints whose documented answer has no `message`
/// (`/list_documents`).
pub fn success_without_message(started: Instant, fields: Map<String, Value>) -> Response {
    let mut body = Map::new();
    body.insert("success".into(), Value::Bool(true));
    body.insert("status".into(), "SUCCESS".into());
    body.extend(fields);
    body.insert("response_time_ms".into(), elapsed(started).into());
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// A failure in Sila's envelope.
pub fn failure(status: StatusCode, message: &str) -> Failure {
    Failure {
        status,
        message: message.to_owned(),
        validation_details: None,
        reference: None,
    }
}

/// A failure answer under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
    pub validation_details: Option<Value>,
    pub reference: Option<String>,
}

impl Failure {
    /// 400 "Bad request." with per-field explanations.
    pub fn bad_request(details: Value) -> Failure {
        Failure {
            validation_details: Some(details),
            ..failure(StatusCode::BAD_REQUEST, "Bad request.")
        }
    }

    pub fn with_reference(mut self, reference: Option<String>) -> Failure {
        self.reference = reference;
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({
            "success": false,
            "status": "FAILURE",
            "message": self.message,
        });
        if let Some(details) = self.validation_details {
            body["validation_details"] = details;
        }
        if let Some(reference) = self.reference {
            body["reference"] = reference.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// The message for a status the emulator answers without a more specific reason (unknown
/// routes, wrong methods, injected faults).
pub fn message_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request.",
        401 => "Unauthorized.",
        403 => "Forbidden.",
        404 => "Not found.",
        405 => "Method not allowed.",
        408 => "Request timeout.",
        413 => "Request entity too large.",
        429 => "Too many requests.",
        500 => "Internal server error.",
        502 => "Bad gateway.",
        503 => "Service unavailable.",
        504 => "Gateway timeout.",
        _ => "Request failed.",
    }
}

/// The envelope `docgate_emulator::with_faults` uses for injected failures.
pub fn injected(status: StatusCode) -> Response {
    failure(status, message_for(status)).into_response()
}

pub async fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, message_for(StatusCode::NOT_FOUND)).into_response()
}

pub async fn method_not_allowed() -> Response {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        message_for(StatusCode::METHOD_NOT_ALLOWED),
    )
    .into_response()
}
