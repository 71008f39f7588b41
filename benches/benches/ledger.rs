//! The ledger's hot paths: recording an accepted upload, and a delivery worker claiming it.
//!
//! - `insert`: one upload recorded (one transaction; on SQLite through the group-commit
//!   writer, so this is its latency when alone).
//! - `insert_x32_concurrent`: 32 uploads recorded at once, as under load: what the group
//!   commit buys (one WAL sync per batch instead of one per upload).
//! - `insert_then_claim`: an upload left `received`, then claimed by a worker (`claim_due`).
//!
//! SQLite always (a file in a temp dir, as the sandbox keeps it); PostgreSQL only when
//! `DOCGATE_TEST_POSTGRES_URL` is set (the same variable as the ledger tests), else skipped.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use docgate_core::{DigestsHex, DocumentMeta, Prepared};
use docgate_server::ledger::{Lease, Ledger, NewUpload, SqlLedger, StoredDocument};
use serde_json::json;

/// Ids must be new across runs too (a PostgreSQL database outlives the bench).
fn next_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "bench-{}-{start:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn upload(lease: Option<Lease>) -> NewUpload {
    let id = next_id();
    NewUpload {
        id: id.clone(),
        tenant: "bench".into(),
        provider: "taler".into(),
        idempotency_key: None,
        fingerprint: "fp".into(),
        prepared: Prepared(json!({"payto": "payto://x-taler-bank/bank.example.com/bench"})),
        documents: vec![StoredDocument {
            meta: DocumentMeta {
                slot: "file".into(),
                filename: Some("doc.pdf".into()),
                size: 10 * 1024,
                media_type: "application/pdf".into(),
                declared_type: None,
                digests: DigestsHex {
                    sha256: "ab".repeat(32),
                    sha512: Some("cd".repeat(64)),
                    md5: None,
                },
                entries: None,
            },
            spool_path: format!("{id}-file"),
            pieces: None,
        }],
        now: docgate_core::now_ms(),
        lease,
        first_attempt: false,
        notify: true,
        subjects: Vec::new(),
        session: None,
    }
}

fn lease() -> Lease {
    Lease {
        owner: format!("bench:{}", next_id()),
        until: docgate_core::now_ms() + 60_000,
    }
}

fn bench_ledger(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, ledger: &SqlLedger) {
    let mut g = c.benchmark_group(format!("ledger_{name}"));
    g.sample_size(20);
    g.bench_function("insert", |b| {
        b.to_async(rt).iter(|| async {
            ledger.insert(upload(Some(lease()))).await.expect("insert");
        });
    });
    g.bench_function("insert_x32_concurrent", |b| {
        b.to_async(rt).iter(|| async {
            let all = (0..32).map(|_| ledger.insert(upload(Some(lease()))));
            for r in futures_util::future::join_all(all).await {
                r.expect("insert");
            }
        });
    });
    let providers = vec!["taler".to_owned()];
    g.bench_function("insert_then_claim", |b| {
        b.to_async(rt).iter(|| async {
            ledger.insert(upload(None)).await.expect("insert");
            let claimed = ledger
                .claim_due(&lease(), docgate_core::now_ms(), 1, &providers)
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1, "the upload just recorded is due");
        });
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = rt
        .block_on(SqlLedger::connect(&SqlLedger::sqlite_url(
            &dir.path().join("ledger.sqlite"),
        )))
        .expect("sqlite ledger");
    bench_ledger(c, "sqlite", &rt, &sqlite);
    match std::env::var("DOCGATE_TEST_POSTGRES_URL") {
        Ok(url) => {
            let pg = rt
                .block_on(SqlLedger::connect(&url))
                .expect("postgres ledger");
            bench_ledger(c, "postgres", &rt, &pg);
        }
        Err(_) => eprintln!("ledger_postgres: skipped (set DOCGATE_TEST_POSTGRES_URL to run it)"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
