//! The ingest pipeline: one pass over a document's bytes as they arrive.
//!
//! ```text
//! body chunks ─▶ running count (413 the moment the limit is crossed)
//!             ─▶ first 8 KiB: sniff, compare with the declared type (415 before spooling)
//!             ─▶ 256 KiB blocks ─▶ digests + content scan (blocking threads, overlapped
//!                               │   with the network; a scan finding stops the body: 415)
//!                               └▶ spool (memory, then a file)
//! EOF ─▶ minimum size (422) ─▶ scan verdict (415) ─▶ ZIP entries checked (422/415/413)
//!     ─▶ Document
//! ```
//! Memory per upload is bounded by a couple of blocks whatever the document size: the body is
//! never collected, and a block is released as soon as it is hashed and written.
//!
//! Think of it as pingora's per-request body filter: the pipeline looks at each chunk once, in
//! order, and can stop the request at any chunk.

use std::{error::Error as StdError, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{
    archive::{self, ArchiveError, ZipEntry},
    blocks,
    digest::{DigestError, DigestPipeline, Digests, DigestsHex},
    media::{declared_agrees, normalize_declared, sniff, SNIFF_BYTES},
    policy::UploadPolicy,
    problem::{Problem, Side},
    scan::{ContentScan, ScanError},
    spool::{SpoolDir, SpoolWriter, Spooled, BLOCK},
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
    #[error(transparent)]
    ActiveContent(#[from] ScanError),
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
            IngestError::ActiveContent(e) => active_content_problem(e),
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

fn invalid_archive(e: &ArchiveError) -> Problem {
    Problem::new(
        http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_archive",
        "Invalid archive",
    )
    .with_detail(e.to_string())
}

fn archive_too_large(e: &ArchiveError) -> Problem {
    Problem::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "archive_too_large",
        "Archive too large",
    )
    .with_detail(e.to_string())
}

/// Entry names in `ArchiveError` are already escaped and cut ([`archive::display_name`]).
fn archive_problem(e: &ArchiveError) -> Problem {
    match e {
        ArchiveError::EntryType { name, sniffed } => Problem::new(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail(e.to_string())
        .with_extra("entry", name.as_str())
        .with_extra("sniffed_type", sniffed.as_str()),
        ArchiveError::ActiveContent { name, source } => {
            active_content_problem(source).with_extra("entry", name.as_str())
        }
        ArchiveError::TooManyEntries { max, .. } => {
            archive_too_large(e).with_extra("limit", *max as u64)
        }
        ArchiveError::ExpandsTooFar { max, .. } => archive_too_large(e).with_extra("limit", *max),
        ArchiveError::EntryRatio { name, max, .. } => archive_too_large(e)
            .with_extra("entry", name.as_str())
            .with_extra("max_compression_ratio", *max),
        ArchiveError::ArchiveRatio { max, .. } => {
            archive_too_large(e).with_extra("max_compression_ratio", *max)
        }
        ArchiveError::UnsafeName { name, .. }
        | ArchiveError::LyingSize { name, .. }
        | ArchiveError::Encrypted { name } => invalid_archive(e).with_extra("entry", name.as_str()),
        ArchiveError::NameMismatch { central, local } => invalid_archive(e)
            .with_extra("entry", central.as_str())
            .with_extra("local_name", local.as_str()),
        // The store's own words (keys, S3 messages) are for the log, not the client.
        ArchiveError::Io(_) => {
            Problem::internal("the document could not be read back from storage")
        }
        ArchiveError::Corrupt(_) | ArchiveError::DuplicateNames { .. } | ArchiveError::Empty => {
            invalid_archive(e)
        }
    }
}

fn active_content_problem(e: &ScanError) -> Problem {
    Problem::new(
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "active_content",
        "Active content",
    )
    .with_detail(e.to_string())
    .with_extra("found", e.found())
    .with_extra("offset", e.offset())
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

/// Where a document's blocks go once its type is known: the digests and the content scan
/// (on blocking threads), and the spool.
struct Sink {
    digests: DigestPipeline,
    writer: SpoolWriter,
}

impl Sink {
    fn open(media_type: &str, policy: &UploadPolicy, spool: &SpoolDir, key: &str) -> Sink {
        Sink {
            digests: DigestPipeline::with_scan(
                policy.digests,
                ContentScan::new(media_type, policy),
            ),
            writer: spool.writer(key),
        }
    }

    /// Hand `block` to the digests and the spool, once the process's budget of blocks in
    /// flight (`blocks::INGEST`) has room for it.
    async fn push(&mut self, block: Bytes) -> Result<(), IngestError> {
        let block = blocks::INGEST.admit(block).await;
        self.digests.feed(block.clone()).await?;
        if let Some(found) = self.digests.scan_error() {
            return Err(IngestError::ActiveContent(found));
        }
        self.writer.write(block).await?;
        Ok(())
    }

    async fn finish(self) -> Result<(Digests, Spooled), IngestError> {
        let (digests, verdict) = self.digests.finish_scanned().await?;
        verdict?;
        Ok((digests, self.writer.finish().await?))
    }
}

/// The body's next chunk (`None` at its end), within the idle timeout.
async fn next_chunk<S, E>(
    body: &mut S,
    req: &IngestRequest<'_>,
    total: u64,
) -> Result<Option<Bytes>, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: StdError + 'static,
{
    match tokio::time::timeout(req.idle_timeout, body.next()).await {
        Err(_) => Err(IngestError::Idle(req.idle_timeout)),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(body_error(&e, total, req.max_bytes)),
        Ok(None) => Ok(None),
    }
}

/// The first block's buffer to begin with (it doubles up to `BLOCK` as bytes arrive).
const FIRST_BLOCK: usize = 16 * 1024;

/// Stream `body` through the pipeline into `spool`, under a temporary key.
pub async fn ingest<S, E>(
    body: S,
    req: IngestRequest<'_>,
    spool: &SpoolDir,
) -> Result<Document, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: StdError + 'static,
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
    E: StdError + 'static,
{
    let mut body = body;
    let declared = normalize_declared(req.declared_type.as_deref());
    // The first block grows from FIRST_BLOCK (most documents are small); the next ones are
    // pooled buffers of BLOCK (see `blocks`), returned when the lanes and the spool are done.
    // Every block handed on counts against the process's budget (`blocks::INGEST`) until then.
    let mut pending: Vec<u8> = Vec::new();
    let mut blocks_pushed = false;
    let mut sink: Option<(&'static str, Sink)> = None;
    let mut total: u64 = 0;

    while let Some(chunk) = next_chunk(&mut body, &req, total).await? {
        total += chunk.len() as u64;
        if total > req.max_bytes {
            return Err(IngestError::TooLarge {
                limit: req.max_bytes,
            });
        }
        // Large chunks pass through without a copy; small ones are gathered into blocks of
        // at most BLOCK bytes (a chunk that would overflow one is split across two, so no
        // block's buffer grows past BLOCK). The first block starts small and grows (most
        // documents are small); the next ones are allocated at BLOCK at once.
        if pending.is_empty() && chunk.len() >= BLOCK && sink.is_some() {
            if let Some((_, sink)) = sink.as_mut() {
                sink.push(chunk).await?;
                blocks_pushed = true;
            }
            continue;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            if pending.capacity() == 0 {
                if blocks_pushed {
                    pending = blocks::take();
                } else {
                    pending.reserve(FIRST_BLOCK);
                }
            }
            let room = BLOCK.saturating_sub(pending.len()).max(1);
            let piece = rest.split_to(rest.len().min(room));
            pending.extend_from_slice(&piece);
            if sink.is_none() && pending.len() >= SNIFF_BYTES {
                let media_type = check_type(&pending, declared.as_deref(), req.policy)?;
                sink = Some((media_type, Sink::open(media_type, req.policy, spool, key)));
            }
            if let (true, Some((_, sink))) = (pending.len() >= BLOCK, sink.as_mut()) {
                sink.push(blocks::freeze(std::mem::take(&mut pending)))
                    .await?;
                blocks_pushed = true;
            }
        }
    }

    if total < req.policy.min_document_bytes {
        return Err(IngestError::TooSmall {
            min: req.policy.min_document_bytes,
            actual: total,
        });
    }
    let (media_type, mut sink) = match sink {
        Some(opened) => opened,
        None => {
            let media_type = check_type(&pending, declared.as_deref(), req.policy)?;
            (media_type, Sink::open(media_type, req.policy, spool, key))
        }
    };
    if !pending.is_empty() {
        sink.push(blocks::freeze(pending)).await?;
    }
    let (digests, spooled) = sink.finish().await?;
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
pub(crate) async fn inspect_if_zip(
    spooled: &Spooled,
    media_type: &str,
    policy: &UploadPolicy,
) -> Result<Option<Vec<ZipEntry>>, IngestError> {
    match (&policy.zip, media_type) {
        (Some(rules), "application/zip") => {
            let rules = rules.clone();
            let reader = spooled.blocking_reader()?;
            let scan = policy.refuse_active_content;
            let checked =
                tokio::task::spawn_blocking(move || archive::inspect_with(reader, &rules, scan))
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
    if policy.refuse_active_content {
        // The document may have been ingested under a policy that let active content pass.
        scan_spooled(&doc.spool, &doc.meta.media_type).await?;
    }
    Ok(())
}

/// Run the content scanner over a spooled document, on a blocking thread.
async fn scan_spooled(spooled: &Spooled, media_type: &str) -> Result<(), IngestError> {
    let scan = ContentScan::for_media_type(media_type);
    if !scan.is_active() {
        return Ok(());
    }
    let reader = spooled.blocking_reader()?;
    let verdict = tokio::task::spawn_blocking(move || scan.scan_reader(reader))
        .await
        .map_err(|e| DigestError::new(format!("content scan failed: {e}")))?;
    Ok(verdict??)
}

/// A body cut by a length limit (http-body-util's `Limited`, whatever wraps it) keeps its
/// 413 meaning; it is recognised by its type anywhere in the error's source chain.
fn body_error<E: StdError + 'static>(e: &E, total: u64, max: u64) -> IngestError {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return IngestError::TooLarge { limit: max };
        }
        cause = err.source();
    }
    if total > max {
        IngestError::TooLarge { limit: max }
    } else {
        IngestError::Body(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        media::MediaRange,
        policy::{DigestSet, Slots},
    };
    use std::{convert::Infallible, fmt};

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
            refuse_active_content: true,
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

    fn pdf_with(objects: &[u8]) -> Vec<u8> {
        let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        v.extend_from_slice(objects);
        // Enough body for the sniffing window, then the end.
        v.extend(std::iter::repeat_n(b' ', 20_000));
        v.extend_from_slice(b"\ntrailer << /Root 1 0 R >>\n%%EOF\n");
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pdf_with_javascript_is_active_content_and_leaves_no_spool_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let p = policy();
        let data = pdf_with(b"1 0 obj << /OpenAction << /S /J#61vaScript /JS (x) >> >> endobj\n");
        let err = ingest(
            chunks(&data, 3000),
            req(&p, Some("application/pdf")),
            &spool,
        )
        .await
        .expect_err("javascript");
        assert!(matches!(err, IngestError::ActiveContent(_)), "{err:?}");
        assert!(!err.retryable());
        let problem = err.to_problem();
        assert_eq!(
            (problem.status.as_u16(), problem.code.as_ref()),
            (415, "active_content")
        );
        assert_eq!(problem.extra["found"], "JavaScript");
        assert!(problem
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("JavaScript")));
        assert!(
            spool.store().list("").await.expect("list").is_empty(),
            "a refused document leaves no spool file"
        );
    }

    /// A PNG that ends (IEND), zero padding, then an ELF header.
    fn png_then_elf() -> Vec<u8> {
        let mut data = PNG.to_vec();
        data.extend_from_slice(&[0x90, 0x77, 0x53, 0xde]); // IHDR's CRC
        data.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
        data.resize(SNIFF_BYTES + 100, 0);
        data.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
        data.resize(SNIFF_BYTES + 4096, 0);
        data
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_polyglot_is_cut_off_while_streaming_unless_the_policy_allows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let p = policy();
        let mut r = req(&p, None);
        r.max_bytes = u64::MAX;
        // An endless body after the polyglot's head: ingest must stop by itself.
        let mut sent = 0u64;
        let endless = futures_util::stream::poll_fn(move |_| {
            let chunk = if sent == 0 {
                png_then_elf()
            } else {
                vec![0u8; 64 * 1024]
            };
            sent += chunk.len() as u64;
            assert!(sent < 16 << 20, "ingest kept reading past the finding");
            std::task::Poll::Ready(Some(Ok::<_, Infallible>(Bytes::from(chunk))))
        });
        let err = ingest(endless, r, &spool).await.expect_err("polyglot");
        let problem = err.to_problem();
        assert_eq!(problem.code, "active_content");
        assert_eq!(problem.extra["found"], "an ELF executable");
        assert_eq!(problem.extra["offset"], SNIFF_BYTES as u64 + 100);
        let mut lenient = policy();
        lenient.refuse_active_content = false;
        let data = png_then_elf();
        let doc = ingest(chunks(&data, 1000), req(&lenient, None), &spool)
            .await
            .expect("allowed by policy");
        assert_eq!(doc.meta.size, data.len() as u64);
    }

    #[tokio::test]
    async fn recheck_scans_a_document_ingested_under_a_lenient_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1 << 20).expect("spool");
        let mut lenient = policy();
        lenient.refuse_active_content = false;
        let data = pdf_with(b"1 0 obj << /S /Launch /F (calc.exe) >> endobj\n");
        let mut doc = ingest(chunks(&data, 4096), req(&lenient, None), &spool)
            .await
            .expect("lenient");
        assert!(recheck(&mut doc, &lenient, 1 << 20).await.is_ok());
        let err = recheck(&mut doc, &policy(), 1 << 20)
            .await
            .expect_err("strict");
        assert_eq!(err.to_problem().extra["found"], "a Launch action");
    }

    fn zip_policy() -> UploadPolicy {
        let mut p = policy();
        p.accepted
            .push(MediaRange::parse("application/zip").expect("valid"));
        p.zip = Some(crate::archive::ZipRules {
            entry_types: p.accepted.clone(),
            max_entries: 4,
            max_total_uncompressed: 64 << 20,
            max_compression_ratio: 100,
        });
        p
    }

    fn zip_of(name: &str, data: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file(name, opts).expect("start");
        w.write_all(data).expect("write");
        w.finish().expect("finish").into_inner()
    }

    #[tokio::test]
    async fn archive_refusals_are_problems_with_their_own_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1 << 20).expect("spool");
        let p = zip_policy();
        let stored = zip::CompressionMethod::Stored;
        let slip = zip_of("../../etc/cron.d/x\u{1b}.pdf", &pdf_with(b""), stored);
        let problem = ingest(chunks(&slip, 4096), req(&p, None), &spool)
            .await
            .expect_err("zip slip")
            .to_problem();
        assert_eq!(
            (problem.status.as_u16(), problem.code.as_ref()),
            (422, "invalid_archive")
        );
        assert_eq!(problem.extra["entry"], "../../etc/cron.d/x\\u{1b}.pdf");
        let mut zeros = b"%PDF-1.4\n".to_vec();
        zeros.resize(8 << 20, 0);
        let bomb = zip_of("zeros.pdf", &zeros, zip::CompressionMethod::Deflated);
        let problem = ingest(chunks(&bomb, 4096), req(&p, None), &spool)
            .await
            .expect_err("bomb")
            .to_problem();
        assert_eq!(
            (problem.status.as_u16(), problem.code.as_ref()),
            (413, "archive_too_large")
        );
        assert_eq!(problem.extra["max_compression_ratio"], 100);
        let js = zip_of(
            "a.pdf",
            &pdf_with(b"1 0 obj << /JS (x) >> endobj\n"),
            stored,
        );
        let problem = ingest(chunks(&js, 4096), req(&p, None), &spool)
            .await
            .expect_err("javascript inside")
            .to_problem();
        assert_eq!(
            (problem.status.as_u16(), problem.code.as_ref()),
            (415, "active_content")
        );
        assert_eq!(problem.extra["entry"], "a.pdf");
    }

    /// Regression: a body cut by `http_body_util::Limited` was recognised by the words in
    /// hyper's message; now by the error's type, wherever it sits in the source chain.
    #[tokio::test]
    async fn a_body_cut_by_a_length_limit_is_too_large_by_its_type() {
        #[derive(Debug)]
        struct Wrapped(Box<dyn StdError + Send + Sync>);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the body failed")
            }
        }
        impl StdError for Wrapped {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&*self.0)
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1024).expect("spool");
        let p = policy();
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(
            http_body_util::Full::new(Bytes::from_static(&[0; 100])),
            10,
        );
        let cut = match limited.collect().await {
            Err(e) => e,
            Ok(_) => panic!("the limit lets 100 bytes through"),
        };
        for (cause, too_large) in [(cut, true), ("length limit exceeded".into(), false)] {
            let body =
                futures_util::stream::iter(vec![Ok(Bytes::from(png(100))), Err(Wrapped(cause))]);
            let err = ingest(body, req(&p, None), &spool).await.expect_err("cut");
            assert_eq!(
                matches!(err, IngestError::TooLarge { .. }),
                too_large,
                "{err:?}"
            );
        }
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
