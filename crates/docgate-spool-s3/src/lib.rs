//! The spool on S3: an [`ObjectStore`] over a bucket, so replicas share spooled documents
//! without a shared filesystem.
//!
//! Why a bucket and not NFS: every replica of a fleet can read what any other received, and
//! a replica's own disk holds nothing another needs — a fresh machine with the same config
//! joins the fleet. The trade-offs, and how each promise of [`ObjectStore`] is kept:
//!
//! - **Durable on commit.** S3 acknowledges `PutObject` and `CompleteMultipartUpload` only
//!   once the object is stored; nothing is visible under the key before that. A writer
//!   dropped without commit aborts its multipart upload (best effort; a bucket lifecycle rule
//!   for incomplete multipart uploads catches the rest).
//! - **Bounded memory.** A writer holds at most one part ([`PART_SIZE`], S3's minimum part
//!   size) while it streams: objects up to that size go up in one `PutObject` at commit,
//!   larger ones as a multipart upload, one part at a time (the body waits while a part is
//!   sent, which is the backpressure).
//! - **Streaming reads.** A read is one ranged `GetObject` whose body streams through; a read
//!   that ends short is an error, never a shorter document. Blocking readers (ZIP inspection)
//!   fetch [`READ_AHEAD`]-sized ranges on demand.
//! - **Every call has a deadline**: connect, per-read and per-attempt timeouts, with the
//!   SDK's standard retries for throttling and 5xx.
//!
//! Credentials come from the config as secrets, or from the standard `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) environment variables.

#![forbid(unsafe_code)]

use std::{
    io::{self, Read, Seek, SeekFrom},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use aws_sdk_s3::{
    config::{
        timeout::TimeoutConfig, BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
    },
    primitives::ByteStream as S3Body,
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use bytes::{Bytes, BytesMut};
use docgate_core::{
    store::{ByteStream, ObjectInfo, ObjectStore, ObjectWriter, ReadSeek},
    Secret,
};
use futures_util::StreamExt;

/// Bytes a writer collects before sending them as one part (S3's smallest allowed part,
/// except the last).
pub const PART_SIZE: usize = 5 << 20;

/// Bytes a blocking reader fetches per request.
pub const READ_AHEAD: u64 = 1 << 20;

/// Where the spool lives in S3, and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    /// Prepended to every key (no leading `/`; empty or ending in `/`).
    pub prefix: String,
}

impl S3Location {
    /// `s3://bucket/prefix` (the prefix is optional).
    pub fn parse(url: &str) -> Result<S3Location, S3ConfigError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| S3ConfigError::Url(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(S3ConfigError::Url(url.to_owned()));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub location: S3Location,
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key` (most S3-compatible
    /// stores want this).
    pub path_style: bool,
    /// `None`: the `AWS_*` environment variables.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub connect_timeout: Duration,
    /// One request attempt (a whole part upload, or a ranged read's response head).
    pub attempt_timeout: Duration,
    /// No byte on a connection for this long: the request fails (and is retried).
    pub read_timeout: Duration,
}

impl S3Settings {
    pub fn new(location: S3Location, region: impl Into<String>) -> S3Settings {
        S3Settings {
            location,
            endpoint: None,
            region: region.into(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the S3 spool cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("`{0}` is not s3://bucket[/prefix] with a valid bucket name")]
    Url(String),
    #[error(
        "spool_s3: no credentials (set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID \
         and AWS_SECRET_ACCESS_KEY)"
    )]
    NoCredentials,
    #[error("reaching the spool bucket {bucket}: {source}")]
    Unreachable { bucket: String, source: io::Error },
}

/// The spool's objects in an S3 bucket; see the module docs.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub fn new(settings: &S3Settings) -> Result<S3Store, S3ConfigError> {
        let credentials = credentials(settings)?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .build();
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .http_client(http)
            .timeout_config(timeouts)
            // Checksums only where S3 requires them: a streamed part is hashed by us already.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(config.build()),
            bucket: settings.location.bucket.clone(),
            prefix: settings.location.prefix.clone(),
        })
    }

    /// The store, once its bucket has answered with these credentials (what `serve` needs
    /// before it starts and `check` reports).
    pub async fn connect(settings: &S3Settings) -> Result<S3Store, S3ConfigError> {
        let store = S3Store::new(settings)?;
        store
            .probe()
            .await
            .map_err(|source| S3ConfigError::Unreachable {
                bucket: settings.location.bucket.clone(),
                source,
            })?;
        Ok(store)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Is the bucket reachable with these credentials? (Start-up and readiness.)
    pub async fn probe(&self) -> io::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error("checking the bucket", e))
    }

    /// Bytes `from..=to` of `key`: asking for one byte past the recorded end lets a longer
    /// object be noticed, as a file's reader does.
    async fn ranged(&self, key: &str, from: u64, to: u64) -> io::Result<S3Body> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={from}-{to}"))
            .send()
            .await
            .map_err(|e| s3_error("reading a spooled object", e))?;
        Ok(out.body)
    }
}

fn credentials(settings: &S3Settings) -> Result<Credentials, S3ConfigError> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (id, secret, token) = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => (id.expose().to_owned(), secret.expose().to_owned(), None),
        _ => match (
            from_env("AWS_ACCESS_KEY_ID"),
            from_env("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => (id, secret, from_env("AWS_SESSION_TOKEN")),
            _ => return Err(S3ConfigError::NoCredentials),
        },
    };
    Ok(Credentials::new(id, secret, token, None, "docgate-config"))
}

/// An SDK error as an I/O error: a missing object is `NotFound` (callers tell "gone" from
/// "unreachable" by kind), the rest carries S3's code but never a credential.
fn s3_error<E>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> io::Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let kind = match &e {
        SdkError::TimeoutError(_) => io::ErrorKind::TimedOut,
        SdkError::ServiceError(s)
            if matches!(
                s.err().code(),
                Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
            ) =>
        {
            io::ErrorKind::NotFound
        }
        SdkError::ServiceError(s) if matches!(s.err().code(), Some("NoSuchBucket")) => {
            io::ErrorKind::NotFound
        }
        _ => io::ErrorKind::Other,
    };
    let detail = match &e {
        // A HEAD's error has no body, so no code: the status says it then.
        SdkError::ServiceError(s) => format!(
            "HTTP {} {} {}",
            s.raw().status().as_u16(),
            s.err().code().unwrap_or(""),
            s.err().message().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    };
    io::Error::new(kind, format!("S3: {what}: {detail}"))
}

/// Writes one object: buffered up to a part, then multipart; see the module docs.
struct S3Writer {
    store: S3Store,
    key: String,
    buf: BytesMut,
    /// The multipart upload's id and the parts sent, once the object outgrew one part.
    multipart: Option<(String, Vec<CompletedPart>)>,
    committed: bool,
}

impl S3Writer {
    async fn send_part(&mut self, part: Bytes) -> io::Result<()> {
        let store = &self.store;
        if self.multipart.is_none() {
            let created = store
                .client
                .create_multipart_upload()
                .bucket(&store.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| s3_error("starting a multipart upload", e))?;
            let id = created
                .upload_id
                .ok_or_else(|| io::Error::other("S3: no upload id in CreateMultipartUpload"))?;
            self.multipart = Some((id, Vec::new()));
        }
        let Some((upload_id, parts)) = &mut self.multipart else {
            return Err(io::Error::other("multipart upload not started"));
        };
        let number =
            i32::try_from(parts.len() + 1).map_err(|_| io::Error::other("S3: too many parts"))?;
        let sent = store
            .client
            .upload_part()
            .bucket(&store.bucket)
            .key(&self.key)
            .upload_id(upload_id.as_str())
            .part_number(number)
            .content_length(part.len() as i64)
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|e| s3_error("uploading a part", e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag)
                .build(),
        );
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let (Some((upload_id, _)), Ok(rt)) =
            (self.multipart.take(), tokio::runtime::Handle::try_current())
        {
            let store = self.store.clone();
            let key = self.key.clone();
            rt.spawn(async move {
                let _ = store
                    .client
                    .abort_multipart_upload()
                    .bucket(&store.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await;
            });
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, block: Bytes) -> io::Result<()> {
        self.buf.extend_from_slice(&block);
        while self.buf.len() >= PART_SIZE {
            let part = self.buf.split_to(PART_SIZE).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        let rest = std::mem::take(&mut self.buf).freeze();
        let store = self.store.clone();
        if self.multipart.is_none() {
            store
                .client
                .put_object()
                .bucket(&store.bucket)
                .key(&self.key)
                .content_length(rest.len() as i64)
                .body(S3Body::from(rest))
                .send()
                .await
                .map_err(|e| s3_error("storing an object", e))?;
            self.committed = true;
            return Ok(());
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let Some((upload_id, parts)) = self.multipart.clone() else {
            return Err(io::Error::other("multipart upload not started"));
        };
        store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("completing a multipart upload", e))?;
        self.committed = true;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: self.full_key(key),
            buf: BytesMut::new(),
            multipart: None,
            committed: false,
        }))
    }

    async fn get(&self, key: &str, from: u64, len: u64) -> io::Result<ByteStream> {
        if from >= len {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        // Up to one byte past `len`, as a file reads: the caller checks the length. A body
        // cut short by the network fails (its Content-Length is not met).
        let body = self.ranged(key, from, len).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            body,
            |mut body| async move {
                let chunk = body.next().await?;
                Some((
                    chunk.map_err(|e| io::Error::other(format!("S3: {e}"))),
                    body,
                ))
            },
        )))
    }

    /// Like a file, the reader's end is the stored object's (a `HEAD`), not `_len`: a
    /// sealed object is longer than the document, and a truncated one must look short.
    fn open_blocking(&self, key: &str, _len: u64) -> io::Result<Box<dyn ReadSeek>> {
        let rt = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let head = rt.block_on(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .send(),
        );
        let head = head.map_err(|e| s3_error("opening a spooled object", e))?;
        let len = head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| io::Error::other("S3: HEAD without a length"))?;
        Ok(Box::new(RangeReader {
            store: self.clone(),
            rt,
            key: key.to_owned(),
            len,
            pos: 0,
            buf: Bytes::new(),
            buf_at: 0,
        }))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match s3_error("removing an object", e) {
                gone if gone.kind() == io::ErrorKind::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("listing the spool", e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    modified,
                });
            }
        }
        Ok(found)
    }
}

/// `body` as a stream of exactly `len` bytes (a blocking reader's range): a body that ends
/// early or runs long is an error.
fn exactly(body: S3Body, len: u64) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::unfold((Some(body), 0u64), move |(body, seen)| async move {
        let mut body = body?;
        match body.next().await {
            Some(Ok(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > len {
                    let e = io::Error::other("S3: the object is longer than recorded");
                    return Some((Err(e), (None, seen)));
                }
                Some((Ok(chunk), (Some(body), seen)))
            }
            Some(Err(e)) => Some((Err(io::Error::other(format!("S3: {e}"))), (None, seen))),
            None if seen < len => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("S3: the object ended after {seen} of {len} bytes"),
                )),
                (None, seen),
            )),
            None => None,
        }
    })
}

/// A blocking `Read + Seek` over an object, fetching ranges as it goes (runs on a blocking
/// thread, so it may wait on the runtime).
struct RangeReader {
    store: S3Store,
    rt: tokio::runtime::Handle,
    key: String,
    len: u64,
    pos: u64,
    buf: Bytes,
    /// Offset of `buf`'s first byte.
    buf_at: u64,
}

impl RangeReader {
    fn fill(&mut self) -> io::Result<()> {
        let want = READ_AHEAD.min(self.len - self.pos);
        let store = self.store.clone();
        let key = self.key.clone();
        let from = self.pos;
        let bytes = self.rt.block_on(async move {
            let body = store.ranged(&key, from, from + want - 1).await?;
            let mut stream = Box::pin(exactly(body, want));
            let mut out = BytesMut::with_capacity(want as usize);
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok::<_, io::Error>(out.freeze())
        })?;
        self.buf = bytes;
        self.buf_at = from;
        Ok(())
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_at && self.pos < self.buf_at + self.buf.len() as u64;
        if !in_buf {
            self.fill()?;
        }
        let start = (self.pos - self.buf_at) as usize;
        let n = out.len().min(self.buf.len() - start);
        out[..n].copy_from_slice(&self.buf[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the object's start",
            )
        })?;
        Ok(self.pos)
    }
}
