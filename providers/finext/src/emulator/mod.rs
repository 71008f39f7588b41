//! `docgate emulate finext`: a Finext receiver that verifies what Finext verifies.
//!
//! Endpoints (all `POST`, JSON): `/api/v1/account/addAddressProof`, `updateAddressProof`,
//! `addIDProof` and `getAddressKycStatus`. Each checks the `authorization` header, the MD5
//! `sign`, the ±30 s timestamp window, the request id (20–64 characters, never reused — also
//! across restarts), the field rules and, for proofs, that every document is valid base64 whose
//! decoded bytes are of the type its extension names. Accepted documents are stored decoded on
//! disk; the status endpoint reports 1 (pending) after an address proof.
//!
//! Refusals use the table in [`codes`]. Fault injection is docgate-emulator's
//! (`/__emulator/faults`); review decisions (status 2–4) can be set through
//! `PUT /__emulator/finext/review` or [`Emulator::set_address_status`], and
//! `GET /__emulator/finext/submissions` lists what was accepted.
//!
//! Memory stays bounded whatever the document size: bodies are spooled to `tmp/` and decoded
//! from there by [`scan`].

mod launch;
pub use launch::launch;
pub mod codes;
mod handler;
pub mod replay;
pub mod rules;
pub mod scan;
pub mod state;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, Uri},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use docgate_core::Secret;
use docgate_emulator::{Faults, RunningServer};
use serde::Deserialize;

pub use self::{
    codes::Refusal,
    state::{StoredDocument, StoredSubmission},
};
use crate::{
    config::{FinextConfig, DEFAULT_MAX_DOCUMENT_BYTES},
    dates::DateFormat,
    submission::Endpoint,
};

/// The sandbox's api key and secret are the example credentials from Finext's own docs, so the
/// docs' signature examples can be checked against the emulator by hand.
pub const SANDBOX_API_KEY: &str = "fd01a53d7834b06c080cd1024ae9c60a";
pub const SANDBOX_SECRET: &str = "16388ce4331b35e8e0d32777ba57d7d9";
/// The docs do not say what the `authorization` header carries; the sandbox expects this.
pub const SANDBOX_AUTHORIZATION: &str = "Bearer finext-sandbox";

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    /// Journal, request-id log, stored documents and temporary files live here.
    pub data_dir: PathBuf,
    pub api_key: String,
    pub secret: String,
    /// The exact `authorization` header value accepted.
    pub authorization: String,
    /// How dates must be written (the client's `date_format` must match).
    pub date_format: DateFormat,
    /// Largest accepted timestamp skew (Finext: ±30 s).
    pub timestamp_window: Duration,
    /// Largest accepted decoded document.
    pub max_document_bytes: u64,
}

impl EmulatorOptions {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        EmulatorOptions {
            listen,
            data_dir,
            api_key: SANDBOX_API_KEY.into(),
            secret: SANDBOX_SECRET.into(),
            authorization: SANDBOX_AUTHORIZATION.into(),
            date_format: DateFormat::default(),
            timestamp_window: Duration::from_secs(30),
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}

#[derive(Debug)]
struct Settings {
    api_key: String,
    secret: String,
    authorization: String,
    date_format: DateFormat,
    timestamp_window_ms: i64,
    max_document_bytes: u64,
}

#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    tmp: PathBuf,
    documents: PathBuf,
}

/// Shared state of one running emulator.
#[derive(Debug)]
struct App {
    settings: Settings,
    dirs: Dirs,
    replay: Mutex<replay::ReplayGuard>,
    ledger: Mutex<state::Ledger>,
}

impl App {
    fn ledger(&self) -> MutexGuard<'_, state::Ledger> {
        // A panic while holding the lock leaves the ledger consistent (writes are appends).
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Finext emulator.
#[derive(Debug)]
pub struct Emulator {
    pub server: RunningServer,
    pub faults: Arc<Faults>,
    app: Arc<App>,
}

/// Start an emulator on `opts.listen` (port 0 picks a free one).
pub async fn start(opts: EmulatorOptions) -> std::io::Result<Emulator> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let root = opts.data_dir.canonicalize()?;
    let dirs = Dirs {
        tmp: root.join("tmp"),
        documents: root.join("documents"),
        root,
    };
    // Whatever is in tmp/ belonged to requests cut short by a crash.
    if dirs.tmp.exists() {
        std::fs::remove_dir_all(&dirs.tmp)?;
    }
    std::fs::create_dir_all(&dirs.tmp)?;
    std::fs::create_dir_all(&dirs.documents)?;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let replay = replay::ReplayGuard::open(&dirs.root.join("request_ids.log"), now)?;
    let ledger = state::Ledger::open(&dirs.root)?;
    let app = Arc::new(App {
        settings: Settings {
            api_key: opts.api_key,
            secret: opts.secret,
            authorization: opts.authorization,
            date_format: opts.date_format,
            timestamp_window_ms: i64::try_from(opts.timestamp_window.as_millis())
                .unwrap_or(i64::MAX),
            max_document_bytes: opts.max_document_bytes,
        },
        dirs,
        replay: Mutex::new(replay),
        ledger: Mutex::new(ledger),
    });
    let faults = Faults::new();
    let router = docgate_emulator::with_faults(
        protocol_routes(app.clone()),
        faults.clone(),
        Arc::new(codes::injected),
    )
    .merge(control_routes(app.clone()));
    let server = docgate_emulator::serve(router, opts.listen).await?;
    tracing::info!(url = %server.url(), data_dir = %app.dirs.root.display(), "finext emulator listening");
    Ok(Emulator {
        server,
        faults,
        app,
    })
}

fn protocol_routes(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        router = router.route(
            &endpoint.path(),
            post(
                move |State(app): State<Arc<App>>, headers: HeaderMap, body: Body| {
                    handler::handle(app, endpoint, headers, body)
                },
            )
            .fallback(|| async { Refusal::MethodNotAllowed }),
        );
    }
    router
        .fallback(|uri: Uri| async move { Refusal::NoSuchEndpoint(uri.path().to_owned()) })
        .with_state(app)
}

#[derive(Debug, Deserialize)]
struct Review {
    username: String,
    status: u8,
}

fn control_routes(app: Arc<App>) -> Router {
    async fn submissions(State(app): State<Arc<App>>) -> Json<Vec<StoredSubmission>> {
        Json(app.ledger().submissions().to_vec())
    }
    async fn review(State(app): State<Arc<App>>, Json(r): Json<Review>) -> Response {
        if r.status > state::REJECTED {
            return Refusal::InvalidField("status must be 0 to 4".into()).into_response();
        }
        match app.ledger().review(&r.username, r.status) {
            Ok(()) => Json(serde_json::json!({"username": r.username, "status": r.status}))
                .into_response(),
            Err(e) => Refusal::Internal(e.to_string()).into_response(),
        }
    }
    Router::new()
        .route("/__emulator/finext/submissions", get(submissions))
        .route("/__emulator/finext/review", put(review).post(review))
        .with_state(app)
}

impl Emulator {
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A client config that works against this emulator with its built-in test credentials.
    pub fn sandbox_config(&self) -> FinextConfig {
        let s = &self.app.settings;
        let mut config = FinextConfig::new(
            self.url(),
            s.api_key.clone(),
            Secret::new(s.secret.clone()),
            Secret::new(s.authorization.clone()),
        );
        config.date_format = s.date_format;
        config.max_document_bytes = s.max_document_bytes;
        config
    }

    /// Lines the CLI prints after "finext emulator listening on http://ADDR".
    pub fn banner(&self) -> Vec<String> {
        let s = &self.app.settings;
        let url = self.url();
        vec![
            format!("  api_key:       {}", s.api_key),
            format!("  secret:        {}   (test credential: sign = MD5(api_key+username+timestamp+secret+request_id))", s.secret),
            format!("  authorization: {}", s.authorization),
            format!("  date format:   {}", s.date_format),
            format!("  endpoints:     POST {url}/api/v1/account/{{addAddressProof,updateAddressProof,addIDProof,getAddressKycStatus}}"),
            format!("  documents:     {}", self.documents_dir().display()),
            format!("  submissions:   GET {url}/__emulator/finext/submissions"),
            format!("  review:        PUT {url}/__emulator/finext/review {{\"username\":\"…\",\"status\":2}}"),
            format!("  faults:        PUT {url}/__emulator/faults {{\"fail_next\":1,\"fail_status\":503}}"),
        ]
    }

    /// Where accepted documents are stored: `<dir>/<submission id>/<field>.<extension>`.
    pub fn documents_dir(&self) -> PathBuf {
        self.app.dirs.documents.clone()
    }

    /// The emulator's data directory (canonical path).
    pub fn data_dir(&self) -> PathBuf {
        self.app.dirs.root.clone()
    }

    /// Every accepted submission, oldest first, with absolute document paths.
    pub fn submissions(&self) -> Vec<StoredSubmission> {
        self.app.ledger().submissions().to_vec()
    }

    /// What `getAddressKycStatus` answers for `username` (0 not submitted … 4 rejected).
    pub fn address_status(&self, username: &str) -> u8 {
        self.app.ledger().address_status(username)
    }

    /// Play the reviewer: set a user's address KYC state (0–4).
    pub fn set_address_status(&self, username: &str, status: u8) -> std::io::Result<()> {
        if status > state::REJECTED {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "status must be 0 to 4",
            ));
        }
        self.app.ledger().review(username, status)
    }

    /// Stop serving and wait for in-flight requests.
    pub async fn stop(self) -> std::io::Result<()> {
        self.server.stop().await
    }
}
