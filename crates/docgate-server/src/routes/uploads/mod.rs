//! `POST /v1/uploads` (multipart), `PUT /v1/uploads/{provider}` (raw) and
//! `GET /v1/uploads/{id}`.
//!
//! The handlers reject as early as the information allows:
//! 1. before reading the body — auth, the provider (query or path), its metadata when it is in
//!    the query, the declared Content-Length against the provider's limits, a declared
//!    Content-Type outside its policy, free upload slots and storage;
//! 2. at each part header — the slot name, the metadata sent so far (any value that is
//!    already wrong fails now; fields that are merely missing may still follow);
//! 3. while streaming — size (413 the moment it is crossed), sniffed type (415 from the first
//!    8 KiB), pace (408 for a body that stalls or trickles);
//! 4. before delivery — the provider's whole-request checks.
//!
//! Part order does not matter: a document that arrives before the `provider` field is
//! ingested under the tenant's most permissive policy and re-checked once the provider is
//! known.
//!
//! Modules: [`request`] reads the head, [`multipart`] and [`raw`] receive the body,
//! [`accept`] makes the upload durable and records it, [`wait`] waits for its delivery.

mod accept;
mod multipart;
mod raw;
pub mod request;
mod session;
mod wait;

use std::sync::Arc;

use axum::extract::{Path, State};
use docgate_core::{Problem, Provider};
use http::{header, HeaderMap, HeaderValue};

use crate::{
    admission::UploadPermit,
    app::AppState,
    auth::Caller,
    body::{FaultCell, GuardedBody},
    host::ledger_problem,
    receipt::receipt,
    tenants::Tenant,
};

pub use accept::claim_subjects;
pub use accept::ingest_failed as ingest_problem_with;
pub use multipart::post_multipart;
pub use raw::put_raw;
pub use session::{after_document, session_upload};

/// Why ingesting failed, for callers that stream outside a request body's guard (tus).
pub fn ingest_problem(app: &AppState, e: docgate_core::IngestError) -> Problem {
    ingest_problem_with(app, &FaultCell::default(), e)
}

type Result<T> = std::result::Result<T, Problem>;

/// One upload request on its way in: who sent it, how it wants its answer, the slots it
/// holds and where its body's faults are recorded.
#[derive(Debug)]
struct Intake {
    app: AppState,
    /// The upload's id, chosen before its body is read: documents are spooled under it.
    id: String,
    tenant: Tenant,
    idempotency_key: Option<String>,
    respond_async: bool,
    /// Released once the upload is recorded: waiting for delivery holds no upload slot.
    /// (A session completed from documents already received takes none.)
    permit: Option<UploadPermit>,
    faults: FaultCell,
    /// The upload session this upload accepts (marked accepted with the upload's record).
    session: Option<ForSession>,
}

/// The session an upload accepts, as the request accepting it holds it.
#[derive(Debug)]
struct ForSession {
    id: String,
    /// Handed back only once the upload's record has ended.
    hold: session::SessionHold,
    /// Names this request's documents (the session's upload id is every attempt's).
    writer: String,
    /// The fields its tenant fixed when minting it. A customer named by any other field was
    /// named by the browser, and is never claimed for the tenant on that word alone.
    fixed: std::collections::BTreeSet<String>,
}

impl ForSession {
    fn new(session: &crate::ledger::SessionRecord, hold: &session::SessionHold) -> ForSession {
        ForSession {
            id: session.id.clone(),
            hold: hold.clone(),
            writer: uuid::Uuid::new_v4().simple().to_string(),
            fixed: session.fields.keys().cloned().collect(),
        }
    }
}

impl Intake {
    /// The upload's body, held to the front door's pace rules and reporting to admission.
    fn guard<S>(&self, body: S) -> GuardedBody<S> {
        let mut guarded = GuardedBody::new(body, self.app.limits.body_rules())
            .with_space(self.app.admission.space.clone());
        if let Some(permit) = &self.permit {
            guarded = guarded.with_pace(permit.pace.clone());
        }
        guarded.faults = self.faults.clone();
        guarded
    }

    /// Where a document of this upload is spooled.
    fn key(&self, slot: &str) -> String {
        match &self.session {
            Some(s) => crate::spool_keys::session_document_key(&self.id, slot, &s.writer),
            None => crate::spool_keys::document_key(&self.id, slot),
        }
    }
}

impl Intake {
    /// Read what the head says and take the upload's slots.
    async fn open(app: &AppState, tenant: Tenant, headers: &HeaderMap) -> Result<Intake> {
        let idempotency_key = request::idempotency_key(headers)?;
        let permit = app.admission.admit(&tenant.name).await?;
        Ok(Intake {
            app: app.clone(),
            id: crate::ledger::new_upload_id(),
            tenant,
            idempotency_key,
            respond_async: request::wants_async(headers),
            permit: Some(permit),
            faults: FaultCell::default(),
            session: None,
        })
    }

    /// The upload of a session: its id was chosen when the session was minted.
    fn for_session(
        app: &AppState,
        tenant: Tenant,
        session: &crate::ledger::SessionRecord,
        respond_async: bool,
        hold: &session::SessionHold,
    ) -> Intake {
        Intake {
            app: app.clone(),
            id: session.upload_id.clone(),
            tenant,
            idempotency_key: None,
            respond_async,
            permit: None,
            faults: FaultCell::default(),
            session: Some(ForSession::new(session, hold)),
        }
    }
}

/// The declared Content-Length; 411 when it is required and absent.
fn declared_length(app: &AppState, headers: &HeaderMap) -> Result<Option<u64>> {
    let len = request::content_length(headers)?;
    if len.is_none() && app.limits.require_content_length {
        return Err(Problem::length_required());
    }
    Ok(len)
}

/// The provider named `name`, if it exists and the tenant may use it.
pub fn provider_for(app: &AppState, tenant: &Tenant, name: &str) -> Result<Arc<dyn Provider>> {
    let provider = app.registry.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = app.registry.names().collect();
        Problem::invalid_field(
            "provider",
            format!(
                "unknown provider `{name}`; this gateway offers: {}",
                known.join(", ")
            ),
        )
    })?;
    if !tenant.may_use(name) {
        return Err(Problem::forbidden(format!(
            "tenant `{}` may not use provider `{name}`",
            tenant.name
        )));
    }
    Ok(provider)
}

/// `GET /v1/uploads/{id}`: the receipt, for the owning tenant only (others get 404, so ids
/// of other tenants cannot even be confirmed to exist).
pub async fn get_upload(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<axum::response::Response> {
    let rec = app
        .ledger
        .get(&id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .filter(|r| r.tenant == tenant.name)
        .ok_or_else(|| Problem::not_found(format!("no upload `{id}`")))?;
    let mut res = crate::http::json_response(http::StatusCode::OK, &receipt(&rec));
    if !rec.status.is_terminal() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(res)
}
