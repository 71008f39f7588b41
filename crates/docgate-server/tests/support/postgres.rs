//! A fresh PostgreSQL schema per test, for gateways started by the HTTP tests
//! (`DOCGATE_TEST_POSTGRES_URL`, else the local server).

use sqlx::Executor;

fn postgres_base() -> String {
    std::env::var("DOCGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A ledger URL on a fresh schema named `{prefix}_{uuid}`.
pub async fn postgres_url(prefix: &str) -> String {
    let base = postgres_base();
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("PostgreSQL at DOCGATE_TEST_POSTGRES_URL or 127.0.0.1:5432");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
