//! The front door end to end: a real gateway, the real Taler emulator, real HTTP.

mod common;

use std::time::Duration;

use common::*;
use docgate_core::Digests;
use docgate_emulator::FaultPlan;
use docgate_server::config::{DeliverySettings, Limits};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_pdf_is_delivered_with_exact_digests_and_the_same_pdf_again_is_a_duplicate() {
    let h = Harness::start().await;
    let doc = pdf(200_000, 1);
    let (status, receipt) = json(
        h.upload(ACME, doc.clone(), "doc.pdf", Some("application/pdf"))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["status"], "delivered");
    assert_eq!(receipt["attempts"], 1);
    let expected = Digests::of(
        &doc,
        docgate_core::DigestSet {
            sha512: true,
            md5: false,
        },
    )
    .to_hex();
    let d = &receipt["documents"][0];
    assert_eq!(d["sha256"], expected.sha256);
    assert_eq!(d["sha512"], expected.sha512.expect("sha512"));
    assert_eq!(
        (
            d["size"].as_u64(),
            d["media_type"].as_str(),
            d["slot"].as_str()
        ),
        (Some(200_000), Some("application/pdf"), Some("file"))
    );
    assert_eq!(h.stored(), 1);

    let (status, again) = json(h.upload(ACME, doc, "doc.pdf", None).await).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_ne!(
        again["id"], receipt["id"],
        "a new upload, which the provider already had"
    );
    assert_eq!(h.stored(), 1, "stored once");
}

#[tokio::test]
async fn a_raw_put_with_metadata_in_the_query_is_delivered() {
    let h = Harness::start().await;
    let res = h
        .client
        .put(h.url(&format!("/v1/uploads/taler?payto={}", PAYTO)))
        .bearer_auth(ACME)
        .header("content-type", "application/pdf")
        .body(pdf(5000, 2))
        .send()
        .await
        .expect("send");
    let (status, receipt) = json(res).await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["documents"][0]["declared_type"], "application/pdf");
}

#[tokio::test]
async fn part_order_does_not_matter() {
    let h = Harness::start().await;
    let part = reqwest::multipart::Part::bytes(pdf(3000, 3)).file_name("doc.pdf");
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("payto", PAYTO)
        .text("provider", "taler");
    let res = h
        .client
        .post(h.url("/v1/uploads"))
        .bearer_auth(ACME)
        .multipart(form)
        .send()
        .await
        .expect("send");
    let (status, receipt) = json(res).await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(
        receipt["documents"][0]["sha512"].as_str().map(str::len),
        Some(128),
        "digests the provider needs are there"
    );
}

/// 17 MiB declared: refused on the headers alone. The body is never sent, and the answer
/// arrives anyway; the provider sees nothing.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_body_byte() {
    let h = Harness::start().await;
    let len = 17 * 1024 * 1024;
    let head = format!(
        "PUT /v1/uploads/taler?payto={PAYTO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: application/pdf\r\nContent-Length: {len}\r\n\r\n"
    );
    let (status, body) = raw_exchange(h.gateway.addr, &head, b"").await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // Multipart with the provider in the query: same, before the first part.
    let head = format!(
        "POST /v1/uploads?provider=taler HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len}\r\n\r\n"
    );
    let (status, _) = raw_exchange(h.gateway.addr, &head, b"").await;
    assert_eq!(status, 413);

    // Provider named in the body: refused right after that field, before the document part.
    let first_part =
        "--XyZ\r\nContent-Disposition: form-data; name=\"provider\"\r\n\r\ntaler\r\n--XyZ\r\n";
    let head = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len}\r\n\r\n"
    );
    // The tenant's most generous provider is Taler (16 MiB): even this is refused up front.
    let (status, _) = raw_exchange(h.gateway.addr, &head, first_part.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(h.taler.faults.requests(), 0, "nothing reached the provider");
    assert_eq!(h.spool_temp_files(), 0);
}

/// Regression: a client that sends its whole body before reading (as most HTTP clients do)
/// could get "connection reset" or "broken pipe" instead of the refusal, because the gateway
/// closed the connection with the body unread; on a busy machine that was the usual outcome.
/// It now reads the rest out: each client sees the problem, and its connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_refused_bodies_sent_in_full_still_get_their_answer() {
    const CLIENTS: usize = 8;
    let h = std::sync::Arc::new(Harness::start().await);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let h = h.clone();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            // A PNG declared as a PDF: refused (415) from its first bytes, 2 MiB unread.
            let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
            png.extend(std::iter::repeat_n(0u8, 2 << 20));
            for round in 0..4 {
                let res = client
                    .put(h.url(&format!("/v1/uploads/taler?payto={PAYTO}")))
                    .bearer_auth(ACME)
                    .header("Content-Type", "application/pdf")
                    .body(png.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("client {c}, round {round}: {e:?}"));
                let (status, body) = json(res).await;
                assert_eq!(status, 415, "client {c}, round {round}: {body}");
                assert_eq!(body["code"], "media_type_mismatch");
            }
        });
    }
    while let Some(joined) = clients.join_next().await {
        joined.expect("client");
    }
    let (status, r) = json(h.upload(ACME, pdf(3000, 6), "d.pdf", None).await).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        h.taler.faults.requests(),
        1,
        "only the good upload was delivered"
    );
}

/// The same 17 MiB sent chunked: cut with 413 as soon as the limit is crossed.
#[tokio::test]
async fn a_chunked_body_is_cut_at_the_limit() {
    let h = Harness::start().await;
    let doc = pdf(17 * 1024 * 1024, 4);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        doc.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let res = h
        .client
        .put(h.url(&format!("/v1/uploads/taler?payto={PAYTO}")))
        .bearer_auth(ACME)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("the gateway reads the rest out, so the client gets the answer, not a reset");
    let (status, body) = json(res).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    // Multipart, chunked: the same.
    let part = reqwest::multipart::Part::stream(reqwest::Body::from(doc)).file_name("big.pdf");
    let form = reqwest::multipart::Form::new()
        .text("provider", "taler")
        .text("payto", PAYTO)
        .part("file", part);
    let res = h
        .client
        .post(h.url("/v1/uploads"))
        .bearer_auth(ACME)
        .multipart(form)
        .send()
        .await
        .expect("the answer, not a reset");
    let (status, body) = json(res).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(h.taler.faults.requests(), 0, "nothing reached the provider");
    let metrics = metrics_text(&h).await;
    assert!(
        metrics.contains("docgate_rejections_total{code=\"payload_too_large\"} 2"),
        "{metrics}"
    );
    assert_eq!(h.spool_temp_files(), 0);
}

#[tokio::test]
async fn content_length_can_be_required() {
    let h = Harness::with_limits(Limits {
        require_content_length: true,
        ..Limits::default()
    })
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(pdf(1000, 13))];
    let res = h
        .client
        .put(h.url(&format!("/v1/uploads/taler?payto={PAYTO}")))
        .bearer_auth(ACME)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    let (status, body) = json(res).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (411, Some("length_required")),
        "{body}"
    );
    let (status, _) = json(h.upload(ACME, pdf(1000, 13), "d.pdf", None).await).await;
    assert_eq!(status, 201, "with a Content-Length it goes through");
}

#[tokio::test]
async fn an_executable_is_refused_whatever_its_name_and_inside_a_zip() {
    let h = Harness::start().await;
    let (status, body) = json(
        h.upload(ACME, exe(50_000), "invoice.pdf", Some("application/pdf"))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("media_type_mismatch")),
        "{body}"
    );
    let (status, body) = json(h.upload(ACME, exe(50_000), "invoice.pdf", None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{body}"
    );

    let z = zip_of(&[("a.pdf", pdf(10_000, 5)), ("setup.pdf", exe(10_000))]);
    let (status, body) = json(h.upload(ACME, z, "docs.zip", Some("application/zip")).await).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["entry"], "setup.pdf");
    assert_eq!(h.taler.faults.requests(), 0);
}

#[tokio::test]
async fn zip_bombs_are_refused_without_inflating_them_to_memory_or_disk() {
    let h = Harness::start().await;
    // Honest: ten entries of 1 GiB each (10 GiB), ~10 MiB compressed. Refused from the
    // central directory alone.
    let bomb = zip_bomb(10, 1024, 1 << 30);
    assert!(bomb.len() < 16 * 1024 * 1024);
    let (status, body) = json(h.upload(ACME, bomb, "scans.zip", None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("archive_too_large")),
        "{body}"
    );
    // Lying: declares 1 MiB, inflates to 64 MiB. Refused once the first byte past 1 MiB appears.
    let liar = zip_bomb(1, 64, 1 << 20);
    let (status, body) = json(h.upload(ACME, liar, "scan.zip", None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_archive")),
        "{body}"
    );
    assert_eq!(h.spool_temp_files(), 0, "nothing left in the spool");
    assert_eq!(h.taler.faults.requests(), 0);
}

#[tokio::test]
async fn two_provider_failures_are_retried_and_the_receipt_counts_three_attempts() {
    let h = Harness::start().await;
    h.taler.faults.fail_next(2, 500);
    let (status, receipt) = json(h.upload(ACME, pdf(100_000, 6), "doc.pdf", None).await).await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["attempts"], 3);
    assert_eq!(receipt["last_upstream_status"], 204);
    assert_eq!(h.stored(), 1);
}

#[tokio::test]
async fn bad_metadata_and_bad_credentials_get_clear_problems() {
    let h = Harness::start().await;
    // (API key, form fields, expected status, expected code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            ACME,
            vec![("provider", "taler"), ("payto", "not-a-payto")],
            422,
            "invalid_metadata",
        ),
        (ACME, vec![("provider", "taler")], 422, "invalid_metadata"),
        (
            ACME,
            vec![("provider", "taler"), ("payto", PAYTO), ("colour", "blue")],
            422,
            "invalid_metadata",
        ),
        (
            ACME,
            vec![("provider", "nope"), ("payto", PAYTO)],
            422,
            "invalid_metadata",
        ),
        (
            RESTRICTED,
            vec![("provider", "taler"), ("payto", PAYTO)],
            403,
            "forbidden",
        ),
        (
            "wrong-key",
            vec![("provider", "taler"), ("payto", PAYTO)],
            401,
            "unauthorized",
        ),
    ];
    for (key, fields, want_status, want_code) in cases {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in &fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(pdf(1000, 7)).file_name("d.pdf"),
        );
        let res = h
            .client
            .post(h.url("/v1/uploads"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("send");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let (status, body) = json(res).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (want_status, Some(want_code)),
            "{fields:?}: {body}"
        );
    }
    // The bad field is named.
    let form = reqwest::multipart::Form::new()
        .text("provider", "taler")
        .text("payto", "payto://iban/DE00370400440532013000")
        .part(
            "file",
            reqwest::multipart::Part::bytes(pdf(1000, 7)).file_name("d.pdf"),
        );
    let (_, body) = json(
        h.client
            .post(h.url("/v1/uploads"))
            .bearer_auth(ACME)
            .multipart(form)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "payto", "{body}");
    assert_eq!(h.taler.faults.requests(), 0);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_upload_and_a_different_body_conflicts() {
    let h = Harness::start().await;
    let send = |doc: Vec<u8>| {
        let form = taler_form(doc);
        h.client
            .post(h.url("/v1/uploads"))
            .bearer_auth(ACME)
            .header("Idempotency-Key", "order-7")
            .multipart(form)
            .send()
    };
    let (s1, r1) = json(send(pdf(4000, 8)).await.expect("send")).await;
    let res = send(pdf(4000, 8)).await.expect("send");
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let (s2, r2) = json(res).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(r1["id"], r2["id"]);
    let (s3, r3) = json(send(pdf(4000, 9)).await.expect("send")).await;
    assert_eq!(
        (s3, r3["code"].as_str()),
        (409, Some("idempotency_conflict")),
        "{r3}"
    );
    // Keys are per tenant: the same key from another tenant is a new upload (for a customer
    // of its own: the bank account above is acme's).
    let form = taler_form_for("payto://iban/FR1420041010050500013M02606", pdf(4000, 9));
    let res = h
        .client
        .post(h.url("/v1/uploads"))
        .bearer_auth(GLOBEX)
        .header("Idempotency-Key", "order-7")
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    assert_eq!(h.stored(), 1);
    let globex_account = h
        .taler
        .stored("payto://iban/FR1420041010050500013M02606")
        .expect("stored");
    assert_eq!(globex_account.len(), 1);
}

#[tokio::test]
async fn respond_async_answers_202_at_once_and_the_receipt_is_the_tenants_alone() {
    let h = Harness::start().await;
    h.taler.faults.set(FaultPlan {
        delay_ms: 300,
        ..FaultPlan::default()
    });
    let form = taler_form(pdf(4000, 10));
    let res = h
        .client
        .post(h.url("/v1/uploads"))
        .bearer_auth(ACME)
        .header("Prefer", "respond-async")
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["preference-applied"], "respond-async");
    let location = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let (_, receipt) = json(res).await;
    assert_eq!(
        location,
        format!("/v1/uploads/{}", receipt["id"].as_str().expect("id"))
    );
    let final_receipt = h
        .until_delivered(&location, Duration::from_secs(20), "not delivered")
        .await;
    assert_eq!(final_receipt["id"], receipt["id"]);
    let other = h
        .client
        .get(h.url(&location))
        .bearer_auth(GLOBEX)
        .send()
        .await
        .expect("get");
    assert_eq!(
        other.status(),
        404,
        "another tenant cannot see it, or learn it exists"
    );
}

/// The provider is down for a while: uploads made meanwhile answer 202, then all are
/// delivered once it recovers — none lost, none doubled.
#[tokio::test]
async fn during_an_outage_uploads_are_accepted_and_all_delivered_once_it_recovers() {
    let h = Harness::with(Options {
        delivery: DeliverySettings {
            sync_budget: Duration::from_millis(500),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            poll_interval: Duration::from_millis(100),
            ..DeliverySettings::default()
        },
        ..Options::default()
    })
    .await;
    h.taler.faults.fail_next(u32::MAX, 500);
    let mut ids = Vec::new();
    for i in 0..8u8 {
        let (status, r) = json(h.upload(ACME, pdf(3000, 100 + i), "d.pdf", None).await).await;
        assert_eq!(status, 202, "{r}");
        assert_ne!(r["status"], "delivered");
        ids.push(r["id"].as_str().expect("id").to_owned());
    }
    h.taler.faults.set(FaultPlan::default());
    for id in &ids {
        loop {
            let (_, r) = h.get_as_acme(&format!("/v1/uploads/{id}")).await;
            if r["status"] == "delivered" {
                assert!(r["attempts"].as_u64().unwrap_or(0) >= 2, "{r}");
                break;
            }
            assert!(
                ["delivering", "retry_scheduled", "received"]
                    .contains(&r["status"].as_str().unwrap_or("")),
                "{r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(h.stored(), 8, "every upload stored exactly once");
}

/// Regression: a split ZIP's parts (unsealed) stayed in the scratch directory for the whole
/// retention period, and for good when another replica finished the upload or an erasure
/// raced the split: nothing swept the scratch. The orphan sweep removes the scratch of every
/// upload whose documents are gone or that the ledger does not know, and keeps a pending one's.
#[tokio::test]
async fn regression_the_orphan_sweep_removes_scratch_left_by_uploads_that_are_done() {
    let h = Harness::with(Options {
        delivery: DeliverySettings {
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..DeliverySettings::default()
        },
        ..Options::default()
    })
    .await;
    let (status, done) = json(h.upload(ACME, pdf(3000, 1), "d.pdf", None).await).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (201, Some("delivered")),
        "{done}"
    );
    h.taler.faults.fail_next(u32::MAX, 500);
    let (status, pending) = json(h.upload(ACME, pdf(3000, 2), "d.pdf", None).await).await;
    assert_eq!(status, 202, "{pending}");
    let deliverer = &h.gateway.app.deliverer;
    let scratch = |id: &str| deliverer.scratch_dir(id).join("parts");
    let ids = [
        done["id"].as_str().expect("id"),
        pending["id"].as_str().expect("id"),
        "u_no_such_upload",
    ];
    for id in ids {
        std::fs::create_dir_all(scratch(id)).expect("scratch");
        std::fs::write(scratch(id).join("part-1.zip"), b"PK").expect("part");
    }
    deliverer
        .remove_orphans(Duration::ZERO)
        .await
        .expect("sweep");
    assert!(
        !deliverer.scratch_dir(ids[0]).exists(),
        "delivered: removed"
    );
    assert!(scratch(ids[1]).join("part-1.zip").exists(), "pending: kept");
    assert!(!deliverer.scratch_dir(ids[2]).exists(), "unknown: removed");
}

/// Regression: the give-up limits were checked only when an attempt ended with an outcome.
/// Attempts that ended without one — the process killed during them, or crashed by the
/// document itself — left the upload to be claimed again after every restart, for ever.
/// Claimed with its attempts spent, it fails without another.
#[tokio::test]
async fn regression_attempts_that_end_without_an_outcome_are_given_up() {
    let h = Harness::with(Options {
        delivery: DeliverySettings {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..DeliverySettings::default()
        },
        ..Options::default()
    })
    .await;
    h.taler.faults.fail_next(1, 500);
    let (status, r) = json(h.upload(ACME, pdf(3000, 5), "d.pdf", None).await).await;
    assert_eq!(status, 202, "{r}");
    let id = r["id"].as_str().expect("id").to_owned();
    let ledger = &h.gateway.app.ledger;
    // Two more attempts by a process that died in each: claimed (its retry is due in a
    // minute: claimed as if then), started, never ended.
    let later = docgate_server::ledger::now_ms() + 120_000;
    let dead = docgate_server::ledger::Lease {
        owner: "docgate-dead:1".into(),
        until: later + 600_000,
    };
    let claimed = ledger
        .claim_due(&dead, later, 1, &["taler".to_owned()])
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    for _ in 0..2 {
        ledger
            .start_attempt(&id, &dead, later)
            .await
            .expect("attempt")
            .expect("started");
    }
    let rec = ledger.get(&id).await.expect("get").expect("exists");
    assert_eq!(rec.attempts, 3);
    let requests = h.taler.faults.requests();
    h.gateway.app.deliverer.drive(rec, false, Vec::new()).await;
    let (_, r) = h.get_as_acme(&format!("/v1/uploads/{id}")).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["problem"]["code"], "delivery_failed", "{r}");
    assert_eq!(h.taler.faults.requests(), requests, "no fourth attempt");
}

/// What `/metrics` says now.
async fn metrics_text(h: &Harness) -> String {
    h.client
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The line `/metrics` reports for `family` (say `docgate_uploads_in_flight`) reaches
/// `value` within 10 s.
async fn until_metric(h: &Harness, family: &str, value: u64) {
    let want = format!("{family} {value}\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics_text(h).await;
        if m.contains(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{family} never reached {value}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upload whose head and first bytes are sent, the rest held back: it keeps its slot.
async fn hold_an_upload(h: &Harness, body: &[u8]) -> tokio::net::TcpStream {
    let mut held = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/uploads/taler?payto={PAYTO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    held.write_all(head.as_bytes()).await.expect("write");
    held.write_all(&body[..9]).await.expect("write");
    until_metric(h, "docgate_uploads_in_flight", 1).await;
    held
}

#[tokio::test]
async fn past_the_concurrency_cap_uploads_get_503_with_retry_after() {
    let h = Harness::with_limits(Limits {
        max_concurrent_uploads: 1,
        slot_wait: Duration::ZERO,
        // The held upload is slow on purpose: nobody may preempt it.
        min_body_rate: 0,
        ..Limits::default()
    })
    .await;
    let held = hold_an_upload(&h, &pdf(100_000, 10)).await;
    let res = h.upload(ACME, pdf(1000, 11), "d.pdf", None).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let (_, body) = json(res).await;
    assert_eq!(body["code"], "too_many_uploads");
    drop(held);
}

#[tokio::test]
async fn past_the_concurrency_cap_an_upload_waits_in_line_and_is_taken_when_a_slot_frees() {
    let h = Harness::with_limits(Limits {
        max_concurrent_uploads: 1,
        slot_wait: Duration::from_secs(30),
        // The held upload is slow on purpose: nobody may preempt it.
        min_body_rate: 0,
        ..Limits::default()
    })
    .await;
    let held_body = pdf(100_000, 12);
    let mut held = hold_an_upload(&h, &held_body).await;
    let client = h.client.clone();
    let url = h.url("/v1/uploads");
    let waiting = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(ACME)
            .multipart(taler_form(pdf(1000, 13)))
            .send()
            .await
    });
    until_metric(&h, "docgate_uploads_waiting", 1).await;
    // A third finds the line full (as long as the slots: one) and hears 503 at once.
    let full = h.upload(ACME, pdf(1000, 14), "d.pdf", None).await;
    assert_eq!(full.status(), 503);
    assert_eq!(json(full).await.1["code"], "too_many_uploads");
    // The holder finishes; its slot goes to the upload in line.
    held.write_all(&held_body[9..]).await.expect("write");
    let (status, answer) = read_answer(&mut held).await;
    assert_eq!(status, 201, "{answer}");
    let res = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("taken within 20 s")
        .expect("join")
        .expect("answered");
    assert_eq!(res.status(), 201);
    until_metric(&h, "docgate_uploads_waiting", 0).await;
    assert_eq!(h.stored(), 2, "both delivered, the third never accepted");
}

#[tokio::test]
async fn a_client_that_goes_quiet_is_cut_off() {
    let h = Harness::with_limits(Limits {
        body_idle_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // Body stalls after a few bytes: 408.
    let mut s = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/uploads/taler?payto={PAYTO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Length: 100000\r\n\r\n%PDF-1.7\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let (status, body) = read_answer(&mut s).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_timeout"));
    // Headers trickle: the connection is closed without an answer.
    let mut s = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .expect("connect");
    s.write_all(b"PUT /v1/uploads/taler HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (status, _) = read_answer(&mut s).await;
    assert!(
        status == 0 || status == 408,
        "closed after the header timeout (status {status})"
    );
}

/// Regression: only the uploads' bodies were held to the pace rules. A client trickling the
/// body of a JSON route (a session's `/complete`, `POST /v1/upload-sessions`, a provider's
/// route) held its connection for ever — a thousand of them, every connection the gateway
/// takes. Such a body is cut like an upload's, with the same problem.
#[tokio::test]
async fn regression_a_json_body_that_goes_quiet_is_cut_off_like_an_upload() {
    let h = Harness::with_limits(Limits {
        body_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    for path in [
        "/v1/upload-sessions",
        "/v1/upload-sessions/us_unknown/complete",
    ] {
        let mut s = tokio::net::TcpStream::connect(h.gateway.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"provider\""
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let (status, body) = read_answer(&mut s).await;
        assert_eq!(status, 408, "{path}: {body}");
        assert!(body.contains("body_timeout"), "{path}: {body}");
    }
}

/// Regression: a boundary of any length was taken; each search for it costs its length, so a
/// 15 KB boundary and a body sent in 1-byte chunks kept a core busy at a rate the pace rules
/// accept. RFC 2046's 70 characters are the limit, checked before the body is read.
#[tokio::test]
async fn regression_a_boundary_longer_than_rfc_2046_allows_is_refused_before_the_body() {
    let h = Harness::start().await;
    for (len, accepted) in [(70usize, true), (71, false)] {
        let boundary = "b".repeat(len);
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"payto\"\r\n\r\n{PAYTO}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\
             Content-Type: application/pdf\r\n\r\n"
        );
        let mut bytes = body.into_bytes();
        bytes.extend_from_slice(&pdf(2000, 3));
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let res = h
            .client
            .post(h.url("/v1/uploads?provider=taler"))
            .bearer_auth(ACME)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(bytes)
            .send()
            .await
            .expect("send");
        let (status, body) = json(res).await;
        if accepted {
            assert!([201, 202].contains(&status), "{len}: {status} {body}");
        } else {
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("bad_request")),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_finish() {
    let h = Harness::start().await;
    h.taler.faults.set(FaultPlan {
        delay_ms: 500,
        ..FaultPlan::default()
    });
    let client = h.client.clone();
    let url = h.url("/v1/uploads");
    let upload = tokio::spawn(async move {
        let form = taler_form(pdf(5000, 12));
        client
            .post(url)
            .bearer_auth(ACME)
            .multipart(form)
            .send()
            .await
    });
    // Shut down once the emulator is holding the delivery.
    while h.taler.faults.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Harness {
        gateway,
        taler,
        dir,
        ..
    } = h;
    gateway.shutdown().await;
    let res = upload
        .await
        .expect("join")
        .expect("the in-flight upload got its answer");
    assert_eq!(res.status(), 201);
    assert_eq!(taler.stored(PAYTO).expect("stored").len(), 1);
    drop(dir);
}

#[tokio::test]
async fn operational_routes_answer() {
    let h = Harness::start().await;
    let (status, body) = json(h.client.get(h.url("/healthz")).send().await.expect("get")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = json(h.client.get(h.url("/readyz")).send().await.expect("get")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    let (status, body) = h.get_as_acme("/v1/providers").await;
    assert_eq!(status, 200);
    let taler = &body["providers"][0];
    assert_eq!(taler["name"], "taler");
    assert!(
        taler["fields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "payto")),
        "{taler}"
    );
    assert!(taler["policy"]["accepted"]
        .as_array()
        .is_some_and(|a| a.contains(&Value::from("application/pdf"))));
    let res = h
        .client
        .get(h.url("/v1/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

/// The final receipt reaches the tenant's notify_url, signed, even when the tenant's endpoint
/// fails at first.
#[tokio::test]
async fn the_tenant_is_notified_of_the_final_receipt_with_a_signature() {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = {
        let seen = seen.clone();
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                let calls = calls.clone();
                async move {
                    // The tenant's endpoint is down for the first call.
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    seen.lock().expect("lock").push((
                        header("docgate-signature"),
                        header("docgate-upload-id"),
                        body.to_vec(),
                    ));
                    http::StatusCode::OK
                }
            }),
        )
    };
    let hook = docgate_emulator::serve(app, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("hook server");
    let h = Harness::with(Options {
        notify_url: Some(format!("{}/hook", hook.url())),
        ..Options::default()
    })
    .await;
    let (status, receipt) = json(h.upload(ACME, pdf(3000, 21), "d.pdf", None).await).await;
    assert_eq!(status, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (signature, upload_id, body) = loop {
        if let Some(first) = seen.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(upload_id, receipt["id"].as_str().expect("id"));
    let sent: Value = serde_json::from_slice(&body).expect("json receipt");
    assert_eq!(
        (sent["id"].clone(), sent["status"].as_str()),
        (receipt["id"].clone(), Some("delivered"))
    );
    // Recompute the signature as a tenant would.
    let t: i64 = signature
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(
        signature,
        docgate_server::delivery::notify::signature(NOTIFY_SECRET, t, &body)
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "retried after the failure"
    );
}

/// Uploads that found every delivery slot busy waited for the worker's next poll (500 ms by
/// default; at 32 concurrent small uploads the slowest took over a second), because a slot
/// given back woke nobody. Now the worker claims them as soon as a slot is free: with one
/// slot and a poll a minute apart, four uploads are all delivered within seconds.
#[tokio::test]
async fn regression_uploads_queued_behind_a_busy_slot_are_delivered_when_it_frees() {
    let h = Harness::with(Options {
        delivery: DeliverySettings {
            worker_concurrency: 1,
            poll_interval: Duration::from_secs(60),
            ..DeliverySettings::default()
        },
        ..Options::default()
    })
    .await;
    // Each delivery takes a while, so the later uploads find the one slot taken.
    h.taler.faults.set(FaultPlan {
        delay_ms: 200,
        ..FaultPlan::default()
    });
    let mut locations = Vec::new();
    for i in 0..4u8 {
        let res = h
            .client
            .post(h.url("/v1/uploads"))
            .bearer_auth(ACME)
            .header("Prefer", "respond-async")
            .multipart(taler_form(pdf(3000, 150 + i)))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 202);
        locations.push(
            res.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned(),
        );
    }
    // One deadline for all four (the later ones have had the time the earlier ones took).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for location in &locations {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        h.until_delivered(location, left, "queued uploads wait for the next poll")
            .await;
    }
    assert_eq!(h.stored(), 4);
}

#[tokio::test]
async fn regression_an_idle_http2_connection_is_closed_after_the_header_timeout() {
    // An HTTP/2 connection that opens no stream (and would answer the keep-alive pings) held
    // its connection slot for ever: 1024 of them locked every other client out.
    let (_h, mut s) = connected_with_a_short_idle_period().await;
    // The client preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let frames = read_until_closed(&mut s).await;
    // The server said goodbye first (a GOAWAY frame: type 7).
    let mut at = 0;
    let mut kinds = Vec::new();
    while at + 9 <= frames.len() {
        let len = usize::from(frames[at]) << 16
            | usize::from(frames[at + 1]) << 8
            | usize::from(frames[at + 2]);
        kinds.push(frames[at + 3]);
        at += 9 + len;
    }
    assert!(kinds.contains(&7), "frames seen: {kinds:?}");
}

/// Regression: an HTTP/2 client that asked for something and then granted no flow-control
/// window (SETTINGS_INITIAL_WINDOW_SIZE = 0), while answering the keep-alive pings, held its
/// connection for ever — the answer counted as a request in flight — without any credential:
/// `max_connections` of them took the gateway off line. An answer that sends nothing for the
/// idle period no longer keeps its connection.
#[tokio::test]
async fn regression_an_http2_client_that_grants_no_window_for_its_answer_is_closed() {
    let (_h, mut s) = connected_with_a_short_idle_period().await;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE (4) = 0.
    out.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    // HEADERS (END_STREAM | END_HEADERS) for GET /healthz: static-table HPACK.
    let mut block = vec![0x82, 0x86];
    block.extend_from_slice(&[0x44, 8]);
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 1, b'x']);
    out.extend(frame(1, 0x5, 1, &block));
    s.write_all(&out).await.expect("write");
    read_until_closed(&mut s).await;
}

/// A gateway whose idle period (`header_read_timeout`) is half a second, and a connection
/// to it.
async fn connected_with_a_short_idle_period() -> (Harness, tokio::net::TcpStream) {
    let h = Harness::with_limits(Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let s = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .expect("connect");
    (h, s)
}

/// What the server sent until it closed the connection, which it must do within 8 s.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let started = tokio::time::Instant::now();
    let mut sent = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => sent.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open {:?} later", started.elapsed());
    sent
}

#[tokio::test]
async fn regression_ambiguous_heads_are_refused_not_guessed_at() {
    let h = Harness::start().await;
    let ask = |head: String| {
        let addr = h.gateway.addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(head.as_bytes()).await.expect("write");
            read_answer(&mut s).await
        }
    };
    let (status, body) = ask("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than one Host"), "{body}");
    let (status, _) = ask("GET /healthz HTTP/1.1\r\nHost: a, b\r\n\r\n".into()).await;
    assert_eq!(status, 400);
    let (status, body) = ask(format!(
        "PUT /v1/uploads/taler?payto={PAYTO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Transfer-Encoding: chunked, chunked\r\n\r\n5\r\n%PDF-\r\n0\r\n\r\n"
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    // gzip inside chunked: the compressed bytes would have been stored as the document.
    let (status, body) = ask(format!(
        "PUT /v1/uploads/taler?payto={PAYTO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: application/pdf\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\n%PDF-\r\n0\r\n\r\n"
    ))
    .await;
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("transfer_coding_unsupported"), "{body}");
    let (status, _) = ask("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n".into()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn regression_a_tenant_cannot_upload_for_another_tenant_s_bank_account() {
    // Tenants share the provider's account: globex could add documents to the customer acme
    // uploads for (at Taler, a bank account; at Sila a user handle, at Finext a username).
    let h = Harness::start().await;
    let send = |key: &'static str, payto: &str, seed: u8| {
        h.client
            .post(h.url("/v1/uploads"))
            .bearer_auth(key)
            .multipart(taler_form_for(payto, pdf(4000, seed)))
            .send()
    };
    let (status, receipt) = json(send(ACME, PAYTO, 1).await.expect("send")).await;
    assert_eq!(status, 201, "{receipt}");
    // The same account, named differently (the holder's name is an option, not the account).
    let same_account = format!("{PAYTO}?receiver-name=Someone%20Else");
    let (status, problem) = json(send(GLOBEX, &same_account, 2).await.expect("send")).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (403, Some("forbidden"), Some("payto")),
        "{problem}"
    );
    assert_eq!(h.stored(), 1, "nothing of globex's reached the exchange");
    // Nor may it mint a browser session for that customer (its bytes would never be sent).
    let (status, problem) = json(
        h.client
            .post(h.url("/v1/upload-sessions"))
            .bearer_auth(GLOBEX)
            .json(&serde_json::json!({"provider": "taler", "fields": {"payto": same_account}}))
            .send()
            .await
            .expect("mint"),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (403, Some("payto")),
        "{problem}"
    );
    // Its own customers are globex's; acme keeps uploading for its own.
    let (status, _) = json(
        send(GLOBEX, "payto://iban/FR1420041010050500013M02606", 3)
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = json(send(ACME, PAYTO, 4).await.expect("send")).await;
    assert_eq!(status, 201);
    assert_eq!(h.stored(), 2);
}

/// Spool removals that end together are noted in the ledger together (one write for many),
/// and none of the notes is lost: once every upload is delivered, the ledger holds no spool
/// for the retention sweep to remove and names none of them as live. (The sweep, which would
/// notice a lost note and write it again, does not run during the test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_each_note_their_spool_removed() {
    let defaults = Options::default();
    let h = Harness::with(Options {
        delivery: DeliverySettings {
            poll_interval: Duration::from_secs(3600),
            ..defaults.delivery
        },
        ..defaults
    })
    .await;
    let answers = futures_util::future::join_all((0..24u8).map(|i| {
        let h = &h;
        async move {
            json(
                h.upload(ACME, pdf(4_000, i), "doc.pdf", Some("application/pdf"))
                    .await,
            )
            .await
        }
    }))
    .await;
    let mut ids = Vec::new();
    for (status, receipt) in answers {
        assert_eq!(status, 201, "{receipt}");
        ids.push(receipt["id"].as_str().expect("id").to_owned());
    }
    let ledger = &h.gateway.app.ledger;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let due = ledger.spool_removal_due(i64::MAX, 100).await.expect("due");
        let live = ledger.live_upload_ids().await.expect("live");
        let still: Vec<&String> = ids.iter().filter(|id| live.contains(id)).collect();
        if due.is_empty() && still.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spools not noted removed: {still:?}, due: {}",
            due.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.spooled_uploads(), 0);
}
