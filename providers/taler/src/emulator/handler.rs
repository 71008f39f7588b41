//! `POST /kyc-bulk/$EXTERN_PUB` as the exchange answers it.
//!
//! The checks run cheapest first, and everything that can be decided from the headers is
//! decided before one body byte is read (a 16 MiB body that would be refused anyway costs
//! the client nothing but the request line):
//!
//! 1. `$EXTERN_PUB` is 52 Crockford characters and a curve point — else 400 (26);
//! 2. the key is registered — else 404 (third-party-unknown code);
//! 3. `Content-Length` is present — else 411 (25); at most the limit — else 413 (32);
//!    not zero — else 400 (26);
//! 4. `Taler-Customer-Payto` is a valid payto URI, `Content-Type` is an accepted type,
//!    `If-Not-Match` is a Crockford SHA-512, `Taler-Extern-Signature` is a Crockford
//!    signature — else 400 (26), or 400 (25) when a header is missing;
//! 5. the signature verifies strictly over (purpose, If-Not-Match, h_payto) — else 403
//!    (signature-invalid code);
//! 6. that body hash is already stored for that customer — 412, body unread (a body of at
//!    most 64 KiB is received first, and the lookup is made by its commit, in the same trip
//!    to a blocking thread; a 412 still takes precedence over anything wrong in the body);
//! 7. the body streams to a temporary file while it is hashed; it must be exactly
//!    `Content-Length` bytes and hash to `If-Not-Match` — else 400 (26);
//! 8. its sniffed type must agree with `Content-Type`, and a ZIP's entries must all be
//!    pdf/audio/image/video within the entry limits — else 400 (26);
//! 9. it is moved into the store: 204 (or 412 if an identical upload won the race).

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use docgate_core::{
    archive::{self, ZipRules},
    media::{self, MediaRange, SNIFF_BYTES},
};
use futures_util::StreamExt;
use sha2::{Digest, Sha512};
use tokio::io::AsyncWriteExt;

use super::{
    store::{Committed, StoredBody, TempBody},
    EmulatorErrorCodes, Shared,
};
use crate::{
    crockford,
    payto::Payto,
    signing::{self, h_payto, VerifyError},
    wire::{codes, ErrorDetail, HEADER_IF_NOT_MATCH, HEADER_PAYTO, HEADER_SIGNATURE},
};

/// Taler's error answer.
pub fn taler_error(status: StatusCode, detail: ErrorDetail) -> Response {
    (status, Json(detail)).into_response()
}

fn malformed(hint: &str, detail: impl Into<String>) -> Response {
    taler_error(
        StatusCode::BAD_REQUEST,
        ErrorDetail::new(codes::GENERIC_PARAMETER_MALFORMED, hint).with_detail(detail),
    )
}

fn missing(header_name: &str) -> Response {
    taler_error(
        StatusCode::BAD_REQUEST,
        ErrorDetail::new(
            codes::GENERIC_PARAMETER_MISSING,
            "a required header is missing",
        )
        .with_detail(header_name),
    )
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!("taler emulator store failed: {e}");
    taler_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorDetail::new(codes::GENERIC_DB_STORE_FAILED, "storing the upload failed"),
    )
}

/// The envelope for injected faults: the code the exchange would send with that status.
pub fn fault_envelope(codes_cfg: EmulatorErrorCodes) -> docgate_emulator::ErrorEnvelope {
    Arc::new(move |status: StatusCode| {
        let (code, hint) = match status.as_u16() {
            400 => (
                codes::GENERIC_PARAMETER_MALFORMED,
                "The request is malformed.",
            ),
            403 => (codes_cfg.signature_invalid, "The signature is invalid."),
            404 => (codes_cfg.third_party_unknown, "The third party is unknown."),
            411 => (
                codes::GENERIC_PARAMETER_MISSING,
                "Content-Length is required.",
            ),
            413 => (
                codes::GENERIC_UPLOAD_EXCEEDS_LIMIT,
                "The upload exceeds the limit.",
            ),
            500 => (
                codes::GENERIC_DB_STORE_FAILED,
                "The database failed to store the data.",
            ),
            503 => (
                codes::GENERIC_DB_SETUP_FAILED,
                "The database is not available.",
            ),
            _ => (
                codes::GENERIC_INTERNAL_INVARIANT_FAILURE,
                "An internal invariant failed.",
            ),
        };
        taler_error(
            status,
            ErrorDetail::new(code, hint).with_detail("fault injected by the emulator"),
        )
    })
}

/// Any path the exchange does not serve.
pub async fn endpoint_unknown() -> Response {
    taler_error(
        StatusCode::NOT_FOUND,
        ErrorDetail::new(
            codes::GENERIC_ENDPOINT_UNKNOWN,
            "There is no endpoint defined for the URL provided by the client.",
        ),
    )
}

/// A method other than POST on the upload path.
pub async fn method_invalid() -> Response {
    let mut response = taler_error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorDetail::new(
            codes::GENERIC_METHOD_INVALID,
            "The HTTP method used is invalid for this endpoint.",
        ),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    response
}

/// One header's value. Sent twice, a header is ambiguous (which one did the signature
/// cover?), so that is refused like a malformed one.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Response> {
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(malformed(
            "a header was sent more than once",
            name.to_owned(),
        ));
    }
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| malformed("a header is not valid text", name.to_owned())),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Response> {
    match header(headers, name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(missing(name)),
    }
}

/// What the headers established, before the body is read.
struct Checked {
    extern_pub: String,
    payto: String,
    customer: Vec<u8>,
    content_type: String,
    declared_len: u64,
    h_body: [u8; 64],
}

pub async fn kyc_bulk(
    State(shared): State<Arc<Shared>>,
    Path(extern_pub): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let checked = match check_headers(&shared, &extern_pub, &parts.headers).await {
        Ok(c) => c,
        Err(response) => {
            linger(body);
            return response;
        }
    };
    let small = checked.declared_len <= SMALL_BODY;
    if !small && shared.is_stored(&checked).await {
        linger(body);
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    let answer = receive(&shared, &checked, body).await;
    // A small body was not looked up first: if it is refused, a stored one still says 412.
    if small && answer.status().is_client_error() && shared.is_stored(&checked).await {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    answer
}

impl Shared {
    /// Whether this customer's body with this hash is stored already.
    async fn is_stored(&self, checked: &Checked) -> bool {
        self.store
            .contains(&checked.customer, &checked.h_body)
            .await
    }
}

/// At most this much of a refused body is read and discarded after the answer.
const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;
const LINGER_TOTAL: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Read and discard the body of a request answered early, in the background.
///
/// The answer is sent at once, from the headers alone; but closing the connection while the
/// client is still sending would make the kernel reset it, and a reset destroys the answer
/// before the client reads it (the classic "lingering close" problem web servers solve the
/// same way). So the rest of the body is drained — bounded in bytes and time, never stored.
fn linger(body: Body) {
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
        let mut drained: u64 = 0;
        loop {
            let idle_deadline = (tokio::time::Instant::now() + LINGER_IDLE).min(deadline);
            match tokio::time::timeout_at(idle_deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    drained += chunk.len() as u64;
                    if drained > LINGER_MAX_BYTES {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
}

async fn check_headers(
    shared: &Shared,
    extern_pub: &str,
    headers: &HeaderMap,
) -> Result<Checked, Response> {
    let key = known_key(shared, extern_pub)?;
    let declared_len = check_content_length(shared, headers)?;

    let payto_raw = required(headers, HEADER_PAYTO)?;
    Payto::parse(payto_raw)
        .map_err(|e| malformed("Taler-Customer-Payto is not a payto URI", e.to_string()))?;
    // The customer is who the signature names: the header as sent, hashed per variant.
    let customer = h_payto(shared.scheme.payto_hash, payto_raw);

    let content_type = accepted_content_type(shared, headers)?;

    let if_not_match = required(headers, HEADER_IF_NOT_MATCH)?;
    let h_body: [u8; 64] = crockford::decode_array(if_not_match).map_err(|e| {
        malformed(
            "If-Not-Match is not a Crockford base32 SHA-512 hash",
            e.to_string(),
        )
    })?;

    let signature = required(headers, HEADER_SIGNATURE)?;
    check_signature(shared, &key, &h_body, payto_raw, signature)?;
    Ok(Checked {
        extern_pub: extern_pub.to_ascii_uppercase(),
        payto: payto_raw.to_owned(),
        customer,
        content_type,
        declared_len,
        h_body,
    })
}

/// `$EXTERN_PUB` as a public key the exchange has registered.
fn known_key(shared: &Shared, extern_pub: &str) -> Result<ed25519_dalek::VerifyingKey, Response> {
    let key = signing::parse_public(extern_pub).ok_or_else(|| {
        malformed(
            "EXTERN_PUB is not a Crockford base32 EdDSA public key",
            "EXTERN_PUB",
        )
    })?;
    if !shared.is_registered(&key) {
        return Err(taler_error(
            StatusCode::NOT_FOUND,
            ErrorDetail::new(
                shared.codes.third_party_unknown,
                "The third party is not known to the exchange.",
            )
            .with_detail(extern_pub.to_owned()),
        ));
    }
    Ok(key)
}

/// `Content-Length`: present, a number, within the upload limit and not zero.
fn check_content_length(shared: &Shared, headers: &HeaderMap) -> Result<u64, Response> {
    let Some(length) = header(headers, header::CONTENT_LENGTH.as_str())? else {
        return Err(taler_error(
            StatusCode::LENGTH_REQUIRED,
            ErrorDetail::new(
                codes::GENERIC_PARAMETER_MISSING,
                "The Content-Length header is required for uploads.",
            )
            .with_detail("Content-Length"),
        ));
    };
    let declared_len: u64 = length
        .parse()
        .map_err(|_| malformed("Content-Length is not a number", "Content-Length"))?;
    if declared_len > shared.upload_limit {
        return Err(taler_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorDetail::new(
                codes::GENERIC_UPLOAD_EXCEEDS_LIMIT,
                "The upload exceeds the size limit of the exchange.",
            )
            .with_detail(format!(
                "{declared_len} bytes declared; the limit is {} bytes",
                shared.upload_limit
            )),
        ));
    }
    if declared_len == 0 {
        return Err(malformed("The body is empty.", "Content-Length"));
    }
    Ok(declared_len)
}

/// The declared `Content-Type`, normalized, if the exchange accepts it.
fn accepted_content_type(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let content_type = required(headers, header::CONTENT_TYPE.as_str())?;
    media::normalize_declared(Some(content_type))
        .filter(|t| shared.accepted.iter().any(|r| r.matches(t)))
        .ok_or_else(|| {
            malformed(
                "Content-Type must be application/pdf, audio/*, image/*, video/* or application/zip",
                content_type.to_owned(),
            )
        })
}

fn check_signature(
    shared: &Shared,
    key: &ed25519_dalek::VerifyingKey,
    h_body: &[u8; 64],
    payto: &str,
    signature: &str,
) -> Result<(), Response> {
    match signing::verify(key, &shared.scheme, h_body, payto, signature) {
        Ok(()) => Ok(()),
        Err(VerifyError::Malformed) => Err(malformed(
            "Taler-Extern-Signature is not a Crockford base32 EdDSA signature",
            HEADER_SIGNATURE,
        )),
        Err(VerifyError::Invalid) => Err(taler_error(
            StatusCode::FORBIDDEN,
            ErrorDetail::new(
                shared.codes.signature_invalid,
                "The signature over the upload is invalid.",
            )
            .with_detail(HEADER_SIGNATURE),
        )),
    }
}

/// Stream the body to disk while hashing it, verify it, and commit it.
async fn receive(shared: &Shared, checked: &Checked, body: Body) -> Response {
    let temp = shared.store.temp();
    let spooled = match spool_body(shared, checked, body, temp.path()).await {
        Ok(spooled) => spooled,
        Err(response) => return response,
    };
    if spooled.sha512 != checked.h_body {
        return malformed(
            "If-Not-Match is not the SHA-512 of the body.",
            format!("the body hashes to {}", crockford::encode(&spooled.sha512)),
        );
    }
    if let Err(response) = check_body_type(shared, checked, &spooled, temp.path()).await {
        return response;
    }
    commit(shared, checked, temp, spooled).await
}

/// A body received whole: written to its temporary file, or (a small one) still in memory.
struct Spooled {
    size: u64,
    /// The first bytes, for sniffing the type.
    head: Vec<u8>,
    sha512: [u8; 64],
    /// A small body's bytes, written by the commit (one trip to a blocking thread for the
    /// whole upload). `None`: the body is in the temporary file.
    small: Option<Vec<axum::body::Bytes>>,
}

/// Bodies up to this size are kept until verified and written by the commit.
const SMALL_BODY: u64 = 64 * 1024;

/// Bytes gathered per write of a larger body to its file.
const WRITE_BUFFER: usize = 256 * 1024;

/// Receive the body, hashing it: a small one into memory, a larger one streamed to `path`.
/// It must be exactly `Content-Length` bytes and keep arriving within the idle timeout.
async fn spool_body(
    shared: &Shared,
    checked: &Checked,
    body: Body,
    path: &std::path::Path,
) -> Result<Spooled, Response> {
    // A small body is kept in memory and written by the commit; a larger one streams to the
    // file as it arrives.
    let mut small: Vec<axum::body::Bytes> = Vec::new();
    let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
    let mut stream = body.into_data_stream();
    let mut hasher = Sha512::new();
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut received: u64 = 0;
    loop {
        let next = tokio::time::timeout(shared.body_idle_timeout, stream.next())
            .await
            .map_err(|_| {
                malformed(
                    "The body stalled.",
                    format!("no bytes for {:?}", shared.body_idle_timeout),
                )
            })?;
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(malformed("The body could not be read.", e.to_string())),
        };
        received += chunk.len() as u64;
        if received > checked.declared_len {
            return Err(malformed(
                "The body is longer than Content-Length.",
                "Content-Length",
            ));
        }
        if head.len() < SNIFF_BYTES {
            let take = chunk.len().min(SNIFF_BYTES - head.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        match &mut file {
            None if received <= SMALL_BODY => small.push(chunk),
            None => {
                let mut created = tokio::fs::File::create(path).await.map_err(store_failed)?;
                // tokio's file copies each write into a buffer of its own, up to 2 MiB by
                // default; the BufWriter gathers as much before each write, which is enough.
                created.set_max_buf_size(WRITE_BUFFER);
                let mut w = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, created);
                for piece in small.drain(..) {
                    w.write_all(&piece).await.map_err(store_failed)?;
                }
                w.write_all(&chunk).await.map_err(store_failed)?;
                file = Some(w);
            }
            Some(w) => w.write_all(&chunk).await.map_err(store_failed)?,
        }
    }
    if received != checked.declared_len {
        return Err(malformed(
            "The body is shorter than Content-Length.",
            format!("{received} of {} bytes", checked.declared_len),
        ));
    }
    let small = match file {
        Some(mut w) => {
            // Flushed to the kernel, not synced: see the store's docs.
            w.flush().await.map_err(store_failed)?;
            None
        }
        None => Some(small),
    };
    Ok(Spooled {
        size: received,
        head,
        sha512: hasher.finalize().into(),
        small,
    })
}

/// The sniffed type must agree with `Content-Type`, and a ZIP must pass the entry rules.
async fn check_body_type(
    shared: &Shared,
    checked: &Checked,
    spooled: &Spooled,
    path: &std::path::Path,
) -> Result<(), Response> {
    let sniffed = media::sniff(&spooled.head).unwrap_or("of no recognised type");
    if !media::declared_agrees(&checked.content_type, sniffed) {
        return Err(malformed(
            "The body is not of the declared Content-Type.",
            format!("declared {}, the body is {sniffed}", checked.content_type),
        ));
    }
    if sniffed != "application/zip" {
        return Ok(());
    }
    let rules: ZipRules = shared.zip_rules.clone();
    let path = path.to_path_buf();
    let in_memory: Option<Vec<u8>> = spooled.small.as_ref().map(|pieces| pieces.concat());
    let inspected = tokio::task::spawn_blocking(move || match in_memory {
        Some(bytes) => Ok(archive::inspect(std::io::Cursor::new(bytes), &rules)),
        None => {
            let file = std::fs::File::open(&path)?;
            Ok::<_, std::io::Error>(archive::inspect(
                std::io::BufReader::with_capacity(64 * 1024, file),
                &rules,
            ))
        }
    })
    .await;
    match inspected {
        Ok(Ok(Ok(_entries))) => Ok(()),
        Ok(Ok(Err(e))) => Err(malformed("The ZIP file is not acceptable.", e.to_string())),
        Ok(Err(e)) => Err(store_failed(e)),
        Err(e) => Err(store_failed(e)),
    }
}

/// Move the verified body into the store: 204, or 412 if an identical upload won the race.
async fn commit(shared: &Shared, checked: &Checked, temp: TempBody, spooled: Spooled) -> Response {
    let size = spooled.size;
    let meta = StoredBody {
        payto: checked.payto.clone(),
        h_body: crockford::encode(&checked.h_body),
        size,
        content_type: checked.content_type.clone(),
        extern_pub: checked.extern_pub.clone(),
        received_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        path: Default::default(),
    };
    match shared
        .store
        .commit(
            temp,
            spooled.small,
            &checked.customer,
            &checked.h_body,
            &meta,
        )
        .await
    {
        Ok(Committed::Stored) => {
            tracing::info!(
                size,
                content_type = %checked.content_type,
                "taler emulator stored a kyc-bulk upload"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Committed::AlreadyStored) => StatusCode::PRECONDITION_FAILED.into_response(),
        Err(e) => store_failed(e),
    }
}

/// The media ranges the exchange accepts as a body.
pub fn accepted_ranges() -> Vec<MediaRange> {
    crate::client::ACCEPTED
        .iter()
        .filter_map(|s| MediaRange::parse(s).ok())
        .collect()
}

/// The default wait for the next body chunk.
pub const DEFAULT_BODY_IDLE: Duration = Duration::from_secs(30);
