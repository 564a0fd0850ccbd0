//! smpalloc's test and benchmark support, shared by the tests, the bench crate, the fuzz
//! targets and the kernel: one seeded random-number generator ([`Rng`]) and, with the feature
//! `alloc`, the two shadow oracles that randomized tests compare an allocator against:
//! - [`IdShadow`]: which IDs of a domain are taken (duplicates and frees of free IDs caught),
//!   with the expectations of the ID allocators' policies (lowest free, next fit, first fit
//!   of an aligned range);
//! - [`RangeShadow`]: which `[start, end)` ranges of memory (bytes or pages) are live, inside
//!   which regions (overlap, double free, out-of-region caught), with a tag per range (a fill
//!   seed, a layout); [`pattern`] is the fill pattern the memory tests write and check.
//!
//! `no_std` and without dependencies, so the riscv64 kernel can use it too. It does not depend
//! on smpalloc: the adapters over smpalloc's types live in `tests/support`.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
mod ids;
#[cfg(feature = "alloc")]
mod ranges;

#[cfg(feature = "alloc")]
pub use ids::IdShadow;
#[cfg(feature = "alloc")]
pub use ranges::{RangeError, RangeShadow, Regions};

/// The byte a memory test writes at offset `i` of a block tagged `seed` (and checks before the
/// block is freed): differs between seeds at every offset, and between offsets within 251
/// bytes (a prime period, so a copy shifted by a power of two shows), so a block that is
/// overwritten, shifted or handed out twice shows.
pub const fn pattern(seed: u8, i: usize) -> u8 {
    seed ^ (i % 251) as u8
}

/// A seeded pseudo-random generator: SplitMix64 (Steele, Lea and Flood, 2014). Deterministic
/// per seed, every seed (zero included) is valid, and one step is an add, two multiplies and
/// three shifts, cheap enough for a benchmark's inner loop.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`. Panics if `n` is zero.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// A value in `lo..=hi`. Panics if `lo > hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "Rng::range({lo}, {hi})");
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.next_u64() as usize,
        }
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        // SplitMix64's first output for seed 0 (the published reference value).
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let x = r.range(5, 9);
            assert!((5..=9).contains(&x));
        }
        // The full range cannot overflow: it is the raw draw.
        assert_eq!(
            Rng::new(3).range(0, usize::MAX),
            Rng::new(3).next_u64() as usize
        );
        let mut v: [u32; 16] = core::array::from_fn(|i| i as u32);
        r.shuffle(&mut v);
        let mut sorted = v;
        sorted.sort_unstable();
        assert_eq!(sorted, core::array::from_fn(|i| i as u32));
    }
}
