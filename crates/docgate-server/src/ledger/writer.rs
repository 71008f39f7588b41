//! Group commit for SQLite: one writer, many waiting writes, one transaction (and one WAL
//! sync) per batch.
//!
//! SQLite lets one connection write at a time. With several pooled connections writing, the
//! losers sleep in SQLite's busy handler (1, 2, 5 … 100 ms back-off) while the machine idles.
//! Instead every write goes to one task that owns one connection: it takes the writes that
//! are waiting (up to [`MAX_BATCH`]), runs each inside its own savepoint of one transaction,
//! commits once, and only then answers each caller — so a write is acknowledged only when it
//! is durable, and N concurrent uploads cost one fsync instead of N. A write that fails rolls
//! back to its savepoint and fails alone; the others of its batch still commit.

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, Connection, Executor};
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
type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Answer)> + Send>;

/// Why a batch did not commit, as every caller of the batch is told.
#[derive(Debug, Clone)]
pub struct CommitFailure {
    pub out_of_space: bool,
    pub message: String,
}

/// A handle to the writer task.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer on `conn`, a connection of its own.
    pub fn start(conn: AnyConnection) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, rx));
        Writer { jobs }
    }

    /// Run `write` in the next batch; its result once the batch is committed (never
    /// before: an `Ok` means durable). The closure must not commit or roll back itself.
    pub async fn write<T, F>(&self, write: F) -> LedgerResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, LedgerResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<LedgerResult<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = write(conn).await;
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
            })
        });
        self.jobs.send(job).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }
}

/// The writer: batch, commit, answer; until every handle is dropped.
async fn run(mut conn: AnyConnection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit_batch(&mut conn, &mut batch).await;
    }
    let _ = conn.close().await;
}

/// One transaction for the whole batch; every caller is answered after the commit.
///
/// Each write runs in a savepoint of its own, so a failed write is undone alone and the
/// others still commit. A batch of one needs none: its failure rolls the transaction back.
/// Every statement is a round trip to SQLite's connection thread, so the savepoint steps
/// between two writes go as one (`RELEASE w; SAVEPOINT w`).
async fn commit_batch(conn: &mut AnyConnection, batch: &mut Vec<Job>) {
    let single = batch.len() == 1;
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let began = conn
        .execute(if single {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN IMMEDIATE; SAVEPOINT w"
        })
        .await
        .map(|_| ());
    let mut alone_failed = false;
    let committed = match began {
        Ok(()) => {
            let mut steps = Ok(());
            let mut jobs = batch.drain(..).peekable();
            while let Some(job) = jobs.next() {
                let (ok, answer) = job(conn).await;
                answers.push(answer);
                if single {
                    alone_failed = !ok;
                    break;
                }
                let step = match (ok, jobs.peek().is_some()) {
                    (true, true) => "RELEASE w; SAVEPOINT w",
                    (true, false) => "RELEASE w",
                    (false, true) => "ROLLBACK TO w; RELEASE w; SAVEPOINT w",
                    (false, false) => "ROLLBACK TO w; RELEASE w",
                };
                if let Err(e) = conn.execute(step).await {
                    steps = Err(e);
                    break;
                }
            }
            // Writes never run (a savepoint step failed) are answered with the failure.
            answers.extend(jobs.map(job_refused));
            match steps {
                Ok(()) if alone_failed => Ok(()),
                Ok(()) => conn.execute("COMMIT").await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if alone_failed {
        // Its own error is its answer; nothing else was in the transaction.
        if let Err(e) = conn.execute("ROLLBACK").await {
            tracing::error!(error = %e, "rolling back a failed ledger write failed");
        }
    }
    let failure = committed.err().map(|e| {
        tracing::error!(error = %e, writes = answers.len(), "a ledger batch did not commit");
        CommitFailure {
            out_of_space: LedgerError::Db(e).is_out_of_space(),
            message: "the ledger could not commit".into(),
        }
    });
    if failure.is_some() {
        // Leave no transaction open for the next batch.
        let _ = conn.execute("ROLLBACK").await;
        // Jobs never run (BEGIN failed) are answered with the failure too.
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
