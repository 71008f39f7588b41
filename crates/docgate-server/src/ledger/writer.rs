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

use std::{collections::VecDeque, path::Path, thread};

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

/// One write: run on the writer's connection inside the batch's transaction, or — given no
/// connection — never run (its batch failed before it); says how it went and how to answer
/// its caller once the fate of the batch is known.
type Job = Box<dyn FnOnce(Option<&mut Connection>) -> Ran + Send>;

/// What running a write did.
struct Ran {
    /// It succeeded (a failed write is rolled back alone, when SQLite lets it).
    ok: bool,
    /// It failed for want of space (kept to classify a batch the failure aborted).
    out_of_space: bool,
    answer: Answer,
}

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
        let answered = self.enqueue(write).await?;
        answered.await.map_err(|_| LedgerError::Closed)?
    }

    /// Queue `write` behind those already queued; its answer comes on the receiver.
    async fn enqueue<T, F>(&self, write: F) -> LedgerResult<oneshot::Receiver<LedgerResult<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> LedgerResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<LedgerResult<T>>();
        let job: Job = Box::new(move |conn| {
            let Some(conn) = conn else {
                // Never run: the answer carries its batch's failure.
                return Ran {
                    ok: false,
                    out_of_space: false,
                    answer: answer(Err(LedgerError::Closed), tx),
                };
            };
            // A panicking write must not end the thread (every later write would fail until
            // a restart): it fails alone, undone like any failed write.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(conn)))
                .unwrap_or(Err(LedgerError::Bug("a ledger write panicked")));
            // The caller may have gone away; the write stands either way.
            Ran {
                ok: result.is_ok(),
                out_of_space: result
                    .as_ref()
                    .err()
                    .is_some_and(LedgerError::is_out_of_space),
                answer: answer(result, tx),
            }
        });
        self.jobs
            .send(Work::Write(job))
            .await
            .map_err(|_| LedgerError::Closed)?;
        Ok(rx)
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
    let mut batch: VecDeque<Job> = VecDeque::with_capacity(MAX_BATCH);
    let mut next = rx.blocking_recv();
    while let Some(work) = next.take() {
        match work {
            Work::TruncateWal(answer) => {
                let _ = answer.send(truncate_wal(&conn));
            }
            Work::Write(first) => {
                batch.push_back(first);
                // Writes a failed batch did not reach go first in the next.
                while !batch.is_empty() {
                    while batch.len() < MAX_BATCH && next.is_none() {
                        match rx.try_recv() {
                            Ok(Work::Write(job)) => batch.push_back(job),
                            // Run after this batch commits.
                            Ok(other) => next = Some(other),
                            Err(_) => break,
                        }
                    }
                    commit_batch(&mut conn, &mut batch);
                }
            }
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
}

/// How a batch failed.
enum Failed {
    /// `BEGIN` or a savepoint step failed: no write after it ran.
    Steps(rusqlite::Error),
    /// A write's failure ended the whole transaction (SQLite rolls everything back on a full
    /// disk or an I/O error inside a statement, savepoints included): the writes before it
    /// are undone; those after it have not run, and go to the next batch.
    AbortedBy(Ran),
    /// `COMMIT` failed.
    Commit(rusqlite::Error),
}

/// One transaction for the whole batch; every caller is answered after the commit.
fn commit_batch(conn: &mut Connection, batch: &mut VecDeque<Job>) {
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let outcome = run_batch(conn, batch, &mut answers);
    let Err(failed) = outcome else {
        for answer in answers {
            answer(None);
        }
        return;
    };
    if !conn.is_autocommit() {
        // Leave no transaction open for the next batch.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let (failure, culprit) = match failed {
        Failed::Steps(e) => {
            tracing::error!(error = %e, "a ledger batch could not start");
            // Its writes that never ran are failed too (not left to a batch that may fail
            // the same way for ever).
            for job in batch.drain(..) {
                answers.push(job(None).answer);
            }
            (failure_of(&e, false), None)
        }
        Failed::Commit(e) => {
            tracing::error!(error = %e, writes = answers.len(), "a ledger batch did not commit");
            (failure_of(&e, true), None)
        }
        Failed::AbortedBy(ran) => {
            tracing::error!(
                undone = answers.len(),
                out_of_space = ran.out_of_space,
                "a ledger write failed its whole batch"
            );
            let failure = CommitFailure {
                out_of_space: ran.out_of_space,
                maybe_committed: false,
                message: "the ledger could not commit".into(),
            };
            (failure, Some(ran.answer))
        }
    };
    // The write that failed hears its own error; the others, what became of their batch.
    if let Some(culprit) = culprit {
        culprit(None);
    }
    for answer in answers {
        answer(Some(&failure));
    }
}

/// What the callers of a batch that failed with `e` are told.
fn failure_of(e: &rusqlite::Error, at_commit: bool) -> CommitFailure {
    let out_of_space = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
    CommitFailure {
        out_of_space,
        // A COMMIT that failed in its WAL sync has written the whole transaction, commit
        // frame included: invisible now, but a restart's WAL recovery may find it committed
        // (unless a later batch overwrote those frames). Its callers must not undo anything
        // (remove the document a row may name).
        maybe_committed: at_commit
            && e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure),
        message: "the ledger could not commit".into(),
    }
}

/// Run the batch in one transaction. Each write runs in a savepoint of its own, so a failed
/// write is undone alone and the others still commit; a batch of one needs none (its failure
/// is its answer, and rolls back a transaction that held nothing else).
fn run_batch(
    conn: &mut Connection,
    batch: &mut VecDeque<Job>,
    answers: &mut Vec<Answer>,
) -> Result<(), Failed> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(Failed::Steps)?;
    let single = batch.len() == 1;
    while let Some(job) = batch.pop_front() {
        if !single {
            if let Err(e) = conn.execute_batch("SAVEPOINT w") {
                batch.push_front(job); // answered with the rest that never ran
                return Err(Failed::Steps(e));
            }
        }
        let ran = job(Some(conn));
        if !ran.ok && conn.is_autocommit() {
            return Err(Failed::AbortedBy(ran));
        }
        let ok = ran.ok;
        answers.push(ran.answer);
        if single {
            if !ok {
                return conn.execute_batch("ROLLBACK").map_err(Failed::Steps);
            }
        } else {
            conn.execute_batch(if ok {
                "RELEASE w"
            } else {
                "ROLLBACK TO w; RELEASE w"
            })
            .map_err(Failed::Steps)?;
        }
    }
    conn.execute_batch("COMMIT").map_err(Failed::Commit)
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

    /// A full disk inside one write makes SQLite roll back the whole transaction, savepoints
    /// and all: undoing that write alone then failed ("no such savepoint"), so every caller
    /// of the batch heard a generic failure instead of "out of space" (507), and the writes
    /// after it were dropped as if the ledger had closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn regression_a_full_disk_in_one_write_is_told_as_such_and_the_writes_after_it_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Writer::start(&dir.path().join("w.db")).expect("writer");
        writer
            .write(|c| {
                c.execute_batch("CREATE TABLE t (x BLOB)")?;
                // The file may grow by two pages from here: a full disk, for this test.
                let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                Ok(c.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2))?)
            })
            .await
            .expect("create");
        // Hold the thread on a write while three others queue behind it, in order: they
        // are then one batch.
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .write(move |_| {
                        let _ = started_tx.send(());
                        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || {
            started.recv_timeout(std::time::Duration::from_secs(30))
        })
        .await
        .expect("join")
        .expect("the holding write runs");
        // Queued in this order, each in the channel before the next.
        let mut queued = Vec::new();
        for blob in [10, 100_000, 20] {
            queued.push(
                writer
                    .enqueue(move |c| {
                        Ok(c.execute("INSERT INTO t VALUES (?1)", [vec![7_u8; blob]])?)
                    })
                    .await
                    .expect("queued"),
            );
        }
        release.send(()).expect("release");
        held.await.expect("join").expect("the holding write");
        let mut results = Vec::new();
        for q in queued {
            results.push(q.await.expect("answered"));
        }
        let first = results[0].as_ref().expect_err("undone with its batch");
        assert!(first.is_out_of_space(), "{first:?}");
        assert!(!first.maybe_committed(), "{first:?}");
        let culprit = results[1].as_ref().expect_err("the disk is full");
        assert!(culprit.is_out_of_space(), "{culprit:?}");
        assert_eq!(results[2].as_ref().ok(), Some(&1), "the write after it ran");
        let rows = writer
            .write(|c| {
                Ok(
                    c.query_row("SELECT group_concat(length(x)) FROM t", [], |r| {
                        r.get::<_, String>(0)
                    })?,
                )
            })
            .await
            .expect("read");
        assert_eq!(rows, "20");
    }

    /// Each write's statement journal stays in memory up to 1 MiB (`.cargo/config.toml`):
    /// past SQLite's default of 64 KiB it moved to a temporary file, and the writer created
    /// and removed a file in most batches.
    #[test]
    fn a_write_s_statement_journal_stays_in_memory_up_to_a_mebibyte() {
        let conn = Connection::open_in_memory().expect("sqlite");
        let mut options = conn.prepare("PRAGMA compile_options").expect("pragma");
        let options: Vec<String> = options
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            options.iter().any(|o| o == "STMTJRNL_SPILL=1048576"),
            "{options:?}"
        );
    }

    /// A COMMIT whose WAL sync failed has written its frames: a restart may find it
    /// committed, so its callers must not undo it (a full disk writes no commit frame).
    #[test]
    fn an_io_error_at_commit_may_have_committed() {
        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
            None,
        );
        assert!(failure_of(&io, true).maybe_committed);
        assert!(!failure_of(&io, false).maybe_committed);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let f = failure_of(&full, true);
        assert!(f.out_of_space && !f.maybe_committed);
    }
}
