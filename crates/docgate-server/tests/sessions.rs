//! Upload sessions and tus 1.0.0, driven over HTTP against a real gateway and the Taler
//! emulator: scoped tokens, CORS, resumable uploads with checksums, locks and limits.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use docgate_core::Secret;
use docgate_server::{
    config::{DeliverySettings, Limits},
    registry::Registry,
    tenants::{Tenant, Tenants},
    Gateway, Setup,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;
#[path = "support/postgres.rs"]
mod postgres;

const KEY: &str = "acme-key";
/// A second tenant's, on the same provider.
const OTHER_KEY: &str = "globex-key";
const ORIGIN: &str = "https://app.example";
/// A second origin of the tenant's (a session can be bound to one of them).
const SECOND_ORIGIN: &str = "https://second.example";
const PAYTO: &str = "payto://iban/DE89370400440532013000";

struct World {
    gateway: Gateway,
    _taler: docgate_taler::emulator::Emulator,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        World::start_with(Limits::default()).await
    }

    async fn start_with(limits: Limits) -> World {
        World::start_on("sqlite".into(), limits).await
    }

    async fn start_on(ledger_url: String, limits: Limits) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let taler = docgate_taler::emulator::start(docgate_taler::emulator::EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("taler"),
        ))
        .await
        .expect("emulator");
        let mut registry = Registry::default();
        registry.insert(Arc::new(
            docgate_taler::TalerProvider::new(taler.sandbox_config()).expect("provider"),
        ));
        let mut tenants = Tenants::default();
        let mut acme = Tenant::new("acme", vec!["taler".into()]);
        acme.cors_origins = Arc::new(vec![ORIGIN.to_owned(), SECOND_ORIGIN.to_owned()]);
        tenants.add(&Secret::new(KEY), acme);
        tenants.add(
            &Secret::new(OTHER_KEY),
            Tenant::new("globex", vec!["taler".into()]),
        );
        let setup = Setup {
            listen: "127.0.0.1:0".parse().expect("addr"),
            listener: None,
            data_dir: dir.path().join("gateway"),
            ledger_url,
            spool_dir: dir.path().join("gateway/spool"),
            limits,
            delivery: DeliverySettings {
                poll_interval: Duration::from_millis(100),
                ..DeliverySettings::default()
            },
            tenants,
            registry,
            web: Default::default(),
            spool_encryption: None,
            spool_s3: None,
        };
        World {
            gateway: Gateway::start(setup).await.expect("gateway"),
            _taler: taler,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    /// Mint a session with the API key: (id, token).
    async fn session(&self, extra: Value) -> (String, String) {
        let mut body = json!({"provider": "taler", "fields": {"payto": PAYTO}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = self
            .client
            .post(self.url("/v1/upload-sessions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("mint");
        assert_eq!(res.status(), 201);
        let v: Value = res.json().await.expect("json");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    /// `method path` with the tenant's API key (no body).
    async fn with_api_key(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("send")
    }

    fn tus(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
    }

    /// Create a tus upload with one length header and `metadata`: its path.
    async fn create_with(&self, token: &str, length: (&str, &str), metadata: &str) -> String {
        let res = self
            .tus(reqwest::Method::POST, "/v1/tus/", token)
            .header(length.0, length.1)
            .header("upload-metadata", metadata)
            .send()
            .await
            .expect("create");
        assert_eq!(res.status(), 201);
        res.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned()
    }

    /// Create a tus upload of `len` bytes: its path.
    async fn create(&self, token: &str, len: u64) -> String {
        self.create_with(
            token,
            ("upload-length", &len.to_string()),
            "filename ZG9jLnBkZg==,filetype YXBwbGljYXRpb24vcGRm",
        )
        .await
    }

    async fn patch(&self, token: &str, path: &str, offset: u64, bytes: &[u8]) -> reqwest::Response {
        self.tus(reqwest::Method::PATCH, path, token)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(bytes.to_vec())
            .send()
            .await
            .expect("patch")
    }

    async fn offset(&self, token: &str, path: &str) -> u64 {
        let res = self
            .tus(reqwest::Method::HEAD, path, token)
            .send()
            .await
            .expect("head");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        res.headers()["upload-offset"]
            .to_str()
            .expect("offset")
            .parse()
            .expect("number")
    }
}

/// A PDF of `len` bytes, different for each `seed`.
fn pdf(len: usize, seed: u8) -> Vec<u8> {
    let mut v = format!("%PDF-1.7\n% seed {seed}\n").into_bytes();
    let mut x = u32::from(seed) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x >> 8) as u8);
    }
    v
}

fn sha1_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_on_its_own_session_and_nowhere_else() {
    let w = World::start().await;
    let (id, token) = w.session(json!({})).await;
    let res = w
        .client
        .get(w.url(&format!("/v1/upload-sessions/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["state"], "open");
    assert!(
        body.get("token").is_none(),
        "the token is shown once, at creation"
    );
    for path in ["/v1/providers", "/v1/uploads/x"] {
        let res = w
            .client
            .get(w.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 401, "{path}");
    }
    let (other, _) = w.session(json!({})).await;
    let res = w
        .client
        .get(w.url(&format!("/v1/upload-sessions/{other}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404, "a token sees only its own session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_and_bad_session_settings_fail_when_the_session_is_minted() {
    let w = World::start().await;
    for body in [
        json!({"provider": "taler", "fields": {"payto": "payto://iban/DE00000000000000000000"}}),
        json!({"provider": "taler", "fields": {}, "expires_in": 0}),
        json!({"provider": "taler", "fields": {}, "expires_in": 86401}),
        json!({"provider": "taler", "fields": {}, "slots": ["front"]}),
        json!({"provider": "taler", "fields": {}, "origin": "https://evil.example"}),
    ] {
        let res = w
            .client
            .post(w.url("/v1/upload-sessions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("mint");
        assert_eq!(res.status(), 422, "{body}");
        let problem: Value = res.json().await.expect("json");
        assert_eq!(problem["code"], "invalid_metadata", "{problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_gets_460_and_the_offset_does_not_move() {
    let w = World::start().await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(300_000, 1);
    let path = w.create(&token, doc.len() as u64).await;
    let res = w.patch(&token, &path, 0, &doc[..100_000]).await;
    assert_eq!(res.status(), 204);
    let wrong = w
        .tus(reqwest::Method::PATCH, &path, &token)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "100000")
        .header(
            "upload-checksum",
            format!("sha1 {}", sha1_b64(b"something else")),
        )
        .body(doc[100_000..200_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(wrong.status().as_u16(), 460);
    assert_eq!(
        w.offset(&token, &path).await,
        100_000,
        "the offset did not move"
    );
    let right = w
        .tus(reqwest::Method::PATCH, &path, &token)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "100000")
        .header(
            "upload-checksum",
            format!("sha1 {}", sha1_b64(&doc[100_000..])),
        )
        .body(doc[100_000..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(right.status(), 204);
    assert_eq!(right.headers()["upload-offset"], "300000");
    let bad_algorithm = w
        .tus(reqwest::Method::PATCH, &path, &token)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "300000")
        .header("upload-checksum", "crc32 AAAA")
        .body(Vec::new())
        .send()
        .await
        .expect("patch");
    assert!(matches!(bad_algorithm.status().as_u16(), 400 | 409 | 410));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_is_delivered_with_the_file_s_digests_and_complete_replays_it() {
    let w = World::start().await;
    let (id, token) = w.session(json!({})).await;
    let doc = pdf(1_500_000, 2);
    let path = w.create(&token, doc.len() as u64).await;
    // The first PATCH is cut short by the client: the server keeps what arrived.
    assert_eq!(
        w.patch(&token, &path, 0, &doc[..600_000]).await.status(),
        204
    );
    let at = w.offset(&token, &path).await;
    assert_eq!(at, 600_000);
    assert_eq!(
        w.patch(&token, &path, 123, &doc[123..]).await.status(),
        409,
        "a wrong offset is refused"
    );
    assert_eq!(
        w.patch(&token, &path, at, &doc[at as usize..])
            .await
            .status(),
        204
    );
    let res = w
        .client
        .post(w.url(&format!("/v1/upload-sessions/{id}/complete")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("complete");
    assert_eq!(res.status(), 201);
    let receipt: Value = res.json().await.expect("json");
    assert_eq!(receipt["status"], "delivered");
    assert_eq!(
        receipt["documents"][0]["sha256"],
        hex::encode(Sha256::digest(&doc)),
        "{receipt}"
    );
    assert_eq!(receipt["documents"][0]["size"], doc.len());
    // The token is spent: a new upload is refused, the receipt still readable.
    let again = w.session_upload_with(&token).await;
    assert_eq!(again, (409, "session_spent".to_owned()));
}

impl World {
    async fn session_upload_with(&self, token: &str) -> (u16, String) {
        let res = self
            .tus(reqwest::Method::POST, "/v1/tus/", token)
            .header("upload-length", "1000")
            .send()
            .await
            .expect("create");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        (status, body["code"].as_str().unwrap_or("").to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_length_over_the_limit_is_413_at_creation() {
    let w = World::start().await;
    let (_, token) = w.session(json!({"max_bytes": 1_000_000})).await;
    let res = w
        .tus(reqwest::Method::POST, "/v1/tus/", &token)
        .header("upload-length", "1000001")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_after_expiry_and_revocation_with_their_codes() {
    let w = World::start().await;
    let (short_id, short) = w.session(json!({"expires_in": 1})).await;
    // Reading the session with its own token: what each refusal says, if it is one.
    let read_with = |id: String, token: String| {
        let req = w
            .client
            .get(w.url(&format!("/v1/upload-sessions/{id}")))
            .bearer_auth(token);
        async move {
            let res = req.send().await.expect("get");
            let status = res.status().as_u16();
            let v: Value = res.json().await.expect("json");
            (status, v["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    assert_eq!(read_with(short_id.clone(), short.clone()).await.0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        let (status, code) = w.session_upload_with(&short).await;
        if status == 401 {
            break code;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, "session_expired");
    // Nor can it read its session (with the customer's fields) any more.
    assert_eq!(
        read_with(short_id, short).await,
        (401, "session_expired".into())
    );
    let (id, token) = w.session(json!({})).await;
    let res = w
        .with_api_key(
            reqwest::Method::DELETE,
            &format!("/v1/upload-sessions/{id}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        w.session_upload_with(&token).await,
        (401, "session_revoked".into())
    );
    assert_eq!(read_with(id, token).await, (401, "session_revoked".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_for_tokens_only() {
    let w = World::start().await;
    let preflight = |origin: &'static str| {
        w.client
            .request(reqwest::Method::OPTIONS, w.url("/v1/tus/"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, tus-resumable, upload-length",
            )
            .send()
    };
    let ok = preflight(ORIGIN).await.expect("preflight");
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .contains("Upload-Offset"));
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A tus creation with `token` from a browser at `origin`.
    let create_from = |token: &str, origin: &'static str| {
        let req = w
            .tus(reqwest::Method::POST, "/v1/tus/", token)
            .header("origin", origin)
            .header("upload-length", "300000");
        async move { req.send().await.expect("create") }
    };
    let (_, token) = w.session(json!({})).await;
    let with_token = create_from(&token, ORIGIN).await;
    assert_eq!(with_token.headers()["access-control-allow-origin"], ORIGIN);
    assert!(with_token.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .contains("Location"));
    let with_key = w
        .client
        .post(w.url("/v1/upload-sessions"))
        .bearer_auth(KEY)
        .header("origin", ORIGIN)
        .json(&json!({"provider": "taler", "fields": {}}))
        .send()
        .await
        .expect("mint");
    assert!(
        with_key
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "API-key routes never answer a browser origin"
    );
    let foreign = create_from(&token, "https://evil.example").await;
    assert_eq!(foreign.status(), 403);
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // A session bound to one origin, used from another the tenant allows: refused, and
    // the page there cannot read the refusal (it would tell a real token from a made-up one).
    let (_, bound) = w.session(json!({ "origin": ORIGIN })).await;
    let elsewhere = create_from(&bound, SECOND_ORIGIN).await;
    assert_eq!(elsewhere.status(), 403);
    assert!(
        elsewhere
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "regression: a refused origin read the refusal of a real token"
    );
    let unknown = create_from("dgs_made_up", SECOND_ORIGIN).await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        unknown.headers()["access-control-allow-origin"],
        SECOND_ORIGIN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_post_with_the_token_uses_the_session_s_fields_and_spends_it() {
    let w = World::start().await;
    let (_, token) = w.session(json!({})).await;
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k, v);
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(pdf(200_000, 3)).file_name("doc.pdf"),
        );
        w.client
            .post(w.url("/v1/uploads"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
    };
    let conflict = post(vec![("payto", "payto://iban/GB33BUKB20201555555555")])
        .await
        .expect("post");
    assert_eq!(
        conflict.status(),
        422,
        "a browser cannot change a fixed field"
    );
    let res = post(vec![]).await.expect("post");
    assert_eq!(res.status(), 201);
    let again = post(vec![]).await.expect("post");
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.expect("json");
    assert_eq!(problem["code"], "session_spent");
}

impl World {
    /// Complete the session (respond-async), with no body.
    async fn complete(&self, id: &str, token: &str) -> (u16, Value) {
        self.completion(id, token, None).await
    }

    async fn completion(&self, id: &str, token: &str, fields: Option<Value>) -> (u16, Value) {
        let req = self
            .completing(id, token, fields)
            .header("prefer", "respond-async");
        let res = req.send().await.expect("complete");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `POST …/complete` with `bearer` (a token or the API key), waiting for the outcome.
    fn completing(&self, id: &str, bearer: &str, fields: Option<Value>) -> reqwest::RequestBuilder {
        let req = self
            .client
            .post(self.url(&format!("/v1/upload-sessions/{id}/complete")))
            .bearer_auth(bearer);
        match fields {
            Some(fields) => req.json(&json!({ "fields": fields })),
            None => req,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_completing_while_a_document_is_still_arriving_is_409_and_loses_nothing() {
    let w = World::start().await;
    let (id, token) = w.session(json!({})).await;
    let doc = pdf(200_000, 3);
    let path = w.create(&token, doc.len() as u64).await;
    assert_eq!(
        w.patch(&token, &path, 0, &doc[..80_000]).await.status(),
        204
    );
    // Accepting now would deliver nothing (or, with two slots, one document) and strand the
    // bytes received: the browser is told to finish or terminate the document first.
    let (status, body) = w.complete(&id, &token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("documents_pending")),
        "{body}"
    );
    assert_eq!(body["slots"], json!(["file"]));
    // The session is open again and the document resumes where it was.
    assert_eq!(w.offset(&token, &path).await, 80_000);
    assert_eq!(
        w.patch(&token, &path, 80_000, &doc[80_000..])
            .await
            .status(),
        204
    );
    let (status, receipt) = w.complete(&id, &token).await;
    assert!(matches!(status, 201 | 202), "{status} {receipt}");
    assert_eq!(
        receipt["documents"][0]["sha256"],
        hex::encode(Sha256::digest(&doc)),
        "{receipt}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_deferred_length_below_the_bytes_received_is_refused() {
    let w = World::start().await;
    let (_, token) = w.session(json!({})).await;
    let path = w
        .create_with(
            &token,
            ("upload-defer-length", "1"),
            "filename ZG9jLnBkZg==",
        )
        .await;
    let doc = pdf(30_000, 4);
    assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
    let res = w
        .tus(reqwest::Method::PATCH, &path, &token)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "30000")
        .header("upload-length", "10000")
        .body(Vec::new())
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 400);
    let head = w
        .tus(reqwest::Method::HEAD, &path, &token)
        .send()
        .await
        .expect("head");
    assert_eq!(head.headers()["upload-offset"], "30000");
    assert_eq!(
        head.headers()["upload-defer-length"],
        "1",
        "the length is still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_failed_creation_with_upload_says_where_its_upload_is() {
    let w = World::start().await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(50_000, 5);
    let create = |checksum: String| {
        w.tus(reqwest::Method::POST, "/v1/tus/", &token)
            .header("upload-length", doc.len().to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", checksum)
            .body(doc.clone())
            .send()
    };
    // A checksum this server cannot check: refused before any upload exists.
    let res = create("crc32 AAAAAA==".into()).await.expect("create");
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // A mismatch: the upload exists (offset 0), and the answer says where.
    let res = create(format!("sha1 {}", sha1_b64(b"not these bytes")))
        .await
        .expect("create");
    assert_eq!(res.status().as_u16(), 460);
    let path = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(w.offset(&token, &path).await, 0);
    assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_answers_without_its_personal_data() {
    let w = World::start().await;
    let marker = "Erika%20Mustermann";
    let (id, token) = w
        .session(json!({"fields": {"payto": format!("{PAYTO}?receiver-name={marker}")}}))
        .await;
    let res = w
        .tus(reqwest::Method::POST, "/v1/tus/", &token)
        .header("upload-length", "1000")
        .header("upload-metadata", "filename RXJpa2EgTXVzdGVybWFubi5wZGY=")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let session = format!("/v1/upload-sessions/{id}");
    let res = w.with_api_key(reqwest::Method::DELETE, &session).await;
    assert_eq!(res.status(), 200);
    let shown = w
        .with_api_key(reqwest::Method::GET, &session)
        .await
        .text()
        .await
        .expect("body");
    assert!(!shown.contains("Erika"), "{shown}");
    assert!(!shown.contains("Mustermann"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_creation_with_upload_on_a_full_disk_does_not_take_the_slot() {
    // The disk is under the reserve from the start: every upload is 507.
    let w = World::start_with(Limits {
        min_free_space: Some(u64::MAX / 4),
        ..Limits::default()
    })
    .await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(20_000, 6);
    let res = w
        .tus(reqwest::Method::POST, "/v1/tus/", &token)
        .header("upload-length", doc.len().to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(doc)
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 507);
    // No upload was created: the slot is free for the client's next try.
    let res = w
        .tus(reqwest::Method::POST, "/v1/tus/", &token)
        .header("upload-length", "20000")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
}

impl World {
    /// The session's state as its token reads it.
    async fn session_state(&self, id: &str, token: &str) -> String {
        let res = self
            .client
            .get(self.url(&format!("/v1/upload-sessions/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.expect("json");
        v["state"].as_str().expect("state").to_owned()
    }

    /// Wait (10 s at most) until the session is in `state`.
    async fn until_session_is(&self, id: &str, token: &str, state: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.session_state(id, token).await;
            if now == state {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the session stayed {now}, not {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A browser gone while its multipart POST was being received — the request dropped, as an
/// HTTP/2 reset or a closed connection drops it — left the session `completing`: every
/// retry heard 409 `session_busy` until the session expired, an hour late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_session_whose_post_was_dropped_mid_body_takes_the_next_one() {
    a_session_whose_post_was_dropped_mid_body_takes_the_next_one("sqlite".into()).await;
}

// On PostgreSQL a write whose caller is gone is rolled back: the hand-back the dropped
// request had started never happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_session_whose_post_was_dropped_mid_body_takes_the_next_one_on_postgres() {
    let ledger = postgres::postgres_url("sessions_test").await;
    a_session_whose_post_was_dropped_mid_body_takes_the_next_one(ledger).await;
}

async fn a_session_whose_post_was_dropped_mid_body_takes_the_next_one(ledger: String) {
    use futures_util::StreamExt as _;
    let w = World::start_on(ledger, Limits::default()).await;
    let (id, token) = w.session(json!({})).await;
    let boundary = "docgate-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"doc.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n"
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(&pdf(200_000, 7)[..100_000]);
    // The first half of the form, then nothing: the browser went quiet, then away.
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(first)])
        .chain(futures_util::stream::pending());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let request = tokio::spawn(
        h2.post(w.url("/v1/uploads"))
            .bearer_auth(&token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    w.until_session_is(&id, &token, "completing").await;
    request.abort();
    w.until_session_is(&id, &token, "open").await;

    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(pdf(200_000, 7)).file_name("doc.pdf"),
    );
    let res = w
        .client
        .post(w.url("/v1/uploads"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(w.session_state(&id, &token).await, "accepted");
}

/// A PATCH dropped mid-body (an HTTP/2 reset: the browser paused or lost its connection)
/// kept its lock until the lock expired, 30 s later — the browser's resume heard 409
/// `upload_locked` for longer than tus clients retry — and kept none of the bytes that had
/// arrived (over HTTP/1.1 they were kept), so the browser started over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_patch_dropped_mid_body_keeps_its_bytes_and_not_the_lock() {
    use futures_util::StreamExt as _;
    let w = World::start().await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(300_000, 9);
    let path = w.create(&token, doc.len() as u64).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // A PATCH that sends some bytes and then nothing more, holding the lock; an empty
    // PATCH (which records nothing) tells when it holds it.
    let stalled = loop {
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(doc[..100_000].to_vec())])
            .chain(futures_util::stream::pending());
        let stalled = tokio::spawn(
            h2.patch(w.url(&path))
                .bearer_auth(&token)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", "0")
                .body(reqwest::Body::wrap_stream(body))
                .send(),
        );
        let locked = loop {
            let probe = w.patch(&token, &path, 0, &[]).await;
            if probe.status() == 409 || stalled.is_finished() {
                break probe.status() == 409;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the PATCH never took the lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if locked {
            break stalled;
        }
        // The probe held the lock when the stalled PATCH came: once more.
        assert!(
            tokio::time::Instant::now() < deadline,
            "the PATCH never took the lock"
        );
    };
    stalled.abort();
    let resumed = loop {
        let at = w.offset(&token, &path).await;
        let res = w.patch(&token, &path, at, &doc[at as usize..]).await;
        if res.status() != 409 {
            assert_eq!(at, 100_000, "the bytes that arrived are kept");
            break res;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped PATCH's lock held the upload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resumed.status(), 204, "{:?}", resumed.text().await);
    assert_eq!(w.offset(&token, &path).await, doc.len() as u64);
}

/// A PATCH the gateway cuts (its body went quiet) keeps what arrived and answers 204 with the
/// offset it reached — not the cut's 408, on which tus clients stop instead of resuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_the_gateway_cuts_keeps_its_bytes_for_the_client_to_resume() {
    use tokio::io::AsyncWriteExt;
    let w = World::start_with(Limits {
        body_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(300_000, 9);
    let path = w.create(&token, doc.len() as u64).await;
    let mut s = tokio::net::TcpStream::connect(w.gateway.addr)
        .await
        .expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        doc.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&doc[..100_000])
        .await
        .expect("part of the body");
    let answer = common::read_raw_answer(&mut s).await.to_lowercase();
    assert!(answer.starts_with("http/1.1 204"), "{answer}");
    assert!(answer.contains("upload-offset: 100000"), "{answer}");
    assert_eq!(
        w.offset(&token, &path).await,
        100_000,
        "what arrived is kept"
    );
    assert_eq!(
        w.patch(&token, &path, 100_000, &doc[100_000..])
            .await
            .status(),
        204
    );
}

/// A browser whose creation's answer was lost (its connection dropped) has no Location to
/// resume or terminate its document with: its next creation for the slot heard 409
/// `slot_taken` until the session expired. An unfinished, unlocked document is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_second_creation_replaces_a_document_its_browser_lost() {
    let w = World::start().await;
    let (id, token) = w.session(json!({})).await;
    let doc = pdf(300_000, 4);
    let lost = w.create(&token, doc.len() as u64).await;
    assert_eq!(
        w.patch(&token, &lost, 0, &doc[..100_000]).await.status(),
        204
    );
    let path = w.create(&token, doc.len() as u64).await;
    assert_ne!(path, lost);
    let stale = w.patch(&token, &lost, 100_000, &doc[100_000..]).await;
    assert_eq!(
        stale.status(),
        410,
        "the replaced document takes no more bytes"
    );
    assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
    let (status, receipt) = w.complete(&id, &token).await;
    assert!(status == 201 || status == 202, "{status} {receipt}");
    assert_eq!(
        receipt["documents"][0]["sha256"],
        hex::encode(Sha256::digest(&doc)),
        "{receipt}"
    );
}

/// Each PATCH's bytes are a spool file of their own: a client sending its document byte by
/// byte made one file (an inode, a block) per byte, without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_document_arrives_in_a_bounded_number_of_pieces() {
    const MOST: usize = 16;
    let w = World::start_with(Limits {
        max_tus_pieces: MOST,
        ..Limits::default()
    })
    .await;
    let (_, token) = w.session(json!({})).await;
    let doc = pdf(3000, 6);
    let path = w.create(&token, doc.len() as u64).await;
    assert_eq!(w.patch(&token, &path, 0, &doc[..1000]).await.status(), 204);
    for at in 1000..1000 + MOST - 1 {
        let res = w.patch(&token, &path, at as u64, &doc[at..at + 1]).await;
        assert_eq!(res.status(), 204, "piece at {at}");
    }
    let at = 1000 + MOST - 1;
    let refused = w.patch(&token, &path, at as u64, &doc[at..]).await;
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.expect("json");
    assert_eq!(problem["code"], "too_many_pieces");
    assert_eq!(
        w.offset(&token, &path).await,
        at as u64,
        "nothing else lost"
    );
}

/// A completion of a session already accepted answered the receipt whatever fields it sent:
/// the losers of concurrent completions with other fields were told theirs were used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_completing_an_accepted_session_again_with_other_fields_is_409() {
    let w = World::start().await;
    let (id, token) = w.session(json!({ "fields": {} })).await;
    let doc = pdf(50_000, 8);
    let path = w.create(&token, doc.len() as u64).await;
    assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
    let (first, receipt) = w
        .completion(&id, &token, Some(json!({ "payto": PAYTO })))
        .await;
    assert!(first == 201 || first == 202, "{first} {receipt}");
    // The receipt again (its status may have moved on since: 202, then 201).
    let (same, again) = w
        .completion(&id, &token, Some(json!({ "payto": PAYTO })))
        .await;
    assert!(same == 201 || same == 202, "{same} {again}");
    assert_eq!(again["id"], receipt["id"]);
    let (other, problem) = w
        .completion(
            &id,
            &token,
            Some(json!({ "payto": "payto://iban/GB33BUKB20201555555555" })),
        )
        .await;
    assert_eq!(other, 409, "{problem}");
    assert_eq!(problem["code"], "idempotency_conflict");
    let (bare, plain) = w.complete(&id, &token).await;
    assert!(bare == 201 || bare == 202, "{bare} {plain}");
    assert_eq!(plain["id"], receipt["id"]);
}

/// Every file under `dir`, however deep.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_document_refused_once_complete_leaves_no_piece_in_the_spool() {
    // A ZIP's entries are judged once the whole document is there, after its last piece is
    // spooled but before that piece is recorded: the refusal removed only recorded pieces,
    // so each creation left its whole document behind (64 per slot, past revocation).
    let w = World::start().await;
    let (id, token) = w.session(json!({})).await;
    let zip = common::zip_of(&[
        ("a.pdf", pdf(10_000, 5)),
        ("setup.pdf", common::exe(10_000)),
    ]);
    let spool = w._dir.path().join("gateway/spool/uploads");
    for round in 0..3 {
        let res = w
            .tus(reqwest::Method::POST, "/v1/tus/", &token)
            .header("upload-length", zip.len().to_string())
            .header("upload-metadata", "filename ZG9jcy56aXA=")
            .header("content-type", "application/offset+octet-stream")
            .body(zip.clone())
            .send()
            .await
            .expect("create");
        assert_eq!(res.status(), 415, "round {round}");
        let body: Value = res.json().await.expect("problem");
        assert_eq!(body["entry"], "setup.pdf", "{body}");
        assert_eq!(files_under(&spool), Vec::<std::path::PathBuf>::new());
    }
    // In pieces too: the refused last piece goes, and so do the recorded ones.
    let path = w
        .create_with(
            &token,
            ("upload-length", &zip.len().to_string()),
            "filename ZG9jcy56aXA=",
        )
        .await;
    let half = zip.len() / 2;
    assert_eq!(w.patch(&token, &path, 0, &zip[..half]).await.status(), 204);
    assert_eq!(files_under(&spool).len(), 1, "the first piece is kept");
    let res = w.patch(&token, &path, half as u64, &zip[half..]).await;
    assert_eq!(res.status(), 415);
    assert_eq!(files_under(&spool), Vec::<std::path::PathBuf>::new());
    let res = w
        .with_api_key(
            reqwest::Method::DELETE,
            &format!("/v1/upload-sessions/{id}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(files_under(&spool), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_spent_token_reads_its_upload_until_it_expires_and_nothing_is_cached() {
    let w = World::start().await;
    let (id, token) = w.session(json!({"expires_in": 3})).await;
    let doc = pdf(20_000, 9);
    let path = w.create(&token, doc.len() as u64).await;
    assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
    let res = w
        .completing(&id, &token, None)
        .send()
        .await
        .expect("complete");
    assert_eq!(res.status(), 201);
    // A receipt, a session's fields: no cache may keep them, no browser sniff them.
    for res in [
        res,
        w.with_api_key(reqwest::Method::GET, &format!("/v1/upload-sessions/{id}"))
            .await,
    ] {
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    // Spent, it still says where its upload stood (offset checked by `offset`)...
    assert_eq!(w.offset(&token, &path).await, doc.len() as u64);
    // ...until it expires, and then never again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let res = loop {
        let res = w
            .tus(reqwest::Method::HEAD, &path, &token)
            .send()
            .await
            .expect("head");
        if res.status() != 200 {
            break res;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_customer_the_browser_names_is_not_claimed_for_the_tenant() {
    // A session may leave its customer for the browser to fill in. Its end user could name
    // any customer, and the upload claimed it for the tenant for good: the tenant whose
    // customer it really is heard 403 for it from then on.
    let w = World::start().await;
    let victim = "payto://iban/GB33BUKB20201555555555";
    let w = &w;
    // A session without a customer, its document sent, completed with `fields` by the
    // browser's token, or by the tenant's API key.
    let complete = move |by_tenant: bool, fields: Value| async move {
        let (id, token) = w.session(json!({"fields": {}})).await;
        let doc = pdf(20_000, 3);
        let path = w.create(&token, doc.len() as u64).await;
        assert_eq!(w.patch(&token, &path, 0, &doc).await.status(), 204);
        let bearer = if by_tenant { KEY } else { token.as_str() };
        let res = w
            .completing(&id, bearer, Some(fields))
            .send()
            .await
            .expect("complete");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.expect("json"))
    };
    // The other tenant mints a session for `payto`: its status.
    let other_names = move |payto: &'static str| async move {
        w.client
            .post(w.url("/v1/upload-sessions"))
            .bearer_auth(OTHER_KEY)
            .json(&json!({"provider": "taler", "fields": {"payto": payto}}))
            .send()
            .await
            .expect("mint")
            .status()
    };
    let (status, body) = complete(false, json!({"payto": victim})).await;
    assert_eq!(status, 201, "a customer nobody has yet: delivered ({body})");
    // ...and not taken from the tenant whose customer it is.
    assert_eq!(
        other_names(victim).await,
        201,
        "the real tenant names its customer"
    );
    // Now it is the other tenant's: a browser naming it is refused, like an API upload.
    let (status, body) = complete(false, json!({"payto": victim})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (403, Some("payto")),
        "{body}"
    );
    // A customer the tenant named itself (claimed when it minted) the browser may name.
    w.session(json!({})).await;
    let (status, body) = complete(false, json!({"payto": PAYTO})).await;
    assert_eq!(status, 201, "{body}");
    // Completed by the tenant's backend (its API key), the customer it names is its own.
    let theirs = "payto://iban/FR1420041010050500013M02606";
    let (status, body) = complete(true, json!({"payto": theirs})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        other_names(theirs).await,
        403,
        "claimed by the tenant that named it"
    );
}
