//! What each digest costs on this machine, measured once, and the lanes that balances to.
//!
//! A fixed table went wrong as soon as the CPU changed: it assumed SHA-512 was the dearest,
//! while on an AMD EPYC MD5 is, and the lane carrying MD5 + SHA-256 did 60 % of the work. So
//! the first pipeline times each digest on a small buffer (~1 MiB, a few ms in all) and the
//! lanes are split by those numbers.

use std::{
    fmt,
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::{engine::Engine, Digests};

/// Bytes each digest is timed on: long enough that the timer's resolution and the start-up
/// of the hash do not matter, short enough that measuring costs a few ms.
const SAMPLE: usize = 1024 * 1024;

/// The digests the pipeline computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Md5,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Md5];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Md5 => "md5",
        }
    }
}

/// Measured CPU time per MiB of each digest, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Costs {
    pub sha256: u64,
    pub sha512: u64,
    pub md5: u64,
}

impl Costs {
    pub fn of(&self, a: Algorithm) -> u64 {
        match a {
            Algorithm::Sha256 => self.sha256,
            Algorithm::Sha512 => self.sha512,
            Algorithm::Md5 => self.md5,
        }
    }

    /// The content scanner, which cannot be timed on a synthetic buffer (its speed depends
    /// on the format: JPEG and image PDFs ~3 GiB/s, the bulk of real documents, pure PDF
    /// syntax far slower). The `scan` bench puts it at about half of SHA-256's cost on this
    /// class of machine, and SHA-256 tracks the CPU's speed, so it is scaled from that.
    pub fn scan(&self) -> u64 {
        (self.sha256 / 2).max(1)
    }
}

impl fmt::Display for Costs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for a in Algorithm::ALL {
            let ns = self.of(a);
            // ns per MiB → MB/s: 1 MiB / ns = 1.048576e15 / ns bytes/s.
            let mb_s = 1_048_576_000.0 / ns as f64;
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(
                f,
                "{} {:.0} µs/MiB ({mb_s:.0} MB/s)",
                a.name(),
                ns as f64 / 1000.0
            )?;
        }
        Ok(())
    }
}

/// The costs on this machine, measured on first use.
pub fn measured() -> Costs {
    static COSTS: OnceLock<Costs> = OnceLock::new();
    *COSTS.get_or_init(measure)
}

fn measure() -> Costs {
    // Not zeros (some hashes have no data-dependent path, but keep it honest) and not random
    // (no dependency, and the same work every start).
    let sample: Vec<u8> = (0..SAMPLE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // The implementation the pipeline will use (libcrypto's, where linked), not a stand-in.
    let time = |algorithm| {
        time_per_mib(|| {
            let mut engine = Engine::new(algorithm);
            engine.update(&sample);
            let mut out = Digests::of(&[], crate::policy::DigestSet::SHA256);
            std::hint::black_box(engine.finish_into(&mut out).is_ok());
            std::hint::black_box(out);
        })
    };
    Costs {
        sha256: time(Algorithm::Sha256),
        sha512: time(Algorithm::Sha512),
        md5: time(Algorithm::Md5),
    }
}

/// Nanoseconds for one run of `hash` over the sample, after a warm-up run (first touches of
/// the code and the buffer), the faster of two: a preemption only ever adds time.
fn time_per_mib(mut hash: impl FnMut()) -> u64 {
    hash();
    let mut best = Duration::MAX;
    for _ in 0..2 {
        let start = Instant::now();
        hash();
        best = best.min(start.elapsed());
    }
    u64::try_from(best.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Split items of the given `costs` into at most `parts` groups so that the dearest group is
/// as cheap as possible (the lanes run in parallel, so the dearest one sets the speed).
///
/// Returns groups of indices into `costs`. Deterministic for given costs: groups are ordered
/// dearest first, indices within a group by cost (dearest first), ties by index; among
/// equally good splits the one found first in that order wins — which joins items before it
/// opens a new group, so a group (a thread's hand-off) is only added when it makes the split
/// faster. More groups than items are never made, and no group is empty.
pub fn partition(costs: &[u64], parts: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
    let parts = parts.clamp(1, costs.len().max(1));
    if costs.is_empty() {
        return Vec::new();
    }
    // The pipeline has at most four items (three digests and the scanner): an exhaustive
    // search over set partitions is tiny. Past that, greedy (dearest first, to the cheapest
    // group) is close enough and stays linear.
    let groups = if costs.len() <= 8 {
        let mut search = Search {
            costs,
            order: &order,
            parts,
            current: vec![Vec::new(); parts],
            loads: vec![0; parts],
            best: None,
        };
        search.run(0, 0);
        search.best.map(|(_, groups)| groups).unwrap_or_default()
    } else {
        let mut groups = vec![(0u64, Vec::new()); parts];
        for &i in &order {
            if let Some(g) = groups.iter_mut().min_by_key(|(load, _)| *load) {
                g.0 = g.0.saturating_add(costs[i]);
                g.1.push(i);
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    };
    let mut groups: Vec<Vec<usize>> = groups.into_iter().filter(|g| !g.is_empty()).collect();
    for g in &mut groups {
        g.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
    }
    groups.sort_by_key(|g| (std::cmp::Reverse(load(costs, g)), g.first().copied()));
    groups
}

/// The lanes for items of the given `costs` on `cores` threads: either fixed groups (see
/// [`partition`]), or one lane per item, when the pool sharing the threads between them does
/// better.
///
/// Fixed groups are as fast as their dearest group. One lane per item lets the pool move
/// work between threads block by block (a lane gives its thread up every few blocks), so the
/// threads finish together: as fast as the dearer of the dearest item alone and an even share
/// of the total. With three digests on two cores — SHA-256 ~0.6, SHA-512 ~1.7, MD5 ~1.7 ms per
/// MiB — the best fixed split is 2.3 (MD5 + SHA-256 | SHA-512), an even share 2.0. Each lane
/// costs a hand-off per block, so it only wins by a clear margin (5 %).
pub fn lanes(costs: &[u64], cores: usize) -> Vec<Vec<usize>> {
    let groups = partition(costs, cores);
    let cores = cores.max(1);
    if groups.len() == costs.len() {
        return groups;
    }
    let fixed = groups.iter().map(|g| load(costs, g)).max().unwrap_or(0);
    let total = costs.iter().copied().fold(0u64, u64::saturating_add);
    let shared = costs
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(total.div_ceil(cores as u64));
    if shared.saturating_mul(20) < fixed.saturating_mul(19) {
        let mut each: Vec<usize> = (0..costs.len()).collect();
        each.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
        each.into_iter().map(|i| vec![i]).collect()
    } else {
        groups
    }
}

/// The summed cost of a group of items.
fn load(costs: &[u64], group: &[usize]) -> u64 {
    group
        .iter()
        .map(|&i| costs[i])
        .fold(0u64, u64::saturating_add)
}

/// Exhaustive search over the ways to put `order`'s items into `parts` unlabeled groups.
struct Search<'a> {
    costs: &'a [u64],
    order: &'a [usize],
    parts: usize,
    current: Vec<Vec<usize>>,
    loads: Vec<u64>,
    best: Option<(u64, Vec<Vec<usize>>)>,
}

impl Search<'_> {
    fn run(&mut self, next: usize, used: usize) {
        let makespan = self.loads.iter().copied().max().unwrap_or(0);
        if self.best.as_ref().is_some_and(|(b, _)| makespan >= *b) {
            return;
        }
        let Some(&item) = self.order.get(next) else {
            self.best = Some((makespan, self.current.clone()));
            return;
        };
        // Groups are unlabeled: an item may join a used group or open the next empty one,
        // never a later one (that would only repeat a split already tried).
        for g in 0..(used + 1).min(self.parts) {
            self.current[g].push(item);
            self.loads[g] = self.loads[g].saturating_add(self.costs[item]);
            self.run(next + 1, used.max(g + 1));
            self.loads[g] -= self.costs[item];
            self.current[g].pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_digests_on_two_cores_put_the_dearest_alone() {
        // [sha256, sha512, md5]; groups come dearest first.
        // SHA-512 dearest (Intel without SHA-512 instructions): it goes alone.
        assert_eq!(partition(&[700, 1900, 1700], 2), vec![vec![2, 0], vec![1]]);
        // MD5 dearest (the AMD EPYC of the issue): the split follows the measurement.
        assert_eq!(partition(&[700, 1500, 2100], 2), vec![vec![1, 0], vec![2]]);
    }

    #[test]
    fn a_lane_per_digest_when_sharing_the_cores_beats_every_fixed_split() {
        // This machine's numbers: fixed 2246 (md5 + sha256 | sha512), shared
        // max(1699, 3946 / 2) = 1973: one lane each, dearest first.
        assert_eq!(
            lanes(&[580, 1699, 1667], 2),
            vec![vec![1], vec![2], vec![0]]
        );
        // The scanner too: fixed best 2247, shared 4236 / 2 = 2118, 6 % better.
        assert_eq!(
            lanes(&[580, 1699, 1667, 290], 2),
            vec![vec![1], vec![2], vec![0], vec![3]]
        );
        // SHA-512 dearest by far: it sets the pace either way, so fewer hand-offs win.
        assert_eq!(lanes(&[700, 3000, 1700], 2), vec![vec![1], vec![2, 0]]);
        // Within 5 %: the fixed split stays. Fixed 2100 | 2100, shared 2100.
        assert_eq!(lanes(&[700, 2100, 1400], 2), vec![vec![1], vec![2, 0]]);
        // As many cores as digests, or one core: nothing to decide.
        assert_eq!(
            lanes(&[580, 1699, 1667], 3),
            vec![vec![1], vec![2], vec![0]]
        );
        assert_eq!(lanes(&[580, 1699, 1667], 1), vec![vec![1, 2, 0]]);
    }

    #[test]
    fn balance_beats_greedy_where_greedy_is_wrong() {
        // The classic case: greedy (dearest first, to the cheapest group) makes
        // {3,2,2}=7 / {3,2}=5; the best split is {3,3}=6 / {2,2,2}=6.
        let groups = partition(&[3, 3, 2, 2, 2], 2);
        let loads: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|&i| [3, 3, 2, 2, 2][i]).sum())
            .collect();
        assert_eq!(loads, vec![6, 6]);
        assert_eq!(groups, vec![vec![0, 1], vec![2, 3, 4]]);
    }

    #[test]
    fn never_more_groups_than_items_or_parts_and_none_empty() {
        // Three groups would be no faster than two: the dearest item alone sets the pace.
        // (Equal loads: ordered by their first index.)
        assert_eq!(partition(&[10, 20, 30], 8), vec![vec![1, 0], vec![2]]);
        assert_eq!(partition(&[10, 20, 25], 8), vec![vec![2], vec![1], vec![0]]);
        assert_eq!(partition(&[10, 20, 30], 1), vec![vec![2, 1, 0]]);
        assert_eq!(partition(&[10], 4), vec![vec![0]]);
        assert_eq!(partition(&[10, 20], 0), vec![vec![1, 0]]);
        assert!(partition(&[], 2).is_empty());
    }

    #[test]
    fn ties_are_broken_by_index_so_the_result_is_deterministic() {
        assert_eq!(partition(&[5, 5, 5, 5], 2), vec![vec![0, 1], vec![2, 3]]);
        for _ in 0..10 {
            assert_eq!(partition(&[7, 3, 7, 3], 2), partition(&[7, 3, 7, 3], 2),);
        }
    }

    #[test]
    fn greedy_fallback_for_many_items_covers_everything() {
        let costs: Vec<u64> = (1..=12).collect();
        let groups = partition(&costs, 3);
        assert_eq!(groups.len(), 3);
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn measured_costs_are_positive_and_stable_within_a_process() {
        let c = measured();
        assert!(c.sha256 > 0 && c.sha512 > 0 && c.md5 > 0);
        assert_eq!(c, measured());
    }
}
