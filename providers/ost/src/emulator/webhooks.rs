//! Sending signed webhook events, as OST does, to a receiver under test.
//!
//! The body is the event's parameters plus `request_timestamp` and `signature` as JSON (the
//! shape OST's docs show); the signature covers the receiver's full URL plus the sorted
//! parameters ([`crate::webhook::sign_event`]). OST wants a 200 within 10 s and retries a
//! failed delivery 6 times, 1 h, 2 h, … 32 h apart, each attempt signed afresh.
//!
//! Bounded on every side: at most `capacity` events are in flight (more are dropped and
//! counted), each attempt has a timeout, redirects are not followed (a 3xx is a failure, as
//! for any answer but 200), retries are counted, and the delivery log keeps the last
//! [`MAX_DELIVERY_LOG`]. Stopping the emulator abandons what is still waiting.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::{api::describe, webhook};

/// The delivery log keeps the last this many.
pub const MAX_DELIVERY_LOG: usize = 100;

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub secret: String,
    pub url: Option<String>,
    /// Attempts after the first (OST: 6).
    pub retries: u32,
    /// The first retry's delay; each next one doubles (OST: 1 hour).
    pub retry_base: Duration,
    /// One attempt's limit (OST: 10 s).
    pub timeout: Duration,
    /// Events in flight at most.
    pub capacity: usize,
}

/// What the receiver answered to a one-off send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    pub status: u16,
    /// The first bytes of the receiver's answer, on one line.
    pub body: String,
    /// The parameters that were posted (signature included).
    pub sent: Map<String, Value>,
}

/// How a queued event's delivery ended (or stands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub name: String,
    pub url: String,
    pub attempts: u32,
    /// The last answer's status, when there was one.
    pub status: Option<u16>,
    /// The last transport error, when there was one.
    pub error: Option<String>,
    pub delivered: bool,
}

/// What became of an event handed to [`WebhookSender::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Emitted {
    Queued,
    /// No webhook URL is configured.
    NoUrl,
    /// `capacity` events are already in flight; this one was dropped.
    QueueFull,
}

/// The emulator's webhook sender.
#[derive(Debug)]
pub struct WebhookSender {
    http: reqwest::Client,
    secret: String,
    url: Mutex<Option<String>>,
    slots: Arc<Semaphore>,
    capacity: usize,
    retries: u32,
    retry_base: Duration,
    timeout: Duration,
    log: Mutex<VecDeque<DeliveryRecord>>,
    dropped: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl WebhookSender {
    pub fn new(settings: WebhookSettings) -> std::io::Result<Arc<WebhookSender>> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| std::io::Error::other(describe(e)))?;
        Ok(Arc::new(WebhookSender {
            http,
            secret: settings.secret,
            url: Mutex::new(settings.url),
            slots: Arc::new(Semaphore::new(settings.capacity)),
            capacity: settings.capacity,
            retries: settings.retries,
            retry_base: settings.retry_base,
            timeout: settings.timeout,
            log: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
        }))
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn url(&self) -> Option<String> {
        self.url.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_url(&self, url: Option<String>) {
        *self.url.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// Queue `event` for the configured URL, with OST's retries.
    pub fn emit(self: &Arc<Self>, event: Map<String, Value>) -> Emitted {
        let Some(url) = self.url() else {
            return Emitted::NoUrl;
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "OST emulator dropped a webhook: {} in flight",
                self.capacity
            );
            return Emitted::QueueFull;
        };
        tokio::spawn(self.clone().deliver(url, event, permit));
        Emitted::Queued
    }

    async fn deliver(
        self: Arc<Self>,
        url: String,
        event: Map<String, Value>,
        permit: OwnedSemaphorePermit,
    ) {
        let text = |k: &str| {
            event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let mut record = DeliveryRecord {
            event_id: text("id"),
            name: text("name"),
            url: url.clone(),
            attempts: 0,
            status: None,
            error: None,
            delivered: false,
        };
        let mut stop = self.shutdown.subscribe();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let delay = self
                    .retry_base
                    .saturating_mul(1u32 << (attempt - 1).min(20));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
            record.attempts = attempt + 1;
            let outcome = tokio::select! {
                r = self.post(&url, &event) => r,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            match outcome {
                Ok((status, _)) => {
                    record.status = Some(status);
                    record.error = None;
                    if status == 200 {
                        record.delivered = true;
                        break;
                    }
                }
                Err(e) => record.error = Some(e),
            }
        }
        if !record.delivered {
            tracing::warn!(event = %record.name, attempts = record.attempts, "OST emulator gave up a webhook");
        }
        // The slot is free before the record shows, so whoever sees the record can queue again.
        drop(permit);
        self.remember(record);
    }

    /// Sign `event` for `url` now and post it once: the status and the start of the answer.
    async fn post(&self, url: &str, event: &Map<String, Value>) -> Result<(u16, String), String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.post_signed(url, &webhook::sign_event(&self.secret, url, event, now))
            .await
    }

    async fn post_signed(
        &self,
        url: &str,
        params: &Map<String, Value>,
    ) -> Result<(u16, String), String> {
        let response = self
            .http
            .post(url)
            .timeout(self.timeout)
            .json(params)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let body = docgate_core::upstream::read_bounded(
            response.bytes_stream(),
            docgate_core::upstream::MAX_ERROR_BODY,
        )
        .await
        .unwrap_or_default();
        Ok((status, docgate_core::upstream::summarize_body(&body)))
    }

    /// Sign `event` for `url` and post it once, now (no retries): what the receiver said.
    pub async fn send_once(
        &self,
        url: &str,
        event: Map<String, Value>,
    ) -> Result<WebhookDelivery, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let sent = webhook::sign_event(&self.secret, url, &event, now);
        let (status, body) = self.post_signed(url, &sent).await?;
        Ok(WebhookDelivery { status, body, sent })
    }

    fn remember(&self, record: DeliveryRecord) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_DELIVERY_LOG {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// Finished deliveries, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Abandon waiting retries and attempts in progress.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
