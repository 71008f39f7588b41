//! A bound on multipart part headers, enforced on the raw body before the parser sees it.
//!
//! The multipart parser buffers a part's header block until it finds its end (`CRLF CRLF`),
//! and the preamble until it finds the first delimiter, with no limit of its own: a client
//! could send a 60 MiB "header" or preamble and have it held in memory. [`PartHeaderGuard`]
//! watches the body as it streams past — finding each boundary delimiter and counting the
//! bytes before the first one and the header bytes after each — and records a fault the
//! moment a preamble or a header block exceeds its limit. The epilogue after the closing
//! delimiter is not held by anyone and is let through. The guard keeps only a few bytes of
//! state between chunks and does not copy the body.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem::Finder;

use crate::body::{BodyFault, FaultCell};

/// Where the scanner is in the multipart framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the first delimiter: looking for it, counting.
    Preamble,
    /// Inside a part's body: looking for the next delimiter.
    Body,
    /// After a delimiter ending at this stream position: looking for the empty line.
    Headers { start: u64 },
    /// After the closing delimiter (`--boundary--`): nothing more to watch.
    Epilogue,
}

/// Watches a multipart body for part header blocks larger than `limit` bytes.
///
/// Positions are absolute offsets in the stream, so the seam between two chunks (where a
/// delimiter may be split) can be scanned with the start of the next chunk without counting
/// any byte twice.
#[derive(Debug)]
pub struct PartHeaderGuard {
    delimiter: Finder<'static>,
    delimiter_len: usize,
    limit: u64,
    mode: Mode,
    /// The last bytes before the next chunk (then the chunk itself, while it is scanned),
    /// and the stream position of their first byte.
    carry: Vec<u8>,
    carry_at: u64,
    /// Everything before this position has been scanned for events.
    resume: u64,
}

/// A part's header block exceeded the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTooLarge {
    pub limit: u64,
}

const END_OF_HEADERS: &[u8] = b"\r\n\r\n";

impl PartHeaderGuard {
    pub fn new(boundary: &str, limit: u64) -> PartHeaderGuard {
        // The first delimiter may start the body without a CRLF before it: scanning as if
        // the body began with one finds it the same way as the others.
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        PartHeaderGuard {
            delimiter_len: delimiter.len(),
            delimiter: Finder::new(&delimiter).into_owned(),
            limit,
            mode: Mode::Preamble,
            carry: b"\r\n".to_vec(),
            carry_at: 0,
            resume: 0,
        }
    }

    /// The longest pattern: how much context a seam needs.
    fn context(&self) -> usize {
        self.delimiter_len.max(END_OF_HEADERS.len())
    }

    /// Look at the next chunk of the body. The chunk is scanned together with the last few
    /// bytes of the previous one (one small copy per chunk, into a reused buffer).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), HeaderTooLarge> {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        let result = self.scan(&window, self.carry_at, self.resume);
        let keep = self.context() - 1;
        let from = window.len().saturating_sub(keep);
        self.carry_at += from as u64;
        window.drain(..from);
        self.carry = window;
        self.resume = result?;
        Ok(())
    }

    /// Run the state machine over `data` (which starts at stream position `at`) from stream
    /// position `from`; returns the position the next scan must start from.
    fn scan(&mut self, data: &[u8], at: u64, from: u64) -> Result<u64, HeaderTooLarge> {
        let end = at + data.len() as u64;
        let mut from = from.max(at);
        while from < end {
            let rest = &data[(from - at) as usize..];
            match self.mode {
                Mode::Epilogue => return Ok(end),
                Mode::Preamble => match self.delimiter.find(rest) {
                    Some(i) => {
                        // Less the CRLF scanning starts with.
                        self.check((from + i as u64).saturating_sub(2))?;
                        from += (i + self.delimiter_len) as u64;
                        self.mode = Mode::Headers { start: from };
                    }
                    None => {
                        self.check(end.saturating_sub(self.delimiter_len as u64 + 1))?;
                        return Ok(from.max(end.saturating_sub(self.delimiter_len as u64 - 1)));
                    }
                },
                Mode::Headers { start } if from == start && rest.len() < 2 => return Ok(from),
                Mode::Headers { start } if from == start && rest.starts_with(b"--") => {
                    self.mode = Mode::Epilogue;
                    return Ok(end);
                }
                Mode::Body => match self.delimiter.find(rest) {
                    Some(i) => {
                        from += (i + self.delimiter_len) as u64;
                        self.mode = Mode::Headers { start: from };
                    }
                    None => return Ok(from.max(end.saturating_sub(self.delimiter_len as u64 - 1))),
                },
                Mode::Headers { start } => match memchr::memmem::find(rest, END_OF_HEADERS) {
                    Some(i) => {
                        self.check(from + i as u64 - start)?;
                        from += (i + END_OF_HEADERS.len()) as u64;
                        self.mode = Mode::Body;
                    }
                    None => {
                        self.check(end - start)?;
                        return Ok(from.max(end.saturating_sub(END_OF_HEADERS.len() as u64 - 1)));
                    }
                },
            }
        }
        Ok(from)
    }

    fn check(&self, header_bytes: u64) -> Result<(), HeaderTooLarge> {
        // The count may include up to three bytes of a CRLF CRLF still arriving.
        if header_bytes > self.limit + 3 {
            Err(HeaderTooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }
}

/// A multipart body stream checked by a [`PartHeaderGuard`]: a header block past the limit
/// ends the stream with [`BodyFault::PartHeaderTooLarge`], recorded in `faults`.
#[derive(Debug)]
pub struct PartHeaderLimited<S> {
    inner: S,
    guard: PartHeaderGuard,
    faults: FaultCell,
}

impl<S> PartHeaderLimited<S> {
    pub fn new(inner: S, guard: PartHeaderGuard, faults: FaultCell) -> PartHeaderLimited<S> {
        PartHeaderLimited {
            inner,
            guard,
            faults,
        }
    }
}

impl<S> Stream for PartHeaderLimited<S>
where
    S: Stream<Item = Result<Bytes, BodyFault>> + Unpin,
{
    type Item = Result<Bytes, BodyFault>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            if let Err(e) = self.guard.feed(chunk) {
                let fault = self
                    .faults
                    .record(BodyFault::PartHeaderTooLarge { limit: e.limit });
                return Poll::Ready(Some(Err(fault)));
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(header_len: usize) -> Vec<u8> {
        let mut b = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: ".to_vec();
        b.extend(std::iter::repeat_n(b'p', header_len));
        b.extend_from_slice(b"\r\n\r\nvalue\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nv\r\n--XyZ--\r\n");
        b
    }

    fn feed_in(chunk: usize, data: &[u8], limit: u64) -> Result<(), HeaderTooLarge> {
        let mut g = PartHeaderGuard::new("XyZ", limit);
        data.chunks(chunk).try_for_each(|c| g.feed(c))
    }

    #[test]
    fn headers_within_the_limit_pass_in_any_chunking() {
        let data = body(100);
        for chunk in [1, 2, 3, 5, 7, 16, 64, 4096] {
            assert_eq!(feed_in(chunk, &data, 256), Ok(()), "chunk {chunk}");
        }
    }

    #[test]
    fn regression_a_huge_part_header_is_refused_in_any_chunking() {
        let data = body(10_000);
        for chunk in [1, 3, 7, 64, 4096, 1 << 20] {
            assert_eq!(
                feed_in(chunk, &data, 8192),
                Err(HeaderTooLarge { limit: 8192 }),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn an_unfinished_header_block_is_cut_as_soon_as_it_passes_the_limit() {
        let mut g = PartHeaderGuard::new("XyZ", 1024);
        g.feed(b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n")
            .expect("fine so far");
        let filler = vec![b'x'; 512];
        assert!(g.feed(&filler).is_ok());
        assert!(g.feed(&filler).is_err());
    }

    #[test]
    fn regression_a_huge_preamble_is_refused_in_any_chunking() {
        let mut data = vec![b'p'; 20_000];
        data.extend(body(10));
        for chunk in [1, 3, 7, 64, 4096, 1 << 20] {
            assert_eq!(
                feed_in(chunk, &data, 8192),
                Err(HeaderTooLarge { limit: 8192 }),
                "chunk {chunk}"
            );
        }
        let mut short = b"This is a multi-part message in MIME format.\r\n".to_vec();
        short.extend(body(10));
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(feed_in(chunk, &short, 8192), Ok(()), "chunk {chunk}");
        }
    }

    #[test]
    fn regression_a_long_epilogue_is_not_taken_for_a_header() {
        let mut data = body(10);
        data.extend(vec![b'e'; 100_000]);
        for chunk in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            assert_eq!(feed_in(chunk, &data, 8192), Ok(()), "chunk {chunk}");
        }
    }

    #[test]
    fn delimiter_like_bytes_inside_a_part_body_do_not_confuse_it() {
        let mut data =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\n".to_vec();
        data.extend(std::iter::repeat_n(b"x--XyZ\r\n\r".as_slice(), 2000).flatten());
        data.extend_from_slice(b"\r\n--XyZ--\r\n");
        for chunk in [1, 9, 4096] {
            // Near-misses (no CRLF right before the dashes) stay part of the part's body.
            assert_eq!(feed_in(chunk, &data, 64), Ok(()), "chunk {chunk}");
        }
    }
}
