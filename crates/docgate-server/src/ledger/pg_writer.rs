//! PostgreSQL writes on kept connections: a few writer tasks, each with a connection of its
//! own, run the waiting writes one transaction each.
//!
//! A write through sqlx's pool cost, besides its statements, two round trips more than
//! `BEGIN` and `COMMIT`: the pool pings a connection when it is taken and again when it is
//! given back. On this project's two-core machines round trips were most of PostgreSQL's
//! CPU per upload (sending and receiving on the socket), not the statements. A writer task
//! keeps its connection and runs `BEGIN`, the write, `COMMIT`, then answers its caller: an
//! `Ok` still means durable.
//!
//! Why not one transaction for many writes, as the SQLite writer does: a transaction keeps
//! every row lock it takes until it commits, so two batches touching the same rows in
//! opposite orders (two customers claimed in crossed order, a note and a notification of
//! the same two uploads) deadlock, and PostgreSQL breaks that only after `deadlock_timeout`
//! by failing one write; and with the server on another machine each batch's round trips are
//! paid one after another, where several connections pay them side by side. PostgreSQL
//! already shares one WAL flush between commits that arrive together.
//!
//! A kept connection can die while idle (the server restarted, a proxy cut it). The pool
//! found that out with its ping; here `BEGIN` does: nothing of the write has run when it
//! fails, so the write is tried once more on a new connection. A server that stops answering
//! without closing the connection is given [`WRITE_TIMEOUT`]; the connection is then dropped,
//! and a transaction it left open on the server is ended there after
//! `idle_in_transaction_session_timeout` (set on every writer connection), so its row locks
//! do not hold up the other replicas.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{future::BoxFuture, FutureExt};
use sqlx::{any::AnyConnectOptions, AnyConnection, ConnectOptions, Executor};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{
    writer::{answer, Answer, CommitFailure},
    LedgerError, LedgerResult,
};

/// Writer tasks (and connections), each opened the first time its task has a write: as many
/// writes in flight as the pool used to allow.
pub const WRITERS: usize = 16;

/// Writes waiting at most; past it, callers wait for room (back-pressure).
const QUEUE: usize = 1024;

/// How long opening a writer's connection may take (as long as the pool waited for one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one write's transaction may take, `BEGIN` to `COMMIT`, before its connection is
/// given up (the server stopped answering; a slow statement or a lock wait is ended sooner,
/// by the server, see [`SESSION_SETTINGS`]).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write may wait for a writer (as long as a write waited for a pool connection):
/// past it, its caller hears a retryable error and the write never runs.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Set on every writer connection. The server ends a statement that runs, or waits for a
/// lock, too long (the write fails alone and the connection stays usable), and a transaction
/// left open by a writer that vanished (its replica paused or cut off), so its row locks do
/// not hold up the other replicas.
const SESSION_SETTINGS: [&str; 3] = [
    "SET statement_timeout = '20s'",
    "SET lock_timeout = '10s'",
    "SET idle_in_transaction_session_timeout = '60s'",
];

/// One write, run on a writer's connection inside its transaction: whether to commit it (it
/// succeeded and its caller still waits), and how to answer the caller once the
/// transaction's fate is known.
type Write = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Answer)> + Send>;

/// A write and when it was handed over.
struct Job {
    queued: tokio::time::Instant,
    write: Write,
    /// Set just before its `COMMIT` is sent: a write dropped unanswered before that was
    /// certainly not committed (the server rolls back a transaction whose connection ends).
    commit_sent: Arc<AtomicBool>,
}

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

    /// Run `write` in a transaction of its own; its result once committed (never before: an
    /// `Ok` means durable). The write must not commit or roll back itself.
    pub async fn write<T, F>(&self, write: F) -> LedgerResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, LedgerResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<LedgerResult<T>>();
        let run: Write = Box::new(move |conn| {
            Box::pin(async move {
                let result = write(conn).await;
                // A caller gone away (its client disconnected, its delivery cancelled at
                // shutdown) gets its write rolled back, as dropping its transaction did.
                let ok = result.is_ok() && !tx.is_closed();
                (ok, answer(result, tx))
            })
        });
        let not_done = |maybe_committed: bool, message: &str| {
            LedgerError::Commit(CommitFailure {
                out_of_space: false,
                maybe_committed,
                message: message.into(),
            })
        };
        let commit_sent = Arc::new(AtomicBool::new(false));
        let job = Job {
            queued: tokio::time::Instant::now(),
            write: run,
            commit_sent: commit_sent.clone(),
        };
        match tokio::time::timeout(QUEUE_WAIT, self.jobs.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(LedgerError::Closed),
            Err(_) => return Err(not_done(false, "no ledger writer was free in time")),
        }
        // A write dropped unanswered did not complete: it waited too long for a writer, no
        // connection could be had (PostgreSQL down), or its connection failed or timed out
        // while it ran. Only once its COMMIT was sent may it have committed all the same.
        rx.await.map_err(|_| {
            if commit_sent.load(Ordering::Acquire) {
                not_done(true, "the ledger did not complete the write")
            } else {
                not_done(false, "the ledger could not run the write")
            }
        })?
    }
}

/// One writer task: take a write, run it, answer; until every handle is dropped.
async fn run(options: AnyConnectOptions, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut conn: Option<AnyConnection> = None;
    loop {
        // The other tasks wait here while this one waits for a write.
        let Some(job) = queue.lock().await.recv().await else {
            return;
        };
        if job.queued.elapsed() > QUEUE_WAIT {
            // Its caller has been told, or is about to be, that the ledger is unavailable.
            continue;
        }
        let ran = tokio::time::timeout(WRITE_TIMEOUT, run_one(&options, &mut conn, job)).await;
        let failure = match ran {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {WRITE_TIMEOUT:?}")),
        };
        if let Some(error) = failure {
            // Whatever state the connection is in (a transaction open, a lost socket), a
            // new one serves the next write; dropping this one ends its transaction.
            tracing::error!(%error, "a ledger write did not complete; its connection is dropped");
            conn = None;
        }
    }
}

/// `BEGIN`, the write, `COMMIT` (or `ROLLBACK` when the write failed or its caller left),
/// then the answer.
async fn run_one(
    options: &AnyConnectOptions,
    conn: &mut Option<AnyConnection>,
    job: Job,
) -> Result<(), LedgerError> {
    let c = begin(options, conn).await?;
    // A panicking write must not end the task: its caller hears that the write did not
    // complete, and the connection, in an unknown state, is dropped.
    let Ok((ok, answer)) = AssertUnwindSafe((job.write)(c)).catch_unwind().await else {
        return Err(LedgerError::Bug("a ledger write panicked"));
    };
    if !ok {
        // The caller hears its write's own error (a full disk stays a full disk), whatever
        // the rollback does; a failed rollback only costs the connection.
        let rolled_back = c.execute("ROLLBACK").await;
        answer(None);
        return rolled_back.map(|_| ()).map_err(LedgerError::Db);
    }
    job.commit_sent.store(true, Ordering::Release);
    match c.execute("COMMIT").await {
        Ok(_) => {
            answer(None);
            Ok(())
        }
        Err(e) => {
            // The server's own refusal is a rollback; a lost connection leaves it unknown.
            let maybe_committed = !matches!(e, sqlx::Error::Database(_));
            let e = LedgerError::Db(e);
            answer(Some(&CommitFailure {
                out_of_space: e.is_out_of_space(),
                maybe_committed,
                message: "the ledger could not commit".into(),
            }));
            Err(e)
        }
    }
}

/// `BEGIN` on the task's connection, opening one if it has none; a connection that fails
/// here is replaced once (nothing of the write has run on it).
async fn begin<'c>(
    options: &AnyConnectOptions,
    slot: &'c mut Option<AnyConnection>,
) -> Result<&'c mut AnyConnection, sqlx::Error> {
    for attempt in 0..2 {
        if slot.is_none() {
            let mut connected = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            for setting in SESSION_SETTINGS {
                connected.execute(setting).await?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// With PostgreSQL unreachable, a write that never got a connection was told "may have
    /// committed": every refused upload answered "may not have been recorded" and kept its
    /// documents in the spool until the hourly orphan sweep.
    #[tokio::test]
    async fn regression_a_write_that_never_got_a_connection_did_not_commit() {
        sqlx::any::install_default_drivers();
        // A port nothing listens on: every connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let options: AnyConnectOptions = format!("postgres://docgate@127.0.0.1:{port}/docgate")
            .parse()
            .expect("options");
        let writer = PgWriter::start(options);
        let refused = writer
            .write(|c| Box::pin(async move { Ok(c.execute("SELECT 1").await.map(|_| ())?) }))
            .await;
        match refused {
            Err(e @ LedgerError::Commit(_)) => assert!(!e.maybe_committed(), "{e:?}"),
            other => panic!("expected a failed write, got {other:?}"),
        }
    }
}
