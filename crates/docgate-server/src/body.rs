//! Request bodies: streams of `Bytes` held to the front door's pace rules ([`GuardedBody`]),
//! and bodies that are read out after a refusal so the client gets to see it
//! ([`ReadOutOnDrop`]).
//!
//! A slow client is the cheapest attack on an upload gateway: one byte every few seconds
//! holds a connection, an upload slot and a spool file for as long as the server lets it. So a
//! body must keep arriving (`body_idle_timeout`), arrive at a minimum average rate over a
//! window (`min_body_rate`, like nginx's `client_body_timeout` or Apache's mod_reqtimeout
//! `MinRate`), and end by a deadline (`body_deadline`), whichever is broken first.
//!
//! The cause is recorded in a [`FaultCell`] where it happens, so code that only sees a wrapped
//! error (multer's) still answers with the right problem — never by reading message text.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use docgate_core::{
    read_out::{read_out, ReadOut},
    Problem,
};
use futures_util::Stream;
use http_body::Body as _;
use tokio::time::{Instant, Sleep};

/// How a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRules {
    /// No byte for this long: cut.
    pub idle: Duration,
    /// Bytes per second, averaged over `window`; 0 turns the check off.
    pub min_rate: u64,
    pub window: Duration,
    /// The whole body must have arrived by then.
    pub deadline: Duration,
}

/// Why a body was cut, as recorded where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    #[error("no body bytes arrived for {0:?}")]
    Idle(Duration),
    #[error("the body arrived at {rate} bytes/s over {window:?}; at least {min} are required")]
    TooSlow {
        rate: u64,
        min: u64,
        window: Duration,
    },
    #[error("the body did not complete within {0:?}")]
    Deadline(Duration),
    #[error("the body arrived too slowly while other uploads waited for its slot")]
    Preempted,
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("a multipart part's headers exceed {limit} bytes")]
    PartHeaderTooLarge { limit: u64 },
    #[error("reading the body failed: {0}")]
    Read(String),
    #[error("the gateway ran out of storage while receiving the body; nothing was accepted")]
    OutOfSpace,
}

impl BodyFault {
    pub fn to_problem(&self) -> Problem {
        let timeout = |code: &'static str| {
            Problem::new(
                http::StatusCode::REQUEST_TIMEOUT,
                code,
                "Request body timeout",
            )
            .with_detail(self.to_string())
        };
        match self {
            BodyFault::Idle(_) => timeout("body_timeout"),
            BodyFault::TooSlow { min, .. } => timeout("body_too_slow").with_extra("min_rate", *min),
            BodyFault::Deadline(_) | BodyFault::Preempted => timeout("body_too_slow"),
            BodyFault::TooLarge { limit } => Problem::payload_too_large(*limit, "the request body"),
            BodyFault::PartHeaderTooLarge { limit } => Problem::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "part_header_too_large",
                "Part headers too large",
            )
            .with_detail(self.to_string())
            .with_extra("limit", *limit),
            BodyFault::Read(_) => Problem::bad_request(self.to_string()),
            BodyFault::OutOfSpace => crate::admission::insufficient_storage(self.to_string()),
        }
    }
}

/// The first fault of one request's body, shared by everything that reads it.
#[derive(Debug, Clone, Default)]
pub struct FaultCell(Arc<OnceLock<BodyFault>>);

impl FaultCell {
    /// Record `fault` unless an earlier one is already recorded; returns the recorded one.
    pub fn record(&self, fault: BodyFault) -> BodyFault {
        self.0.get_or_init(|| fault).clone()
    }

    pub fn get(&self) -> Option<&BodyFault> {
        self.0.get()
    }

    /// The recorded fault's problem, else `otherwise`.
    pub fn or(&self, otherwise: Problem) -> Problem {
        self.get().map_or(otherwise, BodyFault::to_problem)
    }
}

/// A body stream held to [`BodyRules`]; see the module docs.
pub struct GuardedBody<S> {
    inner: S,
    rules: BodyRules,
    /// The upload's pace as its admission sees it (and its preemption).
    pace: Option<(
        Arc<crate::admission::Pace>,
        Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    )>,
    /// The write budget each chunk draws on before it is spooled.
    space: Option<Arc<crate::admission::SpaceWatch>>,
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    window_start: Instant,
    window_bytes: u64,
    pub faults: FaultCell,
}

impl<S> std::fmt::Debug for GuardedBody<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody")
            .field("rules", &self.rules)
            .finish()
    }
}

impl<S> GuardedBody<S> {
    pub fn new(inner: S, rules: BodyRules) -> GuardedBody<S> {
        let now = Instant::now();
        GuardedBody {
            inner,
            rules,
            idle: Box::pin(tokio::time::sleep_until(now + rules.idle)),
            deadline: Box::pin(tokio::time::sleep_until(now + rules.deadline)),
            window_start: now,
            window_bytes: 0,
            faults: FaultCell::default(),
            pace: None,
            space: None,
        }
    }

    /// Cut the body (507) when its next chunk would eat into the storage reserve.
    pub fn with_space(mut self, space: Arc<crate::admission::SpaceWatch>) -> GuardedBody<S> {
        self.space = Some(space);
        self
    }

    /// Report progress to the upload's admission, and end when it preempts the upload.
    pub fn with_pace(mut self, pace: Arc<crate::admission::Pace>) -> GuardedBody<S> {
        let preempted = Box::pin(pace.preempted.clone().cancelled_owned());
        self.pace = Some((pace, preempted));
        self
    }

    /// Count a chunk; a fault when the last window's average was below the minimum rate.
    fn pace(&mut self, len: usize) -> Option<BodyFault> {
        if let Some((pace, _)) = &self.pace {
            pace.received(len);
        }
        if let Some(space) = &self.space {
            if !space.draw(len as u64) {
                return Some(BodyFault::OutOfSpace);
            }
        }
        let now = Instant::now();
        self.idle.as_mut().reset(now + self.rules.idle);
        self.window_bytes += len as u64;
        let elapsed = now.duration_since(self.window_start);
        if self.rules.min_rate == 0 || elapsed < self.rules.window {
            return None;
        }
        let rate = self.window_bytes.saturating_mul(1000) / (elapsed.as_millis().max(1) as u64);
        self.window_start = now;
        self.window_bytes = 0;
        (rate < self.rules.min_rate).then_some(BodyFault::TooSlow {
            rate,
            min: self.rules.min_rate,
            window: self.rules.window,
        })
    }
}

impl<S, E> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyFault>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(fault) = self.faults.get() {
            return Poll::Ready(Some(Err(fault.clone())));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let fault = self.faults.record(BodyFault::Deadline(self.rules.deadline));
            return Poll::Ready(Some(Err(fault)));
        }
        if let Some((_, preempted)) = &mut self.pace {
            if preempted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(self.faults.record(BodyFault::Preempted))));
            }
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.pace(chunk.len()) {
                Some(fault) => Poll::Ready(Some(Err(self.faults.record(fault)))),
                None => Poll::Ready(Some(Ok(chunk))),
            },
            Poll::Ready(Some(Err(e))) => {
                let fault = self.faults.record(BodyFault::Read(e.to_string()));
                Poll::Ready(Some(Err(fault)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let fault = self.faults.record(BodyFault::Idle(self.rules.idle));
                    Poll::Ready(Some(Err(fault)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The routes whose handlers hold their bodies to the rules themselves, with an upload's
/// slot, pace and storage reserve: the uploads (`PUT /v1/uploads/{key}`, `POST /v1/uploads`)
/// and a resumable upload's bytes (`PATCH`, and a creation's with `creation-with-upload`).
fn streams_its_own_body(method: &http::Method, path: &str) -> bool {
    match *method {
        http::Method::PUT => path.starts_with("/v1/uploads/"),
        http::Method::POST => matches!(
            path,
            "/v1/uploads" | "/v1/uploads/" | "/v1/tus" | "/v1/tus/"
        ),
        http::Method::PATCH => path.starts_with("/v1/tus/"),
        _ => false,
    }
}

/// The longest any other request's body may take: they are small (1 MiB at most, JSON and
/// forms), so an upload's 15-minute deadline would only serve a client that trickles them.
const SMALL_BODY_DEADLINE: Duration = Duration::from_secs(60);

/// Every other request's body is held to the same rules (idle, minimum rate, a deadline of
/// its own): without them, a client trickling a byte every few seconds into a session's
/// `/complete` or a JSON route held its connection for ever, and a thousand of them every
/// connection the gateway takes. A body cut by them is answered with the fault's problem
/// (408 `body_timeout` / `body_too_slow`), not the extractor's.
pub async fn guard_small_bodies(
    axum::extract::State(rules): axum::extract::State<BodyRules>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.body().is_end_stream() || streams_its_own_body(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let rules = BodyRules {
        deadline: rules.deadline.min(SMALL_BODY_DEADLINE),
        ..rules
    };
    let (parts, body) = req.into_parts();
    let guarded = GuardedBody::new(body.into_data_stream(), rules);
    let faults = guarded.faults.clone();
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(guarded));
    let res = next.run(req).await;
    match faults.get() {
        Some(fault) if !res.status().is_success() => fault.to_problem().into_response(),
        _ => res,
    }
}

/// A request body that, when dropped before its end, is read out in the background (see
/// [`docgate_core::read_out`] for why), so an early 413/415 reaches the client. The upload's
/// permit and spool are already released by then: the read-out only costs a socket.
pub struct ReadOutOnDrop {
    inner: Option<axum::body::Body>,
    finished: bool,
    limits: ReadOut,
}

impl std::fmt::Debug for ReadOutOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOutOnDrop")
            .field("finished", &self.finished)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ReadOutOnDrop {
    pub fn new(body: axum::body::Body, limits: ReadOut) -> ReadOutOnDrop {
        ReadOutOnDrop {
            inner: Some(body),
            finished: false,
            limits,
        }
    }
}

impl http_body::Body for ReadOutOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for ReadOutOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.finished || body.is_end_stream() || self.limits.max_bytes == 0 {
            return;
        }
        // A body declared larger than the read-out allows is not worth reading: close.
        if body.size_hint().lower() > self.limits.max_bytes {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limits = self.limits;
            runtime.spawn(async move {
                let bytes = read_out(body.into_data_stream(), limits).await;
                tracing::debug!(bytes, "read out a refused request body");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::convert::Infallible;

    fn rules(min_rate: u64) -> BodyRules {
        BodyRules {
            idle: Duration::from_secs(5),
            min_rate,
            window: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }

    fn one_chunk_then(
        rest: impl Stream<Item = Result<Bytes, Infallible>> + Unpin,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
        futures_util::stream::iter(vec![Ok(Bytes::from_static(b"a"))]).chain(rest)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_body_times_out_and_a_finished_one_does_not() {
        let mut s = GuardedBody::new(one_chunk_then(futures_util::stream::pending()), rules(0));
        assert!(matches!(s.next().await, Some(Ok(_))));
        assert!(matches!(s.next().await, Some(Err(BodyFault::Idle(_)))));
        assert!(matches!(s.faults.get(), Some(BodyFault::Idle(_))));

        let mut s = GuardedBody::new(one_chunk_then(futures_util::stream::empty()), rules(0));
        assert!(matches!(s.next().await, Some(Ok(_))));
        assert!(s.next().await.is_none());
        assert!(s.faults.get().is_none());
    }

    /// A byte every 4 s never trips the idle timer, but is far below 1 KiB/s.
    #[tokio::test(start_paused = true)]
    async fn regression_a_trickling_body_is_cut_for_its_rate_not_kept_alive_by_each_byte() {
        let trickle = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((Ok::<_, Infallible>(Bytes::from_static(b"x")), ()))
        });
        let started = Instant::now();
        let mut s = GuardedBody::new(Box::pin(trickle), rules(1024));
        let fault = loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                Some(Err(f)) => break f,
                None => panic!("the trickle never ends"),
            }
        };
        assert!(
            matches!(fault, BodyFault::TooSlow { min: 1024, .. }),
            "{fault:?}"
        );
        assert!(started.elapsed() <= Duration::from_secs(13));
        assert_eq!(fault.to_problem().code, "body_too_slow");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_enough_body_still_ends_at_the_deadline() {
        let steady = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, Infallible>(Bytes::from(vec![0u8; 4096])), ()))
        });
        let mut s = GuardedBody::new(Box::pin(steady), rules(1024));
        let fault = loop {
            if let Some(Err(f)) = s.next().await {
                break f;
            }
        };
        assert_eq!(fault, BodyFault::Deadline(Duration::from_secs(60)));
    }
}
