//! Tenant notifications: the final receipt, POSTed to the tenant's configured `notify_url`.
//!
//! The destination only ever comes from configuration — never from a request — so docgate
//! cannot be turned into a request forwarder (SSRF). Each POST is signed:
//! `Docgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(notify_secret, "<t>.<body>")>`;
//! receivers recompute it and refuse old timestamps. Failed sends are retried with back-off
//! (state in the ledger, so restarts do not lose them).

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::{
    failure_log::FailureLog,
    ledger::{now_ms, Ledger, NotifyState, UploadRecord},
    metrics::Metrics,
    receipt::receipt,
    tenants::{NotifyTarget, Tenants},
};

const MAX_NOTIFY_ATTEMPTS: u32 = 12;
const BATCH: u32 = 16;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CLAIM_MS: i64 = (BATCH as i64) * 10_000 + 60_000;

/// The signature header value for `body` sent at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone)]
pub struct Notifier {
    tenants: Arc<Tenants>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Claims fail on every turn while the ledger is out of reach.
    claim_failures: Arc<FailureLog>,
}

impl Notifier {
    pub fn new(tenants: Arc<Tenants>, metrics: Arc<Metrics>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Notifier {
            tenants,
            client,
            metrics,
            claim_failures: Arc::new(FailureLog::new("claiming notifications")),
        }
    }

    /// Send due notifications until `shutdown`.
    pub async fn run(self, ledger: Arc<dyn Ledger>, every: Duration, shutdown: CancellationToken) {
        let every = every.max(Duration::from_millis(250));
        loop {
            self.send_due(&ledger).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Send every due notification once.
    pub async fn send_due(&self, ledger: &Arc<dyn Ledger>) {
        let now = now_ms();
        // Claimed for longer than a whole batch can take (16 × the 10 s timeout), so no other
        // replica sends the same notification meanwhile.
        let due = match ledger.claim_notifications(now, now + CLAIM_MS, BATCH).await {
            Ok(due) => {
                self.claim_failures.succeeded("");
                due
            }
            Err(e) => {
                self.claim_failures.failed("", &e);
                return;
            }
        };
        for rec in due {
            let target = self
                .tenants
                .by_name(&rec.tenant)
                .and_then(|t| t.notify.clone());
            let (state, next) = match target {
                None => (NotifyState::Failed, None),
                Some(target) => self.send(&rec, &target).await,
            };
            let claimed_until = rec.notify_next_at.unwrap_or(now + CLAIM_MS);
            match ledger
                .notification_done(&rec.id, claimed_until, state, next, now_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(upload = %rec.id, "the upload was retried while its notification was sent: the new series notifies again")
                }
                Err(e) => {
                    tracing::warn!(upload = %rec.id, error = %e, "recording notification result failed")
                }
            }
        }
    }

    async fn send(&self, rec: &UploadRecord, target: &NotifyTarget) -> (NotifyState, Option<i64>) {
        let body = serde_json::to_vec(&receipt(rec)).unwrap_or_default();
        let t = now_ms() / 1000;
        let result = self
            .client
            .post(&target.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                "Docgate-Signature",
                signature(target.secret.expose(), t, &body),
            )
            .header("Docgate-Upload-Id", rec.id.as_str())
            .body(body)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                self.metrics.notification("sent");
                (NotifyState::Sent, None)
            }
            other => {
                let why = match other {
                    Ok(r) => format!("status {}", r.status()),
                    // Without the URL: it may carry a token in its query.
                    Err(e) => e.without_url().to_string(),
                };
                let attempts = rec.notify_attempts + 1;
                tracing::warn!(upload = %rec.id, attempts, why, "tenant notification failed");
                if attempts >= MAX_NOTIFY_ATTEMPTS {
                    self.metrics.notification("failed");
                    (NotifyState::Failed, None)
                } else {
                    self.metrics.notification("retry");
                    let wait = Duration::from_secs(2u64.saturating_pow(attempts).min(3600));
                    (
                        NotifyState::Pending,
                        Some(now_ms() + wait.as_millis() as i64),
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_dot_body() {
        // HMAC-SHA256("key", "1700000000.{}") computed independently (python hmac module).
        assert_eq!(
            signature("key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
