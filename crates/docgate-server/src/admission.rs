//! Admission: whether an upload may start now, decided from its request head alone.
//!
//! Three things can say no before any body byte is read:
//! - **slots** — `limits.max_concurrent_uploads` for the whole gateway and a per-tenant share
//!   of it, so one tenant's burst (or its slow clients) cannot take every slot: 503
//!   `too_many_uploads` with Retry-After;
//! - **space** — the spool's or the ledger's filesystem below `limits.min_free_space`: 507
//!   `insufficient_storage` with Retry-After. Free space is sampled in the background and
//!   re-checked at once after any write fails for lack of space, so a full disk is noticed
//!   by the next request, not the next sample;
//! - readiness (`/readyz`) reports the same space verdict.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use docgate_core::{Problem, Side};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often free space is sampled.
const SPACE_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A granted upload: holds its global and tenant slots until dropped.
#[derive(Debug)]
pub struct UploadPermit {
    _global: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

/// Upload slots and the free-space verdict.
#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    tenants: HashMap<String, Arc<Semaphore>>,
    pub space: Arc<SpaceWatch>,
}

fn too_many(detail: &str) -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "too_many_uploads",
        "Too many uploads",
    )
    .with_detail(detail)
    .with_retry_after(Duration::from_secs(1))
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
    /// `tenants`: each tenant's name and its number of slots.
    pub fn new(
        global: usize,
        tenants: impl IntoIterator<Item = (String, usize)>,
        space: Arc<SpaceWatch>,
    ) -> Admission {
        Admission {
            global: Arc::new(Semaphore::new(global)),
            tenants: tenants
                .into_iter()
                .map(|(name, n)| (name, Arc::new(Semaphore::new(n.max(1)))))
                .collect(),
            space,
        }
    }

    /// Slots for one upload of `tenant`, or the reason it cannot start now.
    pub fn admit(&self, tenant: &str) -> Result<UploadPermit, Problem> {
        if let Some(reason) = self.space.shortage() {
            return Err(insufficient_storage(reason));
        }
        let tenant_slots = self
            .tenants
            .get(tenant)
            .ok_or_else(|| Problem::internal("a tenant without upload slots"))?;
        let tenant_permit = tenant_slots.clone().try_acquire_owned().map_err(|_| {
            too_many("this tenant is receiving as many uploads as its share allows; retry shortly")
        })?;
        let global = self.global.clone().try_acquire_owned().map_err(|_| {
            too_many("the gateway is receiving as many uploads as it is configured for; retry shortly")
        })?;
        Ok(UploadPermit {
            _global: global,
            _tenant: tenant_permit,
        })
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
}

impl SpaceWatch {
    /// Watch the filesystems of `paths` (the spool directory, the SQLite file's directory).
    pub fn new(paths: Vec<PathBuf>, reserve: u64) -> Arc<SpaceWatch> {
        let watch = Arc::new(SpaceWatch {
            paths,
            reserve,
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
        });
        watch.sample();
        watch
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
        self.low.store(free < self.reserve, Ordering::Relaxed);
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

    #[test]
    fn a_tenant_cannot_take_more_than_its_share_and_others_still_get_slots() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Admission::new(4, [("a".into(), 2), ("b".into(), 2)], space);
        let _a1 = a.admit("a").expect("a1");
        let _a2 = a.admit("a").expect("a2");
        let refused = a.admit("a").expect_err("a3");
        assert_eq!(refused.code, "too_many_uploads");
        assert!(a.admit("b").is_ok(), "b still has its share");
    }

    #[test]
    fn the_global_bound_holds_across_tenants() {
        let space = SpaceWatch::new(vec![], 0);
        let a = Admission::new(1, [("a".into(), 1), ("b".into(), 1)], space);
        let _held = a.admit("a").expect("first");
        assert_eq!(a.admit("b").map(|_| ()).map_err(|p| p.status.as_u16()), Err(503));
    }

    #[test]
    fn below_the_reserve_uploads_get_507_before_their_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = SpaceWatch::new(vec![dir.path().to_owned()], u64::MAX);
        assert!(space.shortage().is_some());
        let a = Admission::new(1, [("a".into(), 1)], space);
        let p = a.admit("a").expect_err("507");
        assert_eq!((p.status.as_u16(), p.code.as_ref()), (507, "insufficient_storage"));
        assert!(p.retry_after.is_some());

        let roomy = SpaceWatch::new(vec![dir.path().to_owned()], 1);
        assert!(roomy.shortage().is_none());
        roomy.out_of_space();
        assert!(roomy.shortage().is_some(), "a failed write is believed at once");
        roomy.sample();
        assert!(roomy.shortage().is_none(), "and forgotten once space is back");
    }
}
