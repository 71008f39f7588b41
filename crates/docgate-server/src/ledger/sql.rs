//! The SQL ledger: one implementation, two backends (SQLite and PostgreSQL). The statements
//! are written in the dialect both share (`$N` parameters, `ON CONFLICT … DO NOTHING`,
//! `RETURNING`); the one real difference — row locking when claiming work — is
//! [`Dialect::claim_lock`].
//!
//! Writes and reads take different paths. On SQLite every write goes through the group
//! committer ([`super::writer`]): one thread calling SQLite directly (rusqlite), one
//! transaction and one WAL sync per batch of concurrent writes, and no writer ever sleeps in
//! SQLite's busy handler. Reads use a small pool of sqlx connections of their own (WAL lets
//! them run beside the writer). On PostgreSQL every write goes to a writer task with a
//! connection it keeps ([`super::pg_writer`]), one transaction per write, without the pool's
//! pings; reads use sqlx's pool. The statements of every write are in
//! [`super::sql_writes`], written once for both connections ([`super::db`]).

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use docgate_core::{OwnedRef, Prepared};
use futures_util::FutureExt;
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    AnyConnection, AnyPool, ConnectOptions, Executor, Row,
};

use super::pg_writer::PgWriter;
use super::{db::DbRow, sql_ops as ops, sql_sessions as ss, sql_writes as w, writer::Writer, *};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Rows claimed by one replica are skipped by the others instead of waited for.
    pub(super) fn claim_lock(self) -> &'static str {
        match self {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite has one writer at a time: the UPDATE … WHERE id IN (SELECT …) is atomic.
            Dialect::Sqlite => "",
        }
    }

    /// `column` kept out of index selection. SQLite, without statistics, takes an equality
    /// on `status` for the most selective index even where almost every row is `delivered`;
    /// a unary `+` makes it use the index meant for the query. PostgreSQL has statistics
    /// (and no unary `+` on text).
    pub(super) fn not_indexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_owned(),
        }
    }
}

/// Finished uploads whose spools are due for removal, oldest first: read on
/// `uploads_spool_held`, the spools still held, so the sweep costs what is due, not every
/// upload ever recorded. Then erased uploads, due at once rather than a retention period
/// after their erasure: their documents are still there only because the erasure's own
/// removal failed (503 `erasure_incomplete`) or the process died between its commit and the
/// removal. They are few, read on an index of their own (one `OR` would make the sweep read
/// every held upload).
fn spool_removal_sql(dialect: Dialect) -> String {
    let status = dialect.not_indexed("status");
    format!(
        "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM uploads \
             WHERE {status} IN {TERMINAL} AND spool_removed = 0 AND updated_at <= $1 \
             ORDER BY updated_at LIMIT $2) AS due \
         UNION ALL \
         SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM uploads \
             WHERE {status} IN {TERMINAL} AND spool_removed = 0 AND erased_at IS NOT NULL \
               AND updated_at > $1 \
             LIMIT $2) AS erased \
         LIMIT $2"
    )
}

/// Run one write: in the next batch of the SQLite writer's thread, or in a transaction on a
/// PostgreSQL writer's connection. `Ok` means committed. The write is written once and
/// compiled for both kinds of connection ([`super::db::Conn`]).
macro_rules! write_tx {
    ($ledger:expr, |$c:ident| $body:expr) => {{
        let ledger: &SqlLedger = $ledger;
        match &ledger.writer {
            Writers::Sqlite(writer) => writer.write(move |$c| ready_now($body)).await,
            Writers::Postgres(writer) => {
                writer
                    .write(move |$c: &mut AnyConnection| Box::pin(async move { $body.await }))
                    .await
            }
        }
    }};
}

/// The outcome of a write on the SQLite writer's connection, whose statements run when
/// called: its future is ready at once.
fn ready_now<T>(write: impl std::future::Future<Output = LedgerResult<T>>) -> LedgerResult<T> {
    write
        .now_or_never()
        .unwrap_or(Err(LedgerError::Bug("a write on the SQLite writer waited")))
}

/// The path and the parameters of a `sqlite:` ledger URL (`sqlite://path?mode=rwc`,
/// `sqlite:path`, `sqlite::memory:`); `None` for any other URL.
pub fn sqlite_location(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    Some(rest.split_once('?').unwrap_or((rest, "")))
}

/// The file of a `sqlite:` ledger URL. The writer opens it beside sqlx's readers, so an
/// in-memory database (a different one per connection) cannot be a ledger.
pub fn sqlite_file(url: &str) -> LedgerResult<std::path::PathBuf> {
    let (path, params) = sqlite_location(url).unwrap_or_default();
    let in_memory =
        path.is_empty() || path == ":memory:" || params.split('&').any(|p| p == "mode=memory");
    if in_memory {
        return Err(LedgerError::Config(
            "the SQLite ledger must be a file, not in memory".into(),
        ));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(options.get_filename().to_owned())
}

/// The ledger on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlLedger {
    pool: AnyPool,
    dialect: Dialect,
    /// Where every write goes.
    writer: Writers,
}

/// The writers of each backend.
#[derive(Debug, Clone)]
enum Writers {
    Sqlite(Writer),
    Postgres(PgWriter),
}

/// The schema, in versions (`migrations/NNNN_*.sql`, portable between SQLite and
/// PostgreSQL). A ledger from before versioning is adopted as version 1: that migration only
/// creates what is missing.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(super) const COLUMNS: &str =
    "id, tenant, provider, idempotency_key, fingerprint, status, prepared, documents, \
    attempts, next_attempt_at, lease_owner, lease_until, last_upstream_status, last_error, \
    provider_reference, problem, created_at, updated_at, delivered_at, notify_state, \
    notify_attempts, notify_next_at, spool_removed, erased_at, cancel_requested, series_started_at";

pub(super) const TERMINAL: &str = "('delivered', 'duplicate', 'rejected', 'failed', 'canceled')";

/// The settings every SQLite connection gets: WAL (readers beside the writer), full syncs
/// (a commit survives a power cut), a busy timeout only as a last resort, and secure
/// delete: an erased upload's old values are overwritten in the file, not left in free pages.
///
/// The WAL is checkpointed every 256 pages (1 MiB) and cut back to 1 MiB afterwards, rather
/// than SQLite's 4 MiB that it then keeps: the journal must fit in the storage reserve kept
/// for the ledger (`limits.min_free_space`), or a disk filled by accepted uploads would stop
/// their deliveries from being recorded.
pub(super) const SQLITE_SETTINGS: &str = "PRAGMA journal_mode = WAL; \
    PRAGMA wal_autocheckpoint = 256; PRAGMA journal_size_limit = 1048576; \
    PRAGMA secure_delete = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

impl SqlLedger {
    /// Connect to `url` (`sqlite://path` or `postgres://…`) and bring the schema up to date.
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
        let writer_file = match dialect {
            Dialect::Sqlite => Some(sqlite_file(url)?),
            Dialect::Postgres => None,
        };
        if let Some(file) = &writer_file {
            let creates = sqlite_location(url)
                .is_some_and(|(_, params)| params.split('&').any(|p| p == "mode=rwc"));
            if creates {
                // Personal data in clear: 0600 from the start, and its WAL with it.
                match docgate_core::private_fs::touch_new(file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(LedgerError::Config(format!(
                            "cannot create the SQLite ledger {}: {e}",
                            file.display()
                        )))
                    }
                    _ => {} // made, there already, or its directory missing: SQLite says
                }
            }
        }
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match dialect {
            Dialect::Sqlite => pool.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move { conn.execute(SQLITE_SETTINGS).await.map(|_| ()) })
            }),
            // Reads only: the writes have connections of their own.
            Dialect::Postgres => pool.max_connections(8),
        };
        let pool = pool.connect_with(options.clone()).await?;
        // The schema at its newest version. On PostgreSQL sqlx takes an advisory lock, so
        // replicas starting together do not race.
        MIGRATOR.run(&pool).await?;
        let writer = match writer_file {
            Some(file) => Writers::Sqlite(Writer::start(&file)?),
            None => Writers::Postgres(PgWriter::start(options)),
        };
        Ok(SqlLedger {
            pool,
            dialect,
            writer,
        })
    }

    /// `sqlite://<path>?mode=rwc` for a file path.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
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

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    row: &impl DbRow,
    col: &str,
) -> LedgerResult<T> {
    let text: String = row.col(col)?;
    serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt(format!("{col}: {e}")))
}

fn opt_json_col(row: &impl DbRow, col: &str) -> LedgerResult<Option<Value>> {
    let text: Option<String> = row.col(col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| LedgerError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

fn count(row: &impl DbRow, col: &str) -> LedgerResult<u32> {
    Ok(u32::try_from(row.col::<i64>(col)?).unwrap_or(u32::MAX))
}

pub(super) fn decode(row: &impl DbRow) -> LedgerResult<UploadRecord> {
    let status: String = row.col("status")?;
    let notify: String = row.col("notify_state")?;
    Ok(UploadRecord {
        id: row.col("id")?,
        tenant: row.col("tenant")?,
        provider: row.col("provider")?,
        idempotency_key: row.col("idempotency_key")?,
        fingerprint: row.col("fingerprint")?,
        status: UploadStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("status `{status}`")))?,
        prepared: Prepared(json_col(row, "prepared")?),
        documents: json_col(row, "documents")?,
        attempts: count(row, "attempts")?,
        next_attempt_at: row.col("next_attempt_at")?,
        lease_owner: row.col("lease_owner")?,
        lease_until: row.col("lease_until")?,
        last_upstream_status: opt_u16(row.col("last_upstream_status")?),
        last_error: row.col("last_error")?,
        provider_reference: opt_json_col(row, "provider_reference")?,
        problem: opt_json_col(row, "problem")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
        delivered_at: row.col("delivered_at")?,
        notify: NotifyState::parse(&notify)
            .ok_or_else(|| LedgerError::Corrupt(format!("notify_state `{notify}`")))?,
        notify_attempts: count(row, "notify_attempts")?,
        notify_next_at: row.col("notify_next_at")?,
        spool_removed: row.col::<i64>("spool_removed")? != 0,
        erased_at: row.col("erased_at")?,
        cancel_requested: row.col::<i64>("cancel_requested")? != 0,
        series_started_at: row.col("series_started_at")?,
    })
}

pub(super) fn to_text(v: &impl Serialize) -> LedgerResult<String> {
    serde_json::to_string(v).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

#[async_trait]
impl Ledger for SqlLedger {
    async fn insert(&self, new: NewUpload) -> LedgerResult<Inserted> {
        write_tx!(self, |c| w::insert(c, new))
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
        let (dialect, owner, until) = (self.dialect, lease.owner.clone(), lease.until);
        let providers = providers.to_vec();
        write_tx!(self, |c| w::claim_due(
            c, dialect, owner, until, now, limit, providers
        ))
    }

    async fn renew(&self, id: &str, lease: &Lease, now: Millis) -> LedgerResult<bool> {
        let (id, owner, until) = (id.to_owned(), lease.owner.clone(), lease.until);
        write_tx!(self, |c| w::renew(c, id, owner, until, now))
    }

    async fn start_attempt(
        &self,
        id: &str,
        lease: &Lease,
        now: Millis,
    ) -> LedgerResult<Option<u32>> {
        let (id, owner, until) = (id.to_owned(), lease.owner.clone(), lease.until);
        write_tx!(self, |c| w::start_attempt(c, id, owner, until, now))
    }

    async fn finish(&self, id: &str, owner: &str, f: Finish) -> LedgerResult<Option<UploadRecord>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| w::finish(c, id, owner, f))
    }

    async fn reschedule(&self, id: &str, owner: &str, r: Reschedule) -> LedgerResult<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| w::reschedule(c, id, owner, r))
    }

    async fn record_attempt(&self, id: &str, owner: &str, a: AttemptRecord) -> LedgerResult<bool> {
        let (id, owner, now) = (id.to_owned(), owner.to_owned(), now_ms());
        write_tx!(self, |c| w::record_attempt(c, id, owner, a, now))
    }

    async fn history(&self, id: &str) -> LedgerResult<Vec<UploadEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, detail FROM upload_events WHERE upload_id = $1 ORDER BY seq",
        )
        .bind(id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UploadEvent {
                    seq: u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(0),
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    detail: json_col(r, "detail")?,
                })
            })
            .collect()
    }

    async fn list_uploads(&self, q: &ListQuery) -> LedgerResult<Vec<UploadRecord>> {
        let mut conn = self.pool.acquire().await?;
        ops::list(&mut *conn, q).await
    }

    async fn retry(&self, id: &str, now: Millis) -> LedgerResult<Control> {
        let id = id.to_owned();
        write_tx!(self, |c| ops::retry(c, id, now))
    }

    async fn cancel(&self, id: &str, now: Millis) -> LedgerResult<Control> {
        let id = id.to_owned();
        write_tx!(self, |c| ops::cancel(c, id, now))
    }

    async fn erase(&self, id: &str, now: Millis) -> LedgerResult<Option<(UploadRecord, bool)>> {
        let id = id.to_owned();
        let erased = write_tx!(self, |c| ops::erase(c, id, now))?;
        if let (Writers::Sqlite(writer), Some(_)) = (&self.writer, &erased) {
            // The erased values are overwritten in the database file (secure_delete), but
            // the WAL still holds the frames written before.
            // The erasure is committed whatever happens here: a failure to checkpoint must
            // not answer 503 and skip the removal of the documents.
            match writer.truncate_wal().await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "the ledger's WAL could not be emptied after an erasure (readers kept it); \
                     its old frames go at a later checkpoint"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "the ledger's WAL could not be emptied after an erasure; its old frames go \
                     at a later checkpoint"
                ),
            }
        }
        Ok(erased)
    }

    async fn release_node(&self, node: &str, now: Millis) -> LedgerResult<u64> {
        let like = format!("{node}:%");
        write_tx!(self, |c| w::release(c, like, now))
    }

    async fn release_all(&self, now: Millis) -> LedgerResult<u64> {
        write_tx!(self, |c| async {
            let released = w::release(c, "%".into(), now).await?;
            ss::reopen_abandoned(c).await?;
            LedgerResult::Ok(released)
        })
    }

    async fn claim_notifications(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>> {
        let dialect = self.dialect;
        write_tx!(self, |c| w::claim_notifications(
            c, dialect, now, hold_until, limit
        ))
    }

    async fn notification_done(
        &self,
        id: &str,
        claimed_until: Millis,
        state: NotifyState,
        next_at: Option<Millis>,
        now: Millis,
    ) -> LedgerResult<bool> {
        let id = id.to_owned();
        write_tx!(self, |c| w::notification_done(
            c,
            id,
            claimed_until,
            state,
            next_at,
            now
        ))
    }

    async fn spool_removal_due(
        &self,
        before: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>> {
        let sql = spool_removal_sql(self.dialect);
        let rows = sqlx::query(&sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn mark_spool_removed(&self, ids: &[String]) -> LedgerResult<()> {
        let ids = ids.to_vec();
        write_tx!(self, |c| w::mark_spool_removed(c, ids))
    }

    async fn fail_stranded(
        &self,
        known: &[String],
        before: Millis,
        now: Millis,
    ) -> LedgerResult<u64> {
        let known = known.to_vec();
        write_tx!(self, |c| w::fail_stranded(c, known, before, now))
    }

    async fn live_upload_ids(&self) -> LedgerResult<Vec<String>> {
        // Sessions still taking documents spool them under their upload id already.
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE spool_removed = 0 \
             UNION SELECT upload_id AS id FROM upload_sessions WHERE state IN ('open', 'completing')",
        )
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
        let args = (
            tenant.to_owned(),
            provider.to_owned(),
            subject.clone(),
            source.to_owned(),
        );
        write_tx!(self, |c| w::claim_ref(
            c,
            args.0,
            args.1,
            args.2,
            args.3,
            now_ms()
        ))
    }

    async fn release_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> LedgerResult<()> {
        let args = (tenant.to_owned(), provider.to_owned(), subject.clone());
        write_tx!(self, |c| w::release_ref(c, args.0, args.1, args.2))
    }

    async fn owns_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> LedgerResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(w::owner_of(&mut *conn, provider, subject).await?.as_deref() == Some(tenant))
    }

    async fn record_event(&self, e: &ProviderEvent) -> LedgerResult<bool> {
        let e = e.clone();
        write_tx!(self, |c| w::record_event(c, e))
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

    async fn create_session(&self, session: SessionRecord) -> LedgerResult<()> {
        write_tx!(self, |c| ss::create_session(c, session))
    }

    async fn session(&self, id: &str) -> LedgerResult<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM upload_sessions WHERE id = $1",
            ss::SESSION_COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| ss::decode_session(&r)).transpose()
    }

    async fn session_by_token(&self, token_hash: &str) -> LedgerResult<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM upload_sessions WHERE token_hash = $1",
            ss::SESSION_COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(token_hash.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| ss::decode_session(&r)).transpose()
    }

    async fn session_state(
        &self,
        id: &str,
        from: &[SessionState],
        to: SessionState,
    ) -> LedgerResult<bool> {
        let (id, from) = (id.to_owned(), from.to_vec());
        write_tx!(self, |c| ss::session_state(c, id, from, to))
    }

    async fn create_tus(&self, t: TusRecord) -> LedgerResult<TusCreated> {
        write_tx!(self, |c| ss::create_tus(c, t))
    }

    async fn tus(&self, id: &str) -> LedgerResult<Option<TusRecord>> {
        let sql = format!("SELECT {} FROM tus_uploads WHERE id = $1", ss::TUS_COLUMNS);
        let row = sqlx::query(&sql)
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| ss::decode_tus(&r)).transpose()
    }

    async fn session_documents(&self, session_id: &str) -> LedgerResult<Vec<TusRecord>> {
        let mut conn = self.pool.acquire().await?;
        ss::session_documents(&mut *conn, session_id.to_owned()).await
    }

    async fn lock_tus(
        &self,
        id: &str,
        owner: &str,
        until: Millis,
        offset: u64,
        now: Millis,
    ) -> LedgerResult<TusLock> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| ss::lock_tus(c, id, owner, until, offset, now))
    }

    async fn renew_tus(&self, id: &str, owner: &str, until: Millis) -> LedgerResult<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| ss::renew_tus(c, id, owner, until))
    }

    async fn add_piece(
        &self,
        id: &str,
        owner: &str,
        piece: Option<docgate_core::spool::Piece>,
        length: Option<u64>,
        meta: Option<DocumentMeta>,
        now: Millis,
    ) -> LedgerResult<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| ss::add_piece(
            c, id, owner, piece, length, meta, now
        ))
    }

    async fn unlock_tus(&self, id: &str, owner: &str) -> LedgerResult<()> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        write_tx!(self, |c| ss::unlock_tus(c, id, owner))
    }

    async fn end_tus(
        &self,
        id: &str,
        state: TusState,
        only_while_open: bool,
        now: Millis,
    ) -> LedgerResult<Option<TusRecord>> {
        let id = id.to_owned();
        write_tx!(self, |c| ss::end_tus(c, id, state, only_while_open, now))
    }

    async fn expire_sessions(
        &self,
        now: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<(SessionRecord, Vec<TusRecord>)>> {
        write_tx!(self, |c| ss::expire_sessions(c, now, limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer opens the file beside sqlx's readers: an in-memory database would be a
    /// different one on each connection, its writes invisible to every read.
    #[tokio::test]
    async fn an_in_memory_sqlite_ledger_is_refused() {
        for url in ["sqlite::memory:", "sqlite://ledger?mode=memory"] {
            match SqlLedger::connect(url).await {
                Err(LedgerError::Config(_)) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    /// The ledger holds personal data in clear; inside a directory open to other users
    /// (systemd's `StateDirectory=` is 0755) it and its WAL were created 0644.
    #[cfg(unix)]
    #[tokio::test]
    async fn regression_the_sqlite_ledger_is_private_in_an_open_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let file = dir.path().join("l.sqlite");
        // Its schema is written as it opens: the WAL exists from then on.
        let _ledger = SqlLedger::connect(&SqlLedger::sqlite_url(&file))
            .await
            .expect("ledger");
        for name in ["l.sqlite", "l.sqlite-wal", "l.sqlite-shm"] {
            let meta = std::fs::metadata(dir.path().join(name)).expect(name);
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
    }

    /// The retention sweep ran every 5 s over every `delivered` row (on `uploads_due`, by
    /// status) and sorted them: its cost grew with the ledger's whole history.
    #[tokio::test]
    async fn regression_the_retention_sweep_reads_only_held_spools() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = SqlLedger::connect(&SqlLedger::sqlite_url(&dir.path().join("l.sqlite")))
            .await
            .expect("ledger");
        let plan = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            spool_removal_sql(Dialect::Sqlite)
        ))
        .bind(0_i64)
        .bind(100_i64)
        .fetch_all(&ledger.pool)
        .await
        .expect("plan");
        let steps: Vec<String> = plan
            .iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect();
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING INDEX uploads_spool_held")),
            "{steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.contains("TEMP B-TREE")),
            "{steps:?}"
        );
    }
}
