//! The ingest pipeline: one pass over a document's bytes as they arrive.
//!
//! ```text
//! body chunks ─▶ running count (413 the moment the limit is crossed)
//!             ─▶ first 8 KiB: sniff, compare with the declared type (415 before spooling)
//!             ─▶ 256 KiB blocks ─▶ digests (blocking threads, overlapped with the network)
//!                               └▶ spool (memory, then a file)
//! EOF ─▶ minimum size (422) ─▶ ZIP entries checked (415/413) ─▶ Document
//! ```
//! Memory per upload is bounded by a couple of blocks whatever the document size: the body is
//! never collected, and a block is released as soon as it is hashed and written.
//!
//! Think of it as pingora's per-request body filter: the pipeline looks at each chunk once, in
//! order, and can stop the request at any chunk.

use std::{fmt, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{
    archive::{self, ArchiveError, ZipEntry},
    digest::{DigestError, DigestPipeline, Digests, DigestsHex},
    media::{declared_agrees, normalize_declared, sniff, SNIFF_BYTES},
    policy::UploadPolicy,
    problem::{Problem, Side},
    spool::{SpoolDir, Spooled, BLOCK},
};

/// What the pipeline learnt about one document; this is what receipts list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMeta {
    pub slot: String,
    pub filename: Option<String>,
    pub size: u64,
    /// The sniffed type (the truth).
    pub media_type: String,
    /// What the sender claimed, normalised (absent when it claimed nothing).
    pub declared_type: Option<String>,
    #[serde(flatten)]
    pub digests: DigestsHex,
    /// For ZIP documents: the checked entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<ZipEntry>>,
}

impl DocumentMeta {
    /// The raw digests (the hex in `digests` was produced by this crate, so it parses).
    pub fn raw_digests(&self) -> Option<Digests> {
        Digests::from_hex(&self.digests)
    }
}

/// A checked, spooled document.
#[derive(Debug, Clone)]
pub struct Document {
    pub meta: DocumentMeta,
    pub spool: Spooled,
}

/// One document to ingest.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    pub slot: String,
    pub filename: Option<String>,
    /// The part's or body's Content-Type, as sent.
    pub declared_type: Option<String>,
    pub policy: &'a UploadPolicy,
    /// Bytes this document may still use: the document maximum, or less when earlier documents
    /// of the same request used part of the request's budget.
    pub max_bytes: u64,
    /// A body that sends nothing for this long is cut off (slow-loris defence).
    pub idle_timeout: Duration,
}

/// Why a document was not accepted. Each variant knows who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the document exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the document is {actual} bytes; at least {min} are required")]
    TooSmall { min: u64, actual: u64 },
    #[error("declared as {declared}, but the content is {sniffed}")]
    TypeMismatch { declared: String, sniffed: String },
    #[error("the content is {sniffed}, which is not accepted")]
    Unsupported {
        sniffed: String,
        accepted: Vec<String>,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("the request body failed: {0}")]
    Body(String),
    #[error("no body bytes arrived for {0:?}")]
    Idle(Duration),
    #[error("spool failed: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl IngestError {
    pub fn side(&self) -> Side {
        match self {
            IngestError::Spool(_) | IngestError::Digest(_) => Side::Gateway,
            IngestError::Archive(ArchiveError::Io(_)) => Side::Gateway,
            _ => Side::Client,
        }
    }

    /// Sending the same bytes again could work (only our own transient failures).
    pub fn retryable(&self) -> bool {
        self.side() == Side::Gateway
    }

    pub fn to_problem(&self) -> Problem {
        match self {
            IngestError::TooLarge { limit } => Problem::payload_too_large(*limit, "the document"),
            IngestError::TooSmall { min, actual } => {
                Problem::payload_too_small(*min, *actual, "the document")
            }
            IngestError::TypeMismatch { declared, sniffed } => {
                Problem::media_type_mismatch(declared, sniffed)
            }
            IngestError::Unsupported { sniffed, accepted } => {
                Problem::unsupported_media_type(sniffed, accepted)
            }
            IngestError::Archive(e) => archive_problem(e),
            IngestError::Body(msg) => {
                Problem::bad_request(format!("the request body could not be read: {msg}"))
            }
            IngestError::Idle(d) => Problem::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "Request body timeout",
            )
            .with_detail(format!("no body bytes arrived for {} s", d.as_secs())),
            IngestError::Spool(e) => Problem::internal(format!("spool: {e}")),
            IngestError::Digest(e) => Problem::internal(e.to_string()),
        }
    }
}

fn archive_problem(e: &ArchiveError) -> Problem {
    use http::StatusCode;
    match e {
        ArchiveError::EntryType { name, sniffed } => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail(e.to_string())
        .with_extra("entry", name.as_str())
        .with_extra("sniffed_type", sniffed.as_str()),
        ArchiveError::TooManyEntries { max, .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive_too_large",
            "Archive too large",
        )
        .with_detail(e.to_string())
        .with_extra("limit", *max as u64),
        ArchiveError::ExpandsTooFar { max, .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive_too_large",
            "Archive too large",
        )
        .with_detail(e.to_string())
        .with_extra("limit", *max),
        ArchiveError::Io(io) => Problem::internal(format!("spool: {io}")),
        _ => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_archive",
            "Invalid archive",
        )
        .with_detail(e.to_string()),
    }
}

impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Problem {
        e.to_problem()
    }
}

/// The sniff verdict for a document's head, against what was declared and what is accepted.
pub fn check_type(
    head: &[u8],
    declared: Option<&str>,
    policy: &UploadPolicy,
) -> Result<&'static str, IngestError> {
    let sniffed = sniff(head);
    let shown = sniffed.unwrap_or("of no recognised type");
    if let Some(declared) = declared {
        if sniffed.is_none_or(|s| !declared_agrees(declared, s)) {
            return Err(IngestError::TypeMismatch {
                declared: declared.to_owned(),
                sniffed: shown.to_owned(),
            });
        }
    }
    match sniffed {
        Some(t) if policy.accepts(t) => Ok(t),
        _ => Err(IngestError::Unsupported {
            sniffed: shown.to_owned(),
            accepted: policy.accepted_names(),
        }),
    }
}

/// Stream `body` through the pipeline into `spool`, under a temporary key.
pub async fn ingest<S, E>(
    body: S,
    req: IngestRequest<'_>,
    spool: &SpoolDir,
) -> Result<Document, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    let key = format!("tmp/{}", uuid::Uuid::new_v4().simple());
    ingest_into(body, req, spool, &key).await
}

/// Stream `body` through the pipeline into `spool` under `key` (the document's final key:
/// nothing is copied when the upload is accepted).
pub async fn ingest_into<S, E>(
    body: S,
    req: IngestRequest<'_>,
    spool: &SpoolDir,
    key: &str,
) -> Result<Document, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    let mut body = body;
    let declared = normalize_declared(req.declared_type.as_deref());
    let mut digests = DigestPipeline::new(req.policy.digests);
    let mut writer = spool.writer(key);
    let mut pending = BytesMut::new();
    let mut media_type: Option<&'static str> = None;
    let mut total: u64 = 0;

    loop {
        let next = match tokio::time::timeout(req.idle_timeout, body.next()).await {
            Ok(next) => next,
            Err(_) => return Err(IngestError::Idle(req.idle_timeout)),
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(body_error(e, total, req.max_bytes)),
            None => break,
        };
        total += chunk.len() as u64;
        if total > req.max_bytes {
            return Err(IngestError::TooLarge {
                limit: req.max_bytes,
            });
        }
        // Large chunks pass through without a copy; small ones are gathered into blocks.
        let block = if pending.is_empty() && chunk.len() >= BLOCK && media_type.is_some() {
            Some(chunk)
        } else {
            pending.extend_from_slice(&chunk);
            None
        };
        if media_type.is_none() && pending.len() >= SNIFF_BYTES {
            media_type = Some(check_type(&pending, declared.as_deref(), req.policy)?);
        }
        let block = match block {
            Some(b) => Some(b),
            None if pending.len() >= BLOCK && media_type.is_some() => {
                Some(pending.split().freeze())
            }
            None => None,
        };
        if let Some(block) = block {
            digests.feed(block.clone()).await?;
            writer.write(block).await?;
        }
    }

    if total < req.policy.min_document_bytes {
        return Err(IngestError::TooSmall {
            min: req.policy.min_document_bytes,
            actual: total,
        });
    }
    let media_type = match media_type {
        Some(t) => t,
        None => check_type(&pending, declared.as_deref(), req.policy)?,
    };
    if !pending.is_empty() {
        let block = pending.split().freeze();
        digests.feed(block.clone()).await?;
        writer.write(block).await?;
    }
    let digests = digests.finish().await?;
    let spooled = writer.finish().await?;

    let entries = inspect_if_zip(&spooled, media_type, req.policy).await?;

    Ok(Document {
        meta: DocumentMeta {
            slot: req.slot,
            filename: req.filename,
            size: total,
            media_type: media_type.to_owned(),
            declared_type: declared,
            digests: digests.to_hex(),
            entries,
        },
        spool: spooled,
    })
}

/// Open a ZIP document and check its entries when the policy asks for it.
async fn inspect_if_zip(
    spooled: &Spooled,
    media_type: &str,
    policy: &UploadPolicy,
) -> Result<Option<Vec<ZipEntry>>, IngestError> {
    match (&policy.zip, media_type) {
        (Some(rules), "application/zip") => {
            let rules = rules.clone();
            let reader = spooled.blocking_reader()?;
            let checked = tokio::task::spawn_blocking(move || archive::inspect(reader, &rules))
                .await
                .map_err(|e| DigestError::new(format!("archive check failed: {e}")))?;
            Ok(Some(checked?))
        }
        _ => Ok(None),
    }
}

/// Check an already ingested document against another policy. The gateway needs this when a
/// document arrived before the field naming its provider (multipart part order is free), so
/// it was ingested under the tenant's most permissive policy.
pub async fn recheck(
    doc: &mut Document,
    policy: &UploadPolicy,
    max_bytes: u64,
) -> Result<(), IngestError> {
    let limit = max_bytes.min(policy.max_document_bytes);
    if doc.meta.size > limit {
        return Err(IngestError::TooLarge { limit });
    }
    if doc.meta.size < policy.min_document_bytes {
        return Err(IngestError::TooSmall {
            min: policy.min_document_bytes,
            actual: doc.meta.size,
        });
    }
    if !policy.accepts(&doc.meta.media_type) {
        return Err(IngestError::Unsupported {
            sniffed: doc.meta.media_type.clone(),
            accepted: policy.accepted_names(),
        });
    }
    let wanted = policy.digests;
    let have = &doc.meta.digests;
    if (wanted.sha512 && have.sha512.is_none()) || (wanted.md5 && have.md5.is_none()) {
        // Read the spool once more for the digests this provider needs.
        let mut pipeline = DigestPipeline::new(wanted);
        let mut stream = doc.spool.stream();
        while let Some(block) = stream.next().await {
            pipeline.feed(block?).await?;
        }
        doc.meta.digests = pipeline.finish().await?.to_hex();
    }
    if doc.meta.entries.is_none() {
        doc.meta.entries = inspect_if_zip(&doc.spool, &doc.meta.media_type, policy).await?;
    }
    Ok(())
}

/// hyper reports a body cut by our own length limit as an error too; keep the 413 meaning.
fn body_error<E: fmt::Display>(e: E, total: u64, max: u64) -> IngestError {
    let msg = e.to_string();
    if msg.contains("length limit exceeded") || total > max {
        IngestError::TooLarge { limit: max }
    } else {
        IngestError::Body(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        media::MediaRange,
        policy::{DigestSet, Slots},
    };
    use std::convert::Infallible;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

    fn policy() -> UploadPolicy {
        UploadPolicy {
            min_document_bytes: 10,
            max_document_bytes: 1 << 20,
            max_request_bytes: 1 << 20,
            accepted: vec![
                MediaRange::parse("image/*").expect("valid"),
                MediaRange::parse("application/pdf").expect("valid"),
            ],
            digests: DigestSet::ALL,
            slots: Slots::Free { max: 1 },
            zip: None,
        }
    }

    fn req<'a>(p: &'a UploadPolicy, declared: Option<&str>) -> IngestRequest<'a> {
        IngestRequest {
            slot: "file".into(),
            filename: Some("doc".into()),
            declared_type: declared.map(str::to_owned),
            policy: p,
            max_bytes: p.max_document_bytes,
            idle_timeout: Duration::from_secs(5),
        }
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
        let v: Vec<Result<Bytes, Infallible>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(v)
    }

    fn png(len: usize) -> Vec<u8> {
        let mut v = PNG.to_vec();
        v.resize(len, 7);
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn digests_size_and_type_of_a_document_in_small_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        let data = png(700_000);
        let doc = ingest(chunks(&data, 1000), req(&p, Some("image/png")), &spool)
            .await
            .expect("ok");
        assert_eq!(doc.meta.size, 700_000);
        assert_eq!(doc.meta.media_type, "image/png");
        assert_eq!(
            doc.meta.digests,
            Digests::of(&data, DigestSet::ALL).to_hex()
        );
        assert!(!doc.spool.is_in_memory());
        assert_eq!(doc.spool.head(data.len()).await.expect("read"), data);
    }

    #[tokio::test]
    async fn a_chunked_body_is_cut_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let p = policy();
        let mut r = req(&p, None);
        r.max_bytes = 100_000;
        // An endless body: ingest must stop by itself right after byte 100 001.
        let mut sent = 0u64;
        let endless = futures_util::stream::poll_fn(move |_| {
            let chunk = if sent == 0 {
                png(4096)
            } else {
                vec![0u8; 4096]
            };
            sent += chunk.len() as u64;
            assert!(sent < 200_000, "ingest kept reading past the limit");
            std::task::Poll::Ready(Some(Ok::<_, Infallible>(Bytes::from(chunk))))
        });
        let err = ingest(endless, r, &spool).await.expect_err("too large");
        assert!(matches!(err, IngestError::TooLarge { limit: 100_000 }));
        assert_eq!(err.to_problem().status, 413);
        assert!(
            spool.store().list("").await.expect("list").is_empty(),
            "a rejected upload leaves no spool file"
        );
    }

    #[tokio::test]
    async fn a_png_declared_as_pdf_is_a_mismatch_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        let err = ingest(
            chunks(&png(100), 10),
            req(&p, Some("application/pdf")),
            &spool,
        )
        .await
        .expect_err("mismatch");
        let problem = err.to_problem();
        assert_eq!(problem.code, "media_type_mismatch");
        assert_eq!(problem.extra["declared_type"], "application/pdf");
        assert_eq!(problem.extra["sniffed_type"], "image/png");
    }

    #[tokio::test]
    async fn an_executable_is_unsupported_whatever_it_claims_to_be() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
        exe.resize(20_000, 0);
        let err = ingest(chunks(&exe, 4096), req(&p, None), &spool)
            .await
            .expect_err("exe");
        assert_eq!(err.to_problem().code, "unsupported_media_type");
        let err = ingest(chunks(&exe, 4096), req(&p, Some("application/pdf")), &spool)
            .await
            .expect_err("exe");
        assert_eq!(err.to_problem().code, "media_type_mismatch");
        assert_eq!(err.to_problem().status, 415);
    }

    #[tokio::test]
    async fn below_the_minimum_is_payload_too_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        let err = ingest(chunks(&PNG[..8], 8), req(&p, None), &spool)
            .await
            .expect_err("small");
        let problem = err.to_problem();
        assert_eq!(
            (problem.status.as_u16(), problem.code.as_ref()),
            (422, "payload_too_small")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        let first = futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from(png(100)))]);
        let stalled = first.chain(futures_util::stream::pending());
        let err = ingest(Box::pin(stalled), req(&p, None), &spool)
            .await
            .expect_err("idle");
        assert!(matches!(err, IngestError::Idle(_)));
        assert_eq!(err.to_problem().status, 408);
    }
}
