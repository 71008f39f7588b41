//! Shared by the integration tests: documents through the real ingest pipeline, an emulator
//! in a temporary directory, and hand-made signed requests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::{convert::Infallible, path::PathBuf, time::Duration};

use bytes::Bytes;
use docgate_core::{ingest, DeliveryContext, Document, Fields, IngestRequest, Provider, SpoolDir};
use docgate_finext::{
    emulator::{self, Emulator, EmulatorOptions},
    FinextProvider,
};
use futures_util::Stream;
use sha2::{Digest, Sha256};

pub const JPEG_HEAD: &[u8] =
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00";

/// A published fixture file (shared with the other providers' tests).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/");
    std::fs::read(format!("{path}{name}")).expect("fixture present")
}

/// Deterministic pseudo-random bytes (xorshift), the same for the same seed.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

/// A "JPEG" the sniffer recognises: a JFIF header, then `len` bytes in total.
pub fn jpeg(len: usize, seed: u64) -> Vec<u8> {
    let mut v = JPEG_HEAD.to_vec();
    v.extend(filler(len.saturating_sub(JPEG_HEAD.len()), seed));
    v.truncate(len);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open stored document");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ISO date `days` before today (UTC).
pub fn days_ago(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(days);
    docgate_finext::DateFormat::YearMonthDay.format(d)
}

pub struct Harness {
    pub emulator: Emulator,
    pub provider: FinextProvider,
    pub spool: SpoolDir,
    _tmp: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut EmulatorOptions)) -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut opts = EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            tmp.path().join("emulator"),
        );
        adjust(&mut opts);
        let emulator = emulator::start(opts).await.expect("emulator starts");
        let provider =
            FinextProvider::new(emulator.sandbox_config()).expect("sandbox config is valid");
        // A small memory threshold: documents go to disk as in production.
        let spool = SpoolDir::new(tmp.path().join("spool"), 64 * 1024).expect("spool");
        Harness {
            emulator,
            provider,
            spool,
            _tmp: tmp,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self._tmp.path().to_owned()
    }

    /// Ingest `data` into `slot` exactly as the gateway would (sniffing, digests, spool).
    pub async fn document(&self, slot: &str, data: Vec<u8>) -> Document {
        let chunks: Vec<Result<Bytes, Infallible>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        self.ingest(slot, futures_util::stream::iter(chunks)).await
    }

    pub async fn ingest<S>(&self, slot: &str, body: S) -> Document
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Unpin,
    {
        let policy = self.provider.policy();
        ingest(
            body,
            IngestRequest {
                slot: slot.into(),
                filename: Some(format!("{slot}.bin")),
                declared_type: None,
                policy,
                max_bytes: policy.max_document_bytes,
                idle_timeout: Duration::from_secs(30),
            },
            &self.spool,
        )
        .await
        .expect("document accepted by the policy")
    }

    pub fn ctx(&self, attempt: u32) -> DeliveryContext {
        DeliveryContext {
            upload_id: "upl_test".into(),
            attempt,
            scratch_dir: self._tmp.path().join("scratch"),
        }
    }
}

/// A signed request body made by hand (not by the provider), for probing the emulator.
pub fn signed(
    username: &str,
    request_id: &str,
    timestamp: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let sign = docgate_finext::sign::sign(
        emulator::SANDBOX_API_KEY,
        username,
        timestamp,
        emulator::SANDBOX_SECRET,
        request_id,
    );
    let mut body = serde_json::json!({
        "api_key": emulator::SANDBOX_API_KEY,
        "request_id": request_id,
        "timestamp": timestamp,
        "username": username,
        "sign": sign,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

/// POST a JSON body to an emulator endpoint with the sandbox authorization; (HTTP status, body).
pub async fn post(url: &str, endpoint: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    post_raw(
        url,
        endpoint,
        emulator::SANDBOX_AUTHORIZATION,
        body.to_string(),
    )
    .await
}

pub async fn post_raw(
    url: &str,
    endpoint: &str,
    authorization: &str,
    body: String,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/account/{endpoint}"))
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("emulator answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}

/// The emulator's `getAddressKycStatus` for `username`, asked with a fresh signed request.
pub async fn kyc_status(url: &str, username: &str) -> u64 {
    let body = signed(
        username,
        &docgate_finext::sign::request_id(),
        &docgate_finext::sign::timestamp_ms(),
        serde_json::json!({}),
    );
    let (status, answer) = post(url, "getAddressKycStatus", &body).await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (200, Some(10200)),
        "{answer}"
    );
    answer["data"]["status"].as_u64().expect("status")
}
