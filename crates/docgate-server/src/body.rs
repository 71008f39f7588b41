//! Request bodies: streams of `Bytes` cut off when the client goes quiet ([`IdleTimeout`]),
//! and bodies that are read out after a refusal so the client gets to see it
//! ([`ReadOutOnDrop`]).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use docgate_core::read_out::{read_out, ReadOut};
use futures_util::Stream;
use http_body::Body as _;
use tokio::time::{Instant, Sleep};

/// Why a body stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body bytes arrived for {0:?}")]
    Idle(Duration),
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// Wraps a body stream: fails with [`BodyError::Idle`] when no chunk arrives within `idle`.
/// The flag tells callers that only see a wrapped error (multer) that this was the cause.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    pub timed_out: Arc<AtomicBool>,
}

impl<S> std::fmt::Debug for IdleTimeout<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("idle", &self.idle)
            .finish()
    }
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e.to_string())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timed_out.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(BodyError::Idle(self.idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_quiet_body_times_out_and_a_chatty_one_does_not() {
        let chunks =
            futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from_static(b"a"))]);
        let mut s = IdleTimeout::new(
            Box::pin(chunks.chain(futures_util::stream::pending())),
            Duration::from_secs(5),
        );
        assert!(matches!(s.next().await, Some(Ok(_))));
        assert!(matches!(s.next().await, Some(Err(BodyError::Idle(_)))));
        assert!(s.timed_out.load(Ordering::Acquire));

        let done = futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from_static(b"a"))]);
        let mut s = IdleTimeout::new(done, Duration::from_secs(5));
        assert!(matches!(s.next().await, Some(Ok(_))));
        assert!(s.next().await.is_none());
    }
}
