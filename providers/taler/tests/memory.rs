//! The emulator streams bodies to disk: a 16 MiB upload in tiny chunks is stored
//! byte-identical while the process's resident memory stays far below the body size.
//! (Its own test binary, so no other test allocates in this process meanwhile.)

mod common;

use bytes::Bytes;
use common::*;
use docgate_taler::{
    crockford,
    signing::{ExternKey, PaytoHash, SigningScheme},
    wire::{HEADER_IF_NOT_MATCH, HEADER_PAYTO, HEADER_SIGNATURE},
};
use sha2::{Digest, Sha512};

const SIZE: usize = 16 * 1024 * 1024;
const CHUNK: usize = 1024;

/// The body, generated chunk by chunk: never held whole, in the test or anywhere else.
fn body_chunks() -> impl Iterator<Item = Bytes> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut sent = 0usize;
    std::iter::from_fn(move || {
        if sent >= SIZE {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        if sent == 0 {
            chunk.extend_from_slice(b"%PDF-1.4\n");
        }
        while chunk.len() < CHUNK {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate(CHUNK.min(SIZE - sent));
        sent += chunk.len();
        Some(Bytes::from(chunk))
    })
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_body_in_1_kib_chunks_is_stored_identically_with_flat_memory() {
    let setup = start().await;
    let key = ExternKey::parse(setup.emulator.sandbox_config().extern_key.expose()).expect("key");
    let mut hasher = Sha512::new();
    for chunk in body_chunks() {
        hasher.update(&chunk);
    }
    let h_body: [u8; 64] = hasher.finalize().into();
    let scheme = SigningScheme {
        purpose: 65535,
        payto_hash: PaytoHash::A,
    };
    let url = format!(
        "{}/kyc-bulk/{}",
        setup.emulator.url(),
        key.public_crockford()
    );

    // Reset the high-water mark (Linux), so the peak measured is this upload's.
    let measurable = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let baseline = status_kib("VmRSS:");

    let stream = futures_util::stream::iter(body_chunks().map(Ok::<_, std::io::Error>));
    let response = reqwest::Client::new()
        .post(url)
        .header(HEADER_SIGNATURE, key.sign(&scheme, &h_body, PAYTO))
        .header(HEADER_PAYTO, PAYTO)
        .header(HEADER_IF_NOT_MATCH, crockford::encode(&h_body))
        .header("Content-Type", "application/pdf")
        .header("Content-Length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 204);

    if let (true, Some(base), Some(peak)) = (measurable, baseline, status_kib("VmHWM:")) {
        let grown_kib = peak.saturating_sub(base);
        eprintln!("peak resident memory grew by {grown_kib} KiB during the upload");
        assert!(
            grown_kib < 8 * 1024,
            "resident memory grew by {grown_kib} KiB for a 16 MiB body"
        );
    }

    let stored = setup.emulator.stored(PAYTO).expect("listing");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].size, SIZE as u64);
    let on_disk = std::fs::read(&stored[0].path).expect("stored body");
    assert_eq!(on_disk.len(), SIZE);
    assert_eq!(<[u8; 64]>::from(Sha512::digest(&on_disk)), h_body);
    let mut expected = Vec::with_capacity(SIZE);
    body_chunks().for_each(|c| expected.extend_from_slice(&c));
    assert!(on_disk == expected, "the store is byte-identical");
}
