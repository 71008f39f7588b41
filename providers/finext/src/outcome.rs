//! Finext's answers mapped onto docgate's four outcomes.
//!
//! Finext answers `{"code": 10200, "msg": "ok"}` on success and publishes no other code, so
//! the rule is simple and conservative:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx with `code` 10200 | `Delivered` |
//! | any non-5xx status with a `{code, msg}` envelope, `code` ≠ 10200 | `Rejected` (`provider_rejected`, `upstream_code`, `upstream_msg`) |
//! | 5xx, 408, 429 | `RetryLater` (honouring `Retry-After`) |
//! | 2xx without a readable envelope | `RetryLater` (a half-written answer is not a verdict) |
//! | 3xx/4xx without an envelope (a proxy's 401, a 404 page) | `Rejected`: retrying cannot fix the address or the credentials |
//! | no answer: connection refused, reset, timeout | `RetryLater` |
//!
//! A retry signs a new `request_id` and `timestamp`, so RetryLater is always safe.

use docgate_core::{
    upstream::{retry_after, summarize_body},
    Outcome, Problem,
};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::submission::Endpoint;

/// The code of a successful Finext call.
pub const OK_CODE: i64 = 10200;

/// What was sent, for references and messages.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub endpoint: Endpoint,
    pub username: &'a str,
    pub request_id: &'a str,
}

/// Finext's answer envelope, if the body is one. `code` may come as a number or a numeric
/// string; both mean the same to a lenient client.
pub fn envelope(body: &[u8]) -> Option<(i64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let code = match obj.get("code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let msg = match obj.get("msg") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Some((code, msg))
}

pub fn interpret(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    attempt: &Attempt<'_>,
) -> Outcome {
    let upstream = Some(status.as_u16());
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return Outcome::RetryLater {
            after: retry_after(headers),
            reason: format!(
                "Finext answered HTTP {}: {}",
                status.as_u16(),
                summarize_body(body)
            ),
            upstream_status: upstream,
        };
    }
    match envelope(body) {
        Some((OK_CODE, msg)) if status.is_success() => Outcome::Delivered {
            reference: json!({
                "endpoint": attempt.endpoint.name(),
                "username": attempt.username,
                "request_id": attempt.request_id,
                "code": OK_CODE,
                "msg": msg,
            }),
            owned: Vec::new(),
            upstream_status: upstream,
        },
        Some((code, msg)) if code != OK_CODE => {
            let summary = format!(
                "Finext refused {} (request_id {}): code {code}: {}",
                attempt.endpoint.name(),
                attempt.request_id,
                if msg.is_empty() {
                    "(no message)"
                } else {
                    msg.as_str()
                }
            );
            Outcome::rejected(
                Problem::provider_rejected(upstream, summary)
                    .with_extra("upstream_code", code)
                    .with_extra("upstream_msg", msg)
                    .with_extra("request_id", attempt.request_id),
                upstream,
            )
        }
        _ if status.is_success() => Outcome::RetryLater {
            after: None,
            reason: format!(
                "Finext answered HTTP {} without a readable {{code, msg}} envelope: {}",
                status.as_u16(),
                summarize_body(body)
            ),
            upstream_status: upstream,
        },
        _ => Outcome::rejected(
            Problem::provider_rejected(
                upstream,
                format!(
                    "Finext answered HTTP {} to {}: {}",
                    status.as_u16(),
                    attempt.endpoint.name(),
                    summarize_body(body)
                ),
            ),
            upstream,
        ),
    }
}

/// A request that got no answer. All of these are worth another attempt.
pub fn transport_failure(e: &reqwest::Error, timeout: std::time::Duration) -> Outcome {
    let reason = if e.is_timeout() {
        format!("Finext did not answer within {timeout:?}")
    } else if e.is_connect() {
        format!("cannot connect to Finext: {}", error_chain(e))
    } else {
        format!("the request to Finext failed: {}", error_chain(e))
    };
    Outcome::retry(reason, None)
}

/// reqwest's top-level message is generic ("error sending request"); the cause is below.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPT: Attempt<'static> = Attempt {
        endpoint: Endpoint::AddAddressProof,
        username: "lili111",
        request_id: "45242f41f20b456092d1b48caa76ce13",
    };

    fn answer(status: u16, body: &str) -> Outcome {
        let status = StatusCode::from_u16(status).expect("status");
        interpret(status, &HeaderMap::new(), body.as_bytes(), &ATTEMPT)
    }

    #[test]
    fn code_10200_is_delivered_with_a_reference() {
        match answer(200, r#"{"code": 10200, "msg": "ok"}"#) {
            Outcome::Delivered {
                reference,
                upstream_status,
                ..
            } => {
                assert_eq!(upstream_status, Some(200));
                assert_eq!(reference["endpoint"], "addAddressProof");
                assert_eq!(reference["request_id"], ATTEMPT.request_id);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            answer(200, r#"{"code":"10200","msg":"ok"}"#),
            Outcome::Delivered { .. }
        ));
    }

    #[test]
    fn other_codes_are_rejected_with_code_and_message() {
        match answer(200, r#"{"code": 10401, "msg": "sign mismatch"}"#) {
            Outcome::Rejected { problem: p, .. } => {
                assert_eq!(p.code, "provider_rejected");
                assert_eq!(p.extra["upstream_code"], 10401);
                assert_eq!(p.extra["upstream_msg"], "sign mismatch");
                assert_eq!(p.extra["upstream_status"], 200);
                assert!(p.detail.as_deref().unwrap_or("").contains("10401"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            answer(404, r#"{"code":10404,"msg":"no such endpoint"}"#),
            Outcome::Rejected { .. }
        ));
    }

    #[test]
    fn server_errors_and_throttling_are_retried_with_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("12"),
        );
        let o = interpret(
            StatusCode::SERVICE_UNAVAILABLE,
            &h,
            br#"{"code":10503,"msg":"busy"}"#,
            &ATTEMPT,
        );
        assert_eq!(
            o,
            Outcome::RetryLater {
                after: Some(std::time::Duration::from_secs(12)),
                reason: r#"Finext answered HTTP 503: {"code":10503,"msg":"busy"}"#.into(),
                upstream_status: Some(503)
            }
        );
        assert!(!answer(500, "").is_final());
        assert!(!answer(429, "").is_final());
    }

    #[test]
    fn malformed_success_answers_are_retried_and_bare_client_errors_rejected() {
        assert!(!answer(200, "<html>gateway</html>").is_final());
        assert!(!answer(200, r#"{"msg":"ok"}"#).is_final());
        assert!(!answer(200, "").is_final());
        assert!(matches!(
            answer(401, "Unauthorized"),
            Outcome::Rejected { .. }
        ));
        assert!(matches!(answer(302, ""), Outcome::Rejected { .. }));
    }
}
