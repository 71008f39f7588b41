//! The hashing pool: one std thread per core, fed by a bounded queue.
//!
//! Digest work used to go to tokio's blocking pool, which grows a thread per waiting task: 64
//! concurrent uploads with three lanes each made hundreds of threads (each with its stack and
//! malloc arena), and the memory stayed after the burst. Hashing is pure CPU, so more threads
//! than cores only adds contention; a fixed pool keeps threads (and arenas) bounded whatever
//! the load, and the queue in front of it is the back-pressure.
//!
//! A job is a lane's "drain what is queued" task. A lane has at most one job queued or
//! running at a time, so the queue holds at most one entry per active lane; its capacity
//! bounds that further, and a submitter that finds it full waits (asynchronously) for room.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Mutex, OnceLock},
};

use tokio::sync::mpsc;

use super::DigestError;

/// A unit of hashing work: drain one lane's queued blocks (or part of them).
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting for a thread. A lane has at most one job in flight, so this only fills when
/// more than this many lanes (three per upload at most) wait at once; then submitters wait.
const QUEUE: usize = 256;

pub(crate) struct HashPool {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

/// A reserved place in the pool's queue: sending through it cannot wait or fail.
pub(crate) struct Slot<'a>(mpsc::Permit<'a, Job>);

impl Slot<'_> {
    pub(crate) fn send(self, job: Job) {
        self.0.send(job);
    }
}

impl HashPool {
    fn start(threads: usize) -> Result<HashPool, String> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                // The default stack: the content scanner rides in a lane and inflates
                // streams; an untouched stack costs address space, not memory.
                .name(format!("docgate-hash-{i}"))
                .spawn(move || work(&rx))
                .map_err(|e| format!("starting hashing thread {i}: {e}"))?;
        }
        Ok(HashPool { jobs: tx, threads })
    }

    /// Wait for room in the queue. Reserving first and sending after keeps the caller
    /// cancel-safe: a caller dropped while waiting has changed nothing.
    pub(crate) async fn reserve(&self) -> Result<Slot<'_>, DigestError> {
        self.jobs
            .reserve()
            .await
            .map(Slot)
            .map_err(|_| DigestError::new("hashing pool stopped"))
    }

    /// Queue `job` if there is room now; give it back otherwise (used from pool threads,
    /// which must never wait for the queue they drain).
    pub(crate) fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => job,
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }
}

/// A pool thread: take the next job, run it, forever (the pool lives as long as the process).
fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // One thread waits on the queue while the others wait for the lock: whichever holds
        // it takes the next job and lets go before running it.
        let job = {
            let mut rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.blocking_recv()
        };
        let Some(job) = job else { return };
        // Lanes catch their own panics and report them; this only keeps the thread alive if
        // something else slipped through.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// The process-wide pool, started on first use with one thread per core.
pub(crate) fn pool() -> Result<&'static HashPool, DigestError> {
    static POOL: OnceLock<Result<HashPool, String>> = OnceLock::new();
    POOL.get_or_init(|| HashPool::start(super::parallelism()))
        .as_ref()
        .map_err(|e| DigestError::new(e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_a_fixed_set_of_named_threads() {
        let pool = pool().expect("pool");
        let names = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let (done_tx, mut done_rx) = mpsc::channel(64);
        for _ in 0..64 {
            let names = names.clone();
            let done = done_tx.clone();
            let slot = pool.reserve().await.expect("slot");
            slot.send(Box::new(move || {
                let name = std::thread::current().name().map(str::to_owned);
                names.lock().expect("names").insert(name);
                let _ = done.try_send(());
            }));
        }
        for _ in 0..64 {
            done_rx.recv().await.expect("job ran");
        }
        let names = names.lock().expect("names");
        assert!(names.len() <= pool.threads(), "{names:?}");
        assert!(names
            .iter()
            .all(|n| n.as_deref().is_some_and(|n| n.starts_with("docgate-hash-"))));
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_take_a_thread_down() {
        let pool = pool().expect("pool");
        for _ in 0..pool.threads() * 2 {
            pool.reserve()
                .await
                .expect("slot")
                .send(Box::new(|| panic!("boom")));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.reserve().await.expect("slot").send(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.await.expect("a job after the panics still runs");
    }
}
