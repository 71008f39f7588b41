//! Test harness: a real gateway on 127.0.0.1:0 wired to the real Taler emulator.
#![allow(dead_code)]

use std::{io::Write, time::Duration};

use docgate_server::{
    config::{DeliverySettings, Limits},
    registry::Registry,
    tenants::{Tenant, Tenants},
    Gateway, Setup,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const PAYTO: &str = "payto://iban/DE89370400440532013000";
pub const ACME: &str = "acme-key";
pub const GLOBEX: &str = "globex-key";
/// A tenant allowed only a provider this gateway does not offer.
pub const RESTRICTED: &str = "restricted-key";

pub struct Harness {
    pub gateway: Gateway,
    pub taler: docgate_taler::emulator::Emulator,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub struct Options {
    pub limits: Limits,
    pub delivery: DeliverySettings,
    pub emulator_limit: Option<u64>,
    /// Tenant `acme`'s notify_url (its secret is `NOTIFY_SECRET`).
    pub notify_url: Option<String>,
}

pub const NOTIFY_SECRET: &str = "notify-secret";

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            delivery: DeliverySettings {
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                poll_interval: Duration::from_millis(100),
                ..DeliverySettings::default()
            },
            emulator_limit: None,
            notify_url: None,
        }
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    /// A harness whose gateway has these limits, the rest as by default.
    pub async fn with_limits(limits: Limits) -> Harness {
        Harness::with(Options {
            limits,
            ..Options::default()
        })
        .await
    }

    pub async fn with(opts: Options) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut eo = docgate_taler::emulator::EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("taler-emulator"),
        );
        if let Some(limit) = opts.emulator_limit {
            eo.upload_limit = limit;
        }
        let taler = docgate_taler::emulator::start(eo)
            .await
            .expect("taler emulator");
        let mut config = taler.sandbox_config();
        config.upload_limit = 16 * 1024 * 1024;
        let mut registry = Registry::default();
        registry.insert(std::sync::Arc::new(
            docgate_taler::TalerProvider::new(config).expect("provider"),
        ));
        let mut tenants = Tenants::default();
        for (key, name, providers) in [
            (ACME, "acme", vec!["taler"]),
            (GLOBEX, "globex", vec!["taler"]),
            (RESTRICTED, "restricted", vec!["sila"]),
        ] {
            let notify = opts
                .notify_url
                .clone()
                .filter(|_| name == "acme")
                .map(|url| docgate_server::tenants::NotifyTarget {
                    url,
                    secret: docgate_core::Secret::new(NOTIFY_SECRET),
                });
            tenants.add(
                &docgate_core::Secret::new(key),
                Tenant {
                    notify,
                    ..Tenant::new(name, providers.into_iter().map(String::from).collect())
                },
            );
        }
        let setup = Setup {
            listen: "127.0.0.1:0".parse().expect("addr"),
            listener: None,
            data_dir: dir.path().join("gateway"),
            ledger_url: "sqlite".into(),
            spool_dir: dir.path().join("gateway").join("spool"),
            limits: opts.limits,
            delivery: opts.delivery,
            tenants,
            registry,
            web: Default::default(),
            spool_encryption: None,
            spool_s3: None,
        };
        let gateway = Gateway::start(setup).await.expect("gateway starts");
        Harness {
            gateway,
            taler,
            client: reqwest::Client::new(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    /// `GET path` as acme: the status and the JSON body.
    pub async fn get_as_acme(&self, path: &str) -> (u16, Value) {
        json(
            self.client
                .get(self.url(path))
                .bearer_auth(ACME)
                .send()
                .await
                .expect("get"),
        )
        .await
    }

    /// The receipt at `location` (acme's), read until it says `delivered`; panics with
    /// `why` if it does not within `within`.
    pub async fn until_delivered(&self, location: &str, within: Duration, why: &str) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, r) = self.get_as_acme(location).await;
            assert_eq!(status, 200);
            if r["status"] == "delivered" {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{location} still {} after {within:?}: {why}",
                r["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /v1/uploads` with provider=taler, the payto, and one document in slot `file`.
    pub async fn upload(
        &self,
        key: &str,
        doc: Vec<u8>,
        filename: &str,
        part_type: Option<&str>,
    ) -> reqwest::Response {
        let mut part = reqwest::multipart::Part::bytes(doc).file_name(filename.to_owned());
        if let Some(t) = part_type {
            part = part.mime_str(t).expect("mime");
        }
        let form = reqwest::multipart::Form::new()
            .text("provider", "taler")
            .text("payto", PAYTO)
            .part("file", part);
        self.client
            .post(self.url("/v1/uploads"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("send")
    }

    /// Bodies the emulator stored for the test payto.
    pub fn stored(&self) -> usize {
        self.taler.stored(PAYTO).expect("stored").len()
    }

    /// Upload directories still in the gateway's spool.
    pub fn spooled_uploads(&self) -> usize {
        std::fs::read_dir(
            self.dir
                .path()
                .join("gateway")
                .join("spool")
                .join("uploads"),
        )
        .map(|d| d.count())
        .unwrap_or(0)
    }

    /// Files left in the gateway's temporary spool (a rejected upload must leave none).
    pub fn spool_temp_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("gateway").join("spool").join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The multipart form of a Taler upload: provider, the test payto, one PDF in slot `file`.
pub fn taler_form(doc: Vec<u8>) -> reqwest::multipart::Form {
    taler_form_for(PAYTO, doc)
}

/// The multipart form of a Taler upload for `payto`.
pub fn taler_form_for(payto: &str, doc: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("provider", "taler")
        .text("payto", payto.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(doc).file_name("d.pdf"),
        )
}

pub async fn json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.expect("json body");
    (status, body)
}

/// A PDF of exactly `len` bytes whose content depends on `seed`.
pub fn pdf(len: usize, seed: u8) -> Vec<u8> {
    let mut v = format!("%PDF-1.7\n% docgate test {seed}\n").into_bytes();
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x & 0xff) as u8);
    }
    v.truncate(len);
    v
}

pub fn exe(len: usize) -> Vec<u8> {
    let mut v = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    v.resize(len, 0);
    v
}

pub fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// Raw deflate of `gib` GiB of zeros, built from one independently compressed 1 MiB segment
/// repeated (each segment starts a fresh non-final block, so the concatenation is valid).
fn deflated_zeros(mib: usize) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let zeros = vec![0u8; 1 << 20];
    let mut segment = Vec::with_capacity(4096);
    c.compress_vec(&zeros, &mut segment, flate2::FlushCompress::Sync)
        .expect("deflate");
    let mut out = Vec::with_capacity(segment.len() * mib + 2);
    for _ in 0..mib {
        out.extend_from_slice(&segment);
    }
    out.extend_from_slice(&[0x03, 0x00]); // an empty final block
    out
}

/// A ZIP bomb built by hand: `entries` entries, each inflating to `actual_mib` MiB of zeros
/// while declaring `declared` bytes. Honest when `declared == actual_mib << 20`.
pub fn zip_bomb(entries: usize, actual_mib: usize, declared: u32) -> Vec<u8> {
    let data = deflated_zeros(actual_mib);
    let crc = {
        let mut h = crc32fast::Hasher::new();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..actual_mib {
            h.update(&zeros);
        }
        h.finalize()
    };
    let mut out = Vec::new();
    let mut central = Vec::new();
    for i in 0..entries {
        let name = format!("scan-{i}.pdf");
        let offset = out.len() as u32;
        let header = |sig: u32, central_record: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central_record {
                h.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&8u16.to_le_bytes()); // deflate
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&declared.to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central_record {
                h.extend_from_slice(&[0u8; 6]); // comment len, disk, internal attrs
                h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(&data);
        central.extend_from_slice(&header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(entries as u16).to_le_bytes());
    out.extend_from_slice(&(entries as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A raw HTTP/1.1 exchange: send `head` (and `body`, if any), read the whole answer.
/// Returns the status code and the body text.
pub async fn raw_exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    if !body.is_empty() {
        s.write_all(body).await.expect("write body");
    }
    read_answer(&mut s).await
}

/// Read one HTTP answer (the connection is closed or the Content-Length is reached).
pub async fn read_answer(s: &mut tokio::net::TcpStream) -> (u16, String) {
    let text = read_raw_answer(s).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One HTTP answer as it came, head and body.
pub async fn read_raw_answer(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
