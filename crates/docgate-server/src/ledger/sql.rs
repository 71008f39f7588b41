//! The SQL ledger: one implementation, two backends (SQLite and PostgreSQL) through sqlx's
//! `Any` driver. The statements are written in the dialect both share (`$N` parameters,
//! `ON CONFLICT … DO NOTHING`, `RETURNING`); the one real difference — row locking when
//! claiming work — is [`Dialect::claim_lock`].

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use docgate_core::{OwnedRef, Prepared};
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

/// The schema, in versions (`migrations/NNNN_*.sql`, portable between SQLite and
/// PostgreSQL). A ledger from before versioning is adopted as version 1: that migration only
/// creates what is missing.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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

    /// Bring the schema to the newest version. On PostgreSQL sqlx takes an advisory lock, so
    /// replicas starting together do not race.
    async fn migrate(&self) -> LedgerResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
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
        if !f.owned.is_empty() {
            let row = sqlx::query("SELECT tenant, provider FROM uploads WHERE id = $1")
                .bind(id.to_owned())
                .fetch_one(&mut *tx)
                .await?;
            let tenant: String = row.try_get("tenant")?;
            let provider: String = row.try_get("provider")?;
            for r in &f.owned {
                insert_owned(&mut tx, &tenant, &provider, r, id, f.now).await?;
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

    async fn claim_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
        source: &str,
    ) -> LedgerResult<bool> {
        let mut tx = self.pool.begin().await?;
        insert_owned(&mut tx, tenant, provider, subject, source, now_ms()).await?;
        let owner = owner_of(&mut tx, provider, subject).await?;
        tx.commit().await?;
        Ok(owner.as_deref() == Some(tenant))
    }

    async fn owns_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> LedgerResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(owner_of(&mut conn, provider, subject).await?.as_deref() == Some(tenant))
    }

    async fn record_event(&self, e: &ProviderEvent) -> LedgerResult<bool> {
        let done = sqlx::query(
            "INSERT INTO provider_events (provider, event_id, name, received_at, payload, subject_kind, subject) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(e.provider.clone())
        .bind(e.event_id.clone())
        .bind(e.name.clone())
        .bind(e.received_at)
        .bind(to_text(&e.payload)?)
        .bind(e.subject.as_ref().map(|s| s.kind.clone()))
        .bind(e.subject.as_ref().map(|s| s.value.clone()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_events(
        &self,
        tenant: &str,
        provider: &str,
        limit: u32,
    ) -> LedgerResult<Vec<ProviderEvent>> {
        let rows = sqlx::query(
            "SELECT e.provider, e.event_id, e.name, e.received_at, e.payload, e.subject_kind, e.subject \
             FROM provider_events e JOIN owned_refs o \
               ON o.provider = e.provider AND o.kind = e.subject_kind AND o.value = e.subject \
             WHERE e.provider = $1 AND o.tenant = $2 \
             ORDER BY e.received_at DESC, e.event_id LIMIT $3",
        )
        .bind(provider.to_owned())
        .bind(tenant.to_owned())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
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

fn decode_event(r: &AnyRow) -> LedgerResult<ProviderEvent> {
    let kind: Option<String> = r.try_get("subject_kind")?;
    let value: Option<String> = r.try_get("subject")?;
    Ok(ProviderEvent {
        provider: r.try_get("provider")?,
        event_id: r.try_get("event_id")?,
        name: r.try_get("name")?,
        received_at: r.try_get("received_at")?,
        subject: kind.zip(value).map(|(k, v)| OwnedRef::new(k, v)),
        payload: json_col(r, "payload")?,
    })
}

/// Record `tenant` as the owner of `subject` unless someone already is.
async fn insert_owned(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    provider: &str,
    subject: &OwnedRef,
    source: &str,
    now: Millis,
) -> LedgerResult<()> {
    sqlx::query(
        "INSERT INTO owned_refs (provider, kind, value, tenant, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(provider.to_owned())
    .bind(subject.kind.clone())
    .bind(subject.value.clone())
    .bind(tenant.to_owned())
    .bind(source.to_owned())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn owner_of(
    conn: &mut sqlx::AnyConnection,
    provider: &str,
    subject: &OwnedRef,
) -> LedgerResult<Option<String>> {
    let row = sqlx::query(
        "SELECT tenant FROM owned_refs WHERE provider = $1 AND kind = $2 AND value = $3",
    )
    .bind(provider.to_owned())
    .bind(subject.kind.clone())
    .bind(subject.value.clone())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("tenant")).transpose()?)
}
