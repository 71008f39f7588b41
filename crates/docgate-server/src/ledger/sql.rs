//! The SQL ledger: one implementation, two backends (SQLite and PostgreSQL) through sqlx's
//! `Any` driver. The statements are written in the dialect both share (`$N` parameters,
//! `ON CONFLICT … DO NOTHING`, `RETURNING`); the one real difference — row locking when
//! claiming work — is [`Dialect::claim_lock`].

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use docgate_core::Prepared;
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    AnyPool, ConnectOptions, Executor, Row,
};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Rows claimed by one replica are skipped by the others instead of waited for.
    fn claim_lock(self) -> &'static str {
        match self {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite has one writer at a time: the UPDATE … WHERE id IN (SELECT …) is atomic.
            Dialect::Sqlite => "",
        }
    }
}

/// The ledger on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlLedger {
    pool: AnyPool,
    dialect: Dialect,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        provider TEXT NOT NULL,
        idempotency_key TEXT,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        prepared TEXT NOT NULL,
        documents TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        lease_owner TEXT,
        lease_until BIGINT,
        last_upstream_status BIGINT,
        last_error TEXT,
        provider_reference TEXT,
        problem TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        delivered_at BIGINT,
        notify_state TEXT NOT NULL,
        notify_attempts BIGINT NOT NULL DEFAULT 0,
        notify_next_at BIGINT,
        spool_removed BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS uploads_idempotency ON uploads (tenant, idempotency_key)",
    "CREATE INDEX IF NOT EXISTS uploads_due ON uploads (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS uploads_notify ON uploads (notify_state, notify_next_at)",
    "CREATE TABLE IF NOT EXISTS upload_refs (
        provider TEXT NOT NULL,
        reference TEXT NOT NULL,
        tenant TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        PRIMARY KEY (provider, reference, tenant)
    )",
    "CREATE TABLE IF NOT EXISTS provider_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        name TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (provider, event_id)
    )",
];

const COLUMNS: &str =
    "id, tenant, provider, idempotency_key, fingerprint, status, prepared, documents, \
    attempts, next_attempt_at, lease_owner, lease_until, last_upstream_status, last_error, \
    provider_reference, problem, created_at, updated_at, delivered_at, notify_state, \
    notify_attempts, notify_next_at, spool_removed";

const TERMINAL: &str = "('delivered', 'duplicate', 'rejected', 'failed')";

impl SqlLedger {
    /// Connect to `url` (`sqlite://path` or `postgres://…`) and create the schema if needed.
    pub async fn connect(url: &str) -> LedgerResult<SqlLedger> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(LedgerError::Config(format!(
                "ledger must be sqlite:… or postgres://…, got `{}`",
                url.split(':').next().unwrap_or("")
            )));
        };
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let mut pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        pool = match dialect {
            // One writer at a time anyway; WAL lets readers (status queries) run alongside.
            Dialect::Sqlite => pool.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            }),
            Dialect::Postgres => pool.max_connections(16),
        };
        let pool = pool.connect_with(options).await?;
        let ledger = SqlLedger { pool, dialect };
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// `sqlite://<path>?mode=rwc` for a file path.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> LedgerResult<()> {
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Postgres {
            // Replicas starting together must not race on CREATE TABLE.
            conn.execute("SELECT pg_advisory_lock(7310142)").await?;
        }
        let mut result = Ok(());
        for stmt in SCHEMA {
            if let Err(e) = conn.execute(*stmt).await {
                result = Err(e.into());
                break;
            }
        }
        if self.dialect == Dialect::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7310142)").await?;
        }
        result
    }

    async fn select_one(&self, sql: &str, id: &str) -> LedgerResult<Option<UploadRecord>> {
        let row = sqlx::query(sql)
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }
}

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|x| u16::try_from(x).ok())
}

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> LedgerResult<T> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt(format!("{col}: {e}")))
}

fn opt_json_col(row: &AnyRow, col: &str) -> LedgerResult<Option<Value>> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| LedgerError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

fn decode(row: &AnyRow) -> LedgerResult<UploadRecord> {
    let status: String = row.try_get("status")?;
    let notify: String = row.try_get("notify_state")?;
    Ok(UploadRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        provider: row.try_get("provider")?,
        idempotency_key: row.try_get("idempotency_key")?,
        fingerprint: row.try_get("fingerprint")?,
        status: UploadStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("status `{status}`")))?,
        prepared: Prepared(json_col(row, "prepared")?),
        documents: json_col(row, "documents")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_upstream_status: opt_u16(row.try_get("last_upstream_status")?),
        last_error: row.try_get("last_error")?,
        provider_reference: opt_json_col(row, "provider_reference")?,
        problem: opt_json_col(row, "problem")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        delivered_at: row.try_get("delivered_at")?,
        notify: NotifyState::parse(&notify)
            .ok_or_else(|| LedgerError::Corrupt(format!("notify_state `{notify}`")))?,
        notify_attempts: u32::try_from(row.try_get::<i64, _>("notify_attempts")?)
            .unwrap_or(u32::MAX),
        notify_next_at: row.try_get("notify_next_at")?,
        spool_removed: row.try_get::<i64, _>("spool_removed")? != 0,
    })
}

fn to_text(v: &impl Serialize) -> LedgerResult<String> {
    serde_json::to_string(v).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

#[async_trait]
impl Ledger for SqlLedger {
    async fn insert(&self, new: NewUpload) -> LedgerResult<Inserted> {
        let (status, next_at, owner, until) = match &new.lease {
            Some(l) => (
                UploadStatus::Delivering,
                None,
                Some(l.owner.clone()),
                Some(l.until),
            ),
            None => (UploadStatus::Received, Some(new.now), None, None),
        };
        let notify = if new.notify {
            NotifyState::Pending
        } else {
            NotifyState::None
        };
        let sql = format!(
            "INSERT INTO uploads ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, NULL, NULL, NULL, NULL, $12, $12, NULL, $13, 0, NULL, 0) \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING {COLUMNS}"
        );
        // One statement: the row is inserted and read back atomically, so an error means
        // nothing was recorded.
        let inserted = sqlx::query(&sql)
            .bind(new.id.clone())
            .bind(new.tenant.clone())
            .bind(new.provider.clone())
            .bind(new.idempotency_key.clone())
            .bind(new.fingerprint.clone())
            .bind(status.as_str())
            .bind(to_text(&new.prepared.0)?)
            .bind(to_text(&new.documents)?)
            .bind(next_at)
            .bind(owner)
            .bind(until)
            .bind(new.now)
            .bind(notify.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = inserted {
            return Ok(Inserted::New(decode(&row)?));
        }
        let key = new
            .idempotency_key
            .ok_or_else(|| LedgerError::Corrupt(format!("upload id {} already exists", new.id)))?;
        let sql =
            format!("SELECT {COLUMNS} FROM uploads WHERE tenant = $1 AND idempotency_key = $2");
        let row = sqlx::query(&sql)
            .bind(new.tenant)
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(Inserted::Existing(decode(&row)?))
    }

    async fn get(&self, id: &str) -> LedgerResult<Option<UploadRecord>> {
        self.select_one(&format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"), id)
            .await
    }

    async fn claim_due(
        &self,
        lease: &Lease,
        now: Millis,
        limit: u32,
        providers: &[String],
    ) -> LedgerResult<Vec<UploadRecord>> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        // Only providers this replica can deliver to: during a rolling change of the provider
        // list, a replica must not take (and fail) work it cannot do.
        let list: Vec<String> = (0..providers.len())
            .map(|i| format!("${}", i + 5))
            .collect();
        let sql = format!(
            "UPDATE uploads SET status = 'delivering', lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM uploads \
                 WHERE ((status IN ('received', 'retry_scheduled') AND next_attempt_at <= $3) \
                    OR (status = 'delivering' AND lease_until < $3)) \
                   AND provider IN ({}) \
                 ORDER BY next_attempt_at LIMIT $4 {}) \
             RETURNING {COLUMNS}",
            list.join(", "),
            self.dialect.claim_lock()
        );
        let mut query = sqlx::query(&sql)
            .bind(lease.owner.clone())
            .bind(lease.until)
            .bind(now)
            .bind(i64::from(limit));
        for p in providers {
            query = query.bind(p.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    async fn renew(&self, id: &str, lease: &Lease, now: Millis) -> LedgerResult<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET lease_until = $3 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND lease_until >= $4",
        )
        .bind(id.to_owned())
        .bind(lease.owner.clone())
        .bind(lease.until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn start_attempt(
        &self,
        id: &str,
        lease: &Lease,
        now: Millis,
    ) -> LedgerResult<Option<u32>> {
        let row = sqlx::query(
            "UPDATE uploads SET attempts = attempts + 1, lease_until = $3, updated_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND lease_until >= $4 \
             RETURNING attempts",
        )
        .bind(id.to_owned())
        .bind(lease.owner.clone())
        .bind(lease.until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX)),
            None => None,
        })
    }

    async fn finish(&self, id: &str, owner: &str, f: Finish) -> LedgerResult<bool> {
        let delivered_at =
            matches!(f.status, UploadStatus::Delivered | UploadStatus::Duplicate).then_some(f.now);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE uploads SET status = $3, provider_reference = $4, problem = $5, \
                 last_upstream_status = COALESCE($6, last_upstream_status), delivered_at = $7, \
                 lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = $8, \
                 notify_next_at = $8 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'delivering'",
        )
        .bind(id.to_owned())
        .bind(owner.to_owned())
        .bind(f.status.as_str())
        .bind(f.provider_reference.as_ref().map(to_text).transpose()?)
        .bind(f.problem.as_ref().map(to_text).transpose()?)
        .bind(f.upstream_status.map(i64::from))
        .bind(delivered_at)
        .bind(f.now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(reference) = &f.provider_reference {
            let row = sqlx::query("SELECT tenant, provider FROM uploads WHERE id = $1")
                .bind(id.to_owned())
                .fetch_one(&mut *tx)
                .await?;
            let tenant: String = row.try_get("tenant")?;
            let provider: String = row.try_get("provider")?;
            for r in reference_strings(reference) {
                sqlx::query(
                    "INSERT INTO upload_refs (provider, reference, tenant, upload_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(provider.clone())
                .bind(r)
                .bind(tenant.clone())
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reschedule(
        &self,
        id: &str,
        owner: &str,
        next_at: Millis,
        reason: &str,
        upstream_status: Option<u16>,
        now: Millis,
    ) -> LedgerResult<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET status = 'retry_scheduled', next_attempt_at = $3, last_error = $4, \
                 last_upstream_status = COALESCE($5, last_upstream_status), lease_owner = NULL, \
                 lease_until = NULL, updated_at = $6 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'delivering'",
        )
        .bind(id.to_owned())
        .bind(owner.to_owned())
        .bind(next_at)
        .bind(reason.to_owned())
        .bind(upstream_status.map(i64::from))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_node(&self, node: &str, now: Millis) -> LedgerResult<u64> {
        let done = sqlx::query(
            "UPDATE uploads SET status = 'retry_scheduled', next_attempt_at = $2, lease_owner = NULL, \
                 lease_until = NULL, updated_at = $2 \
             WHERE lease_owner LIKE $1 AND status = 'delivering'",
        )
        .bind(format!("{node}:%"))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_all(&self, now: Millis) -> LedgerResult<u64> {
        let done = sqlx::query(
            "UPDATE uploads SET status = 'retry_scheduled', next_attempt_at = $1, lease_owner = NULL, \
                 lease_until = NULL, updated_at = $1 \
             WHERE status = 'delivering'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn claim_notifications(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>> {
        let sql = format!(
            "UPDATE uploads SET notify_next_at = $2 \
             WHERE id IN (SELECT id FROM uploads \
                 WHERE notify_state = 'pending' AND status IN {TERMINAL} AND notify_next_at <= $1 \
                 ORDER BY notify_next_at LIMIT $3 {}) \
             RETURNING {COLUMNS}",
            self.dialect.claim_lock()
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(hold_until)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn notification_done(
        &self,
        id: &str,
        state: NotifyState,
        next_at: Option<Millis>,
        now: Millis,
    ) -> LedgerResult<()> {
        sqlx::query(
            "UPDATE uploads SET notify_state = $2, notify_next_at = $3, notify_attempts = notify_attempts + 1, \
                 updated_at = $4 WHERE id = $1",
        )
        .bind(id.to_owned())
        .bind(state.as_str())
        .bind(next_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn spool_removal_due(
        &self,
        before: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM uploads WHERE status IN {TERMINAL} AND spool_removed = 0 \
             AND updated_at <= $1 ORDER BY updated_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn mark_spool_removed(&self, id: &str) -> LedgerResult<()> {
        sqlx::query("UPDATE uploads SET spool_removed = 1 WHERE id = $1")
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_upload_ids(&self) -> LedgerResult<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE spool_removed = 0")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(LedgerError::from))
            .collect()
    }

    async fn add_references(
        &self,
        tenant: &str,
        provider: &str,
        references: &[String],
        source: &str,
    ) -> LedgerResult<()> {
        let mut tx = self.pool.begin().await?;
        for r in references {
            sqlx::query(
                "INSERT INTO upload_refs (provider, reference, tenant, upload_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(provider.to_owned())
            .bind(r.clone())
            .bind(tenant.to_owned())
            .bind(source.to_owned())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn owns_reference(
        &self,
        tenant: &str,
        provider: &str,
        reference: &str,
    ) -> LedgerResult<bool> {
        let row = sqlx::query(
            "SELECT upload_id FROM upload_refs WHERE provider = $1 AND reference = $2 AND tenant = $3",
        )
        .bind(provider.to_owned())
        .bind(reference.to_owned())
        .bind(tenant.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn record_event(&self, e: &ProviderEvent) -> LedgerResult<bool> {
        let done = sqlx::query(
            "INSERT INTO provider_events (provider, event_id, name, received_at, payload) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(e.provider.clone())
        .bind(e.event_id.clone())
        .bind(e.name.clone())
        .bind(e.received_at)
        .bind(to_text(&e.payload)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_events(&self, provider: &str, limit: u32) -> LedgerResult<Vec<ProviderEvent>> {
        let rows = sqlx::query(
            "SELECT provider, event_id, name, received_at, payload FROM provider_events \
             WHERE provider = $1 ORDER BY received_at DESC, event_id LIMIT $2",
        )
        .bind(provider.to_owned())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProviderEvent {
                    provider: r.try_get("provider")?,
                    event_id: r.try_get("event_id")?,
                    name: r.try_get("name")?,
                    received_at: r.try_get("received_at")?,
                    payload: json_col(r, "payload")?,
                })
            })
            .collect()
    }

    async fn status_counts(&self) -> LedgerResult<Vec<(String, UploadStatus, u64)>> {
        let rows = sqlx::query(
            "SELECT provider, status, COUNT(*) AS n FROM uploads GROUP BY provider, status",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let status: String = r.try_get("status")?;
            if let Some(st) = UploadStatus::parse(&status) {
                out.push((
                    r.try_get("provider")?,
                    st,
                    u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                ));
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> LedgerResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
