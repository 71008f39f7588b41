//! `POST /0.2/get_document`: one stored document's bytes, as Sila returns them.
//!
//! Signed like an upload (both signatures over the raw body, or a bearer token), with
//! `document_id` in the body. The answer is the file itself, not JSON: `Content-Type` is the
//! document's MIME type, `Content-Length` its size and `Content-Disposition` names the file
//! (Sila's SDK docs read exactly these three headers). The bytes stream from the store in
//! small chunks, whatever the document's size.
//!
//! Refusals stay in Sila's JSON envelope — the Python SDK parses any non-200 answer as JSON.
//! A malformed `document_id` is a 400. An id that is unknown *or* belongs to another user is
//! the same 404: the lookup is scoped to the signing user, so nothing tells a caller whether
//! someone else's document exists.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{
    documents::present,
    envelope::{self, failure, Failure},
    signed::read_signed,
    store::StoredDocument,
    EmulatorState,
};

/// Read size for streaming a document out: memory per download is this, not the file.
const CHUNK_BYTES: usize = 64 * 1024;

pub async fn get_document(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match fetch(&state, &headers, body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn fetch(
    state: &EmulatorState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let signed = read_signed(state, headers, body, true).await?;
    let reference = signed.header.reference.clone();
    let document_id = match present(&signed.message, "document_id") {
        Some(Value::String(id)) if uuid::Uuid::try_parse(id).is_ok() => id.to_ascii_lowercase(),
        Some(_) => {
            return Err(Failure::bad_request(
                json!({"document_id": "document_id must be a document's UUID"}),
            )
            .with_reference(reference))
        }
        None => {
            return Err(
                Failure::bad_request(json!({"document_id": "document_id is required"}))
                    .with_reference(reference),
            )
        }
    };
    let user = signed.header.user_handle.as_deref().unwrap_or_default();
    let doc = state
        .store
        .find(&document_id)
        .filter(|d| d.belongs_to(&signed.header.app_handle, user))
        .ok_or_else(|| {
            failure(StatusCode::NOT_FOUND, "Document not found.").with_reference(reference.clone())
        })?;
    stream_file(state, &doc).await.map_err(|e| {
        tracing::error!(error = %e, document_id = %doc.document_id, "sila emulator cannot read a stored document");
        failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope::message_for(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .with_reference(reference)
    })
}

/// The stored bytes as a 200 with the document's headers. The length comes from the file
/// itself, so the header and the body cannot disagree.
async fn stream_file(state: &EmulatorState, doc: &StoredDocument) -> std::io::Result<Response> {
    let file = tokio::fs::File::open(state.store.content_path_of(doc)).await?;
    let len = file.metadata().await?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK_BYTES);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&doc.mime_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&download_name(doc)),
    );
    Ok(response)
}

/// The name a client saves the file under: the uploaded `filename` (Sila's upload takes it
/// without an extension) with the extension of its media type.
fn download_name(doc: &StoredDocument) -> String {
    match docgate_core::media::extension_for(&doc.mime_type) {
        Some(ext) => format!("{}.{ext}", doc.filename),
        None => doc.filename.clone(),
    }
}

/// `attachment; filename="…"` with an ASCII stand-in, plus RFC 8187 `filename*` when the
/// name is not plain ASCII, so any uploaded name survives and no header can be broken.
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != name {
        value.push_str("; filename*=UTF-8''");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(char::from(byte));
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    // Only printable ASCII was written above, which is always a valid header value.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_quoted_as_they_are() {
        assert_eq!(
            content_disposition("front side.png"),
            "attachment; filename=\"front side.png\""
        );
    }

    #[test]
    fn other_names_get_an_ascii_stand_in_and_their_utf8_form() {
        assert_eq!(
            content_disposition("Führerschein \"neu\".pdf"),
            "attachment; filename=\"F_hrerschein _neu_.pdf\"; \
             filename*=UTF-8''F%C3%BChrerschein%20%22neu%22.pdf"
        );
        assert_eq!(
            content_disposition("a\r\nb.png"),
            "attachment; filename=\"a__b.png\"; filename*=UTF-8''a%0D%0Ab.png"
        );
    }
}
