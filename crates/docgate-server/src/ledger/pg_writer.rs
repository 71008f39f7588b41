//! Group commit for PostgreSQL: a few writer tasks, each on a connection of its own, commit
//! the writes waiting for them together.
//!
//! A write through sqlx's pool costs, besides its statements, four round trips to the server:
//! the pool's ping when the connection is taken and again when it is given back, `BEGIN` and
//! `COMMIT`; and every write is a commit of its own (a WAL flush). On this project's
//! two-core machines that was most of PostgreSQL's CPU per upload (sending and receiving
//! on the socket, then the flush), not the statements. Here each writer task takes the writes
//! that are waiting (up to [`MAX_BATCH`]), runs each inside a savepoint of one transaction on
//! a connection it keeps, commits once and only then answers each caller: an `Ok` still
//! means durable. A write that fails rolls back to its savepoint and fails alone.
//!
//! A kept connection can die while idle (the server restarted, a proxy cut it). The pool
//! found that out with its ping; here `BEGIN` does: nothing of the batch has run when it
//! fails, so the batch is tried once more on a new connection.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use sqlx::{any::AnyConnectOptions, AnyConnection, ConnectOptions, Executor};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{writer::CommitFailure, LedgerError, LedgerResult};

/// Writes committed together at most. PostgreSQL keeps up to 64 subtransactions of a
/// transaction in shared memory; past that every other backend's snapshot looks them up on
/// disk. One savepoint per write keeps a batch well inside.
pub const MAX_BATCH: usize = 32;

/// Writes waiting at most; past it, callers wait for room (back-pressure).
const QUEUE: usize = 1024;

/// Writer tasks (and connections). Two keep one batch running while the next one gathers;
/// each connection is opened the first time its task has a batch.
pub const WRITERS: usize = 2;

/// How long opening a writer's connection may take (as long as the pool waits for one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a write does once its batch is committed (or failed to commit): answer its caller.
type Answer = Box<dyn FnOnce(Option<&CommitFailure>) + Send>;

/// One write, run on a writer's connection inside the batch's transaction: whether it
/// succeeded (a failed write is rolled back alone) and how to answer its caller.
type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Answer)> + Send>;

/// A handle to the writer tasks; they end when every handle is dropped.
#[derive(Debug, Clone)]
pub struct PgWriter {
    jobs: mpsc::Sender<Job>,
}

impl PgWriter {
    /// Start the writer tasks (on the current runtime); they connect with `options`.
    pub fn start(options: AnyConnectOptions) -> PgWriter {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(options.clone(), queue.clone()));
        }
        PgWriter { jobs }
    }

    /// Run `write` in the next batch; its result once the batch is committed (never before:
    /// an `Ok` means durable). The write must not commit or roll back itself.
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
        // A write dropped unanswered never ran: its batch lost its connection first.
        rx.await.map_err(|_| {
            LedgerError::Commit(CommitFailure {
                out_of_space: false,
                message: "the ledger's connection failed before the write ran".into(),
            })
        })?
    }
}

/// One writer task: gather a batch, commit it, answer; until every handle is dropped.
async fn run(options: AnyConnectOptions, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut conn: Option<AnyConnection> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // The other task waits here while this one gathers, then gathers the next batch
            // while this one commits.
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        commit_batch(&options, &mut conn, &mut batch).await;
    }
}

/// One transaction for the batch; every caller is answered after the commit.
async fn commit_batch(
    options: &AnyConnectOptions,
    conn: &mut Option<AnyConnection>,
    batch: &mut Vec<Job>,
) {
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let committed = match begin(options, conn).await {
        Ok(c) => run_batch(c, batch, &mut answers).await,
        Err(e) => Err(e),
    };
    // Writes that never ran are dropped unanswered: their callers hear that the ledger's
    // connection failed before they ran.
    batch.clear();
    let failure = committed.err().map(|e| {
        tracing::error!(error = %e, writes = answers.len(), "a ledger batch did not commit");
        // Whatever state the connection is in (a transaction open, a lost socket), a new
        // one serves the next batch; dropping this one ends its transaction on the server.
        *conn = None;
        CommitFailure {
            out_of_space: LedgerError::Db(e).is_out_of_space(),
            message: "the ledger could not commit".into(),
        }
    });
    for answer in answers {
        answer(failure.as_ref());
    }
}

/// `BEGIN` on the task's connection, opening one if it has none; a connection that fails
/// here is replaced once (nothing of the batch has run on it).
async fn begin<'c>(
    options: &AnyConnectOptions,
    slot: &'c mut Option<AnyConnection>,
) -> Result<&'c mut AnyConnection, sqlx::Error> {
    for attempt in 0..2 {
        if slot.is_none() {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            *slot = Some(connected);
        }
        let Some(c) = slot.as_mut() else { continue };
        match c.execute("BEGIN").await {
            Ok(_) => break,
            Err(e) => {
                *slot = None;
                if attempt == 1 {
                    return Err(e);
                }
                tracing::info!(error = %e, "a ledger writer's connection failed; opening another");
            }
        }
    }
    slot.as_mut().ok_or(sqlx::Error::PoolClosed)
}

/// Run the batch inside the open transaction and commit. Each write runs in a savepoint of
/// its own so a failed write is undone alone; a batch of one needs none (its failure is its
/// answer, and rolls back a transaction that held nothing else).
async fn run_batch(
    c: &mut AnyConnection,
    batch: &mut Vec<Job>,
    answers: &mut Vec<Answer>,
) -> Result<(), sqlx::Error> {
    if batch.len() == 1 {
        if let Some(job) = batch.pop() {
            let (ok, answer) = job(c).await;
            answers.push(answer);
            c.execute(if ok { "COMMIT" } else { "ROLLBACK" }).await?;
            return Ok(());
        }
    }
    for job in batch.drain(..) {
        c.execute("SAVEPOINT w").await?;
        let (ok, answer) = job(c).await;
        answers.push(answer);
        if !ok {
            c.execute("ROLLBACK TO SAVEPOINT w").await?;
        }
        c.execute("RELEASE SAVEPOINT w").await?;
    }
    c.execute("COMMIT").await?;
    Ok(())
}
