//! Request bodies as streams of `Bytes`, cut off when the client goes quiet.

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
use futures_util::Stream;
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
