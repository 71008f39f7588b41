//! What every provider emulator shares: serving on a real socket, and fault injection.
//!
//! An emulator is a real receiver (it verifies what the provider verifies); this crate only
//! adds the two things every one of them needs besides its own protocol:
//!
//! * [`serve`] binds (port 0 allowed), reports the real address and shuts down cleanly;
//! * [`Faults`] lets a test — or a person with `curl` — make the emulator misbehave at run
//!   time: answer the next N requests (or every request for a while: an outage) with an error
//!   status, add latency, or cut the connection. It is driven over HTTP at `/__emulator/faults` (see [`control_routes`]) or
//!   directly through the shared handle in Rust tests. The error body is the provider's own
//!   envelope, supplied by each emulator, because real clients parse it.

#![forbid(unsafe_code)]

pub mod cli;

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use docgate_core::read_out::{read_out, ReadOut};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// A fault plan, settable at run time. Counters go down as requests consume them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Answer this many of the next requests with `fail_status`.
    pub fail_next: u32,
    /// The status for `fail_next` and `fail_for_ms` (500 when 0).
    pub fail_status: u16,
    /// An outage: answer every request with `fail_status` for this many milliseconds from
    /// when the plan is set. Reading the plan back shows what is left of it.
    pub fail_for_ms: u64,
    /// Cut the connection of this many of the next requests without a complete answer.
    pub drop_next: u32,
    /// Wait this long before handling every request (until changed).
    pub delay_ms: u64,
}

impl FaultPlan {
    /// A plan as `PUT /__emulator/faults` takes it: a JSON object of known keys, with a
    /// failure status that is one (4xx or 5xx; 0 for the default 500). A 2xx "fault" made
    /// the gateway record a delivery of a body the emulator never stored; an array was
    /// read by position.
    pub fn parse(body: &[u8]) -> Result<FaultPlan, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err("a fault plan is a JSON object".into());
        }
        let plan: FaultPlan = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if plan.fail_status != 0 && !(400..=599).contains(&plan.fail_status) {
            return Err(format!(
                "fail_status {} is not a failure: give a 4xx or 5xx status (0: 500)",
                plan.fail_status
            ));
        }
        Ok(plan)
    }
}

/// A fault injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    Fail(StatusCode),
    Drop,
}

/// Shared fault state of one emulator.
#[derive(Debug, Default)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    /// When the plan's `fail_for_ms` outage ends.
    outage_until: Mutex<Option<Instant>>,
    requests: AtomicU64,
    injected: AtomicU64,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    pub fn set(&self, plan: FaultPlan) {
        let until = (plan.fail_for_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(plan.fail_for_ms));
        *self.lock() = plan;
        *self.outage() = until;
    }

    /// The plan as it stands: counters as consumed so far, `fail_for_ms` as what is left.
    pub fn plan(&self) -> FaultPlan {
        let mut plan = self.lock().clone();
        plan.fail_for_ms = u64::try_from(self.outage_remaining().as_millis()).unwrap_or(u64::MAX);
        plan
    }

    /// What is left of a `fail_for_ms` outage (zero when there is none).
    pub fn outage_remaining(&self) -> Duration {
        self.outage().map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }

    /// Shorthand: fail the next `n` requests with `status`.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut p = self.lock();
        p.fail_next = n;
        p.fail_status = status;
    }

    /// Requests seen by the protocol routes (not the control routes).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected fault.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        // A poisoned lock only means a panic elsewhere; the plan itself is always valid.
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.outage_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consume one request's worth of the plan.
    pub fn next_action(&self) -> (Duration, Option<FaultAction>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let in_outage = !self.outage_remaining().is_zero();
        let mut p = self.lock();
        let delay = Duration::from_millis(p.delay_ms);
        let fail_status = match p.fail_status {
            0 => StatusCode::INTERNAL_SERVER_ERROR,
            s => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let action = if p.drop_next > 0 {
            p.drop_next -= 1;
            Some(FaultAction::Drop)
        } else if p.fail_next > 0 {
            p.fail_next -= 1;
            Some(FaultAction::Fail(fail_status))
        } else if in_outage {
            Some(FaultAction::Fail(fail_status))
        } else {
            None
        };
        if action.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        (delay, action)
    }
}

/// Builds the provider's own error answer for an injected failure status.
pub type ErrorEnvelope = Arc<dyn Fn(StatusCode) -> Response + Send + Sync>;

#[derive(Clone)]
struct FaultLayerState {
    faults: Arc<Faults>,
    envelope: ErrorEnvelope,
}

impl fmt::Debug for FaultLayerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayerState")
            .field("faults", &self.faults)
            .finish()
    }
}

async fn fault_middleware(
    State(state): State<FaultLayerState>,
    req: Request,
    next: Next,
) -> Response {
    let (delay, action) = state.faults.next_action();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(action) = action else {
        return next.run(req).await;
    };
    // Answer without reading the upload, like a failing server would, but keep reading it in
    // the background: closing a connection with unread data makes the kernel send a reset,
    // which can destroy the answer before the client reads it.
    drain_in_background(req.into_body());
    match action {
        FaultAction::Fail(status) => (state.envelope)(status),
        FaultAction::Drop => {
            // A body that fails before its first byte makes hyper abort the connection: the
            // client sees a broken response, exactly like a crashed or unplugged server.
            let broken = futures_util::stream::once(async {
                Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
                    "fault injected: connection dropped",
                ))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_LENGTH, "1048576")
                .body(Body::from_stream(broken))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// How much of a body an emulator reads out after answering early: enough for any test
/// upload, like a real server's lingering close.
pub const READ_OUT: ReadOut = ReadOut {
    max_bytes: 64 * 1024 * 1024,
    idle: Duration::from_secs(30),
    total: Duration::from_secs(30),
};

/// Read and discard a request body within [`READ_OUT`], so that answering early does not
/// reset the connection under the client (see [`docgate_core::read_out`]).
pub fn drain_in_background(body: Body) {
    tokio::spawn(read_out(body.into_data_stream(), READ_OUT));
}

/// Wrap an emulator's protocol routes with fault injection and add the control routes.
pub fn with_faults(protocol: Router, faults: Arc<Faults>, envelope: ErrorEnvelope) -> Router {
    let state = FaultLayerState {
        faults: faults.clone(),
        envelope,
    };
    protocol
        .layer(axum::middleware::from_fn_with_state(
            state,
            fault_middleware,
        ))
        .merge(control_routes(faults))
}

/// `GET /__emulator/faults` shows the plan and counters; `PUT`/`POST` replaces the plan.
pub fn control_routes(faults: Arc<Faults>) -> Router {
    async fn show(State(f): State<Arc<Faults>>) -> Json<serde_json::Value> {
        Json(serde_json::json!({
            "plan": f.plan(),
            "requests": f.requests(),
            "injected": f.injected(),
        }))
    }
    async fn set(State(f): State<Arc<Faults>>, body: axum::body::Bytes) -> Response {
        match FaultPlan::parse(&body) {
            Ok(plan) => {
                f.set(plan);
                Json(f.plan()).into_response()
            }
            Err(error) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({ "error": error })),
            )
                .into_response(),
        }
    }
    Router::new()
        .route("/__emulator/faults", get(show).put(set).post(set))
        .with_state(faults)
}

/// A running server. Dropping it shuts the server down.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight requests finish, and wait.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Run until the process ends (the server does not stop by itself).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep_running = self.shutdown.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Bind `listen` (port 0 picks a free port) and serve `router` in the background.
pub async fn serve(router: Router, listen: SocketAddr) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(listen).await?;
    serve_on(router, listener)
}

/// hyper's read buffer per connection, at most. `axum::serve` leaves hyper's default (about
/// 400 KiB), which a fast sender fills on every read: in the sandbox, where the emulators
/// share the gateway's process, the 16 deliveries of a burst held ~13 MiB in these buffers.
/// A request head must fit too; 64 KiB is four times the gateway's own limit.
const READ_BUFFER: usize = 64 * 1024;

/// Serve on an already bound listener.
pub fn serve_on(router: Router, listener: TcpListener) -> std::io::Result<RunningServer> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    let addr = listener.local_addr()?;
    // On loopback an emulator is this machine's: no other site's page may read it.
    let router = if addr.ip().is_loopback() {
        router.layer(axum::middleware::from_fn(
            docgate_core::local_host::refuse_other_hosts,
        ))
    } else {
        router
    };
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().max_buf_size(READ_BUFFER);
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // A connection that failed before it was accepted: the next one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::select! {
                        _ = &mut rx => break,
                        () = tokio::time::sleep(std::time::Duration::from_millis(50)) => continue,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let watched = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(error = %e, "emulator: connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    });
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    fn envelope() -> ErrorEnvelope {
        Arc::new(|status: StatusCode| {
            (status, Json(serde_json::json!({"code": status.as_u16()}))).into_response()
        })
    }

    async fn start() -> (RunningServer, Arc<Faults>) {
        let faults = Faults::new();
        let app = with_faults(
            Router::new().route("/x", post(|| async { "ok" })),
            faults.clone(),
            envelope(),
        );
        let server = serve(app, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        (server, faults)
    }

    /// Set the plan over HTTP, as a person with curl would.
    async fn put_plan(server: &RunningServer, plan: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .put(format!("{}/__emulator/faults", server.url()))
            .json(&plan)
            .send()
            .await
            .expect("control")
    }

    #[tokio::test]
    async fn fails_the_next_n_requests_then_recovers() {
        let (server, faults) = start().await;
        let client = reqwest::Client::new();
        let url = format!("{}/x", server.url());
        let set = put_plan(
            &server,
            serde_json::json!({"fail_next": 2, "fail_status": 503}),
        )
        .await;
        assert_eq!(set.status(), 200);
        for _ in 0..2 {
            let r = client.post(&url).send().await.expect("send");
            assert_eq!(r.status(), 503);
            assert_eq!(
                r.json::<serde_json::Value>().await.expect("json")["code"],
                503
            );
        }
        assert_eq!(client.post(&url).send().await.expect("send").status(), 200);
        assert_eq!((faults.requests(), faults.injected()), (3, 2));
        server.stop().await.expect("stop");
    }

    // A misspelt key ("latency_ms", "fail_count") was taken for an empty plan: the test
    // that set it then passed without the fault it meant to inject.
    #[tokio::test]
    async fn regression_a_plan_with_an_unknown_key_is_refused_and_changes_nothing() {
        let (server, faults) = start().await;
        faults.set(FaultPlan {
            fail_next: 1,
            ..FaultPlan::default()
        });
        for refused in [
            serde_json::json!({"latency_ms": 500}),
            // A "failure" that is a success: the gateway recorded a delivery of nothing.
            serde_json::json!({"fail_next": 1, "fail_status": 204}),
            serde_json::json!({"fail_next": 1, "fail_status": 1000}),
            // Read by position, as a struct may be.
            serde_json::json!([7, 503]),
        ] {
            let set = put_plan(&server, refused.clone()).await;
            assert_eq!(set.status(), 422, "{refused}");
            let error: serde_json::Value = set.json().await.expect("a JSON error");
            assert!(error["error"].is_string(), "{refused}: {error}");
            assert_eq!(faults.plan().fail_next, 1, "{refused}");
        }
        server.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn an_outage_fails_every_request_until_its_time_is_up() {
        let (server, faults) = start().await;
        let client = reqwest::Client::new();
        let url = format!("{}/x", server.url());
        let set = put_plan(
            &server,
            serde_json::json!({"fail_for_ms": 60_000, "fail_status": 503}),
        )
        .await;
        let shown: FaultPlan = set.json().await.expect("plan");
        assert!((59_000..=60_000).contains(&shown.fail_for_ms), "{shown:?}");
        for _ in 0..3 {
            assert_eq!(client.post(&url).send().await.expect("send").status(), 503);
        }
        assert!(
            faults.plan().fail_for_ms > 0,
            "the outage is not used up by requests"
        );

        // A short outage ends by itself.
        faults.set(FaultPlan {
            fail_for_ms: 300,
            ..FaultPlan::default()
        });
        assert!(!faults.outage_remaining().is_zero());
        tokio::time::sleep(faults.outage_remaining()).await;
        assert_eq!(faults.plan().fail_for_ms, 0);
        assert_eq!(client.post(&url).send().await.expect("send").status(), 200);
        assert_eq!(faults.injected(), 3);
        server.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_dropped_connection_is_an_error_for_the_client() {
        let (server, faults) = start().await;
        faults.set(FaultPlan {
            drop_next: 1,
            ..FaultPlan::default()
        });
        let client = reqwest::Client::new();
        let url = format!("{}/x", server.url());
        let broken = match client.post(&url).send().await {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(broken, "the client must not get a complete answer");
        assert_eq!(client.post(&url).send().await.expect("send").status(), 200);
    }
}
