//! The delivery worker: picks up due deliveries (retries, work of crashed replicas, uploads
//! whose first attempt was interrupted) and does the housekeeping (spool retention, orphans).
//! Tenant notifications run in a task of their own, so a slow tenant endpoint never delays
//! deliveries.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{notify::Notifier, Deliverer};
use crate::ledger::now_ms;

/// How often finished uploads' spools and orphans are looked at.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Spool directories without a ledger row are removed once this old (a request may be
/// between making its documents durable and recording them).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

impl Deliverer {
    /// Drive a claimed upload in the background (tracked for graceful shutdown).
    pub fn spawn_drive(self: &Arc<Self>, rec: crate::ledger::UploadRecord) {
        let me = self.clone();
        self.tasks.spawn(async move { me.drive(rec).await });
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
        let permits = Arc::new(Semaphore::new(self.settings.worker_concurrency.max(1)));
        let providers: Vec<String> = self.registry.names().map(str::to_owned).collect();
        let mut last_housekeeping = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = self.wake.notified() => {}
            }
            let free = permits.available_permits();
            if free > 0 {
                match self
                    .ledger
                    .claim_due(&self.lease(), now_ms(), free as u32, &providers)
                    .await
                {
                    Ok(claimed) => {
                        for rec in claimed {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                break;
                            };
                            let me = self.clone();
                            self.tasks.spawn(async move {
                                me.drive(rec).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming due deliveries failed"),
                }
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                last_housekeeping = tokio::time::Instant::now();
                self.remove_expired_spools().await;
                if let Err(e) = self.remove_orphans(ORPHAN_AGE).await {
                    tracing::warn!(error = %e, "orphan spool sweep failed");
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

    async fn remove_expired_spools(&self) {
        let retention = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(retention);
        match self.ledger.spool_removal_due(before, 100).await {
            Ok(due) => {
                for rec in due {
                    if let Err(e) = self.remove_spool(&rec.id).await {
                        tracing::warn!(upload = %rec.id, error = %e, "spool removal failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing spools to remove failed"),
        }
    }

    /// Remove spool directories that no ledger row refers to (a crash between persisting and
    /// recording, or a client gone in between) and stale temporary files — only those older
    /// than `min_age`: a replica sharing the spool may be between those two steps right now.
    pub async fn remove_orphans(&self, min_age: Duration) -> std::io::Result<usize> {
        let live: std::collections::HashSet<String> = match self.ledger.live_upload_ids().await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            let mut removed = spool.remove_orphans(min_age)?;
            let Ok(entries) = std::fs::read_dir(spool.root().join("uploads")) else {
                return Ok(removed);
            };
            let now = std::time::SystemTime::now();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old_enough = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= min_age);
                if !live.contains(&name)
                    && old_enough
                    && std::fs::remove_dir_all(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
