//! Waiting, within the sync budget, for an accepted upload's delivery to end.

use std::time::Duration;

use tokio::sync::watch;

use crate::{app::AppState, delivery::FinalRecord, ledger::UploadRecord};

/// How often the ledger is re-read for work another replica does.
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// Wait (up to the sync budget) for the upload to reach a final state. A final outcome
/// recorded by this replica arrives through `rx` as committed; the ledger is read only on a
/// tick, for work another replica does, and once when the budget runs out, so that the
/// answer says where the delivery stands.
pub async fn for_final(
    app: &AppState,
    mut rec: UploadRecord,
    rx: &mut watch::Receiver<FinalRecord>,
) -> UploadRecord {
    let deadline = tokio::time::Instant::now() + app.delivery.sync_budget;
    while !rec.status.is_terminal() {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return app.ledger.get(&rec.id).await.ok().flatten().unwrap_or(rec);
        }
        let tick = (now + REREAD_EVERY).min(deadline);
        match tokio::time::timeout_at(tick, rx.changed()).await {
            Ok(Ok(())) => {
                if let Some(done) = rx.borrow_and_update().clone() {
                    rec = UploadRecord::clone(&done);
                }
                continue;
            }
            // Nobody here will publish again: wait for the tick, then read.
            Ok(Err(_)) => tokio::time::sleep_until(tick).await,
            Err(_) => {}
        }
        // At the deadline, the read above answers.
        if tick < deadline {
            if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
                rec = fresh;
            }
        }
    }
    rec
}
