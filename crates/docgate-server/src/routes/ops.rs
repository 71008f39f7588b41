//! Operational routes: what providers accept, health, readiness, metrics.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use docgate_core::Problem;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::{app::AppState, auth::Caller, http::json_response};

/// `GET /v1/providers`: every provider the tenant may use, with its fields and policy, so a
/// frontend can validate before uploading.
pub async fn providers(State(app): State<AppState>, Caller(tenant): Caller) -> Response {
    let list: Vec<_> = app
        .registry
        .all()
        .filter(|p| tenant.may_use(p.name()))
        .map(|p| {
            json!({
                "name": p.name(),
                "description": p.description(),
                "fields": p.fields(),
                "policy": p.policy(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "providers": list }))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// How long a spool probe's verdict answers `/readyz`.
const PROBE_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How long `/readyz` waits for the ledger, and for the spool probe, before it says not
/// ready: a store or database that hangs (a frozen server, a dropped network path) answered
/// only after its client's own timeouts, a minute and a half and more, while a load balancer
/// went on sending uploads.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A value read at most once per `fresh` period, however many ask: one read runs at a time;
/// callers meanwhile wait for it and share what it read. For what the unauthenticated,
/// polled routes read from the ledger and the spool.
#[derive(Debug)]
pub struct Fresh<T>(tokio::sync::Mutex<Option<(tokio::time::Instant, T)>>);

impl<T> Default for Fresh<T> {
    fn default() -> Self {
        Fresh(tokio::sync::Mutex::new(None))
    }
}

impl<T: Clone> Fresh<T> {
    async fn get(
        &self,
        fresh: std::time::Duration,
        read: impl std::future::Future<Output = T>,
    ) -> T {
        let mut last = self.0.lock().await;
        if let Some((at, value)) = &*last {
            if at.elapsed() < fresh {
                return value.clone();
            }
        }
        let value = read.await;
        *last = Some((tokio::time::Instant::now(), value.clone()));
        value
    }
}

/// The last spool probe: `/readyz` is unauthenticated and polled, and with an S3 spool every
/// probe is a `PUT` and a `DELETE` someone pays for. Its verdict stays fresh for
/// [`PROBE_FRESH`].
pub type SpoolProbeCache = Fresh<bool>;

impl SpoolProbeCache {
    async fn writable(&self, spool: &docgate_core::SpoolDir) -> bool {
        self.get(PROBE_FRESH, answers_in_time("spool", spool_probe(spool)))
            .await
    }
}

/// Whether `check` succeeded within [`READY_WAIT`]; why not goes to the log (`what` names
/// the part checked), not to the unauthenticated route.
async fn answers_in_time<E: std::fmt::Display>(
    what: &str,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    match tokio::time::timeout(READY_WAIT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the {what} is not ready");
            false
        }
        Err(_) => {
            tracing::warn!("readiness: the {what} did not answer within {READY_WAIT:?}");
            false
        }
    }
}

/// Write, commit and remove a tiny object: the spool takes writes.
async fn spool_probe(spool: &docgate_core::SpoolDir) -> std::io::Result<()> {
    let key = format!(
        "{}ready-{}",
        crate::spool_keys::TMP,
        uuid::Uuid::new_v4().simple()
    );
    let mut probe = spool.store().put(&key).await?;
    probe.write(bytes::Bytes::from_static(b"ready")).await?;
    probe.commit().await?;
    spool.store().delete(&key).await
}

/// `GET /readyz`: the ledger answers, the spool is writable and storage is above the
/// reserve (`limits.min_free_space`): a replica that would refuse uploads with 507 is not
/// ready for them.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let ledger = if answers_in_time("ledger", app.ledger.ping()).await {
        "ok"
    } else {
        "unavailable"
    };
    let spool = if app.spool_probe.writable(&app.spool).await {
        "ok"
    } else {
        "not_writable"
    };
    let storage = if app.admission.space.shortage().is_some() {
        "low"
    } else {
        "ok"
    };
    if ledger == "ok" && spool == "ok" && storage == "ok" {
        let body = json!({"status": "ready", "ledger": ledger, "spool": spool, "storage": storage});
        return json_response(StatusCode::OK, &body);
    }
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready")
        .with_detail("this replica cannot take uploads now; see ledger, spool and storage")
        .with_extra("status", "not_ready")
        .with_extra("ledger", ledger)
        .with_extra("spool", spool)
        .with_extra("storage", storage)
        .into_response()
}

/// How long the gauges `/metrics` reads from the ledger and the spool stay fresh.
const GAUGES_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Uploads by provider and status, and the spool's bytes.
type Gauges = (Vec<(String, &'static str, u64)>, u64);

/// The gauges `/metrics` last read: it is unauthenticated and scraped, and each read counts
/// every upload in the ledger and lists the whole spool (with S3, paid-for `LIST` requests).
/// They stay fresh for [`GAUGES_FRESH`].
pub type GaugeCache = Fresh<Gauges>;

impl GaugeCache {
    async fn read(&self, app: &AppState) -> Gauges {
        self.get(GAUGES_FRESH, async {
            let counts = app.ledger.status_counts().await.unwrap_or_default();
            let uploads: Vec<(String, &'static str, u64)> = counts
                .into_iter()
                .map(|(p, s, n)| (p, s.as_str(), n))
                .collect();
            let spool_bytes = match app.spool.store().list("").await {
                Ok(objects) => objects.iter().map(|o| o.size).sum(),
                Err(_) => 0,
            };
            (uploads, spool_bytes)
        })
        .await
    }
}

/// `GET /metrics`: Prometheus text format (0.0.4).
pub async fn metrics(State(app): State<AppState>) -> Response {
    let (uploads, spool_bytes) = app.metric_gauges.read(&app).await;
    let mut res = app.metrics.render(&uploads, spool_bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    res
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use docgate_core::{
        store::{ByteStream, ObjectInfo, ObjectStore, ObjectWriter, ReadSeek},
        LocalStore, SpoolDir,
    };

    use super::*;
    use crate::test_stores::Hanging;

    /// A local store that counts the objects written.
    #[derive(Debug)]
    struct Counting(LocalStore, Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put(&self, key: &str) -> std::io::Result<Box<dyn ObjectWriter>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.put(key).await
        }
        async fn get(&self, key: &str, from: u64, len: u64) -> std::io::Result<ByteStream> {
            self.0.get(key, from, len).await
        }
        fn open_blocking(&self, key: &str, len: u64) -> std::io::Result<Box<dyn ReadSeek>> {
            self.0.open_blocking(key, len)
        }
        async fn delete(&self, key: &str) -> std::io::Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
            self.0.list(prefix).await
        }
    }

    /// A frozen S3 server held every `/readyz` for its client's timeouts: the first answer
    /// (503) came after 92 s, and a load balancer went on sending uploads meanwhile.
    #[tokio::test(start_paused = true)]
    async fn regression_a_spool_that_hangs_is_not_ready_after_the_wait() {
        let spool = SpoolDir::with_store(Arc::new(Hanging), 0);
        let started = tokio::time::Instant::now();
        assert!(!SpoolProbeCache::default().writable(&spool).await);
        assert_eq!(started.elapsed(), READY_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowd_polling_readyz_costs_one_spool_probe_per_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let puts = Arc::new(AtomicUsize::new(0));
        let store = Counting(LocalStore::new(dir.path()).expect("store"), puts.clone());
        let spool = SpoolDir::with_store(Arc::new(store), 0);
        let cache = SpoolProbeCache::default();
        let verdicts =
            futures_util::future::join_all((0..50).map(|_| cache.writable(&spool))).await;
        assert!(verdicts.iter().all(|ok| *ok));
        assert_eq!(puts.load(Ordering::Relaxed), 1, "one probe for the crowd");
        tokio::time::advance(PROBE_FRESH).await;
        assert!(cache.writable(&spool).await);
        assert_eq!(
            puts.load(Ordering::Relaxed),
            2,
            "a stale verdict is probed again"
        );
    }
}
