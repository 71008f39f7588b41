//! `PUT /v1/uploads/{provider}`: the body is one document, the metadata is in the query.

use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    response::Response,
};
use docgate_core::{
    ingest_into, media::normalize_declared, IngestRequest, Problem, Slots, UploadPolicy,
};
use http::{header, HeaderMap};

use super::{
    accept::{accept, ingest_failed},
    declared_length, provider_for, request, Intake, Result,
};
use crate::{app::AppState, auth::Caller};

/// The one slot a raw body fills.
fn single_slot(policy: &UploadPolicy) -> Result<String> {
    match &policy.slots {
        Slots::Named { slots } if slots.len() == 1 => Ok(slots[0].name.clone()),
        Slots::Named { slots } => {
            let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
            Err(Problem::bad_request(format!(
                "this provider takes several documents ({}); use POST /v1/uploads",
                names.join(", ")
            )))
        }
        Slots::Free { .. } => Ok("file".to_owned()),
    }
}

/// A declared Content-Type outside the policy is refused before the body is read.
fn declared_type(headers: &HeaderMap, policy: &UploadPolicy) -> Result<Option<String>> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(normalized) = normalize_declared(declared.as_deref()) {
        if !policy.accepts(&normalized) {
            return Err(Problem::unsupported_media_type(
                &normalized,
                &policy.accepted_names(),
            ));
        }
    }
    Ok(declared)
}

pub async fn put_raw(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let provider = provider_for(&app, &tenant, &provider)?;
    let policy = provider.policy();
    let fields = request::parse_query(query.as_deref(), app.limits.max_fields)?;
    // Everything the headers and the query tell is checked before the body is read.
    provider.prepare(&fields)?;
    let slot = single_slot(policy)?;
    if let Some(len) = declared_length(&app, &headers)? {
        policy.precheck_document_length(len)?;
    }
    let declared_type = declared_type(&headers, policy)?;
    let filename = request::checked_filename(
        request::disposition_filename(&headers).as_deref(),
        app.limits.max_filename_bytes,
    )?;
    let intake = Intake::open(&app, tenant, &headers).await?;
    let _in_flight = app.metrics.upload_started();
    let body = intake.guard(body.into_data_stream());
    let faults = intake.faults.clone();
    let request = IngestRequest {
        slot,
        filename,
        declared_type,
        policy,
        max_bytes: policy.max_document_bytes.min(policy.max_request_bytes),
        idle_timeout: app.limits.body_idle_timeout,
    };
    let key = intake.key(&request.slot);
    let doc = ingest_into(body, request, &app.spool, &key)
        .await
        .map_err(|e| ingest_failed(&app, &faults, e))?;
    accept(intake, provider, fields, vec![doc]).await
}
