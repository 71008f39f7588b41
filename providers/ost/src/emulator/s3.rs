//! The emulator's S3: a real S3 server (s3s + s3s-fs) and real SigV4 presigning.
//!
//! OST's uploads never touch OST's API servers: clients put bytes straight into S3 with URLs
//! OST signed. For the emulator to be believable, *S3 itself* must refuse what AWS refuses — an
//! expired URL, a changed Content-Type or path, a POST outside its content-length-range. So
//! the emulator embeds s3s-fs (which verifies SigV4 presigned URLs and POST policies), signs
//! PUT URLs with the AWS SDK's own presigner, and builds POST policies the way AWS documents
//! them, signed with the SigV4 signing key. Objects are plain files under `root/<bucket>/`.
//!
//! Memory: PUT bodies stream to disk. s3s collects a browser POST's file part in memory before
//! checking its policy; the part is bounded by the policy's maximum (20 MiB by default).
//!
//! Where s3s-fs is laxer than AWS the emulator closes the gap: a PUT failing its Content-MD5
//! leaves nothing behind ([`AllOrNothing`]), and POST forms expire with their policy. Where
//! s3s answers a request before reading its body (an expired URL), the rest of the body is
//! read out before the answer goes out ([`serve_reading_out`]), so the client sees S3's 403
//! rather than a reset connection.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_sdk_s3::{
    config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation},
    presigning::PresigningConfig,
};
use base64::Engine as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto::Builder as ConnBuilder, graceful::GracefulShutdown},
};
use s3s::{dto, S3Request, S3Response, S3Result, S3};
use serde_json::{json, Value};
use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const REGION: &str = "us-east-1";

/// What OST's real POST forms carry; s3s accepts and ignores server-side encryption fields.
const SSE: &str = "aws:kms";
const SSE_KEY_ID: &str = "00000000-0000-4000-8000-00000000e5e5";

const AMZ_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const SCOPE_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]");
const ISO8601: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000Z");

/// Settings of the embedded S3.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub listen: SocketAddr,
    pub root: PathBuf,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Largest browser POST file (bounds what s3s holds in memory).
    pub max_post_bytes: u64,
    /// The longest URL lifetime handed out (so POST signatures are not "skewed" before the
    /// policy expires).
    pub max_url_lifetime: Duration,
}

/// The running S3 server. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct S3Server {
    pub addr: SocketAddr,
    pub url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl S3Server {
    pub async fn start(settings: &S3Settings) -> std::io::Result<S3Server> {
        let bucket_dir = settings.root.join(&settings.bucket);
        tokio::fs::create_dir_all(&bucket_dir).await?;
        let fs = s3s_fs::FileSystem::new(&settings.root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(AllOrNothing {
            fs,
            root: settings.root.clone(),
        });
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            settings.access_key.as_str(),
            settings.secret_key.as_str(),
        ));
        let mut config = s3s::config::S3Config::default();
        config.post_object_max_file_size = settings.max_post_bytes;
        // AWS checks a POST form against its policy's expiration, not against the signing
        // time; s3s bounds the signing time's age instead, so allow the longest lifetime.
        let skew = settings.max_url_lifetime.as_secs().max(900) + 60;
        config.presigned_url_max_skew_time_secs = u32::try_from(skew).unwrap_or(u32::MAX);
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            config,
        ))));
        let service = builder.build();

        let listener = TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let graceful = GracefulShutdown::new();
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(e) => {
                            tracing::warn!("emulated S3: accept failed: {e}");
                            continue;
                        }
                    },
                    _ = &mut rx => break,
                };
                let service = service.clone();
                let lingering =
                    hyper::service::service_fn(move |req| serve_reading_out(service.clone(), req));
                let conn = http.serve_connection(TokioIo::new(socket), lingering);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            // In-flight uploads may finish; a stuck client does not hold shutdown forever.
            let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
        });
        Ok(S3Server {
            addr,
            url: format!("http://{}", public_addr(addr)),
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serve one request through s3s, reading out whatever body s3s leaves unread before the
/// answer goes out.
///
/// s3s refuses an expired or badly signed PUT from its headers and drops the body unread;
/// hyper then closes the connection while the client is still sending, the kernel answers
/// the unread bytes with a reset, and the client sees "connection closed" instead of S3's
/// 403 — a race the client-side refetch path lost in CI. AWS reads a refused request out
/// before answering, so the emulator does too (within [`docgate_emulator::READ_OUT`]).
async fn serve_reading_out(
    service: s3s::service::S3Service,
    req: http::Request<hyper::body::Incoming>,
) -> Result<s3s::HttpResponse, s3s::HttpError> {
    let (parts, incoming) = req.into_parts();
    let (body, pump) = ForwardedBody::pump(incoming);
    let response = service
        .call(http::Request::from_parts(
            parts,
            s3s::Body::http_body_unsync(body),
        ))
        .await;
    // The pump ends with the body, or once the read-out's own bounds stop it.
    let _ = pump.await;
    response
}

/// A request body handed to s3s through a small channel, so that a task owns the real body
/// and can keep reading it after s3s lets go.
struct ForwardedBody {
    frames: tokio::sync::mpsc::Receiver<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>,
    hint: http_body::SizeHint,
}

impl ForwardedBody {
    fn pump(mut incoming: hyper::body::Incoming) -> (ForwardedBody, JoinHandle<()>) {
        use docgate_core::read_out::read_out;
        use http_body_util::BodyExt as _;
        let hint = http_body::Body::size_hint(&incoming);
        let (tx, frames) = tokio::sync::mpsc::channel(2);
        let pump = tokio::spawn(async move {
            while let Some(frame) = incoming.frame().await {
                let forwarded = match frame {
                    Ok(frame) => tx.send(Ok(frame)).await,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                };
                if forwarded.is_err() {
                    // s3s let go of the body before its end: read the rest out.
                    read_out(incoming.into_data_stream(), docgate_emulator::READ_OUT).await;
                    return;
                }
            }
        });
        (ForwardedBody { frames, hint }, pump)
    }
}

impl http_body::Body for ForwardedBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.frames.poll_recv(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint
    }
}

/// s3s-fs, except that a PUT whose bytes fail their `Content-MD5` leaves nothing behind.
///
/// s3s-fs writes the object before comparing digests, so it answers `400 BadDigest` but keeps
/// the bad bytes under the key; AWS stores nothing. Only the operations the emulator's
/// clients use are forwarded (the rest answer `NotImplemented`).
struct AllOrNothing {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3 for AllOrNothing {
    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let result = self.fs.put_object(req).await;
        if let Err(e) = &result {
            if *e.code() == s3s::S3ErrorCode::BadDigest {
                if let Some(path) = object_path(&self.root, &bucket, &key) {
                    let _ = tokio::fs::remove_file(path).await;
                }
            }
        }
        result
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    // Multipart uploads: not used by OST's clients, but by docgate's S3 spool, which runs its
    // tests against this same server.
    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}

/// An address clients can reach: a wildcard bind (`0.0.0.0`) is reached over loopback.
pub fn public_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Signs URLs and POST forms for the embedded S3.
#[derive(Clone)]
pub struct Presigner {
    client: aws_sdk_s3::Client,
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presigner")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl Presigner {
    pub fn new(endpoint: &str, bucket: &str, access_key: &str, secret_key: &str) -> Presigner {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "docgate-ost-emulator",
            ))
            .force_path_style(true)
            // A presigned PUT cannot carry a checksum of a body nobody has seen yet.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Presigner {
            client: aws_sdk_s3::Client::from_conf(config),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
        }
    }

    fn presigning(start: SystemTime, lifetime: Duration) -> Result<PresigningConfig, String> {
        PresigningConfig::builder()
            .start_time(start)
            .expires_in(lifetime)
            .build()
            .map_err(|e| format!("presigning config: {e}"))
    }

    /// A PUT URL for `key` that S3 accepts only with this exact `Content-Type`.
    pub async fn put_url(
        &self,
        key: &str,
        content_type: &str,
        start: SystemTime,
        lifetime: Duration,
    ) -> Result<String, String> {
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .presigned(Self::presigning(start, lifetime)?)
            .await
            .map_err(|e| format!("presigning PUT: {e}"))?;
        Ok(presigned.uri().to_owned())
    }

    /// A GET URL for `key` (tests and operators read stored objects through S3 itself).
    pub async fn get_url(&self, key: &str, lifetime: Duration) -> Result<String, String> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(Self::presigning(SystemTime::now(), lifetime)?)
            .await
            .map_err(|e| format!("presigning GET: {e}"))?;
        Ok(presigned.uri().to_owned())
    }

    /// A browser POST form for `key`: `{url, fields}` with a SigV4-signed policy that pins the
    /// key, the Content-Type and the size range.
    pub fn post_form(
        &self,
        key: &str,
        content_type: &str,
        start: SystemTime,
        lifetime: Duration,
        size_range: (u64, u64),
    ) -> Value {
        let start = OffsetDateTime::from(start);
        let expiration = start + lifetime;
        let fmt =
            |t: OffsetDateTime, f: &[BorrowedFormatItem<'static>]| t.format(f).unwrap_or_default();
        let amz_date = fmt(start, AMZ_DATE);
        let credential = format!(
            "{}/{}/{REGION}/s3/aws4_request",
            self.access_key,
            fmt(start, SCOPE_DATE)
        );
        let policy = json!({
            "expiration": fmt(expiration, ISO8601),
            "conditions": [
                {"bucket": self.bucket},
                {"key": key},
                {"Content-Type": content_type},
                {"x-amz-server-side-encryption": SSE},
                {"x-amz-server-side-encryption-aws-kms-key-id": SSE_KEY_ID},
                ["content-length-range", size_range.0, size_range.1],
                {"x-amz-credential": credential},
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-date": amz_date},
            ]
        });
        let policy_b64 = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let signing_key =
            aws_sigv4::sign::v4::generate_signing_key(&self.secret_key, start.into(), REGION, "s3");
        let signature =
            aws_sigv4::sign::v4::calculate_signature(signing_key, policy_b64.as_bytes());
        json!({
            "url": format!("{}/{}", self.endpoint, self.bucket),
            "fields": {
                "key": key,
                "Content-Type": content_type,
                "x-amz-server-side-encryption": SSE,
                "x-amz-server-side-encryption-aws-kms-key-id": SSE_KEY_ID,
                "policy": policy_b64,
                "x-amz-credential": credential,
                "x-amz-algorithm": "AWS4-HMAC-SHA256",
                "x-amz-date": amz_date,
                "x-amz-signature": signature,
            }
        })
    }
}

/// Where s3s-fs keeps the bytes of `key`.
pub fn object_path(root: &Path, bucket: &str, key: &str) -> Option<PathBuf> {
    // Keys come from our own generator, but a test or caller may pass anything: refuse
    // anything that could leave the bucket.
    let safe = key
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    safe.then(|| root.join(bucket).join(key))
}
