//! The spool: where a document waits between "received" and "delivered".
//!
//! A document is written here as it streams in, so the provider can be called — and called
//! again after a failure or a restart — without asking the frontend to send it twice.
//! Small documents stay in memory (no disk I/O for the many tiny selfies and rejected
//! uploads); past `memory_threshold` the spool switches to a file. Either way a [`Spooled`]
//! can be read as a stream any number of times.
//!
//! Lifecycle: ingest writes into `tmp/`; a temporary spool deletes its file when the last
//! handle is dropped, so a rejected upload leaves nothing behind. Once the gateway accepts an
//! upload it calls [`Spooled::persist`], which moves (or writes) the bytes to their durable
//! path and fsyncs them; from then on the ledger owns the file and removes it when delivery
//! is final. Whatever is left in `tmp/` at start-up is an orphan of a crash and is removed.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

/// Size of the blocks the pipeline moves around (network → digests → spool → provider).
pub const BLOCK: usize = 256 * 1024;

/// A boxed stream of document bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// A directory of spooled documents.
#[derive(Debug, Clone)]
pub struct SpoolDir {
    root: PathBuf,
    memory_threshold: usize,
}

impl SpoolDir {
    /// `root` is created if missing. Documents up to `memory_threshold` bytes stay in memory.
    pub fn new(root: impl Into<PathBuf>, memory_threshold: usize) -> io::Result<SpoolDir> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(SpoolDir {
            root,
            memory_threshold,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn memory_threshold(&self) -> usize {
        self.memory_threshold
    }

    /// A fresh writer for one document.
    pub fn writer(&self) -> SpoolWriter {
        SpoolWriter {
            dir: self.clone(),
            mem: BytesMut::new(),
            file: None,
            len: 0,
        }
    }

    /// Remove temporary files a crash left behind: those not modified for `min_age`. (An
    /// upload still being received writes to its file continuously, and replicas sharing a
    /// spool must not remove each other's live files.) Returns how many were removed.
    pub fn remove_orphans(&self, min_age: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        let now = std::time::SystemTime::now();
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if meta.is_file() && age >= min_age {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes currently stored under the spool root (for metrics).
    pub fn disk_usage(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.root)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()))
    }
}

/// Writes one document into the spool; see the module docs.
pub struct SpoolWriter {
    dir: SpoolDir,
    mem: BytesMut,
    file: Option<(tokio::fs::File, TempFile)>,
    len: u64,
}

impl fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("len", &self.len)
            .field("on_disk", &self.file.is_some())
            .finish()
    }
}

impl SpoolWriter {
    pub async fn write(&mut self, block: &[u8]) -> io::Result<()> {
        self.len += block.len() as u64;
        if self.file.is_none() {
            if self.mem.len() + block.len() <= self.dir.memory_threshold {
                self.mem.extend_from_slice(block);
                return Ok(());
            }
            let temp = TempFile::new(self.dir.temp_path());
            let mut file = tokio::fs::File::create(&temp.path).await?;
            if !self.mem.is_empty() {
                file.write_all(&self.mem).await?;
                self.mem = BytesMut::new();
            }
            self.file = Some((file, temp));
        }
        if let Some((file, _)) = &mut self.file {
            file.write_all(block).await?;
        }
        Ok(())
    }

    pub async fn finish(self) -> io::Result<Spooled> {
        let backing = match self.file {
            None => Backing::Memory(self.mem.freeze()),
            Some((mut file, temp)) => {
                file.flush().await?;
                drop(file);
                Backing::File(temp)
            }
        };
        Ok(Spooled {
            inner: Arc::new(Inner {
                backing,
                len: self.len,
            }),
        })
    }
}

/// A file that is removed on drop unless kept.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    delete: AtomicBool,
}

impl TempFile {
    fn new(path: PathBuf) -> TempFile {
        TempFile {
            path,
            delete: AtomicBool::new(true),
        }
    }

    fn kept(path: PathBuf) -> TempFile {
        TempFile {
            path,
            delete: AtomicBool::new(false),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.delete.load(Ordering::Acquire) {
            // Best effort: a leftover is collected by `remove_orphans` at the next start.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug)]
enum Backing {
    Memory(Bytes),
    File(TempFile),
}

#[derive(Debug)]
struct Inner {
    backing: Backing,
    len: u64,
}

/// A complete spooled document: cheap to clone, readable any number of times.
#[derive(Debug, Clone)]
pub struct Spooled {
    inner: Arc<Inner>,
}

/// `Read + Seek` for blocking consumers (ZIP inspection and splitting).
pub trait ReadSeek: io::Read + io::Seek + Send {}
impl<T: io::Read + io::Seek + Send> ReadSeek for T {}

impl Spooled {
    /// A spool that lives in memory only (tests, derived documents).
    pub fn from_bytes(bytes: Bytes) -> Spooled {
        let len = bytes.len() as u64;
        Spooled {
            inner: Arc::new(Inner {
                backing: Backing::Memory(bytes),
                len,
            }),
        }
    }

    /// Re-open a durable spool file (after a restart). The file is not removed on drop.
    pub fn open_persisted(path: impl Into<PathBuf>, len: u64) -> Spooled {
        Spooled {
            inner: Arc::new(Inner {
                backing: Backing::File(TempFile::kept(path.into())),
                len,
            }),
        }
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

    /// The file behind this spool, if it is on disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.backing {
            Backing::File(t) => Some(&t.path),
            Backing::Memory(_) => None,
        }
    }

    /// The whole document as a stream of blocks of at most `BLOCK` bytes.
    pub fn stream(&self) -> ByteStream {
        match &self.inner.backing {
            Backing::Memory(bytes) => {
                let bytes = bytes.clone();
                let blocks: Vec<io::Result<Bytes>> = (0..bytes.len())
                    .step_by(BLOCK)
                    .map(|start| Ok(bytes.slice(start..bytes.len().min(start + BLOCK))))
                    .collect();
                Box::pin(futures_util::stream::iter(blocks))
            }
            Backing::File(temp) => {
                let path = temp.path.clone();
                // Hold a handle so a temporary file outlives every reader.
                let keep_alive = self.clone();
                let expected = self.len();
                let opened = async move {
                    let file = tokio::fs::File::open(&path).await?;
                    Ok::<_, io::Error>(tokio_util::io::ReaderStream::with_capacity(file, BLOCK))
                };
                let stream = futures_util::stream::once(opened)
                    .map(|r| match r {
                        Ok(s) => s.boxed(),
                        Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
                    })
                    .flatten();
                Box::pin(LengthChecked {
                    inner: Box::pin(stream),
                    expected,
                    seen: 0,
                    _keep: keep_alive,
                })
            }
        }
    }

    /// A blocking reader over the whole document.
    pub fn blocking_reader(&self) -> io::Result<Box<dyn ReadSeek>> {
        match &self.inner.backing {
            Backing::Memory(bytes) => Ok(Box::new(io::Cursor::new(bytes.clone()))),
            Backing::File(temp) => Ok(Box::new(io::BufReader::with_capacity(
                64 * 1024,
                std::fs::File::open(&temp.path)?,
            ))),
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

    /// Make the document durable at `path` (fsynced, with its directory) and return the
    /// handle that reads it from there. The file is no longer removed on drop.
    pub async fn persist(&self, path: &Path) -> io::Result<Spooled> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        match &self.inner.backing {
            Backing::Memory(bytes) => {
                let mut f = tokio::fs::File::create(path).await?;
                f.write_all(bytes).await?;
                f.sync_all().await?;
            }
            Backing::File(temp) => {
                tokio::fs::rename(&temp.path, path).await?;
                temp.delete.store(false, Ordering::Release);
                tokio::fs::File::open(path).await?.sync_all().await?;
            }
        }
        // The new name must survive a crash too: sync the directory holding it and the one
        // above (which may just have been created). Some filesystems cannot sync a
        // directory; that is not an error worth failing the upload for.
        for dir in path.ancestors().skip(1).take(2) {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(Spooled::open_persisted(path, self.len()))
    }
}

/// Fails the stream if the file is shorter or longer than recorded: a truncated spool must
/// never be delivered as if it were the whole document.
struct LengthChecked {
    inner: ByteStream,
    expected: u64,
    seen: u64,
    _keep: Spooled,
}

impl Stream for LengthChecked {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if self.seen > self.expected {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "spool file is longer than recorded",
                    ))));
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) if self.seen != self.expected => {
                let msg = format!(
                    "spool file has {} bytes, {} recorded",
                    self.seen, self.expected
                );
                self.seen = self.expected; // report once
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
    async fn small_documents_stay_in_memory_and_big_ones_go_to_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 1000).expect("spool");
        let mut w = spool.writer();
        w.write(&[1u8; 600]).await.expect("write");
        w.write(&[2u8; 400]).await.expect("write");
        let small = w.finish().await.expect("finish");
        assert!(small.is_in_memory());
        assert_eq!(small.len(), 1000);

        let mut w = spool.writer();
        w.write(&[1u8; 600]).await.expect("write");
        w.write(&[2u8; 401]).await.expect("write");
        let big = w.finish().await.expect("finish");
        assert!(!big.is_in_memory());
        let data = collect(&big).await;
        assert_eq!(data.len(), 1001);
        assert!(data[..600].iter().all(|&b| b == 1) && data[600..].iter().all(|&b| b == 2));
        // re-readable
        assert_eq!(collect(&big).await, data);
    }

    #[tokio::test]
    async fn a_temporary_spool_file_is_removed_when_the_last_handle_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let mut w = spool.writer();
        w.write(b"hello").await.expect("write");
        let s = w.finish().await.expect("finish");
        let path = s.path().expect("on disk").to_owned();
        let stream = s.stream();
        drop(s);
        assert!(path.exists(), "a live reader keeps the file");
        drop(stream);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn persisted_spools_survive_their_handles_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 4).expect("spool");
        for payload in [&b"abc"[..], &b"longer than four"[..]] {
            let mut w = spool.writer();
            w.write(payload).await.expect("write");
            let s = w.finish().await.expect("finish");
            let dest = dir
                .path()
                .join("uploads")
                .join(format!("{}", payload.len()));
            let durable = s.persist(&dest).await.expect("persist");
            drop(s);
            drop(durable);
            let reopened = Spooled::open_persisted(&dest, payload.len() as u64);
            assert_eq!(collect(&reopened).await, payload);
        }
        assert_eq!(
            spool
                .remove_orphans(std::time::Duration::ZERO)
                .expect("orphans"),
            0
        );
    }

    #[tokio::test]
    async fn a_truncated_spool_file_fails_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("doc");
        std::fs::write(&path, b"abc").expect("write");
        let s = Spooled::open_persisted(&path, 10);
        let mut st = s.stream();
        assert!(st.next().await.expect("chunk").is_ok());
        assert!(st.next().await.expect("error").is_err());
    }
}
