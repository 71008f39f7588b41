//! Shared helpers for the integration tests: emulators on 127.0.0.1:0, documents built the
//! way the gateway builds them, and raw HTTP exchanges for byte-exact replays.

#![allow(dead_code)] // each test file uses its own subset

use std::{net::SocketAddr, path::PathBuf};

use bytes::Bytes;
use docgate_core::{
    media::sniff, DeliveryContext, DigestSet, Digests, Document, DocumentMeta, Spooled,
};
use docgate_sila::{
    emulator::{self, Emulator, EmulatorOptions},
    multipart::{BodyPlan, FilePart},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/sila"
    ))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A minimal JPEG (SOI, JFIF APP0, EOI): enough for every sniffer, and small.
pub fn tiny_jpeg() -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00,
    ];
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

pub async fn start_emulator(
    tweak: impl FnOnce(&mut EmulatorOptions),
) -> (Emulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = EmulatorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("sila-emulator"),
    );
    tweak(&mut opts);
    let emu = emulator::start(opts).await.expect("emulator starts");
    (emu, dir)
}

/// A document as the ingest pipeline would hand it over (sniffed type, SHA-256, spool).
pub fn document(slot: &str, filename: &str, bytes: &[u8]) -> Document {
    Document {
        meta: DocumentMeta {
            slot: slot.into(),
            filename: Some(filename.into()),
            size: bytes.len() as u64,
            media_type: sniff(bytes).expect("sniffable fixture").into(),
            declared_type: None,
            digests: Digests::of(bytes, DigestSet::SHA256).to_hex(),
            entries: None,
        },
        spool: Spooled::from_bytes(Bytes::copy_from_slice(bytes)),
    }
}

pub fn ctx(upload_id: &str) -> DeliveryContext {
    DeliveryContext {
        upload_id: upload_id.into(),
        attempt: 1,
        scratch_dir: std::env::temp_dir(),
    }
}

/// Send raw request bytes and read one response: (status, headers text, JSON body).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

pub async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, String, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .expect("responses carry Content-Length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value =
        serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&buf[head_end..])
            )
        });
    (status, head, body)
}

/// One file for [`signed_upload`].
pub struct RawFile<'a> {
    pub label: &'a str,
    pub content_type: &'a str,
    pub bytes: Vec<u8>,
}

/// POST `/0.2/documents` with a hand-made `data` message and given signature headers —
/// for requests docgate's client would never send.
pub async fn signed_upload(
    base: &str,
    data: &[u8],
    files: Vec<RawFile<'_>>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let parts = files
        .iter()
        .map(|f| FilePart {
            name: f.label.into(),
            filename: f.label.into(),
            content_type: f.content_type.into(),
            size: f.bytes.len() as u64,
        })
        .collect();
    let plan = BodyPlan::new(Bytes::copy_from_slice(data), parts);
    let streams = files
        .iter()
        .map(|f| Spooled::from_bytes(Bytes::from(f.bytes.clone())).stream())
        .collect();
    let mut req = reqwest::Client::new()
        .post(format!("{base}/0.2/documents"))
        .header("content-type", plan.content_type())
        .header("content-length", plan.content_length());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req
        .body(reqwest::Body::wrap_stream(
            plan.stream(streams).expect("plan"),
        ))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON envelope"))
}
