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

/// What a write does once its transaction is committed (or failed to commit): answer its
/// caller.
pub(super) type Answer = Box<dyn FnOnce(Option<&CommitFailure>) + Send>;

/// The answer for a write's caller: the write's own result once its transaction committed,
/// or why the transaction did not.
pub(super) fn answer<T: Send + 'static>(
    result: LedgerResult<T>,
    caller: oneshot::Sender<LedgerResult<T>>,
) -> Answer {
    Box::new(move |failure: Option<&CommitFailure>| {
        let outcome = match failure {
            None => result,
            Some(f) => Err(LedgerError::Commit(f.clone())),
        };
        // The caller may have gone away.
        let _ = caller.send(outcome);
    })
}

/// One write: run on the writer's connection inside the batch's transaction; returns
/// whether it succeeded (a failed write is rolled back alone) and how to answer its caller
/// once the fate of the batch is known.
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;

/// Why a batch did not commit, as every caller of the batch is told.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    pub out_of_space: bool,
    /// The write may have committed all the same (its `COMMIT` was sent and no answer came
    /// back): its caller must look before undoing anything of it.
    pub maybe_committed: bool,
    pub message: String,
}

/// What the writer thread is asked to do.
enum Work {
    Write(Job),
    /// After what came before is committed: copy the WAL into the database file and empty
    /// it (an erasure's old values leave the disk); answers whether it could.
    TruncateWal(oneshot::Sender<bool>),
}

/// A handle to the writer thread; the thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Work>,
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
            // A panicking write must not end the thread (every later write would fail until
            // a restart): it fails alone, undone like any failed write.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(conn)))
                .unwrap_or(Err(LedgerError::Bug("a ledger write panicked")));
            // The caller may have gone away; the write stands either way.
            (result.is_ok(), answer(result, tx))
        });
        self.jobs
            .send(Work::Write(job))
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Empty the WAL once every write before this call is committed: the pages an erasure
    /// overwrote in the database file still sit in the WAL's older frames until then.
    /// `false` when readers kept it from finishing (a later call, or SQLite's own
    /// checkpoints, will).
    pub async fn truncate_wal(&self) -> LedgerResult<bool> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Work::TruncateWal(tx))
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)
    }
}

/// How long a WAL truncation waits for readers: it holds up every write meanwhile.
const TRUNCATE_WAIT_MS: u32 = 1000;

fn truncate_wal(conn: &Connection) -> bool {
    let run = || -> rusqlite::Result<bool> {
        let usual: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
        conn.execute_batch(&format!("PRAGMA busy_timeout = {TRUNCATE_WAIT_MS}"))?;
        // (busy, frames in the WAL, frames checkpointed)
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        // Back to the wait every other statement runs with, whatever the checkpoint did.
        conn.execute_batch(&format!("PRAGMA busy_timeout = {usual}"))?;
        Ok(busy? == 0)
    };
    run().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "emptying the ledger's WAL failed");
        false
    })
}

/// The writer: batch, commit, answer; until every handle is dropped.
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Work>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut next = rx.blocking_recv();
    while let Some(work) = next.take() {
        match work {
            Work::TruncateWal(answer) => {
                let _ = answer.send(truncate_wal(&conn));
            }
            Work::Write(first) => {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Work::Write(job)) => batch.push(job),
                        // Run after this batch commits.
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_batch(&mut conn, &mut batch);
            }
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
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
            // SQLite answers its COMMIT in process: a failure is a rollback.
            maybe_committed: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that panicked unwound through the writer thread and ended it: every later
    /// write failed with "the ledger is shutting down" until a restart.
    #[tokio::test]
    async fn regression_a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(&dir.path().join("w.db")).expect("writer");
        writer
            .write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .await
            .expect("create");
        let panicked = writer
            .write(|c| -> LedgerResult<()> {
                c.execute_batch("INSERT INTO t VALUES (1)")?;
                panic!("a bug in a write");
            })
            .await;
        assert!(matches!(panicked, Err(LedgerError::Bug(_))), "{panicked:?}");
        let rows = writer
            .write(|c| {
                c.execute_batch("INSERT INTO t VALUES (2)")?;
                Ok(c.query_row("SELECT group_concat(x) FROM t", [], |r| {
                    r.get::<_, String>(0)
                })?)
            })
            .await
            .expect("the writer still writes");
        assert_eq!(rows, "2", "the panicking write was undone");
    }
}
