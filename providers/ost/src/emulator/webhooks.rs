//! Sending signed webhook events, as OST does, to a receiver under test.
//!
//! The body is the event's parameters plus `request_timestamp` and `signature` as JSON (the
//! shape OST's docs show); the signature covers the receiver's full URL plus the sorted
//! parameters ([`crate::webhook::sign_event`]). OST expects a 200 within 10 s.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::state::UserKyc;
use crate::{api::describe, webhook};

/// OST gives a receiver this long to answer.
const RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    pub status: u16,
    /// The first bytes of the receiver's answer, on one line.
    pub body: String,
    /// The parameters that were posted (signature included).
    pub sent: Map<String, Value>,
}

/// Sign `event` for `url` with `secret` and post it.
pub async fn send(
    http: &reqwest::Client,
    secret: &str,
    url: &str,
    event: Map<String, Value>,
) -> Result<WebhookDelivery, String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let params = webhook::sign_event(secret, url, &event, now);
    let response = http
        .post(url)
        .timeout(RECEIVER_TIMEOUT)
        .json(&params)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let body = docgate_core::upstream::read_bounded(
        response.bytes_stream(),
        docgate_core::upstream::MAX_ERROR_BODY,
    )
    .await
    .unwrap_or_default();
    Ok(WebhookDelivery {
        status,
        body: docgate_core::upstream::summarize_body(&body),
        sent: params,
    })
}

/// Fill in what every OST event has when a caller left it out.
pub fn complete_event(mut event: Map<String, Value>, id: u64, now: i64) -> Map<String, Value> {
    let defaults = [
        ("id", Value::String(id.to_string())),
        ("created_at", Value::String(now.to_string())),
        ("version", Value::String("v1".into())),
        ("source", Value::String("kyc_system".into())),
    ];
    for (k, v) in defaults {
        event.entry(k).or_insert(v);
    }
    event
}

/// The `kyc_submit` event OST sends after a submission made through the API.
pub fn kyc_submit_event(id: u64, record: &UserKyc, now: i64) -> Map<String, Value> {
    // OST's events carry every value as a string.
    let user_kyc: Map<String, Value> = record
        .to_json()
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_array())
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), Value::String(text))
                })
                .collect()
        })
        .unwrap_or_default();
    let event = json!({
        "id": id.to_string(),
        "name": "kyc_submit",
        "type": "user_kyc",
        "source": "api",
        "description": "User has submitted kyc data",
        "version": "v1",
        "created_at": now.to_string(),
        "data": {"result_type": "user_kyc", "user_kyc": user_kyc},
    });
    match event {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
