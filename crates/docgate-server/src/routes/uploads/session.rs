//! A session's upload: its documents (received with tus, or in one `POST /v1/uploads` with
//! the session's token) become one upload under the id chosen when the session was minted.
//!
//! The session is the idempotency key: completing it again answers the same upload, and
//! while one request is accepting it (`completing`), another waits for that one's result.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::response::Response;
use docgate_core::{Document, DocumentMeta, Fields, Problem};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::{accept::accept, wait, Intake, Result};
use crate::{
    app::AppState,
    host::ledger_problem,
    ledger::{now_ms, SessionRecord, SessionState, TusState},
    receipt::upload_response,
    routes::sessions::merge_fields,
    sessions::check_usable,
    tenants::Tenant,
};

/// How long a second completion waits for the first.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(10);

/// Complete `session` with its received documents: answered like `POST /v1/uploads`.
pub async fn session_upload(
    app: &AppState,
    tenant: Tenant,
    session: SessionRecord,
    extra_fields: Fields,
    headers: &HeaderMap,
    by_tenant: bool,
) -> Result<Response> {
    let respond_async = super::request::wants_async(headers);
    let session = settled(app, session).await?;
    if session.state == SessionState::Accepted {
        return replay(app, &session, extra_fields, respond_async).await;
    }
    check_usable(&session, now_ms())?;
    let fields = merge_fields(&session, extra_fields)?;
    let hold = SessionHold::take(app, &session).await?;
    let result = accept_documents(
        app,
        tenant,
        &session,
        fields,
        respond_async,
        &hold,
        by_tenant,
    )
    .await;
    hold.release().await;
    result
}

/// Wait while another request is accepting the session (bounded), then re-read it.
async fn settled(app: &AppState, mut session: SessionRecord) -> Result<SessionRecord> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
    while session.state == SessionState::Completing && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        session = app
            .ledger
            .session(&session.id)
            .await
            .map_err(|e| ledger_problem(&e))?
            .ok_or_else(|| Problem::not_found("the upload session is gone"))?;
    }
    Ok(session)
}

/// A session this request is accepting (`completing`). However the request ends — answered,
/// refused, or dropped mid-body because its client went away — the session does not stay
/// `completing`, where every retry would hear 409 until it expired: it goes back to `open`
/// unless its upload was recorded (which marks it `accepted` in the same write, and only
/// while it is still `completing`).
///
/// The hold is shared with the task that records the upload: it is handed back only once
/// that record has ended, never while it may still commit (a retry taking the session
/// meanwhile would write the same document key, or be accepted twice).
#[derive(Debug, Clone)]
pub struct SessionHold(Arc<Held>);

#[derive(Debug)]
struct Held {
    app: AppState,
    id: String,
    /// Handed back, or accepted by its upload's record: nothing left to do.
    settled: AtomicBool,
}

impl SessionHold {
    /// open → completing, or 409 when another request got there first. The change is made
    /// on a task of its own: a request dropped while it is being written still gets its hold
    /// built, and dropped, which hands the session back.
    pub async fn take(app: &AppState, session: &SessionRecord) -> Result<SessionHold> {
        let (answer, taken) = tokio::sync::oneshot::channel();
        let app = app.clone();
        let id = session.id.clone();
        tokio::spawn(async move {
            let hold = match app
                .ledger
                .session_state(&id, &[SessionState::Open], SessionState::Completing)
                .await
            {
                Ok(true) => Ok(SessionHold(Arc::new(Held {
                    app,
                    id,
                    settled: AtomicBool::new(false),
                }))),
                Ok(false) => Err(session_busy()),
                Err(e) => Err(ledger_problem(&e)),
            };
            // Sent back to a request that is gone, the hold is dropped here.
            let _ = answer.send(hold);
        });
        taken
            .await
            .map_err(|_| Problem::internal("taking the upload session was cut short"))?
    }

    /// The upload's record accepted the session.
    pub fn accepted(&self) {
        self.0.settled.store(true, Ordering::Release);
    }

    /// Hand the session back (open, for the browser to try again) unless its upload was
    /// recorded. The write runs on a task of its own: a request dropped meanwhile neither
    /// cuts it short nor, on PostgreSQL, has it rolled back.
    pub async fn release(self) {
        if self.0.settled.load(Ordering::Acquire) {
            return;
        }
        let held = self.0;
        let _ = tokio::spawn(async move {
            let back = held
                .app
                .ledger
                .session_state(&held.id, &[SessionState::Completing], SessionState::Open)
                .await;
            if back.is_ok() {
                held.settled.store(true, Ordering::Release);
            }
            // Else the last holder's drop tries once more.
        })
        .await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if *self.settled.get_mut() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: a restart reopens sessions left completing
        };
        let ledger = self.app.ledger.clone();
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            let back = ledger
                .session_state(&id, &[SessionState::Completing], SessionState::Open)
                .await;
            if let Err(e) = back {
                tracing::warn!(session = %id, error = %e, "could not reopen an abandoned session; it reopens when it expires");
            }
        });
    }
}

/// 409: another request is accepting the session (or the session was handed back while
/// this one was).
pub fn session_busy() -> Problem {
    Problem::new(StatusCode::CONFLICT, "session_busy", "Upload session busy")
        .with_detail("another request is accepting this session's upload")
        .with_retry_after(Duration::from_secs(1))
}

/// The session's upload, answered as it stands (waiting for delivery like any upload). A
/// completion is the same request again only with the fields it was accepted with (or none):
/// other fields are a conflict, as for an Idempotency-Key reused.
async fn replay(
    app: &AppState,
    session: &SessionRecord,
    extra_fields: Fields,
    respond_async: bool,
) -> Result<Response> {
    let rec = app
        .ledger
        .get(&session.upload_id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .ok_or_else(|| Problem::internal("an accepted session without its upload"))?;
    if !extra_fields.is_empty() {
        let fields = merge_fields(session, extra_fields)?;
        let metas: Vec<DocumentMeta> = rec.documents.iter().map(|d| d.meta.clone()).collect();
        if super::accept::fingerprint(&rec.provider, &fields, &metas) != rec.fingerprint {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "Session already accepted",
            )
            .with_detail("this session's upload was accepted with other fields")
            .with_extra("upload_id", rec.id.as_str()));
        }
    }
    let rec = if respond_async || rec.status.is_terminal() {
        rec
    } else {
        let mut waiter = app.deliverer.watch(&rec.id);
        wait::for_final(app, rec, &mut waiter.rx).await
    };
    let mut res = upload_response(&rec);
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(res)
}

/// The session's complete tus documents, delivered as one upload.
async fn accept_documents(
    app: &AppState,
    tenant: Tenant,
    session: &SessionRecord,
    fields: Fields,
    respond_async: bool,
    hold: &SessionHold,
    by_tenant: bool,
) -> Result<Response> {
    let provider = app
        .registry
        .get(&session.provider)
        .cloned()
        .ok_or_else(|| Problem::internal("the session's provider is gone"))?;
    let received = app
        .ledger
        .session_documents(&session.id)
        .await
        .map_err(|e| ledger_problem(&e))?;
    // A document still arriving is neither in the upload nor to be dropped silently: the
    // browser finishes it or terminates it first (it could do neither once accepted).
    let pending: Vec<&str> = received
        .iter()
        .filter(|t| t.state == TusState::Receiving)
        .map(|t| t.slot.as_str())
        .collect();
    if !pending.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "documents_pending",
            "Documents still uploading",
        )
        .with_detail(format!(
            "the document for {} is still being uploaded: finish it, or terminate it, then complete the session",
            pending.join(", ")
        ))
        .with_extra("slots", pending));
    }
    let documents: Vec<Document> = received
        .into_iter()
        .filter(|t| t.state == TusState::Complete)
        .filter_map(|t| {
            let meta = t.meta?;
            Some(Document {
                meta,
                spool: app.spool.pieces(t.pieces),
            })
        })
        .collect();
    let mut intake = Intake::for_session(app, tenant, session, respond_async, hold);
    if let (true, Some(s)) = (by_tenant, intake.session.as_mut()) {
        // Completed with the API key: the tenant's backend named every field, as when it
        // mints a session with them.
        s.fixed.extend(fields.keys().cloned());
    }
    accept(intake, provider, fields, documents).await
}

/// After a tus document completes: a session with one slot and nothing left to ask for is
/// accepted at once (the browser's `complete` then answers its receipt).
pub async fn after_document(app: &AppState, session: &SessionRecord) {
    if session.slots.len() != 1 {
        return;
    }
    let Some(provider) = app.registry.get(&session.provider) else {
        return;
    };
    if provider.prepare(&session.fields).is_err() {
        return; // the browser still has fields to send with `complete`
    }
    let Some(tenant) = app.tenants.by_name(&session.tenant).cloned() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("prefer", HeaderValue::from_static("respond-async"));
    let accepted = session_upload(app, tenant, session.clone(), Fields::new(), &headers, false);
    if let Err(p) = accepted.await {
        tracing::info!(session = %session.id, code = %p.code, "a completed tus document's session was not accepted yet");
    }
}
