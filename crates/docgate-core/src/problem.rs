//! Problem details (RFC 9457): the one shape every rejection takes.
//!
//! A frontend developer should be able to branch on `code` (stable, machine readable) and show
//! `detail` (human readable) without parsing prose. Field-level validation failures carry one
//! entry per field in `errors`, so a form can highlight every bad field at once.
//!
//! `Problem` also says *who* failed ([`Side`]) and whether trying again can help
//! ([`Problem::retryable`]) — the two facts a caller needs to decide what to do next.

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which party a failure is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The frontend sent something we will not accept (4xx).
    Client,
    /// The provider refused or failed.
    Upstream,
    /// docgate itself failed (disk full, bug).
    Gateway,
}

/// Why a single field failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorKind {
    /// A required field was not sent (yet: multipart fields may still follow).
    Missing,
    /// The field was sent but its value is not acceptable.
    Invalid,
    /// The provider does not know this field.
    Unknown,
}

/// One bad field in an `invalid_metadata` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub message: String,
}

impl FieldError {
    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("`{field}` is required");
        FieldError {
            field,
            kind: FieldErrorKind::Missing,
            message,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub fn unknown(field: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("`{field}` is not a field this provider accepts");
        FieldError {
            field,
            kind: FieldErrorKind::Unknown,
            message,
        }
    }
}

/// An RFC 9457 problem with docgate's stable `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub title: Cow<'static, str>,
    pub detail: Option<String>,
    pub side: Side,
    pub errors: Vec<FieldError>,
    /// Sent as the `Retry-After` header (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// Extension members, e.g. `declared_type`/`sniffed_type` or the upstream status.
    pub extra: Map<String, Value>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl Problem {
    /// The general constructor; prefer the named ones below so codes stay consistent.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        let side = if status.is_server_error() {
            Side::Gateway
        } else {
            Side::Client
        };
        Problem {
            status,
            code: code.into(),
            title: title.into(),
            detail: None,
            side,
            errors: Vec::new(),
            retry_after: None,
            extra: Map::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_side(mut self, side: Side) -> Self {
        self.side = side;
        self
    }

    pub fn with_extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether the same request may succeed later without being changed.
    pub fn retryable(&self) -> bool {
        matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        ) || (self.side == Side::Gateway && self.status.is_server_error())
    }

    pub fn payload_too_large(limit: u64, what: &str) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
        )
        .with_detail(format!("{what} exceeds the limit of {limit} bytes"))
        .with_extra("limit", limit)
    }

    pub fn payload_too_small(min: u64, actual: u64, what: &str) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "payload_too_small",
            "Payload too small",
        )
        .with_detail(format!(
            "{what} is {actual} bytes; at least {min} bytes are required"
        ))
        .with_extra("minimum", min)
        .with_extra("size", actual)
    }

    pub fn length_required() -> Self {
        Problem::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "Length required",
        )
        .with_detail("this upload needs a Content-Length header")
    }

    pub fn unsupported_media_type(found: &str, accepted: &[String]) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail(format!(
            "the content is {found}; accepted here: {}",
            accepted.join(", ")
        ))
        .with_extra("sniffed_type", found)
        .with_extra("accepted", accepted.to_vec())
    }

    pub fn media_type_mismatch(declared: &str, sniffed: &str) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media_type_mismatch",
            "Declared media type does not match the content",
        )
        .with_detail(format!(
            "declared as {declared}, but the bytes are {sniffed}"
        ))
        .with_extra("declared_type", declared)
        .with_extra("sniffed_type", sniffed)
    }

    pub fn invalid_metadata(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_metadata",
            "Invalid upload metadata",
        )
        .with_detail(detail);
        p.errors = errors;
        p
    }

    /// Shorthand for one bad field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Problem::invalid_metadata(vec![FieldError::invalid(field, message)])
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", "Bad request").with_detail(detail)
    }

    pub fn unauthorized() -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            .with_detail("send `Authorization: Bearer <api key>`")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found").with_detail(detail)
    }

    /// The provider refused the document; `upstream_status` is its HTTP status.
    pub fn provider_rejected(upstream_status: Option<u16>, summary: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::BAD_GATEWAY,
            "provider_rejected",
            "Provider rejected the upload",
        )
        .with_detail(summary)
        .with_side(Side::Upstream);
        if let Some(status) = upstream_status {
            p = p.with_extra("upstream_status", status);
        }
        p
    }

    pub fn provider_unavailable(retry_after: Duration, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "Provider unavailable",
        )
        .with_detail(detail)
        .with_side(Side::Upstream)
        .with_retry_after(retry_after)
    }

    pub fn timeout(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "Timeout")
            .with_detail(detail)
            .with_side(Side::Upstream)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .with_detail(detail)
        .with_side(Side::Gateway)
    }

    /// The problem+json body.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("urn:docgate:problem:{}", self.code)),
        );
        body.insert("title".into(), Value::String(self.title.to_string()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("code".into(), Value::String(self.code.to_string()));
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), Value::String(detail.clone()));
        }
        body.insert(
            "side".into(),
            serde_json::to_value(self.side).unwrap_or(Value::Null),
        );
        if !self.errors.is_empty() {
            body.insert(
                "errors".into(),
                serde_json::to_value(&self.errors).unwrap_or(Value::Null),
            );
        }
        if let Some(after) = self.retry_after {
            body.insert("retry_after".into(), Value::from(retry_after_secs(after)));
        }
        for (k, v) in &self.extra {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }

    /// Rebuild a problem from its JSON form (as stored in the ledger).
    pub fn from_json(value: &Value) -> Option<Problem> {
        let obj = value.as_object()?;
        let status = StatusCode::from_u16(obj.get("status")?.as_u64()? as u16).ok()?;
        let code = obj.get("code")?.as_str()?.to_owned();
        let title = obj
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut p = Problem::new(status, code, title);
        p.detail = obj.get("detail").and_then(Value::as_str).map(str::to_owned);
        if let Some(side) = obj
            .get("side")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
        {
            p.side = side;
        }
        if let Some(errors) = obj
            .get("errors")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
        {
            p.errors = errors;
        }
        p.retry_after = obj
            .get("retry_after")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        const KNOWN: [&str; 8] = [
            "type",
            "title",
            "status",
            "code",
            "detail",
            "side",
            "errors",
            "retry_after",
        ];
        for (k, v) in obj {
            if !KNOWN.contains(&k.as_str()) {
                p.extra.insert(k.clone(), v.clone());
            }
        }
        Some(p)
    }
}

/// The `code` of a problem response, attached as a response extension so a layer can count
/// refusals without parsing bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemCode(pub Cow<'static, str>);

impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        problem_response(&self)
    }
}

/// The `application/problem+json` response for `p`, with `Retry-After` when it has one.
pub fn problem_response(p: &Problem) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::{header, HeaderValue};
    let body = serde_json::to_vec(&p.to_json()).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = (p.status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(after) = p.retry_after {
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs(after).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    res.extensions_mut().insert(ProblemCode(p.code.clone()));
    res
}

/// `Retry-After` wants whole seconds; never advertise 0 (clients would spin).
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0).max(u64::from(after.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_code_fields_and_extras() {
        let p = Problem::invalid_metadata(vec![FieldError::missing("payto")])
            .with_extra("provider", "taler");
        let back = Problem::from_json(&p.to_json()).expect("parses");
        assert_eq!(back, p);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn only_transient_problems_are_retryable() {
        assert!(Problem::provider_unavailable(Duration::from_secs(1), "x").retryable());
        assert!(!Problem::payload_too_large(1, "x").retryable());
        assert!(!Problem::provider_rejected(Some(403), "bad sig").retryable());
    }
}
