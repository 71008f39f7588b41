//! Interop with an implementation docgate did not write: `interop/finext_interop.py`, a Finext
//! client made from the provider's docs with Python's standard library and `requests`.
//!
//! * Python client → docgate's emulator: accepted and refused exactly as documented, stored
//!   documents byte-identical.
//! * docgate's client → Python: the streamed body it sends parses with Python's json module,
//!   its sign verifies with hashlib, and its base64 decodes to the original files.
//!
//! Needs `DOCGATE_INTEROP_PYTHON`: a python with `interop/requirements.txt` installed (the
//! repo's test script creates it). Without it these tests fail on purpose.

mod common;

use std::{path::Path, process::Stdio};

use common::*;
use docgate_core::{Outcome, Provider};
use docgate_finext::{emulator, Endpoint, FinextProvider};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/finext_interop.py");

fn python() -> String {
    std::env::var("DOCGATE_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DOCGATE_INTEROP_PYTHON is not set: point it at a python with \
             providers/finext/interop/requirements.txt installed, e.g.\n  \
             python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r providers/finext/interop/requirements.txt\n  \
             DOCGATE_INTEROP_PYTHON=/tmp/venv/bin/python cargo test -p docgate-finext --test interop"
        )
    })
}

/// Run the script in `mode` with credentials in the environment; the summary it prints last.
async fn run_script(mode: &str, url: &str, docs: &Path, body_file: Option<&Path>) -> Value {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(SCRIPT)
        .arg(mode)
        .env("FINEXT_URL", url)
        .env("FINEXT_API_KEY", emulator::SANDBOX_API_KEY)
        .env("FINEXT_SECRET", emulator::SANDBOX_SECRET)
        .env("FINEXT_AUTHORIZATION", emulator::SANDBOX_AUTHORIZATION)
        .env("FINEXT_DOCS_DIR", docs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(f) = body_file {
        cmd.env("FINEXT_BODY_FILE", f);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the interop script finishes within 2 minutes")
        .expect("the interop python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop script failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).expect("the summary is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_client_is_accepted_and_refused_as_documented() {
    let h = Harness::start().await;
    let docs = h.data_dir().join("py-docs");
    std::fs::create_dir_all(&docs).expect("mkdir");
    let files = [
        ("front.jpg", jpeg(40_000, 21)),
        ("back.png", fixture("sila/red1x1.png")),
        ("passport.pdf", fixture("sila/tiny.pdf")),
    ];
    for (name, data) in &files {
        std::fs::write(docs.join(name), data).expect("write");
    }

    let summary = run_script("client", &h.emulator.url(), &docs, None).await;
    assert_eq!(summary["accepted"], 4);
    for (name, data) in &files {
        assert_eq!(
            summary["sha256"][name],
            sha256_hex(data),
            "python read {name} as written"
        );
    }

    let subs = h.emulator.submissions();
    let endpoints: Vec<Endpoint> = subs.iter().map(|s| s.endpoint).collect();
    assert_eq!(
        endpoints,
        vec![
            Endpoint::AddAddressProof,
            Endpoint::AddIdProof,
            Endpoint::UpdateAddressProof,
            Endpoint::AddAddressProof
        ]
    );
    assert!(subs
        .iter()
        .all(|s| summary["username"] == s.username.as_str()));
    let hash_of = |name: &str| sha256_hex(&files.iter().find(|(n, _)| *n == name).expect("file").1);
    let expect_docs = [
        vec![hash_of("front.jpg"), hash_of("back.png")],
        vec![hash_of("passport.pdf")],
        vec![hash_of("front.jpg")],
        vec![hash_of("front.jpg"), hash_of("back.png")],
    ];
    for (sub, want) in subs.iter().zip(expect_docs) {
        let stored: Vec<String> = sub.documents.iter().map(|d| sha256_file(&d.path)).collect();
        assert_eq!(stored, want, "submission {} stored byte-identical", sub.id);
    }
    assert_eq!(
        kyc_status(
            &h.emulator.url(),
            summary["username"].as_str().expect("user")
        )
        .await,
        1
    );
}

/// Accept one HTTP/1.1 request, stream its body into `dest`, answer Finext's success.
/// Returns the request head (lower-cased).
async fn capture_one(listener: tokio::net::TcpListener, dest: std::path::PathBuf) -> String {
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("head");
        head.push(byte[0]);
        assert!(head.len() < 16 * 1024, "request head too long");
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("docgate's client announces a Content-Length");
    let mut file = tokio::fs::File::create(&dest).await.expect("create");
    let copied = tokio::io::copy(&mut (&mut s).take(len), &mut file)
        .await
        .expect("body");
    assert_eq!(copied, len);
    file.flush().await.expect("flush");
    let answer = br#"{"code":10200,"msg":"ok"}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    s.write_all(response.as_bytes()).await.expect("answer");
    s.write_all(answer).await.expect("answer");
    s.shutdown().await.ok();
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_docgate_streams_is_valid_for_an_independent_reader() {
    let h = Harness::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = h.emulator.sandbox_config();
    config.base_url = format!("http://{}", listener.local_addr().expect("addr"));
    let provider = FinextProvider::new(config).expect("valid");
    let body_file = h.data_dir().join("captured-body.json");
    let capture = tokio::spawn(capture_one(listener, body_file.clone()));

    let expires = docgate_finext::DateFormat::YearMonthDay
        .format(time::OffsetDateTime::now_utc().date() + time::Duration::days(900));
    let prepared = provider
        .prepare(&fields(&[
            ("kind", "id"),
            ("username", "lili111"),
            ("id_type", "driver license"),
            ("id_number", "B072RRE2I55"),
            ("issued_by", "us"),
            ("issued_date", &days_ago(800)),
            ("expiration_date", &expires),
            ("language", "English"),
        ]))
        .expect("valid metadata");
    // Sizes 0, 1 and 2 mod 3 and spool blocks of 256 KiB: base64 carried across blocks.
    let front = jpeg(3 * 262_144 + 1, 31);
    let back = fixture("sila/red1x1.png");
    let docs = vec![
        h.document("front", front.clone()).await,
        h.document("back", back.clone()).await,
    ];
    let outcome = provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let head = capture.await.expect("capture");
    assert!(
        head.starts_with("post /api/v1/account/addidproof http/1.1"),
        "{head}"
    );
    assert!(
        !head.contains("transfer-encoding"),
        "sent with an exact length: {head}"
    );
    assert!(head.contains(&format!(
        "authorization: {}",
        emulator::SANDBOX_AUTHORIZATION.to_ascii_lowercase()
    )));

    let verdict = run_script(
        "verify-body",
        "http://unused",
        &h.data_dir(),
        Some(&body_file),
    )
    .await;
    assert_eq!(
        verdict["documents"]["id_front"]["sha256"],
        sha256_hex(&front)
    );
    assert_eq!(verdict["documents"]["id_front"]["extension"], "jpg");
    assert_eq!(verdict["documents"]["id_back"]["sha256"], sha256_hex(&back));
    assert_eq!(verdict["documents"]["id_back"]["extension"], "png");
    assert_eq!(verdict["fields"]["id_type"], "Driver License");
    assert_eq!(verdict["fields"]["issued_by"], "US");
    assert_eq!(verdict["fields"]["issued_date"], days_ago(800));
    assert_eq!(
        verdict["body_bytes"],
        std::fs::metadata(&body_file).expect("file").len()
    );
}
