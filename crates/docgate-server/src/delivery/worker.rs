//! The delivery worker: picks up due deliveries (retries, work of crashed replicas, uploads
//! whose first attempt was interrupted) and does the housekeeping (spool retention, orphans).
//! Tenant notifications run in a task of their own, so a slow tenant endpoint never delays
//! deliveries.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{notify::Notifier, slots::DeliverySlot, Deliverer};
use crate::{ledger::now_ms, spool_keys};

/// How often finished uploads' spools are removed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// How often the spool is swept for orphans (a listing of the whole spool).
const ORPHANS_EVERY: Duration = Duration::from_secs(60);

/// Spool directories without a ledger row are removed once this old (a request may be
/// between making its documents durable and recording them).
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

impl Deliverer {
    /// A delivery slot for `provider` now, if one is free: deliveries started by a request
    /// and by the worker share `delivery.worker_concurrency` (see [`super::slots`]).
    pub fn try_slot(&self, provider: &str) -> Option<DeliverySlot> {
        self.slots.try_take(provider)
    }

    /// A delivery slot for `provider` within `wait`, in the order asked.
    pub async fn slot_within(&self, provider: &str, wait: Duration) -> Option<DeliverySlot> {
        self.slots.take_within(provider, wait).await
    }

    /// Drive a claimed upload in the background (tracked for graceful shutdown), holding
    /// `slot` until it is done. `first_attempt_counted`: it was inserted with its first
    /// attempt counted ([`crate::ledger::NewUpload::first_attempt`]). `received`: its
    /// documents still in memory from its request, if any ([`Deliverer::drive`]).
    pub fn spawn_drive(
        self: &Arc<Self>,
        rec: crate::ledger::UploadRecord,
        slot: DeliverySlot,
        first_attempt_counted: bool,
        received: Vec<docgate_core::Document>,
    ) {
        let me = self.clone();
        self.tasks.spawn(async move {
            me.drive(rec, first_attempt_counted, received).await;
            drop(slot);
            if me.backlog.load(Ordering::SeqCst) {
                me.wake.notify_one();
            }
        });
    }

    /// Due work that no slot took (all were busy): the worker claims it as soon as a slot
    /// is given back, not at its next poll.
    pub fn queue_for_worker(&self) {
        self.backlog.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Run until `shutdown`. Then: wait up to `grace` for running deliveries, cancel the ones
    /// still running, and only once every task has stopped hand their leases back, so another
    /// replica (or the next start) resumes them without racing a live attempt.
    pub async fn run_worker(
        self: Arc<Self>,
        notifier: Notifier,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let notifications = tokio::spawn(notifier.run(
            self.ledger.clone(),
            self.settings.poll_interval,
            shutdown.clone(),
        ));
        let providers: Vec<String> = self.registry.names().map(str::to_owned).collect();
        let mut last_housekeeping = tokio::time::Instant::now();
        let mut last_sweep = tokio::time::Instant::now();
        let mut turn = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = self.wake.notified() => {}
            }
            // Cleared before claiming: work queued from now on sets it again.
            self.backlog.store(false, Ordering::SeqCst);
            // Each provider claims within its own share, so one whose backlog is the oldest
            // due work cannot take what the others need; the first to claim turns each time.
            turn = (turn + 1) % providers.len().max(1);
            for provider in providers.iter().cycle().skip(turn).take(providers.len()) {
                self.claim_for(provider).await;
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                last_housekeeping = tokio::time::Instant::now();
                self.remove_expired_spools().await;
                self.expire_sessions().await;
            }
            if last_sweep.elapsed() >= ORPHANS_EVERY {
                last_sweep = tokio::time::Instant::now();
                self.fail_stranded(&providers).await;
                match self.remove_orphans(ORPHAN_AGE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "removed orphaned spool objects"),
                    Err(e) => tracing::warn!(error = %e, "orphan spool sweep failed"),
                }
            }
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still running after the grace period: stopping them");
            self.cancel.cancel();
            self.tasks.wait().await;
        }
        let _ = notifications.await;
        match self.ledger.release_node(&self.node, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "handed back unfinished deliveries"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back leases; they expire by themselves")
            }
        }
    }

    /// Claim what is due for `provider`, as much as its free slots take, and start it.
    async fn claim_for(self: &Arc<Self>, provider: &str) {
        let free = self.slots.free_for(provider);
        if free == 0 {
            // Its work waits for one of its slots to be given back.
            self.backlog.store(true, Ordering::SeqCst);
            return;
        }
        let claimed = match self
            .ledger
            .claim_due(&self.lease(), now_ms(), free as u32, &[provider.to_owned()])
            .await
        {
            Ok(claimed) => {
                self.claim_failures.succeeded(provider);
                claimed
            }
            Err(e) => {
                self.backlog.store(true, Ordering::SeqCst);
                self.claim_failures.failed(provider, &e);
                return;
            }
        };
        if claimed.len() >= free {
            // Every free slot is taken: more may be due.
            self.backlog.store(true, Ordering::SeqCst);
        }
        for rec in claimed {
            // A request may have taken a slot since they were counted: wait for it.
            let Some(slot) = self.slots.take(provider).await else {
                break;
            };
            self.spawn_drive(rec, slot, false, Vec::new());
        }
    }

    /// Uploads for a provider no replica has any more, past the give-up age, end `failed`.
    async fn fail_stranded(&self, providers: &[String]) {
        // The longest give-up age any provider has here: another replica's provider may have
        // an override this one cannot see.
        let longest = (self.settings.providers.values())
            .filter_map(|p| p.max_age)
            .fold(self.settings.max_age, Duration::max);
        let max_age = i64::try_from(longest.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        match self
            .ledger
            .fail_stranded(providers, now.saturating_sub(max_age), now)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                failed = n,
                "uploads for a provider this replica does not have, past delivery.max_age, failed"
            ),
            Err(e) => tracing::warn!(error = %e, "failing stranded uploads failed"),
        }
    }

    /// Upload sessions past their expiry end, and what their documents received is removed.
    async fn expire_sessions(&self) {
        const STEP: &str = "expiring upload sessions";
        match self.ledger.expire_sessions(now_ms(), 100).await {
            Ok(expired) => {
                self.housekeeping_failures.succeeded(STEP);
                for (session, documents) in expired {
                    let keys: Vec<String> = documents
                        .iter()
                        .flat_map(|d| d.pieces.iter().map(|p| p.key.clone()))
                        .collect();
                    if let Err(e) = spool_keys::remove(&self.spool, &keys).await {
                        tracing::warn!(session = %session.id, error = %e, "could not remove an expired session's documents");
                    }
                }
            }
            Err(e) => self.housekeeping_failures.failed(STEP, &e),
        }
    }

    async fn remove_expired_spools(&self) {
        let retention = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(retention);
        const STEP: &str = "listing spools to remove";
        match self.ledger.spool_removal_due(before, 100).await {
            Ok(due) => {
                self.housekeeping_failures.succeeded(STEP);
                for rec in due {
                    self.remove_spool(&rec).await;
                }
            }
            Err(e) => self.housekeeping_failures.failed(STEP, &e),
        }
    }

    /// Remove spooled objects that no ledger row refers to (a crash between writing and
    /// recording, or a client gone in between) and stale temporary objects — only those
    /// older than `min_age`: a replica sharing the spool may be between those two steps
    /// right now. Runs at start and then periodically.
    pub async fn remove_orphans(&self, min_age: Duration) -> std::io::Result<usize> {
        let live: std::collections::HashSet<String> = match self.ledger.live_upload_ids().await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let now = std::time::SystemTime::now();
        let old_enough = |modified: std::time::SystemTime| {
            now.duration_since(modified).is_ok_and(|age| age >= min_age)
        };
        let mut orphans = Vec::new();
        for object in self.spool.store().list(spool_keys::UPLOADS).await? {
            let owned = spool_keys::upload_of(&object.key).is_some_and(|id| live.contains(id));
            if !owned && old_enough(object.modified) {
                orphans.push(object.key);
            }
        }
        for object in self.spool.store().list(spool_keys::TMP).await? {
            if old_enough(object.modified) {
                orphans.push(object.key);
            }
        }
        spool_keys::remove(&self.spool, &orphans).await?;
        Ok(orphans.len() + self.remove_orphaned_scratch(&live, now, min_age).await?)
    }

    /// Scratch directories (a split ZIP's unsealed parts) of uploads whose documents are gone
    /// or that this node does not know: left by a crash, by an erasure that raced a split, or
    /// by another replica finishing what this one had begun.
    async fn remove_orphaned_scratch(
        &self,
        live: &std::collections::HashSet<String>,
        now: std::time::SystemTime,
        min_age: Duration,
    ) -> std::io::Result<usize> {
        let mut dirs = match tokio::fs::read_dir(&self.scratch_root).await {
            Ok(dirs) => dirs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        while let Some(entry) = dirs.next_entry().await? {
            let name = entry.file_name();
            let modified = entry.metadata().await?.modified()?;
            let old_enough = now.duration_since(modified).is_ok_and(|age| age >= min_age);
            if name.to_str().is_some_and(|id| live.contains(id)) || !old_enough {
                continue;
            }
            match tokio::fs::remove_dir_all(entry.path()).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
