//! Shared test helpers: an emulator in a temporary directory, documents made by the real
//! ingest pipeline (so digests and media types come from where the gateway gets them), and
//! deterministic test content.
#![allow(dead_code)]

use std::{io::Write, path::PathBuf, time::Duration};

use bytes::Bytes;
use docgate_core::{ingest, DeliveryContext, Document, IngestRequest, Provider, SpoolDir};
use docgate_taler::{
    emulator::{self, Emulator, EmulatorOptions},
    TalerPrepared, TalerProvider,
};

pub const PAYTO: &str = "payto://iban/DE89370400440532013000";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/taler"
    ))
    .join(name)
}

pub struct Setup {
    pub emulator: Emulator,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn spool(&self) -> SpoolDir {
        SpoolDir::new(self.dir.path().join("spool"), 64 * 1024).expect("spool dir")
    }

    pub fn ctx(&self, name: &str) -> DeliveryContext {
        DeliveryContext {
            upload_id: name.into(),
            attempt: 1,
            scratch_dir: self.dir.path().join("scratch").join(name),
        }
    }
}

pub async fn start_with(tune: impl FnOnce(&mut EmulatorOptions)) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = EmulatorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("emulator"),
    );
    tune(&mut opts);
    let emulator = emulator::start(opts).await.expect("emulator starts");
    Setup { emulator, dir }
}

pub async fn start() -> Setup {
    start_with(|_| {}).await
}

/// `%PDF-` followed by pseudo-random filler (incompressible, deterministic per `seed`).
pub fn pdf(len: usize, seed: u64) -> Vec<u8> {
    let mut v = b"%PDF-1.4\n".to_vec();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde";

/// A ZIP of stored (uncompressed) entries.
pub fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start entry");
        w.write_all(data).expect("write entry");
    }
    w.finish().expect("finish zip").into_inner()
}

/// Run `bytes` through docgate's ingest pipeline with the provider's policy.
pub async fn document(provider: &TalerProvider, spool: &SpoolDir, bytes: Vec<u8>) -> Document {
    let policy = provider.policy();
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = bytes
        .chunks(100 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    ingest(
        futures_util::stream::iter(chunks),
        IngestRequest {
            slot: "file".into(),
            filename: Some("document".into()),
            declared_type: None,
            policy,
            max_bytes: policy.max_document_bytes,
            idle_timeout: Duration::from_secs(10),
        },
        spool,
    )
    .await
    .expect("the document passes ingest")
}

pub fn prepared(provider: &TalerProvider, payto: &str) -> docgate_core::Prepared {
    let fields = [("payto".to_string(), payto.to_string())]
        .into_iter()
        .collect();
    let p = provider.prepare(&fields).expect("valid payto");
    assert_eq!(
        p.parse::<TalerPrepared>().expect("parses").payto,
        payto,
        "test paytos are canonical already"
    );
    p
}
