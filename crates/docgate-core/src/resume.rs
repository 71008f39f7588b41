//! A document received in pieces (resumable uploads): the same pipeline as [`crate::ingest`],
//! fed one piece at a time, across requests, replicas and restarts.
//!
//! Each piece (one tus PATCH) streams into its own spool object while it is counted, sniffed
//! (the document's first 8 KiB decide its type, 415 as soon as they are in) and, when the
//! client sent a checksum for the piece, hashed with that algorithm. A piece is only *added*
//! to the document once it is committed — and, with a checksum, verified: a mismatch
//! deletes the piece and the document is exactly as it was (the tus checksum extension's
//! "the offset must not move"). The document's own digests and content scan run over added
//! pieces, so their state lives between requests in a [`Assembly`]; a gateway that lost it (a
//! restart, another replica) rebuilds it by reading the pieces received so far.

use std::fmt;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::{
    digest::DigestPipeline,
    ingest::{check_type, DocumentMeta, IngestError},
    media::{normalize_declared, SNIFF_BYTES},
    policy::UploadPolicy,
    scan::ContentScan,
    spool::{SpoolDir, Spooled},
};

pub use crate::spool::Piece;

/// A checksum the client sent for one piece (`Upload-Checksum: <algorithm> <base64>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub expected: Vec<u8>,
}

/// The piece checksum algorithms docgate speaks (tus requires sha1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
    Md5,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 3] = [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Md5,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
        }
    }

    pub fn parse(name: &str) -> Option<ChecksumAlgorithm> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// An incremental hash of one piece.
enum PieceHasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
    Md5(Md5),
}

impl PieceHasher {
    fn new(algorithm: ChecksumAlgorithm) -> PieceHasher {
        match algorithm {
            ChecksumAlgorithm::Sha1 => PieceHasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => PieceHasher::Sha256(Sha256::new()),
            ChecksumAlgorithm::Md5 => PieceHasher::Md5(Md5::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            PieceHasher::Sha1(h) => h.update(data),
            PieceHasher::Sha256(h) => h.update(data),
            PieceHasher::Md5(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            PieceHasher::Sha1(h) => h.finalize().to_vec(),
            PieceHasher::Sha256(h) => h.finalize().to_vec(),
            PieceHasher::Md5(h) => h.finalize().to_vec(),
        }
    }
}

/// How a piece ended.
#[derive(Debug)]
pub struct PieceEnd {
    /// What was committed (and verified, with a checksum); `None` for an empty body.
    pub piece: Option<Piece>,
    /// The body was cut (the client went away): what arrived before is kept — no checksum
    /// was sent, so every byte that arrived is good — and the client resumes after it.
    pub cut: Option<String>,
}

/// Why a piece was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("the piece's {algorithm} checksum does not match")]
    ChecksumMismatch { algorithm: &'static str },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// The document-level state between pieces: type, digests and content scan so far.
pub struct Assembly {
    policy: UploadPolicy,
    declared: Option<String>,
    /// The document's first bytes until its type is known.
    head: BytesMut,
    media_type: Option<&'static str>,
    digests: Option<DigestPipeline>,
    len: u64,
}

impl fmt::Debug for Assembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembly")
            .field("media_type", &self.media_type)
            .field("len", &self.len)
            .finish()
    }
}

impl Assembly {
    pub fn new(policy: UploadPolicy, declared_type: Option<&str>) -> Assembly {
        Assembly {
            policy,
            declared: normalize_declared(declared_type),
            head: BytesMut::new(),
            media_type: None,
            digests: None,
            len: 0,
        }
    }

    /// Bytes added so far (the tus offset).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state after `pieces`, rebuilt by reading them (a restart, another replica).
    pub async fn rebuild(
        policy: UploadPolicy,
        declared_type: Option<&str>,
        spool: &SpoolDir,
        pieces: &[Piece],
    ) -> Result<Assembly, IngestError> {
        let mut assembly = Assembly::new(policy, declared_type);
        for piece in pieces {
            assembly.add(spool, piece).await?;
        }
        Ok(assembly)
    }

    /// Add a committed piece, read back from the spool, to the document.
    pub async fn add(&mut self, spool: &SpoolDir, piece: &Piece) -> Result<(), IngestError> {
        let mut stream = spool.stored(&piece.key, piece.len).stream();
        while let Some(block) = stream.next().await {
            self.feed(block?).await?;
        }
        Ok(())
    }

    /// Sniff once enough of the head is in, then hash and scan.
    async fn feed(&mut self, block: Bytes) -> Result<(), IngestError> {
        self.len += block.len() as u64;
        if self.digests.is_none() {
            self.head.extend_from_slice(&block);
            if self.head.len() < SNIFF_BYTES {
                return Ok(());
            }
            self.start()?;
            let head = self.head.split().freeze();
            return self.hash(head).await;
        }
        self.hash(block).await
    }

    /// The type is known: start the digests and the scan.
    fn start(&mut self) -> Result<(), IngestError> {
        let media_type = check_type(&self.head, self.declared.as_deref(), &self.policy)?;
        self.media_type = Some(media_type);
        self.digests = Some(DigestPipeline::with_scan(
            self.policy.digests,
            ContentScan::new(media_type, &self.policy),
        ));
        Ok(())
    }

    async fn hash(&mut self, block: Bytes) -> Result<(), IngestError> {
        if let Some(digests) = &mut self.digests {
            digests
                .feed(crate::blocks::INGEST.admit(block).await)
                .await?;
            if let Some(found) = digests.scan_error() {
                return Err(IngestError::ActiveContent(found));
            }
        }
        Ok(())
    }

    /// The head so far while the type is unknown (a piece extends a copy of it as it
    /// streams, so a wrong type is refused before the piece is committed).
    fn head_probe(&self) -> Option<BytesMut> {
        self.media_type.is_none().then(|| self.head.clone())
    }

    /// Refuse a head whose type is wrong (once it is long enough to tell).
    fn check_probe(&self, probe: &[u8]) -> Result<(), IngestError> {
        check_type(probe, self.declared.as_deref(), &self.policy).map(|_| ())
    }

    /// The whole document has arrived: its metadata, after the checks that need all of it
    /// (minimum size, a short document's type, the scan's end, ZIP entries).
    pub async fn finish(
        mut self,
        slot: String,
        filename: Option<String>,
        document: &Spooled,
    ) -> Result<DocumentMeta, IngestError> {
        if self.len < self.policy.min_document_bytes {
            return Err(IngestError::TooSmall {
                min: self.policy.min_document_bytes,
                actual: self.len,
            });
        }
        if self.digests.is_none() {
            self.start()?;
            let head = self.head.split().freeze();
            self.hash(head).await?;
        }
        let media_type = self.media_type.unwrap_or("application/octet-stream");
        let digests = match self.digests {
            Some(d) => {
                let (digests, verdict) = d.finish_scanned().await?;
                verdict.map_err(IngestError::ActiveContent)?;
                digests
            }
            None => return Err(IngestError::Body("no document bytes".into())),
        };
        let entries = crate::ingest::inspect_if_zip(document, media_type, &self.policy).await?;
        Ok(DocumentMeta {
            slot,
            filename,
            size: self.len,
            media_type: media_type.to_owned(),
            declared_type: self.declared,
            digests: digests.to_hex(),
            entries,
        })
    }
}

/// Stream one piece's body into the spool under `key`, at most `max` bytes, checking the
/// document head as it passes; verify `checksum` when given. The piece is not yet part of the
/// document: call [`Assembly::add`] once the caller has recorded it.
pub async fn receive_piece<S, E>(
    body: S,
    spool: &SpoolDir,
    key: &str,
    assembly: &Assembly,
    max: u64,
    checksum: Option<&PieceChecksum>,
) -> Result<PieceEnd, PieceError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    let mut body = body;
    // Pieces are written straight to the store: a threshold of zero.
    let mut writer = SpoolDir::with_store(spool.store().clone(), 0).writer(key);
    let mut hasher = checksum.map(|c| PieceHasher::new(c.algorithm));
    let mut probe = assembly.head_probe();
    let mut len: u64 = 0;
    let mut cut = None;
    while let Some(next) = body.next().await {
        let chunk = match next {
            Ok(chunk) => chunk,
            Err(e) => {
                cut = Some(e.to_string());
                break;
            }
        };
        len += chunk.len() as u64;
        if len > max {
            return Err(IngestError::TooLarge { limit: max }.into());
        }
        if let Some(head) = &mut probe {
            head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES)]);
            if head.len() >= SNIFF_BYTES {
                assembly.check_probe(head)?;
                probe = None;
            }
        }
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        writer.write(chunk).await.map_err(IngestError::Spool)?;
    }
    if let (Some(c), Some(h)) = (checksum, hasher) {
        if cut.is_some() || h.finish() != c.expected {
            // A cut body cannot be verified either: nothing of it is kept.
            return Err(PieceError::ChecksumMismatch {
                algorithm: c.algorithm.name(),
            });
        }
    }
    let piece = if len == 0 {
        None
    } else {
        let spooled = writer.finish().await.map_err(IngestError::Spool)?;
        let spooled = spooled
            .persist(spool, key)
            .await
            .map_err(IngestError::Spool)?;
        Some(Piece {
            key: key.to_owned(),
            len: spooled.len(),
        })
    };
    Ok(PieceEnd { piece, cut })
}
