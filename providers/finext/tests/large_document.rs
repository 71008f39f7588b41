//! A 50 MiB document through ingest, the streamed client and the emulator's streamed decoder,
//! with memory bounded and the stored copy byte-identical. Alone in its test binary so the
//! process's peak RSS belongs to this test only.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use docgate_core::{Outcome, Provider};
use sha2::{Digest, Sha256};

const SIZE: usize = 50 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// Chunk `i` of the document: deterministic, regenerated instead of kept.
fn chunk(i: usize) -> Vec<u8> {
    let start = i * CHUNK;
    let len = CHUNK.min(SIZE - start);
    let mut s = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    if i == 0 {
        out[..JPEG_HEAD.len()].copy_from_slice(JPEG_HEAD);
    }
    out
}

fn chunks() -> usize {
    SIZE.div_ceil(CHUNK)
}

/// Peak resident set size of this process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_front_document_is_stored_byte_identical_with_bounded_memory() {
    let h = Harness::start().await;
    let mut expected = Sha256::new();
    for i in 0..chunks() {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());
    let before = peak_rss();

    let body = futures_util::stream::iter(
        (0..chunks()).map(|i| Ok::<_, Infallible>(Bytes::from(chunk(i)))),
    );
    let front = h.ingest("front", body).await;
    assert_eq!(front.meta.size, SIZE as u64);
    assert_eq!(front.meta.media_type, "image/jpeg");
    assert_eq!(front.meta.digests.sha256, expected);

    let fields = fields(&[
        ("kind", "address"),
        ("username", "big_scan_user"),
        ("address_type", "Bank Statement"),
        ("address_issued_by", "Big Bank"),
        ("address_issued_date", &days_ago(1)),
        ("address_language", "English"),
    ]);
    let prepared = h.provider.prepare(&fields).expect("valid metadata");
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &[front]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");

    let after = peak_rss();
    let sub = h.emulator.submissions().pop().expect("stored");
    let stored = &sub.documents[0];
    assert_eq!(stored.size, SIZE as u64);
    assert_eq!(stored.sha256, expected, "the emulator's own digest");
    assert_eq!(
        sha256_file(&stored.path),
        expected,
        "the stored file, read back"
    );

    if let (Some(before), Some(after)) = (before, after) {
        // Buffering the document (50 MiB) or its base64 form (67 MiB) anywhere — ingest, the
        // client's body, the emulator's receiver or decoder — would push the peak past this.
        let growth = after.saturating_sub(before);
        eprintln!(
            "peak RSS {} MiB before, {} MiB after",
            before >> 20,
            after >> 20
        );
        assert!(
            growth < 40 * 1024 * 1024,
            "peak RSS grew by {} MiB",
            growth / (1024 * 1024)
        );
    } else if cfg!(target_os = "linux") {
        panic!("/proc/self/status must be readable on Linux");
    }
}
