//! Waiting, within the sync budget, for an accepted upload's delivery to end.

use std::time::Duration;

use tokio::sync::watch;

use crate::{app::AppState, delivery::StatusChange, ledger::UploadRecord};

/// How often the ledger is re-read for work another replica does.
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// Wait (up to the sync budget) for the upload to reach a final state. Changes made by this
/// replica arrive through `rx` (a final one with the record as committed); the ledger is
/// re-read on any other change and periodically, for work another replica does.
pub async fn for_final(
    app: &AppState,
    mut rec: UploadRecord,
    rx: &mut watch::Receiver<StatusChange>,
) -> UploadRecord {
    let deadline = tokio::time::Instant::now() + app.delivery.sync_budget;
    loop {
        let now = tokio::time::Instant::now();
        if rec.status.is_terminal() || now >= deadline {
            return rec;
        }
        // A local status change or a tick: either way, re-read the ledger (the truth) —
        // unless the change is a final outcome that came with its committed record.
        let tick = (now + REREAD_EVERY).min(deadline);
        if let Ok(Err(_)) = tokio::time::timeout_at(tick, rx.changed()).await {
            tokio::time::sleep_until(tick).await;
        }
        let committed = rx.borrow_and_update().record.clone();
        if let Some(done) = committed.filter(|r| r.status.is_terminal()) {
            rec = UploadRecord::clone(&done);
            continue;
        }
        if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
            rec = fresh;
        }
    }
}
