//! `PATCH /v1/tus/{id}`: more bytes of a document, at the offset the server has.
//!
//! 1. the lock: taken in the ledger with the client's `Upload-Offset` (409 when another
//!    PATCH holds it, anywhere, or when the offset is not the upload's), renewed while the
//!    body streams;
//! 2. the body streams into a new piece (a spool object of its own), counted against the
//!    document's limit, its first bytes sniffed, hashed with the client's `Upload-Checksum`;
//! 3. a mismatch deletes the piece: 460, and the offset has not moved. Otherwise the piece is
//!    added to the document's digests and scan, and recorded — the answer (204 and the new
//!    offset) comes only once it is durable in the spool and the ledger;
//! 4. the last piece completes the document (all checks that need it whole), and a session
//!    with nothing else to wait for is delivered.
//!
//! The document's digest state between PATCHes is kept in [`Assemblies`] (bounded); a
//! gateway without it — restarted, or another replica — rebuilds it from the pieces.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use axum::{
    body::{Body, BodyDataStream},
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use docgate_core::{
    resume::{receive_piece, Assembly, ChecksumAlgorithm, PieceChecksum, PieceError},
    spool::Piece,
    IngestError, Problem,
};
use http::{header, HeaderMap, StatusCode};

use super::{check_version, number, own_upload, tus_headers, Result, OFFSET_CONTENT_TYPE};
use crate::{
    app::AppState,
    body::{FaultCell, GuardedBody},
    host::ledger_problem,
    ledger::{now_ms, SessionRecord, TusLock, TusRecord, TusState},
    sessions::{check_usable, Uploader},
    spool_keys,
};

/// How long a PATCH's lock lasts unless renewed (a crashed replica's lock frees itself).
const LOCK: Duration = Duration::from_secs(30);

/// Document states kept between PATCHes at most (the rest are rebuilt when needed).
const KEPT: usize = 256;

/// The digest and scan state of documents being received, by tus upload id, with the
/// offset each is at. A state behind the ledger's offset (another replica took the PATCHes
/// since) is brought forward from the pieces recorded after it; one ahead of it is stale.
#[derive(Debug, Default)]
pub struct Assemblies {
    inner: Mutex<Kept>,
}

/// States by upload id (with their offsets), and the ids oldest first for eviction: each id
/// kept is in the list once (a document's every PATCH takes its state and puts it back).
type Kept = (HashMap<String, (u64, Assembly)>, VecDeque<String>);

impl Assemblies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the state of `id` if it is at `offset` or before it.
    fn take(&self, id: &str, offset: u64) -> Option<Assembly> {
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        let taken = map.remove(id)?;
        order.retain(|k| k != id);
        match taken {
            (at, a) if at <= offset => Some(a),
            _ => None,
        }
    }

    fn put(&self, id: &str, assembly: Assembly) {
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        if map
            .insert(id.to_owned(), (assembly.len(), assembly))
            .is_some()
        {
            order.retain(|k| k != id);
        }
        order.push_back(id.to_owned());
        while map.len() > KEPT {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        let (map, order) = &mut *inner;
        if map.remove(id).is_some() {
            order.retain(|k| k != id);
        }
    }
}

/// The gateway's document states.
pub fn assemblies(app: &AppState) -> &Assemblies {
    &app.assemblies
}

/// `Upload-Checksum: <algorithm> <base64>`: 400 for an algorithm this server does not speak.
pub fn checksum(headers: &HeaderMap) -> Result<Option<PieceChecksum>> {
    let Some(raw) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| Problem::bad_request("Upload-Checksum is not ASCII"))?;
    let (name, value) = raw
        .trim()
        .split_once(' ')
        .ok_or_else(|| Problem::bad_request("Upload-Checksum is `<algorithm> <base64>`"))?;
    let algorithm = ChecksumAlgorithm::parse(name).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "checksum_algorithm_unsupported",
            "Checksum algorithm not supported",
        )
        .with_detail(format!("`{name}`; this server speaks {}", super::CHECKSUMS))
    })?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| Problem::bad_request("the Upload-Checksum value is not base64"))?;
    Ok(Some(PieceChecksum {
        algorithm,
        expected,
    }))
}

pub async fn patch(
    State(app): State<AppState>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    let session = who.session()?.clone();
    check_usable(&session, now_ms())?;
    let is_offset_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == OFFSET_CONTENT_TYPE.as_bytes());
    if !is_offset_stream {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail(format!("a PATCH body is {OFFSET_CONTENT_TYPE}")));
    }
    let offset = number(&headers, "upload-offset")?
        .ok_or_else(|| Problem::bad_request("Upload-Offset is required"))?;
    let rec = own_upload(&app, &session, &id).await?;
    let received = receive(&app, &session, &rec, offset, &headers, body).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        "upload-offset",
        http::HeaderValue::from_str(&received.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("0")),
    );
    tus_headers(&mut res);
    Ok(res)
}

/// Receive one piece of `rec` at `offset` (PATCH, or creation-with-upload): returns the new
/// offset, once the piece is durable and recorded.
pub async fn receive(
    app: &AppState,
    session: &SessionRecord,
    rec: &TusRecord,
    offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64> {
    let checksum = checksum(headers)?;
    let declared_length = number(headers, "upload-length")?;
    let length = upload_length(rec.length, declared_length)?;
    let max = super::max_bytes(app, session)?;
    if let Some(len) = length {
        // An offset that is not the upload's is answered 409 by the lock below: the
        // length is only judged against bytes really received.
        if len < offset && offset == rec.received {
            return Err(Problem::bad_request(format!(
                "Upload-Length {len} is below the {offset} bytes already received"
            )));
        }
        if len > max {
            return Err(Problem::payload_too_large(
                max,
                "the document (by its Upload-Length)",
            ));
        }
    }
    // A browser's PATCH takes upload slots and draws on the storage budget like any upload,
    // before it takes the lock (a refused PATCH leaves the upload resumable).
    let permit = app.admission.admit(&session.tenant).await?;
    // The rest runs on a task of its own: a client gone mid-body (an HTTP/2 reset drops
    // this request) still has the bytes that arrived kept and recorded, as over HTTP/1.1,
    // and a document its last PATCH completed is still accepted.
    let work = Patch {
        app: app.clone(),
        session: session.clone(),
        id: rec.id.clone(),
        offset,
        declared_length,
        max,
        checksum,
    };
    tokio::spawn(work.run(permit, body))
        .await
        .map_err(|_| Problem::internal("the PATCH failed"))?
}

/// A PATCH's work once admitted: lock, receive, record, unlock.
struct Patch {
    app: AppState,
    session: SessionRecord,
    id: String,
    offset: u64,
    /// This PATCH's `Upload-Length`, judged again under the lock: another PATCH may have
    /// fixed the length since the record read before it.
    declared_length: Option<u64>,
    max: u64,
    checksum: Option<PieceChecksum>,
}

/// The document's length from what the record knows and what a request says: a length once
/// known cannot change.
fn upload_length(known: Option<u64>, declared: Option<u64>) -> Result<Option<u64>> {
    match (known, declared) {
        (Some(known), Some(said)) if known != said => {
            Err(Problem::bad_request("Upload-Length cannot change"))
        }
        (known, said) => Ok(known.or(said)),
    }
}

impl Patch {
    async fn run(self, permit: crate::admission::UploadPermit, body: Body) -> Result<u64> {
        let Patch {
            app,
            session,
            id,
            offset,
            declared_length,
            max,
            checksum,
        } = self;
        let (app, session) = (&app, &session);
        let guarded = GuardedBody::new(body.into_data_stream(), app.limits.body_rules())
            .with_pace(permit.pace.clone())
            .with_space(app.admission.space.clone());
        let owner = format!("{}:{}", app.deliverer.node, uuid::Uuid::new_v4().simple());
        let lock = PatchLock {
            app: app.clone(),
            id: id.clone(),
            owner: owner.clone(),
            held: true,
        };
        if let Err(refused) = take_lock(app, session, &id, &owner, offset).await {
            if refused.status.is_server_error() {
                // The ledger failed: the lock may have been taken all the same.
                lock.release().await;
            } else {
                lock.not_held();
            }
            return Err(refused);
        }
        // The record as it is under the lock: the one read before may predate a piece another
        // PATCH recorded since (its pieces would rebuild the wrong state).
        let result = match app.ledger.tus(&id).await {
            Ok(Some(locked)) if locked.received == offset => {
                match upload_length(locked.length, declared_length) {
                    Ok(Some(len)) if len < offset => Err(Problem::bad_request(format!(
                        "Upload-Length {len} is below the {offset} bytes already received"
                    ))),
                    Ok(length) => {
                        receive_locked(
                            app, session, &locked, offset, length, max, checksum, &owner, guarded,
                        )
                        .await
                    }
                    Err(refused) => Err(refused),
                }
            }
            Ok(_) => Err(lock_lost()),
            Err(e) => Err(ledger_problem(&e)),
        };
        drop(permit);
        if result.is_err() {
            lock.release().await;
        } else {
            lock.not_held(); // the piece's record released it
        }
        result
    }
}

/// The lock a PATCH takes, or is taking. A PATCH whose work was cut short (a panic, a
/// shutdown) never reaches its own unlock, and the lock would refuse the browser's resume
/// with 409 `upload_locked` for [`LOCK`] — longer than tus clients retry. Dropped while held,
/// it is released in the background; only this PATCH's own lock (its owner) can be.
struct PatchLock {
    app: AppState,
    id: String,
    owner: String,
    held: bool,
}

impl PatchLock {
    /// Release it before answering, so the client's next PATCH finds it free.
    async fn release(mut self) {
        let _ = self.app.ledger.unlock_tus(&self.id, &self.owner).await;
        self.held = false;
    }

    /// Nothing to release: the lock was not taken, or the piece's record released it.
    fn not_held(mut self) {
        self.held = false;
    }
}

impl Drop for PatchLock {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: the lock expires
        };
        let ledger = self.app.ledger.clone();
        let (id, owner) = (
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.owner),
        );
        runtime.spawn(async move {
            let _ = ledger.unlock_tus(&id, &owner).await;
        });
    }
}

async fn take_lock(
    app: &AppState,
    session: &SessionRecord,
    id: &str,
    owner: &str,
    offset: u64,
) -> Result<()> {
    let until = now_ms() + i64::try_from(LOCK.as_millis()).unwrap_or(i64::MAX);
    match app
        .ledger
        .lock_tus(id, owner, until, offset, now_ms())
        .await
        .map_err(|e| ledger_problem(&e))?
    {
        TusLock::Taken => Ok(()),
        TusLock::Busy => Err(
            Problem::new(StatusCode::CONFLICT, "upload_locked", "Upload locked")
                .with_detail("another request is writing to this upload; retry after it ends")
                .with_retry_after(Duration::from_secs(1)),
        ),
        TusLock::Offset { received } => {
            Err(
                Problem::new(StatusCode::CONFLICT, "offset_mismatch", "Offset mismatch")
                    .with_detail(format!(
                        "the upload is at offset {received}; HEAD it and resume from there"
                    ))
                    .with_extra("upload_offset", received),
            )
        }
        TusLock::Gone => Err(Problem::new(StatusCode::GONE, "upload_gone", "Upload gone")
            .with_detail("this upload takes no more bytes")),
        TusLock::SessionClosed => Err(super::session_now(app, &session.id)
            .await?
            .unwrap_or_else(crate::sessions::being_accepted)),
    }
}

/// The document's state at `rec`'s offset: kept, or rebuilt from its pieces.
async fn assembly_for(
    app: &AppState,
    session: &SessionRecord,
    rec: &TusRecord,
) -> Result<Assembly> {
    if let Some(mut kept) = assemblies(app).take(&rec.id, rec.received) {
        // Behind a balancer, another replica may have taken the last PATCHes: read
        // only their pieces, not the whole document again (every PATCH would otherwise cost
        // the document so far — a 2048-piece document ~1000 times its bytes).
        if let Some(later) = pieces_after(&rec.pieces, kept.len()) {
            for piece in later {
                kept.add(&app.spool, piece)
                    .await
                    .map_err(|e| crate::routes::uploads::ingest_problem(app, e))?;
            }
            return Ok(kept);
        }
    }
    let provider = app
        .registry
        .get(&session.provider)
        .ok_or_else(|| Problem::internal("the session's provider is gone"))?;
    Assembly::rebuild(
        provider.policy().clone(),
        rec.filetype.as_deref(),
        &app.spool,
        &rec.pieces,
    )
    .await
    .map_err(|e| crate::routes::uploads::ingest_problem(app, e))
}

/// The pieces after the first `offset` bytes, when `offset` falls between two pieces.
fn pieces_after(pieces: &[Piece], offset: u64) -> Option<&[Piece]> {
    let mut at = 0;
    for (i, piece) in pieces.iter().enumerate() {
        if at == offset {
            return pieces.get(i..);
        }
        at += piece.len;
    }
    (at == offset).then_some(&[])
}

#[allow(clippy::too_many_arguments)]
async fn receive_locked(
    app: &AppState,
    session: &SessionRecord,
    rec: &TusRecord,
    offset: u64,
    length: Option<u64>,
    max: u64,
    checksum: Option<PieceChecksum>,
    owner: &str,
    guarded: GuardedBody<BodyDataStream>,
) -> Result<u64> {
    // Each piece is a spool file (an inode, a block): a client sending byte by byte would
    // otherwise fill the file system long before its bytes reach the storage budget.
    let most = app.limits.max_tus_pieces;
    if rec.pieces.len() >= most {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "too_many_pieces",
            "Too many pieces",
        )
        .with_detail(format!(
            "this document has arrived in {most} pieces, the most it may: terminate it and send it again in fewer, larger PATCHes"
        )));
    }
    let faults = guarded.faults.clone();
    // Renewed from here until the piece is recorded: rebuilding the state of a large
    // document, and checking it once complete, take time too (a lock lost meanwhile would
    // let a creation replace the document whose pieces this PATCH reads).
    let _renewing = renew_while(app, rec.id.clone(), owner.to_owned());
    let mut assembly = assembly_for(app, session, rec).await?;
    let room = length.unwrap_or(max).saturating_sub(offset);
    // Named by the PATCH that writes it too: a PATCH that lost its lock while streaming (a
    // paused replica, an expired lock) must not overwrite or remove the winner's piece.
    let writer = owner.rsplit(':').next().unwrap_or(owner);
    let key = spool_keys::piece_key(
        &session.upload_id,
        &rec.slot,
        &rec.id,
        rec.pieces.len(),
        writer,
    );
    let end = receive_piece(
        guarded,
        &app.spool,
        &key,
        &assembly,
        room,
        checksum.as_ref(),
    )
    .await;
    let end = match end {
        Ok(end) => end,
        Err(PieceError::ChecksumMismatch { algorithm }) => {
            app.metrics.tus("checksum_mismatch");
            assemblies(app).put(&rec.id, assembly);
            return Err(Problem::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
                "Checksum Mismatch",
            )
            .with_detail(format!("the {algorithm} of the bytes sent does not match Upload-Checksum; they were discarded")));
        }
        Err(PieceError::Ingest(e)) => return Err(refuse(app, rec, &faults, e).await),
    };
    if let Some(piece) = &end.piece {
        if let Err(e) = assembly.add(&app.spool, piece).await {
            spool_keys::remove_for_request(&app.spool, vec![piece.key.clone()]).await;
            return Err(refuse(app, rec, &faults, e).await);
        }
    }
    let received = assembly.len();
    let complete = length.is_some_and(|len| received == len);
    let (meta, kept) = if complete {
        (Some(finish(app, rec, &end.piece, assembly).await?), None)
    } else {
        (None, Some(assembly))
    };
    record(app, session, rec, owner, end.piece, length, meta.clone()).await?;
    // Kept for the next PATCH only once its piece is recorded: a PATCH that lost its lock
    // meanwhile must not leave a state of bytes another PATCH's piece replaced.
    if let Some(assembly) = kept {
        assemblies(app).put(&rec.id, assembly);
    }
    app.metrics.tus("patch");
    if meta.is_some() {
        app.metrics.tus("completed");
        crate::routes::uploads::after_document(app, session).await;
    }
    // A body the gateway cut (too slow, quiet, preempted) is answered 204 with the offset it
    // reached: what arrived is kept, and tus clients resume from there. They stop on a 408
    // (tus-js-client, Uppy and our page retry only 409, 423, 460 and 5xx), so the cut's own
    // problem would end an upload that resuming is meant to save; the next PATCH meets the
    // refusal (slots, storage) if there is one.
    Ok(received)
}

/// The whole document has arrived: its checks and metadata.
async fn finish(
    app: &AppState,
    rec: &TusRecord,
    last: &Option<Piece>,
    assembly: Assembly,
) -> Result<docgate_core::DocumentMeta> {
    let mut pieces = rec.pieces.clone();
    pieces.extend(last.iter().cloned());
    let document = app.spool.pieces(pieces);
    match assembly
        .finish(rec.slot.clone(), rec.filename.clone(), &document)
        .await
    {
        Ok(meta) => Ok(meta),
        Err(e) => {
            // The last piece is not recorded yet, so neither the refusal nor the session's
            // end would remove it; a 5xx's retry sends it again under another key.
            if let Some(piece) = last {
                spool_keys::remove_for_request(&app.spool, vec![piece.key.clone()]).await;
            }
            Err(refuse(app, rec, &FaultCell::default(), e).await)
        }
    }
}

/// Record the piece (and, complete, the document) and release the lock. Refused when the
/// lock was lost or the session stopped taking bytes while the piece streamed (revoked,
/// expired, accepted): the piece is removed and the client told why.
async fn record(
    app: &AppState,
    session: &SessionRecord,
    rec: &TusRecord,
    owner: &str,
    piece: Option<Piece>,
    length: Option<u64>,
    meta: Option<docgate_core::DocumentMeta>,
) -> Result<()> {
    let recorded = app
        .ledger
        .add_piece(&rec.id, owner, piece.clone(), length, meta, now_ms())
        .await;
    let recorded = match (recorded, &piece) {
        // An error may still have committed (a connection lost after the commit): look
        // before removing a piece the ledger might name.
        (Err(e), Some(p)) => match app.ledger.tus(&rec.id).await {
            Ok(Some(now)) if now.pieces.iter().any(|q| q.key == p.key) => Ok(true),
            Ok(_) if !e.maybe_committed() => Err(e),
            Ok(_) | Err(_) => {
                // Unknown: the piece stays (the session's end removes what it recorded,
                // the orphan sweep the rest); the client asks HEAD where it stands.
                tracing::error!(error = %e, upload = %rec.id, "could not record a tus piece, nor tell whether it was");
                assemblies(app).forget(&rec.id);
                return Err(ledger_problem(&e));
            }
        },
        (recorded, _) => recorded,
    };
    match recorded {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => {
            if let Some(p) = piece {
                spool_keys::remove_for_request(&app.spool, vec![p.key]).await;
            }
            assemblies(app).forget(&rec.id);
            if let Err(e) = recorded {
                return Err(ledger_problem(&e));
            }
            if let Some(closed) = super::session_now(app, &session.id).await? {
                return Err(closed);
            }
            Err(lock_lost())
        }
    }
}

fn lock_lost() -> Problem {
    Problem::new(StatusCode::CONFLICT, "upload_locked", "Upload locked")
        .with_detail("this request lost its lock on the upload; HEAD and resume")
}

/// Bytes the document cannot have (type, size, content): the upload ends, refused, and its
/// bytes are removed; the client is told why.
async fn refuse(app: &AppState, rec: &TusRecord, faults: &FaultCell, e: IngestError) -> Problem {
    let problem = crate::routes::uploads::ingest_problem_with(app, faults, e);
    if problem.status.is_client_error() && problem.status != StatusCode::REQUEST_TIMEOUT {
        if let Ok(Some(ended)) = app
            .ledger
            .end_tus(&rec.id, TusState::Refused, false, now_ms())
            .await
        {
            let keys: Vec<String> = ended.pieces.iter().map(|p| p.key.clone()).collect();
            spool_keys::remove_for_request(&app.spool, keys).await;
        }
        assemblies(app).forget(&rec.id);
    }
    problem
}

/// Renew the upload's lock while the PATCH works on it; stops when dropped, or once the
/// lock is another's (a failed renewal is tried again at the next tick).
fn renew_while(app: &AppState, id: String, owner: String) -> tokio_util::sync::DropGuard {
    let stop = tokio_util::sync::CancellationToken::new();
    let ledger = app.ledger.clone();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LOCK / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let until = now_ms() + i64::try_from(LOCK.as_millis()).unwrap_or(i64::MAX);
                    if let Ok(false) = ledger.renew_tus(&id, &owner, until).await {
                        return;
                    }
                }
            }
        }
    });
    guard
}

#[cfg(test)]
mod tests {
    use docgate_core::{
        media::MediaRange,
        policy::{DigestSet, Slots, UploadPolicy},
    };

    use super::*;

    #[test]
    fn a_state_behind_the_ledger_is_brought_forward_from_piece_boundaries_only() {
        let pieces: Vec<Piece> = [10, 20, 5]
            .iter()
            .enumerate()
            .map(|(i, &len)| Piece {
                key: format!("p{i}"),
                len,
            })
            .collect();
        let keys = |after: Option<&[Piece]>| {
            after.map(|p| p.iter().map(|p| p.key.clone()).collect::<Vec<_>>())
        };
        assert_eq!(
            keys(pieces_after(&pieces, 0)),
            Some(vec!["p0".into(), "p1".into(), "p2".into()])
        );
        assert_eq!(keys(pieces_after(&pieces, 30)), Some(vec!["p2".to_owned()]));
        assert_eq!(keys(pieces_after(&pieces, 35)), Some(vec![]));
        assert_eq!(keys(pieces_after(&pieces, 12)), None, "inside a piece");
        assert_eq!(keys(pieces_after(&pieces, 36)), None, "past the end");
    }

    fn assembly() -> Assembly {
        let policy = UploadPolicy {
            min_document_bytes: 1,
            max_document_bytes: 100,
            max_request_bytes: 100,
            accepted: vec![MediaRange::parse("application/pdf").expect("valid")],
            digests: DigestSet::SHA256,
            slots: Slots::Free { max: 1 },
            zip: None,
            refuse_active_content: true,
        };
        Assembly::new(policy, None)
    }

    /// Each PATCH takes its document's state and puts it back; the eviction list kept the
    /// id of every put, so one session's PATCHes (empty ones too) grew it without bound, and
    /// every put scanned it under the lock all tus requests share.
    #[test]
    fn regression_the_kept_states_list_each_document_once() {
        let kept = Assemblies::default();
        for _ in 0..10_000 {
            let state = kept.take("one", 0).unwrap_or_else(assembly);
            kept.put("one", state);
            kept.put("two", assembly());
        }
        kept.forget("two");
        let inner = kept.lock();
        assert_eq!(inner.0.len(), 1);
        assert_eq!(inner.1, ["one"]);
    }

    #[test]
    fn the_oldest_kept_states_are_evicted_past_the_bound() {
        let kept = Assemblies::default();
        for i in 0..KEPT + 10 {
            kept.put(&format!("u{i}"), assembly());
        }
        let inner = kept.lock();
        assert_eq!(inner.0.len(), KEPT);
        assert_eq!(inner.1.len(), KEPT);
        assert_eq!(inner.1.front().map(String::as_str), Some("u10"));
    }
}
