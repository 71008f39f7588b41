//! The spool: where a document waits between "received" and "delivered".
//!
//! A document is written here as it streams in, so the provider can be called — and called
//! again after a failure or a restart — without asking the frontend to send it twice.
//! Small documents stay in memory until the upload is accepted (no I/O for the many tiny
//! selfies and refused uploads); past `memory_threshold` the document streams into an
//! object of the spool's [`ObjectStore`] (a local directory by default). Either way a
//! [`Spooled`] can be read as a stream any number of times.
//!
//! Lifecycle: a document is written under its final key and committed (durable) when its
//! body ends. Until the upload is recorded its [`Spooled`] is *temporary*: dropping the last
//! handle deletes it, so a refused upload leaves nothing behind. Once the gateway has
//! recorded the upload it calls [`Spooled::persist`] (which writes in-memory documents out
//! and makes the object permanent); from then on the ledger owns it and removes it when
//! delivery is final. A crash between the two leaves an object no ledger row names: the
//! orphan sweep removes it.

use std::{
    fmt, io,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

pub use crate::store::{ByteStream, ReadSeek};
use crate::store::{LocalStore, ObjectStore, ObjectWriter};

/// Size of the blocks the pipeline moves around (network → digests → spool → provider).
pub const BLOCK: usize = 256 * 1024;

/// Where documents are spooled, and from which size on they leave memory.
#[derive(Debug, Clone)]
pub struct SpoolDir {
    store: Arc<dyn ObjectStore>,
    memory_threshold: usize,
}

/// The spool's name in most of the code: a store plus the memory threshold.
pub type Spool = SpoolDir;

impl SpoolDir {
    /// A spool in a local directory (created if missing). Documents up to
    /// `memory_threshold` bytes stay in memory until persisted.
    pub fn new(
        root: impl Into<std::path::PathBuf>,
        memory_threshold: usize,
    ) -> io::Result<SpoolDir> {
        Ok(SpoolDir::with_store(
            Arc::new(LocalStore::new(root)?),
            memory_threshold,
        ))
    }

    pub fn with_store(store: Arc<dyn ObjectStore>, memory_threshold: usize) -> SpoolDir {
        SpoolDir {
            store,
            memory_threshold,
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The local directory, when the store is local.
    pub fn local_root(&self) -> Option<&Path> {
        self.store.local_root()
    }

    pub fn memory_threshold(&self) -> usize {
        self.memory_threshold
    }

    /// A writer for one document under `key`.
    pub fn writer(&self, key: impl Into<String>) -> SpoolWriter {
        SpoolWriter {
            spool: self.clone(),
            key: key.into(),
            mem: BytesMut::new(),
            object: None,
            len: 0,
        }
    }

    /// A document already in the store (after a restart, or on another replica).
    pub fn stored(&self, key: impl Into<String>, len: u64) -> Spooled {
        Spooled::stored(self.store.clone(), key.into(), len, false)
    }

    /// A document made of committed pieces, in order.
    pub fn pieces(&self, pieces: Vec<Piece>) -> Spooled {
        let len = pieces.iter().map(|p| p.len).sum();
        Spooled {
            inner: Arc::new(Inner {
                backing: Backing::Pieces {
                    store: self.store.clone(),
                    pieces: pieces.into(),
                },
                len,
                health: Arc::default(),
            }),
        }
    }
}

/// Writes one document into the spool; see the module docs.
pub struct SpoolWriter {
    spool: SpoolDir,
    key: String,
    mem: BytesMut,
    object: Option<Box<dyn ObjectWriter>>,
    len: u64,
}

impl fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("key", &self.key)
            .field("len", &self.len)
            .field("in_store", &self.object.is_some())
            .finish()
    }
}

impl SpoolWriter {
    pub async fn write(&mut self, block: Bytes) -> io::Result<()> {
        self.len += block.len() as u64;
        if self.object.is_none() {
            if self.mem.len() + block.len() <= self.spool.memory_threshold {
                self.mem.extend_from_slice(&block);
                return Ok(());
            }
            let mut object = self.spool.store.put(&self.key).await?;
            if !self.mem.is_empty() {
                object.write(std::mem::take(&mut self.mem).freeze()).await?;
            }
            self.object = Some(object);
        }
        match &mut self.object {
            Some(object) => object.write(block).await,
            None => Ok(()),
        }
    }

    /// The document as written: in memory, or committed in the store (temporary until
    /// persisted).
    pub async fn finish(self) -> io::Result<Spooled> {
        match self.object {
            None => Ok(Spooled::from_bytes(self.mem.freeze())),
            Some(object) => {
                object.commit().await?;
                Ok(Spooled::stored(
                    self.spool.store.clone(),
                    self.key,
                    self.len,
                    true,
                ))
            }
        }
    }
}

/// One committed object of a document received in pieces: its key and length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piece {
    pub key: String,
    pub len: u64,
}

/// Where a spooled document's bytes are.
enum Backing {
    Memory(Bytes),
    /// Several committed objects, in order (a resumable upload's pieces); never temporary.
    Pieces {
        store: Arc<dyn ObjectStore>,
        pieces: Arc<[Piece]>,
    },
    Stored {
        store: Arc<dyn ObjectStore>,
        key: String,
        /// Deleted when the last handle drops (not yet persisted).
        temporary: AtomicBool,
    },
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Backing::Pieces { pieces, .. } => write!(f, "Pieces({})", pieces.len()),
            Backing::Stored { key, temporary, .. } => f
                .debug_struct("Stored")
                .field("key", key)
                .field("temporary", &temporary.load(Ordering::Relaxed))
                .finish(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    backing: Backing,
    len: u64,
    /// What reads of the document ran into, shared by every handle and every piece of it, so
    /// the delivery learns it whatever a provider made of the read error.
    health: Arc<ReadHealth>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Backing::Stored {
            store,
            key,
            temporary,
        } = &self.backing
        else {
            return;
        };
        if !temporary.load(Ordering::Acquire) {
            return;
        }
        // Best effort: a leftover is an orphan the periodic sweep removes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = store.clone();
            let key = key.clone();
            runtime.spawn(async move {
                if let Err(e) = store.delete(&key).await {
                    tracing::debug!(key, error = %e, "could not remove a refused document");
                }
            });
        }
    }
}

/// A complete spooled document: cheap to clone, readable any number of times.
#[derive(Debug, Clone)]
pub struct Spooled {
    inner: Arc<Inner>,
}

impl Spooled {
    /// A document in memory only (tests, derived documents, small uploads until persisted).
    pub fn from_bytes(bytes: Bytes) -> Spooled {
        let len = bytes.len() as u64;
        Spooled {
            inner: Arc::new(Inner {
                backing: Backing::Memory(bytes),
                len,
                health: Arc::default(),
            }),
        }
    }

    fn stored(store: Arc<dyn ObjectStore>, key: String, len: u64, temporary: bool) -> Spooled {
        Spooled {
            inner: Arc::new(Inner {
                backing: Backing::Stored {
                    store,
                    key,
                    temporary: AtomicBool::new(temporary),
                },
                len,
                health: Arc::default(),
            }),
        }
    }

    /// A durable local file (tests and tools). It is not removed on drop; a path that is not
    /// a readable file fails when read.
    pub fn open_persisted(path: impl AsRef<Path>, len: u64) -> Spooled {
        let path = path.as_ref();
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::at(dir));
        Spooled::stored(store, name.to_owned(), len, false)
    }

    pub fn len(&self) -> u64 {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    pub fn is_in_memory(&self) -> bool {
        matches!(self.inner.backing, Backing::Memory(_))
    }

    /// The store key, once the document is one object in a store.
    pub fn key(&self) -> Option<&str> {
        match &self.inner.backing {
            Backing::Stored { key, .. } => Some(key),
            Backing::Memory(_) | Backing::Pieces { .. } => None,
        }
    }

    /// The pieces of a document received in pieces.
    pub fn pieces_list(&self) -> Option<Vec<Piece>> {
        match &self.inner.backing {
            Backing::Pieces { pieces, .. } => Some(pieces.to_vec()),
            _ => None,
        }
    }

    /// The whole document as a stream of blocks.
    pub fn stream(&self) -> ByteStream {
        self.stream_from(0)
    }

    /// The document from byte `from` on.
    pub fn stream_from(&self, from: u64) -> ByteStream {
        match &self.inner.backing {
            Backing::Memory(bytes) => {
                let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
                let bytes = bytes.slice(start..);
                let blocks: Vec<io::Result<Bytes>> = (0..bytes.len())
                    .step_by(BLOCK)
                    .map(|s| Ok(bytes.slice(s..bytes.len().min(s + BLOCK))))
                    .collect();
                Box::pin(futures_util::stream::iter(blocks))
            }
            Backing::Pieces { store, pieces } => {
                pieces_stream(store.clone(), pieces.clone(), from, self.clone())
            }
            Backing::Stored { store, key, .. } => {
                // Hold a handle so a temporary object outlives every reader.
                let keep_alive = self.clone();
                let (store, key, len) = (store.clone(), key.clone(), self.len());
                let opened = async move { store.get(&key, from, len).await };
                let stream = futures_util::stream::once(opened)
                    .map(|r| match r {
                        Ok(s) => s,
                        Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
                    })
                    .flatten();
                Box::pin(LengthChecked {
                    inner: Box::pin(stream),
                    expected: len.saturating_sub(from),
                    seen: 0,
                    _keep: keep_alive,
                    health: self.inner.health.clone(),
                })
            }
        }
    }

    /// Whether a read of this document (any handle, any piece) found its stored bytes
    /// altered or truncated; see [`crate::seal::is_integrity_failure`]. No retry can help.
    pub fn failed_integrity(&self) -> bool {
        self.inner.health.altered.load(Ordering::Acquire)
    }

    /// Reads of this document (any handle, any piece) that failed without showing it altered:
    /// the store could not be reached or answered an error. A delivery attempt during which
    /// this grew failed on our side, not the provider's.
    pub fn read_errors(&self) -> u64 {
        self.inner.health.errors.load(Ordering::Acquire)
    }

    /// A blocking reader over the whole document (call from a blocking thread).
    pub fn blocking_reader(&self) -> io::Result<Box<dyn ReadSeek>> {
        let health = self.inner.health.clone();
        let reader = self.open_blocking().inspect_err(|e| health.note(e))?;
        Ok(Box::new(IntegrityWatch {
            inner: reader,
            health,
        }))
    }

    fn open_blocking(&self) -> io::Result<Box<dyn ReadSeek>> {
        match &self.inner.backing {
            Backing::Memory(bytes) => Ok(Box::new(io::Cursor::new(bytes.clone()))),
            Backing::Stored { store, key, .. } => store.open_blocking(key, self.len()),
            Backing::Pieces { store, pieces } => {
                let parts = pieces
                    .iter()
                    .map(|p| Ok((store.open_blocking(&p.key, p.len)?, p.len)))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Box::new(crate::store::ConcatReader::new(parts)))
            }
        }
    }

    /// Read the first `n` bytes (or fewer if the document is shorter).
    pub async fn head(&self, n: usize) -> io::Result<Bytes> {
        let mut out = BytesMut::new();
        let mut s = self.stream();
        while out.len() < n {
            match s.next().await {
                Some(chunk) => out.extend_from_slice(&chunk?),
                None => break,
            }
        }
        out.truncate(n);
        Ok(out.freeze())
    }

    /// Make the document durable under `key` in `spool` and permanent (no longer removed on
    /// drop): a document in memory is written out and committed; one already in the store
    /// under that key was committed when it was written.
    pub async fn persist(&self, spool: &SpoolDir, key: &str) -> io::Result<Spooled> {
        match &self.inner.backing {
            Backing::Stored {
                key: stored,
                temporary,
                ..
            } if stored == key => {
                temporary.store(false, Ordering::Release);
                Ok(self.clone())
            }
            _ => {
                let mut object = spool.store.put(key).await?;
                let mut stream = self.stream();
                while let Some(block) = stream.next().await {
                    object.write(block?).await?;
                }
                object.commit().await?;
                Ok(Spooled::stored(
                    spool.store.clone(),
                    key.to_owned(),
                    self.len(),
                    false,
                ))
            }
        }
    }
}

/// The pieces from document offset `from` on, each length-checked, one after the other.
fn pieces_stream(
    store: Arc<dyn ObjectStore>,
    pieces: Arc<[Piece]>,
    from: u64,
    keep: Spooled,
) -> ByteStream {
    let mut start = 0u64;
    let mut parts = Vec::new();
    for piece in pieces.iter() {
        let end = start + piece.len;
        if end > from {
            parts.push((piece.clone(), from.saturating_sub(start)));
        }
        start = end;
    }
    let streams = futures_util::stream::iter(parts).then(move |(piece, skip)| {
        let store = store.clone();
        let keep = keep.clone();
        async move {
            let single = Spooled {
                inner: Arc::new(Inner {
                    backing: Backing::Stored {
                        store,
                        key: piece.key,
                        temporary: AtomicBool::new(false),
                    },
                    len: piece.len,
                    health: keep.inner.health.clone(),
                }),
            };
            drop(keep);
            single.stream_from(skip)
        }
    });
    Box::pin(streams.flatten())
}

/// What reads of one document ran into.
#[derive(Debug, Default)]
struct ReadHealth {
    /// A read found the stored bytes altered, truncated or gone (an encrypted store's
    /// authentication failed, the object the ledger names is missing).
    altered: AtomicBool,
    /// Reads that failed otherwise.
    errors: AtomicU64,
}

impl ReadHealth {
    /// A read error that shows the stored bytes are not what was recorded — altered (a
    /// sealed segment that does not open), or gone (the object the ledger names is missing)
    /// — marks the document altered: no retry will bring them back, and the delivery fails
    /// instead of retrying for a day. Any other error is counted.
    fn note(&self, e: &io::Error) {
        if crate::seal::is_integrity_failure(e) || e.kind() == io::ErrorKind::NotFound {
            self.mark_altered();
        } else {
            self.errors.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn mark_altered(&self) {
        self.altered.store(true, Ordering::Release);
    }
}

/// Notes the failures of a blocking reader in the document's read health.
struct IntegrityWatch {
    inner: Box<dyn ReadSeek>,
    health: Arc<ReadHealth>,
}

impl io::Read for IntegrityWatch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| self.health.note(e))
    }
}

impl io::Seek for IntegrityWatch {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(to).inspect_err(|e| self.health.note(e))
    }
}

/// Fails the stream if the object is shorter or longer than recorded: a truncated spool must
/// never be delivered as if it were the whole document.
struct LengthChecked {
    inner: ByteStream,
    expected: u64,
    seen: u64,
    _keep: Spooled,
    health: Arc<ReadHealth>,
}

impl Stream for LengthChecked {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if self.seen > self.expected {
                    self.health.mark_altered();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "spooled document is longer than recorded",
                    ))));
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.health.note(&e);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) if self.seen != self.expected => {
                let msg = format!(
                    "spooled document has {} bytes, {} recorded",
                    self.seen, self.expected
                );
                self.seen = self.expected; // report once
                self.health.mark_altered();
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg))))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(s: &Spooled) -> Vec<u8> {
        let mut out = Vec::new();
        let mut st = s.stream();
        while let Some(b) = st.next().await {
            out.extend_from_slice(&b.expect("read"));
        }
        out
    }

    #[tokio::test]
    async fn small_documents_stay_in_memory_and_big_ones_go_to_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1000).expect("spool");
        let mut w = spool.writer("a");
        w.write(Bytes::from(vec![1u8; 600])).await.expect("write");
        w.write(Bytes::from(vec![2u8; 400])).await.expect("write");
        let small = w.finish().await.expect("finish");
        assert!(small.is_in_memory());
        assert_eq!(small.len(), 1000);

        let mut w = spool.writer("b");
        w.write(Bytes::from(vec![1u8; 600])).await.expect("write");
        w.write(Bytes::from(vec![2u8; 401])).await.expect("write");
        let big = w.finish().await.expect("finish");
        assert!(!big.is_in_memory());
        let data = collect(&big).await;
        assert_eq!(data.len(), 1001);
        assert!(data[..600].iter().all(|&b| b == 1) && data[600..].iter().all(|&b| b == 2));
        assert_eq!(collect(&big).await, data, "re-readable");
        let mut tail = Vec::new();
        let mut s = big.stream_from(1000);
        while let Some(b) = s.next().await {
            tail.extend_from_slice(&b.expect("read"));
        }
        assert_eq!(tail, vec![2u8]);
    }

    /// Reads `doc` to its end; whether the read failed.
    async fn read_fails(doc: &Spooled) -> bool {
        let mut st = doc.stream();
        let mut failed = false;
        while let Some(b) = st.next().await {
            failed |= b.is_err();
        }
        failed
    }

    #[tokio::test]
    async fn regression_a_missing_or_resized_spool_object_fails_its_integrity_check() {
        // A document the ledger names but the spool lost (removed under a session's
        // acceptance), or whose object is not its recorded length, was read as a transient
        // error, and its delivery retried for a day.
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let mut w = spool.writer("kept");
        w.write(Bytes::from(vec![7u8; 5000])).await.expect("write");
        let written = w.finish().await.expect("finish");
        let kept = written.persist(&spool, "kept").await.expect("persist");
        assert!(!read_fails(&kept).await);
        assert!(!kept.failed_integrity());

        let missing = spool.stored("gone", 5000);
        assert!(read_fails(&missing).await);
        assert!(
            missing.failed_integrity(),
            "a missing object is not a retryable error"
        );

        let shorter = spool.stored("kept", 6000);
        assert!(read_fails(&shorter).await);
        assert!(shorter.failed_integrity(), "fewer bytes than recorded");

        let longer = spool.stored("kept", 4000);
        assert!(read_fails(&longer).await);
        assert!(longer.failed_integrity(), "more bytes than recorded");
    }

    #[tokio::test]
    async fn a_temporary_document_is_removed_when_the_last_handle_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let mut w = spool.writer("doc");
        w.write(Bytes::from_static(b"hello")).await.expect("write");
        let s = w.finish().await.expect("finish");
        let path = dir.path().join("doc");
        let stream = s.stream();
        drop(s);
        assert!(path.exists(), "a live reader keeps the object");
        drop(stream);
        // The removal runs as a task: give it its turn, with a deadline.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while path.exists() {
            assert!(tokio::time::Instant::now() < deadline, "never removed");
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn persisted_documents_survive_their_handles_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 4).expect("spool");
        for (key, payload) in [("m", &b"abc"[..]), ("d", &b"longer than four"[..])] {
            let mut w = spool.writer(key);
            w.write(Bytes::copy_from_slice(payload))
                .await
                .expect("write");
            let s = w.finish().await.expect("finish");
            let durable = s.persist(&spool, key).await.expect("persist");
            drop(s);
            drop(durable);
            tokio::task::yield_now().await;
            let reopened = spool.stored(key, payload.len() as u64);
            assert_eq!(collect(&reopened).await, payload);
        }
    }

    #[tokio::test]
    async fn pieces_read_as_one_document_from_any_offset_and_seek() {
        use std::io::{Read, Seek, SeekFrom};
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let mut pieces = Vec::new();
        for (i, part) in [&b"hello "[..], b"wide ", b"world"].iter().enumerate() {
            let key = format!("p{i}");
            let mut w = spool.writer(&key);
            w.write(Bytes::copy_from_slice(part)).await.expect("write");
            w.finish()
                .await
                .expect("finish")
                .persist(&spool, &key)
                .await
                .expect("persist");
            pieces.push(Piece {
                key,
                len: part.len() as u64,
            });
        }
        let doc = spool.pieces(pieces);
        assert_eq!(doc.len(), 16);
        assert_eq!(collect(&doc).await, b"hello wide world");
        let mut tail = Vec::new();
        let mut s = doc.stream_from(8);
        while let Some(b) = s.next().await {
            tail.extend_from_slice(&b.expect("read"));
        }
        assert_eq!(tail, b"de world");
        let mut r = doc.blocking_reader().expect("reader");
        r.seek(SeekFrom::Start(4)).expect("seek");
        let mut buf = [0u8; 7];
        r.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"o wide ");
        r.seek(SeekFrom::End(-3)).expect("seek end");
        let mut end = String::new();
        r.read_to_string(&mut end).expect("read");
        assert_eq!(end, "rld");
    }

    #[tokio::test]
    async fn a_truncated_object_fails_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("doc"), b"abc").expect("write");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let s = spool.stored("doc", 10);
        let mut st = s.stream();
        assert!(st.next().await.expect("chunk").is_ok());
        assert!(st.next().await.expect("error").is_err());
    }
}
