//! The accept step: validate the whole upload, make it durable, record it, start its
//! delivery and answer.
//!
//! "Accepted" is a promise: a 2xx (or a 202) only after every document is fsynced in the
//! spool **and** the ledger row is committed. A failure on the way — a full disk above all —
//! removes whatever was written and answers with a problem that says so (507 with
//! Retry-After when space ran out), never a 2xx.

use std::sync::Arc;

use axum::response::Response;
use docgate_core::{Document, DocumentMeta, FieldError, Fields, Problem, Provider};
use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::{wait, Intake, Result};
use crate::{
    admission::{insufficient_storage, is_out_of_space},
    ledger::{
        now_ms, Inserted, LedgerError, NewUpload, StoredDocument, UploadRecord, UploadSubject,
    },
    receipt::upload_response,
    spool_keys,
};

/// What was uploaded, for comparing requests under the same Idempotency-Key: the provider,
/// the fields and each document's slot, size and SHA-256 (not filenames or declared types).
pub fn fingerprint(provider: &str, fields: &Fields, documents: &[DocumentMeta]) -> String {
    let mut docs: Vec<(&str, &str, u64)> = documents
        .iter()
        .map(|d| (d.slot.as_str(), d.digests.sha256.as_str(), d.size))
        .collect();
    docs.sort();
    let canonical =
        serde_json::json!({ "provider": provider, "fields": fields, "documents": docs });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The provider's whole-request checks: metadata, required slots, cross-document rules.
fn check_complete(
    provider: &dyn Provider,
    fields: &Fields,
    documents: &[Document],
) -> Result<docgate_core::Prepared> {
    let prepared = provider.prepare(fields)?;
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
    Ok(prepared)
}

/// A session minted for customers another tenant owns is refused at once
/// ([`Provider::subjects`]); an upload's customers are claimed with its insert.
pub async fn claim_subjects(
    app: &crate::app::AppState,
    tenant: &str,
    provider: &dyn Provider,
    prepared: &docgate_core::Prepared,
) -> Result<()> {
    for (field, subject) in provider.subjects(prepared) {
        let mine = app
            .ledger
            .claim_ref(tenant, provider.name(), &subject, "upload")
            .await
            .map_err(|e| crate::host::ledger_problem(&e))?;
        if !mine {
            return Err(another_tenants_customer(field));
        }
    }
    Ok(())
}

/// 403 for an upload naming (in `field`) a customer another tenant uploads for.
fn another_tenants_customer(field: &str) -> Problem {
    Problem::new(http::StatusCode::FORBIDDEN, "forbidden", "Forbidden")
        .with_detail(format!(
            "`{field}` names a customer another tenant of this gateway uploads for"
        ))
        .with_extra("field", field)
}

/// How long a request waiting for its outcome queues for a delivery slot before leaving its
/// upload to the worker.
const SLOT_QUEUE: std::time::Duration = std::time::Duration::from_secs(1);

/// Validate, persist, record, deliver and answer.
pub async fn accept(
    intake: Intake,
    provider: Arc<dyn Provider>,
    fields: Fields,
    documents: Vec<Document>,
) -> Result<Response> {
    let app = &intake.app;
    let prepared = check_complete(provider.as_ref(), &fields, &documents)?;
    let subjects = provider.subjects(&prepared);
    let metas: Vec<DocumentMeta> = documents.iter().map(|d| d.meta.clone()).collect();
    let id = intake.id.clone();
    let stored = persist(&intake, &documents).await?;
    let total: u64 = metas.iter().map(|d| d.size).sum();

    let fp = fingerprint(provider.name(), &fields, &metas);
    // Deliver at once when a delivery slot is free. A client waiting for the outcome queues
    // for one a little while (first come, first served: uploads queued for the worker would
    // otherwise lose every freed slot to newer requests); else the worker takes it later.
    let slot = if intake.respond_async {
        app.deliverer.try_slot(provider.name())
    } else {
        app.deliverer.slot_within(provider.name(), SLOT_QUEUE).await
    };
    let new = NewUpload {
        id: id.clone(),
        tenant: intake.tenant.name.clone(),
        provider: provider.name().to_owned(),
        idempotency_key: intake.idempotency_key.clone(),
        fingerprint: fp.clone(),
        prepared,
        documents: stored,
        now: now_ms(),
        lease: slot.as_ref().map(|_| app.deliverer.lease()),
        first_attempt: true,
        notify: intake.tenant.notify.is_some(),
        subjects: subjects
            .iter()
            .map(|(field, subject)| UploadSubject {
                subject: subject.clone(),
                // A browser may name a customer its tenant never did: anyone's. Its upload
                // may go only to one no other tenant has, and does not make it the tenant's
                // (or one end user could take other tenants' customers from them for good).
                claim: intake
                    .session
                    .as_ref()
                    .is_none_or(|s| s.fixed.contains(*field)),
            })
            .collect(),
        session: intake.session.as_ref().map(|s| s.id.clone()),
    };
    // What an upload that is not recorded leaves behind. Documents received in pieces (a
    // session's tus documents) stay: their session still has them, and removes them when
    // it ends.
    let keys: Vec<String> = new
        .documents
        .iter()
        .filter(|d| d.pieces.is_none())
        .flat_map(|d| d.keys())
        .collect();
    let Intake {
        app,
        permit,
        respond_async,
        session,
        ..
    } = intake;
    let mut waiter = app.deliverer.watch(&id);
    // Recording the upload and starting its delivery are one step, on a task of its own: a
    // request dropped while its record is written (its client gone) would leave the upload
    // leased to a delivery that never starts, until the lease ran out, an attempt spent.
    let inserted = {
        let app = app.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let inserted = record(&app, new, &keys).await;
            if let Ok(Inserted::New(rec)) = &inserted {
                if let Some(s) = &session {
                    s.hold.accepted();
                }
                match slot {
                    // Documents still in memory go to the first attempt as they are; the
                    // delivery slot bounds how many are held so.
                    Some(slot) => {
                        let received = documents
                            .into_iter()
                            .filter(|d| d.spool.is_in_memory())
                            .collect();
                        app.deliverer.spawn_drive(rec.clone(), slot, true, received)
                    }
                    None => app.deliverer.queue_for_worker(),
                }
            }
            // The session's hold, if the request is gone, is handed back now: after the
            // record, never while it may still commit.
            drop(session);
            inserted
        })
        .await
        .map_err(|_| Problem::internal("recording the upload failed"))??
    };
    drop(permit);
    match inserted {
        Inserted::New(rec) => {
            app.metrics.bytes_received(&rec.provider, total);
            if respond_async {
                let mut res = upload_response(&rec);
                res.headers_mut().insert(
                    "preference-applied",
                    HeaderValue::from_static("respond-async"),
                );
                return Ok(res);
            }
            let rec = wait::for_final(&app, rec, &mut waiter.rx).await;
            Ok(upload_response(&rec))
        }
        Inserted::Existing(rec) => {
            spool_keys::remove_for_request(&app.spool, keys).await;
            replay(&app, rec, &fp, respond_async).await
        }
        Inserted::NotOwner(i) => {
            spool_keys::remove_for_request(&app.spool, keys).await;
            let field = subjects.get(i).map_or("fields", |(f, _)| *f);
            Err(another_tenants_customer(field))
        }
    }
}

/// The same Idempotency-Key again: the original upload, or 409 for different content.
async fn replay(
    app: &crate::app::AppState,
    rec: UploadRecord,
    fingerprint: &str,
    respond_async: bool,
) -> Result<Response> {
    if rec.fingerprint != fingerprint {
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
        let mut waiter = app.deliverer.watch(&rec.id);
        wait::for_final(app, rec, &mut waiter.rx).await
    };
    let mut res = upload_response(&rec);
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(res)
}

/// Make every document durable under its key (documents still in memory are written out;
/// the others were committed when their body ended). On failure nothing of the upload is
/// left behind.
async fn persist(intake: &Intake, documents: &[Document]) -> Result<Vec<StoredDocument>> {
    let app = &intake.app;
    let mut stored = Vec::with_capacity(documents.len());
    for doc in documents {
        // A document received in pieces is durable piece by piece already.
        if let Some(pieces) = doc.spool.pieces_list() {
            stored.push(StoredDocument {
                meta: doc.meta.clone(),
                spool_path: pieces.first().map(|p| p.key.clone()).unwrap_or_default(),
                pieces: Some(pieces),
            });
            continue;
        }
        let key = intake.key(&doc.meta.slot);
        if let Err(e) = doc.spool.persist(&app.spool, &key).await {
            let mut written: Vec<String> = stored
                .iter()
                .map(|d: &StoredDocument| d.spool_path.clone())
                .collect();
            written.push(key);
            spool_keys::remove_for_request(&app.spool, written).await;
            return Err(storage_failed(app, &e));
        }
        stored.push(StoredDocument {
            meta: doc.meta.clone(),
            spool_path: key,
            pieces: None,
        });
    }
    Ok(stored)
}

/// A write that failed: 507 when space ran out (and the space watch believes it at once),
/// else 500. Either way nothing was accepted.
pub fn storage_failed(app: &crate::app::AppState, e: &std::io::Error) -> Problem {
    if is_out_of_space(e) {
        app.admission.space.out_of_space();
        tracing::warn!(error = %e, "out of space while storing an upload");
        insufficient_storage(
            "the gateway ran out of storage while storing the upload; nothing was accepted",
        )
    } else {
        tracing::error!(error = %e, "could not make an upload durable");
        Problem::internal("the document could not be stored; nothing was accepted")
    }
}

/// Why ingesting a document failed, as the client is told: the body's own fault (it stalled,
/// trickled, was cut) first, then a full disk (507), then what the pipeline found.
pub fn ingest_failed(
    app: &crate::app::AppState,
    faults: &crate::body::FaultCell,
    e: docgate_core::IngestError,
) -> Problem {
    if let Some(fault) = faults.get() {
        return fault.to_problem();
    }
    match &e {
        // Reading the spool back (a ZIP's check) fails as writing it does: logged, and the
        // client told only that storage failed (or 507), not the store's own words.
        docgate_core::IngestError::Spool(io)
        | docgate_core::IngestError::Archive(docgate_core::archive::ArchiveError::Io(io)) => {
            storage_failed(app, io)
        }
        _ => e.to_problem(),
    }
}

/// Record the upload. An error may still have committed (a connection lost after the
/// commit): look before removing the documents of an upload that might be recorded.
async fn record(app: &crate::app::AppState, new: NewUpload, keys: &[String]) -> Result<Inserted> {
    let id = new.id.clone();
    let error = match app.ledger.insert(new).await {
        Ok(inserted) => return Ok(inserted),
        Err(e) => e,
    };
    if matches!(error, LedgerError::SessionNotHeld) {
        // Definite: nothing was written (and a row under the session's upload id would not
        // be this request's).
        spool_keys::remove_for_request(&app.spool, keys.to_vec()).await;
        return Err(super::session::session_busy());
    }
    if !error.maybe_committed() {
        // Definite: no row was written, whether or not the ledger can be read now (a
        // PostgreSQL that cannot be reached could not answer the look either).
        spool_keys::remove_for_request(&app.spool, keys.to_vec()).await;
        return Err(ledger_refused(app, &error));
    }
    match app.ledger.get(&id).await {
        Ok(Some(rec)) => Ok(Inserted::New(rec)),
        Ok(None) | Err(_) => {
            // Unknown: keep the documents (the orphan sweep removes them if the upload
            // really was not recorded) and let the client retry with its key.
            tracing::error!(error = %error, upload = %id, "could not record an upload, nor tell whether it was");
            Err(ledger_unavailable(
                "the upload may not have been recorded; retry with the same Idempotency-Key",
            ))
        }
    }
}

fn ledger_refused(app: &crate::app::AppState, e: &LedgerError) -> Problem {
    if e.is_out_of_space() {
        app.admission.space.out_of_space();
        tracing::warn!(error = %e, "the ledger is out of space");
        return crate::host::ledger_full();
    }
    tracing::error!(error = %e, "could not record an upload");
    ledger_unavailable("the upload could not be recorded; nothing was accepted")
}

fn ledger_unavailable(detail: &str) -> Problem {
    Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        "Ledger unavailable",
    )
    .with_detail(detail)
    .with_side(docgate_core::Side::Gateway)
    .with_retry_after(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

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
