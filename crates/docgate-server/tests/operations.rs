//! Operations over HTTP against a real gateway and the Taler emulator: listing with keyset
//! pages, history, retry after a provider outage, cancel, erasure, and tenant isolation of
//! all of them. The gateway scenario runs on SQLite and on PostgreSQL (the local server,
//! `DOCGATE_TEST_POSTGRES_URL` to override; each run in a schema of its own).

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use docgate_core::Secret;
use docgate_emulator::FaultPlan;
use docgate_server::{
    config::{DeliverySettings, Limits},
    ledger::{Control, Lease, Ledger, ListQuery, NewUpload, SqlLedger, UploadStatus},
    registry::Registry,
    tenants::{Tenant, Tenants},
    Gateway, Setup,
};
use serde_json::{json, Value};
use sqlx::{Column, Connection, Row};

const ACME: &str = "acme-key";
const GLOBEX: &str = "globex-key";
const PAYTO: &str = "payto://iban/DE89370400440532013000";
/// The person whose upload is erased: their account and their file's name must vanish.
const ERASED_IBAN: &str = "GB82WEST12345698765432";
const ERASED_FILENAME: &str = "jane-roe-passport-1984.pdf";

#[path = "support/postgres.rs"]
mod postgres;

struct World {
    gateway: Gateway,
    taler: docgate_taler::emulator::Emulator,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(ledger_url: String) -> World {
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
        for (key, name) in [(ACME, "acme"), (GLOBEX, "globex")] {
            tenants.add(&Secret::new(key), Tenant::new(name, vec!["taler".into()]));
        }
        let setup = Setup {
            listen: "127.0.0.1:0".parse().expect("addr"),
            listener: None,
            data_dir: dir.path().join("gateway"),
            ledger_url,
            spool_dir: dir.path().join("gateway/spool"),
            limits: Limits::default(),
            delivery: DeliverySettings {
                // Give up quickly, and keep the documents: a retry needs them.
                max_attempts: 2,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(50),
                poll_interval: Duration::from_millis(50),
                retention: Duration::from_secs(3600),
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
            taler,
            client: reqwest::Client::new(),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway/spool/uploads")
    }

    /// Spooled objects of upload `id`.
    fn spooled(&self, id: &str) -> Vec<String> {
        std::fs::read_dir(self.spool())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Upload one PDF for `payto` as `filename`; the upload's id and the answer.
    async fn upload(&self, seed: u8, payto: &str, filename: &str) -> (String, u16, Value) {
        let part = reqwest::multipart::Part::bytes(pdf(2000, seed)).file_name(filename.to_owned());
        let form = reqwest::multipart::Form::new()
            .text("provider", "taler")
            .text("payto", payto.to_owned())
            .part("file", part);
        let res = self
            .client
            .post(self.url("/v1/uploads"))
            .bearer_auth(ACME)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("json");
        let id = body["id"]
            .as_str()
            .or_else(|| body["upload_id"].as_str())
            .unwrap_or_else(|| panic!("no upload id in {body}"))
            .to_owned();
        (id, status, body)
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
        let res = self
            .client
            .request(method, self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, key).await
    }

    /// Wait until upload `id` is final; its receipt.
    async fn settled(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (status, r) = self.get(&format!("/v1/uploads/{id}"), ACME).await;
            assert_eq!(status, 200, "{r}");
            if ["delivered", "duplicate", "rejected", "failed", "canceled"]
                .contains(&r["status"].as_str().unwrap_or(""))
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("upload {id} never settled");
    }

    async fn events(&self, id: &str) -> Vec<String> {
        let (status, h) = self.get(&format!("/v1/uploads/{id}/events"), ACME).await;
        assert_eq!(status, 200, "{h}");
        h["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// A PDF whose content depends on `seed`.
fn pdf(len: usize, seed: u8) -> Vec<u8> {
    let mut v = format!("%PDF-1.7\n% operations test {seed}\n").into_bytes();
    let mut x: u32 = 0x2545_f491 ^ u32::from(seed);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x & 0xff) as u8);
    }
    v
}

/// Every text value of every table of the SQLite ledger at `path`.
async fn dump_sqlite(path: &Path) -> String {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open ledger");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .expect("tables");
    let mut out = String::new();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT * FROM \"{table}\""))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        for row in rows {
            for col in row.columns() {
                let i = col.ordinal();
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    out.push_str(&text);
                } else if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The whole listing for `query`, page by page (`limit` per page): ids in order.
async fn all_pages(w: &World, query: &str, key: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/v1/uploads?{query}&cursor={c}"),
            None => format!("/v1/uploads?{query}"),
        };
        let (status, page) = w.get(&path, key).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            ids.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
    panic!("the listing never ended");
}

async fn scenario(w: World, sqlite_file: Option<&Path>) {
    // Three uploads fail: the provider answers 500 to every attempt.
    w.taler.faults.fail_next(u32::MAX, 500);
    let mut failed = Vec::new();
    for seed in 0..3u8 {
        let (id, status, body) = w.upload(seed, PAYTO, "scan.pdf").await;
        assert!(status == 502 || status == 202, "{status} {body}");
        assert_eq!(w.settled(&id).await["status"], "failed");
        failed.push(id);
    }
    w.taler.faults.set(FaultPlan::default());
    let (id_ok, status, body) = w.upload(10, PAYTO, "ok.pdf").await;
    assert_eq!(status, 201, "{body}");
    let (id_erase, status, body) = w
        .upload(11, &format!("payto://iban/{ERASED_IBAN}"), ERASED_FILENAME)
        .await;
    assert_eq!(status, 201, "{body}");

    // ?status=failed lists exactly the three, newest first.
    let listed = all_pages(&w, "status=failed", ACME).await;
    let mut newest_first = failed.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let (_, page) = w.get("/v1/uploads?status=failed", ACME).await;
    let item = &page["items"][0];
    assert_eq!(item["status"], "failed");
    assert_eq!(item["provider"], "taler");
    assert!(item.get("documents").is_some() && item.get("prepared").is_none());

    // Pages of two: every upload exactly once, no gaps, newest first.
    let paged = all_pages(&w, "limit=2", ACME).await;
    let one_page = all_pages(&w, "limit=500", ACME).await;
    assert_eq!(paged, one_page);
    assert_eq!(paged.len(), 5);
    assert_eq!(
        paged.iter().collect::<HashSet<_>>().len(),
        5,
        "no duplicates"
    );
    assert_eq!(paged[0], id_erase, "newest first");
    assert_eq!(paged[4], failed[0]);
    let (_, page) = w
        .get("/v1/uploads?provider=taler&status=delivered", ACME)
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));

    // Another tenant sees none of it and cannot act on it.
    let (status, page) = w.get("/v1/uploads", GLOBEX).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["next_cursor"], Value::Null);
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/uploads/{}", failed[0])),
        (
            reqwest::Method::GET,
            format!("/v1/uploads/{}/events", failed[0]),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/uploads/{}/retry", failed[0]),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/uploads/{}/cancel", failed[0]),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/uploads/{}", failed[0]),
        ),
        (reqwest::Method::DELETE, format!("/v1/uploads/{}", id_ok)),
    ] {
        let (status, body) = w.call(method.clone(), &path, GLOBEX).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    // …and an unknown id answers the same.
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{unknown}/retry"),
            ACME,
        )
        .await;
    assert_eq!(status, 404);
    // Nothing of acme's changed by globex's attempts.
    assert_eq!(w.settled(&failed[0]).await["status"], "failed");
    assert_eq!(w.spooled(&id_ok).len(), 1);

    // Cancel of a final upload: 409.
    for id in [&failed[1], &id_ok] {
        let (status, body) = w
            .call(
                reqwest::Method::POST,
                &format!("/v1/uploads/{id}/cancel"),
                ACME,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "not_cancelable");
    }
    // Retry of a delivered upload: 409.
    let (status, body) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id_ok}/retry"),
            ACME,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "not_retryable");

    // The fault has cleared: a retry delivers under the same id.
    let stored_before = w.taler.stored(PAYTO).expect("stored").len();
    let (status, body) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{}/retry", failed[0]),
            ACME,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], failed[0].as_str());
    let r = w.settled(&failed[0]).await;
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["id"], failed[0].as_str());
    assert_eq!(
        w.taler.stored(PAYTO).expect("stored").len(),
        stored_before + 1
    );
    let kinds = w.events(&failed[0]).await;
    let retried = kinds
        .iter()
        .position(|k| k == "retried")
        .expect("retried event");
    let delivered = kinds
        .iter()
        .position(|k| k == "delivered")
        .expect("delivered event");
    assert!(kinds[..retried].contains(&"failed".to_owned()), "{kinds:?}");
    assert!(retried < delivered, "{kinds:?}");
    assert_eq!(kinds[0], "received");
    // A second retry of the now delivered upload is refused.
    let (status, _) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{}/retry", failed[0]),
            ACME,
        )
        .await;
    assert_eq!(status, 409);

    // A failed upload whose documents are gone cannot be retried.
    for f in w.spooled(&failed[1]) {
        std::fs::remove_file(w.spool().join(f)).expect("remove spooled document");
    }
    let (status, body) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{}/retry", failed[1]),
            ACME,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "documents_gone");

    // Erasure of a delivered upload.
    assert_eq!(w.spooled(&id_erase).len(), 1, "spooled before the erasure");
    if let Some(file) = sqlite_file {
        let dump = dump_sqlite(file).await;
        assert!(
            dump.contains(ERASED_IBAN),
            "the dump sees the metadata before"
        );
        assert!(
            dump.contains(ERASED_FILENAME),
            "the dump sees the filename before"
        );
    }
    let (status, first) = w
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/uploads/{id_erase}"),
            ACME,
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], id_erase.as_str());
    assert_eq!(first["status"], "delivered");
    assert!(first["erased_at"].is_string(), "{first}");
    assert!(
        first["documents"][0]["sha256"].is_string(),
        "digests kept: {first}"
    );
    assert_eq!(first["documents"][0].get("filename"), Some(&Value::Null));
    assert_eq!(first["provider_reference"], Value::Null);
    assert!(w.spooled(&id_erase).is_empty(), "spool files removed");
    let text = first.to_string();
    assert!(!text.contains(ERASED_IBAN) && !text.contains(ERASED_FILENAME));
    // Idempotent: the same tombstone again.
    let (status, second) = w
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/uploads/{id_erase}"),
            ACME,
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second, first);
    let (status, shown) = w.get(&format!("/v1/uploads/{id_erase}"), ACME).await;
    assert_eq!(status, 200);
    assert_eq!(shown, first);
    let kinds = w.events(&id_erase).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "erased").count(),
        1,
        "{kinds:?}"
    );
    // The listing shows the tombstone.
    let (_, page) = w.get("/v1/uploads?limit=1", ACME).await;
    assert_eq!(page["items"][0]["id"], id_erase.as_str());
    assert!(page["items"][0]["erased_at"].is_string());
    if let Some(file) = sqlite_file {
        let dump = dump_sqlite(file).await;
        assert!(
            !dump.contains(ERASED_IBAN),
            "metadata value left in the ledger"
        );
        assert!(
            !dump.contains(ERASED_FILENAME),
            "filename left in the ledger"
        );
        assert!(dump.contains(&id_erase), "the tombstone stays");
        // Byte for byte too, the WAL included: its older frames held the values until a
        // checkpoint after the next one.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = file.as_os_str().to_owned();
            name.push(suffix);
            let bytes = std::fs::read(&name).unwrap_or_default();
            for value in [ERASED_IBAN, ERASED_FILENAME] {
                assert!(
                    memchr::memmem::find(&bytes, value.as_bytes()).is_none(),
                    "regression: `{value}` left in ledger.sqlite{suffix}"
                );
            }
        }
    }
    // Erasure of a failed upload: its error texts are redacted from the history too.
    let (status, _) = w
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/uploads/{}", failed[2]),
            ACME,
        )
        .await;
    assert_eq!(status, 200);
    let (_, h) = w
        .get(&format!("/v1/uploads/{}/events", failed[2]), ACME)
        .await;
    for e in h["events"].as_array().expect("events") {
        assert!(e["detail"].get("error").is_none(), "{e}");
        assert!(e["detail"].get("reason").is_none(), "{e}");
    }
    // A retry of an erased upload: its documents are gone.
    let (status, body) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{}/retry", failed[2]),
            ACME,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "documents_gone");
}

#[tokio::test]
async fn operations_on_sqlite() {
    let w = World::start("sqlite".into()).await;
    let file = w.dir.path().join("gateway/ledger.sqlite");
    scenario(w, Some(&file)).await;
}

#[tokio::test]
async fn operations_on_postgres() {
    let w = World::start(postgres::postgres_url("ops_test").await).await;
    scenario(w, None).await;
}

#[tokio::test]
async fn bad_listing_parameters_and_session_tokens_are_refused() {
    let w = World::start("sqlite".into()).await;
    for (query, code, parameter) in [
        ("limit=0", "invalid_query", "limit"),
        ("limit=501", "invalid_query", "limit"),
        ("limit=ten", "invalid_query", "limit"),
        ("status=lost", "invalid_query", "status"),
        ("created_after=yesterday", "invalid_query", "created_after"),
        ("colour=red", "invalid_query", "colour"),
        ("status=failed&status=failed", "invalid_query", "status"),
        ("cursor=not-a-cursor!", "invalid_cursor", "cursor"),
        ("cursor=MTIzOi4uL2V0Yw", "invalid_cursor", "cursor"),
    ] {
        let res = w
            .client
            .get(w.url(&format!("/v1/uploads?{query}")))
            .bearer_auth(ACME)
            .send()
            .await
            .expect("list");
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["code"], code, "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    let (status, _) = w.get("/v1/uploads", "wrong-key").await;
    assert_eq!(status, 401);

    // A browser's session token is not an API key: no listing, no erasure with it.
    let res = w
        .client
        .post(w.url("/v1/upload-sessions"))
        .bearer_auth(ACME)
        .json(&json!({"provider": "taler", "fields": {"payto": PAYTO}}))
        .send()
        .await
        .expect("mint");
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.expect("json");
    let token = session["token"].as_str().expect("token");
    assert!(token.starts_with("dgs_"));
    let (id, status, _) = w.upload(1, PAYTO, "a.pdf").await;
    assert_eq!(status, 201);
    for (method, path) in [
        (reqwest::Method::GET, "/v1/uploads".to_owned()),
        (reqwest::Method::GET, format!("/v1/uploads/{id}/events")),
        (reqwest::Method::POST, format!("/v1/uploads/{id}/cancel")),
        (reqwest::Method::DELETE, format!("/v1/uploads/{id}")),
    ] {
        let (status, body) = w.call(method.clone(), &path, token).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    assert_eq!(w.spooled(&id).len(), 1, "nothing erased");
}

fn new_upload(id: &str, tenant: &str, now: i64, lease: Option<Lease>) -> NewUpload {
    NewUpload {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        provider: "taler".into(),
        idempotency_key: None,
        fingerprint: "f".into(),
        prepared: docgate_core::Prepared(json!({"payto": PAYTO})),
        documents: Vec::new(),
        now,
        lease,
        first_attempt: false,
        notify: false,
        subjects: Vec::new(),
        session: None,
    }
}

/// Cancel against the delivery's claims, and keyset pages with ties, on both ledgers.
async fn ledger_controls(ledger: SqlLedger) {
    let t0 = 1_700_000_000_000i64;
    // Pending: canceled at once, never claimed afterwards.
    ledger
        .insert(new_upload(
            "00000000-0000-4000-8000-000000000001",
            "acme",
            t0,
            None,
        ))
        .await
        .expect("insert");
    let Control::Done(rec) = ledger
        .cancel("00000000-0000-4000-8000-000000000001", t0 + 1)
        .await
        .expect("cancel")
    else {
        panic!("a pending upload cancels");
    };
    assert_eq!(rec.status, UploadStatus::Canceled);
    let lease = Lease {
        owner: "node:a".into(),
        until: t0 + 60_000,
    };
    let claimed = ledger
        .claim_due(&lease, t0 + 10, 10, &["taler".into()])
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "a canceled upload is not claimed");
    assert!(matches!(
        ledger
            .cancel("00000000-0000-4000-8000-000000000001", t0 + 2)
            .await,
        Ok(Control::Refused(_))
    ));

    // In flight: flagged; its holder records the attempt and stops; no further attempt.
    let id = "00000000-0000-4000-8000-000000000002";
    ledger
        .insert(new_upload(id, "acme", t0, Some(lease.clone())))
        .await
        .expect("insert");
    assert_eq!(
        ledger
            .start_attempt(id, &lease, t0 + 1)
            .await
            .expect("start"),
        Some(1)
    );
    let Control::Done(rec) = ledger.cancel(id, t0 + 2).await.expect("cancel") else {
        panic!("an upload in flight accepts a cancel");
    };
    assert_eq!(rec.status, UploadStatus::Delivering);
    assert!(rec.cancel_requested);
    assert_eq!(
        ledger
            .start_attempt(id, &lease, t0 + 3)
            .await
            .expect("start"),
        None
    );
    let rec = ledger.get(id).await.expect("get").expect("row");
    assert_eq!(rec.status, UploadStatus::Canceled);
    assert_eq!(rec.lease_owner, None);
    let kinds: Vec<String> = ledger
        .history(id)
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["received", "cancel_requested", "canceled"]);
    // A canceled upload is not retried.
    assert!(matches!(
        ledger.retry(id, t0 + 4).await,
        Ok(Control::Refused(_))
    ));

    // Keyset pages: ten uploads, several in the same millisecond, pages of three.
    for i in 0..10i64 {
        let id = format!("10000000-0000-4000-8000-{:012}", i);
        ledger
            .insert(new_upload(&id, "acme", t0 + 100 + i / 3, None))
            .await
            .expect("insert");
    }
    ledger
        .insert(new_upload(
            "20000000-0000-4000-8000-000000000000",
            "globex",
            t0 + 100,
            None,
        ))
        .await
        .expect("insert");
    let mut q = ListQuery {
        tenant: "acme".into(),
        status: Some(UploadStatus::Received),
        provider: None,
        created_after: Some(t0 + 100),
        created_before: None,
        after: None,
        limit: 3,
    };
    let mut seen = Vec::new();
    loop {
        let page = ledger.list_uploads(&q).await.expect("list");
        seen.extend(page.iter().map(|r| (r.created_at, r.id.clone())));
        match page.last() {
            Some(last) if page.len() == 3 => q.after = Some((last.created_at, last.id.clone())),
            _ => break,
        }
    }
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(seen, expected, "newest first, no duplicates");
    assert_eq!(seen.len(), 10, "no gaps, no other tenant");
}

#[tokio::test]
async fn ledger_controls_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = SqlLedger::connect(&SqlLedger::sqlite_url(&dir.path().join("l.sqlite")))
        .await
        .expect("ledger");
    ledger_controls(ledger).await;
}

#[tokio::test]
async fn ledger_controls_on_postgres() {
    let ledger = SqlLedger::connect(&postgres::postgres_url("ops_test").await)
        .await
        .expect("ledger");
    ledger_controls(ledger).await;
}

impl World {
    /// Upload one PDF asking for an immediate 202; its id.
    async fn upload_async(&self, seed: u8) -> String {
        let part = reqwest::multipart::Part::bytes(pdf(2000, seed)).file_name("scan.pdf");
        let form = reqwest::multipart::Form::new()
            .text("provider", "taler")
            .text("payto", PAYTO)
            .part("file", part);
        let res = self
            .client
            .post(self.url("/v1/uploads"))
            .bearer_auth(ACME)
            .header("prefer", "respond-async")
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(res.status(), 202);
        let body: Value = res.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Wait until upload `id` has an attempt in flight at the provider.
    async fn in_flight(&self, id: &str, requests_before: u64) {
        for _ in 0..100 {
            let (_, r) = self.get(&format!("/v1/uploads/{id}"), ACME).await;
            if r["status"] == "delivering" && self.taler.faults.requests() > requests_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("upload {id} never reached the provider");
    }
}

/// A cancel or an erasure while an attempt is at the provider: the attempt finishes and is
/// recorded, and no other follows.
#[tokio::test]
async fn cancel_and_erase_in_flight_let_the_attempt_finish_and_stop_there() {
    let w = World::start("sqlite".into()).await;

    // The attempt fails: without the cancel a second attempt would follow (max_attempts 2).
    w.taler.faults.set(FaultPlan {
        delay_ms: 600,
        fail_next: u32::MAX,
        fail_status: 500,
        ..FaultPlan::default()
    });
    let before = w.taler.faults.requests();
    let id = w.upload_async(1).await;
    w.in_flight(&id, before).await;
    let (status, body) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id}/cancel"),
            ACME,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["cancel_requested"], true);
    let r = w.settled(&id).await;
    assert_eq!(r["status"], "canceled", "{r}");
    assert_eq!(r["attempts"], 1);
    assert_eq!(
        w.taler.faults.requests() - before,
        1,
        "no attempt after the cancel"
    );
    let kinds = w.events(&id).await;
    assert_eq!(
        kinds,
        ["received", "cancel_requested", "attempt", "canceled"],
        "{kinds:?}"
    );
    // Final now: a second cancel is refused, and it is not retried by the worker.
    let (status, _) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id}/cancel"),
            ACME,
        )
        .await;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.taler.faults.requests() - before, 1);

    // The attempt succeeds: the upload ends delivered, the cancel in its history.
    w.taler.faults.set(FaultPlan {
        delay_ms: 600,
        ..FaultPlan::default()
    });
    let before = w.taler.faults.requests();
    let id = w.upload_async(2).await;
    w.in_flight(&id, before).await;
    let (status, _) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id}/cancel"),
            ACME,
        )
        .await;
    assert_eq!(status, 202);
    let r = w.settled(&id).await;
    assert_eq!(r["status"], "delivered", "{r}");
    let kinds = w.events(&id).await;
    assert_eq!(
        kinds,
        ["received", "cancel_requested", "attempt", "delivered"],
        "{kinds:?}"
    );

    // Erased in flight: the delivery ends, recorded without the provider's reference.
    let before = w.taler.faults.requests();
    let id = w.upload_async(3).await;
    w.in_flight(&id, before).await;
    let (status, tombstone) = w
        .call(reqwest::Method::DELETE, &format!("/v1/uploads/{id}"), ACME)
        .await;
    assert_eq!(status, 200, "{tombstone}");
    assert!(tombstone["erased_at"].is_string());
    assert!(w.spooled(&id).is_empty());
    let r = w.settled(&id).await;
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["provider_reference"], Value::Null, "{r}");
    assert!(r["erased_at"].is_string());
    let kinds = w.events(&id).await;
    assert_eq!(
        kinds,
        [
            "received",
            "cancel_requested",
            "erased",
            "attempt",
            "delivered"
        ],
        "{kinds:?}"
    );
    assert_eq!(w.taler.faults.requests() - before, 1);
}

/// An outage of the spool alone (its store unreachable, or erring) used up the upload's
/// attempts at the provider: the upload ended `failed` and its documents were removed,
/// although the provider had never had a whole body. An attempt that cannot read the spool
/// is now not counted; the upload waits for the spool and is delivered once it is back.
#[tokio::test]
async fn regression_attempts_that_cannot_read_the_spool_are_not_counted_and_lose_nothing() {
    let w = World::start("sqlite".into()).await;
    // The first attempt reaches the provider and fails: one of the upload's two attempts.
    w.taler.faults.set(FaultPlan {
        delay_ms: 400,
        fail_next: 1,
        fail_status: 503,
        ..FaultPlan::default()
    });
    let before = w.taler.faults.requests();
    let id = w.upload_async(7).await;
    w.in_flight(&id, before).await;
    w.taler.faults.set(FaultPlan::default());
    // Meanwhile the spool fails every read of the upload (each object is a directory now).
    let names = w.spooled(&id);
    assert!(!names.is_empty(), "nothing spooled for {id}");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = names
        .iter()
        .map(|name| {
            let path = w.spool().join(name);
            let bytes = std::fs::read(&path).expect("spooled bytes");
            std::fs::remove_file(&path).expect("remove");
            std::fs::create_dir(&path).expect("a directory in its place");
            (path, bytes)
        })
        .collect();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, h) = w.get(&format!("/v1/uploads/{id}/events"), ACME).await;
        assert_eq!(status, 200, "{h}");
        let uncounted = h["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "attempt" && e["detail"]["not_counted"] == true)
            .count();
        if uncounted >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempts that could not read the spool: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r) = w.get(&format!("/v1/uploads/{id}"), ACME).await;
    assert!(
        ["retry_scheduled", "delivering"].contains(&r["status"].as_str().unwrap_or("")),
        "the upload waits for its spool: {r}"
    );

    // The spool is back: delivered, with the first attempt and the last one counted.
    for (path, bytes) in saved {
        std::fs::remove_dir(&path).expect("remove the directory");
        std::fs::write(&path, bytes).expect("restore");
    }
    let r = w.settled(&id).await;
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
}
