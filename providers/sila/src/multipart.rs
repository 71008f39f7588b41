//! The outgoing `multipart/form-data` body, planned before a byte is sent.
//!
//! Sila limits the *request* (20 MB), not each file, so whether an upload fits depends on
//! the framing and the `data` JSON too. Planning the body — boundary, every part header, the
//! data message, each file's size — gives its exact length up front: `check` can refuse an
//! upload that would not fit before anything is sent, and `deliver` can send an exact
//! `Content-Length` while the files stream from the spool, never held in memory.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};

use docgate_core::ByteStream;

/// One file part in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    pub name: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// A planned body: `data` first, then the files in order.
#[derive(Debug, Clone)]
pub struct BodyPlan {
    boundary: String,
    data: Bytes,
    files: Vec<FilePart>,
}

impl BodyPlan {
    /// A fresh random boundary per plan; its length is fixed, so every plan of the same
    /// upload has the same length.
    pub fn new(data: Bytes, files: Vec<FilePart>) -> BodyPlan {
        BodyPlan::with_boundary(
            format!("docgate-sila-{}", uuid::Uuid::new_v4().simple()),
            data,
            files,
        )
    }

    pub fn with_boundary(boundary: String, data: Bytes, files: Vec<FilePart>) -> BodyPlan {
        BodyPlan {
            boundary,
            data,
            files,
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn files(&self) -> &[FilePart] {
        &self.files
    }

    fn data_head(&self) -> String {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n",
            self.boundary
        )
    }

    fn file_head(&self, part: &FilePart) -> String {
        // Part names and filenames are ASCII without quotes or CR/LF (see `naming`), so they
        // need no escaping.
        format!(
            "\r\n--{}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            self.boundary, part.name, part.filename, part.content_type
        )
    }

    fn tail(&self) -> String {
        format!("\r\n--{}--\r\n", self.boundary)
    }

    /// The exact number of bytes [`BodyPlan::stream`] produces.
    pub fn content_length(&self) -> u64 {
        let heads: u64 = self
            .files
            .iter()
            .map(|f| self.file_head(f).len() as u64 + f.size)
            .sum();
        self.data_head().len() as u64 + self.data.len() as u64 + heads + self.tail().len() as u64
    }

    /// The body: framing from memory, each file from its own stream (one per file, in plan
    /// order). A file stream that yields more or fewer bytes than planned fails the body, so
    /// a wrong `Content-Length` can never reach the wire.
    pub fn stream(&self, files: Vec<ByteStream>) -> io::Result<ByteStream> {
        if files.len() != self.files.len() {
            return Err(io::Error::other(format!(
                "{} file streams for {} planned files",
                files.len(),
                self.files.len()
            )));
        }
        let mut pieces: Vec<ByteStream> = Vec::with_capacity(2 * files.len() + 2);
        let head = [self.data_head().into_bytes(), self.data.to_vec()].concat();
        pieces.push(once(Bytes::from(head)));
        for (part, body) in self.files.iter().zip(files) {
            pieces.push(once(Bytes::from(self.file_head(part))));
            pieces.push(Box::pin(Exact {
                inner: body,
                remaining: part.size,
                part: part.name.clone(),
            }));
        }
        pieces.push(once(Bytes::from(self.tail())));
        Ok(Box::pin(stream::iter(pieces).flatten()))
    }
}

fn once(bytes: Bytes) -> ByteStream {
    Box::pin(stream::once(async move { Ok(bytes) }))
}

/// Passes a file stream through, failing if its length differs from the plan.
struct Exact {
    inner: ByteStream,
    remaining: u64,
    part: String,
}

impl Stream for Exact {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                if len > self.remaining {
                    let msg = format!("part `{}` is longer than planned", self.part);
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::other(msg))));
                }
                self.remaining -= len;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) if self.remaining > 0 => {
                let msg = format!(
                    "part `{}` ended {} bytes short of its planned size",
                    self.part, self.remaining
                );
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::other(msg))))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn body(bytes: &'static [u8]) -> ByteStream {
        Box::pin(stream::iter(
            bytes
                .chunks(3)
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        ))
    }

    fn plan() -> BodyPlan {
        BodyPlan::with_boundary(
            "BOUND".into(),
            Bytes::from_static(b"{\"header\":{}}"),
            vec![
                FilePart {
                    name: "front".into(),
                    filename: "a.png".into(),
                    content_type: "image/png".into(),
                    size: 5,
                },
                FilePart {
                    name: "back".into(),
                    filename: "b.pdf".into(),
                    content_type: "application/pdf".into(),
                    size: 4,
                },
            ],
        )
    }

    #[tokio::test]
    async fn the_planned_length_is_the_streamed_length_and_the_layout_is_multipart() {
        let plan = plan();
        let out: Vec<Bytes> = plan
            .stream(vec![body(b"12345"), body(b"abcd")])
            .expect("stream")
            .try_collect()
            .await
            .expect("body");
        let bytes = out.concat();
        assert_eq!(bytes.len() as u64, plan.content_length());
        let expected = "--BOUND\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{\"header\":{}}\r\n\
            --BOUND\r\nContent-Disposition: form-data; name=\"front\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n12345\r\n\
            --BOUND\r\nContent-Disposition: form-data; name=\"back\"; filename=\"b.pdf\"\r\nContent-Type: application/pdf\r\n\r\nabcd\r\n\
            --BOUND--\r\n";
        assert_eq!(String::from_utf8(bytes).expect("ascii"), expected);
        assert_eq!(plan.content_type(), "multipart/form-data; boundary=BOUND");
    }

    #[tokio::test]
    async fn a_file_that_changed_size_fails_the_body() {
        let plan = plan();
        let long: Result<Vec<Bytes>, _> = plan
            .stream(vec![body(b"123456"), body(b"abcd")])
            .expect("stream")
            .try_collect()
            .await;
        assert!(long.is_err());
        let short: Result<Vec<Bytes>, _> = plan
            .stream(vec![body(b"12345"), body(b"abc")])
            .expect("stream")
            .try_collect()
            .await;
        assert!(short.is_err());
        assert!(plan.stream(vec![body(b"12345")]).is_err());
    }

    #[test]
    fn random_boundaries_keep_the_length() {
        let a = BodyPlan::new(Bytes::from_static(b"{}"), plan().files.clone());
        let b = BodyPlan::new(Bytes::from_static(b"{}"), plan().files.clone());
        assert_ne!(a.content_type(), b.content_type());
        assert_eq!(a.content_length(), b.content_length());
    }
}
