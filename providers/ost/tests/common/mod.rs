//! Shared test scaffolding: an emulator on loopback, documents through the real ingest
//! pipeline, and small helpers to read S3 back.

#![allow(dead_code)]

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use docgate_core::{
    ingest, DeliveryContext, Document, IngestError, IngestRequest, Provider, SpoolDir,
};
use docgate_ost::{
    emulator::{self, Emulator, EmulatorOptions},
    OstProvider,
};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/ost");

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

/// An emulator on 127.0.0.1:0 with its data in a fresh temporary directory.
pub async fn start_emulator(
    tweak: impl FnOnce(&mut EmulatorOptions),
) -> (Emulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = EmulatorOptions::new(loopback(), dir.path().to_path_buf());
    tweak(&mut opts);
    let emu = emulator::start(opts).await.expect("emulator starts");
    (emu, dir)
}

pub fn provider(emu: &Emulator) -> OstProvider {
    OstProvider::new(emu.sandbox_config()).expect("sandbox config is valid")
}

/// Deterministic filler (a simple LCG) so bytes differ along the document.
fn filler(seed: u8, len: usize) -> Vec<u8> {
    let mut x: u32 = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

pub fn jpeg(len: usize) -> Vec<u8> {
    let mut v = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00".to_vec();
    v.extend(filler(1, len - v.len()));
    v
}

pub fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    v.extend(filler(2, len - v.len()));
    v
}

pub fn pdf(len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
    v.extend(filler(3, len - v.len()));
    v
}

/// Run `data` through docgate's ingest pipeline with the provider's policy, as the gateway
/// does. `spool` decides memory vs file.
pub async fn ingest_as(
    provider: &OstProvider,
    spool: &SpoolDir,
    slot: &str,
    declared: Option<&str>,
    data: &[u8],
) -> Result<Document, IngestError> {
    let chunks: Vec<Result<Bytes, Infallible>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let policy = provider.policy();
    let req = IngestRequest {
        slot: slot.to_owned(),
        filename: Some(format!("{slot}.bin")),
        declared_type: declared.map(str::to_owned),
        policy,
        max_bytes: policy.max_document_bytes,
        idle_timeout: Duration::from_secs(5),
    };
    ingest(futures_util::stream::iter(chunks), req, spool).await
}

pub fn ctx(dir: &std::path::Path) -> DeliveryContext {
    DeliveryContext {
        upload_id: "test-upload".into(),
        attempt: 1,
        scratch_dir: PathBuf::from(dir),
    }
}

/// Every object file in the emulator's bucket (s3s-fs keeps metadata beside the bucket).
pub fn stored_objects(emu: &Emulator) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&emu.s3_root().join(emu.bucket()), &mut out);
    out.sort();
    out
}

/// A multipart/form-data body for an S3 POST upload: every field, then `file`.
pub fn form_body(fields: &serde_json::Value, content_type: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("----docgate{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    if let Some(map) = fields.as_object() {
        for (name, value) in map {
            let value = value.as_str().unwrap_or_default();
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"doc\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn prepared() -> docgate_core::Prepared {
    docgate_core::Prepared(serde_json::json!({}))
}

/// A signed API client for the emulator (its own credentials).
pub fn ost_api(emu: &Emulator) -> docgate_ost::api::OstApi {
    docgate_ost::api::OstApi::new(
        reqwest::Client::new(),
        &emu.url(),
        emu.api_key(),
        docgate_core::Secret::new(emu.api_secret()),
        Duration::from_secs(10),
    )
}

/// `serde_json::json!` object literal → `Map`.
pub fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Upload `data` for `slot` through a presigned PUT URL; the S3 key.
pub async fn upload(emu: &Emulator, slot: &str, content_type: &str, data: Vec<u8>) -> String {
    let mut files = serde_json::Map::new();
    files.insert(slot.into(), content_type.into());
    let answer = ost_api(emu)
        .get(
            docgate_ost::provider::FOR_PUT,
            object(serde_json::json!({ "files": files })),
        )
        .await
        .expect("for-put");
    let target = &answer["file_upload_put"][slot];
    let status = reqwest::Client::new()
        .put(target["url"].as_str().expect("url"))
        .header(http::header::CONTENT_TYPE, content_type)
        .body(data)
        .send()
        .await
        .expect("PUT")
        .status();
    assert_eq!(status, 200, "PUT to S3");
    target["fields"]["key"].as_str().expect("key").to_owned()
}

/// Every mandatory KYC field, valid, naming the given document keys.
pub fn kyc_details(document_id: &str, selfie: &str) -> serde_json::Map<String, serde_json::Value> {
    object(serde_json::json!({
        "first_name": "Ada", "last_name": "Lovelace", "birthdate": "10/12/1985",
        "country": "india", "nationality": "indian", "document_id_number": "arqpa7659a",
        "document_id_file_path": document_id, "selfie_file_path": selfie,
        "ethereum_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "estimated_participation_amount": "2.5", "street_address": "1 Main St",
        "city": "Pune", "state": "MH", "postal_code": "411001"
    }))
}

/// Upload an ID and a selfie (each 210 KiB, inside OST's range) and submit them for `user`.
pub async fn submit_valid(emu: &Emulator, user: u64) -> serde_json::Value {
    let id = upload(emu, "document_id", "image/jpeg", jpeg(210 * 1024)).await;
    let selfie = upload(emu, "selfie", "image/png", png(210 * 1024)).await;
    ost_api(emu)
        .submit_kyc(user, kyc_details(&id, &selfie))
        .await
        .expect("submitted")
}

/// The refusal an API call got: (status, OST code, internal id, error_data parameters).
pub fn refusal(e: docgate_ost::api::ApiError) -> (u16, String, String, Vec<String>) {
    match e {
        docgate_ost::api::ApiError::Refused { status, err, .. } => (
            status,
            err.code,
            err.internal_id,
            err.error_data.into_iter().map(|d| d.parameter).collect(),
        ),
        other => panic!("not an OST refusal: {other:?}"),
    }
}
