//! Where spooled bytes live: [`ObjectStore`], a flat namespace of durable objects.
//!
//! The spool (see [`crate::spool`]) decides *what* to keep; a store decides *where*. The
//! local directory store ([`LocalStore`]) is the default; an S3 bucket or an encrypting
//! wrapper implement the same trait, so ingest, delivery and retention never know which one
//! they use.
//!
//! The one promise every store keeps: once [`ObjectWriter::commit`] returns `Ok`, the object
//! survives a crash of this process (and, for a shared store, is readable by every replica).
//! A writer dropped without commit leaves nothing that a sweep would not remove.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::Notify;

/// A boxed stream of document bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// `Read + Seek` for blocking consumers (ZIP inspection and splitting).
pub trait ReadSeek: io::Read + io::Seek + Send {}
impl<T: io::Read + io::Seek + Send> ReadSeek for T {}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// Writes one object; see the module docs for what `commit` promises.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, block: Bytes) -> io::Result<()>;
    /// Make the object durable under its key.
    async fn commit(self: Box<Self>) -> io::Result<()>;
}

/// A flat namespace of durable objects. Keys are relative, `/`-separated, and made of
/// characters safe in file names (the gateway builds them; no client input reaches them
/// unchecked).
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + 'static {
    /// Start writing `key` (replacing it if it exists).
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>>;
    /// The object's bytes from offset `from` up to `len`, the object's whole length as
    /// recorded when it was written (a stored object of another length is the caller's to
    /// notice: the stream may end early, or carry a byte past `len`).
    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream>;
    /// A blocking reader over the whole object (call from a blocking thread).
    fn open_blocking(&self, key: &str, len: u64) -> io::Result<Box<dyn ReadSeek>>;
    /// Remove `key`; a missing key is not an error.
    async fn delete(&self, key: &str) -> io::Result<()>;
    /// Tell the store `key` will not be read soon (a delivered document kept for its
    /// retention): a local store lets the kernel drop it from the page cache. A hint: the
    /// object is unchanged, and a store with no cache of its own does nothing.
    async fn evict_cached(&self, _key: &str) -> io::Result<()> {
        Ok(())
    }
    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>>;
    /// The local directory holding the objects, if the store is local (free-space checks,
    /// readiness probes).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Objects as files under a directory.
///
/// A commit fsyncs the file, then the directory holding its name — the second is shared:
/// commits that finish while a directory sync is running wait for the next one, so N
/// concurrent uploads cost N file syncs but far fewer directory syncs. Each directory has
/// its own syncs: a sync of `tmp/` says nothing about a name just created in `uploads/`.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    /// One per directory objects were written to. Keys are built by the gateway, under a
    /// few fixed prefixes, so the map stays as small as the set of prefixes.
    dir_syncs: Arc<Mutex<std::collections::HashMap<PathBuf, DirSync>>>,
    /// Tests hold a writer's first write at a point of their choosing.
    #[cfg(test)]
    first_write: Option<Arc<tests::FirstWriteHook>>,
}

impl LocalStore {
    /// `root` is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<LocalStore> {
        let root = root.into();
        crate::private_fs::create_dir_all(&root)?;
        Ok(LocalStore {
            root,
            dir_syncs: Arc::default(),
            #[cfg(test)]
            first_write: None,
        })
    }

    /// A store over an existing directory (nothing is created).
    pub fn at(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            dir_syncs: Arc::default(),
            #[cfg(test)]
            first_write: None,
        }
    }

    /// The file behind `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The shared syncs of `dir`.
    fn dir_sync(&self, dir: &Path) -> DirSync {
        let mut syncs = self.dir_syncs.lock().unwrap_or_else(|e| e.into_inner());
        syncs.entry(dir.to_owned()).or_default().clone()
    }

    fn checked_path(&self, key: &str) -> io::Result<PathBuf> {
        let safe = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if safe {
            Ok(self.path(key))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a spool key: {key:?}"),
            ))
        }
    }
}

/// Blocks are gathered up to this many bytes before they go to a blocking thread: a small
/// document costs one trip (create, write, fsync, close), not one per block and step. A
/// writer holds at most this plus one block.
const GATHER: usize = 64 * 1024;

/// Objects up to this size are read in one trip to a blocking thread, as one chunk.
const READ_WHOLE: u64 = 64 * 1024;

struct LocalWriter {
    /// `None` until the first blocks are written out (the file is created then), and while
    /// a blocking thread has it.
    file: Option<std::fs::File>,
    /// A write of gathered blocks still running on a blocking thread, which has the file.
    /// One at most: the next write, or the commit, waits for it first. The caller gathers
    /// and seals the next blocks meanwhile instead of waiting for every write.
    in_flight: Option<tokio::task::JoinHandle<(Option<std::fs::File>, io::Result<()>)>>,
    pending: Vec<Bytes>,
    pending_len: usize,
    path: PathBuf,
    /// The first write (which creates the file) has started…
    created: bool,
    /// …and has ended: the file is there (unless that write failed).
    on_disk: bool,
    committed: bool,
    dir_sync: DirSync,
    #[cfg(test)]
    first_write: Option<Arc<tests::FirstWriteHook>>,
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.created || self.committed {
            return;
        }
        if self.on_disk {
            // Best effort; the orphan sweep removes what this misses. A write still running
            // goes on into the removed file, which goes with its handle.
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        // Dropped while its first write runs on a blocking thread (its caller went away: an
        // HTTP/2 reset drops the request's future mid-upload): the file may not be there yet,
        // and removing it now would miss it. It goes once that write is done.
        if let (Some(write), Ok(runtime)) =
            (self.in_flight.take(), tokio::runtime::Handle::try_current())
        {
            let path = self.path.clone();
            runtime.spawn(async move {
                let _ = write.await;
                let _ = tokio::fs::remove_file(&path).await;
            });
        }
    }
}

impl LocalWriter {
    /// Wait for the write in flight, if any, and take the file back (or its error).
    async fn settle(&mut self) -> io::Result<()> {
        // Awaited in place, taken only once it has ended: a writer dropped during this wait
        // still has it (see `Drop`).
        if let Some(handle) = self.in_flight.as_mut() {
            let joined = handle.await;
            self.in_flight = None;
            let (file, result) = joined.map_err(io::Error::other)?;
            self.on_disk = true;
            self.file = file;
            result?;
        }
        Ok(())
    }

    /// Write the gathered blocks on a blocking thread, creating the file (and its
    /// directory) first if this is the first time; with `sync`, fsync and close it after.
    /// With `behind`, return once the write has started: the next write, or the commit,
    /// waits for it.
    async fn write_out(&mut self, sync: bool, behind: bool) -> io::Result<()> {
        self.settle().await?;
        let file = self.file.take();
        if file.is_none() && self.created {
            return Err(io::Error::other("an earlier write of this object failed"));
        }
        self.created = true;
        let blocks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let path = self.path.clone();
        #[cfg(test)]
        let hook = self.first_write.take();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            let _held = hook.as_deref().map(tests::FirstWriteHook::hold);
            let mut file = match file {
                Some(f) => f,
                None => match create_file(&path) {
                    Ok(f) => f,
                    Err(e) => return (None, Err(e)),
                },
            };
            let mut result = blocks
                .iter()
                .try_for_each(|b| io::Write::write_all(&mut file, b));
            if sync && result.is_ok() {
                result = file.sync_all();
            }
            (if sync { None } else { Some(file) }, result)
        }));
        if behind {
            return Ok(());
        }
        self.settle().await
    }
}

/// Create (truncate) the file behind a key, and its directory when missing.
fn create_file(path: &Path) -> io::Result<std::fs::File> {
    match crate::private_fs::create_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                crate::private_fs::create_dir_all(parent)?;
            }
            crate::private_fs::create_file(path)
        }
        other => other,
    }
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, block: Bytes) -> io::Result<()> {
        self.pending_len += block.len();
        self.pending.push(block);
        if self.pending_len >= GATHER {
            // Behind once the file exists. The write that creates it is waited for, so a
            // writer dropped afterwards finds the file it must remove.
            self.write_out(false, self.created).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.write_out(true, false).await?;
        let dir = self.path.parent().map(Path::to_owned);
        if let Some(dir) = dir {
            self.dir_sync.sync(&dir).await?;
        }
        self.committed = true;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        // The file is created with the first bytes written out (see `LocalWriter`).
        let path = self.checked_path(key)?;
        let dir_sync = self.dir_sync(path.parent().unwrap_or(&self.root));
        Ok(Box::new(LocalWriter {
            file: None,
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            path,
            created: false,
            on_disk: false,
            committed: false,
            dir_sync,
            #[cfg(test)]
            first_write: self.first_write.clone(),
        }))
    }

    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        let path = self.checked_path(key)?;
        if len.saturating_sub(from) < READ_WHOLE {
            let chunk = tokio::task::spawn_blocking(move || read_range(&path, from, len))
                .await
                .map_err(io::Error::other)??;
            let once = futures_util::stream::iter((!chunk.is_empty()).then_some(Ok(chunk)));
            return Ok(Box::pin(once));
        }
        // Read on blocking threads straight into pooled blocks: one copy out of the page
        // cache and one buffer per read. (tokio's file and a `ReaderStream` kept two buffers
        // of a block each per delivery, and copied every byte between them.)
        let file = tokio::task::spawn_blocking(move || open_at(&path, from))
            .await
            .map_err(io::Error::other)??;
        // One byte past the recorded end, so a file longer than recorded is noticed.
        let left = len.saturating_sub(from).saturating_add(1);
        Ok(Box::pin(futures_util::stream::try_unfold(
            (file, left),
            |(file, left)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let want = left.min(crate::spool::BLOCK as u64);
                let (file, block) = tokio::task::spawn_blocking(move || {
                    let mut file = file;
                    let mut block = crate::blocks::take();
                    io::Read::read_to_end(&mut io::Read::take(&mut file, want), &mut block)
                        .map(|_| (file, block))
                })
                .await
                .map_err(io::Error::other)??;
                let got = block.len() as u64;
                if got == 0 {
                    return Ok(None);
                }
                // Short of `want`: the file ended.
                let left = if got < want { 0 } else { left - got };
                Ok(Some((crate::blocks::freeze(block), (file, left))))
            },
        )))
    }

    fn open_blocking(&self, key: &str, _len: u64) -> io::Result<Box<dyn ReadSeek>> {
        let file = std::fs::File::open(self.checked_path(key)?)?;
        Ok(Box::new(io::BufReader::with_capacity(64 * 1024, file)))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.checked_path(key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// `POSIX_FADV_DONTNEED` on the file. Why it matters: a document kept after delivery
    /// otherwise stays in the page cache, so every new upload's bytes need pages never used
    /// before. On the VMs we measure on, first touches of such pages cost ~10 µs each in
    /// the hypervisor (a 16 MiB write took ~45 ms of CPU instead of ~5); pages just freed
    /// are reused warm. Nothing is dirty any more (the object was synced when written).
    async fn evict_cached(&self, key: &str) -> io::Result<()> {
        let path = self.checked_path(key)?;
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other?,
            };
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
                .map_err(io::Error::from)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            list_dir(&root, &root, &prefix, &mut out)?;
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// The file behind a key, positioned at `from`.
fn open_at(path: &Path, from: u64) -> io::Result<std::fs::File> {
    let mut file = std::fs::File::open(path)?;
    if from > 0 {
        io::Seek::seek(&mut file, io::SeekFrom::Start(from))?;
    }
    Ok(file)
}

/// `from..len` of a small file and one byte more if there is one (so a file longer than
/// recorded is noticed, as with the streamed read).
fn read_range(path: &Path, from: u64, len: u64) -> io::Result<Bytes> {
    use io::Read;
    let file = open_at(path, from)?;
    let want = len.saturating_sub(from).saturating_add(1);
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Files under `dir` whose key (path relative to `root`) starts with `prefix`.
fn list_dir(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(key) = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            // Descend only where keys under the prefix can be.
            if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                list_dir(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    Ok(())
}

/// Shared directory syncs: a caller asking for a sync of a directory either starts one or,
/// when one is already running, waits for the next — which covers every name created
/// before it started.
#[derive(Debug, Clone, Default)]
struct DirSync {
    state: Arc<Mutex<DirSyncState>>,
    done: Arc<Notify>,
}

#[derive(Debug, Default)]
struct DirSyncState {
    /// Syncs started and finished so far (each a generation).
    started: u64,
    finished: u64,
    running: bool,
    last_error: Option<(u64, io::ErrorKind)>,
}

impl DirSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirSyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Return once a sync of `dir` that started after this call has finished.
    async fn sync(&self, dir: &Path) -> io::Result<()> {
        // A sync already running may have started before our name was created: we need
        // the next one.
        let needed = {
            let s = self.lock();
            s.started + 1
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let start = {
                let mut s = self.lock();
                if s.finished >= needed {
                    return match s.last_error {
                        Some((generation, kind)) if generation >= needed => Err(kind.into()),
                        _ => Ok(()),
                    };
                }
                if s.running {
                    false
                } else {
                    s.running = true;
                    s.started += 1;
                    true
                }
            };
            if start {
                let mut running = RunningSync {
                    sync: self,
                    finished: false,
                };
                let result = sync_dir(dir.to_owned()).await;
                running.finish(&result);
                return result;
            }
            notified.await;
        }
    }
}

/// The sync a caller started. Its caller may be dropped while it runs (a client hanging up,
/// a timeout): the sync then ends unfinished, and a waiting caller starts the next one,
/// instead of every later caller waiting for a sync nobody is running.
struct RunningSync<'a> {
    sync: &'a DirSync,
    finished: bool,
}

impl RunningSync<'_> {
    fn finish(&mut self, result: &io::Result<()>) {
        self.finished = true;
        let mut s = self.sync.lock();
        s.running = false;
        s.finished = s.started;
        if let Err(e) = result {
            s.last_error = Some((s.finished, e.kind()));
        }
        drop(s);
        self.sync.done.notify_waiters();
    }
}

impl Drop for RunningSync<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.sync.lock().running = false;
        self.sync.done.notify_waiters();
    }
}

async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
        Ok(d) => match d.sync_all() {
            // Some filesystems cannot sync a directory: not worth failing an upload for.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        },
        Err(e) => Err(e),
    })
    .await
    .map_err(io::Error::other)?
}

/// Several readers read as one, in order, with seeking across them (a document received in
/// pieces, for ZIP inspection and splitting).
pub struct ConcatReader {
    parts: Vec<(Box<dyn ReadSeek>, u64)>,
    /// The current position in the whole.
    pos: u64,
    len: u64,
}

impl fmt::Debug for ConcatReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcatReader")
            .field("parts", &self.parts.len())
            .field("pos", &self.pos)
            .finish()
    }
}

impl ConcatReader {
    pub fn new(parts: Vec<(Box<dyn ReadSeek>, u64)>) -> ConcatReader {
        let len = parts.iter().map(|(_, l)| l).sum();
        ConcatReader { parts, pos: 0, len }
    }

    /// The part holding `pos`, and `pos` within it.
    fn locate(&self, pos: u64) -> Option<(usize, u64)> {
        let mut start = 0;
        for (i, (_, len)) in self.parts.iter().enumerate() {
            if pos < start + len {
                return Some((i, pos - start));
            }
            start += len;
        }
        None
    }
}

impl io::Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some((i, offset)) = self.locate(self.pos) else {
            return Ok(0);
        };
        let (part, len) = &mut self.parts[i];
        part.seek(io::SeekFrom::Start(offset))?;
        let room = usize::try_from(*len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = part.read(&mut buf[..room])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a spooled piece is shorter than recorded",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for ConcatReader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.expect("read"));
        }
        out
    }

    #[tokio::test]
    async fn committed_objects_read_back_whole_or_from_an_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let mut w = store.put("uploads/a.file").await.expect("put");
        w.write(Bytes::from_static(b"hello ")).await.expect("write");
        w.write(Bytes::from_static(b"world")).await.expect("write");
        w.commit().await.expect("commit");
        assert_eq!(
            collect(store.get("uploads/a.file", 0, 11).await.expect("get")).await,
            b"hello world"
        );
        assert_eq!(
            collect(store.get("uploads/a.file", 6, 11).await.expect("get")).await,
            b"world"
        );
        let listed = store.list("uploads/").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "uploads/a.file");
        store.delete("uploads/a.file").await.expect("delete");
        store
            .delete("uploads/a.file")
            .await
            .expect("deleting twice is fine");
        assert!(store.list("uploads/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn large_objects_stream_in_blocks_and_show_one_byte_past_the_recorded_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let data: Vec<u8> = (0..2 * crate::spool::BLOCK + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let len = data.len() as u64;
        let mut w = store.put("uploads/big.file").await.expect("put");
        w.write(Bytes::from(data.clone())).await.expect("write");
        w.commit().await.expect("commit");
        let mut chunks = store.get("uploads/big.file", 0, len).await.expect("get");
        let mut whole = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.expect("read");
            assert!(chunk.len() <= crate::spool::BLOCK, "{}", chunk.len());
            whole.extend_from_slice(&chunk);
        }
        assert_eq!(whole, data);
        let from = crate::spool::BLOCK as u64 + 5;
        let tail = collect(store.get("uploads/big.file", from, len).await.expect("get")).await;
        assert_eq!(tail, &data[from as usize..]);
        // Recorded shorter than the file: the reader sees one byte more and can object.
        let short = collect(
            store
                .get("uploads/big.file", 0, len - 10)
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(short, &data[..data.len() - 9]);
        // Recorded longer than the file: what there is, and the stream ends.
        let long = collect(
            store
                .get("uploads/big.file", 0, len + 10)
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(long, data);
    }

    #[tokio::test]
    async fn blocks_written_behind_land_whole_and_in_order() {
        // Many gathered batches: the first creates the file, the rest are written behind
        // (one in flight) while the next ones are gathered; commit waits for the last.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let mut expected = Vec::new();
        let mut w = store.put("uploads/behind.file").await.expect("put");
        for i in 0..40u32 {
            let block: Vec<u8> = (0..GATHER as u32 + 7)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect();
            expected.extend_from_slice(&block);
            w.write(Bytes::from(block)).await.expect("write");
        }
        w.commit().await.expect("commit");
        let len = expected.len() as u64;
        assert_eq!(
            collect(store.get("uploads/behind.file", 0, len).await.expect("get")).await,
            expected
        );
    }

    /// Write `blocks` to `key`, drop the writer without a commit: nothing may be left.
    async fn assert_a_dropped_writer_leaves_nothing(key: &str, blocks: Vec<Bytes>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let mut w = store.put(key).await.expect("put");
        for block in blocks {
            w.write(block).await.expect("write");
        }
        drop(w);
        assert!(store.list("").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_writer_dropped_with_a_write_behind_in_flight_leaves_nothing() {
        let blocks = (0..4).map(|_| Bytes::from(vec![7u8; GATHER])).collect();
        assert_a_dropped_writer_leaves_nothing("uploads/dropped.file", blocks).await;
    }

    /// Holds a writer's first write until the test lets it go, and says when it has ended.
    #[derive(Debug)]
    pub(super) struct FirstWriteHook {
        go: Mutex<std::sync::mpsc::Receiver<()>>,
        ended: std::sync::mpsc::SyncSender<()>,
    }

    /// Tells the test the write ended, when dropped (after the write, on its thread).
    pub(super) struct Ended<'a>(&'a FirstWriteHook);

    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            let _ = self.0.ended.send(());
        }
    }

    impl FirstWriteHook {
        pub(super) fn hold(&self) -> Ended<'_> {
            let _ = self
                .go
                .lock()
                .map(|go| go.recv_timeout(std::time::Duration::from_secs(10)));
            Ended(self)
        }
    }

    /// Regression: a writer dropped while its first write (which creates the file) ran on a
    /// blocking thread removed nothing — the file did not exist yet — and the write then
    /// created it: an HTTP/2 client resetting its upload mid-body left a spool file behind
    /// about one time in two, filling the disk until the hourly orphan sweep.
    #[tokio::test]
    async fn regression_a_writer_dropped_during_its_first_write_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (go, held) = std::sync::mpsc::channel();
        let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
        let mut store = LocalStore::new(dir.path()).expect("store");
        store.first_write = Some(Arc::new(FirstWriteHook {
            go: Mutex::new(held),
            ended: ended_tx,
        }));
        let mut w = store.put("uploads/reset.file").await.expect("put");
        // The request's future is dropped while its first write waits on its thread.
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            w.write(Bytes::from(vec![7u8; GATHER])),
        )
        .await;
        assert!(cut.is_err(), "the first write is held");
        drop(w);
        go.send(()).expect("let the write go");
        tokio::task::spawn_blocking(move || ended.recv_timeout(std::time::Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("the write ended");
        // The file the write created after the drop goes (on a task of its own).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !store.list("").await.expect("list").is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the file written after the drop is still there"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn evicting_a_delivered_object_from_the_cache_keeps_it_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = store.put("uploads/kept.file").await.expect("put");
        w.write(Bytes::from(body.clone())).await.expect("write");
        w.commit().await.expect("commit");
        store
            .evict_cached("uploads/kept.file")
            .await
            .expect("evict");
        assert_eq!(
            collect(
                store
                    .get("uploads/kept.file", 0, 300_000)
                    .await
                    .expect("get")
            )
            .await,
            body
        );
        store
            .evict_cached("uploads/never-written.file")
            .await
            .expect("a missing object is not an error");
        assert!(store.evict_cached("../escape").await.is_err());
    }

    #[tokio::test]
    async fn an_uncommitted_writer_leaves_nothing() {
        assert_a_dropped_writer_leaves_nothing("x", vec![Bytes::from_static(b"partial")]).await;
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("s")).expect("store");
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a//b"] {
            assert!(store.put(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_share_directory_syncs_and_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::new(dir.path()).expect("store"));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut w = store.put(&format!("u{i}")).await.expect("put");
                    w.write(Bytes::from(vec![i as u8; 1000]))
                        .await
                        .expect("write");
                    w.commit().await.expect("commit");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(store.list("u").await.expect("list").len(), 32);
        let syncs = store.dir_sync(dir.path());
        let s = syncs.lock();
        assert!(s.finished <= 32 && s.finished >= 1);
    }

    /// A request that started a directory sync and was dropped while it ran (its client hung
    /// up) left the sync marked running for ever: every later commit in that directory, and
    /// every `/readyz` probe, waited for a sync nobody was running.
    #[tokio::test]
    async fn regression_a_directory_sync_whose_caller_went_away_does_not_hold_up_the_next() {
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let syncs = DirSync::default();
        {
            let first = syncs.sync(dir.path());
            tokio::pin!(first);
            assert!(
                first.as_mut().now_or_never().is_none(),
                "polled once, the sync runs on a blocking thread"
            );
            assert!(syncs.lock().running);
        }
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(10), syncs.sync(dir.path())).await;
        assert!(matches!(next, Ok(Ok(()))), "{next:?}");
        assert!(!syncs.lock().running);
    }

    /// The directory syncs were shared by the whole store: a commit in `uploads/` could be
    /// answered by a sync of `tmp/` (the readiness probe's) that had started after its
    /// file was created, and return with its own directory never synced.
    #[tokio::test]
    async fn regression_a_directory_sync_covers_only_its_own_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        for key in ["uploads/a", "tmp/b", "uploads/c"] {
            let mut w = store.put(key).await.expect("put");
            w.write(Bytes::from_static(b"x")).await.expect("write");
            w.commit().await.expect("commit");
        }
        let uploads = store.dir_sync(&dir.path().join("uploads"));
        let tmp = store.dir_sync(&dir.path().join("tmp"));
        assert!(!Arc::ptr_eq(&uploads.state, &tmp.state));
        assert_eq!(
            uploads.lock().finished,
            2,
            "one sync per commit in uploads/"
        );
        assert_eq!(tmp.lock().finished, 1, "one in tmp/");
    }
}
