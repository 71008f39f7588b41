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

/// The settings of the writer's connection: see `sql::sqlite_settings`, which the readers
/// get. Only the writer commits, so the WAL's checkpoints and size limit matter here.
const SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 256; \
    PRAGMA journal_size_limit = 1048576; PRAGMA secure_delete = ON; \
    PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

/// Statements cached per connection: the writes use a few dozen distinct ones.
const STATEMENT_CACHE: usize = 128;

impl Writer {
    /// Open the ledger file at `path` for writing and start the writer thread on it.
    pub fn start(path: &Path) -> LedgerResult<Writer> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SETTINGS)?;
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
///
/// Each write runs in a savepoint of its own, so a failed write is undone alone and the
/// others still commit. A batch of one needs none: its failure rolls the transaction back.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let single = batch.len() == 1;
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let mut alone_failed = false;
    let committed = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
        for job in batch.drain(..) {
            if single {
                let (ok, answer) = job(conn);
                answers.push(answer);
                alone_failed = !ok;
                break;
            }
            if let Err(e) = conn.execute_batch("SAVEPOINT w") {
                answers.push(job_refused(job));
                return Err(e);
            }
            let (ok, answer) = job(conn);
            answers.push(answer);
            conn.execute_batch(if ok {
                "RELEASE w"
            } else {
                "ROLLBACK TO w; RELEASE w"
            })?;
        }
        if alone_failed {
            // Its own error is its answer; nothing else was in the transaction.
            return conn.execute_batch("ROLLBACK");
        }
        conn.execute_batch("COMMIT")
    });
    let failure = committed.err().map(|e| {
        tracing::error!(error = %e, writes = answers.len(), "a ledger batch did not commit");
        CommitFailure {
            out_of_space: LedgerError::Sqlite(e).is_out_of_space(),
            message: "the ledger could not commit".into(),
        }
    });
    if failure.is_some() {
        // Leave no transaction open for the next batch.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Writes never run (BEGIN or a savepoint step failed) are answered with the failure.
        answers.extend(batch.drain(..).map(job_refused));
    }
    for answer in answers {
        answer(failure.as_ref());
    }
}

/// A job that never ran (its batch did not begin, or a savepoint step before it failed):
/// answer it without running it.
fn job_refused(job: Job) -> Answer {
    drop(job);
    Box::new(|_| {})
}
