//! The ledger's writes, as statements on one connection inside a transaction (the SQLite
//! writer's batch, or a PostgreSQL transaction). Each function takes owned arguments so it
//! can be queued; each records what it changed in the upload's history in the same
//! transaction, so the history never disagrees with the state.

use super::db::{query, Conn, DbRow};
use serde_json::{json, Value};

use super::{
    sql::{decode, to_text, Dialect, COLUMNS, TERMINAL},
    AttemptRecord, Finish, Inserted, LedgerError, LedgerResult, Millis, NewUpload, NotifyState,
    Reschedule, UploadRecord, UploadStatus,
};
use docgate_core::OwnedRef;

/// Append an event to an upload's history (numbered under the upload row's lock).
pub async fn add_event<C: Conn>(
    c: &mut C,
    id: &str,
    at: Millis,
    kind: &str,
    detail: Value,
) -> LedgerResult<()> {
    let row = query(
        "UPDATE uploads SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq, erased_at",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let seq: i64 = row.col("event_seq")?;
    let erased: Option<Millis> = row.col("erased_at")?;
    insert_events(c, id, at, [(seq, kind, detail)], erased.is_some()).await
}

/// Write events of an upload's history in one statement (one round trip to PostgreSQL), each
/// with the number the caller took for it from the upload row's `event_seq`, under the row's
/// lock.
async fn insert_events<C: Conn, const N: usize>(
    c: &mut C,
    id: &str,
    at: Millis,
    events: [(i64, &str, Value); N],
    erased: bool,
) -> LedgerResult<()> {
    let rows: Vec<String> = (0..N)
        .map(|i| {
            let p = 2 + 3 * i;
            format!("($1, ${p}, ${at}, ${}, ${})", p + 1, p + 2, at = 2 + 3 * N)
        })
        .collect();
    let mut q = query(format!(
        "INSERT INTO upload_events (upload_id, seq, at, kind, detail) VALUES {}",
        rows.join(", ")
    ))
    .bind(id.to_owned());
    for (seq, kind, detail) in events {
        // An attempt in flight when the upload was erased still ends and is recorded; what
        // the provider said about it may quote the documents' content or the person.
        let detail = if erased {
            super::sql_ops::redact_detail(detail).0
        } else {
            detail
        };
        q = q.bind(seq).bind(kind.to_owned()).bind(to_text(&detail)?);
    }
    q.bind(at).execute(&mut *c).await?;
    Ok(())
}

fn attempt_detail(a: &AttemptRecord) -> LedgerResult<Value> {
    serde_json::to_value(a).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

pub async fn insert<C: Conn>(c: &mut C, new: NewUpload) -> LedgerResult<Inserted> {
    // The customers first, in the same write: no extra trip to the ledger per upload.
    for (i, s) in new.subjects.iter().enumerate() {
        let mine = if s.claim {
            claim_ref(
                c,
                new.tenant.clone(),
                new.provider.clone(),
                s.subject.clone(),
                "upload".into(),
                new.now,
            )
            .await?
        } else {
            owner_of(c, &new.provider, &s.subject)
                .await?
                .is_none_or(|owner| owner == new.tenant)
        };
        if !mine {
            return Ok(Inserted::NotOwner(i));
        }
    }
    let (status, next_at, owner, until) = match &new.lease {
        Some(l) => (
            UploadStatus::Delivering,
            None,
            Some(l.owner.clone()),
            Some(l.until),
        ),
        None => (UploadStatus::Received, Some(new.now), None, None),
    };
    let notify = if new.notify {
        NotifyState::Pending
    } else {
        NotifyState::None
    };
    let sql = format!(
        "INSERT INTO uploads ({COLUMNS}, event_seq) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $14, $9, $10, $11, NULL, NULL, NULL, NULL, $12, $12, NULL, $13, 0, NULL, 0, NULL, 0, NULL, 1) \
         ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING {COLUMNS}"
    );
    let inserted = query(sql)
        .bind(new.id.clone())
        .bind(new.tenant.clone())
        .bind(new.provider.clone())
        .bind(new.idempotency_key.clone())
        .bind(new.fingerprint.clone())
        .bind(status.as_str())
        .bind(to_text(&new.prepared.0)?)
        .bind(to_text(&new.documents)?)
        .bind(next_at)
        .bind(owner)
        .bind(until)
        .bind(new.now)
        .bind(notify.as_str())
        .bind(i64::from(new.lease.is_some() && new.first_attempt))
        .fetch_optional(&mut *c)
        .await?;
    if let Some(row) = inserted {
        let bytes: u64 = new.documents.iter().map(|d| d.meta.size).sum();
        let detail = json!({ "documents": new.documents.len(), "bytes": bytes });
        // Event 1, numbered by the insert itself.
        insert_events(c, &new.id, new.now, [(1, "received", detail)], false).await?;
        if let Some(session) = &new.session {
            let accepted = query("UPDATE upload_sessions SET state = 'accepted' WHERE id = $1 AND state = 'completing'")
                .bind(session.clone())
                .execute(&mut *c)
                .await?;
            // The request no longer holds its session (handed back when its client went
            // away): the upload is not recorded, the session stays as it is.
            if accepted.rows_affected() != 1 {
                return Err(LedgerError::SessionNotHeld);
            }
        }
        return Ok(Inserted::New(decode(&row)?));
    }
    let key = new
        .idempotency_key
        .ok_or_else(|| LedgerError::Corrupt(format!("upload id {} already exists", new.id)))?;
    let sql = format!("SELECT {COLUMNS} FROM uploads WHERE tenant = $1 AND idempotency_key = $2");
    let row = query(sql)
        .bind(new.tenant)
        .bind(key)
        .fetch_one(&mut *c)
        .await?;
    Ok(Inserted::Existing(decode(&row)?))
}

pub async fn claim_due<C: Conn>(
    c: &mut C,
    dialect: Dialect,
    owner: String,
    until: Millis,
    now: Millis,
    limit: u32,
    providers: Vec<String>,
) -> LedgerResult<Vec<UploadRecord>> {
    // Only providers this replica can deliver to: during a rolling change of the provider
    // list, a replica must not take (and fail) work it cannot do.
    // A canceled upload whose lease holder died mid-attempt: nobody will record that attempt
    // now, so it ends here instead of being claimed again.
    super::sql_ops::settle_expired_cancels(c, now).await?;
    let list: Vec<String> = (0..providers.len())
        .map(|i| format!("${}", i + 5))
        .collect();
    let sql = format!(
        "UPDATE uploads SET status = 'delivering', lease_owner = $1, lease_until = $2, updated_at = $3 \
         WHERE id IN (SELECT id FROM uploads \
             WHERE ((status IN ('received', 'retry_scheduled') AND next_attempt_at <= $3) \
                OR (status = 'delivering' AND lease_until < $3 AND cancel_requested = 0)) \
               AND provider IN ({}) AND erased_at IS NULL \
             ORDER BY next_attempt_at LIMIT $4 {}) \
         RETURNING {COLUMNS}",
        list.join(", "),
        dialect.claim_lock()
    );
    let mut query = query(sql)
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(i64::from(limit));
    for p in providers {
        query = query.bind(p);
    }
    let rows = query.fetch_all(&mut *c).await?;
    rows.iter().map(decode).collect()
}

pub async fn renew<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    until: Millis,
    now: Millis,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET lease_until = $3 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND lease_until >= $4",
    )
    .bind(id)
    .bind(owner)
    .bind(until)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn start_attempt<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    until: Millis,
    now: Millis,
) -> LedgerResult<Option<u32>> {
    let row = query(
        "UPDATE uploads SET attempts = attempts + 1, lease_until = $3, updated_at = $4 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND lease_until >= $4 \
           AND cancel_requested = 0 \
         RETURNING attempts",
    )
    .bind(id.clone())
    .bind(owner.clone())
    .bind(until)
    .bind(now)
    .fetch_optional(&mut *c)
    .await?;
    Ok(match row {
        Some(r) => Some(u32::try_from(r.col::<i64>("attempts")?).unwrap_or(u32::MAX)),
        None => {
            // Canceled since the last attempt: no further one; the lease ends here.
            super::sql_ops::settle_cancel(c, &id, &owner, now).await?;
            None
        }
    })
}

pub async fn finish<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    f: Finish,
) -> LedgerResult<Option<UploadRecord>> {
    let delivered_at =
        matches!(f.status, UploadStatus::Delivered | UploadStatus::Duplicate).then_some(f.now);
    // The attempt (if any) and the outcome are numbered by this same statement.
    let events = 1 + i64::from(f.attempt.is_some());
    let row = query(format!(
        "UPDATE uploads SET status = $3, \
             provider_reference = CASE WHEN erased_at IS NULL THEN $4 ELSE NULL END, \
             problem = CASE WHEN erased_at IS NULL THEN $5 ELSE NULL END, \
             last_upstream_status = COALESCE($6, last_upstream_status), delivered_at = $7, \
             lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = $8, \
             notify_next_at = $8, event_seq = event_seq + $9 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' \
         RETURNING {COLUMNS}, event_seq"
    ))
    .bind(id.clone())
    .bind(owner)
    .bind(f.status.as_str())
    .bind(f.provider_reference.as_ref().map(to_text).transpose()?)
    .bind(f.problem.as_ref().map(to_text).transpose()?)
    .bind(f.upstream_status.map(i64::from))
    .bind(delivered_at)
    .bind(f.now)
    .bind(events)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let done = decode(&row)?;
    let last: i64 = row.col("event_seq")?;
    let erased = done.erased_at.is_some();
    for r in &f.owned {
        insert_owned(c, &done.tenant, &done.provider, r, &id, f.now).await?;
    }
    let code = f.problem.as_ref().and_then(|p| p.get("code").cloned());
    let outcome = (
        last,
        f.status.as_str(),
        json!({ "upstream_status": f.upstream_status, "code": code }),
    );
    match &f.attempt {
        Some(a) => {
            let attempt = (last - 1, "attempt", attempt_detail(a)?);
            insert_events(c, &id, f.now, [attempt, outcome], erased).await?;
        }
        None => insert_events(c, &id, f.now, [outcome], erased).await?,
    }
    Ok(Some(done))
}

pub async fn reschedule<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    r: Reschedule,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET status = 'retry_scheduled', next_attempt_at = $3, \
             last_error = CASE WHEN erased_at IS NULL THEN $4 ELSE NULL END, \
             last_upstream_status = COALESCE($5, last_upstream_status), lease_owner = NULL, \
             lease_until = NULL, updated_at = $6, attempts = attempts - $7 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering' AND cancel_requested = 0",
    )
    .bind(id.clone())
    .bind(owner.clone())
    .bind(r.next_at)
    .bind(r.reason.clone())
    .bind(r.upstream_status.map(i64::from))
    .bind(r.now)
    // An attempt that is not counted gives back the number it took.
    .bind(i64::from(r.attempt.as_ref().is_some_and(|a| a.not_counted)))
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        // Canceled while this attempt ran: it is recorded, and it was the last.
        if !super::sql_ops::cancel_pending(c, &id, &owner).await? {
            return Ok(false);
        }
        if let Some(a) = &r.attempt {
            add_event(c, &id, r.now, "attempt", attempt_detail(a)?).await?;
        }
        return super::sql_ops::settle_cancel(c, &id, &owner, r.now).await;
    }
    if let Some(a) = &r.attempt {
        add_event(c, &id, r.now, "attempt", attempt_detail(a)?).await?;
    }
    let detail = json!({ "next_attempt_at": r.next_at, "reason": r.reason });
    add_event(c, &id, r.now, "retry_scheduled", detail).await?;
    Ok(true)
}

pub async fn record_attempt<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    a: AttemptRecord,
    now: Millis,
) -> LedgerResult<bool> {
    let row = query(
        "SELECT cancel_requested FROM uploads \
         WHERE id = $1 AND lease_owner = $2 AND status = 'delivering'",
    )
    .bind(id.clone())
    .bind(owner.clone())
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    add_event(c, &id, now, "attempt", attempt_detail(&a)?).await?;
    if row.col::<i64>("cancel_requested")? != 0 {
        // Canceled while this attempt ran: it was the last one. The caller stops as it
        // would after losing its lease.
        super::sql_ops::settle_cancel(c, &id, &owner, now).await?;
        return Ok(false);
    }
    Ok(true)
}

/// Hand leases back (`owner_like` `%` matches every owner): due again at once.
pub async fn release<C: Conn>(c: &mut C, owner_like: String, now: Millis) -> LedgerResult<u64> {
    // Canceled ones end instead of becoming due again.
    let canceled = super::sql_ops::settle_released_cancels(c, &owner_like, now).await?;
    let done = query(
        "UPDATE uploads SET status = 'retry_scheduled', next_attempt_at = $2, lease_owner = NULL, \
             lease_until = NULL, updated_at = $2 \
         WHERE lease_owner LIKE $1 AND status = 'delivering'",
    )
    .bind(owner_like.clone())
    .bind(now)
    .execute(&mut *c)
    .await?;
    // A browser's PATCH that died with its process: its upload is resumable at once, not
    // after the lock's 30 s (the piece it was writing was never recorded).
    query("UPDATE tus_uploads SET lock_owner = NULL, lock_until = NULL WHERE lock_owner LIKE $1")
        .bind(owner_like)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() + canceled)
}

pub async fn claim_notifications<C: Conn>(
    c: &mut C,
    dialect: Dialect,
    now: Millis,
    hold_until: Millis,
    limit: u32,
) -> LedgerResult<Vec<UploadRecord>> {
    let sql = format!(
        "UPDATE uploads SET notify_next_at = $2 \
         WHERE id IN (SELECT id FROM uploads \
             WHERE notify_state = 'pending' AND status IN {TERMINAL} AND notify_next_at <= $1 \
             ORDER BY notify_next_at LIMIT $3 {}) \
         RETURNING {COLUMNS}",
        dialect.claim_lock()
    );
    let rows = query(sql)
        .bind(now)
        .bind(hold_until)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(decode).collect()
}

/// Record a notification's result — only while the claim it was sent under still stands
/// (`notify_next_at` is still the claim's hold). An operator's retry while it was being sent
/// starts a new series (`pending`, no hold): the old result must not end that series' own
/// notification. False when it no longer stood.
pub async fn notification_done<C: Conn>(
    c: &mut C,
    id: String,
    claimed_until: Millis,
    state: NotifyState,
    next_at: Option<Millis>,
    now: Millis,
) -> LedgerResult<bool> {
    let done = query(
        "UPDATE uploads SET notify_state = $2, notify_next_at = $3, notify_attempts = notify_attempts + 1, \
             updated_at = $4 WHERE id = $1 AND notify_state = 'pending' AND notify_next_at = $5",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(next_at)
    .bind(now)
    .bind(claimed_until)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_spool_removed<C: Conn>(c: &mut C, ids: Vec<String>) -> LedgerResult<()> {
    // Lists of 1, 2, 4 … 64 ids (the last one repeated up to the size): a few statements for
    // the connections' caches to keep, not one per length.
    for chunk in ids.chunks(64) {
        let Some(last) = chunk.last() else { continue };
        let size = chunk.len().next_power_of_two();
        let params: Vec<String> = (1..=size).map(|i| format!("${i}")).collect();
        let mut q = query(format!(
            "UPDATE uploads SET spool_removed = 1 WHERE id IN ({})",
            params.join(", ")
        ));
        for i in 0..size {
            q = q.bind(chunk.get(i).unwrap_or(last).clone());
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// Record `tenant` as the owner of `subject` unless someone already is; true when this
/// made it the owner.
pub async fn insert_owned<C: Conn>(
    c: &mut C,
    tenant: &str,
    provider: &str,
    subject: &OwnedRef,
    source: &str,
    now: Millis,
) -> LedgerResult<bool> {
    let inserted = query(
        "INSERT INTO owned_refs (provider, kind, value, tenant, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING tenant",
    )
    .bind(provider.to_owned())
    .bind(subject.kind.clone())
    .bind(subject.value.clone())
    .bind(tenant.to_owned())
    .bind(source.to_owned())
    .bind(now)
    .fetch_optional(&mut *c)
    .await?;
    Ok(inserted.is_some())
}

pub async fn owner_of<C: Conn>(
    c: &mut C,
    provider: &str,
    subject: &OwnedRef,
) -> LedgerResult<Option<String>> {
    let row =
        query("SELECT tenant FROM owned_refs WHERE provider = $1 AND kind = $2 AND value = $3")
            .bind(provider.to_owned())
            .bind(subject.kind.clone())
            .bind(subject.value.clone())
            .fetch_optional(&mut *c)
            .await?;
    row.map(|r| r.col("tenant")).transpose()
}

pub async fn claim_ref<C: Conn>(
    c: &mut C,
    tenant: String,
    provider: String,
    subject: OwnedRef,
    source: String,
    now: Millis,
) -> LedgerResult<bool> {
    // A new subject (the usual case) is settled by the insert alone.
    if insert_owned(c, &tenant, &provider, &subject, &source, now).await? {
        return Ok(true);
    }
    let owner = owner_of(c, &provider, &subject).await?;
    Ok(owner.as_deref() == Some(tenant.as_str()))
}

/// See [`super::Ledger::fail_stranded`]. A provider removed from every replica's
/// configuration leaves its uploads unclaimed for ever — their personal data too; once they
/// are older than the give-up age, no replica is coming for them.
pub async fn fail_stranded<C: Conn>(
    c: &mut C,
    known: Vec<String>,
    before: Millis,
    now: Millis,
) -> LedgerResult<u64> {
    let unknown = if known.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = (0..known.len()).map(|i| format!("${}", i + 4)).collect();
        format!("AND provider NOT IN ({}) ", list.join(", "))
    };
    let sql = format!(
        "UPDATE uploads SET status = 'failed', \
             problem = CASE WHEN erased_at IS NULL THEN $3 ELSE NULL END, \
             lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = $2, \
             notify_next_at = $2 \
         WHERE (status IN ('received', 'retry_scheduled') \
                OR (status = 'delivering' AND lease_until < $2)) \
           {unknown}AND COALESCE(series_started_at, created_at) < $1 \
         RETURNING id, provider"
    );
    let problem = docgate_core::Problem::new(
        http::StatusCode::BAD_GATEWAY,
        "delivery_failed",
        "Delivery failed",
    )
    .with_side(docgate_core::Side::Upstream)
    .with_detail(
        "no replica delivers to this upload's provider (it was removed from the configuration) \
         and the upload is past its give-up age",
    )
    .to_json();
    let mut q = query(sql).bind(before).bind(now).bind(to_text(&problem)?);
    for p in known {
        q = q.bind(p);
    }
    let rows = q.fetch_all(&mut *c).await?;
    for row in &rows {
        let id: String = row.col("id")?;
        add_event(
            c,
            &id,
            now,
            "failed",
            json!({ "upstream_status": null, "code": "delivery_failed" }),
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

pub async fn release_ref<C: Conn>(
    c: &mut C,
    tenant: String,
    provider: String,
    subject: OwnedRef,
) -> LedgerResult<()> {
    query(
        "DELETE FROM owned_refs WHERE provider = $1 AND kind = $2 AND value = $3 AND tenant = $4",
    )
    .bind(provider)
    .bind(subject.kind)
    .bind(subject.value)
    .bind(tenant)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn record_event<C: Conn>(
    c: &mut C,
    e: docgate_core::ProviderEvent,
) -> LedgerResult<bool> {
    let done = query(
        "INSERT INTO provider_events (provider, event_id, name, received_at, payload, subject_kind, subject) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(e.provider)
    .bind(e.event_id)
    .bind(e.name)
    .bind(e.received_at)
    .bind(to_text(&e.payload)?)
    .bind(e.subject.as_ref().map(|s| s.kind.clone()))
    .bind(e.subject.map(|s| s.value))
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}
