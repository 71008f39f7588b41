//! OST through the sandbox gateway: uploads land in the emulator's real S3, presigned forms,
//! KYC submission limited to the tenant's own keys, and signed webhooks.

use std::time::Duration;

use docgate_server::{sandbox, Gateway};
use serde_json::{json, Map, Value};

const KEY: &str = "ost-test-key";

struct Sandbox {
    gateway: Gateway,
    emulators: sandbox::Sandbox,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    async fn start() -> Sandbox {
        Sandbox::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut docgate_server::config::Limits)) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut setup, emulators) = sandbox::setup(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path(),
            Some(KEY.into()),
            docgate_providers::ALL,
        )
        .await
        .expect("sandbox");
        adjust(&mut setup.limits);
        let gateway = Gateway::start(setup).await.expect("gateway");
        Sandbox {
            gateway,
            emulators,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn ost(&self) -> &docgate_ost::emulator::Emulator {
        self.emulators
            .emulator_as("ost")
            .expect("the sandbox runs the OST emulator")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send");
        (res.status().as_u16(), res.json().await.expect("json"))
    }

    async fn webhook(&self, params: &Map<String, Value>) -> (u16, Value) {
        let res = self
            .client
            .post(self.url("/v1/webhooks/ost"))
            .json(params)
            .send()
            .await
            .expect("send");
        (res.status().as_u16(), res.json().await.expect("json"))
    }
}

/// A JPEG of exactly `len` bytes (a JFIF header, then noise).
fn jpeg(len: usize, seed: u32) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01,
    ];
    let mut x = seed | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x >> 8) as u8);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_land_in_s3_unchanged_and_the_keys_can_be_submitted() {
    let s = Sandbox::start().await;
    let id = jpeg(300 * 1024, 1);
    let selfie = jpeg(250 * 1024, 2);
    let form = reqwest::multipart::Form::new()
        .text("provider", "ost")
        .part(
            "document_id",
            reqwest::multipart::Part::bytes(id.clone()).file_name("id.jpg"),
        )
        .part(
            "selfie",
            reqwest::multipart::Part::bytes(selfie.clone()).file_name("me.jpg"),
        );
    let res = s
        .client
        .post(s.url("/v1/uploads"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    let receipt: Value = res.json().await.expect("json");
    let keys = &receipt["provider_reference"];
    for (slot, bytes) in [("document_id", &id), ("selfie", &selfie)] {
        let key = keys[slot].as_str().expect("an S3 key per slot");
        let path = s.ost().object_path(key).expect("object path");
        assert_eq!(
            &std::fs::read(path).expect("object stored"),
            bytes,
            "{slot} byte-identical in S3"
        );
        let get = s
            .ost()
            .presigned_get(key, Duration::from_secs(60))
            .await
            .expect("presign");
        let res = s.client.get(get).send().await.expect("get");
        assert_eq!(
            res.headers()["content-type"],
            "image/jpeg",
            "Content-Type kept"
        );
    }

    // Submit with the keys from this tenant's receipt: forwarded and accepted.
    let kyc = json!({
        "first_name": "Ada", "last_name": "Lovelace", "birthdate": "10/12/1990",
        "country": "india", "nationality": "indian", "document_id_number": "arqpa7659a",
        "document_id_file_path": keys["document_id"], "selfie_file_path": keys["selfie"],
        "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
        "estimated_participation_amount": "2", "street_address": "1 Main St", "city": "Pune",
        "state": "MH", "postal_code": "411001"
    });
    let (status, body) = s
        .post_json("/v1/providers/ost/users/11001/kyc", kyc.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    // A key this tenant never got from docgate: refused before OST is called.
    let mut foreign = kyc.clone();
    foreign["selfie_file_path"] = json!("4/i/0123456789abcdef0123456789abcdef");
    let (status, body) = s
        .post_json("/v1/providers/ost/users/11001/kyc", foreign)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(body["keys"][0], "4/i/0123456789abcdef0123456789abcdef");

    // The emulator announces the submission with a signed webhook; the gateway records it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = s
            .client
            .get(s.url("/v1/providers/ost/events"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("events");
        let events: Value = res.json().await.expect("json");
        if events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "kyc_submit"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no kyc_submit webhook recorded: {events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bounds_are_enforced_before_anything_reaches_ost() {
    let s = Sandbox::start().await;
    let upload = |bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .text("provider", "ost")
            .part(
                "document_id",
                reqwest::multipart::Part::bytes(bytes).file_name("id.jpg"),
            );
        s.client
            .post(s.url("/v1/uploads"))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
    };
    let res = upload(jpeg(100 * 1024, 3)).await.expect("send");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "payload_too_small", "{body}");
    let res = upload(jpeg(21 * 1024 * 1024, 4)).await.expect("send");
    assert_eq!(res.status(), 413);
    assert_eq!(s.ost().faults.requests(), 0, "OST was never called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_form_posts_straight_to_s3() {
    let s = Sandbox::start().await;
    let (status, body) = s
        .post_json(
            "/v1/providers/ost/presigned-post",
            json!({"files": {"selfie": "image/jpeg"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let form_spec = &body["file_upload_post"]["selfie"];
    let url = form_spec["url"].as_str().expect("url");
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in form_spec["fields"].as_object().expect("fields") {
        form = form.text(k.clone(), v.as_str().expect("string field").to_owned());
    }
    let photo = jpeg(210 * 1024, 5);
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(photo.clone())
            .file_name("me.jpg")
            .mime_str("image/jpeg")
            .expect("mime"),
    );
    let res = s
        .client
        .post(url)
        .multipart(form)
        .send()
        .await
        .expect("post to S3");
    assert!(
        res.status().is_success(),
        "{}: {:?}",
        res.status(),
        res.text().await
    );
    let key = form_spec["fields"]["key"].as_str().expect("key");
    assert_eq!(
        std::fs::read(s.ost().object_path(key).expect("path")).expect("stored"),
        photo
    );
    // The key handed out is this tenant's: it may be submitted.
    let (status, body) = s
        .post_json(
            "/v1/providers/ost/users/11002/kyc",
            json!({"first_name": "Bo", "selfie_file_path": key}),
        )
        .await;
    assert_ne!(status, 403, "{body}");
    // Unknown slots and types are refused by docgate, with the field named.
    let (status, body) = s
        .post_json(
            "/v1/providers/ost/presigned-post",
            json!({"files": {"passport": "image/gif"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_refused_when_tampered_or_stale_and_kept_once() {
    let s = Sandbox::start().await;
    let secret = s.ost().webhook_secret().to_owned();
    let url = s.url("/v1/webhooks/ost");
    let event: Map<String, Value> = serde_json::from_value(json!({
        "created_at": "1541144915",
        "data": {"result_type": "user", "user": {"created_at": "1541144915", "email": "yogesh+13233@ost.com", "id": "11493", "properties": ["doptin_mail_sent"]}},
        "description": "User has signed up", "id": "236", "name": "user_register",
        "source": "web", "type": "user", "version": "v1"
    }))
    .expect("event");
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()) as i64;
    let signed = docgate_ost::webhook::sign_event(&secret, &url, &event, now);

    let mut tampered = signed.clone();
    tampered.insert("description".into(), json!("User has signed uP"));
    let (status, body) = s.webhook(&tampered).await;
    assert_eq!(status, 401, "one byte changed: {body}");

    let stale = docgate_ost::webhook::sign_event(&secret, &url, &event, now - 3600);
    let (status, body) = s.webhook(&stale).await;
    assert_eq!(status, 400, "stale: {body}");

    let (status, body) = s.webhook(&signed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"received": "236"}));
    // OST sends an event again, freshly signed, whenever it missed our 200 (and counts anything
    // else as a failure, retried for 63 hours): acknowledged, not recorded twice. The same
    // request replayed as it was is answered alike.
    let resent = docgate_ost::webhook::sign_event(&secret, &url, &event, now + 1);
    for again in [&resent, &signed] {
        let (status, body) = s.webhook(again).await;
        assert_eq!(
            (status, body),
            (200, json!({"received": "236", "already_received": true}))
        );
    }

    // Recorded — but user 11493 is not one this tenant submitted, so it does not see it.
    let events: Value = s
        .client
        .get(s.url("/v1/providers/ost/events"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        !events["events"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["event_id"] == "236"),
        "{events}"
    );
}

/// Regression: a webhook's permit was taken before its body was read, so a few clients
/// trickling bodies to the unauthenticated webhook route held every permit, and OST's real
/// webhooks heard 503 `too_many_webhooks` (OST gives up after six tries). The body is read
/// first; a permit is only held while a whole webhook is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_bodies_that_trickle_in_do_not_hold_the_webhook_permits() {
    use tokio::io::AsyncWriteExt;
    let s = Sandbox::start_with(|limits| limits.webhook_concurrency = 2).await;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut c = tokio::net::TcpStream::connect(s.gateway.addr)
            .await
            .expect("connect");
        c.write_all(
            b"POST /v1/webhooks/ost HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"id\":",
        )
        .await
        .expect("write");
        stalled.push(c);
    }
    // Give the server time to take them all in (each now waits for the rest of its body).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let secret = s.ost().webhook_secret().to_owned();
    let url = s.url("/v1/webhooks/ost");
    let event: Map<String, Value> = serde_json::from_value(json!({
        "created_at": "1541144915", "data": {"result_type": "user", "user": {"id": "11500"}},
        "description": "User has signed up", "id": "240", "name": "user_register",
        "source": "web", "type": "user", "version": "v1"
    }))
    .expect("event");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let signed = docgate_ost::webhook::sign_event(&secret, &url, &event, now);
    let (status, body) = s.webhook(&signed).await;
    assert_eq!(status, 200, "{body}");
    drop(stalled);
}

/// Regression: a webhook body that stopped half-way held its share of the webhook read budget
/// until the whole webhook timeout (10 s): 64 senders of 256 KiB each, stalling, kept OST's
/// real webhooks out (503). A body that pauses is cut within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_webhook_body_that_pauses_is_cut_soon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Sandbox::start().await;
    let mut c = tokio::net::TcpStream::connect(s.gateway.addr)
        .await
        .expect("connect");
    c.write_all(
        b"POST /v1/webhooks/ost HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 200000\r\n\r\n",
    )
    .await
    .expect("head");
    c.write_all(&vec![b' '; 100_000])
        .await
        .expect("half the body");
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(6), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                return;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer {:?} later: {answer}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test]
async fn regression_a_page_that_points_its_own_name_at_the_sandbox_is_refused() {
    // The sandbox mints sessions without a key and the emulators show what they received:
    // a page whose name resolves to 127.0.0.1 (DNS rebinding) could read both as its origin.
    let s = Sandbox::start().await;
    let mint = |host: &'static str| {
        s.client
            .post(s.url("/sandbox/upload-sessions"))
            .header("host", host)
            .json(&json!({"provider": "taler"}))
            .send()
    };
    let res = mint("evil.example:8080").await.expect("send");
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "host_not_local");
    assert_eq!(mint("localhost:8080").await.expect("send").status(), 201);
    let listed = |host: &'static str| {
        s.client
            .get(format!("{}/__emulator/webhooks", s.ost().url()))
            .header("host", host)
            .send()
    };
    assert_eq!(listed("evil.example").await.expect("send").status(), 403);
    assert_eq!(listed("127.0.0.1").await.expect("send").status(), 200);
}

// The sandbox's keyless session route took any body as JSON: a page on another site, open
// in the operator's browser, minted sessions with fields of its choosing through a
// `text/plain` POST, which a browser sends without asking first.
#[tokio::test]
async fn regression_another_site_cannot_mint_sandbox_sessions() {
    let s = Sandbox::start().await;
    let body = r#"{"provider": "taler"}"#;
    let mint = |content_type: &'static str, origin: Option<&'static str>| {
        let mut req = s
            .client
            .post(s.url("/sandbox/upload-sessions"))
            .header("content-type", content_type)
            .body(body);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    let res = mint("text/plain", None).await.expect("send");
    assert_eq!(res.status(), 415);
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["code"], "unsupported_media_type");

    let res = mint("application/json", Some("https://evil.example"))
        .await
        .expect("send");
    assert_eq!(res.status(), 403);
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["code"], "origin_not_allowed");

    // The sandbox's own page, and a client that is not a browser.
    let own = s.url("");
    let res = s
        .client
        .post(s.url("/sandbox/upload-sessions"))
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", own)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    assert_eq!(
        mint("application/json", None).await.expect("send").status(),
        201
    );
}
