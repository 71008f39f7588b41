//! Incoming OST webhooks: check the signature and the age, then name the event.
//!
//! OST signs an event with the webhook's own secret over
//! `FULL_WEBHOOK_URL + "?" + nested_query(event params + request_timestamp)` (the same Rack
//! query and `~` rule as API requests, see [`crate::signing`]), and sends `signature` as one
//! more parameter. The URL is the one entered in OST's dashboard — scheme, host, path and
//! trailing slash included — so the verifier takes it from configuration, never from the
//! request (a proxy in front of docgate changes what the request looks like).
//!
//! The gateway, which has the ledger, keeps each event id once (a second delivery of the same
//! id is acknowledged, not recorded again); this module hands it the id. OST retries a failed delivery up to 6 times over 63 hours, so the age
//! limit applies to `request_timestamp` (set afresh for each attempt), not to `created_at`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::signing;

/// A verified event.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// OST's event id: the replay key.
    pub id: String,
    /// `user_register`, `kyc_submit`, `kyc_status_update`, …
    pub name: String,
    /// `user` or `user_kyc`.
    pub event_type: String,
    /// `web`, `api` or `kyc_system`.
    pub source: String,
    pub created_at: Option<i64>,
    pub request_timestamp: i64,
    /// The event's `data` member (`{"result_type": "user_kyc", "user_kyc": {...}}`).
    pub data: Value,
    /// Every parameter as received, without `signature`.
    pub params: Map<String, Value>,
}

/// Why an incoming webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook body is not an object of event parameters: {0}")]
    Malformed(String),
    #[error("the webhook has no `{0}`")]
    Missing(&'static str),
    #[error("the webhook signature does not match")]
    BadSignature,
    #[error(
        "the webhook is stale: request_timestamp is {age_secs} s old (limit {max_age_secs} s)"
    )]
    Stale { age_secs: i64, max_age_secs: u64 },
    #[error("the webhook's request_timestamp is {ahead_secs} s in the future")]
    FromTheFuture { ahead_secs: i64 },
}

/// Parse a webhook body: JSON (what the docs show and the emulator sends) or an
/// `application/x-www-form-urlencoded` Rack query. Without a Content-Type, JSON is tried first.
pub fn params_from_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, WebhookError> {
    let declared_form = content_type.map(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let as_form = || {
        let text = std::str::from_utf8(body)
            .map_err(|_| WebhookError::Malformed("the form body is not UTF-8".into()))?;
        signing::parse_nested_query(text.trim()).map_err(|e| WebhookError::Malformed(e.to_string()))
    };
    if declared_form == Some(true) {
        return as_form();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WebhookError::Malformed("JSON, but not an object".into())),
        Err(_) if declared_form.is_none() => as_form(),
        Err(e) => Err(WebhookError::Malformed(e.to_string())),
    }
}

/// The exact string OST signs for `params` (which must not contain `signature`).
pub fn string_to_sign(webhook_url: &str, params: &Map<String, Value>) -> String {
    signing::string_to_sign(webhook_url, &signing::nested_query(params))
}

/// Verify an event received at the configured `webhook_url`. `now` is unix seconds.
pub fn verify(
    secret: &str,
    webhook_url: &str,
    params: &Map<String, Value>,
    now: i64,
    max_age: Duration,
) -> Result<WebhookEvent, WebhookError> {
    let mut params = params.clone();
    let signature = match params.remove("signature") {
        Some(Value::String(s)) => s,
        _ => return Err(WebhookError::Missing("signature")),
    };
    let request_timestamp = integer(params.get("request_timestamp"))
        .ok_or(WebhookError::Missing("request_timestamp"))?;
    if !signing::hmac_matches(secret, &string_to_sign(webhook_url, &params), &signature) {
        return Err(WebhookError::BadSignature);
    }
    let age = now.saturating_sub(request_timestamp);
    let max_age_secs = max_age.as_secs();
    if age > i64::try_from(max_age_secs).unwrap_or(i64::MAX) {
        return Err(WebhookError::Stale {
            age_secs: age,
            max_age_secs,
        });
    }
    // A little clock skew is normal; an event from further ahead than the age limit is not.
    if -age > i64::try_from(max_age_secs).unwrap_or(i64::MAX) {
        return Err(WebhookError::FromTheFuture { ahead_secs: -age });
    }
    let id = text(params.get("id")).ok_or(WebhookError::Missing("id"))?;
    let name = text(params.get("name")).ok_or(WebhookError::Missing("name"))?;
    Ok(WebhookEvent {
        id,
        name,
        event_type: text(params.get("type")).unwrap_or_default(),
        source: text(params.get("source")).unwrap_or_default(),
        created_at: integer(params.get("created_at")),
        request_timestamp,
        data: params.get("data").cloned().unwrap_or(Value::Null),
        params,
    })
}

/// Sign an event as OST does (the emulator's sender; tests): returns the parameters to post,
/// `request_timestamp` and `signature` included.
pub fn sign_event(
    secret: &str,
    webhook_url: &str,
    event: &Map<String, Value>,
    request_timestamp: i64,
) -> Map<String, Value> {
    let mut params = event.clone();
    params.remove("signature");
    params.insert(
        "request_timestamp".into(),
        Value::String(request_timestamp.to_string()),
    );
    let signature = signing::hmac_hex(secret, &string_to_sign(webhook_url, &params));
    params.insert("signature".into(), Value::String(signature));
    params
}

/// Ids and timestamps arrive as strings (`"236"`) or numbers; both mean the same.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Map<String, Value> {
        match json!({"id": "7", "name": "kyc_submit", "type": "user_kyc", "source": "api",
                     "created_at": "1700000000", "data": {"result_type": "user_kyc"}})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_signed_event_verifies_and_names_itself() {
        let url = "https://gw.example/v1/webhooks/ost";
        let params = sign_event("whsec", url, &event(), 1_700_000_100);
        let ev = verify(
            "whsec",
            url,
            &params,
            1_700_000_105,
            Duration::from_secs(300),
        )
        .expect("valid");
        assert_eq!((ev.id.as_str(), ev.name.as_str()), ("7", "kyc_submit"));
        assert_eq!(ev.request_timestamp, 1_700_000_100);
        assert_eq!(ev.created_at, Some(1_700_000_000));
        assert!(!ev.params.contains_key("signature"));
    }

    #[test]
    fn another_url_or_secret_or_a_far_future_time_is_refused() {
        let url = "https://gw.example/v1/webhooks/ost";
        let params = sign_event("whsec", url, &event(), 1_700_000_100);
        let max = Duration::from_secs(300);
        assert_eq!(
            verify("whsec", &format!("{url}/"), &params, 1_700_000_100, max),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify("other", url, &params, 1_700_000_100, max),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify("whsec", url, &params, 1_699_990_000, max),
            Err(WebhookError::FromTheFuture { ahead_secs: 10_100 })
        );
        let mut unsigned = params.clone();
        unsigned.remove("signature");
        assert_eq!(
            verify("whsec", url, &unsigned, 1_700_000_100, max),
            Err(WebhookError::Missing("signature"))
        );
    }

    #[test]
    fn form_and_json_bodies_parse_to_the_same_parameters() {
        let url = "https://gw.example/h";
        let params = sign_event("s", url, &event(), 5);
        let json_body = serde_json::to_vec(&params).expect("json");
        let form_body = signing::nested_query(&params);
        let from_json = params_from_body(Some("application/json"), &json_body).expect("json");
        let from_form = params_from_body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            form_body.as_bytes(),
        )
        .expect("form");
        assert_eq!(from_json, from_form);
        let undeclared = params_from_body(None, form_body.as_bytes()).expect("form, undeclared");
        assert_eq!(undeclared, from_form);
        assert!(params_from_body(None, b"[1]").is_err());
        assert!(params_from_body(Some("application/json"), form_body.as_bytes()).is_err());
    }
}
