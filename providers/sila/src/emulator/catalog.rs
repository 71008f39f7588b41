//! The two read-only endpoints real clients call around an upload.
//!
//! * `GET /0.2/getmessage?emptymessage=<X>TestMessage` — the Python SDK's `App()` fetches
//!   five message templates (`header`, `entity`, `identity`, `crypto`, `linkAccount`) before
//!   anything else and keys them by their `message` field; without these it cannot start.
//! * `POST /0.2/document_types?page=&per_page=` — the supported types, paged (at most 100 per
//!   page), signed by the app only. The Python SDK sends this JSON body *without* a
//!   Content-Type, so the body is parsed whatever the header says.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::{
    documents::message_header,
    envelope::{self, failure, Failure},
    EmulatorState,
};
use crate::doctypes::DOCUMENT_TYPES;

/// JSON bodies of the non-upload endpoints are small; this bounds what is buffered.
const MAX_JSON_BODY: usize = 64 * 1024;
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 100;

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    // A leading `&` (the Python SDK writes `?&page=1`) is an empty pair and is skipped.
    serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default()
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The template for each message the SDK asks for. Shapes follow Sila's documented messages;
/// the SDK only needs `message` (its key) and keeps the rest as a template.
fn template(kind: &str) -> Option<Value> {
    let header = json!({
        "created": 1234567890,
        "app_handle": "handle.silamoney.eth",
        "user_handle": "user.silamoney.eth",
        "version": "0.2",
        "crypto": "ETH",
        "reference": "ref"
    });
    let body = match kind {
        "header" => json!({"header": header, "message": "header_msg"}),
        "entity" => json!({
            "header": header,
            "message": "entity_msg",
            "address": {
                "address_alias": "", "street_address_1": "", "street_address_2": "",
                "city": "", "state": "", "country": "US", "postal_code": ""
            },
            "identity": {"identity_alias": "SSN", "identity_value": ""},
            "contact": {"contact_alias": "", "phone": "", "email": ""},
            "crypto_entry": {"crypto_alias": "", "crypto_address": "", "crypto_code": "ETH"},
            "entity": {
                "birthdate": "", "entity_name": "", "first_name": "", "last_name": "",
                "relationship": "user", "type": "individual"
            }
        }),
        "identity" => json!({
            "header": header,
            "message": "identity_msg",
            "identity": {"identity_alias": "SSN", "identity_value": ""}
        }),
        "crypto" => json!({
            "header": header,
            "message": "crypto_msg",
            "crypto_entry": {"crypto_alias": "", "crypto_address": "", "crypto_code": "ETH"}
        }),
        "linkAccount" => json!({
            "header": header,
            "message": "link_account_msg",
            "public_token": "",
            "account_name": "",
            "selected_account_id": ""
        }),
        _ => return None,
    };
    Some(body)
}

pub async fn get_message(RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    let kind = query_value(&pairs, "emptymessage")
        .and_then(|v| v.strip_suffix("TestMessage"))
        .unwrap_or_default();
    match template(kind) {
        Some(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        None => Failure::bad_request(json!({
            "emptymessage": "one of headerTestMessage, entityTestMessage, identityTestMessage, cryptoTestMessage, linkAccountTestMessage"
        }))
        .into_response(),
    }
}

pub async fn document_types(
    State(state): State<Arc<EmulatorState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    match list(&state, query.as_deref(), &headers, body, started).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn list(
    state: &EmulatorState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response, Failure> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let early = if declared.is_some_and(|n| n > MAX_JSON_BODY as u64) {
        Err(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            envelope::message_for(StatusCode::PAYLOAD_TOO_LARGE),
        ))
    } else {
        state.registry.presented(headers, false)
    };
    let presented = match early {
        Ok(presented) => presented,
        Err(refusal) => {
            docgate_emulator::drain_in_background(body);
            return Err(refusal);
        }
    };
    let raw = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|_| {
            failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                envelope::message_for(StatusCode::PAYLOAD_TOO_LARGE),
            )
        })?;
    let message: Map<String, Value> = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(Failure::bad_request(
                json!({"body": "the body must be a JSON object with a header"}),
            ))
        }
    };
    let header = message_header(&message, false)?;
    // With a user_handle in the header, the user must be registered too (no user signature
    // is required here: the app alone may list types).
    state
        .registry
        .verify(&presented, &raw, &header.app_handle, None)
        .map_err(|f| f.with_reference(header.reference.clone()))?;
    state
        .check_fresh(header.created)
        .map_err(|f| f.with_reference(header.reference.clone()))?;

    let pairs = query_pairs(query);
    let mut errors = Map::new();
    let mut number = |key: &str, default: u64, max: u64| -> u64 {
        match query_value(&pairs, key).map(|v| v.trim().parse::<u64>()) {
            None => default,
            Some(Ok(n)) if (1..=max).contains(&n) => n,
            Some(_) => {
                errors.insert(
                    key.into(),
                    format!("{key} must be an integer from 1 to {max}").into(),
                );
                default
            }
        }
    };
    let page = number("page", 1, u64::from(u32::MAX));
    let per_page = number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE);
    if !errors.is_empty() {
        return Err(Failure::bad_request(Value::Object(errors)).with_reference(header.reference));
    }
    let known = &state.options.document_types;
    let total = known.len() as u64;
    let total_pages = total.div_ceil(per_page);
    let types: Vec<Value> = known
        .iter()
        .skip(usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX))
        .take(per_page as usize)
        .map(|name| {
            // Types added through the options have no documented label: show the name.
            let documented = DOCUMENT_TYPES.iter().find(|t| t.name == name);
            json!({
                "name": name,
                "label": documented.map_or(name.as_str(), |t| t.label),
                "identity_type": documented.map_or("other", |t| t.identity_type),
            })
        })
        .collect();
    let mut fields = Map::new();
    fields.insert(
        "reference".into(),
        header
            .reference
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            .into(),
    );
    fields.insert(
        "pagination".into(),
        json!({
            "returned_count": types.len(),
            "total_count": total,
            "current_page": page,
            "total_pages": total_pages,
        }),
    );
    fields.insert("document_types".into(), Value::Array(types));
    Ok(envelope::success(
        "Document type details returned.",
        started,
        fields,
    ))
}
