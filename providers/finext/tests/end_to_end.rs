//! docgate's Finext client against the Finext emulator, over real sockets.

mod common;

use common::*;
use docgate_core::{Outcome, Provider};
use docgate_emulator::FaultPlan;
use docgate_finext::{emulator::StoredSubmission, Endpoint, FinextProvider};

fn address_fields(resubmit: bool) -> docgate_core::Fields {
    let issued = days_ago(10);
    let mut f = fields(&[
        ("kind", "address"),
        ("username", "lili111"),
        ("address_type", "utility bill"),
        ("address_issued_by", "Électricité \"de\" Paris"),
        ("address_issued_date", &issued),
        ("address_language", "French"),
    ]);
    if resubmit {
        f.insert("resubmit".into(), "true".into());
    }
    f
}

fn passport_fields() -> docgate_core::Fields {
    let issued = days_ago(400);
    let expires = docgate_finext::DateFormat::YearMonthDay
        .format(time::OffsetDateTime::now_utc().date() + time::Duration::days(3000));
    fields(&[
        ("kind", "id"),
        ("username", "lili111"),
        ("id_type", "Passport"),
        ("id_number", "C01X00T47"),
        ("issued_by", "fr"),
        ("issued_date", &issued),
        ("expiration_date", &expires),
        ("language", "French"),
    ])
}

fn only(subs: Vec<StoredSubmission>) -> StoredSubmission {
    assert_eq!(subs.len(), 1, "{subs:?}");
    subs.into_iter().next().expect("one")
}

#[tokio::test]
async fn an_address_proof_with_front_and_back_is_delivered_and_stored_byte_identical() {
    let h = Harness::start().await;
    let front = jpeg(300_001, 1);
    let back = fixture("sila/red1x1.png");
    let prepared = h
        .provider
        .prepare(&address_fields(false))
        .expect("valid metadata");
    let docs = vec![
        h.document("back", back.clone()).await,
        h.document("front", front.clone()).await,
    ];
    let metas: Vec<_> = docs.iter().map(|d| d.meta.clone()).collect();
    h.provider.check(&prepared, &metas).expect("slots complete");
    assert_eq!(kyc_status(&h.emulator.url(), "lili111").await, 0);

    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    let Outcome::Delivered {
        reference,
        upstream_status,
        ..
    } = outcome
    else {
        panic!("not delivered: {outcome:?}");
    };
    assert_eq!(upstream_status, Some(200));
    assert_eq!(reference["endpoint"], "addAddressProof");

    let sub = only(h.emulator.submissions());
    assert_eq!(sub.endpoint, Endpoint::AddAddressProof);
    assert_eq!(sub.username, "lili111");
    assert_eq!(reference["request_id"], sub.request_id.as_str());
    // Normalised to Finext's exact spelling, free text kept as typed, date in wire format.
    assert_eq!(sub.fields["address_type"], "Utility Bill");
    assert_eq!(sub.fields["address_issued_by"], "Électricité \"de\" Paris");
    assert_eq!(sub.fields["address_issued_date"], days_ago(10));
    assert_eq!(sub.fields["address_proof_front_extension"], "jpg");
    assert_eq!(sub.fields["address_proof_back_extension"], "png");
    let stored: Vec<_> = sub
        .documents
        .iter()
        .map(|d| (d.field.as_str(), d.media_type.as_str()))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("address_proof_front", "image/jpeg"),
            ("address_proof_back", "image/png")
        ]
    );
    assert_eq!(
        std::fs::read(&sub.documents[0].path).expect("stored"),
        front
    );
    assert_eq!(std::fs::read(&sub.documents[1].path).expect("stored"), back);
    assert!(sub.documents[0]
        .path
        .starts_with(h.emulator.documents_dir()));

    assert_eq!(
        kyc_status(&h.emulator.url(), "lili111").await,
        1,
        "pending review"
    );
    h.emulator.set_address_status("lili111", 3).expect("review");
    assert_eq!(
        kyc_status(&h.emulator.url(), "lili111").await,
        3,
        "resubmission needed"
    );

    // The re-submission goes to updateAddressProof and puts the user back to pending.
    let prepared = h
        .provider
        .prepare(&address_fields(true))
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(5_000, 2)).await];
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let subs = h.emulator.submissions();
    assert_eq!(subs[1].endpoint, Endpoint::UpdateAddressProof);
    assert_eq!(subs[1].documents.len(), 1);
    assert_eq!(kyc_status(&h.emulator.url(), "lili111").await, 1);
    h.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn a_passport_needs_only_its_front_and_other_ids_need_a_back() {
    let h = Harness::start().await;
    let prepared = h
        .provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let front = fixture("sila/tiny.pdf");
    let docs = vec![h.document("front", front.clone()).await];
    let metas: Vec<_> = docs.iter().map(|d| d.meta.clone()).collect();
    h.provider
        .check(&prepared, &metas)
        .expect("a passport needs no back");
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let sub = only(h.emulator.submissions());
    assert_eq!(sub.endpoint, Endpoint::AddIdProof);
    assert_eq!(sub.fields["id_type"], "Passport");
    assert_eq!(sub.fields["issued_by"], "FR");
    assert_eq!(sub.fields["id_front_extension"], "pdf");
    assert_eq!(
        std::fs::read(&sub.documents[0].path).expect("stored"),
        front
    );
    assert_eq!(
        kyc_status(&h.emulator.url(), "lili111").await,
        0,
        "an ID proof is not an address proof"
    );

    let mut license = passport_fields();
    license.insert("id_type".into(), "Driver License".into());
    let prepared = h.provider.prepare(&license).expect("valid metadata");
    let problem = h
        .provider
        .check(&prepared, &metas)
        .expect_err("back missing");
    assert_eq!(problem.code, "invalid_metadata");
    assert_eq!(problem.errors[0].field, "back");
    assert!(
        problem.errors[0].message.contains("Driver License"),
        "{}",
        problem.errors[0].message
    );
    // deliver refuses on its own too, without sending anything.
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(
        matches!(outcome, Outcome::Rejected { problem: ref p, .. } if p.code == "invalid_metadata"),
        "{outcome:?}"
    );
    assert_eq!(h.emulator.submissions().len(), 1);
}

#[tokio::test]
async fn the_other_date_format_is_used_end_to_end_when_both_sides_agree() {
    let h = Harness::start_with(|o| o.date_format = docgate_finext::DateFormat::YearDayMonth).await;
    let prepared = h
        .provider
        .prepare(&address_fields(false))
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(1000, 3)).await];
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(10);
    assert_eq!(
        only(h.emulator.submissions()).fields["address_issued_date"],
        format!("{:04}-{:02}-{:02}", d.year(), d.day(), u8::from(d.month()))
    );
}

#[tokio::test]
async fn a_client_with_the_wrong_date_format_is_refused_by_the_emulator() {
    // The risk the configurable format exists for: if the two sides disagree, Finext reads
    // day and month swapped. A date whose day is above 12 cannot be read the other way.
    let h = Harness::start_with(|o| o.date_format = docgate_finext::DateFormat::YearDayMonth).await;
    let mut config = h.emulator.sandbox_config();
    config.date_format = docgate_finext::DateFormat::YearMonthDay;
    let provider = FinextProvider::new(config).expect("valid");
    let today = time::OffsetDateTime::now_utc().date();
    let issued = (0..80)
        .map(|n| today - time::Duration::days(n))
        .find(|d| d.day() > 12)
        .expect("some day above 12 in the last 80 days");
    let mut f = address_fields(false);
    f.insert(
        "address_issued_date".into(),
        docgate_finext::DateFormat::YearMonthDay.format(issued),
    );
    let prepared = provider.prepare(&f).expect("valid metadata");
    let docs = vec![h.document("front", jpeg(1000, 4)).await];
    match provider.deliver(&h.ctx(1), &prepared, &docs).await {
        Outcome::Rejected { problem: p, .. } => assert_eq!(p.extra["upstream_code"], 10422, "{p}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn injected_failures_are_retried_with_a_new_request_id_and_then_delivered() {
    let h = Harness::start().await;
    let prepared = h
        .provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(20_000, 5)).await];

    h.emulator.faults.fail_next(1, 503);
    let first = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    match &first {
        Outcome::RetryLater {
            reason,
            upstream_status,
            ..
        } => {
            assert_eq!(*upstream_status, Some(503));
            assert!(
                reason.contains("10503"),
                "the provider's envelope is in the reason: {reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    h.emulator.faults.set(FaultPlan {
        drop_next: 1,
        ..FaultPlan::default()
    });
    let second = h.provider.deliver(&h.ctx(2), &prepared, &docs).await;
    assert!(
        matches!(
            second,
            Outcome::RetryLater {
                upstream_status: None,
                ..
            }
        ),
        "{second:?}"
    );
    assert!(h.emulator.submissions().is_empty());

    let third = h.provider.deliver(&h.ctx(3), &prepared, &docs).await;
    let Outcome::Delivered { reference, .. } = third else {
        panic!("not delivered: {third:?}");
    };
    // Being safe to call again: a second delivery is a new, separately signed request.
    let fourth = h.provider.deliver(&h.ctx(4), &prepared, &docs).await;
    let Outcome::Delivered {
        reference: again, ..
    } = fourth
    else {
        panic!("not delivered: {fourth:?}");
    };
    assert_ne!(reference["request_id"], again["request_id"]);
    assert_eq!(h.emulator.faults.injected(), 2);
}

#[tokio::test]
async fn an_unreachable_finext_is_retried_later() {
    let h = Harness::start().await;
    let mut config = h.emulator.sandbox_config();
    // A port that was just free: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    config.base_url = format!("http://127.0.0.1:{port}");
    let provider = FinextProvider::new(config).expect("valid");
    let shown = format!("{provider:?}");
    assert!(
        !shown.contains("not-the-secret") && !shown.contains("finext-sandbox"),
        "{shown}"
    );
    let prepared = provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(1000, 6)).await];
    match provider.deliver(&h.ctx(1), &prepared, &docs).await {
        Outcome::RetryLater {
            reason,
            upstream_status: None,
            ..
        } => {
            assert!(reason.contains("connect"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_names_the_code_and_the_message() {
    let h = Harness::start().await;
    let mut config = h.emulator.sandbox_config();
    config.secret = docgate_core::Secret::new("not-the-secret");
    let provider = FinextProvider::new(config).expect("valid");
    let shown = format!("{provider:?}");
    assert!(
        !shown.contains("not-the-secret") && !shown.contains("finext-sandbox"),
        "{shown}"
    );
    let prepared = provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(1000, 7)).await];
    match provider.deliver(&h.ctx(1), &prepared, &docs).await {
        Outcome::Rejected { problem: p, .. } => {
            assert_eq!(p.code, "provider_rejected");
            assert_eq!(p.status, 502);
            assert_eq!(p.extra["upstream_code"], 10401);
            assert_eq!(p.extra["upstream_msg"], "sign mismatch");
            let shown = format!("{p} {}", p.to_json());
            assert!(
                !shown.contains("not-the-secret"),
                "the secret leaked: {shown}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn configuration_errors_are_clear() {
    let secret = || docgate_core::Secret::new("s");
    let bad = |url: &str| {
        FinextProvider::new(docgate_finext::FinextConfig::new(
            url,
            "k",
            secret(),
            secret(),
        ))
        .expect_err(url)
        .to_string()
    };
    assert!(bad("ftp://x").contains("not an http(s) URL"));
    assert!(bad("not a url").contains("base_url"));
    let mut c = docgate_finext::FinextConfig::new(
        "http://x",
        "k",
        secret(),
        docgate_core::Secret::new("line\nbreak"),
    );
    assert!(FinextProvider::new(c.clone())
        .expect_err("header")
        .to_string()
        .contains("authorization"));
    c.authorization = secret();
    c.timeout = std::time::Duration::ZERO;
    assert_eq!(
        FinextProvider::new(c).expect_err("zero").to_string(),
        "finext.timeout must be greater than 0"
    );
}

#[tokio::test]
async fn control_endpoints_list_submissions_and_set_review_states() {
    let h = Harness::start().await;
    let url = h.emulator.url();
    let prepared = h
        .provider
        .prepare(&address_fields(false))
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(4000, 8)).await];
    let outcome = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");

    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!("{url}/__emulator/finext/submissions"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["endpoint"], "addAddressProof");
    assert_eq!(
        listed[0]["documents"][0]["sha256"],
        sha256_hex(&jpeg(4000, 8))
    );
    assert!(
        listed[0]["fields"].get("sign").is_none(),
        "the signature is not listed"
    );

    let review = |status: u8| {
        http.put(format!("{url}/__emulator/finext/review"))
            .json(&serde_json::json!({"username": "lili111", "status": status}))
            .send()
    };
    assert_eq!(review(2).await.expect("answer").status(), 200);
    assert_eq!(kyc_status(&url, "lili111").await, 2);
    let refused: serde_json::Value = review(7).await.expect("answer").json().await.expect("json");
    assert_eq!(refused["code"], 10422);
    assert_eq!(h.emulator.address_status("lili111"), 2);

    let banner = h.emulator.banner().join("\n");
    assert!(banner.contains(&url) && banner.contains(docgate_finext::emulator::SANDBOX_API_KEY));
}

/// An upstream (a proxy's error page, a debugging endpoint) answered 400 quoting the request
/// it refused, `Authorization` included: the text went into the ledger and the tenant's
/// problem. The gateway takes the provider's secrets out of every outcome.
#[tokio::test]
async fn regression_an_upstream_quoting_the_request_does_not_get_the_credential_recorded() {
    let h = Harness::start().await;
    let echo = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let quoted: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        (axum::http::StatusCode::BAD_REQUEST, quoted)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let mut config = h.emulator.sandbox_config();
    config.base_url = format!("http://{addr}");
    config.authorization = docgate_core::Secret::new("Bearer quoted-back-credential");
    let provider = FinextProvider::new(config).expect("valid");
    let prepared = provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(1000, 8)).await];
    let outcome = provider.deliver(&h.ctx(1), &prepared, &docs).await;
    let raw = format!("{outcome:?}");
    assert!(
        raw.contains("quoted-back-credential"),
        "the stand-in quoted it: {raw}"
    );
    let kept = format!("{:?}", outcome.redacted(&provider.secrets()));
    assert!(!kept.contains("quoted-back-credential"), "{kept}");
    assert!(kept.contains(docgate_core::REDACTED), "{kept}");
}

/// A local store whose next `get` breaks after its first piece, as an S3 range read cut by the
/// network does.
#[derive(Debug)]
struct CutOnce {
    inner: docgate_core::store::LocalStore,
    cut_next: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl docgate_core::store::ObjectStore for CutOnce {
    async fn put(&self, key: &str) -> std::io::Result<Box<dyn docgate_core::store::ObjectWriter>> {
        self.inner.put(key).await
    }

    async fn get(
        &self,
        key: &str,
        from: u64,
        len: u64,
    ) -> std::io::Result<docgate_core::store::ByteStream> {
        use futures_util::StreamExt;
        let whole = self.inner.get(key, from, len).await?;
        if !self
            .cut_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(whole);
        }
        let cut = whole.take(1).chain(futures_util::stream::once(async {
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
        }));
        Ok(Box::pin(cut))
    }

    fn open_blocking(
        &self,
        key: &str,
        len: u64,
    ) -> std::io::Result<Box<dyn docgate_core::store::ReadSeek>> {
        self.inner.open_blocking(key, len)
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> std::io::Result<Vec<docgate_core::store::ObjectInfo>> {
        self.inner.list(prefix).await
    }
}

/// Regression: a spool read that failed once (a range read cut, too many open files) ended the
/// upload `rejected` — its document removed, never to be delivered — where the same read a
/// moment later works. It is retried; only an altered or truncated document ends it.
#[tokio::test]
async fn regression_a_spool_read_that_fails_once_is_retried_not_rejected() {
    let mut h = Harness::start().await;
    let store = std::sync::Arc::new(CutOnce {
        inner: docgate_core::store::LocalStore::new(h.data_dir().join("flaky")).expect("store"),
        cut_next: std::sync::atomic::AtomicBool::new(false),
    });
    h.spool = docgate_core::SpoolDir::with_store(store.clone(), 1024);
    let prepared = h
        .provider
        .prepare(&passport_fields())
        .expect("valid metadata");
    let docs = vec![h.document("front", jpeg(300_000, 9)).await];

    store
        .cut_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let first = h.provider.deliver(&h.ctx(1), &prepared, &docs).await;
    assert!(
        matches!(first, Outcome::RetryLater { .. }),
        "a cut read is worth another try: {first:?}"
    );
    assert!(!docs[0].spool.failed_integrity(), "nothing was altered");
    assert!(h.emulator.submissions().is_empty());

    let second = h.provider.deliver(&h.ctx(2), &prepared, &docs).await;
    assert!(matches!(second, Outcome::Delivered { .. }), "{second:?}");
    assert_eq!(h.emulator.submissions().len(), 1);
}
