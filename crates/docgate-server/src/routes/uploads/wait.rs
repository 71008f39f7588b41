//! Waiting, within the sync budget, for an accepted upload's delivery to end.

use std::time::Duration;

use tokio::sync::watch;

use crate::{
    app::AppState,
    ledger::{UploadRecord, UploadStatus},
};

/// How often the ledger is re-read for work another replica does.
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// Wait (up to the sync budget) for the upload to reach a final state. Changes made by this
/// replica arrive through `rx`; the ledger is re-read periodically for work another replica
/// does.
pub async fn for_final(
    app: &AppState,
    mut rec: UploadRecord,
    rx: &mut watch::Receiver<UploadStatus>,
) -> UploadRecord {
    let deadline = tokio::time::Instant::now() + app.delivery.sync_budget;
    loop {
        let now = tokio::time::Instant::now();
        if rec.status.is_terminal() || now >= deadline {
            return rec;
        }
        // A local status change or a tick: either way, re-read the ledger (the truth).
        let tick = (now + REREAD_EVERY).min(deadline);
        if let Ok(Err(_)) = tokio::time::timeout_at(tick, rx.changed()).await {
            tokio::time::sleep_until(tick).await;
        }
        if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
            rec = fresh;
        }
    }
}
