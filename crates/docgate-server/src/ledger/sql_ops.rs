//! Operators' reads and writes on uploads: listing, retry, cancel and erasure, and the
//! cancel bookkeeping the delivery writes share. Like [`super::sql_writes`], every write
//! records its event in the same transaction as the change.

use super::db::{query, Conn, DbRow};
use serde_json::{json, Map, Value};

use super::{
    sql::{decode, to_text, COLUMNS},
    sql_writes::add_event,
    Control, LedgerResult, ListQuery, Millis, StoredDocument, UploadRecord, UploadStatus,
};

/// Keys of an event's detail that may quote a provider's answer or an error message, which
/// can carry the person's data (a provider echoing a name, a field value in a refusal).
const FREE_TEXT: [&str; 3] = ["error", "reason", "detail"];

/// What is left of a problem after erasure: its kind, none of its text.
const PROBLEM_KEPT: [&str; 4] = ["type", "status", "code", "title"];

/// An event detail without its free text; true when something was removed.
pub fn redact_detail(detail: Value) -> (Value, bool) {
    match detail {
        Value::Object(mut map) => {
            let mut changed = false;
            for key in FREE_TEXT {
                if map.remove(key).is_some() {
                    changed = true;
                }
            }
            if changed {
                map.insert("redacted".into(), Value::Bool(true));
            }
            (Value::Object(map), changed)
        }
        other => (other, false),
    }
}

fn redact_problem(problem: &Value) -> Value {
    let kept: Map<String, Value> = problem
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| PROBLEM_KEPT.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(kept)
}

/// The documents as a tombstone keeps them: slot, size, types, digests and spool keys; no
/// filename and no ZIP entry names (both chosen by the person, often their name).
fn redact_documents(docs: &[StoredDocument]) -> Vec<StoredDocument> {
    docs.iter()
        .map(|d| {
            let mut d = d.clone();
            d.meta.filename = None;
            d.meta.entries = None;
            d
        })
        .collect()
}

enum Arg {
    Text(String),
    Int(i64),
}

pub async fn list<C: Conn>(c: &mut C, q: &ListQuery) -> LedgerResult<Vec<UploadRecord>> {
    let mut args = vec![Arg::Text(q.tenant.clone())];
    let mut clauses = vec!["tenant = $1".to_owned()];
    fn push(clause: &str, arg: Arg, args: &mut Vec<Arg>, clauses: &mut Vec<String>) {
        args.push(arg);
        clauses.push(clause.replace('?', &format!("${}", args.len())));
    }
    if let Some(st) = q.status {
        let arg = Arg::Text(st.as_str().to_owned());
        push("status = ?", arg, &mut args, &mut clauses);
    }
    if let Some(p) = &q.provider {
        push(
            "provider = ?",
            Arg::Text(p.clone()),
            &mut args,
            &mut clauses,
        );
    }
    if let Some(t) = q.created_after {
        push("created_at >= ?", Arg::Int(t), &mut args, &mut clauses);
    }
    if let Some(t) = q.created_before {
        push("created_at < ?", Arg::Int(t), &mut args, &mut clauses);
    }
    if let Some((at, id)) = &q.after {
        // Keyset: strictly after the previous page's last item in (created_at, id)
        // descending order, so a page boundary never repeats or skips an item even when
        // uploads share a millisecond or new ones arrive meanwhile.
        args.push(Arg::Int(*at));
        let a = args.len();
        args.push(Arg::Text(id.clone()));
        let b = args.len();
        clauses.push(format!(
            "(created_at < ${a} OR (created_at = ${a} AND id < ${b}))"
        ));
    }
    args.push(Arg::Int(i64::from(q.limit)));
    let sql = format!(
        "SELECT {COLUMNS} FROM uploads WHERE {} ORDER BY created_at DESC, id DESC LIMIT ${}",
        clauses.join(" AND "),
        args.len()
    );
    let mut query = query(sql);
    for arg in args {
        query = match arg {
            Arg::Text(t) => query.bind(t),
            Arg::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(&mut *c).await?;
    rows.iter().map(decode).collect()
}

async fn select<C: Conn>(c: &mut C, id: &str) -> LedgerResult<Option<UploadRecord>> {
    let row = query(format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"))
        .bind(id.to_owned())
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| decode(&r)).transpose()
}

/// The upload as it now stands, which the write just made exist or found.
async fn reselect<C: Conn>(c: &mut C, id: &str) -> LedgerResult<UploadRecord> {
    select(c, id)
        .await?
        .ok_or_else(|| super::LedgerError::Corrupt(format!("upload {id} vanished in a write")))
}

pub async fn retry<C: Conn>(c: &mut C, id: String, now: Millis) -> LedgerResult<Control> {
    let Some(before) = select(c, &id).await? else {
        return Ok(Control::NotFound);
    };
    // The conditions are checked again by the UPDATE itself: on PostgreSQL another replica
    // may have changed the row since the SELECT.
    let done = query(
        "UPDATE uploads SET status = 'received', next_attempt_at = $2, attempts = 0, \
             problem = NULL, last_error = NULL, last_upstream_status = NULL, \
             provider_reference = NULL, delivered_at = NULL, cancel_requested = 0, \
             lease_owner = NULL, lease_until = NULL, series_started_at = $2, updated_at = $2, \
             notify_state = CASE WHEN notify_state = 'none' THEN 'none' ELSE 'pending' END, \
             notify_next_at = NULL, notify_attempts = 0 \
         WHERE id = $1 AND status IN ('failed', 'rejected') AND erased_at IS NULL \
           AND spool_removed = 0",
    )
    .bind(id.clone())
    .bind(now)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(Control::Refused(before));
    }
    let detail = json!({
        "from": before.status.as_str(),
        "previous_attempts": before.attempts,
    });
    add_event(c, &id, now, "retried", detail).await?;
    Ok(Control::Done(reselect(c, &id).await?))
}

/// End a pending upload now (not claimed by anyone). False when it was not pending.
async fn cancel_pending_now<C: Conn>(
    c: &mut C,
    id: &str,
    now: Millis,
    why: &str,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET status = 'canceled', next_attempt_at = NULL, updated_at = $2, \
             notify_next_at = $2 \
         WHERE id = $1 AND status IN ('received', 'retry_scheduled')",
    )
    .bind(id.to_owned())
    .bind(now)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    add_event(c, id, now, "canceled", json!({ "by": why })).await?;
    Ok(true)
}

/// Flag an upload whose attempt is in flight. False when it was not delivering.
async fn request_cancel<C: Conn>(
    c: &mut C,
    id: &str,
    now: Millis,
    why: &str,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET cancel_requested = 1, updated_at = $2 \
         WHERE id = $1 AND status = 'delivering' AND cancel_requested = 0",
    )
    .bind(id.to_owned())
    .bind(now)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    add_event(c, id, now, "cancel_requested", json!({ "by": why })).await?;
    Ok(true)
}

pub async fn cancel<C: Conn>(c: &mut C, id: String, now: Millis) -> LedgerResult<Control> {
    let Some(before) = select(c, &id).await? else {
        return Ok(Control::NotFound);
    };
    let done = match before.status {
        UploadStatus::Received | UploadStatus::RetryScheduled => {
            cancel_pending_now(c, &id, now, "operator").await?
        }
        // Asking twice is the same request: done, still waiting for the attempt.
        UploadStatus::Delivering => {
            before.cancel_requested || request_cancel(c, &id, now, "operator").await?
        }
        _ => false,
    };
    let after = reselect(c, &id).await?;
    Ok(if done {
        Control::Done(after)
    } else {
        Control::Refused(after)
    })
}

/// The lease holder `owner` holds a canceled upload (it must record and stop).
pub async fn cancel_pending<C: Conn>(c: &mut C, id: &str, owner: &str) -> LedgerResult<bool> {
    let row = query(
        "SELECT id FROM uploads WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' \
           AND cancel_requested = 1",
    )
    .bind(id.to_owned())
    .bind(owner.to_owned())
    .fetch_optional(&mut *c)
    .await?;
    Ok(row.is_some())
}

/// A canceled upload's lease holder is done with it: it ends `canceled`.
pub async fn settle_cancel<C: Conn>(
    c: &mut C,
    id: &str,
    owner: &str,
    now: Millis,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET status = 'canceled', lease_owner = NULL, lease_until = NULL, \
             next_attempt_at = NULL, updated_at = $3, notify_next_at = $3 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND cancel_requested = 1",
    )
    .bind(id.to_owned())
    .bind(owner.to_owned())
    .bind(now)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    add_event(c, id, now, "canceled", json!({ "after_attempt": true })).await?;
    Ok(true)
}

async fn settle_where<C: Conn>(
    c: &mut C,
    condition: &str,
    arg: Option<String>,
    now: Millis,
) -> LedgerResult<u64> {
    let sql = format!(
        "UPDATE uploads SET status = 'canceled', lease_owner = NULL, lease_until = NULL, \
             next_attempt_at = NULL, updated_at = $1, notify_next_at = $1 \
         WHERE status = 'delivering' AND cancel_requested = 1 AND {condition} RETURNING id"
    );
    let mut query = query(sql).bind(now);
    if let Some(arg) = arg {
        query = query.bind(arg);
    }
    let rows = query.fetch_all(&mut *c).await?;
    for row in &rows {
        let id: String = row.col("id")?;
        add_event(
            c,
            &id,
            now,
            "canceled",
            json!({ "after_attempt": "unrecorded" }),
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

/// Canceled uploads whose lease expired (the holder died): they end now.
pub async fn settle_expired_cancels<C: Conn>(c: &mut C, now: Millis) -> LedgerResult<u64> {
    settle_where(c, "lease_until < $1", None, now).await
}

/// Canceled uploads whose leases are handed back (shutdown): they end now.
pub async fn settle_released_cancels<C: Conn>(
    c: &mut C,
    owner_like: &str,
    now: Millis,
) -> LedgerResult<u64> {
    settle_where(c, "lease_owner LIKE $2", Some(owner_like.to_owned()), now).await
}

pub async fn erase<C: Conn>(
    c: &mut C,
    id: String,
    now: Millis,
) -> LedgerResult<Option<(UploadRecord, bool)>> {
    // Take the row's lock before reading it (PostgreSQL; SQLite's one writer runs writes one
    // at a time anyway): read unlocked, a retry committed between this read and the update
    // below would make the upload pending again after it was read final, and the erasure
    // would leave it queued — its documents sent after they were erased.
    query("UPDATE uploads SET updated_at = updated_at WHERE id = $1")
        .bind(id.clone())
        .execute(&mut *c)
        .await?;
    let Some(rec) = select(c, &id).await? else {
        return Ok(None);
    };
    if rec.erased_at.is_some() {
        return Ok(Some((rec, false)));
    }
    // Nothing more may be sent to the provider: a pending upload ends now, one in flight
    // after its attempt (whose outcome is then stored redacted, see `add_event`/`finish`).
    if !rec.status.is_terminal()
        && !cancel_pending_now(c, &id, now, "erasure").await?
        && !rec.cancel_requested
    {
        request_cancel(c, &id, now, "erasure").await?;
    }
    let documents = to_text(&redact_documents(&rec.documents))?;
    let problem = rec
        .problem
        .as_ref()
        .map(|p| to_text(&redact_problem(p)))
        .transpose()?;
    // The fingerprint hashes the metadata: with the digests kept, a guessed value could be
    // confirmed against it, so it goes too. The Idempotency-Key is the tenant's choice and
    // may name the person.
    query(
        "UPDATE uploads SET prepared = '{}', documents = $2, provider_reference = NULL, \
             problem = $3, last_error = NULL, idempotency_key = NULL, fingerprint = 'erased', \
             erased_at = $4, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(id.clone())
    .bind(documents)
    .bind(problem)
    .bind(now)
    .execute(&mut *c)
    .await?;
    let events = query("SELECT seq, detail FROM upload_events WHERE upload_id = $1")
        .bind(id.clone())
        .fetch_all(&mut *c)
        .await?;
    for row in &events {
        let seq: i64 = row.col("seq")?;
        let detail: Value = super::sql::json_col(row, "detail")?;
        let (redacted, changed) = redact_detail(detail);
        if changed {
            query("UPDATE upload_events SET detail = $3 WHERE upload_id = $1 AND seq = $2")
                .bind(id.clone())
                .bind(seq)
                .bind(to_text(&redacted)?)
                .execute(&mut *c)
                .await?;
        }
    }
    // An upload made through a session: the session holds the tenant's fields, and its
    // resumable uploads the browser's filenames and the checked documents' metadata.
    query(
        "UPDATE tus_uploads SET filename = NULL, filetype = NULL, meta = NULL \
         WHERE session_id IN (SELECT id FROM upload_sessions WHERE upload_id = $1)",
    )
    .bind(id.clone())
    .execute(&mut *c)
    .await?;
    query("UPDATE upload_sessions SET fields = '{}' WHERE upload_id = $1")
        .bind(id.clone())
        .execute(&mut *c)
        .await?;
    add_event(
        c,
        &id,
        now,
        "erased",
        json!({ "documents": rec.documents.len() }),
    )
    .await?;
    Ok(Some((reselect(c, &id).await?, true)))
}
