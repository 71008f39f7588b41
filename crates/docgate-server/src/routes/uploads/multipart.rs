//! `POST /v1/uploads`: a multipart form with `provider`, metadata fields and document parts.
//!
//! The body passes three guards before the multipart parser sees it: its pace
//! ([`GuardedBody`]), its part header blocks ([`PartHeaderLimited`]) and multer's overall
//! size limit. Text fields are small and counted together; documents stream into the ingest
//! pipeline part by part.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    response::Response,
};
use docgate_core::{
    ingest_into, policy::MULTIPART_OVERHEAD_ALLOWANCE, provider::fields::only_missing, recheck,
    Document, FieldError, Fields, IngestRequest, Problem, Provider, UploadPolicy,
};
use futures_util::StreamExt;
use http::{header, HeaderMap};

use super::{
    accept::{accept, ingest_failed},
    declared_length, provider_for, request, Intake, Result,
};
use crate::{
    app::AppState,
    body::{BodyFault, FaultCell},
    ledger::{now_ms, SessionRecord},
    part_headers::{PartHeaderGuard, PartHeaderLimited},
    routes::sessions::merge_fields,
    sessions::{check_usable, Uploader},
    tenants::Tenant,
};

/// With the tenant's API key, or with an upload session's token: then the provider, the
/// fixed fields, the slots and the size cap are the session's, the upload id is the one the
/// session was minted with, and the session is spent once the upload is recorded.
pub async fn post_multipart(
    State(app): State<AppState>,
    who: Uploader,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let (tenant, session) = match who {
        Uploader::ApiKey(tenant) => (tenant, None),
        Uploader::Session(tenant, session) => {
            check_usable(&session, now_ms())?;
            (tenant, Some(session))
        }
    };
    let head = Head::read(&app, &tenant, query.as_deref(), &headers, session.as_ref())?;
    let mut intake = Intake::open(&app, tenant, &headers).await?;
    let Some(session) = session else {
        return receive(&app, intake, head, body).await;
    };
    intake.id = session.upload_id.clone();
    intake.idempotency_key = None;
    let hold = super::session::SessionHold::take(&app, &session).await?;
    // The record of the upload marks the session accepted in the same write.
    intake.session = Some(super::ForSession::new(&session, &hold));
    let result = receive_for_session(&app, intake, head, body, &session).await;
    hold.release().await;
    result
}

/// Parse the form part by part and accept it.
async fn receive(app: &AppState, intake: Intake, head: Head, body: Body) -> Result<Response> {
    let _in_flight = app.metrics.upload_started();
    let mut form = head.form(app, &intake, body);
    let mut receiver = Receiver::new(app, &intake, head, None);
    while let Some(part) = form
        .next_field()
        .await
        .map_err(|e| receiver.multer_problem(e))?
    {
        receiver.part(part).await?;
    }
    let (provider, fields, documents) = receiver.finish().await?;
    accept(intake, provider, fields, documents).await
}

async fn receive_for_session(
    app: &AppState,
    intake: Intake,
    head: Head,
    body: Body,
    session: &SessionRecord,
) -> Result<Response> {
    let _in_flight = app.metrics.upload_started();
    let mut form = head.form(app, &intake, body);
    let mut receiver = Receiver::new(app, &intake, head, Some(session));
    while let Some(part) = form
        .next_field()
        .await
        .map_err(|e| receiver.multer_problem(e))?
    {
        receiver.part(part).await?;
    }
    let (provider, fields, documents) = receiver.finish().await?;
    let fields = merge_fields(session, fields)?;
    accept(intake, provider, fields, documents).await
}

/// The longest multipart boundary RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;

/// What the request head says about the form, checked before any body byte.
#[derive(Debug)]
struct Head {
    boundary: String,
    provider: Option<Arc<dyn Provider>>,
    declared_len: Option<u64>,
    /// Documents that arrive before the `provider` field are checked against this.
    fallback: UploadPolicy,
}

impl Head {
    fn read(
        app: &AppState,
        tenant: &Tenant,
        query: Option<&str>,
        headers: &HeaderMap,
        session: Option<&SessionRecord>,
    ) -> Result<Head> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            Problem::new(http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type")
                .with_detail("POST /v1/uploads takes multipart/form-data; use PUT /v1/uploads/{provider} for a raw body")
        })?;
        // RFC 2046 §5.1.1: 1 to 70 characters. A longer one costs its length in every search
        // of every chunk (a 15 KB boundary and a body in 1-byte chunks keep a core busy).
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
            return Err(Problem::bad_request(format!(
                "a multipart boundary has 1 to {MAX_BOUNDARY_LEN} characters (RFC 2046); this one has {}",
                boundary.len()
            )));
        }
        let mut provider = None;
        for (k, v) in request::parse_query(query, app.limits.max_fields)? {
            if k != "provider" {
                return Err(Problem::invalid_field(
                    &k,
                    "only `provider` may be given in the query of a multipart upload",
                ));
            }
            provider = Some(provider_for(app, tenant, &v)?);
        }
        if let Some(session) = session {
            if provider
                .as_ref()
                .is_some_and(|p| p.name() != session.provider)
            {
                return Err(Problem::invalid_field(
                    "provider",
                    "the upload session is for another provider",
                ));
            }
            provider = Some(provider_for(app, tenant, &session.provider)?);
        }
        let fallback = UploadPolicy::most_permissive(
            tenant
                .providers
                .iter()
                .filter_map(|p| app.registry.get(p))
                .map(|p| p.policy()),
        )
        .ok_or_else(|| Problem::forbidden("this tenant has no usable provider"))?;
        let declared_len = declared_length(app, headers)?;
        if let Some(len) = declared_len {
            let policy = provider.as_ref().map_or(&fallback, |p| p.policy());
            policy.precheck_request_length(len, MULTIPART_OVERHEAD_ALLOWANCE)?;
        }
        Ok(Head {
            boundary,
            provider,
            declared_len,
            fallback,
        })
    }

    /// The parser over the guarded body.
    fn form(&self, app: &AppState, intake: &Intake, body: Body) -> multer::Multipart<'static> {
        let guarded = intake.guard(body.into_data_stream());
        let guard = PartHeaderGuard::new(&self.boundary, app.limits.max_part_header_bytes);
        let limited = PartHeaderLimited::new(guarded, guard, intake.faults.clone());
        let stream_limit = self.fallback.max_request_bytes.max(
            self.provider
                .as_ref()
                .map_or(0, |p| p.policy().max_request_bytes),
        ) + MULTIPART_OVERHEAD_ALLOWANCE;
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(stream_limit));
        multer::Multipart::with_constraints(limited, self.boundary.clone(), constraints)
    }
}

/// The form being received, part by part.
struct Receiver<'a> {
    app: &'a AppState,
    intake: &'a Intake,
    tenant: &'a Tenant,
    /// The upload session the form is for: its fixed fields, slots and size cap.
    session: Option<&'a SessionRecord>,
    head: Head,
    faults: FaultCell,
    fields: Fields,
    field_bytes: u64,
    documents: Vec<Document>,
    /// Document bytes so far (against the provider's request limit).
    used: u64,
    ingested_under_fallback: bool,
}

impl<'a> Receiver<'a> {
    fn new(
        app: &'a AppState,
        intake: &'a Intake,
        head: Head,
        session: Option<&'a SessionRecord>,
    ) -> Receiver<'a> {
        Receiver {
            app,
            intake,
            tenant: &intake.tenant,
            session,
            head,
            faults: intake.faults.clone(),
            fields: Fields::new(),
            field_bytes: 0,
            documents: Vec::new(),
            used: 0,
            ingested_under_fallback: false,
        }
    }

    /// A parser error, as the client is told: a recorded body fault first.
    fn multer_problem(&self, e: multer::Error) -> Problem {
        let parsed = match e {
            multer::Error::StreamSizeExceeded { limit } => {
                BodyFault::TooLarge { limit }.to_problem()
            }
            multer::Error::FieldSizeExceeded { limit, field_name } => Problem::payload_too_large(
                limit,
                &format!("field `{}`", field_name.unwrap_or_default()),
            ),
            other => Problem::bad_request(format!("the multipart body is malformed: {other}")),
        };
        self.faults.or(parsed)
    }

    async fn part(&mut self, part: multer::Field<'static>) -> Result<()> {
        let name = part.name().map(str::to_owned).unwrap_or_default();
        if name.is_empty() {
            return Err(Problem::bad_request("every multipart part needs a name"));
        }
        let is_file = part.file_name().is_some()
            || part
                .content_type()
                .is_some_and(|m| m.essence_str() != "text/plain");
        if is_file {
            self.document(name, part).await
        } else {
            self.text_field(name, part).await
        }
    }

    async fn text_field(&mut self, name: String, mut part: multer::Field<'static>) -> Result<()> {
        let limits = &self.app.limits;
        let mut value = Vec::new();
        while let Some(chunk) = part.chunk().await.map_err(|e| self.multer_problem(e))? {
            self.field_bytes += chunk.len() as u64;
            if self.field_bytes > limits.max_field_bytes {
                return Err(Problem::payload_too_large(
                    limits.max_field_bytes,
                    "the text fields together",
                ));
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value)
            .map_err(|_| Problem::invalid_field(&name, "not UTF-8 text"))?;
        if name == "provider" {
            return self.set_provider(value.trim());
        }
        if self.fields.len() >= limits.max_fields {
            return Err(Problem::bad_request(format!(
                "more than {} fields",
                limits.max_fields
            )));
        }
        if self.fields.insert(name.clone(), value).is_some() {
            return Err(Problem::invalid_field(&name, "given more than once"));
        }
        Ok(())
    }

    fn set_provider(&mut self, name: &str) -> Result<()> {
        if self.session.is_some() {
            // The session names the provider; a matching field is harmless.
            return match self
                .head
                .provider
                .as_ref()
                .is_some_and(|p| p.name() == name)
            {
                true => Ok(()),
                false => Err(Problem::invalid_field(
                    "provider",
                    "the upload session is for another provider",
                )),
            };
        }
        if self
            .head
            .provider
            .as_ref()
            .is_some_and(|p| p.name() != name)
            || self.fields.contains_key("provider")
        {
            return Err(Problem::invalid_field("provider", "given more than once"));
        }
        let p = provider_for(self.app, self.tenant, name)?;
        if let Some(len) = self.head.declared_len {
            p.policy()
                .precheck_request_length(len, MULTIPART_OVERHEAD_ALLOWANCE)?;
        }
        self.head.provider = Some(p);
        self.fields.insert("provider".into(), name.to_owned());
        Ok(())
    }

    /// The policy a document part is checked against now: its provider's (after checking
    /// the metadata so far), or the tenant's most permissive one.
    fn policy_for_part(&mut self) -> Result<UploadPolicy> {
        match &self.head.provider {
            Some(p) => {
                let mut so_far = self.fields.clone();
                so_far.remove("provider");
                if let Some(session) = self.session {
                    so_far = merge_fields(session, so_far)?;
                }
                // Fail now if the metadata is already wrong (merely missing fields may follow).
                match p.prepare(&so_far) {
                    Err(problem) if !only_missing(&problem) => Err(problem),
                    _ => Ok(p.policy().clone()),
                }
            }
            None => {
                self.ingested_under_fallback = true;
                Ok(self.head.fallback.clone())
            }
        }
    }

    async fn document(&mut self, name: String, mut part: multer::Field<'static>) -> Result<()> {
        if self.documents.iter().any(|d| d.meta.slot == name) {
            return Err(Problem::invalid_field(
                &name,
                "a document slot can be used only once",
            ));
        }
        let policy = self.policy_for_part()?;
        policy.check_slot(&name)?;
        if let Some(session) = self.session {
            if !session.slots.contains(&name) {
                return Err(Problem::invalid_field(
                    &name,
                    format!(
                        "not a slot of this upload session ({})",
                        session.slots.join(", ")
                    ),
                ));
            }
        }
        if self.documents.len() >= policy.max_documents() {
            return Err(Problem::invalid_field(
                &name,
                format!("at most {} documents per upload", policy.max_documents()),
            ));
        }
        let filename =
            request::checked_filename(part.file_name(), self.app.limits.max_filename_bytes)?;
        let request = IngestRequest {
            slot: name,
            filename,
            declared_type: part.content_type().map(|m| m.to_string()),
            policy: &policy,
            max_bytes: policy
                .max_document_bytes
                .min(policy.max_request_bytes.saturating_sub(self.used))
                .min(self.session.and_then(|s| s.max_bytes).unwrap_or(u64::MAX)),
            idle_timeout: self.app.limits.body_idle_timeout,
        };
        let faults = self.faults.clone();
        let stream = (&mut part).map(|chunk| {
            chunk.map_err(|e| {
                if let multer::Error::StreamSizeExceeded { limit } = e {
                    faults.record(BodyFault::TooLarge { limit });
                }
                e
            })
        });
        let key = self.intake.key(&request.slot);
        let doc = ingest_into(stream, request, &self.app.spool, &key)
            .await
            .map_err(|e| ingest_failed(self.app, &self.faults, e))?;
        self.used += doc.meta.size;
        self.documents.push(doc);
        Ok(())
    }

    /// The provider, the fields without `provider`, and the documents checked against the
    /// provider's own policy.
    async fn finish(mut self) -> Result<(Arc<dyn Provider>, Fields, Vec<Document>)> {
        let provider = self
            .head
            .provider
            .take()
            .ok_or_else(|| Problem::invalid_metadata(vec![FieldError::missing("provider")]))?;
        self.fields.remove("provider");
        if self.ingested_under_fallback {
            let policy = provider.policy();
            if self.documents.len() > policy.max_documents() {
                return Err(Problem::bad_request(format!(
                    "at most {} documents per upload",
                    policy.max_documents()
                )));
            }
            let mut budget = policy.max_request_bytes;
            for doc in &mut self.documents {
                policy.check_slot(&doc.meta.slot)?;
                recheck(doc, policy, budget)
                    .await
                    .map_err(|e| ingest_failed(self.app, &self.faults, e))?;
                budget = budget.saturating_sub(doc.meta.size);
            }
        }
        Ok((provider, self.fields, self.documents))
    }
}
