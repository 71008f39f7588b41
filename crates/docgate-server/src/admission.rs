//! Admission: whether an upload may start now, decided from its request head alone.
//!
//! Three things can say no before any body byte is read:
//! - **slots** — `limits.max_concurrent_uploads` for the whole gateway and a per-tenant share
//!   of it, so one tenant's burst cannot take every slot. A slot is not a prize for whoever
//!   connected first, though: when none is free, the slowest upload holding one — older than
//!   a couple of seconds and slower than `8 × min_body_rate` — is cut (408 `body_too_slow`)
//!   and the new upload gets its slot. So a crowd of clients trickling bytes cannot keep a
//!   fast one out, even within one tenant. Otherwise the upload waits in line, first come
//!   first served, up to `limits.slot_wait` and with at most as many waiting as there are
//!   slots; past either, 503 `too_many_uploads` with Retry-After. The line cuts slow holders
//!   too, one Retry-After later than a newcomer may, so a client refused by a full line
//!   still finds one when it is back. The line is why a burst of
//!   uploads larger than the slots is taken without refusals: a refused upload's body must
//!   still be read out for the client to hear its 503, and a client that retries sends it
//!   again, so refusing a burst costs more than queueing it. Waiting costs one idle
//!   connection: its body is not read until it has a slot;
//! - **space** — the spool's or the ledger's filesystem below `limits.min_free_space`: 507
//!   `insufficient_storage` with Retry-After. Free space is sampled in the background and
//!   re-checked at once after any write fails for lack of space, so a full disk is noticed
//!   by the next request, not the next sample;
//! - readiness (`/readyz`) reports the same space verdict.
//!
//! Admission alone cannot keep the reserve: uploads admitted together may write more than
//! is free. So bodies also draw on a write budget while they arrive ([`SpaceWatch::draw`]):
//! an upload whose next chunk would leave less than half the reserve is cut with 507. The
//! other half is the ledger's: once uploads are accepted, recording their delivery attempts
//! must never fail for want of space, or nothing could be delivered to free it (CI once
//! deadlocked that way).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use docgate_core::{Problem, Side};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// How often free space is sampled.
const SPACE_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long a new upload waits for the slot of an upload it preempted.
const PREEMPT_WAIT: Duration = Duration::from_secs(2);

/// An upload younger than this is not judged on its pace yet.
const PREEMPT_MIN_AGE: Duration = Duration::from_secs(2);

/// What a refused upload is told to wait before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An upload waiting in line may cut a slow holder this much older than a newcomer may: a
/// client refused because the line was full, back after its Retry-After, still finds one.
const LINE_PREEMPT_MIN_AGE: Duration = PREEMPT_MIN_AGE.saturating_add(RETRY_AFTER);

/// How often an upload in line looks for a slow holder to cut.
const PREEMPT_RECHECK: Duration = Duration::from_millis(500);

/// A granted upload: holds its global and tenant slots until dropped, and tells the
/// admission how fast its body arrives.
#[derive(Debug)]
pub struct UploadPermit {
    global: Option<OwnedSemaphorePermit>,
    tenant: Option<OwnedSemaphorePermit>,
    pub pace: Arc<Pace>,
    registry: Arc<Mutex<Vec<Arc<Pace>>>>,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        lock(&self.registry).retain(|p| !Arc::ptr_eq(p, &self.pace));
        // A preempted upload hands its slot to the upload that preempted it, not to
        // whoever queued first (often another slow client).
        if let Some(heir) = lock(&self.pace.heir).take() {
            // A tenant's slot goes with the gateway's slot it was used with: the heir, of the
            // same tenant, needs both, and the gateway's alone would go to whoever waits in
            // the gateway's line.
            let handed = match heir.level {
                Level::Tenant => self.tenant.take().map(|this| Handed {
                    this,
                    global: self.global.take(),
                }),
                Level::Global => self.global.take().map(|this| Handed { this, global: None }),
            };
            if let Some(handed) = handed {
                // A receiver that gave up returns the permits, which are then released.
                let _ = heir.to.send(handed);
            }
        }
    }
}

/// Which of an upload's two slots a preemption is for.
#[derive(Debug, Clone, Copy)]
enum Level {
    Tenant,
    Global,
}

/// A slot obtained for one level and, from a preempted upload of the same tenant, the
/// gateway's slot that went with it.
#[derive(Debug)]
struct Handed {
    this: OwnedSemaphorePermit,
    global: Option<OwnedSemaphorePermit>,
}

/// The upload waiting for a preempted upload's slot.
#[derive(Debug)]
struct Heir {
    level: Level,
    to: tokio::sync::oneshot::Sender<Handed>,
}

/// One upload's progress, shared between its body and the admission.
#[derive(Debug)]
pub struct Pace {
    tenant: String,
    started: Instant,
    bytes: AtomicU64,
    /// Cancelled when a waiting upload takes this one's slot.
    pub preempted: CancellationToken,
    /// Who gets the slot when this upload ends after its preemption.
    heir: Mutex<Option<Heir>>,
}

impl Pace {
    pub fn received(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Average bytes per second since the upload started.
    fn rate(&self, now: Instant) -> u64 {
        let ms = now.duration_since(self.started).as_millis().max(1) as u64;
        self.bytes.load(Ordering::Relaxed).saturating_mul(1000) / ms
    }
}

/// One level's slots (the gateway's, or a tenant's) and the line of uploads waiting for one.
#[derive(Debug)]
struct Slots {
    free: Arc<Semaphore>,
    /// Places in line: as many as there are slots.
    line: Semaphore,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(n)),
            line: Semaphore::new(n),
        }
    }
}

/// Upload slots and the free-space verdict.
#[derive(Debug)]
pub struct Admission {
    global: Slots,
    tenants: HashMap<String, Slots>,
    /// Uploads holding slots (at most `max_concurrent_uploads`).
    running: Arc<Mutex<Vec<Arc<Pace>>>>,
    /// Below this average rate, a slot holder may be preempted.
    slow: u64,
    /// How long an upload waits in line for a slot.
    wait: Duration,
    /// Uploads in line, for `/metrics`.
    waiting: prometheus_client::metrics::gauge::Gauge,
    pub space: Arc<SpaceWatch>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const TENANT_FULL: &str =
    "this tenant is receiving as many uploads as its share allows; retry shortly";
const GATEWAY_FULL: &str =
    "the gateway is receiving as many uploads as it is configured for; retry shortly";

fn too_many(detail: &str) -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_uploads",
        "Too many uploads",
    )
    .with_detail(detail)
    .with_retry_after(RETRY_AFTER)
}

/// 507: the gateway cannot store more right now. Nothing was accepted.
pub fn insufficient_storage(detail: impl Into<String>) -> Problem {
    Problem::new(
        http::StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "Insufficient storage",
    )
    .with_detail(detail)
    .with_side(Side::Gateway)
    .with_retry_after(Duration::from_secs(30))
}

impl Admission {
    /// `tenants`: each tenant's name and its number of slots. `min_body_rate` sets who
    /// counts as slow (8× it); `wait`, how long an upload may wait in line for a slot.
    pub fn new(
        global: usize,
        tenants: impl IntoIterator<Item = (String, usize)>,
        min_body_rate: u64,
        wait: Duration,
        space: Arc<SpaceWatch>,
    ) -> Admission {
        Admission {
            global: Slots::new(global),
            tenants: tenants
                .into_iter()
                .map(|(name, n)| (name, Slots::new(n.max(1))))
                .collect(),
            running: Arc::default(),
            slow: min_body_rate.saturating_mul(8),
            wait,
            waiting: Default::default(),
            space,
        }
    }

    /// Keep the number of uploads in line on `gauge` (`docgate_uploads_waiting`).
    pub fn with_waiting_gauge(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        self.waiting = gauge;
        self
    }

    /// Slots for one upload of `tenant`, or the reason it cannot start now.
    pub async fn admit(&self, tenant: &str) -> Result<UploadPermit, Problem> {
        if let Some(reason) = self.space.shortage() {
            return Err(insufficient_storage(reason));
        }
        let tenant_slots = self
            .tenants
            .get(tenant)
            .ok_or_else(|| Problem::internal("a tenant without upload slots"))?;
        // One wait for both levels: a tenant's slot and then the gateway's.
        let deadline = Instant::now() + self.wait;
        let Handed {
            this: tenant_permit,
            global,
        } = self
            .slot(tenant_slots, Some(tenant), deadline)
            .await
            .ok_or_else(|| too_many(TENANT_FULL))?;
        let global = match global {
            Some(handed) => handed,
            None => {
                let slot = self.slot(&self.global, None, deadline).await;
                slot.ok_or_else(|| too_many(GATEWAY_FULL))?.this
            }
        };
        // The disk may have filled while this upload waited in line.
        if let Some(reason) = self.space.shortage() {
            return Err(insufficient_storage(reason));
        }
        let pace = Arc::new(Pace {
            tenant: tenant.to_owned(),
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            preempted: CancellationToken::new(),
            heir: Mutex::new(None),
        });
        lock(&self.running).push(pace.clone());
        Ok(UploadPermit {
            global: Some(global),
            tenant: Some(tenant_permit),
            pace,
            registry: self.running.clone(),
        })
    }

    /// A slot of `slots`: a free one, or the one of the slowest upload (of `tenant`, when
    /// given), which is preempted and hands its slot to this upload as it ends, or else the
    /// next one freed while this upload waits in line. `None` when the line is full or the
    /// wait is over: the client hears 503 with Retry-After.
    async fn slot(&self, slots: &Slots, tenant: Option<&str>, deadline: Instant) -> Option<Handed> {
        let free = |this| Handed { this, global: None };
        if let Ok(p) = slots.free.clone().try_acquire_owned() {
            return Some(free(p));
        }
        if let Some(handed) = self.preempt_slowest(tenant, PREEMPT_MIN_AGE) {
            if let Ok(Ok(handed)) = tokio::time::timeout(PREEMPT_WAIT, handed).await {
                return Some(handed);
            }
            // The preempted upload did not end in time: wait in line like everyone else.
        }
        if self.wait.is_zero() {
            return None;
        }
        let _place = slots.line.try_acquire().ok()?;
        let _counted = crate::metrics::Counted::new(&self.waiting);
        // Freed slots go to the line in order. Slots held by slow uploads are not freed
        // until those are cut, so the line cuts them too, once they are old enough — later
        // than a newcomer may (`LINE_PREEMPT_MIN_AGE`), so that a crowd of slow clients in
        // line cannot take every slot judged slow before a refused client is back.
        let freed = slots.free.clone().acquire_owned();
        tokio::pin!(freed);
        loop {
            let recheck = (Instant::now() + PREEMPT_RECHECK).min(deadline);
            tokio::select! {
                permit = &mut freed => return permit.ok().map(free),
                () = tokio::time::sleep_until(recheck) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            if let Some(handed) = self.preempt_slowest(tenant, LINE_PREEMPT_MIN_AGE) {
                // Whichever comes first; a handed slot that arrives too late is released.
                tokio::select! {
                    permit = &mut freed => return permit.ok().map(free),
                    handed = tokio::time::timeout(PREEMPT_WAIT, handed) => {
                        if let Ok(Ok(handed)) = handed {
                            return Some(handed);
                        }
                    }
                }
            }
        }
    }

    /// Cut the slowest slot holder at least `min_age` old and below the slow rate; its slot
    /// will arrive on the returned channel. `None` when none qualifies.
    fn preempt_slowest(
        &self,
        tenant: Option<&str>,
        min_age: Duration,
    ) -> Option<tokio::sync::oneshot::Receiver<Handed>> {
        let now = Instant::now();
        let running = lock(&self.running);
        let (rate, pace) = running
            .iter()
            .filter(|p| tenant.is_none_or(|t| p.tenant == t))
            .filter(|p| !p.preempted.is_cancelled())
            .filter(|p| now.duration_since(p.started) >= min_age)
            .map(|p| (p.rate(now), p))
            .filter(|(rate, _)| *rate < self.slow)
            .min_by_key(|(rate, _)| *rate)?;
        tracing::info!(tenant = %pace.tenant, rate, "preempting a slow upload for its slot");
        let (to, handed) = tokio::sync::oneshot::channel();
        let level = if tenant.is_some() {
            Level::Tenant
        } else {
            Level::Global
        };
        *lock(&pace.heir) = Some(Heir { level, to });
        pace.preempted.cancel();
        Some(handed)
    }
}

/// Free space of the filesystems holding the spool and the ledger, against a reserve.
#[derive(Debug)]
pub struct SpaceWatch {
    paths: Vec<PathBuf>,
    reserve: u64,
    low: AtomicBool,
    /// The smallest free space seen at the last sample (bytes), for `/readyz`.
    free: AtomicU64,
    /// Body bytes drawn since the last sample (not yet reflected in `free`).
    drawn: AtomicU64,
    /// When the last sample was taken (ms since `epoch`), and how soon a draw that does not
    /// fit may take another.
    sampled_at: AtomicU64,
    epoch: std::time::Instant,
    resample_every: u64,
}

/// How often, at most, a draw that does not fit looks at the disk again before refusing.
const RESAMPLE_EVERY: Duration = Duration::from_millis(50);

impl SpaceWatch {
    /// Watch the filesystems of `paths` (the spool directory, the SQLite file's directory).
    pub fn new(paths: Vec<PathBuf>, reserve: u64) -> Arc<SpaceWatch> {
        SpaceWatch::resampling(paths, reserve, RESAMPLE_EVERY)
    }

    /// As [`SpaceWatch::new`], a draw that does not fit looking again at most every
    /// `resample_every`.
    pub fn resampling(
        paths: Vec<PathBuf>,
        reserve: u64,
        resample_every: Duration,
    ) -> Arc<SpaceWatch> {
        let watch = Arc::new(SpaceWatch {
            paths,
            reserve,
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            drawn: AtomicU64::new(0),
            sampled_at: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            resample_every: u64::try_from(resample_every.as_millis()).unwrap_or(u64::MAX),
        });
        watch.sample();
        watch
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sample now (a few `statvfs` calls).
    pub fn sample(&self) {
        let free = self
            .paths
            .iter()
            .filter_map(|p| available(p))
            .min()
            .unwrap_or(u64::MAX);
        self.free.store(free, Ordering::Relaxed);
        self.sampled_at.store(self.now_ms(), Ordering::Relaxed);
        // Bytes drawn before the sample are in `free` now. (A chunk drawn but not yet written
        // when sampled is forgotten once: the floor's margin covers a few chunks.)
        self.drawn.store(0, Ordering::Relaxed);
        self.low.store(free < self.reserve, Ordering::Relaxed);
    }

    /// An upload is about to write `n` more bytes: may it? No when that would leave less
    /// than half the reserve free (the rest is kept for the ledger).
    pub fn draw(&self, n: u64) -> bool {
        if self.fits(n) {
            return true;
        }
        // What was drawn since the last sample is an estimate: deliveries remove documents
        // meanwhile, and a busy gateway draws more in a second than a small disk holds. Look
        // again before refusing (a `statvfs`, at most every `resample_every`), or uploads
        // were refused — and `/readyz` said not ready — with the disk half empty.
        let now = self.now_ms();
        let last = self.sampled_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.resample_every
            && self
                .sampled_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sample();
        }
        // Sampled now, by this draw or a concurrent one: judged on that.
        if self.fits(n) {
            return true;
        }
        self.low.store(true, Ordering::Relaxed);
        false
    }

    /// Draw `n` if that leaves half the reserve free (in one step: a sample resetting the
    /// count meanwhile is never undone by a refused draw).
    fn fits(&self, n: u64) -> bool {
        let free = self.free.load(Ordering::Relaxed);
        self.drawn
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |drawn| {
                let drawn = drawn.saturating_add(n);
                (free.saturating_sub(drawn) >= self.reserve / 2).then_some(drawn)
            })
            .is_ok()
    }

    /// Why new uploads must wait, if they must.
    pub fn shortage(&self) -> Option<String> {
        self.low.load(Ordering::Relaxed).then(|| {
            format!(
                "less than {} bytes of storage are free; retry later",
                self.reserve
            )
        })
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// A write just failed for lack of space: believe it before the next sample.
    pub fn out_of_space(&self) {
        self.low.store(true, Ordering::Relaxed);
        self.sample();
        self.low.store(true, Ordering::Relaxed);
    }

    /// Sample every second until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(SPACE_SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.sample()).await;
                }
            }
        }
    }
}

/// The reserve when `limits.min_free_space` is not set: 256 MiB, or a tenth of the smallest
/// filesystem of `paths` when that is less (at least 1 MiB), so a gateway on a small disk
/// still takes uploads and keeps room for its ledger.
pub fn default_reserve(paths: &[PathBuf]) -> u64 {
    let smallest = paths
        .iter()
        .filter_map(|p| rustix::fs::statvfs(p.as_path()).ok())
        .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
        .min()
        .unwrap_or(u64::MAX);
    (smallest / 10).clamp(1 << 20, 256 << 20)
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn available(path: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Is this I/O error a full disk or an exceeded quota?
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot holder that ends (freeing its slots) once it is preempted, as an upload does.
    fn gives_way_when_preempted(slow: UploadPermit) -> tokio::task::JoinHandle<()> {
        let preempted = slow.pace.preempted.clone();
        tokio::spawn(async move {
            preempted.cancelled().await;
            drop(slow);
        })
    }

    /// `tenant`'s upload is refused without waiting: its status, code, and a Retry-After.
    fn refused_at_once(a: &Admission, tenant: &str) -> (u16, String) {
        let p = futures_util::FutureExt::now_or_never(a.admit(tenant))
            .expect("answered at once")
            .expect_err("refused");
        assert!(p.retry_after.is_some());
        (p.status.as_u16(), p.code.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_cannot_take_more_than_its_share_and_others_still_get_slots() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Admission::new(
            4,
            [("a".into(), 2), ("b".into(), 2)],
            0,
            Duration::ZERO,
            space,
        );
        let _a1 = a.admit("a").await.expect("a1");
        let _a2 = a.admit("a").await.expect("a2");
        let refused = a.admit("a").await.expect_err("a3");
        assert_eq!(refused.code, "too_many_uploads");
        assert!(a.admit("b").await.is_ok(), "b still has its share");
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_bound_holds_across_tenants() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Admission::new(
            1,
            [("a".into(), 1), ("b".into(), 1)],
            0,
            Duration::ZERO,
            space,
        );
        let _held = a.admit("a").await.expect("first");
        let refused = a
            .admit("b")
            .await
            .map(|_| ())
            .map_err(|p| p.status.as_u16());
        assert_eq!(refused, Err(503));
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_trickling_upload_gives_its_slot_to_a_waiting_one() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Arc::new(Admission::new(
            1,
            [("a".into(), 1)],
            1024,
            Duration::ZERO,
            space,
        ));
        let slow = a.admit("a").await.expect("slow one");
        slow.pace.received(3);
        // Too young to judge: the newcomer is refused.
        assert!(a.admit("a").await.is_err());
        tokio::time::advance(Duration::from_secs(3)).await;
        // The holder notices its preemption and ends, handing its slot over.
        let holder = gives_way_when_preempted(slow);
        let fast = a.admit("a").await.expect("the slow one's slot");
        holder.await.expect("holder");
        fast.pace.received(10 << 20);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(a.admit("a").await.is_err(), "a fast upload keeps its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_preempted_slot_is_handed_to_the_upload_that_preempted_it() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Arc::new(Admission::new(
            1,
            [("a".into(), 1)],
            1024,
            Duration::ZERO,
            space,
        ));
        let slow = a.admit("a").await.expect("slow one");
        slow.pace.received(3);
        tokio::time::advance(Duration::from_secs(3)).await;
        let holder = gives_way_when_preempted(slow);
        let heir = a.admit("a").await.expect("handed the slot");
        holder.await.expect("holder");
        assert!(!heir.pace.preempted.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_slots_an_upload_waits_in_line_for_the_next_one_freed() {
        let space = SpaceWatch::new(vec![], 0);
        let wait = Duration::from_secs(10);
        let a = Admission::new(1, [("a".into(), 1)], 0, wait, space);
        let first = a.admit("a").await.expect("first");
        let mut second = Box::pin(a.admit("a"));
        assert!(futures_util::poll!(&mut second).is_pending(), "in line");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            futures_util::poll!(&mut second).is_pending(),
            "still in line"
        );
        drop(first);
        let second = second.await.expect("the freed slot");
        drop(second);
        assert!(a.admit("a").await.is_ok(), "and it gives the slot back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_line_is_as_long_as_the_slots_and_the_wait_is_bounded() {
        let space = SpaceWatch::new(vec![], 0);
        let wait = Duration::from_secs(10);
        let a = Admission::new(4, [("a".into(), 1), ("b".into(), 1)], 0, wait, space);
        let _held = a.admit("a").await.expect("held");
        let mut waiting = Box::pin(a.admit("a"));
        assert!(futures_util::poll!(&mut waiting).is_pending());
        assert_eq!(
            refused_at_once(&a, "a"),
            (503, "too_many_uploads".to_owned()),
            "a full line answers at once"
        );
        assert!(
            a.admit("b").await.is_ok(),
            "another tenant has its own line"
        );
        let started = Instant::now();
        let late = waiting.await.expect_err("waited too long");
        assert_eq!(late.code, "too_many_uploads");
        assert_eq!(started.elapsed(), wait);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_may_cut_a_slow_holder_a_retry_before_the_line_may() {
        let space = SpaceWatch::new(vec![], 0);
        let wait = Duration::from_secs(10);
        let a = Arc::new(Admission::new(1, [("a".into(), 1)], 1024, wait, space));
        let slow = a.admit("a").await.expect("slow one");
        slow.pace.received(3);
        let holder = gives_way_when_preempted(slow);
        let mut in_line = Box::pin(a.admit("a"));
        assert!(futures_util::poll!(&mut in_line).is_pending());
        tokio::time::advance(PREEMPT_MIN_AGE + Duration::from_millis(500)).await;
        assert!(
            futures_util::poll!(&mut in_line).is_pending(),
            "the line does not cut a holder a newcomer could not cut a retry ago"
        );
        let newcomer = a.admit("a").await.expect("the slow one's slot");
        holder.await.expect("holder");
        assert!(
            futures_util::poll!(&mut in_line).is_pending(),
            "handed over, not freed"
        );
        drop(newcomer);
        assert!(in_line.await.is_ok(), "the next freed slot is the line's");
    }

    #[tokio::test(start_paused = true)]
    async fn regression_an_upload_in_line_cuts_a_slow_holder_instead_of_waiting_out_its_wait() {
        let space = SpaceWatch::new(vec![], 0);
        let wait = Duration::from_secs(10);
        let a = Arc::new(Admission::new(1, [("a".into(), 1)], 1024, wait, space));
        let slow = a.admit("a").await.expect("slow one");
        slow.pace.received(3);
        let holder = gives_way_when_preempted(slow);
        // A silent client holds the only slot and the newcomer, too early to judge it,
        // waits in line: it cuts the holder once the holder is old enough, not 10 s later.
        let started = Instant::now();
        let in_line = a.admit("a").await.expect("the slow one's slot");
        holder.await.expect("holder");
        assert!(
            started.elapsed() >= LINE_PREEMPT_MIN_AGE,
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < wait, "{:?}", started.elapsed());
        assert!(!in_line.pace.preempted.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_preempting_newcomer_gets_the_gateways_slot_too_not_the_gateways_line() {
        let space = SpaceWatch::new(vec![], 0);
        let wait = Duration::from_secs(10);
        let tenants = [("a".into(), 1), ("b".into(), 2)];
        let a = Arc::new(Admission::new(2, tenants, 1024, wait, space));
        let slow = a.admit("a").await.expect("a's slow upload");
        slow.pace.received(3);
        let b1 = a.admit("b").await.expect("b1");
        b1.pace.received(10 << 20);
        // b has a slot of its own left but the gateway has none: b2 waits in its line.
        let mut b2 = Box::pin(a.admit("b"));
        assert!(futures_util::poll!(&mut b2).is_pending());
        // a's upload can be cut by a newcomer, not yet by the line.
        tokio::time::advance(PREEMPT_MIN_AGE + Duration::from_millis(500)).await;
        let holder = gives_way_when_preempted(slow);
        let a2 = tokio::time::timeout(Duration::from_secs(1), a.admit("a"))
            .await
            .expect("handed both slots at once, no wait")
            .expect("a2");
        holder.await.expect("holder");
        assert!(
            futures_util::poll!(&mut b2).is_pending(),
            "the line still waits"
        );
        drop(b1);
        assert!(b2.await.is_ok(), "and gets the next slot freed");
        drop(a2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_waited_while_the_disk_filled_gets_507_not_a_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = SpaceWatch::new(vec![dir.path().to_owned()], 1);
        let wait = Duration::from_secs(10);
        let a = Admission::new(1, [("a".into(), 1)], 0, wait, space.clone());
        let first = a.admit("a").await.expect("first");
        let mut waiting = Box::pin(a.admit("a"));
        assert!(futures_util::poll!(&mut waiting).is_pending());
        space.out_of_space();
        drop(first);
        let refused = waiting.await.expect_err("507");
        assert_eq!(refused.code, "insufficient_storage");
        space.sample();
        assert!(a.admit("a").await.is_ok(), "the slot was given back");
    }

    #[test]
    fn bodies_stop_drawing_at_half_the_reserve_and_a_sample_refills_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = SpaceWatch::new(vec![dir.path().to_owned()], 0);
        let free = space.free_bytes();
        assert!(free > 4 << 20, "a test machine has a few MiB free");
        // Never looking again before the explicit sample below.
        let space = SpaceWatch::resampling(vec![dir.path().to_owned()], 2 << 20, Duration::MAX);
        assert!(
            space.draw(free - (1 << 20) - 4096 * 64),
            "well above the floor"
        );
        assert!(space.shortage().is_none());
        assert!(!space.draw(4096 * 128), "past half the reserve");
        assert!(space.shortage().is_some(), "new uploads wait too");
        space.sample();
        assert!(
            space.draw(1 << 20),
            "nothing was written: the budget is back"
        );
    }

    /// A busy gateway on a small disk draws more in a second than the disk holds, while its
    /// deliveries free as much: refused on the estimate, uploads got 507 and `/readyz` 503
    /// with the disk half empty.
    #[test]
    fn regression_a_draw_that_does_not_fit_looks_at_the_disk_again_before_refusing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = SpaceWatch::new(vec![dir.path().to_owned()], 0).free_bytes();
        let space = SpaceWatch::resampling(vec![dir.path().to_owned()], free / 2, Duration::ZERO);
        // Drawn, never written (as written, then removed by a delivery).
        assert!(space.draw(free / 2));
        assert!(
            space.draw(free / 2),
            "the disk still has what was drawn: a fresh look says so"
        );
        assert!(space.shortage().is_none());
        assert!(!space.draw(free), "what does not fit is still refused");
        assert!(space.shortage().is_some());
    }

    #[test]
    fn the_default_reserve_is_a_tenth_of_a_small_disk_and_256_mib_on_a_big_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stat = rustix::fs::statvfs(dir.path()).expect("statvfs");
        let total = stat.f_blocks * stat.f_frsize;
        let expected = (total / 10).clamp(1 << 20, 256 << 20);
        assert_eq!(default_reserve(&[dir.path().to_owned()]), expected);
        assert_eq!(default_reserve(&[]), 256 << 20, "nothing to look at");
    }

    #[test]
    fn below_the_reserve_uploads_get_507_before_their_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = SpaceWatch::new(vec![dir.path().to_owned()], u64::MAX);
        assert!(space.shortage().is_some());
        let a = Admission::new(1, [("a".into(), 1)], 0, Duration::ZERO, space);
        assert_eq!(
            refused_at_once(&a, "a"),
            (507, "insufficient_storage".to_owned())
        );

        let roomy = SpaceWatch::new(vec![dir.path().to_owned()], 1);
        assert!(roomy.shortage().is_none());
        roomy.out_of_space();
        assert!(
            roomy.shortage().is_some(),
            "a failed write is believed at once"
        );
        roomy.sample();
        assert!(
            roomy.shortage().is_none(),
            "and forgotten once space is back"
        );
    }
}
