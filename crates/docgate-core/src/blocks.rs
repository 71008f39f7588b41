//! Block buffers reused across uploads, from a small bounded pool.
//!
//! The binary's allocator hands freed memory back to the system at once (that is what lets
//! a burst's memory go away: see `return_freed_memory_at_once` in the binary). The price was
//! that every block of every document was new memory: a page fault per 4 KiB, about 15 000
//! for one 16 MiB Taler upload (ingest blocks, sealed batches, opened segments), and on the
//! VMs we measure on a first touch of such a page can cost the hypervisor's time too.
//!
//! So the buffers on those paths come from here: [`take`] gives an empty buffer of
//! [`CAPACITY`], [`freeze`] turns it into `Bytes` that give it back when the last clone is
//! dropped, wherever that happens (a hashing lane, the spool writer, the HTTP client). The
//! pool keeps at most [`KEPT`] buffers (2 MiB); past that, a returned buffer is freed as
//! before, so the pool never holds more than a few uploads' blocks in flight.
//!
//! Pooling bounds what is *kept*, not what is *in use*. Each upload has a block being filled
//! from its socket, and the blocks it handed on wait in the digest lanes and the spool writer
//! until they are hashed and written. Sixty-four uploads arriving faster than two cores can
//! hash them held four or five blocks each, and the burst's peak memory moved with how far
//! behind the lanes fell. So the blocks handed on draw on one budget for the whole process
//! ([`INGEST`], [`Budget::admit`]): when [`IN_FLIGHT`] of them wait, the next upload's block
//! waits for one to be done before it goes on, and that upload stops reading its socket
//! meanwhile (TCP pushes back on its client). Only blocks that are released without their
//! upload's help count — hashed by the pool's threads, written by blocking threads — so
//! waiting for the budget cannot deadlock, and a slow client holds none of it.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The block pool's buffers: a spool block.
pub const CAPACITY: usize = crate::spool::BLOCK;

/// Blocks the pool keeps for reuse; the rest are freed when returned.
pub const KEPT: usize = 8;

/// Spool blocks (ingest) and sealed write batches.
static BLOCKS: Pool = Pool::new(CAPACITY, KEPT);

/// Segments opened from an encrypted spool, and the one being sealed by each spool writer (a
/// segment and its tag; 16 of them, 1 MiB): a reader hands out one segment at a time, so a
/// block each would hold four times the memory.
pub static SEGMENTS: Pool = Pool::new(crate::seal::SEGMENT + crate::seal::TAG, 16);

/// An empty buffer of `CAPACITY` from the block pool.
pub fn take() -> Vec<u8> {
    BLOCKS.take()
}

/// `buf` as `Bytes`, returned to the block pool when the last clone is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    BLOCKS.freeze(buf)
}

/// Blocks handed on by all uploads together (8 MiB): enough for several large uploads at
/// full speed on a few cores, where the lanes keep two blocks each.
pub const IN_FLIGHT: usize = 32;

/// The ingest's budget of blocks in flight.
pub static INGEST: Budget = Budget::new(IN_FLIGHT);

/// A bound on blocks in flight, each counted until its last clone is dropped.
#[derive(Debug)]
pub struct Budget {
    permits: Semaphore,
}

impl Budget {
    /// A budget of `blocks`.
    pub const fn new(blocks: usize) -> Budget {
        Budget {
            permits: Semaphore::const_new(blocks),
        }
    }

    /// `block`, counted against the budget until its last clone is dropped; waits (first
    /// come, first served) while the budget is spent.
    pub async fn admit(&'static self, block: Bytes) -> Bytes {
        match self.permits.acquire().await {
            Ok(permit) => Bytes::from_owner(Admitted {
                block,
                _permit: permit,
            }),
            // The semaphore is never closed; were it, the block would go on uncounted.
            Err(_) => block,
        }
    }

    /// Blocks that may be admitted now without waiting.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// A block counted against a budget; the count is given back on drop.
struct Admitted {
    block: Bytes,
    _permit: SemaphorePermit<'static>,
}

impl AsRef<[u8]> for Admitted {
    fn as_ref(&self) -> &[u8] {
        &self.block
    }
}

/// A bounded free list of buffers.
#[derive(Debug)]
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    kept: usize,
}

impl Pool {
    /// A pool of buffers of `capacity` that keeps at most `kept` of them.
    pub const fn new(capacity: usize, kept: usize) -> Pool {
        Pool {
            free: Mutex::new(Vec::new()),
            capacity,
            kept,
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock leaves a list of empty buffers: still fine to use.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer of the pool's capacity: a returned one when there is one, a new one
    /// otherwise.
    pub fn take(&self) -> Vec<u8> {
        self.free_list()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// `buf` as `Bytes`; its memory comes back here when the last clone is dropped (only a
    /// buffer of exactly the pool's capacity, so the pool's memory stays bounded).
    pub fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returned { buf, pool: self })
    }

    /// Buffers kept now.
    pub fn kept(&self) -> usize {
        self.free_list().len()
    }

    /// Keep `buf` for reuse, if it is one of the pool's size and the pool has room; free it
    /// otherwise.
    pub fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.capacity {
            return;
        }
        buf.clear();
        let mut free = self.free_list();
        if free.len() < self.kept {
            free.push(buf);
        }
    }
}

/// Owns a frozen buffer; gives it back on drop.
struct Returned {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kept: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(CAPACITY, kept)))
    }

    #[test]
    fn a_buffer_comes_back_when_its_last_clone_is_dropped() {
        let pool = pool(2);
        let mut buf = pool.take();
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), CAPACITY);
        buf.extend_from_slice(b"block");
        let ptr = buf.as_ptr();
        let frozen = pool.freeze(buf);
        let clone = frozen.slice(1..3);
        assert_eq!(&frozen[..], b"block");
        drop(frozen);
        assert_eq!(pool.kept(), 0, "a clone still holds it");
        assert_eq!(&clone[..], b"lo");
        drop(clone);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same memory, reused");
        assert!(again.is_empty());
    }

    #[tokio::test]
    async fn a_spent_budget_holds_the_next_block_until_one_is_dropped() {
        let budget: &'static Budget = Box::leak(Box::new(Budget::new(2)));
        let a = budget.admit(Bytes::from_static(b"first")).await;
        let b = budget.admit(Bytes::from_static(b"second")).await;
        assert_eq!(budget.available(), 0);
        let mut third = Box::pin(budget.admit(Bytes::from_static(b"third")));
        assert!(
            futures_util::poll!(third.as_mut()).is_pending(),
            "the budget is spent"
        );
        let clone = a.slice(0..2);
        drop(a);
        assert!(
            futures_util::poll!(third.as_mut()).is_pending(),
            "a clone still counts"
        );
        drop(clone);
        let third = third.await;
        assert_eq!(&third[..], b"third");
        assert_eq!(&b[..], b"second");
        drop((b, third));
        assert_eq!(budget.available(), 2);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_and_only_its_own_size() {
        let pool = pool(2);
        let held: Vec<Vec<u8>> = (0..5).map(|_| pool.take()).collect();
        for b in held {
            drop(pool.freeze(b));
        }
        assert_eq!(pool.kept(), 2);
        let pool = self::pool(2);
        drop(pool.freeze(Vec::with_capacity(CAPACITY * 4)));
        drop(pool.freeze(b"small".to_vec()));
        assert_eq!(pool.kept(), 0);
    }
}
