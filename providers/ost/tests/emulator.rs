//! The emulator as a receiver: OST's authentication and envelopes, and an S3 that refuses
//! what AWS refuses (expired, tampered, out-of-range uploads).

mod common;

use std::{collections::BTreeMap, time::Duration};

use axum::{extract::State, routing::post, Router};
use docgate_core::Secret;
use docgate_ost::{api::OstApi, signing, OstProvider};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use common::*;

fn api(emu: &docgate_ost::emulator::Emulator, secret: &str) -> OstApi {
    OstApi::new(
        reqwest::Client::new(),
        &emu.url(),
        emu.api_key(),
        Secret::new(secret),
        Duration::from_secs(10),
    )
}

fn files(pairs: &[(&str, &str)]) -> Map<String, Value> {
    let files: Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let mut params = Map::new();
    params.insert("files".into(), Value::Object(files));
    params
}

async fn put_url(emu: &docgate_ost::emulator::Emulator, slot: &str, ct: &str) -> (String, String) {
    let data = api(emu, emu.api_secret())
        .get(docgate_ost::provider::FOR_PUT, files(&[(slot, ct)]))
        .await
        .expect("for-put");
    let entry = &data["file_upload_put"][slot];
    (
        entry["url"].as_str().expect("url").to_owned(),
        entry["fields"]["key"].as_str().expect("key").to_owned(),
    )
}

async fn put(url: &str, ct: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .put(url)
        .header(http::header::CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .expect("PUT");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_ost_s_envelope_with_its_status_and_code() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let client = reqwest::Client::new();
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("JSON envelope");
        assert_eq!(body["success"], false);
        (
            status,
            body["err"]["code"].as_str().unwrap_or("").to_owned(),
            body,
        )
    };

    // Unsigned.
    let r = client
        .get(format!(
            "{}/api/v2/users-kyc/pre-signed-urls/for-put?files%5Bselfie%5D=image%2Fjpeg",
            emu.url()
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(answer(r).await.0, 401);

    // Wrong secret, through the client.
    let err = api(&emu, "wrong")
        .get(
            docgate_ost::provider::FOR_PUT,
            files(&[("selfie", "image/jpeg")]),
        )
        .await
        .expect_err("wrong secret");
    assert_eq!(err.upstream_status(), Some(401));

    // Correctly signed, but 20 s old.
    let stale = signing::sign_request(
        docgate_ost::provider::FOR_PUT,
        files(&[("selfie", "image/jpeg")]),
        emu.api_key(),
        emu.api_secret(),
        time::OffsetDateTime::now_utc().unix_timestamp() - 20,
    );
    let r = client
        .get(format!(
            "{}{}?{}",
            emu.url(),
            docgate_ost::provider::FOR_PUT,
            stale.wire
        ))
        .send()
        .await
        .expect("send");
    let (status, code, body) = answer(r).await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(body["err"]["internal_id"], "emu_auth_request_expired");

    // Unknown endpoint.
    let r = client
        .get(format!("{}/api/v2/nothing", emu.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(answer(r).await.1, "NOT_FOUND");

    // Bad files: 400 with one error_data entry per bad slot.
    let err = api(&emu, emu.api_secret())
        .get(
            docgate_ost::provider::FOR_PUT,
            files(&[("passport", "image/jpeg"), ("selfie", "image/gif")]),
        )
        .await
        .expect_err("bad files");
    let docgate_ost::api::ApiError::Refused { status, err, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status, err.code.as_str(), err.error_data.len()),
        (400, "BAD_REQUEST", 2)
    );

    // Injected faults answer in the envelope too.
    emu.faults.fail_next(1, 500);
    let r = client
        .get(format!("{}/api/v2/users/11001", emu.url()))
        .send()
        .await
        .expect("send");
    let (status, code, _) = answer(r).await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_SERVER_ERROR"));
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_a_url_once_its_short_lifetime_is_over() {
    let (emu, _dir) = start_emulator(|o| o.url_expiry = Duration::from_secs(1)).await;
    let (fresh_url, fresh_key) = put_url(&emu, "selfie", "image/jpeg").await;
    assert_eq!(put(&fresh_url, "image/jpeg", jpeg(1000)).await.0, 200);
    assert!(emu.object_path(&fresh_key).expect("path").is_file());

    let (url, key) = put_url(&emu, "selfie", "image/jpeg").await;
    // Waiting for the clock is the point of this test: S3 compares X-Amz-Date + Expires with now.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = put(&url, "image/jpeg", jpeg(1000)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AccessDenied"), "{body}");
    assert!(!emu.object_path(&key).expect("path").exists());
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_tampered_urls_and_unsigned_content_types() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let (url, key) = put_url(&emu, "document_id", "application/pdf").await;

    let sig_at = url.find("X-Amz-Signature=").expect("signed") + "X-Amz-Signature=".len();
    let flipped = if &url[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let bad_signature = format!("{}{flipped}{}", &url[..sig_at], &url[sig_at + 1..]);
    let other_key = url.replace(&key, "4/d/00000000000000000000000000000000");
    let longer = url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000");
    assert_ne!(longer, url, "the lifetime is in the URL");
    for (what, tampered, ct) in [
        ("signature", bad_signature.as_str(), "application/pdf"),
        ("key", other_key.as_str(), "application/pdf"),
        ("lifetime", longer.as_str(), "application/pdf"),
        ("content type", url.as_str(), "image/png"),
    ] {
        let (status, body) = put(tampered, ct, pdf(4096)).await;
        assert!((400..500).contains(&status), "{what}: {status} {body}");
    }
    assert!(stored_objects(&emu).is_empty(), "nothing was stored");
    // The untouched URL still works.
    assert_eq!(put(&url, "application/pdf", pdf(4096)).await.0, 200);
    assert_eq!(stored_objects(&emu).len(), 1);
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_post_form_uploads_within_its_range_and_only_then() {
    let (emu, _dir) = start_emulator(|o| {
        o.min_document_bytes = 200 * 1024;
        o.max_document_bytes = 300 * 1024;
    })
    .await;
    let provider = provider(&emu);
    let client = reqwest::Client::new();
    let requested: BTreeMap<String, String> = [
        ("selfie".to_string(), "image/jpeg".to_string()),
        ("residence_proof".to_string(), "application/pdf".to_string()),
    ]
    .into();
    let post = |form: Value, ct: &'static str, file: Vec<u8>| {
        let client = client.clone();
        async move {
            let (content_type, body) = form_body(&form["fields"], ct, &file);
            let r = client
                .post(form["url"].as_str().expect("url"))
                .header(http::header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };

    let forms = provider.presigned_post(&requested).await.expect("forms");
    let selfie = forms["selfie"].clone();
    let key = selfie["fields"]["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("4/i/"), "{key}");
    assert_eq!(selfie["fields"]["Content-Type"], "image/jpeg");

    let (status, body) = post(selfie.clone(), "image/jpeg", jpeg(100 * 1024)).await;
    assert!(
        (400..500).contains(&status),
        "below the range: {status} {body}"
    );
    let (status, body) = post(selfie.clone(), "image/jpeg", jpeg(310 * 1024)).await;
    assert!(
        (400..500).contains(&status),
        "above the range: {status} {body}"
    );
    assert!(stored_objects(&emu).is_empty());

    let data = jpeg(250 * 1024);
    let (status, body) = post(selfie.clone(), "image/jpeg", data.clone()).await;
    assert!(
        (200..300).contains(&status),
        "within the range: {status} {body}"
    );
    let stored = std::fs::read(emu.object_path(&key).expect("path")).expect("stored");
    assert!(stored == data);

    // The policy pins the key: the same form for another key is refused.
    let mut moved = forms["residence_proof"].clone();
    moved["fields"]["key"] = json!("4/d/11111111111111111111111111111111");
    let (status, _) = post(moved, "application/pdf", pdf(250 * 1024)).await;
    assert!((400..500).contains(&status));
    assert_eq!(stored_objects(&emu).len(), 1);

    // Bad requests never reach OST.
    let before = emu.faults.requests();
    let bad: BTreeMap<String, String> = [("selfie".to_string(), "image/gif".to_string())].into();
    assert_eq!(
        provider.presigned_post(&bad).await.expect_err("gif").code,
        "invalid_metadata"
    );
    assert_eq!(emu.faults.requests(), before);
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_fault_endpoint_hands_out_expired_urls_over_http() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let r = reqwest::Client::new()
        .put(format!("{}/__emulator/urls", emu.url()))
        .json(&json!({"expire_next": 1}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status(), 200);
    let (url, _) = put_url(&emu, "selfie", "image/png").await;
    let (status, body) = put(&url, "image/png", png(1000)).await;
    assert_eq!(status, 403, "{body}");
    let (url, _) = put_url(&emu, "selfie", "image/png").await;
    assert_eq!(
        put(&url, "image/png", png(1000)).await.0,
        200,
        "only the next answer"
    );
    emu.stop().await.expect("stop");
}

/// Regression (CI, stop 7): s3s refuses an expired URL from its headers and drops the body
/// unread, so hyper closed the connection after answering. The client, having sent the whole
/// body and read the 403, pooled that connection and sent the next PUT on it: "connection
/// closed before message completed" instead of S3's answer, and the delivery's refetch path
/// never ran. The same shape here: refused PUTs back to back on one client, from several
/// clients at once (the race needs a busy machine to show, as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_back_to_back_refused_puts_each_get_s3_s_403() {
    const CLIENTS: usize = 8;
    const PUTS: usize = 4;
    let (emu, _dir) = start_emulator(|_| {}).await;
    let emu = std::sync::Arc::new(emu);
    emu.expire_next_urls(u32::try_from(CLIENTS * PUTS).expect("small"));
    let mut urls = Vec::new();
    for _ in 0..CLIENTS * PUTS {
        urls.push(put_url(&emu, "document_id", "application/pdf").await);
    }
    let mut clients = tokio::task::JoinSet::new();
    for (c, urls) in urls.chunks(PUTS).map(<[_]>::to_vec).enumerate() {
        let emu = emu.clone();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            for (n, (url, key)) in urls.iter().enumerate() {
                let response = client
                    .put(url)
                    .header(http::header::CONTENT_TYPE, "application/pdf")
                    .body(pdf(250 * 1024))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("client {c}, PUT {n}: {e:?}"));
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(status, 403, "client {c}, PUT {n}: {body}");
                assert!(body.contains("AccessDenied"), "client {c}, PUT {n}: {body}");
                assert!(!emu.object_path(key).expect("path").exists());
            }
        });
    }
    while let Some(joined) = clients.join_next().await {
        joined.expect("client task");
    }
    let (url, key) = put_url(&emu, "document_id", "application/pdf").await;
    assert_eq!(put(&url, "application/pdf", pdf(250 * 1024)).await.0, 200);
    assert!(emu.object_path(&key).expect("path").is_file());
    std::sync::Arc::into_inner(emu)
        .expect("every client is done")
        .stop()
        .await
        .expect("stop");
}

/// A webhook receiver that hands every request body to the test.
async fn receiver() -> (
    docgate_emulator::RunningServer,
    mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    async fn take(
        State(tx): State<mpsc::UnboundedSender<Vec<u8>>>,
        body: bytes::Bytes,
    ) -> &'static str {
        let _ = tx.send(body.to_vec());
        "ok"
    }
    let app = Router::new().route("/hooks/ost", post(take)).with_state(tx);
    let server = docgate_emulator::serve(app, loopback())
        .await
        .expect("receiver");
    (server, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_webhooks_verify_and_tampered_ones_do_not() {
    let (hooks, mut bodies) = receiver().await;
    let hook_url = format!("{}/hooks/ost", hooks.url());
    let (emu, dir) = start_emulator(|o| o.webhook_url = Some(hook_url.clone())).await;
    let config = emu.sandbox_config();
    assert_eq!(config.webhook_url.as_deref(), Some(hook_url.as_str()));
    let provider = OstProvider::new(config).expect("config");
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();

    // Sent on demand, over the control endpoint.
    let r = reqwest::Client::new()
        .post(format!("{}/__emulator/webhooks", emu.url()))
        .json(&json!({"event": {"name": "kyc_status_update", "type": "user_kyc",
                                "data": {"result_type": "user_kyc", "user_kyc": {"kyc_status": "approved"}}}}))
        .send()
        .await
        .expect("control");
    let delivery: Value = r.json().await.expect("delivery");
    assert_eq!(delivery["status"], 200);
    let body = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .expect("in time")
        .expect("body");
    let params =
        docgate_ost::webhook::params_from_body(Some("application/json"), &body).expect("params");
    let event = provider.verify_webhook(&params, now()).expect("verifies");
    assert_eq!(event.name, "kyc_status_update");
    assert_eq!(event.data["user_kyc"]["kyc_status"], "approved");

    // One byte changed in the body: refused.
    let text = String::from_utf8(body.clone())
        .expect("utf8")
        .replacen("approved", "approvee", 1);
    let changed = docgate_ost::webhook::params_from_body(None, text.as_bytes()).expect("params");
    let problem = provider
        .verify_webhook(&changed, now())
        .expect_err("tampered");
    assert_eq!(
        (
            problem.status.as_u16(),
            problem.extra["webhook_error"].as_str()
        ),
        (401, Some("bad_signature"))
    );
    // The same body much later: stale.
    let problem = provider
        .verify_webhook(&params, now() + 3600)
        .expect_err("stale");
    assert_eq!(problem.extra["webhook_error"], "stale");

    // A submission through the API makes OST send kyc_submit by itself.
    let spool = docgate_core::SpoolDir::new(dir.path().join("spool"), 1 << 20).expect("spool");
    let doc = ingest_as(&provider, &spool, "selfie", None, &jpeg(210 * 1024))
        .await
        .expect("doc");
    let outcome =
        docgate_core::Provider::deliver(&provider, &ctx(dir.path()), &prepared(), &[doc]).await;
    let docgate_core::Outcome::Delivered { reference, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let mut fields = BTreeMap::new();
    fields.insert("selfie_file_path".to_string(), reference["selfie"].clone());
    let relaxed = {
        // This emulator's account requires every mandatory field; send them.
        let mut f: BTreeMap<String, Value> = serde_json::from_value(json!({
            "first_name": "A", "last_name": "B", "birthdate": "01/01/1990", "country": "India",
            "nationality": "Indian", "document_id_number": "Z1",
            "document_id_file_path": reference["selfie"], "ethereum_address":
            "0xdfbc84ccac430f2c0455c437adf417095d7ad68e", "estimated_participation_amount": "1",
            "street_address": "s", "city": "c", "state": "st", "postal_code": "p"
        }))
        .expect("fields");
        f.extend(fields);
        f
    };
    provider
        .submit_kyc("11002", &relaxed)
        .await
        .expect("submitted");
    let body = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .expect("in time")
        .expect("body");
    let params =
        docgate_ost::webhook::params_from_body(Some("application/json"), &body).expect("params");
    let event = provider.verify_webhook(&params, now()).expect("verifies");
    assert_eq!(
        (event.name.as_str(), event.source.as_str()),
        ("kyc_submit", "api")
    );
    assert_eq!(event.data["user_kyc"]["user_id"], "11002");
    emu.stop().await.expect("stop");
    hooks.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_names_the_credentials_it_accepts() {
    let (emu, _dir) = start_emulator(|o| {
        o.api_key = Some("key-from-cli".into());
        o.api_secret = Some("secret-from-cli".into());
    })
    .await;
    let banner = emu.banner();
    assert_eq!(banner[0], "api_key=key-from-cli api_secret=secret-from-cli");
    assert!(banner
        .iter()
        .any(|l| l.contains(emu.s3_url()) && l.contains(emu.bucket())));
    assert!(
        !format!("{emu:?}").contains("secret-from-cli"),
        "Debug hides the secret"
    );
    emu.stop().await.expect("stop");
}
