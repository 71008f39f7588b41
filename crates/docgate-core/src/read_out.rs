//! Reading out the rest of a request body that was answered before it was read.
//!
//! Refusing early (on the headers, or the moment a limit is crossed) is right, but a server
//! that then closes the connection with the body still arriving makes the kernel answer the
//! unread bytes with a reset, which can destroy the answer before the client reads it: the
//! client reports "connection reset" instead of the reason. Reading the rest out and dropping
//! it, within bounds (like a web server's lingering close), lets the answer arrive and keeps
//! the connection reusable. The gateway, the emulators and the emulated S3 all do this.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::time::Instant;

/// How much of a body is read out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOut {
    /// Stop after this many bytes.
    pub max_bytes: u64,
    /// Stop when the client sends nothing for this long.
    pub idle: Duration,
    /// Stop after this long whatever the client does.
    pub total: Duration,
}

/// Read `chunks` to their end, or until `limits` say stop, dropping what arrives. Returns the
/// number of bytes read.
pub async fn read_out<S, E>(mut chunks: S, limits: ReadOut) -> u64
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let give_up = Instant::now() + limits.total;
    let mut read = 0u64;
    loop {
        let wait_until = give_up.min(Instant::now() + limits.idle);
        match tokio::time::timeout_at(wait_until, chunks.next()).await {
            Ok(Some(Ok(chunk))) => {
                read += chunk.len() as u64;
                if read > limits.max_bytes {
                    return read;
                }
            }
            Ok(None) | Ok(Some(Err(_))) | Err(_) => return read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const LIMITS: ReadOut = ReadOut {
        max_bytes: 10,
        idle: Duration::from_secs(5),
        total: Duration::from_secs(30),
    };

    fn chunks(n: usize) -> Vec<Result<Bytes, Infallible>> {
        (0..n).map(|_| Ok(Bytes::from_static(b"abcd"))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn reads_to_the_end_or_stops_past_the_byte_limit() {
        assert_eq!(
            read_out(futures_util::stream::iter(chunks(2)), LIMITS).await,
            8
        );
        assert_eq!(
            read_out(futures_util::stream::iter(chunks(9)), LIMITS).await,
            12
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_given_up_after_the_idle_time() {
        let started = Instant::now();
        let silent = futures_util::stream::iter(chunks(1)).chain(futures_util::stream::pending());
        assert_eq!(read_out(silent, LIMITS).await, 4);
        assert_eq!(started.elapsed(), LIMITS.idle);
    }
}
