//! The emulator's answer codes.
//!
//! Finext documents only success (`{"code": 10200, "msg": "ok"}`). For everything it must
//! refuse, the emulator uses this fixed table — `10000 +` the HTTP status that best names the
//! reason — so tests and frontends can branch on a stable number. Refusals of a well-formed
//! request come with HTTP 200, as an envelope-style API does; only answers given before or
//! instead of reading the request (unknown path, wrong method, body too large) and the
//! emulator's own failures use a matching HTTP status.

use axum::{
    response::{IntoResponse, Response},
    Json,
};
use http::StatusCode;
use serde_json::json;

/// Why the emulator refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 10400: not a JSON object, wrong Content-Type, duplicate key, broken syntax.
    Malformed(String),
    /// 10401: `sign` does not match.
    BadSign,
    /// 10402: `timestamp` is not 13 digits or not within the window.
    Timestamp(String),
    /// 10403: the `request_id` was used before.
    Replayed,
    /// 10404: no such endpoint.
    NoSuchEndpoint(String),
    /// 10405: only POST is served.
    MethodNotAllowed,
    /// 10406: the `authorization` header is missing or wrong.
    Unauthorized,
    /// 10407: the `api_key` is not this emulator's.
    UnknownApiKey,
    /// 10408: `request_id` is not 20–64 characters.
    RequestId(String),
    /// 10413: the body or a decoded document is too large.
    TooLarge(String),
    /// 10415: the extension is unsupported or does not match the decoded bytes.
    TypeMismatch(String),
    /// 10416: a document field is not valid base64.
    Base64(String),
    /// 10422: a field is missing or breaks a rule (enums, dates, countries …).
    InvalidField(String),
    /// 10500: the emulator itself failed (disk).
    Internal(String),
}

impl Refusal {
    pub fn code(&self) -> u32 {
        match self {
            Refusal::Malformed(_) => 10400,
            Refusal::BadSign => 10401,
            Refusal::Timestamp(_) => 10402,
            Refusal::Replayed => 10403,
            Refusal::NoSuchEndpoint(_) => 10404,
            Refusal::MethodNotAllowed => 10405,
            Refusal::Unauthorized => 10406,
            Refusal::UnknownApiKey => 10407,
            Refusal::RequestId(_) => 10408,
            Refusal::TooLarge(_) => 10413,
            Refusal::TypeMismatch(_) => 10415,
            Refusal::Base64(_) => 10416,
            Refusal::InvalidField(_) => 10422,
            Refusal::Internal(_) => 10500,
        }
    }

    pub fn msg(&self) -> String {
        match self {
            Refusal::Malformed(m) => format!("malformed request: {m}"),
            Refusal::BadSign => "sign mismatch".into(),
            Refusal::Timestamp(m) => format!("invalid timestamp: {m}"),
            Refusal::Replayed => "request_id already used".into(),
            Refusal::NoSuchEndpoint(p) => format!("no such endpoint: {p}"),
            Refusal::MethodNotAllowed => "method not allowed: use POST".into(),
            Refusal::Unauthorized => "authorization header missing or invalid".into(),
            Refusal::UnknownApiKey => "unknown api_key".into(),
            Refusal::RequestId(m) => format!("invalid request_id: {m}"),
            Refusal::TooLarge(m) => format!("too large: {m}"),
            Refusal::TypeMismatch(m) => format!("extension mismatch: {m}"),
            Refusal::Base64(m) => format!("invalid base64: {m}"),
            Refusal::InvalidField(m) => format!("invalid field: {m}"),
            Refusal::Internal(m) => format!("internal error: {m}"),
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Refusal::NoSuchEndpoint(_) => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.http_status(),
            Json(json!({"code": self.code(), "msg": self.msg()})),
        )
            .into_response()
    }
}

/// `{"code": 10200, "msg": "ok"}` plus, for the status endpoint, `data`.
pub fn ok(data: Option<serde_json::Value>) -> Response {
    let mut body = json!({"code": 10200, "msg": "ok"});
    if let Some(data) = data {
        body["data"] = data;
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The envelope of an injected fault: `10000 +` the injected HTTP status.
pub fn injected(status: StatusCode) -> Response {
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    (
        status,
        Json(json!({"code": 10000 + u32::from(status.as_u16()), "msg": reason})),
    )
        .into_response()
}
