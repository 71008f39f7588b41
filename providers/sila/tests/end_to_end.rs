//! docgate's Sila client against the Sila emulator: prepare → check → deliver, as the gateway
//! drives it, and every way a delivery can end.

mod common;

use std::collections::BTreeMap;

use axum::{routing::post, Router};
use common::*;
use docgate_core::{
    policy::MULTIPART_OVERHEAD_ALLOWANCE, FieldErrorKind, Fields, Outcome, Prepared, Provider,
    Secret, SecretSource,
};
use docgate_emulator::FaultPlan;
use docgate_sila::{
    client::reference_for,
    config::{SilaConfig, SilaConfigError},
    credentials::{write_keystore, KeystoreError},
    emulator::{
        TEST_APP_HANDLE, TEST_APP_PRIVATE_KEY, TEST_BEARER_TOKEN, TEST_USER_HANDLE,
        TEST_USER_PRIVATE_KEY,
    },
    message::{DataMessage, FileFields, Header, VERSION},
    signing::PrivateKey,
    SilaProvider,
};
use serde_json::{json, Value};

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base_fields() -> Fields {
    fields(&[
        ("user_handle", TEST_USER_HANDLE),
        ("document_type", "id_drivers_license"),
    ])
}

fn delivered(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Delivered {
            reference,
            upstream_status,
            ..
        } => {
            assert_eq!(upstream_status, Some(200));
            reference
        }
        other => panic!("expected Delivered, got {other:?}"),
    }
}

fn rejected(outcome: Outcome) -> docgate_core::Problem {
    match outcome {
        Outcome::Rejected { problem: p, .. } => p,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

async fn run(
    provider: &SilaProvider,
    fields: &Fields,
    docs: &[docgate_core::Document],
    upload_id: &str,
) -> Outcome {
    let prepared = provider.prepare(fields).expect("prepare");
    let metas: Vec<_> = docs.iter().map(|d| d.meta.clone()).collect();
    provider.check(&prepared, &metas).expect("check");
    provider.deliver(&ctx(upload_id), &prepared, docs).await
}

#[tokio::test]
async fn one_document_end_to_end() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("sandbox config works");
    let png = fixture("red1x1.png");
    let mut f = base_fields();
    f.insert("description".into(), "front side".into());
    let upload_id = "7d4f8f0e-2b1c-4d7e-9a55-0c2b3d4e5f60";
    let reference = delivered(
        run(
            &provider,
            &f,
            &[document("front", "My Scan (1).png", &png)],
            upload_id,
        )
        .await,
    );
    let id = reference["document_id"].as_str().expect("one document_id");
    assert_eq!(reference["reference_id"], upload_id);

    let stored = emu.stored();
    assert_eq!(stored.len(), 1);
    let doc = &stored[0];
    assert_eq!(doc.document_id, id);
    assert_eq!(
        doc.label, "file",
        "one document goes out in the single shape"
    );
    assert_eq!(doc.filename, "My_Scan_1");
    assert_eq!(doc.mime_type, "image/png");
    assert_eq!(doc.document_type, "id_drivers_license");
    assert_eq!(doc.description.as_deref(), Some("front side"));
    assert_eq!(doc.auth, "ecdsa");
    assert!(
        doc.request_content_length.is_some(),
        "sent with an exact Content-Length"
    );
    let on_disk =
        std::fs::read(emu.data_dir().join("documents").join(format!("{id}.png"))).expect("stored");
    assert_eq!(on_disk, png);
    emu.stop().await.expect("stop");
}

#[tokio::test]
async fn three_documents_in_one_request_with_per_slot_fields() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let mut f = base_fields();
    f.insert("description.back".into(), "back side".into());
    f.insert("document_type.proof".into(), "doc_utility".into());
    f.insert("name".into(), "Ann's documents".into());
    let docs = [
        document("front", "front.png", &fixture("red1x1.png")),
        document("back", "back.jpg", &tiny_jpeg()),
        document("proof", "bill.pdf", &fixture("tiny.pdf")),
    ];
    let reference = delivered(run(&provider, &f, &docs, "upload-3").await);
    let ids: Vec<&str> = reference["document_id"]
        .as_array()
        .expect("an array of ids")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3);

    let stored = emu.stored();
    let by_label: BTreeMap<&str, _> = stored.iter().map(|d| (d.label.as_str(), d)).collect();
    assert_eq!(
        by_label.keys().copied().collect::<Vec<_>>(),
        ["back", "front", "proof"]
    );
    // Ids come back in the order the documents were sent.
    assert_eq!(
        ids,
        [
            &by_label["front"].document_id,
            &by_label["back"].document_id,
            &by_label["proof"].document_id
        ]
    );
    assert_eq!(by_label["back"].mime_type, "image/jpeg");
    assert_eq!(by_label["back"].description.as_deref(), Some("back side"));
    assert_eq!(by_label["front"].description, None);
    assert_eq!(by_label["proof"].document_type, "doc_utility");
    assert_eq!(by_label["front"].document_type, "id_drivers_license");
    assert!(stored
        .iter()
        .all(|d| d.name.as_deref() == Some("Ann's documents")));
    assert!(stored
        .iter()
        .all(|d| d.reference == reference_for("upload-3")));
}

#[tokio::test]
async fn a_repeated_delivery_carries_the_same_reference() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let docs = [document("front", "a.png", &fixture("red1x1.png"))];
    let prepared = provider.prepare(&base_fields()).expect("prepare");
    for attempt in 1..=2 {
        let mut c = ctx("same-upload");
        c.attempt = attempt;
        delivered(provider.deliver(&c, &prepared, &docs).await);
    }
    let refs: Vec<String> = emu.stored().into_iter().map(|d| d.reference).collect();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0], refs[1]);
}

#[tokio::test]
async fn documents_streamed_from_a_file_spool() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    // A 3 MiB PDF, spooled to disk (threshold 0), so the body really streams from a file.
    let mut pdf = fixture("tiny.pdf");
    pdf.resize(3 * 1024 * 1024, b' ');
    let spool = docgate_core::SpoolDir::new(dir.path().join("spool"), 0).expect("spool dir");
    let mut writer = spool.writer("statement");
    for block in pdf.chunks(100_000) {
        writer
            .write(bytes::Bytes::copy_from_slice(block))
            .await
            .expect("write");
    }
    let spooled = writer.finish().await.expect("finish");
    assert!(!spooled.is_in_memory());
    let mut doc = document("statement", "statement.pdf", &pdf);
    doc.spool = spooled;
    let mut f = base_fields();
    f.insert("document_type".into(), "bank_statement".into());
    delivered(run(&provider, &f, &[doc], "big").await);
    let stored = emu.stored();
    assert_eq!(stored[0].size, pdf.len() as u64);
    assert_eq!(
        stored[0].sha256,
        docgate_core::Digests::of(&pdf, docgate_core::DigestSet::SHA256).sha256_hex()
    );
}

#[tokio::test]
async fn a_png_declared_as_pdf_in_mime_type_is_refused_with_400() {
    // docgate's client always sends the sniffed type; a hand-made request shows the emulator
    // checks the bytes, as real Sila does.
    let (emu, _dir) = start_emulator(|_| {}).await;
    let png = fixture("red1x1.png");
    let message = DataMessage::Single {
        header: Header {
            created: 1_700_000_000,
            app_handle: TEST_APP_HANDLE.into(),
            user_handle: TEST_USER_HANDLE.into(),
            version: VERSION,
            reference: "r-1".into(),
        },
        file: FileFields {
            name: None,
            filename: "red1x1".into(),
            hash: docgate_core::Digests::of(&png, docgate_core::DigestSet::SHA256).sha256_hex(),
            mime_type: "application/pdf".into(),
            document_type: "id_drivers_license".into(),
            identity_type: None,
            description: None,
        },
    };
    let data = message.to_bytes();
    let sign = |k: &str| {
        PrivateKey::from_hex(k)
            .expect("key")
            .sign(&data)
            .expect("sign")
    };
    let (status, body) = signed_upload(
        &emu.url(),
        &data,
        vec![RawFile {
            label: "file",
            content_type: "application/pdf",
            bytes: png,
        }],
        &[
            ("authsignature", sign(TEST_APP_PRIVATE_KEY)),
            ("usersignature", sign(TEST_USER_PRIVATE_KEY)),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "FAILURE");
    assert!(
        body["validation_details"]["mime_type"]
            .as_str()
            .expect("mime_type detail")
            .contains("content is image/png"),
        "{body}"
    );
    assert_eq!(body["reference"], "r-1");
    assert!(emu.stored().is_empty());
}

#[tokio::test]
async fn an_unknown_document_type_comes_back_as_rejected_with_validation_details() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let mut config = emu.sandbox_config();
    // A client that believes in a type Sila does not know (its list is configurable).
    config.document_types.push("id_library_card".into());
    let provider = SilaProvider::new(config).expect("provider");
    let mut f = base_fields();
    f.insert("document_type".into(), "id_library_card".into());
    let problem = rejected(
        run(
            &provider,
            &f,
            &[document("front", "a.png", &fixture("red1x1.png"))],
            "u",
        )
        .await,
    );
    assert_eq!(problem.code, "provider_rejected");
    assert_eq!(problem.extra["upstream_status"], 400);
    assert_eq!(
        problem.extra["validation_details"]["document_type"],
        "Invalid document_type"
    );
    assert!(emu.stored().is_empty());

    // The default client refuses it in prepare, before reading any document: 422.
    let strict = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let p = strict.prepare(&f).expect_err("unknown type");
    assert_eq!(p.status.as_u16(), 422);
    assert_eq!(p.errors[0].field, "document_type");
    assert_eq!(p.errors[0].kind, FieldErrorKind::Invalid);
}

#[tokio::test]
async fn a_wrong_app_key_is_rejected_with_403() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let mut config = emu.sandbox_config();
    config.app_private_key = Some(Secret::new(format!("0x{}", "22".repeat(32))));
    let provider = SilaProvider::new(config).expect("provider");
    let problem = rejected(
        run(
            &provider,
            &base_fields(),
            &[document("f", "a.png", &fixture("red1x1.png"))],
            "u",
        )
        .await,
    );
    assert_eq!(problem.extra["upstream_status"], 403);
    assert!(problem.detail.unwrap_or_default().contains("app signature"));
}

#[tokio::test]
async fn oauth2_with_a_token_file_that_rotates() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let token_file = dir.path().join("sila-token");
    std::fs::write(&token_file, format!("{TEST_BEARER_TOKEN}\n")).expect("token");
    // A token file must be private to its owner (rewrites below keep the mode).
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let config = SilaConfig::oauth2(
        emu.url(),
        TEST_APP_HANDLE,
        SecretSource::File {
            file: token_file.clone(),
        },
    );
    let provider = SilaProvider::new(config).expect("oauth2 provider");
    let docs = [document("f", "a.png", &fixture("red1x1.png"))];
    delivered(run(&provider, &base_fields(), &docs, "o1").await);
    assert_eq!(emu.stored()[0].auth, "oauth2");

    // Regression: a token that expired before its rotation ended the upload `rejected`, its
    // document removed. It is retried, and the next attempt reads the rotated file.
    std::fs::write(&token_file, "a-revoked-token-of-another-length\n").expect("rotate");
    match run(&provider, &base_fields(), &docs, "o2").await {
        Outcome::RetryLater {
            upstream_status: Some(401),
            ..
        } => {}
        other => panic!("a refused bearer token is retried: {other:?}"),
    }
    std::fs::write(&token_file, format!("{TEST_BEARER_TOKEN}\n")).expect("rotate back");
    delivered(run(&provider, &base_fields(), &docs, "o3").await);
}

#[tokio::test]
async fn injected_failures_are_retried_and_then_delivered() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let docs = [document("f", "a.png", &fixture("red1x1.png"))];
    let prepared = provider.prepare(&base_fields()).expect("prepare");
    emu.faults.fail_next(2, 503);
    for _ in 0..2 {
        match provider.deliver(&ctx("f1"), &prepared, &docs).await {
            Outcome::RetryLater {
                upstream_status,
                reason,
                ..
            } => {
                assert_eq!(upstream_status, Some(503));
                assert!(reason.contains("Service unavailable."), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    delivered(provider.deliver(&ctx("f1"), &prepared, &docs).await);

    emu.faults.set(FaultPlan {
        drop_next: 1,
        ..FaultPlan::default()
    });
    assert!(matches!(
        provider.deliver(&ctx("f2"), &prepared, &docs).await,
        Outcome::RetryLater {
            upstream_status: None,
            ..
        }
    ));
    assert_eq!(emu.stored().len(), 1);
}

#[tokio::test]
async fn answers_that_are_not_silas_envelope_and_dead_servers_are_retried() {
    // A proxy in front of Sila answering with HTML.
    let app = Router::new().route(
        "/0.2/documents",
        post(|| async { (http::StatusCode::BAD_GATEWAY, "<html>upstream down</html>") }),
    );
    let proxy = docgate_emulator::serve(app, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let (emu, _dir) = start_emulator(|_| {}).await;
    let mut config = emu.sandbox_config();
    config.base_url = proxy.url();
    let provider = SilaProvider::new(config.clone()).expect("provider");
    let docs = [document("f", "a.png", &fixture("red1x1.png"))];
    match run(&provider, &base_fields(), &docs, "p").await {
        Outcome::RetryLater {
            upstream_status,
            reason,
            ..
        } => {
            assert_eq!(upstream_status, Some(502));
            assert!(reason.contains("upstream down"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let addr = proxy.addr;
    proxy.stop().await.expect("stop");
    config.base_url = format!("http://{addr}");
    config.connect_timeout = std::time::Duration::from_secs(2);
    let provider = SilaProvider::new(config).expect("provider");
    assert!(matches!(
        run(&provider, &base_fields(), &docs, "p").await,
        Outcome::RetryLater {
            upstream_status: None,
            ..
        }
    ));
}

#[tokio::test]
async fn oversized_requests_are_refused_before_anything_is_sent() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    // The gateway's early check on Content-Length: 21 MB is over, 20 MB of documents is not.
    let policy = provider.policy();
    let early = policy
        .precheck_request_length(21_000_000, MULTIPART_OVERHEAD_ALLOWANCE)
        .expect_err("21 MB");
    assert_eq!(early.status.as_u16(), 413);
    assert!(policy
        .precheck_request_length(20_000_000, MULTIPART_OVERHEAD_ALLOWANCE)
        .is_ok());

    // `check` counts framing and metadata exactly: documents that fit alone do not fit in
    // the request.
    let mut config = emu.sandbox_config();
    config.max_request_bytes = 1_000;
    let small = SilaProvider::new(config).expect("provider");
    let mut pdf = fixture("tiny.pdf");
    pdf.resize(600, b' ');
    let prepared = small.prepare(&base_fields()).expect("prepare");
    let doc = document("f", "a.pdf", &pdf);
    let problem = small
        .check(&prepared, std::slice::from_ref(&doc.meta))
        .expect_err("too large");
    assert_eq!(problem.status.as_u16(), 413);
    assert_eq!(problem.code, "payload_too_large");
    let problem = rejected(small.deliver(&ctx("x"), &prepared, &[doc]).await);
    assert_eq!(problem.status.as_u16(), 413);
    assert!(emu.stored().is_empty());
    pdf.truncate(100);
    assert!(small
        .check(&prepared, &[document("f", "a.pdf", &pdf).meta])
        .is_ok());
}

#[tokio::test]
async fn check_refuses_per_slot_fields_for_missing_slots() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let mut f = base_fields();
    f.insert("description.bakc".into(), "typo".into());
    let prepared = provider.prepare(&f).expect("prepare");
    let p = provider
        .check(
            &prepared,
            &[document("back", "b.png", &fixture("red1x1.png")).meta],
        )
        .expect_err("no slot bakc");
    assert_eq!(p.status.as_u16(), 422);
    assert_eq!(p.errors[0].field, "description.bakc");
}

#[tokio::test]
async fn prepare_needs_a_key_for_the_user_in_ecdsa_mode() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let provider = SilaProvider::new(emu.sandbox_config()).expect("provider");
    let f = fields(&[
        ("user_handle", "stranger.silamoney.eth"),
        ("document_type", "id_state"),
    ]);
    let p = provider.prepare(&f).expect_err("no key");
    assert_eq!(p.errors[0].field, "user_handle");
    let prepared =
        Prepared(json!({"user_handle": TEST_USER_HANDLE, "shared": {"document_type": "id_state"}}));
    let docs = [document("f", "a.png", &fixture("red1x1.png"))];
    delivered(
        provider
            .deliver(&ctx("stored-metadata"), &prepared, &docs)
            .await,
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_keystore_others_can_read_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let (emu, dir) = start_emulator(|_| {}).await;
    let path = dir.path().join("keys.json");
    write_keystore(
        &path,
        &BTreeMap::from([(
            TEST_USER_HANDLE.to_string(),
            TEST_USER_PRIVATE_KEY.to_string(),
        )]),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = SilaConfig::ecdsa(
        emu.url(),
        TEST_APP_HANDLE,
        Secret::new(TEST_APP_PRIVATE_KEY),
        &path,
    );
    let err = SilaProvider::new(config).expect_err("refused");
    assert!(
        matches!(
            err,
            SilaConfigError::Keystore(KeystoreError::Permissions { .. })
        ),
        "{err}"
    );
    let shown = err.to_string();
    assert!(shown.contains("chmod 600"), "{shown}");
    assert!(
        !shown.contains(&TEST_USER_PRIVATE_KEY[2..]),
        "no key material in errors"
    );
}

#[test]
fn config_errors_name_keys_not_secrets() {
    let mut config = SilaConfig::ecdsa(
        "https://sandbox.silamoney.com",
        "a",
        Secret::new("not-hex-secret"),
        "/nonexistent",
    );
    let err = SilaProvider::new(config.clone()).expect_err("bad key");
    assert!(matches!(err, SilaConfigError::AppKey(_)));
    assert!(!err.to_string().contains("not-hex-secret"));
    config.base_url = "ftp://example".into();
    assert!(matches!(
        SilaProvider::new(config.clone()),
        Err(SilaConfigError::BaseUrl(_))
    ));
    config.base_url = "https://sandbox.silamoney.com".into();
    config.oauth_token = Some(SecretSource::Env { env: "X".into() });
    assert!(matches!(
        SilaProvider::new(config),
        Err(SilaConfigError::Conflicting {
            key: "oauth_token",
            ..
        })
    ));
}

#[tokio::test]
async fn the_emulator_always_answers_in_silas_envelope() {
    let (emu, _dir) = start_emulator(|o| o.max_request_bytes = 4_096).await;
    let client = reqwest::Client::new();
    let url = emu.url();
    for (method, path, status) in [
        ("GET", "/0.2/nothing", 404),
        ("GET", "/0.2/documents", 405),
        ("POST", "/0.2/getmessage", 405),
    ] {
        let resp = client
            .request(method.parse().expect("method"), format!("{url}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["status"], "FAILURE");
        assert_eq!(body["success"], false);
    }

    // Content-Length over the limit: refused before any body byte is sent.
    let head = format!(
        "POST /0.2/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nauthsignature: {a}\r\nusersignature: {a}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 21000000\r\n\r\n",
        a = "ab".repeat(65)
    );
    let (status, _, body) = raw_exchange(emu.server.addr, head.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(body["status"], "FAILURE");

    // The same without Content-Length (chunked) is counted while streaming.
    let chunk = vec![b'x'; 5_000];
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(
        [
            b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".as_slice(),
            &chunk,
        ]
        .concat(),
    ))]);
    let resp = client
        .post(format!("{url}/0.2/documents"))
        .header("content-type", "multipart/form-data; boundary=b")
        .header("authsignature", "ab".repeat(65))
        .header("usersignature", "ab".repeat(65))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(
        resp.json::<Value>().await.expect("JSON")["status"],
        "FAILURE"
    );

    // Injected failures use the same envelope.
    emu.faults.fail_next(1, 500);
    let resp = client
        .get(format!(
            "{url}/0.2/getmessage?emptymessage=headerTestMessage"
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 500);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(
        body,
        json!({"success": false, "status": "FAILURE", "message": "Internal server error."})
    );
}

#[tokio::test]
async fn document_types_are_paged_at_most_100_per_page() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let list = |query: &'static str| {
        let data = br#"{"header": {"created": 1700000000, "app_handle": "test_app.silamoney.eth", "reference": "q"}}"#;
        let sig = PrivateKey::from_hex(TEST_APP_PRIVATE_KEY)
            .expect("key")
            .sign(data)
            .expect("sign");
        let url = format!("{}/0.2/document_types?{query}", emu.url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("authsignature", sig)
                .body(data.as_slice())
                .send()
                .await
                .expect("send");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, body) = list("page=2&per_page=20").await;
    assert_eq!(status, 200, "{body}");
    let total = body["pagination"]["total_count"].as_u64().expect("total");
    assert_eq!(total, docgate_sila::doctypes::DOCUMENT_TYPES.len() as u64);
    assert_eq!(
        body["document_types"].as_array().expect("array").len() as u64,
        total - 20
    );
    assert_eq!(body["pagination"]["total_pages"], 2);
    assert_eq!(body["reference"], "q");
    let (status, body) = list("per_page=100").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["document_types"].as_array().expect("array").len() as u64,
        total
    );
    let (status, body) = list("per_page=101").await;
    assert_eq!(status, 400);
    assert!(body["validation_details"]["per_page"].is_string(), "{body}");
    let (status, _) = list("page=0").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn clients_that_keep_sending_still_read_the_413() {
    // The refusal is sent before the body is read. Whatever the client still sends is read
    // away by the emulator, because on a real network closing a connection with unread data
    // resets it and can destroy the answer (loopback is more forgiving than that).
    let (emu, _dir) = start_emulator(|o| o.max_request_bytes = 64 * 1024).await;
    let client = reqwest::Client::new();
    let big = vec![b'x'; 3 * 1024 * 1024];
    for chunked in [false, true] {
        let head = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".to_vec();
        let body = [head, big.clone()].concat();
        let mut req = client
            .post(format!("{}/0.2/documents", emu.url()))
            .header("content-type", "multipart/form-data; boundary=b")
            .header("authsignature", "ab".repeat(65))
            .header("usersignature", "ab".repeat(65));
        req = if chunked {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
                .chunks(64 * 1024)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            req.body(body)
        };
        let resp = req.send().await.expect("an answer, not a reset");
        assert_eq!(resp.status().as_u16(), 413, "chunked: {chunked}");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["status"], "FAILURE");
    }
    assert!(emu.stored().is_empty());
    let leftovers = std::fs::read_dir(emu.data_dir().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(leftovers, 0, "refused parts are removed");
}
