//! The accept loop: hyper directly (not `axum::serve`), because the front door needs what a
//! hostile client tests first:
//!
//! - **a connection cap** (`limits.max_connections`): past it, new connections wait in the
//!   kernel's backlog instead of exhausting file descriptors;
//! - **a first-byte deadline**: a connection that sends nothing within
//!   `limits.header_read_timeout` is closed (hyper's own header timer only starts once a
//!   request begins, and an idle socket never begins one);
//! - **an idle deadline**: a connection with no request being handled, and no answer that
//!   sent a bit, for `limits.header_read_timeout` is shut down gracefully. hyper's header
//!   timer is HTTP/1's alone: an HTTP/2 connection that opens no stream, and answers the
//!   keep-alive pings, would otherwise hold one of the connection slots for ever (1024 of
//!   them shut everyone else out) — as would one that asks for something and grants no
//!   flow-control window for the answer;
//! - **bounded request heads** (`limits.max_header_bytes`) for HTTP/1 and HTTP/2, HTTP/2
//!   keep-alive pings and a stream limit;
//! - **problem+json from hyper too**: the answers hyper writes on its own for a malformed or
//!   oversized request head are rewritten on the way out ([`ProblemOnParseError`]);
//! - a graceful shutdown that lets in-flight uploads finish.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::Limits;

/// Streams one HTTP/2 connection may carry at once.
const H2_MAX_STREAMS: u32 = 64;

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's buffer must hold a head of the allowed size; it will not go below 8 KiB.
    let head = usize::try_from(limits.max_header_bytes)
        .unwrap_or(usize::MAX)
        .max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(head)
        .max_headers(100)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serve `app` on `listener` until `shutdown`, then wait up to `limits.shutdown_grace` for
/// open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let connections_open = TaskTracker::new();
    let builder = Arc::new(builder(&limits));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = TowerToHyperService::new(Counted {
            inner: app.clone(),
            activity: activity.clone(),
        });
        let builder = builder.clone();
        let idle_limit = limits.header_read_timeout;
        let shutdown = shutdown.clone();
        connections_open.spawn(async move {
            let _permit = permit;
            if !sends_within(&stream, idle_limit).await {
                return;
            }
            let io = TokioIo::new(ProblemOnParseError::new(stream));
            let conn = builder.serve_connection_with_upgrades(io, service);
            let mut conn = std::pin::pin!(conn);
            // Idle: say goodbye (HTTP/2's GOAWAY waits for the peer's answer to a ping). Still
            // idle a whole period later: drop the connection, answered or not.
            let mut closing = false;
            let ended = loop {
                tokio::select! {
                    ended = conn.as_mut() => break Some(ended),
                    _ = shutdown.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = activity.idle_for(idle_limit) => {
                        if closing {
                            break None;
                        }
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Some(Err(e)) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections_open.close();
    tokio::select! {
        _ = connections_open.wait() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("connections still open after the shutdown grace period"),
    }
}

/// What one connection is doing: requests being handled, answers being sent, and when an
/// answer last went out a bit.
#[derive(Debug, Default)]
struct Activity {
    /// Requests whose handler is running (their bodies are held to the pace rules there).
    handling: AtomicUsize,
    /// Answers not yet all sent.
    answering: AtomicUsize,
    /// When an answer last gave the connection a frame (ms since [`epoch`]).
    answered_at: AtomicU64,
}

/// The instant `Activity` times are counted from.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    /// Busy: a handler runs, or an answer went out a bit within `limit`. An answer that
    /// cannot go out — an HTTP/2 client that grants no flow-control window, or a client that
    /// never reads — does not keep its connection (and its slot) for ever.
    fn busy(&self, limit: Duration) -> bool {
        if self.handling.load(Ordering::Acquire) > 0 {
            return true;
        }
        self.answering.load(Ordering::Acquire) > 0
            && now_ms().saturating_sub(self.answered_at.load(Ordering::Acquire))
                < u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once the connection has not been busy for `limit` (looked at four times a
    /// period: a quarter of it late at most).
    async fn idle_for(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = tokio::time::Instant::now();
            if self.busy(limit) {
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= limit {
                return;
            }
        }
    }

    fn progressed(&self) {
        self.answered_at.store(now_ms(), Ordering::Release);
    }
}

/// Counts one of `counter` until dropped.
struct Counting(Arc<Activity>, fn(&Activity) -> &AtomicUsize);

impl Counting {
    fn new(activity: &Arc<Activity>, counter: fn(&Activity) -> &AtomicUsize) -> Counting {
        counter(activity).fetch_add(1, Ordering::AcqRel);
        Counting(activity.clone(), counter)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting the connection's requests while they are handled, then their
/// answers until the last byte of their body is out (a slow reader of a large answer is not
/// idle while it reads).
#[derive(Clone)]
struct Counted {
    inner: Router,
    activity: Arc<Activity>,
}

type Answer = http::Response<axum::body::Body>;

impl<B> tower::Service<http::Request<B>> for Counted
where
    Router: tower::Service<http::Request<B>, Response = Answer>,
    <Router as tower::Service<http::Request<B>>>::Future: Send + 'static,
{
    type Response = Answer;
    type Error = <Router as tower::Service<http::Request<B>>>::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Answer, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handling = Counting::new(&self.activity, |a| &a.handling);
        let activity = self.activity.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await?;
            activity.progressed();
            let answering = Counting::new(&activity, |a| &a.answering);
            drop(handling);
            // The answer stays counted until it is sent (or dropped); each frame it gives
            // the connection counts as progress.
            Ok(answer.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    answering.0.progressed();
                    frame
                }))
            }))
        })
    }
}

/// Whether the peer sends a first byte within `deadline` (without consuming it).
async fn sends_within(stream: &TcpStream, deadline: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The answer hyper writes by itself when a request head cannot be parsed (400), its target
/// is too long (414) or it is too large (431): a bare head with `content-length: 0`. The
/// gateway's own error answers always carry a problem body, so that shape identifies hyper's.
fn hyper_error_status(written: &[u8]) -> Option<u16> {
    let status = match written.get(..13)? {
        b"HTTP/1.1 400 " => 400,
        b"HTTP/1.1 414 " => 414,
        b"HTTP/1.1 431 " => 431,
        _ => return None,
    };
    let head_end = memchr::memmem::find(written, b"\r\n\r\n")? + 4;
    let head = written[..head_end].to_ascii_lowercase();
    (head_end == written.len()
        && memchr::memmem::find(&head, b"\r\ncontent-length: 0\r\n").is_some())
    .then_some(status)
}

/// The problem+json answer that replaces hyper's bare one.
fn problem_answer(status: u16) -> Bytes {
    let (code, title, detail) = match status {
        431 => (
            "headers_too_large",
            "Request Header Fields Too Large",
            "the request head is larger than the gateway accepts",
        ),
        414 => (
            "uri_too_long",
            "URI Too Long",
            "the request target is longer than the gateway accepts",
        ),
        _ => (
            "bad_request",
            "Bad Request",
            "the request head could not be parsed",
        ),
    };
    let body = serde_json::json!({
        "type": format!("urn:docgate:problem:{code}"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "side": "client",
    })
    .to_string();
    Bytes::from(format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// A connection whose writes are watched for hyper's own error answers (see
/// [`hyper_error_status`]), which are replaced by problem+json.
#[derive(Debug)]
pub struct ProblemOnParseError<T> {
    inner: T,
    /// A replacement still being written, and how much of it is out.
    pending: Option<(Bytes, usize)>,
}

impl<T> ProblemOnParseError<T> {
    pub fn new(inner: T) -> Self {
        ProblemOnParseError {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> ProblemOnParseError<T> {
    /// Write out the replacement, if one is pending.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemOnParseError<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemOnParseError<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drive(cx))?;
        if let Some(status) = hyper_error_status(buf) {
            self.pending = Some((problem_answer(status), 0));
            // The caller's bytes count as written; the replacement goes out instead.
            let _ = self.drive(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drive(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if first.len() == total {
                if let Some(status) = hyper_error_status(first) {
                    self.pending = Some((problem_answer(status), 0));
                    let _ = self.drive(cx)?;
                    return Poll::Ready(Ok(total));
                }
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drive(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drive(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bare_error_heads_are_recognised() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error_status(bare), Some(431));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error_status(bad), Some(400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 52\r\n\r\n";
        assert_eq!(hyper_error_status(ours), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx";
        assert_eq!(hyper_error_status(with_body), None);
        assert_eq!(hyper_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn a_bare_431_goes_out_as_problem_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(4096);
        let mut wrapped = ProblemOnParseError::new(server);
        wrapped
            .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("write");
        wrapped.shutdown().await.expect("shutdown");
        let mut out = String::new();
        let mut client = client;
        client.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("application/problem+json"));
        assert!(out.contains("\"code\":\"headers_too_large\""));
    }
}
