//! Receiving a `/0.2/documents` body: parts streamed to disk while they are hashed.
//!
//! The emulator runs inside the sandbox gateway, so its memory counts against the gateway's
//! budget: no file part is ever held whole. Each file part goes chunk by chunk into a
//! temporary file while SHA-256 runs over it and its first bytes are kept for sniffing; only
//! the `data` part (a small JSON message, capped) is kept in memory, as the exact bytes the
//! signatures must be checked against. Part order, part filenames and part Content-Types are
//! ignored, as Sila ignores them (PHP sends `data` last, Python names every file `file`,
//! Java labels `data` as ISO-8859-1 text).

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use docgate_core::media::SNIFF_BYTES;

/// The name of the part that carries the signed JSON message.
pub const DATA_PART: &str = "data";

/// The `data` message is metadata only; anything bigger is not a Sila message.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// A temporary file that is removed unless it is kept.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the file to `dest`; from then on it is not removed.
    pub async fn persist(mut self, dest: &Path) -> io::Result<()> {
        tokio::fs::rename(&self.path, dest).await?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One received file part.
#[derive(Debug)]
pub struct ReceivedFile {
    pub label: String,
    pub size: u64,
    pub sha256: String,
    /// The first bytes, for sniffing.
    pub head: Vec<u8>,
    pub file: TempFile,
}

/// Everything in the body.
#[derive(Debug, Default)]
pub struct Received {
    /// The raw `data` bytes, if the part was present.
    pub data: Option<Bytes>,
    /// File parts in the order they arrived.
    pub files: Vec<ReceivedFile>,
    /// Total body bytes.
    pub body_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the request is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the data part is larger than {MAX_DATA_BYTES} bytes")]
    DataTooLarge,
    #[error("{0}")]
    Malformed(String),
    #[error("two parts are named `{0}`")]
    DuplicatePart(String),
    #[error("storing the upload failed: {0}")]
    Io(#[from] io::Error),
}

/// [`receive`] for a request body. When the body is refused part-way (too large, garbled),
/// the rest is drained in the background: closing a connection with unread data makes the
/// kernel reset it, which can destroy the refusal before the client reads it.
pub async fn receive_body(
    body: Body,
    boundary: &str,
    limit: u64,
    tmp_dir: &Path,
) -> Result<Received, IntakeError> {
    let shared = Arc::new(Mutex::new(body.into_data_stream()));
    let result = receive(SharedStream(shared.clone()), boundary, limit, tmp_dir).await;
    if result.is_err() {
        // multer (and its handle on the stream) is gone once `receive` returned.
        if let Ok(rest) = Arc::try_unwrap(shared) {
            let rest = rest.into_inner().unwrap_or_else(|e| e.into_inner());
            docgate_emulator::drain_in_background(Body::from_stream(rest));
        }
    }
    result
}

/// A body stream that can be taken back after the multipart parser is done with it.
struct SharedStream(Arc<Mutex<BodyDataStream>>);

impl Stream for SharedStream {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Pin::new(&mut *inner).poll_next(cx)
    }
}

/// Read the whole multipart body, files to `tmp_dir`. `limit` caps the body (counted while
/// streaming, whatever Content-Length said).
pub async fn receive<S, E>(
    body: S,
    boundary: &str,
    limit: u64,
    tmp_dir: &Path,
) -> Result<Received, IntakeError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut received = Received::default();
    while let Some(mut field) = multipart.next_field().await.map_err(map_multer)? {
        let name = field
            .name()
            .map(str::to_owned)
            .ok_or_else(|| IntakeError::Malformed("a part has no name".into()))?;
        if name == DATA_PART {
            if received.data.is_some() {
                return Err(IntakeError::DuplicatePart(name));
            }
            let mut data = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(map_multer)? {
                if data.len() + chunk.len() > MAX_DATA_BYTES {
                    return Err(IntakeError::DataTooLarge);
                }
                data.extend_from_slice(&chunk);
            }
            received.data = Some(Bytes::from(data));
            continue;
        }
        if received.files.iter().any(|f| f.label == name) {
            return Err(IntakeError::DuplicatePart(name));
        }
        let temp = TempFile {
            path: tmp_dir.join(format!("{}.part", uuid::Uuid::new_v4().simple())),
            keep: false,
        };
        let mut out = tokio::fs::File::create(temp.path()).await?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(map_multer)? {
            hasher.update(&chunk);
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            size += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        drop(out);
        received.files.push(ReceivedFile {
            label: name,
            size,
            sha256: hex::encode(hasher.finalize()),
            head,
            file: temp,
        });
    }
    received.body_bytes = received.files.iter().map(|f| f.size).sum::<u64>()
        + received.data.as_ref().map_or(0, |d| d.len() as u64);
    Ok(received)
}

fn map_multer(e: multer::Error) -> IntakeError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => IntakeError::TooLarge { limit },
        multer::Error::FieldSizeExceeded { limit, .. } => IntakeError::TooLarge { limit },
        other => IntakeError::Malformed(format!("not a valid multipart/form-data body: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn chunks(body: &'static [u8], size: usize) -> impl Stream<Item = Result<Bytes, io::Error>> {
        stream::iter(
            body.chunks(size)
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    const BODY: &[u8] = b"--B\r\nContent-Disposition: form-data; name=\"file_2\"; filename=\"x\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 tiny\r\n--B\r\nContent-Disposition: form-data; name=\"data\"\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\r\n{\"header\":{}}\r\n--B--\r\n";

    #[tokio::test]
    async fn files_go_to_disk_hashed_and_data_stays_exact_in_any_part_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let got = receive(chunks(BODY, 7), "B", 10_000, dir.path())
            .await
            .expect("parses");
        assert_eq!(got.data.as_deref(), Some(&b"{\"header\":{}}"[..]));
        assert_eq!(got.files.len(), 1);
        let f = &got.files[0];
        assert_eq!(f.label, "file_2");
        assert_eq!(f.size, 13);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(b"%PDF-1.4 tiny")));
        assert_eq!(
            std::fs::read(f.file.path()).expect("on disk"),
            b"%PDF-1.4 tiny"
        );
        let path = f.file.path().to_owned();
        drop(got);
        assert!(!path.exists(), "temp files vanish unless persisted");
    }

    #[tokio::test]
    async fn the_size_limit_is_counted_while_streaming() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = receive(chunks(BODY, 16), "B", 64, dir.path())
            .await
            .expect_err("too large");
        assert!(matches!(err, IntakeError::TooLarge { limit: 64 }), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "nothing left behind"
        );
    }

    #[tokio::test]
    async fn duplicate_and_garbled_parts_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let dup: &'static [u8] = b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n2\r\n--B--\r\n";
        assert!(matches!(
            receive(chunks(dup, 5), "B", 10_000, dir.path()).await,
            Err(IntakeError::DuplicatePart(_))
        ));
        let garbled: &'static [u8] = b"--B\r\nno headers here";
        assert!(matches!(
            receive(chunks(garbled, 5), "B", 10_000, dir.path()).await,
            Err(IntakeError::Malformed(_))
        ));
    }
}
