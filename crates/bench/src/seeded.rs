//! Seeded pseudo-random data for the workloads.
//!
//! Invariants:
//! - the same seed gives the same sequence on every machine and every run,
//!   so each contender and each sample sees the same data and a report can
//!   name its data by its seed;
//! - no dependency and no global state: each workload owns its generator.

/// A small seeded generator (SplitMix64): reproducible data without a
/// dependency. Not for anything but benchmark data.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the tiny modulo bias is irrelevant to
    /// benchmark data.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Fills `out` with pseudo-random bytes.
    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_per_seed() {
        let take = |seed| {
            let mut r = SplitMix64(seed);
            (0..5).map(|_| r.next()).collect::<Vec<u64>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
        let a = take(7);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn seeded_below_stays_in_range() {
        let mut r = SplitMix64(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0, "n = 0 behaves as n = 1");
    }

    #[test]
    fn seeded_fill_covers_odd_lengths() {
        let mut a = [0u8; 13];
        SplitMix64(3).fill(&mut a);
        let mut b = [0u8; 16];
        SplitMix64(3).fill(&mut b);
        assert_eq!(a, b[..13], "a prefix of the same stream");
        assert!(a.iter().any(|&x| x != 0));
    }
}
