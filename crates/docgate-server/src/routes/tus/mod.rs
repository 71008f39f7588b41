//! tus 1.0.0 at `/v1/tus/`: resumable uploads of a session's documents.
//!
//! Core protocol (HEAD, PATCH, OPTIONS) and the extensions `creation`,
//! `creation-with-upload`, `creation-defer-length`, `termination`, `expiration` and
//! `checksum` (sha1, sha256, md5). Every tus upload is one document of an upload session:
//! its `Upload-Metadata` names the `slot` (optional when the session has one), `filename`
//! and `filetype`. `Upload-Length` is checked against the slot's policy at creation (413
//! before any byte). Requests authenticate with the session's token.
//!
//! What tusd's users still ask for is here: checksums verified while streaming (a mismatch
//! discards the PATCH's bytes and the offset does not move: 460), the PATCH lock in the
//! ledger (a second PATCH to the same upload gets 409 on any replica), per-upload
//! authorization (the session's token), and expiry (`Upload-Expires`; the sweeper removes
//! what expired).

mod patch;

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use docgate_core::{resume::Assembly, Problem};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::{
    app::AppState,
    host::ledger_problem,
    ledger::{now_ms, SessionRecord, TusCreated, TusRecord, TusState},
    sessions::{check_usable, Uploader},
    spool_keys,
};

pub use patch::{assemblies, patch, Assemblies};

type Result<T> = std::result::Result<T, Problem>;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
pub const CHECKSUMS: &str = "sha1,sha256,md5";
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// Add the headers every tus answer carries.
pub fn tus_headers(res: &mut Response) {
    res.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 412 unless the client speaks tus 1.0.0.
pub fn check_version(headers: &HeaderMap) -> Result<()> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        _ => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version_unsupported",
            "tus version not supported",
        )
        .with_detail(format!("send Tus-Resumable: {VERSION}"))),
    }
}

/// A header parsed as a non-negative integer: digits only (Rust's parser would also take a
/// leading `+`, which tus's grammar does not have).
pub fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Problem::bad_request(format!("{name} is not a non-negative integer"))),
    }
}

/// `Upload-Metadata`: `key base64,key base64,…` (a key may have no value).
pub fn parse_metadata(headers: &HeaderMap) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(raw) = headers.get("upload-metadata") else {
        return Ok(out);
    };
    let raw = raw
        .to_str()
        .map_err(|_| Problem::bad_request("Upload-Metadata is not ASCII"))?;
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Problem::bad_request(format!("Upload-Metadata `{key}` is not base64 UTF-8"))
            })?;
        if out.insert(key.to_owned(), decoded).is_some() {
            return Err(Problem::bad_request(format!(
                "Upload-Metadata `{key}` is given twice"
            )));
        }
    }
    Ok(out)
}

/// An HTTP date (`Upload-Expires`).
pub fn http_date(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    httpdate::fmt_http_date(t)
}

/// `OPTIONS /v1/tus/…`: what this server speaks (CORS preflights are answered before this).
pub async fn options(State(app): State<AppState>) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUMS),
    );
    h.insert("tus-max-size", header_value(max_document_bytes(&app)));
    tus_headers(&mut res);
    res
}

fn max_document_bytes(app: &AppState) -> u64 {
    app.registry
        .all()
        .map(|p| p.policy().max_document_bytes)
        .max()
        .unwrap_or(0)
}

/// The session of a tus request: its token, usable now.
fn usable_session(who: &Uploader) -> Result<&SessionRecord> {
    let session = who.session()?;
    check_usable(session, now_ms())?;
    Ok(session)
}

/// Why the session no longer takes this request, as it stands now (it may have changed
/// since the request's token was looked up): `None` while it is open.
pub async fn session_now(app: &AppState, session_id: &str) -> Result<Option<Problem>> {
    let session = app
        .ledger
        .session(session_id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .ok_or_else(|| Problem::not_found("the upload session is gone"))?;
    Ok(check_usable(&session, now_ms()).err())
}

/// The upload `id` of this session (404 for another session's, 410 once ended).
pub async fn own_upload(app: &AppState, session: &SessionRecord, id: &str) -> Result<TusRecord> {
    let rec = app
        .ledger
        .tus(id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .filter(|t| t.session_id == session.id)
        .ok_or_else(|| Problem::not_found(format!("no upload `{id}`")))?;
    if matches!(rec.state, TusState::Terminated | TusState::Refused) {
        return Err(Problem::new(StatusCode::GONE, "upload_gone", "Upload gone")
            .with_detail(format!("upload `{id}` was {}", rec.state.as_str())));
    }
    Ok(rec)
}

/// The slot a creation names: its metadata's `slot`, or the session's only slot.
fn slot_of(
    session: &SessionRecord,
    meta: &std::collections::BTreeMap<String, String>,
) -> Result<String> {
    // A key without a value (clients send the metadata fields they were told of, set or
    // not) names no slot.
    let named = meta.get("slot").filter(|s| !s.trim().is_empty());
    let slot = match (named, session.slots.as_slice()) {
        (Some(s), _) => s.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(Problem::invalid_field(
                "slot",
                format!(
                    "name the document's slot in Upload-Metadata; this session takes: {}",
                    session.slots.join(", ")
                ),
            ))
        }
    };
    if !session.slots.contains(&slot) {
        return Err(Problem::invalid_field(
            "slot",
            format!(
                "`{slot}` is not a slot of this session (it takes: {})",
                session.slots.join(", ")
            ),
        ));
    }
    Ok(slot)
}

/// The most a document of this session may have.
pub fn max_bytes(app: &AppState, session: &SessionRecord) -> Result<u64> {
    let provider = app
        .registry
        .get(&session.provider)
        .ok_or_else(|| Problem::internal("the session's provider is gone"))?;
    let policy = provider.policy();
    let limit = policy.max_document_bytes.min(policy.max_request_bytes);
    Ok(session.max_bytes.map_or(limit, |m| m.min(limit)))
}

/// `POST /v1/tus/`: create an upload (with its first bytes, if the body has any).
pub async fn create(
    State(app): State<AppState>,
    who: Uploader,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    let session = usable_session(&who)?.clone();
    let length = number(&headers, "upload-length")?;
    let deferred = headers
        .get("upload-defer-length")
        .is_some_and(|v| v.as_bytes() == b"1");
    if length.is_some() == deferred {
        return Err(Problem::bad_request(
            "send exactly one of Upload-Length and Upload-Defer-Length: 1",
        ));
    }
    let meta = parse_metadata(&headers)?;
    let slot = slot_of(&session, &meta)?;
    if has_offset_body(&headers) {
        // creation-with-upload: what refuses the bytes before any is read refuses them before
        // the upload exists (else a client retrying its creation would find the slot taken):
        // a checksum this server cannot check, a disk under its reserve.
        patch::checksum(&headers)?;
        if let Some(reason) = app.admission.space.shortage() {
            return Err(crate::admission::insufficient_storage(reason));
        }
    }
    let max = max_bytes(&app, &session)?;
    if let Some(len) = length {
        check_length(&app, &session, len, max)?;
    }
    let filetype = meta
        .get("filetype")
        .or_else(|| meta.get("type"))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty());
    check_declared_type(&app, &session, filetype.as_deref())?;
    let filename = crate::routes::uploads::request::checked_filename(
        meta.get("filename")
            .or_else(|| meta.get("name"))
            .map(String::as_str),
        app.limits.max_filename_bytes,
    )?;
    let rec = TusRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        session_id: session.id.clone(),
        slot,
        length,
        received: 0,
        filename,
        filetype,
        pieces: Vec::new(),
        state: TusState::Receiving,
        meta: None,
        created_at: now_ms(),
        updated_at: now_ms(),
    };
    let created = app
        .ledger
        .create_tus(rec.clone())
        .await
        .map_err(|e| ledger_problem(&e))?;
    match created {
        TusCreated::Created { replaced: None } => {}
        TusCreated::Created {
            replaced: Some(old),
        } => {
            patch::assemblies(&app).forget(&old.id);
            let keys: Vec<String> = old.pieces.iter().map(|p| p.key.clone()).collect();
            if let Err(e) = spool_keys::remove(&app.spool, &keys).await {
                // Left to the session's end and the orphan sweep.
                tracing::warn!(upload = %old.id, error = %e, "could not remove a replaced tus upload's pieces");
            }
            app.metrics.tus("replaced");
        }
        TusCreated::SessionClosed => {
            return Err(session_now(&app, &session.id)
                .await?
                .unwrap_or_else(crate::sessions::being_accepted));
        }
        TusCreated::TooMany { limit } => {
            let mut res = Problem::new(
                StatusCode::CONFLICT,
                "too_many_creations",
                "Too many creations",
            )
            .with_detail(format!(
                "this session's slot has been created {limit} times and has no document left to \
                     resume: start a new session"
            ))
            .with_extra("limit", limit)
            .into_response();
            tus_headers(&mut res);
            return Ok(res);
        }
        TusCreated::SlotTaken { id } => {
            let location = format!("/v1/tus/{id}");
            let mut res = Problem::new(StatusCode::CONFLICT, "slot_taken", "Slot taken")
                .with_detail(
                    "this session's document for that slot is complete or being written to: \
                     resume or terminate it (Location), or wait for its PATCH to end",
                )
                .with_extra("location", location.as_str())
                .into_response();
            res.headers_mut()
                .insert(header::LOCATION, header_value(location));
            tus_headers(&mut res);
            return Ok(res);
        }
    }
    app.metrics.tus("created");
    created_response(&app, &session, rec, &headers, body).await
}

/// A declared type the slot does not accept is refused at creation, before the browser
/// sends a byte (the bytes are still sniffed as they arrive: a declared type proves
/// nothing). `application/octet-stream` says "unknown" and is left to the sniffer.
fn check_declared_type(
    app: &AppState,
    session: &SessionRecord,
    declared: Option<&str>,
) -> Result<()> {
    let Some(declared) = declared.filter(|t| *t != "application/octet-stream") else {
        return Ok(());
    };
    let Some(provider) = app.registry.get(&session.provider) else {
        return Ok(());
    };
    let policy = provider.policy();
    if policy.accepts(declared) {
        Ok(())
    } else {
        let accepted = policy.accepted_names();
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail(format!(
            "the file is declared as {declared}; accepted here: {}",
            accepted.join(", ")
        ))
        .with_extra("declared_type", declared)
        .with_extra("accepted", accepted))
    }
}

fn check_length(app: &AppState, session: &SessionRecord, len: u64, max: u64) -> Result<()> {
    if len > max {
        return Err(Problem::payload_too_large(
            max,
            "the document (by its Upload-Length)",
        ));
    }
    if let Some(provider) = app.registry.get(&session.provider) {
        let min = provider.policy().min_document_bytes;
        if len < min {
            return Err(Problem::payload_too_small(min, len, "the document"));
        }
    }
    Ok(())
}

/// Whether a request carries upload bytes (`application/offset+octet-stream`).
fn has_offset_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == OFFSET_CONTENT_TYPE.as_bytes())
}

/// 201 with `Location`; with creation-with-upload, the first PATCH's result too. When those
/// first bytes fail (a checksum mismatch, a dropped connection), the upload exists all the
/// same: the error answer carries its `Location`, so the client can resume or terminate it.
async fn created_response(
    app: &AppState,
    session: &SessionRecord,
    rec: TusRecord,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let location = header_value(format!("/v1/tus/{}", rec.id));
    let offset = if has_offset_body(headers) {
        match patch::receive(app, session, &rec, 0, headers, body).await {
            Ok(offset) => offset,
            Err(problem) => {
                let mut res = problem.into_response();
                res.headers_mut().insert(header::LOCATION, location);
                tus_headers(&mut res);
                return Ok(res);
            }
        }
    } else {
        0
    };
    let mut res = StatusCode::CREATED.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert("upload-offset", header_value(offset));
    h.insert(
        "upload-expires",
        header_value(http_date(session.expires_at)),
    );
    tus_headers(&mut res);
    Ok(res)
}

/// `HEAD /v1/tus/{id}`: where the upload stands.
pub async fn head(
    State(app): State<AppState>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let session = who.session()?.clone();
    // A spent session's browser may still ask where its upload stood, as it may read the
    // session, until the session expires; not for ever.
    crate::sessions::check_readable(&session, now_ms())?;
    let rec = own_upload(&app, &session, &id).await?;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert("upload-offset", header_value(rec.received));
    match rec.length {
        Some(len) => h.insert("upload-length", header_value(len)),
        None => h.insert("upload-defer-length", HeaderValue::from_static("1")),
    };
    h.insert(
        "upload-expires",
        header_value(http_date(session.expires_at)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tus_headers(&mut res);
    Ok(res)
}

/// `DELETE /v1/tus/{id}` (termination): the upload ends and its bytes are removed.
pub async fn terminate(
    State(app): State<AppState>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let session = usable_session(&who)?.clone();
    own_upload(&app, &session, &id).await?;
    let ended = app
        .ledger
        .end_tus(&id, TusState::Terminated, true, now_ms())
        .await
        .map_err(|e| ledger_problem(&e))?;
    let Some(ended) = ended else {
        // The session is being accepted (or was, or ended) since the token was looked up:
        // its documents are the upload's now. Or the upload ended meanwhile.
        if let Some(closed) = session_now(&app, &session.id).await? {
            return Err(closed);
        }
        return Err(Problem::new(StatusCode::GONE, "upload_gone", "Upload gone")
            .with_detail(format!("upload `{id}` has ended")));
    };
    let keys: Vec<String> = ended.pieces.iter().map(|p| p.key.clone()).collect();
    spool_keys::remove_for_request(&app.spool, keys).await;
    assemblies(&app).forget(&id);
    app.metrics.tus("terminated");
    let mut res = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut res);
    Ok(res)
}

#[allow(dead_code)]
fn unused(_: Assembly) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_and_refuse_junk() {
        let mut h = HeaderMap::new();
        h.insert(
            "upload-metadata",
            HeaderValue::from_static("filename aWQucGRm,slot ZnJvbnQ=,is_confidential"),
        );
        let m = parse_metadata(&h).expect("parses");
        assert_eq!(m["filename"], "id.pdf");
        assert_eq!(m["slot"], "front");
        assert_eq!(m["is_confidential"], "");
        h.insert("upload-metadata", HeaderValue::from_static("filename !!!"));
        assert!(parse_metadata(&h).is_err());
        h.insert("upload-metadata", HeaderValue::from_static("a YQ==,a Yg=="));
        assert!(parse_metadata(&h).is_err());
    }

    #[test]
    fn the_version_is_required() {
        let mut h = HeaderMap::new();
        assert_eq!(check_version(&h).map_err(|p| p.status.as_u16()), Err(412));
        h.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
        assert!(check_version(&h).is_ok());
    }
}
