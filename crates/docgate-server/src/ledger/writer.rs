//! Group commit for SQLite: one writer thread, many waiting writes, one transaction (and one
//! WAL sync) per batch.
//!
//! SQLite lets one connection write at a time. With several pooled connections writing, the
//! losers sleep in SQLite's busy handler (1, 2, 5 … 100 ms back-off) while the machine idles.
//! Instead every write goes to one thread that owns one connection: it takes the writes that
//! are waiting (up to [`MAX_BATCH`]), runs each inside its own savepoint of one transaction,
//! commits once, and only then answers each caller — so a write is acknowledged only when it
//! is durable, and N concurrent uploads cost one fsync instead of N. A write that fails rolls
//! back to its savepoint and fails alone; the others of its batch still commit.
//!
//! The thread calls SQLite directly (rusqlite): a write's statements cost no hand-off
//! between threads, only the write's own arrival and its answer do. While the thread syncs
//! a batch, the next one queues up.

use std::{path::Path, thread};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{LedgerError, LedgerResult};

/// Writes committed together at most (bounds a batch's latency and its transaction size).
pub const MAX_BATCH: usize = 64;

/// Writes waiting for the writer at most; past it, callers wait for room (back-pressure).
const QUEUE: usize = 1024;

/// What a write does once its batch is committed (or failed to commit): answer its caller.
type Answer = Box<dyn FnOnce(Option<&CommitFailure>) + Send>;

/// One write: run on the writer's connection inside the batch's transaction; returns
/// whether it succeeded (a failed write is rolled back alone) and how to answer its caller
/// once the fate of the batch is known.
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;

/// Why a batch did not commit, as every caller of the batch is told.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    pub out_of_space: bool,
    pub message: String,
}

/// A handle to the writer thread; the thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Statements cached per connection: the writes use a few dozen distinct ones.
const STATEMENT_CACHE: usize = 128;

impl Writer {
    /// Open the ledger file at `path` for writing and start the writer thread on it.
    pub fn start(path: &Path) -> LedgerResult<Writer> {
        let conn = Connection::open(path)?;
        conn.execute_batch(super::sql::SQLITE_SETTINGS)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, rx) = mpsc::channel(QUEUE);
        thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| LedgerError::Config(format!("starting the ledger writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Run `write` in the next batch; its result once the batch is committed (never
    /// before: an `Ok` means durable). The closure must not commit or roll back itself.
    pub async fn write<T, F>(&self, write: F) -> LedgerResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> LedgerResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<LedgerResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = write(conn);
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |failure: Option<&CommitFailure>| {
                let outcome = match failure {
                    None => result,
                    Some(f) => Err(LedgerError::Commit(f.clone())),
                };
                // The caller may have gone away; the write stands either way.
                let _ = tx.send(outcome);
            });
            (ok, answer)
        });
        self.jobs.send(job).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }
}

/// The writer: batch, commit, answer; until every handle is dropped.
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch);
    }
}

/// One transaction for the whole batch; every caller is answered after the commit.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let committed = run_batch(conn, batch, &mut answers);
    // Writes that never ran (BEGIN or a savepoint step failed) are dropped unanswered: their
    // callers hear that the ledger closed on them, as before any write of theirs was made.
    batch.clear();
    let failure = committed.err().map(|e| {
        tracing::error!(error = %e, writes = answers.len(), "a ledger batch did not commit");
        if !conn.is_autocommit() {
            // Leave no transaction open for the next batch.
            let _ = conn.execute_batch("ROLLBACK");
        }
        CommitFailure {
            out_of_space: LedgerError::Sqlite(e).is_out_of_space(),
            message: "the ledger could not commit".into(),
        }
    });
    for answer in answers {
        answer(failure.as_ref());
    }
}

/// Run the batch in one transaction. Each write runs in a savepoint of its own, so a failed
/// write is undone alone and the others still commit; a batch of one needs none (its failure
/// is its answer, and rolls back a transaction that held nothing else).
fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    answers: &mut Vec<Answer>,
) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    if batch.len() == 1 {
        if let Some(job) = batch.pop() {
            let (ok, answer) = job(conn);
            answers.push(answer);
            return conn.execute_batch(if ok { "COMMIT" } else { "ROLLBACK" });
        }
    }
    for job in batch.drain(..) {
        conn.execute_batch("SAVEPOINT w")?;
        let (ok, answer) = job(conn);
        answers.push(answer);
        conn.execute_batch(if ok {
            "RELEASE w"
        } else {
            "ROLLBACK TO w; RELEASE w"
        })?;
    }
    conn.execute_batch("COMMIT")
}
