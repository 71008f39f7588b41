//! docgate's Taler client against the Taler emulator, over real sockets.

mod common;

use std::io::Read;

use common::*;
use docgate_core::{Outcome, Provider};
use docgate_emulator::FaultPlan;
use docgate_taler::{PaytoHash, TalerConfig, TalerProvider};
use serde_json::Value;

fn provider(config: TalerConfig) -> TalerProvider {
    TalerProvider::new(config).expect("valid config")
}

fn upstream(outcome: &Outcome) -> Option<u16> {
    outcome.upstream_status()
}

#[tokio::test]
async fn a_pdf_is_delivered_once_and_a_repeat_is_a_duplicate() {
    let setup = start().await;
    let client = provider(setup.emulator.sandbox_config());
    let spool = setup.spool();
    let doc = document(&client, &spool, pdf(300_000, 1)).await;
    let prepared = prepared(&client, PAYTO);

    let first = client
        .deliver(&setup.ctx("u1"), &prepared, std::slice::from_ref(&doc))
        .await;
    let Outcome::Delivered {
        reference,
        upstream_status,
        ..
    } = &first
    else {
        panic!("expected Delivered, got {first:?}");
    };
    assert_eq!(*upstream_status, Some(204));
    let sha512 = doc.meta.digests.sha512.clone().expect("sha512");
    let h_body = docgate_taler::crockford::encode(&hex::decode(&sha512).expect("hex"));
    assert_eq!(reference["h_body"], h_body);
    assert_eq!(reference["extern_pub"], setup.emulator.extern_pub());

    let stored = setup.emulator.stored(PAYTO).expect("listing");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].h_body, h_body);
    assert_eq!(stored[0].content_type, "application/pdf");
    assert_eq!(
        std::fs::read(&stored[0].path).expect("stored body"),
        pdf(300_000, 1)
    );

    let again = client.deliver(&setup.ctx("u1"), &prepared, &[doc]).await;
    assert!(matches!(again, Outcome::Duplicate { .. }), "{again:?}");
    assert_eq!(upstream(&again), Some(412));
    assert_eq!(
        setup.emulator.stored(PAYTO).expect("listing").len(),
        1,
        "stored once"
    );
    setup.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn the_same_body_for_another_customer_is_stored_again() {
    let setup = start().await;
    let client = provider(setup.emulator.sandbox_config());
    let spool = setup.spool();
    let doc = document(&client, &spool, PNG.to_vec()).await;
    let other = "payto://iban/GB82WEST12345698765432";
    for payto in [PAYTO, other] {
        let outcome = client
            .deliver(
                &setup.ctx(payto),
                &prepared(&client, payto),
                std::slice::from_ref(&doc),
            )
            .await;
        assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
        let stored = setup.emulator.stored(payto).expect("listing");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].content_type, "image/png");
    }
}

#[tokio::test]
async fn an_unknown_key_is_rejected_with_404_and_taler_s_error_detail() {
    let setup = start().await;
    let mut config = setup.emulator.sandbox_config();
    config.extern_key = docgate_core::Secret::new("11".repeat(32));
    let client = provider(config);
    let doc = document(&client, &setup.spool(), pdf(1000, 2)).await;
    let outcome = client
        .deliver(&setup.ctx("u"), &prepared(&client, PAYTO), &[doc])
        .await;
    let Outcome::Rejected { problem, .. } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(problem.code, "provider_rejected");
    assert_eq!(problem.extra["upstream_status"], 404);
    assert_eq!(
        problem.extra["taler_code"],
        docgate_taler::emulator::PLACEHOLDER_THIRD_PARTY_UNKNOWN
    );
    assert_eq!(
        problem.extra["taler_error"],
        "TALER_EC_EXCHANGE_KYC_IMPORT_3RD_PARTY_UNKNOWN"
    );
    assert!(problem
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("extern key"));
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn a_registered_key_with_the_wrong_scheme_is_rejected_with_403() {
    let setup = start().await;
    let base = setup.emulator.sandbox_config();
    // Same registered key, but a different purpose number or payto-hash reading: the
    // signature cannot verify.
    let mut wrong_purpose = base.clone();
    wrong_purpose.purpose = 1;
    let mut wrong_variant = base.clone();
    wrong_variant.payto_hash = PaytoHash::B;
    for config in [wrong_purpose, wrong_variant] {
        let client = provider(config);
        let doc = document(&client, &setup.spool(), pdf(1000, 3)).await;
        let outcome = client
            .deliver(&setup.ctx("u"), &prepared(&client, PAYTO), &[doc])
            .await;
        let Outcome::Rejected { problem, .. } = outcome else {
            panic!("expected Rejected, got {outcome:?}");
        };
        assert_eq!(problem.extra["upstream_status"], 403);
        assert_eq!(
            problem.extra["taler_error"],
            "TALER_EC_KYC_BULK_SIGNATURE_INVALID"
        );
    }
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn all_three_payto_hash_variants_work_when_both_sides_agree() {
    for variant in [PaytoHash::A, PaytoHash::B, PaytoHash::C] {
        let setup = start_with(|o| o.payto_hash = variant).await;
        let client = provider(setup.emulator.sandbox_config());
        let doc = document(&client, &setup.spool(), pdf(5000, 4)).await;
        let payto = "payto://iban/DE89370400440532013000?receiver-name=Max%20Mustermann";
        let outcome = client
            .deliver(&setup.ctx("u"), &prepared(&client, payto), &[doc])
            .await;
        assert!(
            matches!(outcome, Outcome::Delivered { .. }),
            "{variant}: {outcome:?}"
        );
        assert_eq!(setup.emulator.stored(payto).expect("listing").len(), 1);
    }
}

#[tokio::test]
async fn an_injected_500_is_retry_later_and_the_next_attempt_succeeds() {
    let setup = start().await;
    let client = provider(setup.emulator.sandbox_config());
    let doc = document(&client, &setup.spool(), pdf(200_000, 5)).await;
    let prepared = prepared(&client, PAYTO);
    setup.emulator.faults.fail_next(2, 500);
    for _ in 0..2 {
        let outcome = client
            .deliver(&setup.ctx("u"), &prepared, std::slice::from_ref(&doc))
            .await;
        let Outcome::RetryLater {
            reason,
            upstream_status,
            ..
        } = &outcome
        else {
            panic!("expected RetryLater, got {outcome:?}");
        };
        assert_eq!(*upstream_status, Some(500));
        assert!(reason.contains("code 52"), "{reason}");
    }
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
    let outcome = client.deliver(&setup.ctx("u"), &prepared, &[doc]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    assert_eq!(setup.emulator.faults.injected(), 2);
    assert_eq!(setup.emulator.stored(PAYTO).expect("listing").len(), 1);
}

#[tokio::test]
async fn a_dropped_connection_is_retry_later() {
    let setup = start().await;
    let client = provider(setup.emulator.sandbox_config());
    let doc = document(&client, &setup.spool(), pdf(50_000, 6)).await;
    let prepared = prepared(&client, PAYTO);
    setup.emulator.faults.set(FaultPlan {
        drop_next: 1,
        ..FaultPlan::default()
    });
    let outcome = client
        .deliver(&setup.ctx("u"), &prepared, std::slice::from_ref(&doc))
        .await;
    assert!(matches!(outcome, Outcome::RetryLater { .. }), "{outcome:?}");
    let outcome = client.deliver(&setup.ctx("u"), &prepared, &[doc]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_connection_refused_is_retry_later() {
    let setup = start().await;
    let mut config = setup.emulator.sandbox_config();
    let client_ok = provider(config.clone());
    let doc = document(&client_ok, &setup.spool(), pdf(1000, 7)).await;
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    config.base_url = format!("http://{addr}/");
    let client = provider(config);
    let outcome = client
        .deliver(&setup.ctx("u"), &prepared(&client, PAYTO), &[doc])
        .await;
    let Outcome::RetryLater {
        reason,
        upstream_status,
        ..
    } = &outcome
    else {
        panic!("expected RetryLater, got {outcome:?}");
    };
    assert_eq!(*upstream_status, None);
    assert!(reason.contains("connect"), "{reason}");
}

#[tokio::test]
async fn a_slow_exchange_times_out_into_retry_later() {
    let setup = start().await;
    let mut config = setup.emulator.sandbox_config();
    config.timeout = std::time::Duration::from_secs(1);
    let client = provider(config);
    let doc = document(&client, &setup.spool(), pdf(1000, 8)).await;
    let prepared = prepared(&client, PAYTO);
    setup.emulator.faults.set(FaultPlan {
        delay_ms: 1_500,
        ..FaultPlan::default()
    });
    let outcome = client
        .deliver(&setup.ctx("u"), &prepared, std::slice::from_ref(&doc))
        .await;
    let Outcome::RetryLater { reason, .. } = &outcome else {
        panic!("expected RetryLater, got {outcome:?}");
    };
    assert!(reason.contains("timed out"), "{reason}");
    setup.emulator.faults.set(FaultPlan::default());
    let outcome = client.deliver(&setup.ctx("u"), &prepared, &[doc]).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
}

fn entries_of(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("open stored part");
    let mut zip = zip::ZipArchive::new(file).expect("a stored part is a valid ZIP");
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).expect("entry");
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("inflate");
            (entry.name().to_owned(), data)
        })
        .collect()
}

#[tokio::test]
async fn a_zip_refused_as_too_large_is_split_and_every_part_is_stored() {
    let setup = start_with(|o| o.upload_limit = 1024 * 1024).await;
    let mut config = setup.emulator.sandbox_config();
    config.upload_limit = 16 * 1024 * 1024; // docgate believes the documented limit
    let client = provider(config);
    let entries = vec![
        ("scan-1.pdf", pdf(500 * 1024, 10)),
        ("scan-2.pdf", pdf(500 * 1024, 11)),
        ("photo.png", {
            let mut v = PNG.to_vec();
            v.extend(pdf(500 * 1024, 12));
            v
        }),
    ];
    let zip = zip_of(&entries);
    assert!(
        zip.len() > 1024 * 1024,
        "the ZIP must exceed the exchange's limit"
    );
    let doc = document(&client, &setup.spool(), zip).await;
    assert_eq!(doc.meta.entries.as_ref().map(Vec::len), Some(3));
    let prepared = prepared(&client, PAYTO);
    let ctx = setup.ctx("zip");

    let outcome = client
        .deliver(&ctx, &prepared, std::slice::from_ref(&doc))
        .await;
    let Outcome::Delivered { reference, .. } = &outcome else {
        panic!("expected Delivered, got {outcome:?}");
    };
    assert_eq!(reference["split"], true);
    let parts = reference["parts"].as_array().expect("parts listed");
    assert!(parts.len() >= 2, "{reference}");
    assert!(parts.iter().all(|p| p["status"] == "stored"), "{reference}");
    let listed: Vec<&str> = parts
        .iter()
        .flat_map(|p| p["entries"].as_array().expect("entries").iter())
        .map(|e| e.as_str().expect("name"))
        .collect();
    assert_eq!(listed, ["scan-1.pdf", "scan-2.pdf", "photo.png"]);

    // The exchange holds every part, each a valid ZIP, together exactly the original entries.
    let stored = setup.emulator.stored(PAYTO).expect("listing");
    assert_eq!(stored.len(), parts.len());
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for part in parts {
        let body = stored
            .iter()
            .find(|s| Value::String(s.h_body.clone()) == part["h_body"])
            .expect("every listed part is stored");
        assert_eq!(Value::from(body.size), part["size"]);
        assert!(body.size <= 1024 * 1024);
        assert_eq!(body.content_type, "application/zip");
        got.extend(entries_of(&body.path));
    }
    let want: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    assert_eq!(got, want);

    // Delivering again (a retry after a crash) re-creates identical parts: all duplicates.
    let requests_before = setup.emulator.faults.requests();
    let again = client
        .deliver(&ctx, &prepared, std::slice::from_ref(&doc))
        .await;
    let Outcome::Duplicate {
        reference: again_ref,
        ..
    } = &again
    else {
        panic!("expected Duplicate, got {again:?}");
    };
    assert!(again_ref["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .all(|p| p["status"] == "already_stored"));
    // The split was remembered: no second attempt with the whole ZIP.
    assert_eq!(
        setup.emulator.faults.requests() - requests_before,
        parts.len() as u64
    );
    // A fresh delivery (new scratch directory) reaches the same parts too.
    let fresh = client
        .deliver(&setup.ctx("zip-again"), &prepared, &[doc])
        .await;
    assert!(matches!(fresh, Outcome::Duplicate { .. }), "{fresh:?}");
    assert_eq!(
        setup.emulator.stored(PAYTO).expect("listing").len(),
        parts.len()
    );
}

#[tokio::test]
async fn a_zip_with_an_oversized_entry_is_rejected_with_413() {
    let setup = start_with(|o| o.upload_limit = 1024 * 1024).await;
    let mut config = setup.emulator.sandbox_config();
    config.upload_limit = 16 * 1024 * 1024;
    let client = provider(config);
    let zip = zip_of(&[
        ("small-1.pdf", pdf(10_000, 20)),
        ("huge.pdf", pdf(1200 * 1024, 21)),
        ("small-2.pdf", pdf(10_000, 22)),
    ]);
    let doc = document(&client, &setup.spool(), zip).await;
    let outcome = client
        .deliver(&setup.ctx("zip"), &prepared(&client, PAYTO), &[doc])
        .await;
    let Outcome::Rejected { problem, .. } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(problem.extra["upstream_status"], 413);
    assert_eq!(problem.extra["entry"], "huge.pdf");
    // Nothing of the huge entry reached the store.
    for body in setup.emulator.stored(PAYTO).expect("listing") {
        let names: Vec<String> = entries_of(&body.path).into_iter().map(|e| e.0).collect();
        assert!(!names.contains(&"huge.pdf".to_string()));
    }
}

#[tokio::test]
async fn a_single_entry_zip_or_a_pdf_over_the_limit_is_rejected_without_splitting() {
    let setup = start_with(|o| o.upload_limit = 100 * 1024).await;
    let mut config = setup.emulator.sandbox_config();
    config.upload_limit = 16 * 1024 * 1024;
    let client = provider(config);
    for body in [
        zip_of(&[("only.pdf", pdf(200 * 1024, 30))]),
        pdf(200 * 1024, 31),
    ] {
        let doc = document(&client, &setup.spool(), body).await;
        let before = setup.emulator.faults.requests();
        let outcome = client
            .deliver(&setup.ctx("big"), &prepared(&client, PAYTO), &[doc])
            .await;
        let Outcome::Rejected { problem, .. } = &outcome else {
            panic!("expected Rejected, got {outcome:?}");
        };
        assert_eq!(problem.extra["upstream_status"], 413);
        assert_eq!(problem.extra["taler_code"], 32);
        assert_eq!(
            setup.emulator.faults.requests() - before,
            1,
            "one request, no split"
        );
    }
    assert!(setup.emulator.stored(PAYTO).expect("listing").is_empty());
}

#[tokio::test]
async fn the_store_and_the_sandbox_key_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("emulator");
    let opts = || {
        docgate_taler::emulator::EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            data.clone(),
        )
    };
    let first = docgate_taler::emulator::start(opts()).await.expect("start");
    let pub_before = first.extern_pub().to_owned();
    let client = provider(first.sandbox_config());
    let spool = docgate_core::SpoolDir::new(dir.path().join("spool"), 1024).expect("spool");
    let doc = document(&client, &spool, pdf(20_000, 40)).await;
    let ctx = docgate_core::DeliveryContext {
        upload_id: "r".into(),
        attempt: 1,
        scratch_dir: dir.path().join("scratch"),
    };
    let outcome = client
        .deliver(&ctx, &prepared(&client, PAYTO), std::slice::from_ref(&doc))
        .await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    first.stop().await.expect("stop");

    let second = docgate_taler::emulator::start(opts())
        .await
        .expect("restart");
    assert_eq!(
        second.extern_pub(),
        pub_before,
        "the sandbox key is kept in data_dir"
    );
    let client = provider(second.sandbox_config());
    let outcome = client
        .deliver(&ctx, &prepared(&client, PAYTO), &[doc])
        .await;
    assert!(matches!(outcome, Outcome::Duplicate { .. }), "{outcome:?}");
    assert_eq!(second.stored(PAYTO).expect("listing").len(), 1);
}

#[tokio::test]
async fn sandbox_config_and_banner_describe_a_working_setup() {
    let setup = start().await;
    let config = setup.emulator.sandbox_config();
    assert_eq!(config.base_url, setup.emulator.url());
    assert_eq!(config.purpose, 65535);
    let client = provider(config);
    assert_eq!(client.extern_pub(), setup.emulator.extern_pub());
    let banner = setup.emulator.banner().join("\n");
    assert!(banner.contains(setup.emulator.extern_pub()));
    assert!(banner.contains("/__emulator/faults"));
}
