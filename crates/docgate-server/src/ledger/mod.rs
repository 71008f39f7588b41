//! The ledger: the durable record of every accepted upload and where its delivery stands.
//!
//! An accepted upload must never be lost — not by a provider outage, a crash, or a client
//! retry — so its state lives here, not in memory: which tenant sent it, the provider's
//! normalised metadata, the documents (metadata and spool paths, never bytes), the delivery
//! state machine and its attempts, and the provider's answer. Secrets are never stored.
//!
//! ```text
//! received ─▶ delivering ─▶ delivered | duplicate | rejected
//!                 │    ▲
//!                 ▼    │ (due again)
//!          retry_scheduled ─▶ … ─▶ failed (too many attempts / too old)
//! ```
//! A delivery is *claimed* with a lease: only the lease holder may record its outcome, and a
//! lease that is not renewed (the replica died) expires so another replica picks the work up.
//! On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other and
//! never claim the same row.
//!
//! One trait, [`Ledger`]; one SQL implementation ([`sql::SqlLedger`]) with two backends,
//! SQLite (embedded default) and PostgreSQL (scale-out). The same test suite runs against both.

mod db;
pub mod pg_writer;
pub mod sql;
mod sql_ops;
mod sql_sessions;
mod sql_writes;
pub mod writer;

use async_trait::async_trait;
pub use docgate_core::ProviderEvent;
use docgate_core::{DocumentMeta, OwnedRef, Prepared};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use sql::{sqlite_file, SqlLedger};

/// Milliseconds since the Unix epoch: the ledger's clock unit.
pub type Millis = i64;

pub use docgate_core::now_ms;

/// A new upload's id: a UUID whose first 48 bits are the time (version 7), the other 74
/// random. The ledger's indexes on the id (the upload's row, its history) then take new
/// uploads at their end, so a batch of concurrent uploads dirties a few shared pages instead
/// of one random page each per index (fewer WAL frames written and synced per upload). An id
/// is no secret either way: every read of an upload checks its tenant.
pub fn new_upload_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Where an upload's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    Received,
    Delivering,
    Delivered,
    Duplicate,
    Rejected,
    RetryScheduled,
    Failed,
    /// An operator stopped it: no further attempts.
    Canceled,
}

impl UploadStatus {
    pub const ALL: [UploadStatus; 8] = [
        UploadStatus::Received,
        UploadStatus::Delivering,
        UploadStatus::Delivered,
        UploadStatus::Duplicate,
        UploadStatus::Rejected,
        UploadStatus::RetryScheduled,
        UploadStatus::Failed,
        UploadStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Received => "received",
            UploadStatus::Delivering => "delivering",
            UploadStatus::Delivered => "delivered",
            UploadStatus::Duplicate => "duplicate",
            UploadStatus::Rejected => "rejected",
            UploadStatus::RetryScheduled => "retry_scheduled",
            UploadStatus::Failed => "failed",
            UploadStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<UploadStatus> {
        UploadStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing more will happen to the delivery.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            UploadStatus::Delivered
                | UploadStatus::Duplicate
                | UploadStatus::Rejected
                | UploadStatus::Failed
                | UploadStatus::Canceled
        )
    }
}

/// A document as the ledger knows it: its metadata and where its bytes are spooled
/// (relative to the spool root, so replicas sharing the spool agree on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    #[serde(flatten)]
    pub meta: DocumentMeta,
    /// The spool key (the first piece's, for a document received in pieces).
    pub spool_path: String,
    /// A document received in pieces (resumable uploads): every piece, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<docgate_core::spool::Piece>>,
}

impl StoredDocument {
    /// Every spool key of the document.
    pub fn keys(&self) -> Vec<String> {
        match &self.pieces {
            Some(pieces) => pieces.iter().map(|p| p.key.clone()).collect(),
            None => vec![self.spool_path.clone()],
        }
    }
}

/// State of the tenant notification for one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyState {
    /// The tenant has no notify_url.
    None,
    /// To be sent once the delivery is final.
    Pending,
    Sent,
    Failed,
}

impl NotifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::None => "none",
            NotifyState::Pending => "pending",
            NotifyState::Sent => "sent",
            NotifyState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyState> {
        [
            NotifyState::None,
            NotifyState::Pending,
            NotifyState::Sent,
            NotifyState::Failed,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
    }
}

/// One upload, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub idempotency_key: Option<String>,
    /// Hash of what was uploaded (provider, fields, document digests): the same
    /// Idempotency-Key with a different fingerprint is a conflict.
    pub fingerprint: String,
    pub status: UploadStatus,
    pub prepared: Prepared,
    pub documents: Vec<StoredDocument>,
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Millis>,
    pub last_upstream_status: Option<u16>,
    /// The latest transient failure, for humans.
    pub last_error: Option<String>,
    pub provider_reference: Option<Value>,
    /// For rejected/failed uploads: the problem+json the frontend gets.
    pub problem: Option<Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub delivered_at: Option<Millis>,
    pub notify: NotifyState,
    pub notify_attempts: u32,
    pub notify_next_at: Option<Millis>,
    pub spool_removed: bool,
    /// When the upload's personal data was erased (only a tombstone is left).
    pub erased_at: Option<Millis>,
    /// An operator canceled it while an attempt was in flight: that attempt is recorded,
    /// no other follows.
    pub cancel_requested: bool,
    /// When the latest retry began a new series of attempts (`None`: none yet).
    pub series_started_at: Option<Millis>,
}

impl UploadRecord {
    /// When the current series of attempts began (the give-up age counts from here).
    pub fn series_start(&self) -> Millis {
        self.series_started_at.unwrap_or(self.created_at)
    }
}

/// Which of a tenant's uploads to list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub tenant: String,
    pub status: Option<UploadStatus>,
    pub provider: Option<String>,
    /// Created at or after this.
    pub created_after: Option<Millis>,
    /// Created strictly before this.
    pub created_before: Option<Millis>,
    /// Continue after this `(created_at, id)`: the last item of the previous page.
    pub after: Option<(Millis, String)>,
    pub limit: u32,
}

/// Result of an operator's action on one upload.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Done; the upload as it now stands.
    Done(UploadRecord),
    /// The upload's state does not allow it; the upload as it stands.
    Refused(UploadRecord),
    NotFound,
}

/// A freshly accepted upload.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub prepared: Prepared,
    pub documents: Vec<StoredDocument>,
    pub now: Millis,
    /// `Some` when the accepting replica delivers it right away (it holds the lease);
    /// `None` leaves it `received` and due now, for any worker.
    pub lease: Option<Lease>,
    /// With `lease`: the insert also counts the first attempt, which the caller starts at
    /// once without [`Ledger::start_attempt`] (one ledger write less per upload). An attempt
    /// is counted before it is made either way, so a crash during it is not forgotten.
    pub first_attempt: bool,
    pub notify: bool,
    /// The customers the upload acts for ([`docgate_core::Provider::subjects`]): claimed for
    /// the tenant in the same write (those with `claim`); one another tenant owns makes the
    /// insert [`Inserted::NotOwner`], and nothing is recorded.
    pub subjects: Vec<UploadSubject>,
    /// The upload session this upload accepts: marked `accepted` in the same write, so a
    /// crash leaves either both or neither (a session left `completing` has no upload).
    pub session: Option<String>,
}

/// A customer an upload acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSubject {
    pub subject: OwnedRef,
    /// Made the tenant's if no tenant has it yet. Without: only checked to be no other
    /// tenant's (a customer a browser named, not the tenant).
    pub claim: bool,
}

/// A claim on one upload's delivery. `owner` is `<replica>:<claim token>`: unique per
/// claim, so two claims of the same upload — even by the same replica, after a lease expired
/// under a stalled attempt — can never both record an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: Millis,
}

/// Result of [`Ledger::insert`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    New(UploadRecord),
    /// The tenant already used this Idempotency-Key: the original upload.
    Existing(UploadRecord),
    /// `subjects[i]` is another tenant's customer: nothing was recorded.
    NotOwner(usize),
}

/// One delivery attempt, as its history records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: Millis,
    pub duration_ms: u64,
    /// `delivered`, `duplicate`, `rejected` or `retry_later`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attempt failed on our side (its documents could not be read from the spool): it
    /// is not counted towards `max_attempts`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_counted: bool,
}

/// A transient failure to record, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Reschedule {
    pub next_at: Millis,
    pub reason: String,
    pub upstream_status: Option<u16>,
    pub now: Millis,
    /// The attempt that failed (none when the delivery was handed back without one).
    pub attempt: Option<AttemptRecord>,
}

/// One entry of an upload's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadEvent {
    pub seq: u64,
    pub at: Millis,
    /// `received`, `attempt`, `retry_scheduled`, `delivered`, `duplicate`, `rejected`,
    /// `failed`, `retried`, `cancel_requested`, `canceled`, `erased`.
    pub kind: String,
    /// Kind-specific facts (an attempt's number, duration, upstream status and error, …).
    pub detail: Value,
}

impl Finish {
    /// Delivered or duplicate: the provider's reference and what the tenant now owns.
    pub fn delivered(
        status: UploadStatus,
        reference: Value,
        owned: Vec<OwnedRef>,
        upstream_status: Option<u16>,
    ) -> Finish {
        Finish {
            status,
            provider_reference: Some(reference),
            problem: None,
            upstream_status,
            owned,
            attempt: None,
            now: now_ms(),
        }
    }

    /// Rejected or failed, with the problem the frontend gets.
    pub fn refused(
        status: UploadStatus,
        problem: &docgate_core::Problem,
        upstream_status: Option<u16>,
    ) -> Finish {
        Finish {
            status,
            provider_reference: None,
            problem: Some(problem.to_json()),
            upstream_status,
            owned: Vec::new(),
            attempt: None,
            now: now_ms(),
        }
    }

    /// The same outcome, recorded with the attempt that produced it.
    pub fn after(mut self, attempt: AttemptRecord) -> Finish {
        self.attempt = Some(attempt);
        self
    }
}

/// A final outcome to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub status: UploadStatus,
    pub provider_reference: Option<Value>,
    pub problem: Option<Value>,
    pub upstream_status: Option<u16>,
    /// Identifiers the uploading tenant now owns (first owner wins).
    pub owned: Vec<OwnedRef>,
    /// The attempt that ended this way (recorded in the history).
    pub attempt: Option<AttemptRecord>,
    pub now: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger schema migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the ledger's writes did not commit: {}", .0.message)]
    Commit(writer::CommitFailure),
    #[error("the ledger is shutting down")]
    Closed,
    #[error("ledger row is corrupt: {0}")]
    Corrupt(String),
    #[error("ledger configuration: {0}")]
    Config(String),
    #[error("ledger bug: {0}")]
    Bug(&'static str),
    /// An upload of a session was to be recorded while the session was no longer being
    /// completed by its request (it was handed back): nothing was written.
    #[error("the upload session is no longer being completed by this request")]
    SessionNotHeld,
}

impl LedgerError {
    /// Database errors are usually transient (connection lost, lock timeout).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            LedgerError::Db(_)
                | LedgerError::Sqlite(_)
                | LedgerError::Commit(_)
                | LedgerError::Closed
        )
    }

    /// The write may have committed though it failed (its `COMMIT`'s answer was lost): look
    /// before undoing anything of it, and keep what it may refer to when looking finds nothing
    /// (its commit may not be visible yet).
    pub fn maybe_committed(&self) -> bool {
        matches!(self, LedgerError::Commit(f) if f.maybe_committed)
    }

    /// The database's storage is full: SQLite's `SQLITE_FULL` (13), PostgreSQL's
    /// `disk_full` (53100), or the operating system's ENOSPC/EDQUOT underneath.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            LedgerError::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("13") | Some("53100"))
            }
            LedgerError::Db(sqlx::Error::Io(e)) => crate::admission::is_out_of_space(e),
            LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            LedgerError::Commit(f) => f.out_of_space,
            _ => false,
        }
    }
}

pub type LedgerResult<T> = Result<T, LedgerError>;

#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug + 'static {
    /// Record an accepted upload. With an Idempotency-Key already used by the tenant, nothing
    /// is inserted and the original comes back as [`Inserted::Existing`].
    async fn insert(&self, new: NewUpload) -> LedgerResult<Inserted>;

    async fn get(&self, id: &str) -> LedgerResult<Option<UploadRecord>>;

    /// Claim up to `limit` deliveries to `providers` that are due (or whose lease expired).
    async fn claim_due(
        &self,
        lease: &Lease,
        now: Millis,
        limit: u32,
        providers: &[String],
    ) -> LedgerResult<Vec<UploadRecord>>;

    /// Extend a lease still held (not expired) by `lease.owner`. False when it was lost.
    async fn renew(&self, id: &str, lease: &Lease, now: Millis) -> LedgerResult<bool>;

    /// Count one more attempt and extend the lease, if `lease.owner` still holds it.
    /// Returns the attempt number, or `None` when the lease was lost.
    async fn start_attempt(
        &self,
        id: &str,
        lease: &Lease,
        now: Millis,
    ) -> LedgerResult<Option<u32>>;

    /// Record a final outcome (only by the lease holder): the upload as committed, or `None`
    /// when the lease was lost.
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        finish: Finish,
    ) -> LedgerResult<Option<UploadRecord>>;

    /// Record a transient failure and when to try again; releases the lease.
    async fn reschedule(&self, id: &str, owner: &str, r: Reschedule) -> LedgerResult<bool>;

    /// Record an attempt in the history while keeping the lease (a short wait is slept
    /// through before the next one). False when the lease was lost.
    async fn record_attempt(&self, id: &str, owner: &str, a: AttemptRecord) -> LedgerResult<bool>;

    /// The upload's history, oldest first.
    async fn history(&self, id: &str) -> LedgerResult<Vec<UploadEvent>>;

    /// A page of a tenant's uploads, newest first (ties by id, descending).
    async fn list_uploads(&self, q: &ListQuery) -> LedgerResult<Vec<UploadRecord>>;

    /// Re-queue a `failed` or `rejected` upload whose documents are still spooled: due now,
    /// a new series of attempts, event `retried`. Refused in any other state.
    async fn retry(&self, id: &str, now: Millis) -> LedgerResult<Control>;

    /// Stop an upload that is not final: a pending one becomes `canceled` at once; one with
    /// an attempt in flight is flagged, and its lease holder records that attempt and stops.
    /// Refused for final uploads.
    async fn cancel(&self, id: &str, now: Millis) -> LedgerResult<Control>;

    /// Erase the upload's personal data, leaving a tombstone (cancels it first when not
    /// final). `Some((tombstone, true))` the first time, `(tombstone, false)` after.
    async fn erase(&self, id: &str, now: Millis) -> LedgerResult<Option<(UploadRecord, bool)>>;

    /// Make every lease held by replica `node` (owners `<node>:<token>`) due again now
    /// (graceful shutdown).
    async fn release_node(&self, node: &str, now: Millis) -> LedgerResult<u64>;

    /// Make every lease due again now, whoever holds it, free every tus PATCH lock and open
    /// again the sessions left `completing`. Only for a single-replica ledger at start-up:
    /// the previous process is gone, its leases mean nothing.
    async fn release_all(&self, now: Millis) -> LedgerResult<u64>;

    /// Claim notifications to send (final uploads with a pending notification that is due).
    async fn claim_notifications(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>>;

    /// The result of a notification claimed with hold `claimed_until`; false (nothing
    /// recorded) when a retry of the upload began a new series meanwhile.
    async fn notification_done(
        &self,
        id: &str,
        claimed_until: Millis,
        state: NotifyState,
        next_at: Option<Millis>,
        now: Millis,
    ) -> LedgerResult<bool>;

    /// Final uploads whose spool is still there and that ended before `before`.
    async fn spool_removal_due(
        &self,
        before: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<UploadRecord>>;

    /// Note that the spooled documents of these uploads are gone (one write for all).
    async fn mark_spool_removed(&self, ids: &[String]) -> LedgerResult<()>;

    /// Every spool path of uploads whose spool has not been removed (orphan detection).
    async fn live_upload_ids(&self) -> LedgerResult<Vec<String>>;

    /// Uploads for a provider none of `known` is, not final and begun before `before`, end
    /// `failed` (their documents then go with the retention sweep). How many.
    async fn fail_stranded(
        &self,
        known: &[String],
        before: Millis,
        now: Millis,
    ) -> LedgerResult<u64>;

    /// Make `tenant` the owner of `subject` unless another tenant is; `source` says what
    /// handed it out. True when `tenant` owns it (now or before).
    async fn claim_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
        source: &str,
    ) -> LedgerResult<bool>;

    /// Remove `tenant`'s ownership of `subject` (another tenant's is left alone).
    async fn release_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> LedgerResult<()>;

    /// Does `tenant` own `subject`?
    async fn owns_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject: &OwnedRef,
    ) -> LedgerResult<bool>;

    /// Record an inbound provider event; false when `(provider, event_id)` was seen before.
    async fn record_event(&self, event: &ProviderEvent) -> LedgerResult<bool>;

    /// The newest events of `provider` about subjects `tenant` owns.
    async fn list_events(
        &self,
        tenant: &str,
        provider: &str,
        limit: u32,
    ) -> LedgerResult<Vec<ProviderEvent>>;

    /// `(provider, status, count)` for metrics.
    async fn status_counts(&self) -> LedgerResult<Vec<(String, UploadStatus, u64)>>;

    /// Liveness of the database (readiness probe).
    async fn ping(&self) -> LedgerResult<()>;

    // --- upload sessions and resumable uploads ---

    async fn create_session(&self, s: SessionRecord) -> LedgerResult<()>;

    async fn session(&self, id: &str) -> LedgerResult<Option<SessionRecord>>;

    async fn session_by_token(&self, token_hash: &str) -> LedgerResult<Option<SessionRecord>>;

    /// Move a session from one of `from` to `to`; false when it was in another state.
    async fn session_state(
        &self,
        id: &str,
        from: &[SessionState],
        to: SessionState,
    ) -> LedgerResult<bool>;

    /// A new resumable upload in its slot, unless the slot's document is complete or being
    /// written to (a document still receiving and unlocked is replaced).
    async fn create_tus(&self, t: TusRecord) -> LedgerResult<TusCreated>;

    async fn tus(&self, id: &str) -> LedgerResult<Option<TusRecord>>;

    /// Every resumable upload of a session, oldest first.
    async fn session_documents(&self, session_id: &str) -> LedgerResult<Vec<TusRecord>>;

    /// Take an upload's PATCH lock at the client's offset.
    async fn lock_tus(
        &self,
        id: &str,
        owner: &str,
        until: Millis,
        offset: u64,
        now: Millis,
    ) -> LedgerResult<TusLock>;

    async fn renew_tus(&self, id: &str, owner: &str, until: Millis) -> LedgerResult<bool>;

    /// Record a committed piece (and with `meta`, the complete document); release the lock.
    async fn add_piece(
        &self,
        id: &str,
        owner: &str,
        piece: Option<docgate_core::spool::Piece>,
        length: Option<u64>,
        meta: Option<DocumentMeta>,
        now: Millis,
    ) -> LedgerResult<bool>;

    async fn unlock_tus(&self, id: &str, owner: &str) -> LedgerResult<()>;

    /// End an upload (terminated, refused); its record as it was, `None` if already ended
    /// or, with `only_while_open` (a client's termination), if its session is not open.
    async fn end_tus(
        &self,
        id: &str,
        state: TusState,
        only_while_open: bool,
        now: Millis,
    ) -> LedgerResult<Option<TusRecord>>;

    /// Open sessions past their expiry, now expired, with their documents.
    async fn expire_sessions(
        &self,
        now: Millis,
        limit: u32,
    ) -> LedgerResult<Vec<(SessionRecord, Vec<TusRecord>)>>;
}
/// Where an upload session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Taking documents.
    Open,
    /// Its upload is being recorded (a second `complete` waits for the first).
    Completing,
    /// Its upload is recorded: the token is spent.
    Accepted,
    Revoked,
    Expired,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Completing => "completing",
            SessionState::Accepted => "accepted",
            SessionState::Revoked => "revoked",
            SessionState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        [
            SessionState::Open,
            SessionState::Completing,
            SessionState::Accepted,
            SessionState::Revoked,
            SessionState::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// An upload session, as stored (the token only as its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub token_hash: String,
    pub fields: docgate_core::Fields,
    pub slots: Vec<String>,
    pub max_bytes: Option<u64>,
    pub origin: Option<String>,
    pub state: SessionState,
    /// The upload this session becomes (chosen at creation: documents are spooled under it).
    pub upload_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// Where a resumable upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TusState {
    Receiving,
    Complete,
    Terminated,
    /// Its bytes were refused (type, size, content): it cannot continue.
    Refused,
}

impl TusState {
    pub fn as_str(self) -> &'static str {
        match self {
            TusState::Receiving => "receiving",
            TusState::Complete => "complete",
            TusState::Terminated => "terminated",
            TusState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<TusState> {
        [
            TusState::Receiving,
            TusState::Complete,
            TusState::Terminated,
            TusState::Refused,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One resumable upload: one document of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct TusRecord {
    pub id: String,
    pub session_id: String,
    pub slot: String,
    /// `None` while deferred.
    pub length: Option<u64>,
    pub received: u64,
    pub filename: Option<String>,
    pub filetype: Option<String>,
    pub pieces: Vec<docgate_core::spool::Piece>,
    pub state: TusState,
    /// The checked document, once complete.
    pub meta: Option<DocumentMeta>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What a tus creation did.
#[derive(Debug, Clone, PartialEq)]
pub enum TusCreated {
    /// Created; it replaced the slot's document that was still receiving and unlocked (its
    /// pieces are the caller's to remove).
    Created { replaced: Option<TusRecord> },
    /// The slot's document is complete, or a PATCH is writing to it.
    SlotTaken { id: String },
    /// The session takes no more documents.
    SessionClosed,
    /// The slot has had [`MAX_TUS_CREATIONS_PER_SLOT`] documents already, none of them live.
    TooMany { limit: u32 },
}

/// Documents one session's slot may be created with. Each creation that replaces a lost
/// document keeps the old one's row (its id answers 410), and every row is read whenever the
/// session's documents are (completion, revocation, expiry): without a bound, a token holder
/// creating in a loop grew them for the session's whole life.
pub const MAX_TUS_CREATIONS_PER_SLOT: u32 = 64;

/// Why a PATCH could not take an upload's lock.
#[derive(Debug, Clone, PartialEq)]
pub enum TusLock {
    Taken,
    /// Another PATCH holds it (this replica's or another's).
    Busy,
    /// The client's offset is not the upload's (it must HEAD and resume from `received`).
    Offset {
        received: u64,
    },
    /// Not receiving any more (complete, terminated, refused) or unknown.
    Gone,
    /// Its session takes no more bytes (being accepted, accepted, revoked, expired).
    SessionClosed,
}
