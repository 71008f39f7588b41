//! `/v1/upload-sessions`: minting, reading, revoking and completing upload sessions.
//!
//! - `POST /v1/upload-sessions` (API key): `{provider, fields, slots?, max_bytes?,
//!   expires_in?, origin?}` → 201 `{id, token, expires_at, upload_url, tus_url, …}`. The
//!   fields are checked by the provider now; only fields that are merely missing may come
//!   later (from the browser), never different values. `max_bytes` bounds each document.
//! - `GET /v1/upload-sessions/{id}` (API key of its tenant, or its token): its state, its
//!   documents, the fields still needed and, once accepted, the receipt.
//! - `DELETE /v1/upload-sessions/{id}` (API key): revoke; its received bytes are removed.
//! - `POST /v1/upload-sessions/{id}/complete` (token or API key; optional `{fields}`):
//!   delivers the session's documents — answered exactly like `POST /v1/uploads`.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::Response,
    Json,
};
use docgate_core::{provider::fields::only_missing, FieldError, Fields, Problem, Provider, Slots};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    app::AppState,
    auth::Caller,
    host::ledger_problem,
    http::json_response,
    ledger::{now_ms, SessionRecord, SessionState, TusState},
    receipt::receipt,
    routes::uploads::{provider_for, session_upload},
    sessions::{self, Uploader},
    spool_keys,
};

type Result<T> = std::result::Result<T, Problem>;

/// Default and longest session lifetimes.
const DEFAULT_EXPIRES_IN: u64 = 15 * 60;
const MAX_EXPIRES_IN: u64 = 24 * 3600;

/// `POST /v1/upload-sessions`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    provider: String,
    #[serde(default)]
    fields: Fields,
    #[serde(default)]
    slots: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole_number")]
    max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    expires_in: Option<u64>,
    #[serde(default)]
    origin: Option<String>,
}

/// A non-negative whole number, also when written `900.0` (JSON Schema, and so the
/// OpenAPI document, counts that as an integer; serde's `u64` alone would not).
fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    /// Above this, a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a whole number of at least 0"))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("the body: {e}")))
}

/// The slots a session takes: those asked for (each a slot of the provider), or the
/// provider's required ones (`file` for providers with free slot names).
fn session_slots(provider: &dyn Provider, asked: Option<Vec<String>>) -> Result<Vec<String>> {
    let policy = provider.policy();
    let slots = match asked {
        Some(list) if !list.is_empty() => list,
        Some(_) => return Err(Problem::invalid_field("slots", "at least one slot")),
        None => match &policy.slots {
            Slots::Named { slots } => slots
                .iter()
                .filter(|s| s.required)
                .map(|s| s.name.clone())
                .collect(),
            Slots::Free { .. } => vec!["file".to_owned()],
        },
    };
    if slots.is_empty() {
        return Err(Problem::invalid_field(
            "slots",
            "this provider requires no slot by default: name the slots this session takes",
        ));
    }
    let mut errors = Vec::new();
    for slot in &slots {
        if let Err(p) = policy.check_slot(slot) {
            errors.extend(p.errors);
        }
    }
    if slots.len() > policy.max_documents() {
        errors.push(FieldError::invalid(
            "slots",
            format!("at most {} documents per upload", policy.max_documents()),
        ));
    }
    if errors.is_empty() {
        Ok(slots)
    } else {
        Err(Problem::invalid_metadata(errors))
    }
}

/// Check a new session's request as far as it can be checked now.
fn check_new(app: &AppState, tenant: &crate::tenants::Tenant, req: &NewSession) -> Result<()> {
    let provider = provider_for(app, tenant, &req.provider)?;
    // Fields merely missing may come from the browser; wrong ones fail now.
    if let Err(p) = provider.prepare(&req.fields) {
        if !only_missing(&p) {
            return Err(p);
        }
    }
    let expires_in = req.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(Problem::invalid_field(
            "expires_in",
            format!("seconds from 1 to {MAX_EXPIRES_IN}"),
        ));
    }
    if req.max_bytes == Some(0) {
        return Err(Problem::invalid_field("max_bytes", "at least 1 byte"));
    }
    if let Some(origin) = &req.origin {
        if !tenant.cors_origins.iter().any(|o| o == origin) {
            return Err(Problem::invalid_field(
                "origin",
                "not one of this tenant's cors_origins",
            ));
        }
    }
    Ok(())
}

pub async fn create(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    body: Bytes,
) -> Result<Response> {
    mint(&app, &tenant, &body).await
}

/// A new session for `tenant` from a `POST /v1/upload-sessions` body (also what the
/// sandbox's page uses, with the sandbox tenant).
pub async fn mint(
    app: &AppState,
    tenant: &crate::tenants::Tenant,
    body: &[u8],
) -> Result<Response> {
    let req: NewSession = json_body(body)?;
    check_new(app, tenant, &req)?;
    let provider = provider_for(app, tenant, &req.provider)?;
    // A session for another tenant's customer is refused now, not at its completion (a
    // single-document session would otherwise take the browser's bytes and never deliver).
    if let Ok(prepared) = provider.prepare(&req.fields) {
        crate::routes::uploads::claim_subjects(app, &tenant.name, provider.as_ref(), &prepared)
            .await?;
    }
    let slots = session_slots(provider.as_ref(), req.slots)?;
    let token = sessions::new_token();
    let now = now_ms();
    let expires_in = req.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    let session = SessionRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        tenant: tenant.name.clone(),
        provider: req.provider,
        token_hash: sessions::token_hash(&token),
        fields: req.fields,
        slots,
        max_bytes: req.max_bytes,
        origin: req.origin,
        state: SessionState::Open,
        upload_id: crate::ledger::new_upload_id(),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(expires_in * 1000).unwrap_or(i64::MAX)),
    };
    app.ledger
        .create_session(session.clone())
        .await
        .map_err(|e| ledger_problem(&e))?;
    let mut body = describe(app, &session, &[]).await?;
    body["token"] = Value::String(token);
    let mut res = json_response(http::StatusCode::CREATED, &body);
    if let Ok(v) = http::HeaderValue::from_str(&format!("/v1/upload-sessions/{}", session.id)) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(res)
}

/// The session `id`, for its tenant's API key or its own token (404 otherwise).
async fn owned(app: &AppState, who: &Uploader, id: &str) -> Result<SessionRecord> {
    let session = app
        .ledger
        .session(id)
        .await
        .map_err(|e| ledger_problem(&e))?;
    let mine = session.filter(|s| match who {
        Uploader::ApiKey(t) => s.tenant == t.name,
        Uploader::Session(_, own) => own.id == s.id,
    });
    mine.ok_or_else(|| Problem::not_found(format!("no upload session `{id}`")))
}

/// What `GET` shows of a session.
async fn describe(
    app: &AppState,
    session: &SessionRecord,
    documents: &[crate::ledger::TusRecord],
) -> Result<Value> {
    let state = if session.state == SessionState::Open && now_ms() >= session.expires_at {
        SessionState::Expired
    } else {
        session.state
    };
    let docs: Vec<Value> = documents
        .iter()
        .filter(|d| matches!(d.state, TusState::Receiving | TusState::Complete))
        .map(|d| {
            json!({
                "slot": d.slot, "tus_id": d.id, "state": d.state.as_str(),
                "length": d.length, "received": d.received, "document": d.meta,
            })
        })
        .collect();
    let mut body = json!({
        "id": session.id,
        "provider": session.provider,
        "state": state.as_str(),
        "slots": session.slots,
        "fields": session.fields,
        "fields_needed": fields_needed(app, session),
        "max_bytes": session.max_bytes,
        "origin": session.origin,
        "expires_at": crate::receipt::rfc3339(session.expires_at),
        "upload_url": "/v1/uploads",
        "tus_url": "/v1/tus/",
        "complete_url": format!("/v1/upload-sessions/{}/complete", session.id),
        "upload_id": session.upload_id,
        "documents": docs,
    });
    // What a page needs to check files before sending them (a token may not read
    // `/v1/providers`).
    if let Some(provider) = app.registry.get(&session.provider) {
        body["provider_info"] = json!({
            "description": provider.description(),
            "fields": provider.fields(),
            "policy": provider.policy(),
        });
    }
    if session.state == SessionState::Accepted {
        if let Ok(Some(rec)) = app.ledger.get(&session.upload_id).await {
            body["receipt"] = receipt(&rec);
        }
    }
    Ok(body)
}

/// Fields the session does not have yet and the provider needs (the browser must send
/// them): the required ones, and those the provider reports missing given the fields the
/// session has (e.g. Finext's address fields once `kind` is `address`).
fn fields_needed(app: &AppState, session: &SessionRecord) -> Vec<String> {
    let Some(provider) = app.registry.get(&session.provider) else {
        return Vec::new();
    };
    let mut needed: Vec<String> = provider
        .fields()
        .into_iter()
        .filter(|f| f.required && !session.fields.contains_key(&f.name))
        .map(|f| f.name)
        .collect();
    if let Err(p) = provider.prepare(&session.fields) {
        for e in p.errors {
            if e.kind == docgate_core::FieldErrorKind::Missing && !needed.contains(&e.field) {
                needed.push(e.field);
            }
        }
    }
    needed
}

pub async fn get(
    State(app): State<AppState>,
    who: Uploader,
    Path(id): Path<String>,
) -> Result<Response> {
    let session = owned(&app, &who, &id).await?;
    if let Uploader::Session(..) = who {
        crate::sessions::check_readable(&session, now_ms())?;
    }
    let documents = app
        .ledger
        .session_documents(&session.id)
        .await
        .map_err(|e| ledger_problem(&e))?;
    Ok(json_response(
        http::StatusCode::OK,
        &describe(&app, &session, &documents).await?,
    ))
}

pub async fn revoke(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let session = owned(&app, &Uploader::ApiKey(tenant), &id).await?;
    let revoked = app
        .ledger
        .session_state(&session.id, &[SessionState::Open], SessionState::Revoked)
        .await
        .map_err(|e| ledger_problem(&e))?;
    if !revoked && session.state != SessionState::Revoked {
        return Err(Problem::new(
            http::StatusCode::CONFLICT,
            "session_not_revocable",
            "Session not revocable",
        )
        .with_detail(format!("the session is {}", session.state.as_str())));
    }
    remove_documents(&app, &session.id).await?;
    Ok(json_response(
        http::StatusCode::OK,
        &json!({ "id": session.id, "state": "revoked" }),
    ))
}

/// End every document of a session and remove its bytes.
pub async fn remove_documents(app: &AppState, session_id: &str) -> Result<()> {
    let documents = app
        .ledger
        .session_documents(session_id)
        .await
        .map_err(|e| ledger_problem(&e))?;
    // One removal for all of them: the request waits for it once.
    let mut keys = Vec::new();
    for doc in documents {
        if let Ok(Some(ended)) = app
            .ledger
            .end_tus(&doc.id, TusState::Terminated, false, now_ms())
            .await
        {
            keys.extend(ended.pieces.iter().map(|p| p.key.clone()));
        }
    }
    spool_keys::remove_for_request(&app.spool, keys).await;
    Ok(())
}

/// `POST /v1/upload-sessions/{id}/complete`'s optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Completion {
    #[serde(default)]
    fields: Fields,
}

pub async fn complete(
    State(app): State<AppState>,
    who: Uploader,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let session = owned(&app, &who, &id).await?;
    let extra: Completion = if body.is_empty() {
        Completion::default()
    } else {
        json_body(&body)?
    };
    let by_tenant = matches!(who, Uploader::ApiKey(_));
    session_upload(
        &app,
        who.tenant().clone(),
        session,
        extra.fields,
        &headers,
        by_tenant,
    )
    .await
}

/// Merge the browser's fields into the session's: new names only; a different value for a
/// field the session fixed is refused.
pub fn merge_fields(session: &SessionRecord, extra: Fields) -> Result<Fields> {
    let mut merged = session.fields.clone();
    let mut conflicts = Vec::new();
    for (name, value) in extra {
        match merged.get(&name) {
            Some(fixed) if fixed != &value => conflicts.push(FieldError::invalid(
                &name,
                "fixed by the upload session; it cannot be changed",
            )),
            _ => {
                merged.insert(name, value);
            }
        }
    }
    if conflicts.is_empty() {
        Ok(merged)
    } else {
        Err(Problem::invalid_metadata(conflicts))
    }
}

/// How long a completing session waits to be told it is busy.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

#[allow(dead_code)]
fn unused(_: Json<Value>) {}
