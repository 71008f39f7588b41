//! `POST /0.2/documents`: what Sila checks before it stores a KYC document.
//!
//! In order, each refusal in Sila's envelope:
//! 1. `Content-Length` over the limit → 413 before a byte is read; credentials absent → 401;
//! 2. the body streams to disk (413 if it grows past the limit anyway, 400 if it is not
//!    multipart);
//! 3. the `data` part must be JSON with a `header` naming the app and the user (400);
//! 4. both signatures must recover to the registered addresses over the *raw* `data` bytes,
//!    or the bearer token must be valid (403);
//! 5. optionally, `header.created` must be recent (off by default: captures are replayed);
//! 6. files and metadata must match: `file` + top-level fields, or labels that are exactly
//!    the keys of `file_metadata` (400, naming every problem in `validation_details`);
//! 7. per file: `hash` = SHA-256 of the bytes, `mime_type` supported *and* what the bytes
//!    are, `document_type` known, `filename` present, `name` ≤ 100, `description` ≤ 255.
//!
//! Only then is anything stored, so a refused request leaves nothing behind. JSON `null`
//! counts as absent (the Python SDK sends top-level nulls beside `file_metadata`).

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::{
    envelope::{self, failure, Failure},
    intake::{self, IntakeError, ReceivedFile},
    registry::Presented,
    store::StoredDocument,
    EmulatorState,
};
use crate::{doctypes::SUPPORTED_MEDIA_TYPES, message::SINGLE_PART_NAME};

const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 255;

pub async fn upload(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    match accept(&state, &headers, body, started).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// The parts of `header` the emulator needs.
#[derive(Debug, Clone)]
pub struct MessageHeader {
    pub app_handle: String,
    pub user_handle: Option<String>,
    pub reference: Option<String>,
    pub created: Option<i64>,
}

/// Read `header` (null = absent; `auth_handle` is the old name of `app_handle`).
pub fn message_header(
    message: &Map<String, Value>,
    needs_user: bool,
) -> Result<MessageHeader, Failure> {
    let Some(header) = present(message, "header").and_then(Value::as_object) else {
        return Err(Failure::bad_request(
            json!({"header": "header is required and must be an object"}),
        ));
    };
    let mut errors = Map::new();
    let app_handle = text(header, "app_handle", &mut errors)
        .or_else(|| text(header, "auth_handle", &mut errors));
    let user_handle = text(header, "user_handle", &mut errors);
    let reference = text(header, "reference", &mut errors);
    if app_handle.is_none() && !errors.contains_key("app_handle") {
        errors.insert("app_handle".into(), "app_handle is required".into());
    }
    if needs_user && user_handle.is_none() && !errors.contains_key("user_handle") {
        errors.insert("user_handle".into(), "user_handle is required".into());
    }
    let created = present(header, "created").and_then(Value::as_i64);
    match app_handle {
        Some(app_handle) if errors.is_empty() => Ok(MessageHeader {
            app_handle: app_handle.to_owned(),
            user_handle: user_handle.map(str::to_owned),
            reference: reference.map(str::to_owned),
            created,
        }),
        _ => Err(Failure::bad_request(json!({ "header": errors }))),
    }
}

/// A field's value, with JSON `null` meaning absent.
pub fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A string field (null = absent); a non-string is recorded in `errors`.
fn text<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    errors: &mut Map<String, Value>,
) -> Option<&'a str> {
    match present(obj, key) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            errors.insert(key.into(), format!("{key} must be a string").into());
            None
        }
    }
}

async fn accept(
    state: &Arc<EmulatorState>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response, Failure> {
    let content_length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (presented, boundary) = match precheck(state, headers, content_length) {
        Ok(ok) => ok,
        Err(refusal) => {
            // Refused without reading the body; read it away so the refusal is not lost
            // in a connection reset.
            docgate_emulator::drain_in_background(body);
            return Err(refusal);
        }
    };

    let received = receive_multipart(state, body, &boundary).await?;
    let Some(data) = received.data.clone() else {
        return Err(Failure::bad_request(
            json!({"data": "the data part is required"}),
        ));
    };
    let message = parse_message(&data)?;
    let header = message_header(&message, true)?;
    let reference = header.reference.clone();
    state
        .registry
        .verify(
            &presented,
            &data,
            &header.app_handle,
            header.user_handle.as_deref(),
        )
        .map_err(|f| f.with_reference(reference.clone()))?;
    state
        .check_fresh(header.created)
        .map_err(|f| f.with_reference(reference.clone()))?;

    let accepted = match_files(&message, &received.files, &state.options.document_types)
        .map_err(|f| f.with_reference(reference.clone()))?;

    let upload = Upload {
        reference: reference.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        header: &header,
        auth: match presented {
            Presented::Bearer => "oauth2",
            Presented::Signatures { .. } => "ecdsa",
        },
        content_length,
    };
    let ids = store_files(state, &upload, received.files, accepted).await?;
    Ok(success_response(&message, upload.reference, ids, started))
}

/// Stream the multipart body to disk, mapping intake errors to Sila's refusals.
async fn receive_multipart(
    state: &EmulatorState,
    body: Body,
    boundary: &str,
) -> Result<intake::Received, Failure> {
    intake::receive_body(
        body,
        boundary,
        state.options.max_request_bytes,
        state.store.tmp_dir(),
    )
    .await
    .map_err(|e| match e {
        IntakeError::TooLarge { limit } => too_large(limit),
        IntakeError::DataTooLarge => {
            failure(StatusCode::PAYLOAD_TOO_LARGE, "The data part is too large.")
        }
        IntakeError::Io(e) => {
            tracing::error!(error = %e, "sila emulator cannot store an upload");
            internal_error()
        }
        other => Failure::bad_request(json!({ "body": other.to_string() })),
    })
}

fn internal_error() -> Failure {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        envelope::message_for(StatusCode::INTERNAL_SERVER_ERROR),
    )
}

/// The `data` part as a JSON object.
fn parse_message(data: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::bad_request(
            json!({"data": "data must be a JSON object"}),
        )),
        Err(e) => Err(Failure::bad_request(
            json!({"data": format!("data is not valid JSON: {e}")}),
        )),
    }
}

/// What every document of one accepted request shares.
struct Upload<'a> {
    reference: String,
    header: &'a MessageHeader,
    auth: &'static str,
    content_length: Option<u64>,
}

/// Persist each file with its metadata; the new document ids, in part order.
///
/// The files are moved into place and indexed on a task of their own: a client that hangs up
/// meanwhile (hyper then drops this request's future) must not leave a document on disk that
/// the listing does not show until a restart.
async fn store_files(
    state: &Arc<EmulatorState>,
    upload: &Upload<'_>,
    files: Vec<ReceivedFile>,
    accepted: Vec<FileMeta>,
) -> Result<Vec<Value>, Failure> {
    let user_handle = upload.header.user_handle.clone().unwrap_or_default();
    // Parts arrive in the sender's order; ids are returned in that order.
    let documents: Vec<(ReceivedFile, StoredDocument)> = files
        .into_iter()
        .zip(accepted)
        .map(|(file, meta)| {
            let stored = StoredDocument {
                document_id: uuid::Uuid::new_v4().to_string(),
                reference: upload.reference.clone(),
                app_handle: upload.header.app_handle.clone(),
                user_handle: user_handle.clone(),
                label: file.label.clone(),
                filename: meta.filename,
                name: meta.name,
                description: meta.description,
                document_type: meta.document_type,
                identity_type: meta.identity_type,
                mime_type: meta.mime_type,
                sha256: file.sha256.clone(),
                size: file.size,
                request_content_length: upload.content_length,
                auth: upload.auth.into(),
                received_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            };
            (file, stored)
        })
        .collect();
    let state = Arc::clone(state);
    let saved = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(documents.len());
        for (file, stored) in documents {
            let dest = state.store.content_path_of(&stored);
            let id = stored.document_id.clone();
            file.file.persist(&dest).await?;
            state.store.record(stored).await?;
            ids.push(Value::String(id));
        }
        Ok::<_, std::io::Error>(ids)
    })
    .await;
    match saved {
        Ok(Ok(ids)) => Ok(ids),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "sila emulator cannot store a document");
            Err(internal_error())
        }
        Err(e) => {
            tracing::error!(error = %e, "sila emulator's store task failed");
            Err(internal_error())
        }
    }
}

/// A multi-file request (`file_metadata`) gets a list of ids, a single file just its id.
fn success_response(
    message: &Map<String, Value>,
    reference: String,
    mut ids: Vec<Value>,
    started: Instant,
) -> Response {
    let multi = present(message, "file_metadata").is_some();
    let mut fields = Map::new();
    fields.insert("reference_id".into(), reference.into());
    if multi {
        fields.insert("document_id".into(), Value::Array(ids));
        fields.insert("unsuccessful_uploads".into(), Value::Array(Vec::new()));
    } else {
        fields.insert("document_id".into(), ids.pop().unwrap_or(Value::Null));
    }
    envelope::success("File uploaded successfully.", started, fields)
}

/// Everything decided from the headers alone: size by Content-Length, credentials present,
/// a multipart boundary.
fn precheck(
    state: &EmulatorState,
    headers: &HeaderMap,
    content_length: Option<u64>,
) -> Result<(Presented, String), Failure> {
    if content_length.is_some_and(|len| len > state.options.max_request_bytes) {
        return Err(too_large(state.options.max_request_bytes));
    }
    let presented = state.registry.presented(headers, true)?;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Failure::bad_request(json!({
            "Content-Type": "multipart/form-data with a boundary is required for /documents"
        }))
    })?;
    Ok((presented, boundary))
}

fn too_large(limit: u64) -> Failure {
    failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Request entity too large: the maximum request size is {limit} bytes."),
    )
}

/// One file's accepted metadata.
#[derive(Debug, Clone)]
struct FileMeta {
    filename: String,
    name: Option<String>,
    description: Option<String>,
    document_type: String,
    identity_type: Option<String>,
    mime_type: String,
}

/// Pair every file part with its metadata, in part order, or explain every mismatch.
fn match_files(
    message: &Map<String, Value>,
    files: &[ReceivedFile],
    document_types: &[String],
) -> Result<Vec<FileMeta>, Failure> {
    let mut details = Map::new();
    if files.is_empty() {
        return Err(Failure::bad_request(
            json!({"files": "at least one file part is required"}),
        ));
    }
    match present(message, "file_metadata") {
        Some(Value::Object(by_label)) if !by_label.is_empty() => {
            let mut per_label = Map::new();
            let mut unmatched_parts = Map::new();
            let mut out = Vec::new();
            for file in files {
                match by_label.get(&file.label).and_then(Value::as_object) {
                    Some(meta) => match check_file(meta, file, document_types) {
                        Ok(m) => out.push(m),
                        Err(e) => {
                            per_label.insert(file.label.clone(), Value::Object(e));
                        }
                    },
                    None if by_label.contains_key(&file.label) => {
                        per_label.insert(file.label.clone(), "must be an object".into());
                    }
                    None => {
                        unmatched_parts.insert(
                            file.label.clone(),
                            "no file_metadata entry has this file's label".into(),
                        );
                    }
                }
            }
            for label in by_label.keys() {
                if !files.iter().any(|f| &f.label == label) {
                    per_label.insert(label.clone(), "no file part has this label".into());
                }
            }
            if !per_label.is_empty() {
                details.insert("file_metadata".into(), Value::Object(per_label));
            }
            if !unmatched_parts.is_empty() {
                details.insert("files".into(), Value::Object(unmatched_parts));
            }
            if details.is_empty() {
                Ok(out)
            } else {
                Err(Failure::bad_request(Value::Object(details)))
            }
        }
        Some(_) => Err(Failure::bad_request(
            json!({"file_metadata": "file_metadata must be an object mapping each file's label to its metadata"}),
        )),
        None => {
            let mut extra = Map::new();
            for f in files.iter().filter(|f| f.label != SINGLE_PART_NAME) {
                extra.insert(
                    f.label.clone(),
                    "without file_metadata, the one file part must be named `file`".into(),
                );
            }
            if !extra.is_empty() {
                return Err(Failure::bad_request(json!({ "files": extra })));
            }
            let file = files
                .iter()
                .find(|f| f.label == SINGLE_PART_NAME)
                .ok_or_else(|| {
                    Failure::bad_request(json!({"file": "the file part is required"}))
                })?;
            check_file(message, file, document_types)
                .map(|m| vec![m])
                .map_err(|e| Failure::bad_request(Value::Object(e)))
        }
    }
}

/// The per-file checks; every problem is reported, keyed by field.
fn check_file(
    meta: &Map<String, Value>,
    file: &ReceivedFile,
    document_types: &[String],
) -> Result<FileMeta, Map<String, Value>> {
    let mut errors = Map::new();
    let declared = Declared::read(meta, &mut errors);
    check_lengths(&declared, &mut errors);
    check_content(&declared, file, &mut errors);
    if let Some(t) = &declared.document_type {
        if !document_types.iter().any(|known| known == t) {
            errors.insert("document_type".into(), "Invalid document_type".into());
        }
    }
    match declared {
        Declared {
            filename: Some(filename),
            mime_type: Some(mime_type),
            document_type: Some(document_type),
            name,
            description,
            identity_type,
            ..
        } if errors.is_empty() => Ok(FileMeta {
            filename,
            name,
            description,
            document_type,
            identity_type,
            mime_type,
        }),
        _ => Err(errors),
    }
}

/// One file's metadata as sent, before its values are checked.
struct Declared<'a> {
    filename: Option<String>,
    hash: Option<&'a str>,
    mime_type: Option<String>,
    document_type: Option<String>,
    name: Option<String>,
    description: Option<String>,
    identity_type: Option<String>,
}

impl<'a> Declared<'a> {
    /// Read the fields, recording non-strings and missing required ones in `errors`.
    fn read(meta: &'a Map<String, Value>, errors: &mut Map<String, Value>) -> Self {
        let owned =
            |key: &str, errors: &mut Map<String, Value>| text(meta, key, errors).map(str::to_owned);
        let declared = Declared {
            filename: owned("filename", errors),
            hash: text(meta, "hash", errors),
            mime_type: owned("mime_type", errors),
            document_type: owned("document_type", errors),
            name: owned("name", errors),
            description: owned("description", errors),
            identity_type: owned("identity_type", errors),
        };
        let require = |key: &str, present: bool, errors: &mut Map<String, Value>| {
            if !present && !errors.contains_key(key) {
                errors.insert(key.into(), format!("{key} is required").into());
            }
        };
        require("filename", declared.filename.is_some(), errors);
        require("hash", declared.hash.is_some(), errors);
        require("mime_type", declared.mime_type.is_some(), errors);
        require("document_type", declared.document_type.is_some(), errors);
        declared
    }
}

fn check_lengths(declared: &Declared<'_>, errors: &mut Map<String, Value>) {
    if let Some(f) = &declared.filename {
        let chars = f.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            errors.insert(
                "filename".into(),
                "filename must be 1 to 100 characters".into(),
            );
        }
    }
    if declared
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        errors.insert("name".into(), "Max allowed length is 100 characters".into());
    }
    if declared
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        errors.insert(
            "description".into(),
            "Max allowed length is 255 characters".into(),
        );
    }
}

/// The bytes against what was declared about them: non-empty, `hash`, `mime_type`.
fn check_content(declared: &Declared<'_>, file: &ReceivedFile, errors: &mut Map<String, Value>) {
    if file.size == 0 {
        errors.insert("file".into(), "the uploaded file is empty".into());
    }
    if let Some(hash) = declared.hash {
        if !hash.eq_ignore_ascii_case(&file.sha256) {
            errors.insert(
                "hash".into(),
                "Uploaded file's signature does not match file_hash".into(),
            );
        }
    }
    if let Some(declared) = &declared.mime_type {
        let sniffed = docgate_core::media::sniff(&file.head);
        let supported = SUPPORTED_MEDIA_TYPES.contains(&declared.as_str());
        if !supported || sniffed != Some(declared.as_str()) {
            errors.insert(
                "mime_type".into(),
                format!(
                    "Unsupported or mismatched mime_type: declared {declared}, content is {}",
                    sniffed.unwrap_or("unknown")
                )
                .into(),
            );
        }
    }
}
