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
    envelope::{self, Failure},
    signed::{query_pairs, query_value, read_signed, Paging},
    EmulatorState,
};
use crate::doctypes::DOCUMENT_TYPES;

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
    // The app alone may list types: no user signature is required here.
    let signed = read_signed(state, headers, body, false).await?;
    let reference = signed.header.reference;
    let pairs = query_pairs(query);
    let mut errors = Map::new();
    let paging = Paging::from_query(&pairs, &mut errors);
    if !errors.is_empty() {
        return Err(Failure::bad_request(Value::Object(errors)).with_reference(reference));
    }
    let known = state.options.document_types.iter().map(|name| {
        // Types added through the options have no documented label: show the name.
        let documented = DOCUMENT_TYPES.iter().find(|t| t.name == name);
        json!({
            "name": name,
            "label": documented.map_or(name.as_str(), |t| t.label),
            "identity_type": documented.map_or("other", |t| t.identity_type),
        })
    });
    let (types, pagination) = paging.slice(known.collect());
    let mut fields = Map::new();
    fields.insert(
        "reference".into(),
        reference
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            .into(),
    );
    fields.insert("pagination".into(), pagination);
    fields.insert("document_types".into(), Value::Array(types));
    Ok(envelope::success(
        "Document type details returned.",
        started,
        fields,
    ))
}
