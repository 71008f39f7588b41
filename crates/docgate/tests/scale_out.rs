//! A fleet with nothing on any replica's disk that another needs: two `docgate serve`
//! processes with their own data directories, one PostgreSQL ledger, one S3 spool (a real S3
//! server, s3s + s3s-fs, checking SigV4) with every document sealed.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use docgate_emulator::FaultPlan;
use docgate_ost::emulator::{S3Server, S3Settings};
use serde_json::Value;
use sqlx::{Executor, Row};

const KEY: &str = "scale-out-test-key";
const BUCKET: &str = "docgate-fleet";
const S3_ID: &str = "AKIAFLEETTEST";
const S3_SECRET: &str = "fleet-test-secret";
/// Planted in every document: it must appear nowhere docgate keeps data.
const MARKER: &[u8] = b"MARKER-PASSPORT-P7734129";

async fn s3(root: PathBuf) -> S3Server {
    S3Server::start(&S3Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        root,
        bucket: BUCKET.into(),
        access_key: S3_ID.into(),
        secret_key: S3_SECRET.into(),
        max_post_bytes: 1 << 20,
        max_url_lifetime: Duration::from_secs(900),
    })
    .await
    .expect("s3 server")
}

/// The fleet's one config file: PostgreSQL, the S3 spool, a spool key in a file.
fn config(
    dir: &Path,
    emulator: &docgate_taler::emulator::Emulator,
    ledger: &str,
    s3_url: &str,
) -> PathBuf {
    let c = emulator.sandbox_config();
    let taler_key = private_file(dir, "taler.key", c.extern_key.expose().as_bytes());
    let spool_key = private_file(dir, "spool.key", "5a".repeat(32).as_bytes());
    let text = format!(
        r#"
listen = "127.0.0.1:0"
ledger = "{ledger}"
spool = "s3://{BUCKET}/fleet"
spool_encryption = {{ key = {{ file = "{spool_key}" }}, key_id = "k1" }}

[spool_s3]
endpoint = "{s3_url}"
path_style = true
access_key_id = {{ env = "FLEET_S3_ID" }}
secret_access_key = {{ env = "FLEET_S3_SECRET" }}

[delivery]
poll_interval = "100ms"
initial_backoff = "100ms"
max_backoff = "1s"
lease = "3s"
attempt_timeout = "2s"
worker_concurrency = 8

[[tenants]]
name = "acme"
api_key = {{ env = "FLEET_API_KEY" }}
providers = ["taler"]

[providers.taler]
base_url = "{url}"
extern_key = {{ file = "{taler_key}" }}
purpose = {purpose}
"#,
        spool_key = spool_key.display(),
        url = c.base_url,
        taler_key = taler_key.display(),
        purpose = c.purpose,
    );
    write_file(dir, "fleet.toml", text.as_bytes())
}

fn replica(config: &Path, data_dir: &Path) -> Proc {
    Proc::spawn(
        &[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--data-dir",
            &data_dir.to_string_lossy(),
        ],
        &[
            ("FLEET_API_KEY", KEY),
            ("FLEET_S3_ID", S3_ID),
            ("FLEET_S3_SECRET", S3_SECRET),
        ],
    )
}

/// A PDF with the marker inside.
async fn document(seed: u64, len: u64) -> Vec<u8> {
    let mut doc = pdf_bytes(len, seed).await;
    doc[1000..1000 + MARKER.len()].copy_from_slice(MARKER);
    doc
}

async fn put_async(client: &reqwest::Client, base: &str, seed: u64) -> Result<String, String> {
    let res = client
        .put(format!("{base}/v1/uploads/taler?payto={PAYTO}"))
        .bearer_auth(KEY)
        .header("Prefer", "respond-async")
        .header("Idempotency-Key", format!("upload-{seed}"))
        .header("Content-Type", "application/pdf")
        .body(document(seed, 20_000).await)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 202 {
        return Err(format!("status {}", res.status()));
    }
    let r: Value = res.json().await.map_err(|e| e.to_string())?;
    r["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no id".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_and_s3_deliver_200_uploads_once_when_one_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = docgate_taler::emulator::start(docgate_taler::emulator::EmulatorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("provider"),
    ))
    .await
    .expect("taler emulator");
    emulator.faults.set(FaultPlan {
        delay_ms: 30,
        ..FaultPlan::default()
    });
    let s3_root = dir.path().join("s3");
    let s3 = s3(s3_root.clone()).await;
    let (admin, schema, ledger) = postgres_schema("fleet").await;
    let cfg = config(dir.path(), &emulator, &ledger, &s3.url);
    let (a_dir, b_dir) = (dir.path().join("replica-a"), dir.path().join("replica-b"));
    let mut a = Some(replica(&cfg, &a_dir));
    let b = replica(&cfg, &b_dir);
    let a_url = a.as_ref().expect("a").url.clone();
    let client = reqwest::Client::new();

    // A browser begins a resumable upload on replica a.
    let resumable_doc = document(9_999, 600_000).await;
    let resumable = TusUpload::begin(&client, &a_url, KEY, PAYTO, resumable_doc.len()).await;
    assert_eq!(
        resumable
            .patch(&client, &a_url, 0, &resumable_doc[..250_000])
            .await
            .status(),
        204
    );
    // The piece received is in the bucket, sealed (not on replica a's disk).
    let pieces = s3_root.join(BUCKET).join("fleet");
    assert!(
        std::fs::read_dir(&pieces).is_ok_and(|mut d| d.next().is_some()),
        "the spool is in S3"
    );
    assert_eq!(files_containing(&pieces, MARKER), Vec::<PathBuf>::new());
    assert_eq!(files_containing(&a_dir, MARKER), Vec::<PathBuf>::new());
    // Behind a balancer the next PATCH lands on b, the one after on a again: a's state of
    // the document (250 000 bytes) is behind the ledger's, brought forward from b's piece.
    assert_eq!(
        resumable
            .patch(&client, &b.url, 250_000, &resumable_doc[250_000..400_000])
            .await
            .status(),
        204
    );
    assert_eq!(
        resumable
            .patch(&client, &a_url, 400_000, &resumable_doc[400_000..450_000])
            .await
            .status(),
        204
    );

    let mut ids = Vec::new();
    for seed in 0..200u64 {
        if seed == 100 {
            a.take().expect("replica a").kill9();
        }
        let target = match (&a, seed % 2) {
            (Some(a), 0) => a.url.clone(),
            _ => b.url.clone(),
        };
        let id = match put_async(&client, &target, seed).await {
            Ok(id) => id,
            // The replica died under this request: the client retries elsewhere, same key.
            Err(_) => put_async(&client, &b.url, seed)
                .await
                .expect("accepted by the survivor"),
        };
        ids.push(id);
    }

    // Replica a is gone: the browser resumes on b, from the offset b reports.
    assert_eq!(resumable.offset(&client, &b.url).await, 450_000);
    assert_eq!(
        resumable
            .patch(&client, &b.url, 450_000, &resumable_doc[450_000..])
            .await
            .status(),
        204
    );
    let completed = client
        .post(format!(
            "{}/v1/upload-sessions/{}/complete",
            b.url, resumable.session
        ))
        .bearer_auth(&resumable.token)
        .send()
        .await
        .expect("complete");
    let status = completed.status().as_u16();
    let receipt: Value = completed.json().await.expect("receipt");
    assert!(matches!(status, 201 | 202), "{status}: {receipt}");
    // The digests are of the whole document, its pieces from both replicas in order.
    assert_eq!(
        receipt["documents"][0]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&resumable_doc)),
        "{receipt}"
    );
    ids.push(receipt["id"].as_str().expect("id").to_owned());

    for id in &ids {
        let r = wait_final(&client, &b.url, KEY, id, Duration::from_secs(120)).await;
        // `duplicate`: replica a died after the exchange stored the document but before it
        // recorded so; b's attempt got Taler's 412 (already stored). Still stored once.
        assert!(
            ["delivered", "duplicate"].contains(&r["status"].as_str().unwrap_or("")),
            "{r}"
        );
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 201, "one upload per document");
    assert_eq!(
        emulator.stored(PAYTO).expect("stored").len(),
        201,
        "every document stored exactly once"
    );

    // Nowhere docgate keeps data holds the plaintext: not the replicas' data dirs, not the
    // bucket, not the ledger.
    for place in [&a_dir, &b_dir, &s3_root] {
        assert_eq!(files_containing(place, MARKER), Vec::<PathBuf>::new());
    }
    let tables = admin
        .fetch_all(
            format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
            )
            .as_str(),
        )
        .await
        .expect("tables");
    let marker = String::from_utf8_lossy(MARKER);
    for table in tables {
        let name: String = table.get(0);
        let hits: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}.{name} t WHERE t::text LIKE $1"
        ))
        .bind(format!("%{marker}%"))
        .fetch_one(&admin)
        .await
        .expect("search");
        assert_eq!(hits, 0, "the marker is in ledger table {name}");
    }
    drop(b);
    let _ = admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await;
}

/// A replica that cannot reach its spool does not start half-working: it exits with an error
/// naming the bucket and S3's reason, and never the secret it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_wrong_s3_credentials_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = docgate_taler::emulator::start(docgate_taler::emulator::EmulatorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("provider"),
    ))
    .await
    .expect("taler emulator");
    let s3 = s3(dir.path().join("s3")).await;
    let cfg = config(dir.path(), &emulator, "sqlite", &s3.url);
    let wrong_secret = "not-the-fleet-secret-0123456789";
    let data_dir = dir.path().join("data");
    let run = |command: &'static str| {
        let (cfg, data_dir) = (cfg.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_docgate"))
                .args([command, "--config"])
                .arg(&cfg)
                // Not the default `./docgate-data`: the test's cwd is the source tree.
                .arg("--data-dir")
                .arg(&data_dir)
                .env("FLEET_API_KEY", KEY)
                .env("FLEET_S3_ID", S3_ID)
                .env("FLEET_S3_SECRET", wrong_secret)
                .env("DOCGATE_LOG", "warn")
                .output()
                .expect("run docgate")
        })
    };
    // `serve` refuses to start; `check` reports the same before anyone tries.
    for command in ["serve", "check"] {
        let out = run(command).await.expect("join");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{command} must fail: {said}");
        assert!(said.contains(BUCKET), "{command} names the bucket: {said}");
        assert!(
            said.contains("SignatureDoesNotMatch") || said.contains("403"),
            "{command} gives S3's reason: {said}"
        );
        assert!(!said.contains(wrong_secret), "never prints the secret");
    }
}
