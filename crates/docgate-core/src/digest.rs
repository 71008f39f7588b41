//! Digests in one pass, off the async reactor, overlapping the network.
//!
//! Hashing 64 KiB with SHA-256 + SHA-512 + MD5 costs ~200 µs of CPU: far too long to run
//! between two `.await`s on a reactor thread. So every block goes to the hashing pool
//! ([`pool`]: one thread per core, whatever the number of uploads), split into lanes by
//! measured cost ([`cost`]: fixed groups, or one lane per digest that the pool shares out
//! when that is faster; on 2 cores the three digests hash ~520 MiB/s together, twice one
//! thread). The hash functions are libcrypto's where it is linked ([`engine`]). The block is
//! a shared [`Bytes`]: each lane holds a reference, no copy is made.
//!
//! [`DigestPipeline::feed`] returns as soon as the block is queued; each lane drains its own
//! queue on a pool thread, so a cheap lane runs ahead of a dear one instead of waiting for it
//! at every block, and the caller reads the next block from the network while earlier ones
//! are hashed. A lane at most `LANE_DEPTH` blocks behind bounds the memory; a pool thread is
//! only held while there is something to hash, and gives way to other uploads' lanes every
//! `LANE_DEPTH` blocks.
//!
//! The content scanner ([`crate::scan`]) rides along as one more consumer of the same blocks:
//! it is planned into the cheapest lane like a digest, so it too runs off the reactor and in
//! parallel with the hashes. A finding is visible at once through
//! [`DigestPipeline::scan_error`], so the upload can be cut off without waiting for the end.

mod cost;
mod engine;
mod pool;

use std::{
    collections::VecDeque,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use engine::Engine;

pub use cost::{lanes, measured as measured_costs, partition, Algorithm, Costs};

use crate::{
    policy::DigestSet,
    scan::{ContentScan, ScanError},
};

/// Blocks at most this big are hashed in place: handing them to a thread costs more than the
/// hashing itself (16 KiB of SHA-256 is ~11 µs).
const INLINE_BLOCK: usize = 16 * 1024;

/// The digests of one document, as raw bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    pub sha512: Option<[u8; 64]>,
    pub md5: Option<[u8; 16]>,
}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digests")
            .field("sha256", &hex::encode(self.sha256))
            .field("sha512", &self.sha512.map(hex::encode))
            .field("md5", &self.md5.map(hex::encode))
            .finish()
    }
}

impl Digests {
    /// One-shot digests of an in-memory slice, always by the pure-Rust implementations: the
    /// reference the tests hold every pipeline (libcrypto's, where linked) to.
    pub fn of(data: &[u8], set: DigestSet) -> Digests {
        let mut out = Digests {
            sha256: [0; 32],
            sha512: None,
            md5: None,
        };
        for algorithm in set.algorithms() {
            let mut engine = Engine::pure_rust(algorithm);
            engine.update(data);
            // The pure-Rust engines cannot fail.
            let _ = engine.finish_into(&mut out);
        }
        out
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub fn to_hex(&self) -> DigestsHex {
        DigestsHex {
            sha256: hex::encode(self.sha256),
            sha512: self.sha512.map(hex::encode),
            md5: self.md5.map(hex::encode),
        }
    }

    pub fn from_hex(h: &DigestsHex) -> Option<Digests> {
        fn arr<const N: usize>(s: &str) -> Option<[u8; N]> {
            hex::decode(s).ok()?.try_into().ok()
        }
        Some(Digests {
            sha256: arr(&h.sha256)?,
            sha512: match &h.sha512 {
                Some(s) => Some(arr(s)?),
                None => None,
            },
            md5: match &h.md5 {
                Some(s) => Some(arr(s)?),
                None => None,
            },
        })
    }
}

/// Hex form, as it appears in receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestsHex {
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// One consumer of blocks: a running hash, or the content scanner.
enum Hasher {
    Digest(Engine),
    Scan(Box<ScanLane>),
}

/// The content scanner in a lane, and where it reports a finding.
struct ScanLane {
    scan: ContentScan,
    verdict: Arc<ScanVerdict>,
}

/// A scan finding, shared between the lane that found it and the pipeline's owner.
#[derive(Default)]
struct ScanVerdict {
    failed: AtomicBool,
    error: Mutex<Option<ScanError>>,
}

impl ScanVerdict {
    fn error(&self) -> Option<ScanError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.error).clone()
    }
}

impl Hasher {
    fn all(set: DigestSet) -> Vec<Hasher> {
        set.algorithms()
            .map(|a| Hasher::Digest(Engine::new(a)))
            .collect()
    }

    /// CPU time per MiB on this machine, as measured at first use (see [`cost`]).
    fn cost(&self, costs: &Costs) -> u64 {
        match self {
            Hasher::Digest(e) => costs.of(e.algorithm()),
            Hasher::Scan(_) => costs.scan(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Hasher::Digest(e) => e.algorithm().name(),
            Hasher::Scan(_) => "scan",
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Digest(e) => e.update(data),
            Hasher::Scan(lane) => {
                if lane.verdict.failed.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = lane.scan.feed(data) {
                    *lock(&lane.verdict.error) = Some(e);
                    lane.verdict.failed.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// The digests one thread computes, block after block.
type Lane = Vec<Hasher>;

/// Split the digests into lanes by their measured costs (see [`lanes`]): fixed groups, at
/// most one per core, as even as they can be; or one lane per digest when the pool sharing
/// the cores between them is clearly faster. Which digest is dearest, and which split wins,
/// is the machine's answer, not ours.
fn plan(hashers: Vec<Hasher>, parallelism: usize, costs: impl FnOnce() -> Costs) -> Vec<Lane> {
    if hashers.len() < 2 || parallelism < 2 {
        // One lane whatever the costs: do not spend milliseconds measuring them.
        return vec![hashers];
    }
    let costs = costs();
    let weights: Vec<u64> = hashers.iter().map(|h| h.cost(&costs)).collect();
    let groups = lanes(&weights, parallelism);
    let mut slots: Vec<Option<Hasher>> = hashers.into_iter().map(Some).collect();
    groups
        .into_iter()
        .map(|g| g.into_iter().filter_map(|i| slots[i].take()).collect())
        .collect()
}

/// The lanes a pipeline for `set` (without the scanner) uses on this machine, and the costs
/// they were split by: what `docgate hash --verbose` reports.
#[derive(Debug, Clone)]
pub struct LanePlan {
    pub costs: Costs,
    /// Per lane, the digests it computes and its total cost (ns per MiB).
    pub lanes: Vec<(Vec<&'static str>, u64)>,
    /// Threads of the hashing pool.
    pub threads: usize,
    /// Per digest, the implementation that computes it (libcrypto or pure Rust).
    pub implementations: Vec<(&'static str, &'static str)>,
}

impl fmt::Display for LanePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "implementations:")?;
        for (name, implementation) in &self.implementations {
            write!(f, " {name} {implementation};")?;
        }
        writeln!(f)?;
        writeln!(f, "measured digest costs: {}", self.costs)?;
        if self.lanes.len() > self.threads {
            write!(
                f,
                "lanes (one per digest, sharing {} hashing threads):",
                self.threads
            )?;
        } else {
            write!(f, "lanes ({} hashing threads):", self.threads)?;
        }
        for (names, cost) in &self.lanes {
            write!(f, " [{}] {} µs/MiB;", names.join(" + "), cost / 1000)?;
        }
        Ok(())
    }
}

/// See [`LanePlan`]; measures the costs if nothing has yet.
pub fn lane_plan(set: DigestSet) -> Result<LanePlan, DigestError> {
    let costs = cost::measured();
    let threads = pool::pool()?.threads();
    let lanes = plan(Hasher::all(set), parallelism(), || costs)
        .into_iter()
        .map(|lane| {
            let names = lane.iter().map(Hasher::name).collect();
            let total = lane.iter().map(|h| h.cost(&costs)).sum();
            (names, total)
        })
        .collect();
    let implementations = set
        .algorithms()
        .map(|a| (a.name(), Engine::new(a).implementation()))
        .collect();
    Ok(LanePlan {
        costs,
        lanes,
        threads,
        implementations,
    })
}

fn parallelism() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The digests, and the scanner if one rode along.
fn finish_hashers(
    hashers: impl IntoIterator<Item = Hasher>,
) -> Result<(Digests, Option<Box<ScanLane>>), DigestError> {
    let mut out = Digests {
        sha256: [0; 32],
        sha512: None,
        md5: None,
    };
    let mut scan = None;
    for h in hashers {
        match h {
            Hasher::Digest(e) => e.finish_into(&mut out)?,
            Hasher::Scan(lane) => scan = Some(lane),
        }
    }
    Ok((out, scan))
}

/// A hashing task died (only a panic inside a hash function could do that), or the hashing
/// pool could not start.
#[derive(Debug, thiserror::Error)]
#[error("digest worker failed: {0}")]
pub struct DigestError(String);

impl DigestError {
    pub(crate) fn new(msg: impl Into<String>) -> DigestError {
        DigestError(msg.into())
    }
}

/// How many blocks one lane may lag behind the input. Lanes never cost exactly the same: if
/// every block waited for the slowest lane, a core would idle while the fast one waits. With
/// a queue per lane the fast one runs ahead and both cores stay busy; the depth bounds the
/// blocks alive at once (memory) and is the back-pressure on the reader.
const LANE_DEPTH: usize = 2;

#[derive(Default)]
struct LaneQueue {
    blocks: VecDeque<Bytes>,
    /// A pool job for this lane is queued or running: only it pops blocks.
    running: bool,
}

/// One lane's queue, its hashers and the signal the draining job gives after each block.
struct LaneShared {
    queue: Mutex<LaneQueue>,
    hasher: Mutex<Option<Lane>>,
    progress: Notify,
    /// A hasher panicked: the lane's digests are lost and the upload must fail.
    failed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere, which `finish` reports on its own.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LaneShared {
    /// The pool job: hash queued blocks until the queue is empty. After `LANE_DEPTH` blocks
    /// the lane goes to the back of the pool's queue (when there is room), so one fast
    /// upload cannot hold a core while other uploads' lanes wait.
    fn run(self: Arc<Self>) {
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.drain(LANE_DEPTH))) {
                Ok(true) => return,
                Ok(false) => {
                    let Ok(pool) = pool::pool() else { continue };
                    let again = self.clone();
                    if pool.try_submit(Box::new(move || again.run())).is_ok() {
                        return;
                    }
                }
                Err(_) => {
                    self.failed.store(true, Ordering::Release);
                    let mut q = lock(&self.queue);
                    q.blocks.clear();
                    q.running = false;
                    drop(q);
                    self.progress.notify_one();
                    return;
                }
            }
        }
    }

    /// Hash up to `budget` queued blocks; true once the queue is empty (and the lane idle).
    fn drain(&self, budget: usize) -> bool {
        for _ in 0..budget {
            let block = {
                let mut q = lock(&self.queue);
                match q.blocks.pop_front() {
                    Some(b) => b,
                    None => {
                        q.running = false;
                        drop(q);
                        self.progress.notify_one();
                        return true;
                    }
                }
            };
            if let Some(lane) = lock(&self.hasher).as_mut() {
                lane.iter_mut().for_each(|h| h.update(&block));
            }
            self.progress.notify_one();
        }
        false
    }

    fn check(&self) -> Result<(), DigestError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(DigestError::new("a digest panicked"));
        }
        Ok(())
    }
}

/// What `feed` does with a block for one lane.
enum Next {
    /// The lane is idle and the block small: hash it here.
    Inline,
    /// Room in the queue, and no job drains it: start one.
    Spawn,
    /// Queued behind a running task.
    Queued,
    /// The queue is full: wait for the task to make room.
    Wait,
}

/// Incremental digests over a stream of blocks; see the module docs.
pub struct DigestPipeline {
    lanes: Vec<Arc<LaneShared>>,
    bytes: u64,
    scan: Option<Arc<ScanVerdict>>,
}

impl fmt::Debug for DigestPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestPipeline")
            .field("lanes", &self.lanes.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl DigestPipeline {
    pub fn new(set: DigestSet) -> DigestPipeline {
        DigestPipeline::with_scan(set, ContentScan::off())
    }

    /// Digests, and `scan` fed the same blocks on the same blocking threads (an inert scanner
    /// is left out).
    pub fn with_scan(set: DigestSet, scan: ContentScan) -> DigestPipeline {
        let mut hashers = Hasher::all(set);
        let verdict = scan.is_active().then(|| Arc::new(ScanVerdict::default()));
        if let Some(verdict) = &verdict {
            hashers.push(Hasher::Scan(Box::new(ScanLane {
                scan,
                verdict: verdict.clone(),
            })));
        }
        let lanes = plan(hashers, parallelism(), cost::measured)
            .into_iter()
            .map(|lane| {
                Arc::new(LaneShared {
                    queue: Mutex::new(LaneQueue::default()),
                    hasher: Mutex::new(Some(lane)),
                    progress: Notify::new(),
                    failed: AtomicBool::new(false),
                })
            })
            .collect();
        DigestPipeline {
            lanes,
            bytes: 0,
            scan: verdict,
        }
    }

    /// What the scanner found so far, if anything (cheap: an atomic load while clean).
    pub fn scan_error(&self) -> Option<ScanError> {
        self.scan.as_ref().and_then(|v| v.error())
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Queue `block` for every digest; returns once every queue has room for it (so it only
    /// waits when a digest is `LANE_DEPTH` blocks behind).
    pub async fn feed(&mut self, block: Bytes) -> Result<(), DigestError> {
        self.bytes += block.len() as u64;
        for shared in &self.lanes {
            loop {
                shared.check()?;
                // Decide under the lock, act after it (a guard must not live across an await).
                let next = {
                    let mut q = lock(&shared.queue);
                    if !q.running && q.blocks.is_empty() && block.len() <= INLINE_BLOCK {
                        Next::Inline
                    } else if q.blocks.len() < LANE_DEPTH {
                        if q.running {
                            q.blocks.push_back(block.clone());
                            Next::Queued
                        } else {
                            Next::Spawn
                        }
                    } else {
                        Next::Wait
                    }
                };
                match next {
                    Next::Inline => {
                        if let Some(lane) = lock(&shared.hasher).as_mut() {
                            lane.iter_mut().for_each(|h| h.update(&block));
                        }
                        break;
                    }
                    Next::Spawn => {
                        // A place in the pool's queue first, then the block: dropped while
                        // waiting for the place, this future leaves the lane as it was.
                        // Only `feed` (behind `&mut self`) starts jobs, so the lane is
                        // still idle once the place is ours.
                        let slot = pool::pool()?.reserve().await?;
                        {
                            let mut q = lock(&shared.queue);
                            q.blocks.push_back(block.clone());
                            q.running = true;
                        }
                        let task = shared.clone();
                        slot.send(Box::new(move || task.run()));
                        break;
                    }
                    Next::Queued => break,
                    Next::Wait => shared.progress.notified().await,
                }
            }
        }
        Ok(())
    }

    /// Wait for every queued block and return the digests.
    pub async fn finish(self) -> Result<Digests, DigestError> {
        Ok(self.finish_scanned().await?.0)
    }

    /// Wait for every queued block; return the digests and the scanner's verdict on the
    /// whole document (`Ok` when no scanner rode along).
    pub async fn finish_scanned(self) -> Result<(Digests, Result<(), ScanError>), DigestError> {
        let mut lanes = Vec::with_capacity(self.lanes.len());
        for shared in self.lanes {
            loop {
                shared.check()?;
                let idle = {
                    let q = lock(&shared.queue);
                    !q.running && q.blocks.is_empty()
                };
                if idle {
                    break;
                }
                shared.progress.notified().await;
            }
            shared.check()?;
            let lane = lock(&shared.hasher)
                .take()
                .ok_or_else(|| DigestError("hasher missing".into()))?;
            lanes.push(lane);
        }
        let (digests, scan) = finish_hashers(lanes.into_iter().flatten())?;
        let verdict = match scan {
            Some(lane) => match lane.verdict.error() {
                Some(e) => Err(e),
                None => lane.scan.finish(),
            },
            None => Ok(()),
        };
        Ok((digests, verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_equals_one_shot_whatever_the_block_sizes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = Digests::of(&data, DigestSet::ALL);
        for block in [1usize, 4096, INLINE_BLOCK + 1, 1 << 20] {
            let mut p = DigestPipeline::new(DigestSet::ALL);
            for chunk in data
                .chunks(block)
                .take(if block == 1 { 5000 } else { usize::MAX })
            {
                p.feed(Bytes::copy_from_slice(chunk)).await.expect("feed");
            }
            if block == 1 {
                // a byte-by-byte start, then the rest in one go
                p.feed(Bytes::copy_from_slice(&data[5000..]))
                    .await
                    .expect("feed");
            }
            assert_eq!(p.len(), data.len() as u64);
            assert_eq!(
                p.finish().await.expect("finish"),
                expected,
                "block size {block}"
            );
        }
    }

    /// 64 uploads at once share the pool's few threads (lanes hand their thread on after a
    /// few blocks): every one still gets its own, right digests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_pipelines_at_once_share_the_pool_and_stay_correct() {
        let mut tasks = Vec::new();
        for n in 0..64u32 {
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + n) as u8).collect();
                let mut p = DigestPipeline::new(DigestSet::ALL);
                for chunk in data.chunks(INLINE_BLOCK * 2) {
                    p.feed(Bytes::copy_from_slice(chunk)).await.expect("feed");
                }
                (p.finish().await.expect("finish"), data)
            }));
        }
        for t in tasks {
            let (got, data) = t.await.expect("task");
            assert_eq!(got, Digests::of(&data, DigestSet::ALL));
        }
    }

    /// Regression: a lock guard held across an await made `feed` non-Send, and with it every
    /// upload handler.
    #[test]
    fn feeding_and_finishing_can_move_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        let mut p = DigestPipeline::new(DigestSet::ALL);
        assert_send(&p.feed(Bytes::new()));
        assert_send(&DigestPipeline::new(DigestSet::ALL).finish());
    }

    #[test]
    fn lanes_follow_the_costs_given() {
        let names = |lanes: Vec<Lane>| -> Vec<Vec<&str>> {
            lanes
                .iter()
                .map(|l| l.iter().map(Hasher::name).collect())
                .collect()
        };
        let all = || Hasher::all(DigestSet::ALL);
        let intel = Costs {
            sha256: 700,
            sha512: 1900,
            md5: 1700,
        };
        let epyc = Costs {
            sha256: 700,
            sha512: 1500,
            md5: 2100,
        };
        // Fixed, the best is 2400 (md5 + sha256 | sha512); shared, 2150: one lane each.
        assert_eq!(
            names(plan(all(), 2, || intel)),
            vec![vec!["sha512"], vec!["md5"], vec!["sha256"]]
        );
        assert_eq!(
            // Fixed 2200 (sha512 + sha256 | md5) against shared 2150: not worth the hand-offs.
            names(plan(all(), 2, || epyc)),
            vec![vec!["sha512", "sha256"], vec!["md5"]]
        );
        assert_eq!(names(plan(all(), 8, || intel)).len(), 3);
        // One core, or one digest: one lane, and nothing is measured for it.
        let unmeasured = || -> Costs { panic!("costs measured for a single lane") };
        assert_eq!(
            names(plan(all(), 1, unmeasured)),
            vec![vec!["sha256", "sha512", "md5"]]
        );
        assert_eq!(
            names(plan(Hasher::all(DigestSet::SHA256), 8, unmeasured)),
            vec![vec!["sha256"]]
        );
    }

    #[test]
    fn known_answers() {
        let d = Digests::of(b"abc", DigestSet::ALL).to_hex();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.sha512.as_deref(),
            Some("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        );
        assert_eq!(d.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(
            Digests::from_hex(&d),
            Some(Digests::of(b"abc", DigestSet::ALL))
        );
    }

    #[test]
    fn only_requested_digests_are_computed() {
        let d = Digests::of(b"abc", DigestSet::SHA256);
        assert!(d.sha512.is_none() && d.md5.is_none());
    }
}
