//! One request, from socket to verdict.
//!
//! 1. The body is streamed to a temporary file while counted (the announced `Content-Length`
//!    is checked first); nothing is held in memory.
//! 2. On a blocking thread the file is scanned ([`super::scan`]): short fields as text,
//!    documents base64-decoded straight into files.
//! 3. Checks run in a fixed order and the first failure is the answer: `authorization` header
//!    → Content-Type and JSON shape → `api_key` → presence of the signed fields →
//!    `request_id` length → timestamp window → `sign` → replay → metadata rules → documents
//!    (base64, size, emptiness, extension vs. sniffed type).
//! 4. Accepted documents move to `documents/<id>/`, the submission is journaled, and the
//!    answer is `{"code": 10200, "msg": "ok"}`.
//!
//! Temporary files are removed on every path out, including refusals and panics.

use std::{
    collections::BTreeMap,
    fs,
    io::BufReader,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use http::{header, HeaderMap};
use tokio::io::AsyncWriteExt;

use super::{
    codes::{self, Refusal},
    rules::{self, CheckedDocument},
    scan::{scan, DecodedDocument, ScanSpec, Scanned},
    state::StoredSubmission,
    App, Settings,
};
use crate::{
    base64_stream::encoded_len,
    dates,
    sign::{constant_time_eq, sign},
    submission::Endpoint,
};

/// Room for the JSON around the documents (field names, metadata, signature).
const FIELDS_ALLOWANCE: u64 = 64 * 1024;
/// The longest text value kept (names, numbers, dates are far shorter).
const MAX_TEXT: usize = 4096;

const COMMON: [&str; 5] = ["api_key", "request_id", "timestamp", "username", "sign"];
const ADDRESS_TEXTS: [&str; 6] = [
    "address_type",
    "address_issued_by",
    "address_issued_date",
    "address_language",
    "address_proof_front_extension",
    "address_proof_back_extension",
];
const ID_TEXTS: [&str; 8] = [
    "id_type",
    "id_number",
    "issued_by",
    "issued_date",
    "expiration_date",
    "language",
    "id_front_extension",
    "id_back_extension",
];

/// Files that exist only while a request is handled.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn body_limit(app: &App, endpoint: Endpoint) -> u64 {
    match endpoint.document_fields() {
        Some(_) => 2 * encoded_len(app.settings.max_document_bytes) + FIELDS_ALLOWANCE,
        None => FIELDS_ALLOWANCE,
    }
}

pub async fn handle(app: Arc<App>, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let limit = body_limit(&app, endpoint);
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Refusal::TooLarge(format!("the body exceeds {limit} bytes")).into_response();
    }
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let raw = app.dirs.tmp.join(format!("{prefix}.json"));
    let mut temps = TempFiles(vec![raw.clone()]);
    if let Err(refusal) = receive(body, &raw, limit).await {
        return refusal.into_response();
    }
    // The timestamp window is measured when the request has fully arrived, as a server that
    // parses the body before handling it would: a slow upload eats into the 30 s.
    let received_at = now_ms();
    let worker = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let request = Received {
                endpoint,
                headers: &headers,
                raw: &raw,
                prefix: &prefix,
                at_ms: received_at,
            };
            let result = verify_and_store(&app, &request, &mut temps);
            drop(temps);
            result
        })
    };
    match worker.await {
        Ok(Ok(data)) => codes::ok(data),
        Ok(Err(refusal)) => {
            tracing::info!(endpoint = endpoint.name(), code = refusal.code(), msg = %refusal.msg(), "finext emulator: refused");
            refusal.into_response()
        }
        Err(e) => Refusal::Internal(format!("worker failed: {e}")).into_response(),
    }
}

/// Stream the body into `path`, refusing it once it passes `limit`.
async fn receive(body: Body, path: &Path, limit: u64) -> Result<(), Refusal> {
    let io_err = |e: std::io::Error| Refusal::Internal(format!("spooling the body: {e}"));
    let file = tokio::fs::File::create(path).await.map_err(io_err)?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Refusal::Malformed(format!("the body could not be read: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(Refusal::TooLarge(format!("the body exceeds {limit} bytes")));
        }
        out.write_all(&chunk).await.map_err(io_err)?;
    }
    out.flush().await.map_err(io_err)?;
    Ok(())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A request whose body is spooled, ready to be checked.
struct Received<'a> {
    endpoint: Endpoint,
    headers: &'a HeaderMap,
    /// The spooled body.
    raw: &'a Path,
    /// Names this request's temporary files.
    prefix: &'a str,
    at_ms: i64,
}

fn verify_and_store(
    app: &App,
    request: &Received<'_>,
    temps: &mut TempFiles,
) -> Result<Option<serde_json::Value>, Refusal> {
    let Received {
        endpoint,
        headers,
        raw,
        prefix,
        at_ms: now,
    } = *request;
    check_headers(headers, &app.settings)?;
    let Scanned { texts, documents } = scan_body(app, endpoint, raw, prefix, temps)?;
    let signed = check_signed_fields(&app.settings, &texts, now)?;
    claim_request_id(app, &signed.request_id, now)?;

    if endpoint == Endpoint::GetAddressKycStatus {
        let status = app.ledger().address_status(&signed.username);
        return Ok(Some(serde_json::json!({ "status": status })));
    }

    rules::check_fields(
        endpoint,
        &texts,
        &documents,
        app.settings.date_format,
        dates::today_utc(),
    )?;
    let checked = rules::check_documents(endpoint, &texts, &documents)?;
    store_submission(app, endpoint, texts, &documents, &checked, signed, now)?;
    Ok(None)
}

/// The `authorization` header, then the Content-Type.
fn check_headers(headers: &HeaderMap, settings: &Settings) -> Result<(), Refusal> {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| constant_time_eq(v.as_bytes(), settings.authorization.as_bytes()));
    if !authorized {
        return Err(Refusal::Unauthorized);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::Malformed(
            "Content-Type must be application/json".into(),
        ));
    }
    Ok(())
}

/// The document fields and the text fields `endpoint` reads.
fn fields_of(endpoint: Endpoint) -> (&'static [&'static str], Vec<&'static str>) {
    match endpoint {
        Endpoint::AddAddressProof | Endpoint::UpdateAddressProof => (
            &["address_proof_front", "address_proof_back"],
            COMMON.iter().chain(&ADDRESS_TEXTS).copied().collect(),
        ),
        Endpoint::AddIdProof => (
            &["id_front", "id_back"],
            COMMON.iter().chain(&ID_TEXTS).copied().collect(),
        ),
        Endpoint::GetAddressKycStatus => (&[], COMMON.to_vec()),
    }
}

/// Scan the spooled body into text fields and decoded document files, then remove it.
fn scan_body(
    app: &App,
    endpoint: Endpoint,
    raw: &Path,
    prefix: &str,
    temps: &mut TempFiles,
) -> Result<Scanned, Refusal> {
    let (documents, texts) = fields_of(endpoint);
    // Decoded documents are created as the scan finds them; register their paths for
    // removal up front so a refusal leaves nothing behind.
    for field in documents {
        temps
            .0
            .push(app.dirs.tmp.join(format!("{prefix}-{field}.part")));
    }
    let spec = ScanSpec {
        documents,
        texts: &texts,
        max_text: MAX_TEXT,
        max_document_bytes: app.settings.max_document_bytes,
        out_dir: &app.dirs.tmp,
        prefix,
    };
    let file =
        fs::File::open(raw).map_err(|e| Refusal::Internal(format!("reopening the body: {e}")))?;
    let scanned = scan(BufReader::with_capacity(256 * 1024, file), &spec).map_err(|e| match e {
        super::scan::ScanError::Io(io) => Refusal::Internal(format!("reading the body: {io}")),
        e @ (super::scan::ScanError::NotAString(_) | super::scan::ScanError::TooLong(..)) => {
            Refusal::InvalidField(e.to_string())
        }
        e => Refusal::Malformed(e.to_string()),
    })?;
    // The raw body is no longer needed; free the disk space before storing documents.
    let _ = fs::remove_file(raw);
    Ok(scanned)
}

/// The signed fields of a request that passed [`check_signed_fields`].
struct Signed {
    request_id: String,
    username: String,
}

/// `api_key`, presence of the common fields, `request_id`, the timestamp window and `sign`,
/// in that order.
fn check_signed_fields(
    settings: &Settings,
    texts: &BTreeMap<String, String>,
    now: i64,
) -> Result<Signed, Refusal> {
    let text = |name: &str| texts.get(name).map(String::as_str).unwrap_or("");
    if !constant_time_eq(text("api_key").as_bytes(), settings.api_key.as_bytes()) {
        if text("api_key").is_empty() {
            return Err(Refusal::InvalidField("api_key is required".into()));
        }
        return Err(Refusal::UnknownApiKey);
    }
    for name in COMMON {
        if text(name).is_empty() {
            return Err(Refusal::InvalidField(format!("{name} is required")));
        }
    }
    let request_id = text("request_id").to_owned();
    check_request_id(&request_id)?;
    let timestamp = text("timestamp");
    check_timestamp(timestamp, now, settings.timestamp_window_ms)?;
    let username = text("username").to_owned();
    let expected = sign(
        &settings.api_key,
        &username,
        timestamp,
        &settings.secret,
        &request_id,
    );
    if !constant_time_eq(text("sign").as_bytes(), expected.as_bytes()) {
        return Err(Refusal::BadSign);
    }
    Ok(Signed {
        request_id,
        username,
    })
}

fn check_request_id(request_id: &str) -> Result<(), Refusal> {
    let id_len = request_id.chars().count();
    if !(20..=64).contains(&id_len) {
        return Err(Refusal::RequestId(format!(
            "{id_len} characters; 20 to 64 are required"
        )));
    }
    if request_id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Refusal::RequestId(
            "must not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

fn check_timestamp(timestamp: &str, now: i64, window_ms: i64) -> Result<(), Refusal> {
    if timestamp.len() != 13 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Timestamp(
            "must be 13 digits of milliseconds".into(),
        ));
    }
    let skew = timestamp
        .parse::<i64>()
        .map(|t| (now - t).abs())
        .unwrap_or(i64::MAX);
    if skew > window_ms {
        return Err(Refusal::Timestamp(format!(
            "{skew} ms away from the server clock; at most {window_ms} ms are accepted"
        )));
    }
    Ok(())
}

/// Refuse a `request_id` already seen; otherwise remember it.
fn claim_request_id(app: &App, request_id: &str, now: i64) -> Result<(), Refusal> {
    let first_use = app
        .replay
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first_use(request_id, now)
        .map_err(|e| Refusal::Internal(format!("recording the request_id: {e}")))?;
    if !first_use {
        return Err(Refusal::Replayed);
    }
    Ok(())
}

/// Move the checked documents to `documents/<id>/` and journal the submission.
fn store_submission(
    app: &App,
    endpoint: Endpoint,
    texts: BTreeMap<String, String>,
    documents: &BTreeMap<String, DecodedDocument>,
    checked: &[CheckedDocument],
    signed: Signed,
    now: i64,
) -> Result<(), Refusal> {
    let mut ledger = app.ledger();
    let id = ledger.reserve_id();
    let dir = app.dirs.documents.join(id.to_string());
    let io_err = |e: std::io::Error| Refusal::Internal(format!("storing the documents: {e}"));
    fs::create_dir_all(&dir).map_err(io_err)?;
    let mut stored = Vec::new();
    for c in checked {
        let Some(decoded) = documents.get(c.field) else {
            continue;
        };
        let dest = dir.join(format!("{}.{}", c.field, c.extension.to_ascii_lowercase()));
        fs::rename(&decoded.path, &dest).map_err(io_err)?;
        stored.push(super::state::StoredDocument {
            field: c.field.to_owned(),
            extension: c.extension.clone(),
            media_type: c.media_type.to_owned(),
            size: decoded.size,
            sha256: hex::encode(decoded.sha256),
            path: dest,
        });
    }
    let fields: BTreeMap<String, String> = texts.into_iter().filter(|(k, _)| k != "sign").collect();
    let submission = StoredSubmission {
        id,
        endpoint,
        username: signed.username,
        request_id: signed.request_id,
        received_at_ms: now,
        fields,
        documents: stored,
    };
    tracing::info!(id, endpoint = endpoint.name(), username = %submission.username, "finext emulator: accepted");
    ledger.record(submission).map_err(io_err)?;
    Ok(())
}
