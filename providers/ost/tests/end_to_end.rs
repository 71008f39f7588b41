//! docgate's client → the emulated OST API → the embedded S3, with real documents through the
//! real ingest pipeline.

mod common;

use std::time::Duration;

use docgate_core::{Outcome, Provider, SpoolDir};
use docgate_ost::{OstConfig, OstProvider};
use serde_json::{json, Value};

use common::*;

/// Read an object back through S3 itself (a presigned GET): its bytes and Content-Type.
async fn fetch(emu: &docgate_ost::emulator::Emulator, key: &str) -> (u16, String, Vec<u8>) {
    let url = emu
        .presigned_get(key, Duration::from_secs(60))
        .await
        .expect("presign GET");
    let response = reqwest::get(url).await.expect("GET object");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_land_in_s3_byte_identical_with_their_content_type() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    // A small threshold puts the larger documents on disk: both spool kinds stream.
    let spool = SpoolDir::new(dir.path().join("spool"), 512 * 1024).expect("spool");
    let id = jpeg(300 * 1024);
    let selfie = png(3 * 1024 * 1024 + 17);
    let residence = pdf(210 * 1024);
    let docs = vec![
        ingest_as(&provider, &spool, "document_id", Some("image/jpg"), &id)
            .await
            .expect("jpeg"),
        ingest_as(&provider, &spool, "selfie", None, &selfie)
            .await
            .expect("png"),
        ingest_as(
            &provider,
            &spool,
            "residence_proof",
            Some("application/pdf"),
            &residence,
        )
        .await
        .expect("pdf"),
    ];
    let metas: Vec<_> = docs.iter().map(|d| d.meta.clone()).collect();
    let prepared = provider
        .prepare(&Default::default())
        .expect("no fields needed");
    provider.check(&prepared, &metas).expect("check");

    let outcome = provider.deliver(&ctx(dir.path()), &prepared, &docs).await;
    let Outcome::Delivered {
        reference,
        upstream_status,
        ..
    } = outcome
    else {
        panic!("not delivered: {outcome:?}");
    };
    assert_eq!(upstream_status, Some(200));
    let keys = reference.as_object().expect("slot → key");
    assert_eq!(keys.len(), 3);
    for (slot, data, media_type, kind) in [
        ("document_id", &id, "image/jpeg", "/i/"),
        ("selfie", &selfie, "image/png", "/i/"),
        ("residence_proof", &residence, "application/pdf", "/d/"),
    ] {
        let key = keys[slot].as_str().expect("key");
        assert!(key.starts_with("4") && key.contains(kind), "{slot}: {key}");
        assert!(docgate_ost::kyc::is_file_key(key), "{key}");
        let on_disk = std::fs::read(emu.object_path(key).expect("path")).expect("stored");
        assert!(on_disk == *data, "{slot}: stored bytes differ");
        let (status, content_type, body) = fetch(&emu, key).await;
        assert_eq!((status, content_type.as_str()), (200, media_type), "{slot}");
        assert!(body == *data, "{slot}: bytes read back through S3 differ");
    }
    assert_eq!(stored_objects(&emu).len(), 3);
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_url_is_refetched_once_within_the_same_delivery() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let docs = vec![
        ingest_as(&provider, &spool, "selfie", None, &jpeg(250 * 1024))
            .await
            .expect("jpeg"),
        ingest_as(&provider, &spool, "document_id", None, &pdf(250 * 1024))
            .await
            .expect("pdf"),
    ];
    emu.expire_next_urls(1);
    let before = emu.faults.requests();
    let outcome = provider.deliver(&ctx(dir.path()), &prepared(), &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    assert_eq!(
        emu.faults.requests() - before,
        2,
        "one for-put, then one refetch"
    );
    // S3 refused the expired URLs: only the refetched keys hold objects.
    assert_eq!(stored_objects(&emu).len(), 2);
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_refused_again_after_the_refetch_reject_the_delivery() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let docs = vec![
        ingest_as(&provider, &spool, "selfie", None, &jpeg(250 * 1024))
            .await
            .expect("doc"),
    ];
    emu.expire_next_urls(2);
    let outcome = provider.deliver(&ctx(dir.path()), &prepared(), &docs).await;
    let Outcome::Rejected { problem, .. } = outcome else {
        panic!("expected a rejection: {outcome:?}");
    };
    assert_eq!(problem.code, "provider_rejected");
    assert_eq!(problem.extra["upstream_status"], 403);
    let detail = problem.detail.unwrap_or_default();
    assert!(
        detail.contains("AccessDenied") && detail.contains("expired"),
        "{detail}"
    );
    assert!(
        !detail.contains("X-Amz-Signature"),
        "no URL in the problem: {detail}"
    );
    assert!(stored_objects(&emu).is_empty());
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_checks_the_bytes_against_the_md5_docgate_computed() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let mut doc = ingest_as(&provider, &spool, "selfie", None, &jpeg(250 * 1024))
        .await
        .expect("doc");
    assert!(doc.meta.digests.md5.is_some(), "the policy asks for MD5");
    // As if the spool had been corrupted after ingest: the bytes no longer match their MD5.
    doc.meta.digests.md5 = Some("00112233445566778899aabbccddeeff".into());
    let outcome = provider
        .deliver(&ctx(dir.path()), &prepared(), &[doc])
        .await;
    let Outcome::Rejected { problem, .. } = outcome else {
        panic!("expected a rejection: {outcome:?}");
    };
    assert_eq!(problem.extra["upstream_status"], 400);
    assert!(problem.detail.unwrap_or_default().contains("BadDigest"));
    assert!(stored_objects(&emu).is_empty(), "S3 kept nothing");
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ost_failures_map_to_retry_or_rejection() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let docs = vec![
        ingest_as(&provider, &spool, "selfie", None, &jpeg(250 * 1024))
            .await
            .expect("doc"),
    ];
    let (context, prep) = (ctx(dir.path()), prepared());
    let deliver = || provider.deliver(&context, &prep, &docs);

    emu.faults.fail_next(1, 503);
    let outcome = deliver().await;
    assert!(
        matches!(
            outcome,
            Outcome::RetryLater {
                upstream_status: Some(503),
                ..
            }
        ),
        "{outcome:?}"
    );
    emu.faults.fail_next(1, 422);
    let outcome = deliver().await;
    let Outcome::Rejected { problem, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(problem.extra["ost_code"], "UNPROCESSABLE_ENTITY");

    // The same delivery, once OST is well again, goes through: deliver is repeatable.
    assert!(matches!(deliver().await, Outcome::Delivered { .. }));

    // A wrong secret is OST's 401 envelope: final, and the secret is nowhere in the problem.
    let mut config = emu.sandbox_config();
    config.api_secret = docgate_core::Secret::new("not-the-secret");
    let wrong = OstProvider::new(config).expect("config");
    let Outcome::Rejected { problem, .. } =
        wrong.deliver(&ctx(dir.path()), &prepared(), &docs).await
    else {
        panic!("expected a rejection");
    };
    assert_eq!(problem.extra["upstream_status"], 401);
    assert_eq!(problem.extra["ost_code"], "UNAUTHORIZED");
    assert!(!problem.to_json().to_string().contains(emu.api_secret()));

    // Nobody listening: retry later.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let gone = OstProvider::new(OstConfig::new(
        format!("http://{addr}"),
        "k",
        docgate_core::Secret::new("s"),
    ))
    .expect("config");
    let outcome = gone.deliver(&ctx(dir.path()), &prepared(), &docs).await;
    assert!(
        matches!(
            outcome,
            Outcome::RetryLater {
                upstream_status: None,
                ..
            }
        ),
        "{outcome:?}"
    );
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bounds_are_enforced_before_anything_is_sent() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let small = ingest_as(&provider, &spool, "selfie", None, &jpeg(100 * 1024))
        .await
        .expect_err("100 KiB is below OST's minimum");
    let p = small.to_problem();
    assert_eq!(
        (p.status.as_u16(), p.code.as_ref()),
        (422, "payload_too_small")
    );
    let big = ingest_as(&provider, &spool, "selfie", None, &pdf(21 * 1024 * 1024))
        .await
        .expect_err("21 MiB is above OST's maximum");
    assert_eq!(big.to_problem().status.as_u16(), 413);
    let gif = ingest_as(
        &provider,
        &spool,
        "selfie",
        None,
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
            .repeat(20_000)
            .as_slice(),
    )
    .await
    .expect_err("gif is not an OST type");
    assert_eq!(gif.to_problem().code, "unsupported_media_type");
    assert_eq!(emu.faults.requests(), 0, "nothing reached OST");
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_rules_no_fields_and_at_least_one_document_per_distinct_slot() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let fields = [("user_id".to_string(), "1".to_string())]
        .into_iter()
        .collect();
    let problem = provider.prepare(&fields).expect_err("no fields");
    assert_eq!(problem.errors[0].field, "user_id");
    let prepared = provider
        .prepare(&Default::default())
        .expect("empty is fine");
    assert_eq!(
        provider.check(&prepared, &[]).expect_err("none").code,
        "invalid_metadata"
    );
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let a = ingest_as(&provider, &spool, "selfie", None, &jpeg(210 * 1024))
        .await
        .expect("doc");
    let twice = vec![a.meta.clone(), a.meta.clone()];
    assert!(provider.check(&prepared, &twice).is_err());
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_kyc_forwards_the_delivered_keys_and_reports_ost_refusals_per_field() {
    let (emu, dir) = start_emulator(|_| {}).await;
    let provider = provider(&emu);
    let spool = SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let docs = vec![
        ingest_as(&provider, &spool, "document_id", None, &jpeg(210 * 1024))
            .await
            .expect("doc"),
        ingest_as(&provider, &spool, "selfie", None, &png(210 * 1024))
            .await
            .expect("doc"),
        ingest_as(
            &provider,
            &spool,
            "investor_proof_file1",
            None,
            &pdf(210 * 1024),
        )
        .await
        .expect("doc"),
    ];
    let Outcome::Delivered { reference, .. } =
        provider.deliver(&ctx(dir.path()), &prepared(), &docs).await
    else {
        panic!("not delivered");
    };
    let mut fields: std::collections::BTreeMap<String, Value> = serde_json::from_value(json!({
        "first_name": "Ada", "last_name": "Lovelace", "birthdate": "10/12/1985",
        "country": "United Kingdom", "nationality": "British", "document_id_number": "AL1815",
        "document_id_file_path": reference["document_id"],
        "selfie_file_path": reference["selfie"],
        "investor_proof_files_path": [reference["investor_proof_file1"]],
        "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
        "estimated_participation_amount": 1.5,
        "street_address": "12 St James's Square", "city": "London", "state": "London",
        "postal_code": "SW1Y 4JH"
    }))
    .expect("fields");
    assert_eq!(docgate_ost::kyc::referenced_keys(&fields).len(), 3);

    let data = provider
        .submit_kyc("11001", &fields)
        .await
        .expect("submitted");
    assert_eq!(data["result_type"], "user_kyc");
    assert_eq!(data["user_kyc"]["user_id"], 11001);
    let record = emu.kyc(11001).expect("recorded");
    assert_eq!(record.details["selfie_file_path"], reference["selfie"]);
    assert_eq!(record.details["estimated_participation_amount"], "1.5");
    let status = provider.kyc_status("11001").await.expect("status");
    assert_eq!(status["user_kyc"]["submission_count"], 1);

    // A key that was never uploaded: OST's 400, each bad parameter listed.
    fields.insert(
        "residence_proof_file_path".into(),
        json!("4/d/0123456789abcdef0123456789abcdef"),
    );
    let problem = provider
        .submit_kyc("11001", &fields)
        .await
        .expect_err("missing file");
    assert_eq!(problem.code, "provider_rejected");
    assert_eq!(problem.extra["upstream_status"], 400);
    assert_eq!(problem.errors.len(), 1);
    assert_eq!(problem.errors[0].field, "residence_proof_file_path");
    fields.remove("residence_proof_file_path");

    // An unknown user: OST's 404.
    let problem = provider
        .submit_kyc("999999", &fields)
        .await
        .expect_err("unknown user");
    assert_eq!(problem.extra["ost_code"], "NOT_FOUND");

    // Bad input is refused here, before a signed call is spent.
    let before = emu.faults.requests();
    fields.insert("birthdate".into(), json!("1815-12-10"));
    fields.insert("favourite_colour".into(), json!("green"));
    let problem = provider
        .submit_kyc("11001", &fields)
        .await
        .expect_err("invalid");
    assert_eq!(
        (problem.status.as_u16(), problem.code.as_ref()),
        (422, "invalid_metadata")
    );
    assert_eq!(problem.errors.len(), 2);
    assert!(provider.submit_kyc("11001 OR 1=1", &fields).await.is_err());
    assert_eq!(emu.faults.requests(), before);
    emu.stop().await.expect("stop");
}
