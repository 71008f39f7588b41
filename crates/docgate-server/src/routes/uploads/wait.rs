//! Waiting, within the sync budget, for an accepted upload's delivery to end.

use std::time::Duration;

use tokio::sync::watch;

use crate::{app::AppState, delivery::StatusChange, ledger::UploadRecord};

/// How often the ledger is re-read for work another replica does.
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// Wait (up to the sync budget) for the upload to reach a final state. A final outcome
/// reached by this replica arrives through `rx` with the record as committed; the ledger is
/// read only on a tick, for work another replica does, and once when the budget runs out,
/// so that the answer says where the delivery stands. A passing change made here (an attempt
/// starting, a retry scheduled) needs no read: nobody sees `rec` until one of those.
pub async fn for_final(
    app: &AppState,
    mut rec: UploadRecord,
    rx: &mut watch::Receiver<StatusChange>,
) -> UploadRecord {
    let deadline = tokio::time::Instant::now() + app.delivery.sync_budget;
    loop {
        let now = tokio::time::Instant::now();
        if rec.status.is_terminal() {
            return rec;
        }
        if now >= deadline {
            if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
                return fresh;
            }
            return rec;
        }
        let tick = (now + REREAD_EVERY).min(deadline);
        match tokio::time::timeout_at(tick, rx.changed()).await {
            Ok(Ok(())) => {
                let committed = rx.borrow_and_update().record.clone();
                if let Some(done) = committed.filter(|r| r.status.is_terminal()) {
                    rec = UploadRecord::clone(&done);
                }
                continue;
            }
            // Nobody here will publish again: wait for the tick, then read.
            Ok(Err(_)) => tokio::time::sleep_until(tick).await,
            Err(_) => {}
        }
        if tick >= deadline {
            // The read at the deadline follows.
            continue;
        }
        if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
            rec = fresh;
        }
    }
}
