//! Searching a stream of blocks as if it were one slice, with a fixed lookahead.
//!
//! A signature can straddle two blocks, and checking one needs a few bytes after its first
//! byte. [`Overlap`] hands a search function each start position exactly once, always with at
//! least [`LOOKAHEAD`] bytes after it (fewer only at the very end of the document), and keeps
//! no more than `LOOKAHEAD - 1` bytes between blocks.

/// Bytes of the document available from each examined position (the position included).
pub(super) const LOOKAHEAD: usize = 16;

/// The search function: examine the starts `0..starts` of `haystack` (bytes after them may be
/// read), where `haystack[0]` is byte `at` of the document.
pub(super) trait Examine<E> {
    fn examine(&mut self, haystack: &[u8], starts: usize, at: u64) -> Result<(), E>;
}

impl<E, F: FnMut(&[u8], usize, u64) -> Result<(), E>> Examine<E> for F {
    fn examine(&mut self, haystack: &[u8], starts: usize, at: u64) -> Result<(), E> {
        self(haystack, starts, at)
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Overlap {
    carry: [u8; LOOKAHEAD],
    len: usize,
    /// Document offset of `carry[0]`.
    carry_at: u64,
}

impl Overlap {
    /// Examine every start that now has its lookahead; `at` is the offset of `block[0]`.
    pub(super) fn feed<E>(
        &mut self,
        block: &[u8],
        at: u64,
        search: &mut impl Examine<E>,
    ) -> Result<(), E> {
        const KEEP: usize = LOOKAHEAD - 1;
        if block.is_empty() {
            return Ok(());
        }
        if self.len == 0 {
            self.carry_at = at;
        }
        let mut joint = [0u8; 2 * LOOKAHEAD];
        joint[..self.len].copy_from_slice(&self.carry[..self.len]);
        if self.len + block.len() < 2 * LOOKAHEAD {
            // A small block: gather it with the carry and examine what has its lookahead.
            let n = self.len + block.len();
            joint[self.len..n].copy_from_slice(block);
            let starts = n.saturating_sub(KEEP);
            if starts > 0 {
                search.examine(&joint[..n], starts, self.carry_at)?;
            }
            self.len = n - starts;
            self.carry[..self.len].copy_from_slice(&joint[starts..n]);
            self.carry_at += starts as u64;
            return Ok(());
        }
        // The block alone is longer than the lookahead: the carried starts look into its head,
        // then the block is searched in place.
        if self.len > 0 {
            joint[self.len..self.len + KEEP].copy_from_slice(&block[..KEEP]);
            search.examine(&joint[..self.len + KEEP], self.len, self.carry_at)?;
        }
        let starts = block.len() - KEEP;
        search.examine(block, starts, at)?;
        self.carry[..KEEP].copy_from_slice(&block[starts..]);
        self.len = KEEP;
        self.carry_at = at + starts as u64;
        Ok(())
    }

    /// The end of the document: examine the last starts with whatever follows them.
    pub(super) fn finish<E>(&mut self, search: &mut impl Examine<E>) -> Result<(), E> {
        let len = std::mem::take(&mut self.len);
        if len == 0 {
            return Ok(());
        }
        search.examine(&self.carry[..len], len, self.carry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every start is examined once, in order, with its lookahead, whatever the block sizes.
    #[test]
    fn each_start_is_examined_once_with_its_lookahead() {
        let data: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        for size in [1usize, 3, 15, 16, 17, 31, 32, 33, 64, 200] {
            let mut seen: Vec<(u64, usize)> = Vec::new();
            let mut search = |hay: &[u8], starts: usize, at: u64| -> Result<(), ()> {
                for s in 0..starts {
                    let offset = at + s as u64;
                    assert_eq!(hay[s], data[offset as usize], "size {size}");
                    seen.push((offset, hay.len() - s));
                }
                Ok(())
            };
            let mut overlap = Overlap::default();
            let mut at = 0u64;
            for block in data.chunks(size) {
                overlap.feed(block, at, &mut search).expect("feed");
                at += block.len() as u64;
            }
            overlap.finish(&mut search).expect("finish");
            let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
            assert_eq!(offsets, (0..200).collect::<Vec<u64>>(), "size {size}");
            for (offset, ahead) in seen {
                let wanted = LOOKAHEAD.min(200 - offset as usize);
                assert!(ahead >= wanted, "size {size}: offset {offset} saw {ahead}");
            }
        }
    }
}
