//! Operators' routes over a tenant's uploads: list, history, retry, cancel, erase.
//!
//! All take the tenant's API key ([`Caller`]): an upload-session token is a browser's
//! credential for one upload and must not list or erase anything. An upload of another
//! tenant answers exactly as an unknown id (404), so ids cannot be probed.

use axum::{
    extract::{Path, RawQuery, State},
    response::Response,
};
use base64::Engine as _;
use docgate_core::Problem;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    app::AppState,
    auth::Caller,
    host::ledger_problem,
    http::json_response,
    ledger::{Control, ListQuery, Millis, UploadRecord, UploadStatus},
    receipt::{receipt, rfc3339},
};

type Result<T> = std::result::Result<T, Problem>;

/// Items per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

const PARAMETERS: [&str; 6] = [
    "status",
    "provider",
    "created_after",
    "created_before",
    "limit",
    "cursor",
];

fn invalid_query(parameter: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        "Invalid query parameter",
    )
    .with_detail(detail)
    .with_extra("parameter", parameter)
}

fn invalid_cursor() -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid_cursor", "Invalid cursor")
        .with_detail("`cursor` must be a `next_cursor` value from a previous page, unchanged")
        .with_extra("parameter", "cursor")
}

/// A page boundary as the client holds it: opaque, base64url of `<created_at>:<id>`.
pub fn encode_cursor(created_at: Millis, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<(Millis, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (at, id) = text.split_once(':')?;
    let at: Millis = at.parse().ok()?;
    // Ids are UUIDs: anything else was not made by us.
    let plausible =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    plausible.then(|| (at, id.to_owned()))
}

fn timestamp(parameter: &str, value: &str) -> Result<Millis> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        invalid_query(
            parameter,
            format!("`{parameter}` must be an RFC 3339 time, e.g. 2025-01-31T12:00:00Z"),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| invalid_query(parameter, format!("`{parameter}` is out of range")))
}

/// The listing's query string, every parameter checked (an unknown one is refused rather
/// than ignored: a misspelt filter would otherwise silently list everything).
pub fn parse_list_query(tenant: &str, query: Option<&str>) -> Result<ListQuery> {
    let mut q = ListQuery {
        tenant: tenant.to_owned(),
        status: None,
        provider: None,
        created_after: None,
        created_before: None,
        after: None,
        limit: DEFAULT_LIMIT,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let name = name.into_owned();
        if !PARAMETERS.contains(&name.as_str()) {
            return Err(invalid_query(
                &name,
                format!(
                    "unknown parameter `{name}`; known: {}",
                    PARAMETERS.join(", ")
                ),
            ));
        }
        if seen.contains(&name) {
            return Err(invalid_query(&name, format!("`{name}` is given twice")));
        }
        seen.push(name.clone());
        match name.as_str() {
            "status" => {
                let st = UploadStatus::parse(&value).ok_or_else(|| {
                    let known: Vec<&str> = UploadStatus::ALL.iter().map(|s| s.as_str()).collect();
                    invalid_query(
                        "status",
                        format!("unknown status `{value}`; known: {}", known.join(", ")),
                    )
                })?;
                q.status = Some(st);
            }
            "provider" => {
                if value.is_empty() {
                    return Err(invalid_query("provider", "`provider` is empty"));
                }
                q.provider = Some(value.into_owned());
            }
            "created_after" => q.created_after = Some(timestamp("created_after", &value)?),
            "created_before" => q.created_before = Some(timestamp("created_before", &value)?),
            "limit" => {
                let n: u32 = value.parse().map_err(|_| {
                    invalid_query("limit", format!("`limit` must be 1 to {MAX_LIMIT}"))
                })?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(invalid_query(
                        "limit",
                        format!("`limit` must be 1 to {MAX_LIMIT}, got {n}"),
                    ));
                }
                q.limit = n;
            }
            "cursor" => q.after = Some(decode_cursor(&value).ok_or_else(invalid_cursor)?),
            _ => {}
        }
    }
    Ok(q)
}

/// One line of the listing: what an operator scans for, not the whole receipt.
pub fn short_receipt(rec: &UploadRecord) -> Value {
    let mut r = json!({
        "id": rec.id,
        "provider": rec.provider,
        "status": rec.status.as_str(),
        "attempts": rec.attempts,
        "documents": rec.documents.len(),
        "bytes": rec.documents.iter().map(|d| d.meta.size).sum::<u64>(),
        "created_at": rfc3339(rec.created_at),
        "updated_at": rfc3339(rec.updated_at),
        "delivered_at": rec.delivered_at.map_or(Value::Null, rfc3339),
    });
    if let Some(obj) = r.as_object_mut() {
        if let Some(at) = rec.erased_at {
            obj.insert("erased_at".into(), rfc3339(at));
        }
        if rec.cancel_requested && !rec.status.is_terminal() {
            obj.insert("cancel_requested".into(), Value::Bool(true));
        }
    }
    r
}

/// `GET /v1/uploads`: the tenant's uploads, newest first, a page at a time.
pub async fn list(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let mut q = parse_list_query(&tenant.name, query.as_deref())?;
    let limit = q.limit;
    // One more than asked tells whether another page follows, without a count.
    q.limit = limit.saturating_add(1);
    let mut recs = app
        .ledger
        .list_uploads(&q)
        .await
        .map_err(|e| ledger_problem(&e))?;
    let more = recs.len() > limit as usize;
    recs.truncate(limit as usize);
    let next = recs
        .last()
        .filter(|_| more)
        .map(|r| Value::String(encode_cursor(r.created_at, &r.id)))
        .unwrap_or(Value::Null);
    let items: Vec<Value> = recs.iter().map(short_receipt).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next }),
    ))
}

/// The tenant's upload `id`, or the same 404 as an unknown id.
async fn owned(app: &AppState, tenant: &str, id: &str) -> Result<UploadRecord> {
    app.ledger
        .get(id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .filter(|r| r.tenant == tenant)
        .ok_or_else(|| Problem::not_found(format!("no upload `{id}`")))
}

/// `GET /v1/uploads/{id}/events`: the upload's history, oldest first.
pub async fn events(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let rec = owned(&app, &tenant.name, &id).await?;
    let history = app
        .ledger
        .history(&rec.id)
        .await
        .map_err(|e| ledger_problem(&e))?;
    let events: Vec<Value> = history
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": rfc3339(e.at),
                "kind": e.kind,
                "detail": e.detail,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": rec.id, "status": rec.status.as_str(), "events": events }),
    ))
}

fn with_location(mut res: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/uploads/{id}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn conflict(
    code: &'static str,
    title: &'static str,
    detail: String,
    rec: &UploadRecord,
) -> Problem {
    Problem::new(StatusCode::CONFLICT, code, title)
        .with_detail(detail)
        .with_extra("upload_id", rec.id.clone())
        .with_extra("upload_status", rec.status.as_str())
}

fn documents_gone(rec: &UploadRecord) -> Problem {
    conflict(
        "documents_gone",
        "Documents no longer spooled",
        format!(
            "the documents of upload `{}` are no longer kept (spool retention ended, or it was \
             erased); upload them again",
            rec.id
        ),
        rec,
    )
}

/// Every spooled object of `rec` is still there, with its recorded size.
async fn documents_present(app: &AppState, rec: &UploadRecord) -> std::io::Result<bool> {
    if rec.spool_removed || rec.erased_at.is_some() {
        return Ok(false);
    }
    let store = app.spool.store();
    let mut present = std::collections::HashSet::new();
    for prefix in [
        format!("{}{}.", crate::spool_keys::UPLOADS, rec.id),
        format!("{}{}/", crate::spool_keys::UPLOADS, rec.id),
    ] {
        for object in store.list(&prefix).await? {
            present.insert(object.key);
        }
    }
    // Presence, not size: a listing gives stored sizes, which an encrypted spool makes
    // larger than the documents. A document cut short is still caught when delivery reads
    // it (the length recorded here is checked, and sealed objects verify every segment).
    Ok(rec.documents.iter().all(|d| match &d.pieces {
        Some(pieces) => pieces.iter().all(|p| present.contains(&p.key)),
        None => present.contains(&d.spool_path),
    }))
}

/// `POST /v1/uploads/{id}/retry`: deliver a failed or rejected upload again, same id.
pub async fn retry(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let rec = owned(&app, &tenant.name, &id).await?;
    if !matches!(rec.status, UploadStatus::Failed | UploadStatus::Rejected) {
        return Err(not_retryable(&rec));
    }
    let present = documents_present(&app, &rec).await.map_err(|e| {
        tracing::error!(upload = %rec.id, error = %e, "could not list the spool");
        Problem::internal("the spool could not be read")
    })?;
    if !present {
        return Err(documents_gone(&rec));
    }
    match app
        .ledger
        .retry(&rec.id, crate::ledger::now_ms())
        .await
        .map_err(|e| ledger_problem(&e))?
    {
        Control::Done(rec) => {
            // Due now: the worker need not wait for its next poll.
            app.deliverer.queue_for_worker();
            tracing::info!(upload = %rec.id, tenant = %tenant.name, "upload re-queued by its tenant");
            Ok(with_location(
                json_response(StatusCode::ACCEPTED, &receipt(&rec)),
                &rec.id,
            ))
        }
        // Changed meanwhile (another retry, spool retention, an erasure).
        Control::Refused(now)
            if matches!(now.status, UploadStatus::Failed | UploadStatus::Rejected) =>
        {
            Err(documents_gone(&now))
        }
        Control::Refused(now) => Err(not_retryable(&now)),
        Control::NotFound => Err(Problem::not_found(format!("no upload `{id}`"))),
    }
}

fn not_retryable(rec: &UploadRecord) -> Problem {
    conflict(
        "not_retryable",
        "Upload cannot be retried",
        format!(
            "upload `{}` is `{}`; only `failed` and `rejected` uploads can be retried",
            rec.id,
            rec.status.as_str()
        ),
        rec,
    )
}

/// `POST /v1/uploads/{id}/cancel`: no further delivery attempts.
pub async fn cancel(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let rec = owned(&app, &tenant.name, &id).await?;
    match app
        .ledger
        .cancel(&rec.id, crate::ledger::now_ms())
        .await
        .map_err(|e| ledger_problem(&e))?
    {
        // 200 when it is canceled now; 202 while the attempt in flight finishes.
        Control::Done(rec) => {
            let status = if rec.status == UploadStatus::Canceled {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            tracing::info!(upload = %rec.id, tenant = %tenant.name, "upload canceled by its tenant");
            Ok(with_location(
                json_response(status, &receipt(&rec)),
                &rec.id,
            ))
        }
        Control::Refused(now) => Err(conflict(
            "not_cancelable",
            "Upload cannot be canceled",
            format!(
                "upload `{}` is already final (`{}`)",
                now.id,
                now.status.as_str()
            ),
            &now,
        )),
        Control::NotFound => Err(Problem::not_found(format!("no upload `{id}`"))),
    }
}

/// `DELETE /v1/uploads/{id}`: erase the upload's documents and personal data, keeping a
/// tombstone. Idempotent: a repeated erasure answers the same tombstone (and finishes a
/// spool removal that failed the first time).
pub async fn erase(
    State(app): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let rec = owned(&app, &tenant.name, &id).await?;
    let Some((tombstone, first)) = app
        .ledger
        .erase(&rec.id, crate::ledger::now_ms())
        .await
        .map_err(|e| ledger_problem(&e))?
    else {
        return Err(Problem::not_found(format!("no upload `{id}`")));
    };
    if first {
        tracing::info!(upload = %tombstone.id, tenant = %tenant.name, "upload erased by its tenant");
    }
    if !tombstone.spool_removed {
        if let Err(e) = app.deliverer.erase_spool(&tombstone).await {
            tracing::error!(upload = %tombstone.id, error = %e, "erasure could not remove every spooled document");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "erasure_incomplete",
                "Erasure incomplete",
            )
            .with_detail(
                "the ledger is redacted but some spooled documents could not be removed yet; \
                 repeat the DELETE",
            )
            .with_retry_after(std::time::Duration::from_secs(5)));
        }
    }
    let tombstone = app
        .ledger
        .get(&tombstone.id)
        .await
        .map_err(|e| ledger_problem(&e))?
        .unwrap_or(tombstone);
    Ok(json_response(StatusCode::OK, &receipt(&tombstone)))
}
