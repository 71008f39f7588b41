//! The ledger's upload sessions and resumable uploads: statements on one connection, so they
//! run in the SQLite writer's batches or a PostgreSQL transaction like every other write.

use super::db::{query, Conn, DbRow};
use docgate_core::spool::Piece;

use super::{
    sql::{json_col, to_text},
    DocumentMeta, LedgerError, LedgerResult, Millis, SessionRecord, SessionState, TusCreated,
    TusLock, TusRecord, TusState,
};

pub const SESSION_COLUMNS: &str = "id, tenant, provider, token_hash, fields, slots, max_bytes, \
    origin, state, upload_id, created_at, expires_at";

pub const TUS_COLUMNS: &str = "id, session_id, slot, length, received, filename, filetype, \
    pieces, state, meta, lock_owner, lock_until, created_at, updated_at";

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|x| u64::try_from(x).ok())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn decode_session(r: &impl DbRow) -> LedgerResult<SessionRecord> {
    let state: String = r.col("state")?;
    Ok(SessionRecord {
        id: r.col("id")?,
        tenant: r.col("tenant")?,
        provider: r.col("provider")?,
        token_hash: r.col("token_hash")?,
        fields: json_col(r, "fields")?,
        slots: json_col(r, "slots")?,
        max_bytes: opt_u64(r.col("max_bytes")?),
        origin: r.col("origin")?,
        state: SessionState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("session state `{state}`")))?,
        upload_id: r.col("upload_id")?,
        created_at: r.col("created_at")?,
        expires_at: r.col("expires_at")?,
    })
}

pub fn decode_tus(r: &impl DbRow) -> LedgerResult<TusRecord> {
    let state: String = r.col("state")?;
    let meta: Option<String> = r.col("meta")?;
    Ok(TusRecord {
        id: r.col("id")?,
        session_id: r.col("session_id")?,
        slot: r.col("slot")?,
        length: opt_u64(r.col("length")?),
        received: opt_u64(r.col("received")?).unwrap_or(0),
        filename: r.col("filename")?,
        filetype: r.col("filetype")?,
        pieces: json_col(r, "pieces")?,
        state: TusState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("tus state `{state}`")))?,
        meta: meta
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| LedgerError::Corrupt(format!("tus meta: {e}")))?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

pub async fn create_session<C: Conn>(c: &mut C, s: SessionRecord) -> LedgerResult<()> {
    let sql = format!(
        "INSERT INTO upload_sessions ({SESSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    query(sql)
        .bind(s.id)
        .bind(s.tenant)
        .bind(s.provider)
        .bind(s.token_hash)
        .bind(to_text(&s.fields)?)
        .bind(to_text(&s.slots)?)
        .bind(s.max_bytes.map(i64_of))
        .bind(s.origin)
        .bind(s.state.as_str())
        .bind(s.upload_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// `$first, $first+1, …`: the parameters of a `state IN (…)` list of `count` states.
fn state_params(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn session_state<C: Conn>(
    c: &mut C,
    id: String,
    from: Vec<SessionState>,
    to: SessionState,
) -> LedgerResult<bool> {
    let sql = format!(
        "UPDATE upload_sessions SET state = $2 WHERE id = $1 AND state IN ({})",
        state_params(3, from.len())
    );
    let mut q = query(sql).bind(id.clone()).bind(to.as_str());
    for st in from {
        q = q.bind(st.as_str());
    }
    let moved = q.execute(&mut *c).await?.rows_affected() == 1;
    if moved && to == SessionState::Revoked {
        forget_personal_data(c, id).await?;
    }
    Ok(moved)
}

/// A session that ends without an upload (revoked, expired) keeps no personal data: its
/// fields (a payto's receiver name, a user handle) and its documents' names and metadata
/// are cleared, as erasing an upload clears them. Nothing else could ever erase them: they
/// belong to no upload.
async fn forget_personal_data<C: Conn>(c: &mut C, session_id: String) -> LedgerResult<()> {
    query("UPDATE upload_sessions SET fields = '{}' WHERE id = $1")
        .bind(session_id.clone())
        .execute(&mut *c)
        .await?;
    query("UPDATE tus_uploads SET filename = NULL, meta = NULL WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Whether session `id` is in one of `states`, holding its row until the write ends (on
/// PostgreSQL the no-op update locks it; the SQLite writer runs one write at a time): a
/// write that depends on the session's state cannot interleave with a change of it.
async fn session_in<C: Conn>(c: &mut C, id: &str, states: &[SessionState]) -> LedgerResult<bool> {
    let sql = format!(
        "UPDATE upload_sessions SET state = state WHERE id = $1 AND state IN ({})",
        state_params(2, states.len())
    );
    let mut q = query(sql).bind(id.to_owned());
    for st in states {
        q = q.bind(st.as_str());
    }
    Ok(q.execute(&mut *c).await?.rows_affected() == 1)
}

/// A new resumable upload; false when the slot already has a live one in the session, or
/// the session no longer takes documents (not open).
pub async fn create_tus<C: Conn>(c: &mut C, t: TusRecord) -> LedgerResult<TusCreated> {
    if !session_in(c, &t.session_id, &[SessionState::Open]).await? {
        return Ok(TusCreated::SessionClosed);
    }
    let live = query(
        "SELECT id FROM tus_uploads WHERE session_id = $1 AND slot = $2 \
         AND state IN ('receiving', 'complete')",
    )
    .bind(t.session_id.clone())
    .bind(t.slot.clone())
    .fetch_optional(&mut *c)
    .await?;
    // A slot created this many times takes no new document: with one still live, the client
    // is pointed at it (`slot_taken`, Location) to resume it; with none, refused.
    let made: i64 =
        query("SELECT COUNT(*) AS n FROM tus_uploads WHERE session_id = $1 AND slot = $2")
            .bind(t.session_id.clone())
            .bind(t.slot.clone())
            .fetch_one(&mut *c)
            .await?
            .col("n")?;
    let limit = super::MAX_TUS_CREATIONS_PER_SLOT;
    if made >= i64::from(limit) {
        return Ok(match live {
            Some(row) => TusCreated::SlotTaken { id: row.col("id")? },
            None => TusCreated::TooMany { limit },
        });
    }
    let mut replaced = None;
    if let Some(row) = live {
        let id: String = row.col("id")?;
        // Still receiving and no PATCH writing to it: the browser lost it (its creation's
        // answer never arrived) or starts the document over. Conditional, as a PATCH's lock
        // may have committed since the read above.
        let sql = format!(
            "UPDATE tus_uploads SET state = 'terminated', lock_owner = NULL, lock_until = NULL, \
                 updated_at = $2 \
             WHERE id = $1 AND state = 'receiving' AND (lock_until IS NULL OR lock_until <= $2) \
             RETURNING {TUS_COLUMNS}"
        );
        match query(sql)
            .bind(id.clone())
            .bind(t.created_at)
            .fetch_optional(&mut *c)
            .await?
        {
            Some(row) => replaced = Some(decode_tus(&row)?),
            None => return Ok(TusCreated::SlotTaken { id }),
        }
    }
    let sql = format!(
        "INSERT INTO tus_uploads ({TUS_COLUMNS}) \
         VALUES ($1, $2, $3, $4, 0, $5, $6, '[]', 'receiving', NULL, NULL, NULL, $7, $7)"
    );
    query(sql)
        .bind(t.id)
        .bind(t.session_id)
        .bind(t.slot)
        .bind(t.length.map(i64_of))
        .bind(t.filename)
        .bind(t.filetype)
        .bind(t.created_at)
        .execute(&mut *c)
        .await?;
    Ok(TusCreated::Created { replaced })
}

/// Take the PATCH lock if the client's offset is the upload's and nobody else holds it.
pub async fn lock_tus<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    until: Millis,
    offset: u64,
    now: Millis,
) -> LedgerResult<TusLock> {
    let sql = format!("SELECT {TUS_COLUMNS} FROM tus_uploads WHERE id = $1");
    let Some(row) = query(sql).bind(id.clone()).fetch_optional(&mut *c).await? else {
        return Ok(TusLock::Gone);
    };
    let rec = decode_tus(&row)?;
    let holder: Option<String> = row.col("lock_owner")?;
    let held_until: Option<Millis> = row.col("lock_until")?;
    if rec.state != TusState::Receiving {
        return Ok(TusLock::Gone);
    }
    if !session_in(c, &rec.session_id, &[SessionState::Open]).await? {
        return Ok(TusLock::SessionClosed);
    }
    if holder.is_some() && held_until.is_some_and(|u| u >= now) {
        return Ok(TusLock::Busy);
    }
    if rec.received != offset {
        return Ok(TusLock::Offset {
            received: rec.received,
        });
    }
    // Taken only if still free at this offset: on PostgreSQL the row read above may be
    // older than a lock another request took meanwhile (the read does not wait for it).
    let taken = query(
        "UPDATE tus_uploads SET lock_owner = $2, lock_until = $3 WHERE id = $1 \
         AND received = $4 AND state = 'receiving' \
         AND (lock_owner IS NULL OR lock_until IS NULL OR lock_until < $5)",
    )
    .bind(id)
    .bind(owner)
    .bind(until)
    .bind(i64_of(offset))
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(if taken.rows_affected() == 1 {
        TusLock::Taken
    } else {
        TusLock::Busy
    })
}

pub async fn renew_tus<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    until: Millis,
) -> LedgerResult<bool> {
    let done = query("UPDATE tus_uploads SET lock_until = $3 WHERE id = $1 AND lock_owner = $2")
        .bind(id)
        .bind(owner)
        .bind(until)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A committed piece joins the upload (and, with `meta`, completes it); the lock is released.
/// False when the lock was lost, the upload ended meanwhile (terminated, or its session
/// revoked or expired while the piece streamed), or the session was accepted without it.
#[allow(clippy::too_many_arguments)]
pub async fn add_piece<C: Conn>(
    c: &mut C,
    id: String,
    owner: String,
    piece: Option<Piece>,
    length: Option<u64>,
    meta: Option<DocumentMeta>,
    now: Millis,
) -> LedgerResult<bool> {
    let sql = format!("SELECT {TUS_COLUMNS} FROM tus_uploads WHERE id = $1 AND lock_owner = $2");
    let Some(row) = query(sql)
        .bind(id.clone())
        .bind(owner.clone())
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(false);
    };
    let mut rec = decode_tus(&row)?;
    let session_takes_it = session_in(
        c,
        &rec.session_id,
        &[SessionState::Open, SessionState::Completing],
    )
    .await?;
    if rec.state != TusState::Receiving || !session_takes_it {
        return Ok(false);
    }
    if let Some(p) = piece {
        rec.received += p.len;
        rec.pieces.push(p);
    }
    let state = if meta.is_some() {
        TusState::Complete
    } else {
        TusState::Receiving
    };
    let done = query(
        "UPDATE tus_uploads SET received = $3, pieces = $4, length = COALESCE(length, $5), \
             state = $6, meta = $7, lock_owner = NULL, lock_until = NULL, updated_at = $8 \
         WHERE id = $1 AND lock_owner = $2 AND state = 'receiving'",
    )
    .bind(id)
    .bind(owner)
    .bind(i64_of(rec.received))
    .bind(to_text(&rec.pieces)?)
    .bind(length.map(i64_of))
    .bind(state.as_str())
    .bind(meta.as_ref().map(to_text).transpose()?)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn unlock_tus<C: Conn>(c: &mut C, id: String, owner: String) -> LedgerResult<()> {
    query(
        "UPDATE tus_uploads SET lock_owner = NULL, lock_until = NULL WHERE id = $1 AND lock_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// End an upload (terminated by the client, refused for its bytes, its session revoked);
/// returns it as it was, so its pieces can be removed. `None` when it is unknown or already
/// ended, or — with `only_while_open`, a client's termination — when its session is no
/// longer open: a document a session's acceptance has taken must keep its bytes.
pub async fn end_tus<C: Conn>(
    c: &mut C,
    id: String,
    state: TusState,
    only_while_open: bool,
    now: Millis,
) -> LedgerResult<Option<TusRecord>> {
    let sql = format!(
        "SELECT {TUS_COLUMNS} FROM tus_uploads WHERE id = $1 AND state IN ('receiving', 'complete')"
    );
    let Some(row) = query(sql).bind(id.clone()).fetch_optional(&mut *c).await? else {
        return Ok(None);
    };
    let rec = decode_tus(&row)?;
    if only_while_open && !session_in(c, &rec.session_id, &[SessionState::Open]).await? {
        return Ok(None);
    }
    // Conditional, and the pieces as the write leaves them: on PostgreSQL the row read above
    // may predate a piece recorded (or an end) that committed meanwhile.
    let sql = format!(
        "UPDATE tus_uploads SET state = $2, lock_owner = NULL, lock_until = NULL, updated_at = $3 \
         WHERE id = $1 AND state IN ('receiving', 'complete') RETURNING {TUS_COLUMNS}"
    );
    let Some(row) = query(sql)
        .bind(id)
        .bind(state.as_str())
        .bind(now)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(TusRecord {
        state: rec.state,
        ..decode_tus(&row)?
    }))
}

/// Open sessions past their expiry: marked expired, returned with their documents' pieces
/// (for the sweeper to remove).
pub async fn expire_sessions<C: Conn>(
    c: &mut C,
    now: Millis,
    limit: u32,
) -> LedgerResult<Vec<(SessionRecord, Vec<TusRecord>)>> {
    // A session left `completing` by a replica that died has no upload (acceptance and the
    // upload's record are one write): it expires too, an hour late, so an acceptance still
    // running elsewhere is never cut.
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM upload_sessions \
         WHERE (state = 'open' AND expires_at <= $1) OR (state = 'completing' AND expires_at <= $3) \
         ORDER BY expires_at LIMIT $2"
    );
    let rows = query(sql)
        .bind(now)
        .bind(i64::from(limit))
        .bind(now.saturating_sub(ABANDONED_COMPLETION_MS))
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let session = decode_session(&row)?;
        let docs = session_documents(c, session.id.clone()).await?;
        query("UPDATE upload_sessions SET state = 'expired' WHERE id = $1")
            .bind(session.id.clone())
            .execute(&mut *c)
            .await?;
        query(
            "UPDATE tus_uploads SET state = 'terminated', lock_owner = NULL, lock_until = NULL, \
                 updated_at = $2 \
             WHERE session_id = $1 AND state IN ('receiving', 'complete')",
        )
        .bind(session.id.clone())
        .bind(now)
        .execute(&mut *c)
        .await?;
        forget_personal_data(c, session.id.clone()).await?;
        out.push((session, docs));
    }
    Ok(out)
}

/// How long past its expiry a session still `completing` is taken for abandoned.
const ABANDONED_COMPLETION_MS: Millis = 3_600_000;

/// Sessions left `completing` by the process before this one (a single replica's restart):
/// open again, so the browser can complete them. They have no upload: acceptance and the
/// upload's record are one write.
pub async fn reopen_abandoned<C: Conn>(c: &mut C) -> LedgerResult<u64> {
    let done = query("UPDATE upload_sessions SET state = 'open' WHERE state = 'completing'")
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected())
}

pub async fn session_documents<C: Conn>(
    c: &mut C,
    session_id: String,
) -> LedgerResult<Vec<TusRecord>> {
    let sql = format!(
        "SELECT {TUS_COLUMNS} FROM tus_uploads WHERE session_id = $1 ORDER BY created_at, id"
    );
    let rows = query(sql).bind(session_id).fetch_all(&mut *c).await?;
    rows.iter().map(decode_tus).collect()
}
