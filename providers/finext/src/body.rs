//! The request body as a stream: JSON text around base64 documents read from the spool.
//!
//! Finext wants each document base64-encoded inside a JSON string. Building that JSON in
//! memory would cost 4/3 of every document (85 MiB for a 64 MiB scan) per upload. Instead a
//! [`BodyPlan`] is a list of segments — literal JSON text, and "the base64 of this spooled
//! document" — whose total length is known before the first byte is sent (JSON text is
//! measured, base64 is 4·⌈n/3⌉). The plan becomes a stream with that exact `Content-Length`,
//! and memory per request is a couple of spool blocks, whatever the document size.
//!
//! The spool records each document's length; if the bytes read back disagree, the stream
//! fails (and says so through [`SpoolFault`]) rather than send a body that no longer matches
//! its announced length or its signature.

use std::{
    io,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use docgate_core::{ByteStream, Spooled};
use futures_util::{stream, Stream, StreamExt};

use crate::base64_stream::{encoded_len, Base64Encoder};

enum Segment {
    Json(Bytes),
    Base64 { spool: Spooled, len: u64 },
}

/// A JSON object whose document fields are streamed from the spool.
pub struct BodyPlan {
    segments: Vec<Segment>,
    content_length: u64,
}

impl std::fmt::Debug for BodyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyPlan")
            .field("segments", &self.segments.len())
            .field("content_length", &self.content_length)
            .finish()
    }
}

/// Builds a [`BodyPlan`] field by field, in wire order.
#[derive(Default)]
pub struct BodyBuilder {
    segments: Vec<Segment>,
    text: String,
    fields: usize,
}

impl std::fmt::Debug for BodyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyBuilder")
            .field("fields", &self.fields)
            .finish()
    }
}

impl BodyBuilder {
    pub fn new() -> BodyBuilder {
        BodyBuilder {
            text: String::from("{"),
            ..BodyBuilder::default()
        }
    }

    fn key(&mut self, name: &str) {
        if self.fields > 0 {
            self.text.push(',');
        }
        self.fields += 1;
        push_json_string(&mut self.text, name);
        self.text.push(':');
    }

    /// A string field.
    pub fn field(mut self, name: &str, value: &str) -> BodyBuilder {
        self.key(name);
        push_json_string(&mut self.text, value);
        self
    }

    /// A string field holding the base64 of a spooled document of `len` bytes.
    pub fn document(mut self, name: &str, spool: Spooled, len: u64) -> BodyBuilder {
        self.key(name);
        self.text.push('"');
        let text = std::mem::take(&mut self.text);
        self.segments.push(Segment::Json(Bytes::from(text)));
        self.segments.push(Segment::Base64 { spool, len });
        self.text.push('"');
        self
    }

    pub fn finish(mut self) -> BodyPlan {
        self.text.push('}');
        let text = std::mem::take(&mut self.text);
        self.segments.push(Segment::Json(Bytes::from(text)));
        let content_length = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Json(b) => b.len() as u64,
                Segment::Base64 { len, .. } => encoded_len(*len),
            })
            .sum();
        BodyPlan {
            segments: self.segments,
            content_length,
        }
    }
}

fn push_json_string(out: &mut String, value: &str) {
    // serde_json's escaping of a &str cannot fail; the fallback is never taken.
    match serde_json::to_string(value) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Set when the spool, not the network, broke a body stream: retrying cannot help then.
#[derive(Debug, Clone, Default)]
pub struct SpoolFault(Arc<Mutex<Option<String>>>);

impl SpoolFault {
    fn record(&self, what: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(what);
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl BodyPlan {
    /// The exact number of bytes [`BodyPlan::into_stream`] yields.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// The body as a stream of chunks; a spool failure ends it with an error.
    pub fn into_stream(
        self,
        fault: SpoolFault,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        stream::iter(self.segments).flat_map(move |segment| match segment {
            Segment::Json(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
            Segment::Base64 { spool, len } => base64_of(spool, len, fault.clone()).boxed(),
        })
    }
}

struct EncodeState {
    blocks: ByteStream,
    encoder: Base64Encoder,
    expected: u64,
    fault: SpoolFault,
}

impl EncodeState {
    fn fail(&self, what: String) -> io::Error {
        self.fault.record(what.clone());
        io::Error::new(io::ErrorKind::InvalidData, what)
    }
}

fn base64_of(
    spool: Spooled,
    expected: u64,
    fault: SpoolFault,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let state = EncodeState {
        blocks: spool.stream(),
        encoder: Base64Encoder::new(),
        expected,
        fault,
    };
    stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        loop {
            match st.blocks.next().await {
                Some(Ok(block)) => {
                    let out = st.encoder.push(&block);
                    if st.encoder.consumed() > st.expected {
                        let err = st.fail(format!(
                            "spooled document is longer than its recorded {} bytes",
                            st.expected
                        ));
                        return Some((Err(err), None));
                    }
                    if !out.is_empty() {
                        return Some((Ok(out), Some(st)));
                    }
                }
                Some(Err(e)) => {
                    let err = st.fail(format!("reading the spooled document failed: {e}"));
                    return Some((Err(err), None));
                }
                None => {
                    if st.encoder.consumed() != st.expected {
                        let err = st.fail(format!(
                            "spooled document has {} bytes, {} recorded",
                            st.encoder.consumed(),
                            st.expected
                        ));
                        return Some((Err(err), None));
                    }
                    return Some((Ok(st.encoder.finish()), None));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::STANDARD, Engine};
    use docgate_core::SpoolDir;

    async fn spooled(dir: &SpoolDir, data: &[u8], pieces: usize) -> Spooled {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut w = dir.writer(format!("doc-{n}"));
        for chunk in data.chunks(pieces.max(1)) {
            w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        w.finish().await.expect("finish")
    }

    async fn collect(plan: BodyPlan) -> (Vec<u8>, u64, usize) {
        let announced = plan.content_length();
        let mut body = Vec::new();
        let mut chunks = 0;
        let mut s = Box::pin(plan.into_stream(SpoolFault::default()));
        while let Some(c) = s.next().await {
            body.extend_from_slice(&c.expect("chunk"));
            chunks += 1;
        }
        (body, announced, chunks)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn streamed_json_parses_and_decodes_to_the_original_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Threshold 0: every document is read back from a file in 256 KiB blocks.
        let disk = SpoolDir::new(tmp.path().join("disk"), 0).expect("spool");
        let memory = SpoolDir::new(tmp.path().join("mem"), 1 << 30).expect("spool");
        let sizes = [
            0usize, 1, 2, 3, 4, 5, 262_143, 262_144, 262_145, 600_001, 600_002,
        ];
        for dir in [&disk, &memory] {
            for &front_len in &sizes {
                let back_len = front_len / 2 + 1;
                let front = data(front_len);
                let back = data(back_len);
                let plan = BodyBuilder::new()
                    .field("api_key", "k")
                    .field("address_issued_by", "Ünïcode \"quoted\" \\ bank\n")
                    .document(
                        "address_proof_front",
                        spooled(dir, &front, 10_000).await,
                        front_len as u64,
                    )
                    .field("address_proof_front_extension", "jpg")
                    .document(
                        "address_proof_back",
                        spooled(dir, &back, 333).await,
                        back_len as u64,
                    )
                    .field("sign", "s")
                    .finish();
                let (body, announced, _) = collect(plan).await;
                assert_eq!(body.len() as u64, announced, "front {front_len}");
                let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
                let decode = |k: &str| {
                    STANDARD
                        .decode(json[k].as_str().expect("string"))
                        .expect("base64")
                };
                assert_eq!(decode("address_proof_front"), front);
                assert_eq!(decode("address_proof_back"), back);
                assert_eq!(json["address_issued_by"], "Ünïcode \"quoted\" \\ bank\n");
                let keys: Vec<&str> = json
                    .as_object()
                    .expect("object")
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(keys.len(), 6);
            }
        }
    }

    #[tokio::test]
    async fn a_large_document_moves_in_blocks_not_in_one_piece() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let disk = SpoolDir::new(tmp.path(), 0).expect("spool");
        let doc = data(3 * 1024 * 1024 + 1);
        let plan = BodyBuilder::new()
            .document(
                "id_front",
                spooled(&disk, &doc, 1 << 20).await,
                doc.len() as u64,
            )
            .finish();
        let announced = plan.content_length();
        let mut s = Box::pin(plan.into_stream(SpoolFault::default()));
        let (mut total, mut largest, mut chunks) = (0usize, 0usize, 0usize);
        while let Some(c) = s.next().await {
            let c = c.expect("chunk");
            total += c.len();
            largest = largest.max(c.len());
            chunks += 1;
        }
        assert_eq!(total as u64, announced);
        assert!(chunks > 10, "{chunks} chunks");
        assert!(
            largest <= docgate_core::spool::BLOCK / 3 * 4 + 4,
            "largest chunk {largest}"
        );
    }

    #[tokio::test]
    async fn a_spool_shorter_than_recorded_fails_the_stream_and_says_why() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("doc");
        std::fs::write(&path, b"abcdef").expect("write");
        // The ledger believes the document has 6 bytes, but the plan was built for 9.
        let spool = Spooled::open_persisted(&path, 6);
        let plan = BodyBuilder::new().document("id_front", spool, 9).finish();
        let fault = SpoolFault::default();
        let mut s = Box::pin(plan.into_stream(fault.clone()));
        let mut failed = false;
        while let Some(c) = s.next().await {
            if c.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(fault
            .get()
            .expect("recorded")
            .contains("6 bytes, 9 recorded"));
    }
}
