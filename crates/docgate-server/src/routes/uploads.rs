//! `POST /v1/uploads` (multipart), `PUT /v1/uploads/{provider}` (raw) and
//! `GET /v1/uploads/{id}`.
//!
//! The handlers reject as early as the information allows:
//! 1. before reading the body — auth, the provider (query or path), its metadata when it is in
//!    the query, the declared Content-Length against the provider's limits, a declared
//!    Content-Type outside its policy;
//! 2. at each part header — the slot name, the metadata sent so far (any value that is
//!    already wrong fails now; fields that are merely missing may still follow);
//! 3. while streaming — size (413 the moment it is crossed), sniffed type (415 from the first
//!    8 KiB);
//! 4. before delivery — the provider's whole-request checks.
//!
//! Part order does not matter: a document that arrives before the `provider` field is
//! ingested under the tenant's most permissive policy and re-checked once the provider is
//! known.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Response},
};
use docgate_core::{
    ingest, media::normalize_declared, policy::MULTIPART_OVERHEAD_ALLOWANCE,
    provider::fields::only_missing, recheck, DigestSet, Document, DocumentMeta, FieldError, Fields,
    IngestRequest, MediaRange, Problem, Provider, Slots, UploadPolicy,
};
use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    app::AppState,
    body::IdleTimeout,
    delivery::{relative_spool_path, upload_dir},
    http::{problem_response, ApiError},
    ledger::{now_ms, Inserted, NewUpload, StoredDocument, UploadRecord},
    receipt::upload_response,
    tenants::Tenant,
};

/// Text fields are small: all of them together get the framing allowance the Content-Length
/// precheck grants on top of the documents, so they cannot be used to buffer a large body.
const MAX_FIELD_BYTES: usize = MULTIPART_OVERHEAD_ALLOWANCE as usize;
const MAX_FIELDS: usize = 100;

type Result<T> = std::result::Result<T, Problem>;

/// Count a rejection in the metrics and turn it into a response.
fn reject(app: &AppState, p: Problem) -> Response {
    app.metrics.rejected(&p.code);
    problem_response(&p)
}

/// The declared Content-Length; 411 when it is required and absent.
fn declared_length(app: &AppState, headers: &HeaderMap) -> Result<Option<u64>> {
    let len = content_length(headers)?;
    if len.is_none() && app.limits.require_content_length {
        return Err(Problem::length_required());
    }
    Ok(len)
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Problem::bad_request("Content-Length is not a number")),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(Problem::bad_request(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// One of the `limits.max_concurrent_uploads` permits, or 503 with Retry-After.
fn take_upload_slot(app: &AppState) -> Result<OwnedSemaphorePermit> {
    app.upload_slots.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_uploads",
            "Too many uploads",
        )
        .with_detail(
            "the gateway is receiving as many uploads as it is configured for; retry shortly",
        )
        .with_retry_after(Duration::from_secs(1))
    })
}

/// The provider named `name`, if it exists and the tenant may use it.
fn provider_for(app: &AppState, tenant: &Tenant, name: &str) -> Result<Arc<dyn Provider>> {
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

/// The most permissive policy over the tenant's providers: used for documents that arrive
/// before the `provider` field.
fn tenant_policy(app: &AppState, tenant: &Tenant) -> Option<UploadPolicy> {
    let policies: Vec<&UploadPolicy> = tenant
        .providers
        .iter()
        .filter_map(|p| app.registry.get(p))
        .map(|p| p.policy())
        .collect();
    let first = policies.first()?;
    let mut accepted: Vec<MediaRange> = Vec::new();
    for p in &policies {
        for r in &p.accepted {
            if !accepted.contains(r) {
                accepted.push(r.clone());
            }
        }
    }
    Some(UploadPolicy {
        min_document_bytes: policies
            .iter()
            .map(|p| p.min_document_bytes)
            .min()
            .unwrap_or(first.min_document_bytes),
        max_document_bytes: policies
            .iter()
            .map(|p| p.max_document_bytes)
            .max()
            .unwrap_or(first.max_document_bytes),
        max_request_bytes: policies
            .iter()
            .map(|p| p.max_request_bytes)
            .max()
            .unwrap_or(first.max_request_bytes),
        accepted,
        digests: policies
            .iter()
            .fold(DigestSet::SHA256, |d, p| d.union(p.digests)),
        slots: Slots::Free {
            max: policies
                .iter()
                .map(|p| p.max_documents())
                .max()
                .unwrap_or(1),
        },
        zip: None,
        // Most permissive: refuse only if every provider does (recheck scans for the rest).
        refuse_active_content: policies.iter().all(|p| p.refuse_active_content),
    })
}

/// Fail now if the metadata seen so far is already wrong (merely missing fields may follow).
fn early_prepare(provider: &dyn Provider, fields: &Fields) -> Result<()> {
    match provider.prepare(fields) {
        Err(p) if !only_missing(&p) => Err(p),
        _ => Ok(()),
    }
}

fn parse_query(raw: Option<&str>) -> Result<Fields> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
    let mut fields = Fields::new();
    for (k, v) in pairs {
        if fields.insert(k.clone(), v).is_some() {
            return Err(Problem::invalid_field(&k, "given more than once"));
        }
    }
    Ok(fields)
}

/// `Content-Disposition: attachment; filename="x.pdf"` → `x.pdf` (raw uploads).
fn disposition_filename(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    v.split(';').map(str::trim).find_map(|p| {
        let (k, val) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

/// `POST /v1/uploads`: a multipart form with `provider`, metadata fields and document parts.
pub async fn post_multipart(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive_multipart(&app, query.as_deref(), &headers, body).await {
        Ok(response) => response,
        Err(p) => reject(&app, p),
    }
}

async fn receive_multipart(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let tenant = app.tenants.authenticate(headers)?.clone();
    let idempotency = idempotency_key(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Problem::new(http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type")
            .with_detail("POST /v1/uploads takes multipart/form-data; use PUT /v1/uploads/{provider} for a raw body")
    })?;
    let query = parse_query(query)?;
    let declared_len = declared_length(app, headers)?;

    let mut provider: Option<Arc<dyn Provider>> = None;
    for (k, v) in &query {
        if k != "provider" {
            return Err(Problem::invalid_field(
                k,
                "only `provider` may be given in the query of a multipart upload",
            ));
        }
        provider = Some(provider_for(app, &tenant, v)?);
    }
    let fallback = tenant_policy(app, &tenant)
        .ok_or_else(|| Problem::forbidden("this tenant has no usable provider"))?;
    // Before any body byte: the declared length against the provider's limits, or against the
    // most generous of the tenant's providers when the provider is named inside the body.
    if let Some(len) = declared_len {
        let policy = provider.as_ref().map_or(&fallback, |p| p.policy());
        policy.precheck_request_length(len, MULTIPART_OVERHEAD_ALLOWANCE)?;
    }
    let receiving = take_upload_slot(app)?;
    let _in_flight = app.metrics.upload_started();

    let stream_limit = fallback.max_request_bytes.max(
        provider
            .as_ref()
            .map_or(0, |p| p.policy().max_request_bytes),
    ) + MULTIPART_OVERHEAD_ALLOWANCE;
    let body = IdleTimeout::new(body.into_data_stream(), app.limits.body_idle_timeout);
    let timed_out = body.timed_out.clone();
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(stream_limit));
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let multer_problem = |e: multer::Error| -> Problem {
        if timed_out.load(std::sync::atomic::Ordering::Acquire) {
            return docgate_core::IngestError::Idle(app.limits.body_idle_timeout).to_problem();
        }
        match e {
            multer::Error::StreamSizeExceeded { limit } => {
                Problem::payload_too_large(limit, "the request body")
            }
            multer::Error::FieldSizeExceeded { limit, field_name } => Problem::payload_too_large(
                limit,
                &format!("field `{}`", field_name.unwrap_or_default()),
            ),
            other => Problem::bad_request(format!("the multipart body is malformed: {other}")),
        }
    };

    let mut fields = Fields::new();
    let mut documents: Vec<Document> = Vec::new();
    let mut ingested_under_fallback = false;
    let mut field_bytes: usize = 0;
    let mut used: u64 = 0;

    while let Some(mut part) = form.next_field().await.map_err(&multer_problem)? {
        let name = part.name().map(str::to_owned).unwrap_or_default();
        if name.is_empty() {
            return Err(Problem::bad_request("every multipart part needs a name"));
        }
        let is_file = part.file_name().is_some()
            || part
                .content_type()
                .is_some_and(|m| m.essence_str() != "text/plain");
        if !is_file {
            let mut value = Vec::new();
            while let Some(chunk) = part.chunk().await.map_err(&multer_problem)? {
                value.extend_from_slice(&chunk);
                field_bytes += chunk.len();
                if field_bytes > MAX_FIELD_BYTES {
                    return Err(Problem::payload_too_large(
                        MAX_FIELD_BYTES as u64,
                        "the text fields together",
                    ));
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| Problem::invalid_field(&name, "not UTF-8 text"))?;
            if name == "provider" {
                if provider.as_ref().is_some_and(|p| p.name() != value.trim())
                    || fields.contains_key("provider")
                {
                    return Err(Problem::invalid_field("provider", "given more than once"));
                }
                let p = provider_for(app, &tenant, value.trim())?;
                if let Some(len) = declared_len {
                    p.policy()
                        .precheck_request_length(len, MULTIPART_OVERHEAD_ALLOWANCE)?;
                }
                provider = Some(p);
                fields.insert("provider".into(), value.trim().to_owned());
                continue;
            }
            if fields.len() >= MAX_FIELDS {
                return Err(Problem::bad_request(format!(
                    "more than {MAX_FIELDS} fields"
                )));
            }
            if fields.insert(name.clone(), value).is_some() {
                return Err(Problem::invalid_field(&name, "given more than once"));
            }
            continue;
        }

        // A document part: check what its header already tells before reading it.
        if documents.iter().any(|d| d.meta.slot == name) {
            return Err(Problem::invalid_field(
                &name,
                "a document slot can be used only once",
            ));
        }
        let policy = match &provider {
            Some(p) => {
                let without_provider = fields_without_provider(&fields);
                early_prepare(p.as_ref(), &without_provider)?;
                p.policy()
            }
            None => {
                ingested_under_fallback = true;
                &fallback
            }
        };
        policy.check_slot(&name)?;
        if documents.len() >= policy.max_documents() {
            return Err(Problem::invalid_field(
                &name,
                format!("at most {} documents per upload", policy.max_documents()),
            ));
        }
        let remaining = policy.max_request_bytes.saturating_sub(used);
        let declared_type = part.content_type().map(|m| m.to_string());
        let filename = part.file_name().map(str::to_owned);
        let request = IngestRequest {
            slot: name.clone(),
            filename,
            declared_type,
            policy,
            max_bytes: policy.max_document_bytes.min(remaining),
            idle_timeout: app.limits.body_idle_timeout,
        };
        let doc = ingest(&mut part, request, &app.spool)
            .await
            .map_err(|e| match e {
                docgate_core::IngestError::Body(_)
                    if timed_out.load(std::sync::atomic::Ordering::Acquire) =>
                {
                    docgate_core::IngestError::Idle(app.limits.body_idle_timeout).to_problem()
                }
                docgate_core::IngestError::Body(msg) if msg.contains("exceeded") => {
                    Problem::payload_too_large(stream_limit, "the request body")
                }
                other => other.to_problem(),
            })?;
        used += doc.meta.size;
        documents.push(doc);
    }

    let provider =
        provider.ok_or_else(|| Problem::invalid_metadata(vec![FieldError::missing("provider")]))?;
    fields.remove("provider");
    if ingested_under_fallback {
        let mut budget = provider.policy().max_request_bytes;
        for doc in &mut documents {
            provider.policy().check_slot(&doc.meta.slot)?;
            recheck(doc, provider.policy(), budget)
                .await
                .map_err(|e| e.to_problem())?;
            budget = budget.saturating_sub(doc.meta.size);
        }
        if documents.len() > provider.policy().max_documents() {
            return Err(Problem::bad_request(format!(
                "at most {} documents per upload",
                provider.policy().max_documents()
            )));
        }
    }
    accept(
        app,
        &tenant,
        provider,
        fields,
        documents,
        idempotency,
        wants_async(headers),
        receiving,
    )
    .await
}

fn fields_without_provider(fields: &Fields) -> Fields {
    fields
        .iter()
        .filter(|(k, _)| k.as_str() != "provider")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `PUT /v1/uploads/{provider}`: the body is one document, metadata is in the query.
pub async fn put_raw(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive_raw(&app, &provider, query.as_deref(), &headers, body).await {
        Ok(response) => response,
        Err(p) => reject(&app, p),
    }
}

async fn receive_raw(
    app: &AppState,
    provider: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let tenant = app.tenants.authenticate(headers)?.clone();
    let idempotency = idempotency_key(headers)?;
    let provider = provider_for(app, &tenant, provider)?;
    let policy = provider.policy();
    let fields = parse_query(query)?;
    // Everything the headers and the query tell is checked before the body is read.
    provider.prepare(&fields)?;
    let slot = match &policy.slots {
        Slots::Named { slots } if slots.len() == 1 => slots[0].name.clone(),
        Slots::Named { slots } => {
            let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
            return Err(Problem::bad_request(format!(
                "this provider takes several documents ({}); use POST /v1/uploads",
                names.join(", ")
            )));
        }
        Slots::Free { .. } => "file".to_owned(),
    };
    if let Some(len) = declared_length(app, headers)? {
        policy.precheck_document_length(len)?;
    }
    let declared_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(declared) = normalize_declared(declared_type.as_deref()) {
        if !policy.accepts(&declared) {
            return Err(Problem::unsupported_media_type(
                &declared,
                &policy.accepted_names(),
            ));
        }
    }
    let receiving = take_upload_slot(app)?;
    let _in_flight = app.metrics.upload_started();
    // ingest cuts off a quiet body itself (the multipart path needs the wrapper for text fields).
    let stream = body.into_data_stream();
    let request = IngestRequest {
        slot,
        filename: disposition_filename(headers),
        declared_type,
        policy,
        max_bytes: policy.max_document_bytes.min(policy.max_request_bytes),
        idle_timeout: app.limits.body_idle_timeout,
    };
    let doc = ingest(stream, request, &app.spool)
        .await
        .map_err(|e| e.to_problem())?;
    accept(
        app,
        &tenant,
        provider,
        fields,
        vec![doc],
        idempotency,
        wants_async(headers),
        receiving,
    )
    .await
}

/// What was uploaded, for comparing requests under the same Idempotency-Key: the provider,
/// the fields and each document's slot, size and SHA-256 (not filenames or declared types).
fn fingerprint(provider: &str, fields: &Fields, documents: &[DocumentMeta]) -> String {
    let mut docs: Vec<(&str, &str, u64)> = documents
        .iter()
        .map(|d| (d.slot.as_str(), d.digests.sha256.as_str(), d.size))
        .collect();
    docs.sort();
    let canonical =
        serde_json::json!({ "provider": provider, "fields": fields, "documents": docs });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Validate the whole upload, make it durable, record it, deliver it.
///
/// `receiving` is the upload's concurrency permit: it is released once the upload is
/// recorded, so requests waiting for delivery do not count as uploads being received.
#[allow(clippy::too_many_arguments)]
async fn accept(
    app: &AppState,
    tenant: &Tenant,
    provider: Arc<dyn Provider>,
    fields: Fields,
    documents: Vec<Document>,
    idempotency_key: Option<String>,
    respond_async: bool,
    receiving: OwnedSemaphorePermit,
) -> Result<Response> {
    let prepared = provider.prepare(&fields)?;
    let present: Vec<&str> = documents.iter().map(|d| d.meta.slot.as_str()).collect();
    let missing = provider.policy().missing_slots(&present);
    if !missing.is_empty() {
        return Err(Problem::invalid_metadata(
            missing.iter().map(|s| FieldError::missing(*s)).collect(),
        ));
    }
    if documents.is_empty() {
        return Err(
            Problem::invalid_metadata(vec![FieldError::missing("document")])
                .with_detail("an upload needs at least one document part"),
        );
    }
    let metas: Vec<DocumentMeta> = documents.iter().map(|d| d.meta.clone()).collect();
    provider.check(&prepared, &metas)?;

    let id = uuid::Uuid::new_v4().to_string();
    let stored = match persist(app, &id, &documents).await {
        Ok(stored) => stored,
        Err(e) => {
            remove_upload_dir(app, &id).await;
            tracing::error!(error = %e, "could not make an upload durable");
            return Err(Problem::internal(
                "the document could not be stored; nothing was accepted",
            ));
        }
    };
    let total: u64 = documents.iter().map(|d| d.meta.size).sum();
    drop(documents);

    let fp = fingerprint(provider.name(), &fields, &metas);
    let lease = app.deliverer.lease();
    let new = NewUpload {
        id: id.clone(),
        tenant: tenant.name.clone(),
        provider: provider.name().to_owned(),
        idempotency_key,
        fingerprint: fp.clone(),
        prepared,
        documents: stored,
        now: now_ms(),
        lease: Some(lease),
        notify: tenant.notify.is_some(),
    };
    let inserted = match app.ledger.insert(new).await {
        Ok(inserted) => inserted,
        Err(e) => {
            // An error may still have committed (a connection lost after the commit): look
            // before removing the documents of an upload that might be recorded.
            match app.ledger.get(&id).await {
                Ok(Some(rec)) => Inserted::New(rec),
                Ok(None) => {
                    tracing::error!(error = %e, "could not record an upload");
                    remove_upload_dir(app, &id).await;
                    return Err(ledger_unavailable(
                        "the upload could not be recorded; nothing was accepted",
                    ));
                }
                Err(_) => {
                    // Unknown: keep the documents (the orphan sweep removes them if the
                    // upload really was not recorded) and let the client retry with its key.
                    tracing::error!(error = %e, upload = %id, "could not record an upload, nor tell whether it was");
                    return Err(ledger_unavailable(
                        "the upload may not have been recorded; retry with the same Idempotency-Key",
                    ));
                }
            }
        }
    };
    drop(receiving);
    match inserted {
        Inserted::New(rec) => {
            app.metrics.bytes_received(&rec.provider, total);
            let mut waiter = app.deliverer.watch(&rec.id, rec.status);
            app.deliverer.spawn_drive(rec.clone());
            if respond_async {
                let mut res = upload_response(&rec);
                res.headers_mut().insert(
                    "preference-applied",
                    HeaderValue::from_static("respond-async"),
                );
                return Ok(res);
            }
            let rec = wait_for_final(app, rec, &mut waiter.rx).await;
            Ok(upload_response(&rec))
        }
        Inserted::Existing(rec) => {
            remove_upload_dir(app, &id).await;
            if rec.fingerprint != fp {
                return Err(Problem::new(
                    http::StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "Idempotency-Key reused",
                )
                .with_detail("this Idempotency-Key was used for a different upload")
                .with_extra("upload_id", rec.id.as_str()));
            }
            let rec = if respond_async || rec.status.is_terminal() {
                rec
            } else {
                let mut waiter = app.deliverer.watch(&rec.id, rec.status);
                wait_for_final(app, rec, &mut waiter.rx).await
            };
            let mut res = upload_response(&rec);
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(res)
        }
    }
}

fn ledger_unavailable(detail: &str) -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        "Ledger unavailable",
    )
    .with_detail(detail)
    .with_side(docgate_core::Side::Gateway)
    .with_retry_after(Duration::from_secs(1))
}

/// Move every document to its durable place under `uploads/<id>/` (fsynced).
async fn persist(
    app: &AppState,
    id: &str,
    documents: &[Document],
) -> std::io::Result<Vec<StoredDocument>> {
    let mut stored = Vec::with_capacity(documents.len());
    for doc in documents {
        let relative = relative_spool_path(id, &doc.meta.slot);
        doc.spool.persist(&app.spool.root().join(&relative)).await?;
        stored.push(StoredDocument {
            meta: doc.meta.clone(),
            spool_path: relative,
        });
    }
    Ok(stored)
}

async fn remove_upload_dir(app: &AppState, id: &str) {
    let _ = tokio::fs::remove_dir_all(upload_dir(&app.spool, id)).await;
}

/// Wait (up to the sync budget) for the upload to reach a final state. Changes made by this
/// replica arrive through `rx`; the ledger is re-read periodically for work another replica
/// does.
async fn wait_for_final(
    app: &AppState,
    mut rec: UploadRecord,
    rx: &mut tokio::sync::watch::Receiver<crate::ledger::UploadStatus>,
) -> UploadRecord {
    let deadline = tokio::time::Instant::now() + app.delivery.sync_budget;
    loop {
        let now = tokio::time::Instant::now();
        if rec.status.is_terminal() || now >= deadline {
            return rec;
        }
        // A local status change or a tick: either way, re-read the ledger (the truth).
        let tick = (now + Duration::from_millis(500)).min(deadline);
        if let Ok(Err(_)) = tokio::time::timeout_at(tick, rx.changed()).await {
            tokio::time::sleep_until(tick).await;
        }
        if let Ok(Some(fresh)) = app.ledger.get(&rec.id).await {
            rec = fresh;
        }
    }
}

/// `GET /v1/uploads/{id}`: the receipt, for the owning tenant only (others get 404, so ids
/// of other tenants cannot even be confirmed to exist).
pub async fn get_upload(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response> = async {
        let tenant = app.tenants.authenticate(&headers)?;
        let rec = app
            .ledger
            .get(&id)
            .await
            .map_err(|e| Problem::internal(format!("ledger: {e}")))?
            .filter(|r| r.tenant == tenant.name)
            .ok_or_else(|| Problem::not_found(format!("no upload `{id}`")))?;
        let mut res =
            crate::http::json_response(http::StatusCode::OK, &crate::receipt::receipt(&rec));
        if !rec.status.is_terminal() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Ok(res)
    }
    .await;
    result.unwrap_or_else(|p| ApiError(p).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_fields_refuse_duplicates() {
        assert_eq!(parse_query(Some("a=1&b=2")).map(|f| f.len()), Ok(2));
        assert!(parse_query(Some("a=1&a=2")).is_err());
        assert_eq!(parse_query(None).map(|f| f.len()), Ok(0));
    }

    #[test]
    fn prefer_respond_async_is_recognised_among_other_preferences() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, respond-async"),
        );
        assert!(wants_async(&h));
        assert!(!wants_async(&HeaderMap::new()));
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h), Ok(None));
        h.insert("idempotency-key", HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&h), Ok(Some("order-42".into())));
        h.insert("idempotency-key", HeaderValue::from_static("has space"));
        assert!(idempotency_key(&h).is_err());
    }

    #[test]
    fn content_disposition_filename() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"id card.pdf\""),
        );
        assert_eq!(disposition_filename(&h).as_deref(), Some("id card.pdf"));
    }

    #[test]
    fn fingerprint_depends_on_provider_fields_and_content_not_document_order() {
        let doc = |slot: &str, sha: &str| DocumentMeta {
            slot: slot.into(),
            filename: None,
            size: 1,
            media_type: "image/png".into(),
            declared_type: None,
            digests: docgate_core::DigestsHex {
                sha256: sha.into(),
                sha512: None,
                md5: None,
            },
            entries: None,
        };
        let f: Fields = [("a".to_string(), "1".to_string())].into_iter().collect();
        let ab = fingerprint("p", &f, &[doc("a", "1"), doc("b", "2")]);
        assert_eq!(ab, fingerprint("p", &f, &[doc("b", "2"), doc("a", "1")]));
        assert_ne!(ab, fingerprint("q", &f, &[doc("a", "1"), doc("b", "2")]));
        assert_ne!(
            ab,
            fingerprint("p", &Fields::new(), &[doc("a", "1"), doc("b", "2")])
        );
        assert_ne!(ab, fingerprint("p", &f, &[doc("a", "1"), doc("b", "3")]));
    }
}
