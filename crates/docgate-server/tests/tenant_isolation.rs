//! Two tenants on one gateway: neither reaches anything of the other's — uploads, receipts,
//! idempotency keys, OST users, KYC status, webhook events — and direct-to-S3 posts are off
//! unless a tenant's configuration turns them on.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use docgate_core::Secret;
use docgate_server::{
    config::{DeliverySettings, Limits},
    registry::Registry,
    tenants::{Tenant, Tenants},
    Gateway, Setup,
};
use serde_json::{json, Map, Value};

const ACME: &str = "acme-key";
const GLOBEX: &str = "globex-key";

struct World {
    gateway: Gateway,
    ost: docgate_ost::emulator::Emulator,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn tenant(name: &str, presigned_post: bool) -> Tenant {
    let mut ost = toml::Table::new();
    ost.insert(
        "presigned_post".into(),
        toml::Value::Boolean(presigned_post),
    );
    Tenant {
        options: Arc::new(BTreeMap::from([("ost".to_owned(), ost)])),
        ..Tenant::new(name, vec!["ost".into()])
    }
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let ost = docgate_ost::emulator::start(docgate_ost::emulator::EmulatorOptions::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("ost"),
        ))
        .await
        .expect("ost emulator");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        ost.set_webhook_url(Some(format!("http://{addr}/v1/webhooks/ost")));
        let mut registry = Registry::default();
        registry.insert(Arc::new(
            docgate_ost::OstProvider::new(ost.sandbox_config()).expect("provider"),
        ));
        let mut tenants = Tenants::default();
        tenants.add(&Secret::new(ACME), tenant("acme", true));
        tenants.add(&Secret::new(GLOBEX), tenant("globex", false));
        let setup = Setup {
            listen: addr,
            listener: Some(listener),
            data_dir: dir.path().join("gateway"),
            ledger_url: "sqlite".into(),
            spool_dir: dir.path().join("gateway/spool"),
            limits: Limits::default(),
            delivery: DeliverySettings::default(),
            tenants,
            registry,
            web: Default::default(),
            spool_encryption: None,
            spool_s3: None,
        };
        World {
            gateway: Gateway::start(setup).await.expect("gateway"),
            ost,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("get");
        (res.status().as_u16(), res.json().await.expect("json"))
    }

    async fn post_json(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("post");
        (res.status().as_u16(), res.json().await.expect("json"))
    }

    /// An OST upload of an ID document and a selfie by `key`'s tenant: its receipt.
    async fn upload_selfie(&self, key: &str, idempotency: &str, seed: u32) -> (u16, Value) {
        let part =
            |seed| reqwest::multipart::Part::bytes(jpeg(210 * 1024, seed)).file_name("doc.jpg");
        let form = reqwest::multipart::Form::new()
            .text("provider", "ost")
            .part("document_id", part(seed))
            .part("selfie", part(seed + 1000));
        let res = self
            .client
            .post(self.url("/v1/uploads"))
            .bearer_auth(key)
            .header("idempotency-key", idempotency)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        (res.status().as_u16(), res.json().await.expect("json"))
    }
}

/// A complete, valid KYC submission naming the documents of `receipt`.
fn kyc(first_name: &str, receipt: &Value) -> Value {
    let keys = &receipt["provider_reference"];
    json!({
        "first_name": first_name, "last_name": "Lovelace", "birthdate": "10/12/1990",
        "country": "india", "nationality": "indian", "document_id_number": "arqpa7659a",
        "document_id_file_path": keys["document_id"], "selfie_file_path": keys["selfie"],
        "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
        "estimated_participation_amount": "2", "street_address": "1 Main St", "city": "Pune",
        "state": "MH", "postal_code": "411001"
    })
}

/// A JPEG of exactly `len` bytes (a JFIF header, noise, and an end-of-image marker).
fn jpeg(len: usize, seed: u32) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01,
    ];
    let mut x = seed | 1;
    while v.len() < len - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x >> 8) as u8);
    }
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_idempotency_keys_are_per_tenant() {
    let w = World::start().await;
    let (status, acme) = w.upload_selfie(ACME, "same-key", 1).await;
    assert_eq!(status, 201, "{acme}");
    let id = acme["id"].as_str().expect("id");
    let (status, body) = w.get(GLOBEX, &format!("/v1/uploads/{id}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // The same key from another tenant is another upload, not a replay or a conflict.
    let (status, globex) = w.upload_selfie(GLOBEX, "same-key", 2).await;
    assert_eq!(status, 201, "{globex}");
    assert_ne!(globex["id"], acme["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_second_tenant_cannot_take_over_an_ost_user() {
    let w = World::start().await;
    let (_, acme) = w.upload_selfie(ACME, "a1", 3).await;
    let (status, body) = w
        .post_json(ACME, "/v1/providers/ost/users/11001/kyc", kyc("Ada", &acme))
        .await;
    assert_eq!(status, 200, "acme's own user and keys: {body}");

    let (_, globex) = w.upload_selfie(GLOBEX, "g1", 4).await;
    let calls_before = w.ost.faults.requests();
    let (status, body) = w
        .post_json(
            GLOBEX,
            "/v1/providers/ost/users/11001/kyc",
            kyc("Eve", &globex),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert_eq!(w.ost.faults.requests(), calls_before, "OST was not called");
    let (status, _) = w.get(GLOBEX, "/v1/providers/ost/users/11001/kyc").await;
    assert_eq!(status, 404, "globex cannot read acme's user's status");
    let (status, body) = w.get(ACME, "/v1/providers/ost/users/011001/kyc").await;
    assert_eq!(
        status, 200,
        "acme reads its user (leading zeros are the same id): {body}"
    );
    // Nor can acme point OST at globex's documents.
    let (status, body) = w
        .post_json(
            ACME,
            "/v1/providers/ost/users/11001/kyc",
            kyc("Ada", &globex),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

/// Regression: a KYC submission claimed its OST user before OST was asked, and the claim
/// stayed when OST refused it. OST's user ids count up in one account all tenants share, so
/// a tenant could claim the ids OST would give another tenant's users next — that tenant then
/// heard 404 for its own users, and the first read their status, details and events. A claim
/// made for a submission OST refuses goes with the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_submission_ost_refuses_does_not_claim_the_user() {
    let w = World::start().await;
    let (_, acme) = w.upload_selfie(ACME, "a1", 7).await;
    let (_, globex) = w.upload_selfie(GLOBEX, "g1", 8).await;
    // User 999999 does not exist (yet): OST answers 404.
    let (status, body) = w
        .post_json(
            ACME,
            "/v1/providers/ost/users/999999/kyc",
            kyc("Ada", &acme),
        )
        .await;
    assert_eq!(body["code"], "provider_rejected", "{status} {body}");
    let (status, body) = w.get(ACME, "/v1/providers/ost/users/999999/kyc").await;
    assert_eq!(status, 404, "not acme's: {body}");
    // Another tenant is not shut out of that id.
    let (status, body) = w
        .post_json(
            GLOBEX,
            "/v1/providers/ost/users/999999/kyc",
            kyc("Bob", &globex),
        )
        .await;
    assert_ne!(status, 404, "globex may claim it: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_a_user_are_shown_only_to_the_tenant_that_owns_it() {
    let w = World::start().await;
    let (_, acme) = w.upload_selfie(ACME, "a1", 5).await;
    let (status, body) = w
        .post_json(ACME, "/v1/providers/ost/users/11001/kyc", kyc("Ada", &acme))
        .await;
    assert_eq!(status, 200, "{body}");
    let url = w.url("/v1/webhooks/ost");
    let event: Map<String, Value> = serde_json::from_value(json!({
        "created_at": "1541144915",
        "data": {"result_type": "user_kyc", "user_kyc": {"user_id": 11001, "id": 7, "kyc_status": "approved", "email": "ada@example.com"}},
        "description": "KYC approved", "id": "991", "name": "kyc_status_approved",
        "source": "web", "type": "user_kyc", "version": "v1"
    }))
    .expect("event");
    let now = docgate_core::now_ms() / 1000;
    let signed = docgate_ost::webhook::sign_event(w.ost.webhook_secret(), &url, &event, now);
    let res = w
        .client
        .post(&url)
        .json(&signed)
        .send()
        .await
        .expect("webhook");
    assert_eq!(res.status(), 200);
    let seen = |body: &Value| {
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event_id"] == "991")
    };
    let (_, acme_events) = w.get(ACME, "/v1/providers/ost/events").await;
    assert!(seen(&acme_events), "{acme_events}");
    let (_, globex_events) = w.get(GLOBEX, "/v1/providers/ost/events").await;
    assert!(
        !seen(&globex_events),
        "globex must not see acme's user's PII: {globex_events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kyc_submission_missing_three_fields_names_all_three_and_ost_is_never_called() {
    let w = World::start().await;
    let (_, acme) = w.upload_selfie(ACME, "a1", 6).await;
    let mut body = kyc("Ada", &acme);
    for field in ["last_name", "birthdate", "city"] {
        body.as_object_mut().expect("object").remove(field);
    }
    let calls_before = w.ost.faults.requests();
    let (status, problem) = w
        .post_json(ACME, "/v1/providers/ost/users/11001/kyc", body)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_metadata")),
        "{problem}"
    );
    let mut named: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["birthdate", "city", "last_name"]);
    assert_eq!(w.ost.faults.requests(), calls_before, "OST was not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_s3_posts_are_off_unless_the_tenant_turns_them_on() {
    let w = World::start().await;
    let files = json!({"files": {"selfie": "image/jpeg"}});
    let (status, body) = w
        .post_json(GLOBEX, "/v1/providers/ost/presigned-post", files.clone())
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = w
        .post_json(ACME, "/v1/providers/ost/presigned-post", files)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unauthenticated_webhook_route_has_a_small_body_limit_answered_in_problem_json() {
    let w = World::start().await;
    let res = w
        .client
        .post(w.url("/v1/webhooks/ost"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("answered");
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "regression: the webhook's 413 used to be text/plain"
    );
}
