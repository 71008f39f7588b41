//! Delivery: getting an accepted upload to its provider, whatever happens on the way.
//!
//! [`Deliverer::drive`] runs the attempts for one claimed upload. Each attempt is counted in
//! the ledger *before* the provider is called (so a crash mid-attempt still shows it), and its
//! outcome is recorded only while this replica holds the lease (so a replica that lost its
//! lease cannot overwrite the work of the one that took over). Transient failures are retried
//! with exponential back-off and jitter, honouring the provider's Retry-After: short waits are
//! slept through holding the lease (a synchronous request then still sees the result), longer
//! ones go back to the ledger as `retry_scheduled` for any replica's worker.
//!
//! Providers make deliveries idempotent (Taler's If-Not-Match, stable references), so an
//! attempt repeated after a crash is recognised as a duplicate rather than stored twice.

pub mod notify;
pub mod slots;
pub mod worker;

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use docgate_core::{DeliveryContext, Document, Outcome, Problem, SpoolDir};
use rand::Rng;
use tokio::sync::{watch, Notify};

use crate::{
    config::DeliverySettings,
    ledger::{
        now_ms, AttemptRecord, Finish, Lease, Ledger, LedgerError, Reschedule, UploadRecord,
        UploadStatus,
    },
    metrics::Metrics,
    registry::Registry,
    spool_keys,
};

/// Waits shorter than this are slept through while holding the lease.
const INLINE_RETRY: Duration = Duration::from_secs(2);

/// An attempt that could not read its own documents waits at least this long before the
/// next (bounded by `max_backoff`): the spool is ours, and it is down.
const UNREADABLE_RETRY: Duration = Duration::from_secs(5);

/// A provider's Retry-After is honoured up to this; beyond it is more likely a bug than a plan.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How one attempt ended.
enum Attempt {
    Done(Outcome),
    LeaseLost,
    Cancelled,
}

/// The exponential back-off before attempt `attempt + 1`, with ±20 % jitter.
pub fn backoff(settings: &DeliverySettings, attempt: u32) -> Duration {
    let exp = settings
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = exp.min(settings.max_backoff);
    let jitter = rand::thread_rng().gen_range(0.8..=1.2);
    base.mul_f64(jitter)
}

/// What went wrong in an attempt, for its history (none when it succeeded).
fn attempt_error(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Rejected { problem, .. } => Some(problem.to_string()),
        Outcome::RetryLater { reason, .. } => Some(reason.clone()),
        Outcome::Delivered { .. } | Outcome::Duplicate { .. } => None,
    }
}

/// The problem of an upload given up on.
fn gave_up(attempt: u32, age: Duration, reason: &str) -> Problem {
    Problem::new(
        http::StatusCode::BAD_GATEWAY,
        "delivery_failed",
        "Delivery failed",
    )
    .with_side(docgate_core::Side::Upstream)
    .with_detail(format!(
        "gave up after {attempt} attempts over {} s: {reason}",
        age.as_secs()
    ))
}

/// A spooled document failed its integrity check: its stored bytes were altered or cut
/// after it was accepted. Only authenticated bytes were ever read from it, and no retry can
/// repair it, so the upload fails now instead of retrying until it gives up.
fn spool_altered() -> Problem {
    Problem::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "delivery_failed",
        "Delivery failed",
    )
    .with_side(docgate_core::Side::Gateway)
    .with_detail(
        "the spooled document failed its integrity check (altered, truncated or removed \
         while stored); no altered byte was sent, and the document must be uploaded again",
    )
}

/// A delivered document kept for its retention is dropped from the page cache from this
/// size up (see `ObjectStore::evict_cached`).
const EVICT_FROM: u64 = 256 * 1024;

/// Runs deliveries and tells waiting requests how they went.
#[derive(Debug)]
pub struct Deliverer {
    pub ledger: Arc<dyn Ledger>,
    pub registry: Arc<Registry>,
    pub spool: SpoolDir,
    /// Where deliveries keep derived files (local; lost files are derived again).
    pub scratch_root: PathBuf,
    pub settings: DeliverySettings,
    pub metrics: Arc<Metrics>,
    /// This replica's lease owner name.
    pub node: String,
    waiters: Mutex<HashMap<String, watch::Sender<FinalRecord>>>,
    /// Wakes the worker early (a retry was scheduled sooner than its next poll). Use
    /// [`Deliverer::queue_for_worker`] for work that found every slot taken.
    pub wake: Notify,
    /// Work is due that found no free slot: a slot given back wakes the worker at once
    /// instead of leaving the work to its next poll (up to `poll_interval` later).
    backlog: std::sync::atomic::AtomicBool,
    /// Every running delivery, so shutdown can wait for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Cancelled when shutdown's grace period is over: running attempts stop unrecorded.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Deliveries running at once on this replica (`delivery.worker_concurrency`), whether a
    /// request or the worker started them, and each provider's share of them.
    pub slots: slots::DeliverySlots,
    /// Uploads whose spooled documents are gone, waiting to be noted in the ledger.
    spool_notes: Mutex<SpoolNotes>,
    /// The worker's claims, failing on every poll while the ledger is out of reach.
    claim_failures: crate::failure_log::FailureLog,
    /// The worker's periodic housekeeping (sessions to expire, spools to remove), failing on
    /// every turn while the ledger is out of reach.
    housekeeping_failures: crate::failure_log::FailureLog,
}

/// Removals that end while another removal's note is being written join the next note
/// instead of writing their own: one ledger write for many uploads.
#[derive(Debug, Default)]
struct SpoolNotes {
    waiting: Vec<String>,
    /// A caller is writing notes and will write what waits before it returns.
    writing: bool,
}

/// Notes waiting at most; past it a removal writes its own.
const SPOOL_NOTES_WAITING: usize = 1024;

/// Writes one writer of notes makes at most before handing the writing back: it is a
/// delivery's task, holding the delivery's slot.
const SPOOL_NOTES_ROUNDS: usize = 4;

/// Hands the writing of spool notes back if the writer is dropped mid-write (a delivery
/// cancelled at shutdown): the next removal writes what is waiting.
struct SpoolNotesWriter<'a> {
    notes: &'a Mutex<SpoolNotes>,
    handed_back: bool,
}

impl SpoolNotesWriter<'_> {
    /// The notes to write next; none (and the writing handed back, in the same lock, so no
    /// note is left behind) when nothing waits.
    fn next(&mut self) -> Option<Vec<String>> {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.waiting.is_empty() {
            notes.writing = false;
            self.handed_back = true;
            return None;
        }
        Some(std::mem::take(&mut notes.waiting))
    }
}

impl Drop for SpoolNotesWriter<'_> {
    fn drop(&mut self) {
        if !self.handed_back {
            self.notes.lock().unwrap_or_else(|e| e.into_inner()).writing = false;
        }
    }
}

/// What a waiting request is told: the upload as the ledger committed its final outcome,
/// once this replica recorded one, so the request answers from it instead of reading it back
/// (a ledger read less per upload). Passing states are not sent: nobody waits for them.
pub type FinalRecord = Option<Arc<UploadRecord>>;

/// A request waiting for an upload's delivery; unregisters itself when dropped.
#[derive(Debug)]
pub struct Waiter<'a> {
    deliverer: &'a Deliverer,
    id: String,
    pub rx: watch::Receiver<FinalRecord>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.deliverer.lock_waiters();
        if let Some(tx) = waiters.get(&self.id) {
            if tx.receiver_count() <= 1 {
                waiters.remove(&self.id);
            }
        }
    }
}

/// The documents of a request's first attempt: each one still in memory from the request
/// (`received`: small documents are received into memory, then written to the spool) is sent
/// from there, the others (and all of a later attempt's) from the spool. Reading back what
/// was just written cost every small upload a trip to a blocking thread, an open, a read
/// and, with encryption, a decryption. The bytes are the ones the request hashed and checked;
/// a spooled copy altered later is still caught by the next attempt that reads it.
fn first_documents(spooled: &[Document], mut received: Vec<Document>) -> Vec<Document> {
    spooled
        .iter()
        .map(|doc| {
            let same = received
                .iter()
                .position(|r| r.spool.is_in_memory() && r.meta == doc.meta);
            match same {
                Some(i) => Document {
                    meta: doc.meta.clone(),
                    spool: received.swap_remove(i).spool,
                },
                None => doc.clone(),
            }
        })
        .collect()
}

impl Deliverer {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        registry: Arc<Registry>,
        spool: SpoolDir,
        scratch_root: PathBuf,
        settings: DeliverySettings,
        metrics: Arc<Metrics>,
    ) -> Deliverer {
        let providers: Vec<&str> = registry.names().collect();
        let slots = slots::DeliverySlots::new(settings.worker_concurrency, &providers);
        Deliverer {
            ledger,
            registry,
            spool,
            scratch_root,
            settings,
            metrics,
            node: format!("docgate-{}", uuid::Uuid::new_v4().simple()),
            waiters: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            backlog: std::sync::atomic::AtomicBool::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
            slots,
            spool_notes: Mutex::new(SpoolNotes::default()),
            claim_failures: crate::failure_log::FailureLog::new("claiming due deliveries"),
            housekeeping_failures: crate::failure_log::FailureLog::new("housekeeping"),
        }
    }

    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<FinalRecord>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the final outcome this replica records for an upload.
    pub fn watch(&self, id: &str) -> Waiter<'_> {
        let mut waiters = self.lock_waiters();
        let rx = match waiters.get(id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                waiters.insert(id.to_owned(), tx);
                rx
            }
        };
        Waiter {
            deliverer: self,
            id: id.to_owned(),
            rx,
        }
    }

    fn publish_final(&self, done: UploadRecord) {
        if let Some(tx) = self.lock_waiters().get(&done.id) {
            let _ = tx.send(Some(Arc::new(done)));
        }
    }

    /// A new claim: `<replica>:<token>`, valid for `delivery.lease`.
    pub fn lease(&self) -> Lease {
        self.lease_for(&format!("{}:{}", self.node, uuid::Uuid::new_v4().simple()))
    }

    /// The same claim, extended from now.
    fn lease_for(&self, owner: &str) -> Lease {
        let ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        Lease {
            owner: owner.to_owned(),
            until: now_ms().saturating_add(ms),
        }
    }

    /// The upload's documents as spooled: what every attempt but a request's first reads.
    fn documents(&self, rec: &UploadRecord) -> Vec<Document> {
        rec.documents
            .iter()
            .map(|d| Document {
                meta: d.meta.clone(),
                spool: match &d.pieces {
                    Some(pieces) => self.spool.pieces(pieces.clone()),
                    None => self.spool.stored(&d.spool_path, d.meta.size),
                },
            })
            .collect()
    }

    /// Attempt delivery of a claimed upload until it is final, rescheduled for later, or the
    /// lease is lost. Errors of the ledger itself are logged; the lease then expires and the
    /// delivery is picked up again.
    /// `counted`: the first attempt was counted when the upload was inserted.
    /// `received`: documents of the upload still in memory from its request (see
    /// [`first_documents`]); empty when the worker claimed it.
    pub async fn drive(&self, rec: UploadRecord, counted: bool, received: Vec<Document>) {
        let id = rec.id.clone();
        let owner = rec.lease_owner.clone();
        let until = rec.lease_until.unwrap_or(0);
        if let Err(e) = self.drive_inner(rec, counted, received).await {
            tracing::error!(upload = %id, error = %e, "ledger failed during delivery; handing the upload back");
            if let Some(owner) = owner {
                self.hand_back_after_ledger_error(&id, &owner, until).await;
            }
        }
    }

    /// After a ledger write failed mid-delivery (a full disk, a dropped connection), give
    /// the upload back for a new attempt soon, rather than leaving it claimed until its
    /// lease runs out: the ledger often recovers within seconds (space freed by other
    /// deliveries). Tried until the lease (`until`, ms) would have expired anyway.
    async fn hand_back_after_ledger_error(&self, id: &str, owner: &str, until: i64) {
        let mut wait = Duration::from_millis(250);
        while now_ms() < until {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return,
            }
            let r = Reschedule {
                next_at: now_ms() + 1_000,
                reason: "the ledger failed during the last attempt".into(),
                upstream_status: None,
                now: now_ms(),
                attempt: None,
            };
            match self.ledger.reschedule(id, owner, r).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "handing back after a ledger error failed; trying again")
                }
            }
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    }

    async fn drive_inner(
        &self,
        rec: UploadRecord,
        counted: bool,
        received: Vec<Document>,
    ) -> Result<(), LedgerError> {
        let id = rec.id.as_str();
        let Some(owner) = rec.lease_owner.clone() else {
            tracing::warn!(upload = %id, "asked to deliver an upload that is not claimed");
            return Ok(());
        };
        let Some(provider) = self.registry.get(&rec.provider).cloned() else {
            return self.hand_back(&rec, &owner).await;
        };
        if !counted {
            // The give-up limits are otherwise checked when an attempt ends with an outcome.
            // Attempts that ended without one (the process died in them, a lease was lost, a
            // document crashed the process) would be claimed again for ever.
            let (max_attempts, _) = self.settings.limits_for(&rec.provider);
            if rec.attempts >= max_attempts {
                let age = Duration::from_millis((now_ms() - rec.series_start()).max(0) as u64);
                let reason = rec.last_error.clone().unwrap_or_else(|| {
                    "its attempts ended without an outcome (the process stopped during them)"
                        .to_owned()
                });
                let problem = gave_up(rec.attempts, age, &reason);
                let finish = Finish::refused(UploadStatus::Failed, &problem, None);
                return self.finish(&rec, &owner, finish).await;
            }
        }
        let spooled = self.documents(&rec);
        let mut documents = first_documents(&spooled, received);
        let scratch_dir = self.scratch_dir(id);
        let mut counted = counted.then_some(rec.attempts);
        loop {
            let started = match counted.take() {
                Some(attempt) => Some(attempt),
                None => {
                    self.ledger
                        .start_attempt(id, &self.lease_for(&owner), now_ms())
                        .await?
                }
            };
            let Some(attempt) = started else {
                tracing::warn!(upload = %id, "lease lost or delivery canceled; no further attempt");
                return Ok(());
            };
            let ctx = DeliveryContext {
                upload_id: id.to_owned(),
                attempt,
                scratch_dir: scratch_dir.clone(),
            };
            let started = Instant::now();
            let started_at = now_ms();
            let read_errors = || documents.iter().map(|d| d.spool.read_errors()).sum::<u64>();
            let read_errors_before = read_errors();
            let outcome = match self
                .attempt(
                    id,
                    &owner,
                    provider.deliver(&ctx, &rec.prepared, &documents),
                )
                .await
            {
                Attempt::Done(outcome) => outcome.redacted(&provider.secrets()),
                Attempt::LeaseLost => {
                    tracing::warn!(upload = %id, "lease lost during an attempt; abandoning it");
                    return Ok(());
                }
                // Shutting down: the worker hands the lease back once every task has stopped.
                Attempt::Cancelled => return Ok(()),
            };
            // Our spool failed under the attempt (its store unreachable or erring): a failure
            // on our side, which the provider never saw. It must not use up the attempts the
            // upload has at the provider, or an outage of the spool alone would fail every
            // upload waiting in it and remove its documents.
            let unreadable =
                matches!(outcome, Outcome::RetryLater { .. }) && read_errors() > read_errors_before;
            let outcome = match outcome {
                Outcome::RetryLater {
                    after,
                    reason,
                    upstream_status,
                } if unreadable => Outcome::RetryLater {
                    after: Some(
                        after
                            .unwrap_or_default()
                            .max(UNREADABLE_RETRY.min(self.settings.max_backoff)),
                    ),
                    reason: format!(
                        "the spooled documents could not be read (not counted as an attempt): {reason}"
                    ),
                    upstream_status,
                },
                other => other,
            };
            let kind = outcome.kind();
            self.metrics.attempt(&rec.provider, kind, started.elapsed());
            tracing::info!(upload = %id, provider = %rec.provider, attempt, outcome = kind, "delivery attempt");
            let upstream = outcome.upstream_status();
            let record = AttemptRecord {
                attempt,
                started_at,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                outcome: kind.to_owned(),
                upstream_status: upstream,
                error: attempt_error(&outcome),
                not_counted: unreadable,
            };
            let altered = !matches!(
                outcome,
                Outcome::Delivered { .. } | Outcome::Duplicate { .. }
            ) && documents.iter().any(|d| d.spool.failed_integrity());
            match self.next_step(&rec, attempt, outcome, altered, unreadable) {
                Next::Finish(finish) => {
                    return self.finish(&rec, &owner, finish.after(record)).await
                }
                // An uncounted attempt is handed back to the ledger, which takes it off.
                Next::Retry { wait, .. } if wait <= INLINE_RETRY && !unreadable => {
                    if !self.ledger.record_attempt(id, &owner, record).await? {
                        return Ok(());
                    }
                    // Every later attempt reads the spool, as a claim by the worker would.
                    documents = spooled.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = self.cancel.cancelled() => return Ok(()),
                    }
                }
                Next::Retry { wait, reason } => {
                    return self.retry_later(id, &owner, wait, reason, record).await
                }
            }
        }
    }

    /// Not deliverable here (the provider list changed under us): hand it back for a
    /// replica that can, rather than failing it.
    async fn hand_back(&self, rec: &UploadRecord, owner: &str) -> Result<(), LedgerError> {
        let r = Reschedule {
            next_at: now_ms() + 60_000,
            reason: format!(
                "provider `{}` is not configured on this replica",
                rec.provider
            ),
            upstream_status: None,
            now: now_ms(),
            attempt: None,
        };
        self.ledger.reschedule(&rec.id, owner, r).await?;
        Ok(())
    }

    /// What an attempt's outcome leads to: a final status, or another attempt after a wait
    /// (unless the upload has used its attempts or its age; an attempt that could not read
    /// the spool, `unreadable`, does not count, but the age does).
    fn next_step(
        &self,
        rec: &UploadRecord,
        attempt: u32,
        outcome: Outcome,
        altered: bool,
        unreadable: bool,
    ) -> Next {
        let upstream = outcome.upstream_status();
        let finish = match outcome {
            _ if altered => {
                tracing::error!(upload = %rec.id, "a spooled document failed its integrity check; the upload fails without further attempts");
                Finish::refused(UploadStatus::Failed, &spool_altered(), upstream)
            }
            Outcome::Delivered {
                reference, owned, ..
            } => Finish::delivered(UploadStatus::Delivered, reference, owned, upstream),
            Outcome::Duplicate {
                reference, owned, ..
            } => Finish::delivered(UploadStatus::Duplicate, reference, owned, upstream),
            Outcome::Rejected { problem, .. } => {
                Finish::refused(UploadStatus::Rejected, &problem, upstream)
            }
            Outcome::RetryLater { after, reason, .. } => {
                let (max_attempts, max_age) = self.settings.limits_for(&rec.provider);
                let age = Duration::from_millis((now_ms() - rec.series_start()).max(0) as u64);
                if (attempt >= max_attempts && !unreadable) || age >= max_age {
                    let problem = gave_up(attempt, age, &reason);
                    Finish::refused(UploadStatus::Failed, &problem, upstream)
                } else {
                    let wait = backoff(&self.settings, attempt)
                        .max(after.unwrap_or_default().min(MAX_RETRY_AFTER));
                    return Next::Retry { wait, reason };
                }
            }
        };
        Next::Finish(finish)
    }

    /// Hand a transient failure back to the ledger for any replica's worker, later.
    async fn retry_later(
        &self,
        id: &str,
        owner: &str,
        wait: Duration,
        reason: String,
        attempt: AttemptRecord,
    ) -> Result<(), LedgerError> {
        let next = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        let r = Reschedule {
            next_at: next,
            reason,
            upstream_status: attempt.upstream_status,
            now: now_ms(),
            attempt: Some(attempt),
        };
        if self.ledger.reschedule(id, owner, r).await? {
            self.queue_for_worker();
        }
        Ok(())
    }

    /// Run one attempt within `attempt_timeout`, renewing the lease every third of its length
    /// while it runs; stop early when the lease is lost or the gateway shuts down.
    async fn attempt(
        &self,
        id: &str,
        owner: &str,
        deliver: impl Future<Output = Outcome>,
    ) -> Attempt {
        let deliver = tokio::time::timeout(self.settings.attempt_timeout, deliver);
        tokio::pin!(deliver);
        let every = (self.settings.lease / 3).max(Duration::from_millis(100));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                result = &mut deliver => {
                    return Attempt::Done(result.unwrap_or_else(|_| Outcome::retry(
                        format!("attempt timed out after {} s", self.settings.attempt_timeout.as_secs()),
                        None,
                    )));
                }
                _ = renew.tick() => match self.ledger.renew(id, &self.lease_for(owner), now_ms()).await {
                    Ok(true) => {}
                    Ok(false) => return Attempt::LeaseLost,
                    // The database hiccuped: keep going; the next tick tries again.
                    Err(e) => tracing::warn!(upload = %id, error = %e, "lease renewal failed"),
                },
                _ = self.cancel.cancelled() => return Attempt::Cancelled,
            }
        }
    }

    async fn finish(
        &self,
        rec: &UploadRecord,
        owner: &str,
        finish: Finish,
    ) -> Result<(), LedgerError> {
        let Some(done) = self.ledger.finish(&rec.id, owner, finish).await? else {
            tracing::warn!(upload = %rec.id, "lease lost before the outcome could be recorded");
            return Ok(());
        };
        self.publish_final(done);
        if self.settings.retention.is_zero() {
            self.remove_spool(rec).await;
        } else {
            // The scratch (ZIP parts, unsealed) is regenerable and no longer needed: it does
            // not wait for the retention of the documents themselves.
            self.remove_scratch(&rec.id).await;
            // Only large documents: for a small one the hand-off to a blocking thread costs
            // more than the few pages it would free.
            let keys: Vec<String> = rec
                .documents
                .iter()
                .filter(|d| d.meta.size >= EVICT_FROM)
                .flat_map(|d| d.keys())
                .collect();
            spool_keys::evict_cached(&self.spool, &keys).await;
        }
        Ok(())
    }

    /// Remove an upload's spooled documents and scratch (its delivery is final). The ledger
    /// notes it only once every object is gone, so a failed removal is tried again by the
    /// retention sweep.
    pub async fn remove_spool(&self, rec: &UploadRecord) {
        let keys: Vec<String> = rec.documents.iter().flat_map(|d| d.keys()).collect();
        let removed = spool_keys::remove(&self.spool, &keys).await;
        self.remove_scratch(&rec.id).await;
        if removed.is_ok() {
            self.note_spool_removed(rec.id.clone()).await;
        }
    }

    /// Note in the ledger that an upload's spooled documents are gone. While one caller
    /// writes notes, the others leave theirs with it and return; it writes what waits, a
    /// few rounds at most (then what still waits is written on a task of its own). A note lost
    /// (the process died, the write failed) costs only a second removal: the retention sweep
    /// finds the upload again, removes nothing and notes it. So a failed note is logged, not
    /// returned: the caller's upload is final, and the note may not even be its own.
    async fn note_spool_removed(&self, id: String) {
        let lock = || self.spool_notes.lock().unwrap_or_else(|e| e.into_inner());
        let alone = {
            let mut notes = lock();
            if !notes.writing {
                notes.writing = true;
                notes.waiting.push(id);
                None
            } else if notes.waiting.len() < SPOOL_NOTES_WAITING {
                notes.waiting.push(id);
                return;
            } else {
                Some(id)
            }
        };
        if let Some(id) = alone {
            log_unnoted(self.ledger.mark_spool_removed(&[id]).await, 1);
            return;
        }
        let mut writer = SpoolNotesWriter {
            notes: &self.spool_notes,
            handed_back: false,
        };
        for _ in 0..SPOOL_NOTES_ROUNDS {
            let Some(ids) = writer.next() else {
                return;
            };
            log_unnoted(self.ledger.mark_spool_removed(&ids).await, ids.len());
        }
        // Still more: written on a task of their own, and the writing handed back.
        if let Some(ids) = writer.next() {
            let ledger = self.ledger.clone();
            tokio::spawn(async move {
                log_unnoted(ledger.mark_spool_removed(&ids).await, ids.len());
            });
        }
    }

    /// Remove everything an erased upload left in the spool: its recorded documents, any
    /// other object under its id (pieces of an unfinished resumable upload) and its scratch
    /// files. Unlike [`Self::remove_spool`] a failure is returned: the erasure must say it
    /// is incomplete.
    pub async fn erase_spool(&self, rec: &UploadRecord) -> std::io::Result<()> {
        let mut keys: Vec<String> = rec.documents.iter().flat_map(|d| d.keys()).collect();
        for prefix in [
            format!("{}{}.", spool_keys::UPLOADS, rec.id),
            format!("{}{}/", spool_keys::UPLOADS, rec.id),
        ] {
            keys.extend(
                self.spool
                    .store()
                    .list(&prefix)
                    .await?
                    .into_iter()
                    .map(|o| o.key),
            );
        }
        keys.sort();
        keys.dedup();
        spool_keys::remove(&self.spool, &keys).await?;
        match tokio::fs::remove_dir_all(self.scratch_dir(&rec.id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.ledger
            .mark_spool_removed(std::slice::from_ref(&rec.id))
            .await
            .map_err(std::io::Error::other)
    }

    /// Derived files of one upload's deliveries (e.g. ZIP parts): local and regenerable.
    pub fn scratch_dir(&self, id: &str) -> PathBuf {
        self.scratch_root.join(id)
    }

    async fn remove_scratch(&self, id: &str) {
        let dir = self.scratch_dir(id);
        // Almost no upload has one (only a split ZIP's delivery makes it): a `stat` here
        // costs less than handing every final outcome to a blocking thread.
        if std::fs::symlink_metadata(&dir).is_err() {
            return;
        }
        match tokio::fs::remove_dir_all(dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(upload = %id, error = %e, "could not remove a delivery's scratch files; the orphan sweep tries again");
            }
            _ => {}
        }
    }
}

fn log_unnoted(written: Result<(), LedgerError>, uploads: usize) {
    if let Err(e) = written {
        tracing::warn!(error = %e, uploads, "noting removed spools failed; the retention sweep will note them");
    }
}

/// After an attempt: the upload's final status, or another attempt after `wait`.
enum Next {
    Finish(Finish),
    Retry { wait: Duration, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(slot: &str, sha256: &str) -> docgate_core::DocumentMeta {
        docgate_core::DocumentMeta {
            slot: slot.to_owned(),
            filename: None,
            size: 3,
            media_type: "application/pdf".into(),
            declared_type: None,
            digests: docgate_core::digest::DigestsHex {
                sha256: sha256.to_owned(),
                sha512: None,
                md5: None,
            },
            entries: None,
        }
    }

    // Every small upload's first attempt read back from the spool (a blocking trip, an open,
    // a read, a decryption) the document it had just written from memory.
    #[test]
    fn a_request_s_first_attempt_sends_what_it_still_holds_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SpoolDir::new(dir.path(), 0).expect("spool");
        let spooled: Vec<Document> = ["front", "back", "selfie"]
            .into_iter()
            .map(|slot| Document {
                meta: meta(slot, "aa"),
                spool: spool.stored(format!("uploads/x.{slot}"), 3),
            })
            .collect();
        let held = |slot: &str, sha256: &str| Document {
            meta: meta(slot, sha256),
            spool: docgate_core::Spooled::from_bytes(bytes::Bytes::from_static(b"pdf")),
        };
        // `back` held with other content (not the same document) and `selfie` not held.
        let first = first_documents(&spooled, vec![held("back", "bb"), held("front", "aa")]);
        let in_memory: Vec<bool> = first.iter().map(|d| d.spool.is_in_memory()).collect();
        assert_eq!(in_memory, vec![true, false, false]);
        let slots: Vec<&str> = first.iter().map(|d| d.meta.slot.as_str()).collect();
        assert_eq!(slots, vec!["front", "back", "selfie"]);
        assert!(first_documents(&spooled, Vec::new())
            .iter()
            .all(|d| !d.spool.is_in_memory()));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let s = DeliverySettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..DeliverySettings::default()
        };
        for (attempt, base) in [
            (1u32, 100u64),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = backoff(&s, attempt).as_millis() as u64;
            assert!(
                d >= base * 8 / 10 && d <= base * 12 / 10,
                "attempt {attempt}: {d} ms"
            );
        }
    }
}
