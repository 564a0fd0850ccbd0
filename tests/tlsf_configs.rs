//! `Tlsf` accepts every configuration rlsf 0.2 accepts (every `FLLEN` and `SLLEN` of at least
//! 1), `Tlsf<'_, u8, u8, 1, 1>` included (the small ones were once compile errors).
//!
//! For each small configuration (`FLLEN` 1 x `SLLEN` 1, 2, 4, 8, `FLLEN` 2 x `SLLEN` 1, and the
//! rlsf suite's `<u8, u8, 8, 1>`, whose classes changed, with `u8`/`u16` bitmaps):
//! - the random allocate / reallocate / free / grow-pool / stale-free program of
//!   `tlsf_props.rs` against the shadow model, with `check`, a `check_pool` walk and an
//!   `iter_blocks` walk of every pool after every step (pools and sizes scaled to the
//!   configuration's largest block, so that pools are many blocks long);
//! - the documented largest block (`(L << (FLLEN - 1)) - GRANULARITY`,
//!   `L = GRANULARITY * max(SLLEN, 4)`), never below rlsf's `(2 * GRANULARITY << FLLEN) -
//!   2 * GRANULARITY`;
//! - the largest allocation succeeds, one byte more fails and changes nothing;
//! - a pool longer than the largest block is cut into blocks that tile it and are all used;
//! - rlsf's own small scenarios for every configuration (96-byte pools, zero-size allocations,
//!   shrinking to zero, growing a pool), with the checks after each step.
//!
//! Runs under Miri (strict provenance) with fewer configurations and fewer, shorter cases.

// The test's memory and the random program (the test-support kit).
mod support;
use support::memory::Memory;
use support::tlsf::{OPS, cases, op, run};
fn memory(len: usize) -> Memory {
    Memory::page_aligned(len)
}
fn base(m: &Memory) -> usize {
    m.addr()
}

use core::alloc::Layout;
use core::mem::MaybeUninit;

use proptest::prelude::*;
use smpalloc::Tlsf;
use smpalloc::byte::GRANULARITY;

/// The smallest block: a header and two links (two granules).
const MIN_BLOCK: usize = 2 * GRANULARITY;

/// The buffer the random program's pools come from: about 40 largest blocks (at least 2 KiB,
/// at most 96 KiB; 8 KiB under Miri), so pools are cut into many blocks and a `check_pool`
/// walk (quadratic in the blocks of one list) stays cheap.
fn buffer_len(max_block: usize) -> usize {
    let cap = if cfg!(miri) { 8 * 1024 } else { 96 * 1024 };
    (max_block * 40).clamp(2048, cap)
}

/// Sizes for a configuration whose largest payload is `max`: zero, mostly up to `max`, some up
/// to twice it (mostly failing), a few as large as half the buffer.
fn size_of_raw(raw: u32, max: usize, buf: usize) -> usize {
    let r = raw as usize >> 4;
    match raw % 16 {
        0 => 0,
        1..=11 => r % (max + 1),
        12..=14 => r % (2 * max + 2),
        _ => r % (buf / 2),
    }
}

/// `(gap before, length, growth room after)` of each pool, as fractions of the buffer
/// (per mille), scaled by `run`.
fn pools() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    proptest::collection::vec((0..67usize, 0..250usize, 0..63usize), 1..=4)
}

/// The property test and the targeted tests, for one configuration.
macro_rules! suite {
    ($name:ident, $fl:ty, $sl:ty, $fllen:literal, $sllen:literal) => {
        mod $name {
            use super::*;
            type T = Tlsf<'static, $fl, $sl, $fllen, $sllen>;

            /// Kernels keep the allocator in an all-zero `static`, built by `const fn new`.
            static EMPTY: T = T::INIT;

            proptest! {
                #![proptest_config(ProptestConfig {
                    cases: cases(),
                    failure_persistence: None,
                    ..ProptestConfig::default()
                })]
                #[test]
                fn random_programs(layout in pools(), ops in proptest::collection::vec(op(), 1..OPS)) {
                    let max = T::MAX_ALLOCATION_SIZE;
                    let buf = buffer_len(T::MAX_BLOCK_SIZE);
                    run::<$fl, $sl, $fllen, $sllen>(&layout, &ops, buf, true, &|raw| size_of_raw(raw, max, buf));
                }
            }

            /// The documented largest block, never below rlsf's for the same `FLLEN`, and
            /// large enough to cut pools (invariant 2).
            #[test]
            fn largest_block_is_as_documented() {
                let l = GRANULARITY * if $sllen < 4 { 4 } else { $sllen };
                assert_eq!(T::MAX_BLOCK_SIZE, (l << ($fllen - 1)) - GRANULARITY);
                assert_eq!(T::MAX_ALLOCATION_SIZE, T::MAX_BLOCK_SIZE - GRANULARITY);
                let rlsf = (2 * GRANULARITY << $fllen) - 2 * GRANULARITY;
                assert!(T::MAX_BLOCK_SIZE > rlsf, "below rlsf's largest block");
                assert!(T::MAX_BLOCK_SIZE >= 2 * MIN_BLOCK - GRANULARITY);
                assert_eq!(EMPTY.check(), Ok((0, 0)));
            }

            /// The largest allocation succeeds (from a fresh pool, and again after a free);
            /// one byte more fails and changes nothing.
            #[test]
            fn largest_allocation_succeeds_one_byte_more_fails() {
                let len = 3 * T::MAX_BLOCK_SIZE + 5 * GRANULARITY;
                let buffer = memory(len);
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, len)).unwrap() };
                let max = Layout::from_size_align(T::MAX_ALLOCATION_SIZE, 1).unwrap();
                let over = Layout::from_size_align(T::MAX_ALLOCATION_SIZE + 1, 1).unwrap();
                let before = tlsf.check().unwrap();
                assert!(tlsf.allocate(over).is_none(), "one byte over the maximum");
                assert_eq!(tlsf.check().unwrap(), before, "a failed allocation changed the heap");
                let p = tlsf.allocate(max).expect("the largest allocation");
                // SAFETY: `p` is live.
                assert_eq!(unsafe { T::usable_size(p) }, T::MAX_ALLOCATION_SIZE);
                let before = tlsf.check().unwrap();
                assert!(tlsf.allocate(over).is_none());
                assert_eq!(tlsf.check().unwrap(), before);
                // Growing past the maximum fails and keeps the allocation.
                // SAFETY: `p` is live; on failure it stays live.
                assert!(unsafe { tlsf.reallocate(p, over) }.is_none());
                assert_eq!(tlsf.check().unwrap(), before);
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(p, 1) };
                let q = tlsf.allocate(max).expect("the largest allocation, again");
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(q, 1) };
                // SAFETY: the pool inserted above.
                let stats = unsafe { tlsf.check_pool(buffer.slice(0, len)) }.unwrap();
                assert_eq!(stats.used_blocks, 0);
                // An allocation of the maximum from a pool of exactly one largest block.
                let one = T::MAX_BLOCK_SIZE + GRANULARITY;
                let mut tlsf = T::new();
                // SAFETY: the buffer's start, once (the allocator above is gone).
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, one)).unwrap() };
                assert_eq!(tlsf.check(), Ok((1, T::MAX_BLOCK_SIZE)));
                let p = tlsf.allocate(max).expect("the pool's one block, whole");
                assert_eq!(tlsf.check(), Ok((0, 0)));
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(p, 1) };
                assert_eq!(tlsf.check(), Ok((1, T::MAX_BLOCK_SIZE)));
            }

            /// A pool several largest blocks long is cut into blocks of at most the maximum
            /// that tile it (adjacent free pieces sum past the maximum: invariant 2), and all
            /// of it is handed out: first largest allocations, then minimum ones until the
            /// allocator is empty.
            #[test]
            fn pool_longer_than_the_largest_block_is_cut_and_used() {
                for extra in [0, GRANULARITY, 2 * GRANULARITY, 3 * GRANULARITY] {
                    let len = 5 * T::MAX_BLOCK_SIZE + extra + GRANULARITY + 7;
                    let buffer = memory(len + 3);
                    let mut tlsf = T::new();
                    let given = buffer.slice(3, len);
                    // SAFETY: the buffer, once per allocator.
                    let covered = unsafe { tlsf.insert_free_block_ptr(given) }.unwrap().get();
                    let pool = buffer.slice(3, covered);
                    let first = (base(&buffer) + 3).next_multiple_of(GRANULARITY);
                    let end = (base(&buffer) + 3 + len) / GRANULARITY * GRANULARITY;
                    let capacity = end - first - GRANULARITY;
                    // SAFETY: the pool just inserted.
                    let blocks: Vec<_> = unsafe { tlsf.iter_blocks(pool) }.collect();
                    assert!(blocks.len() >= 5, "cut into {} blocks", blocks.len());
                    assert_eq!(blocks.iter().map(|b| b.size()).sum::<usize>(), capacity);
                    let mut at = first;
                    for pair in blocks.windows(2) {
                        assert!(pair[0].size() + pair[1].size() > T::MAX_BLOCK_SIZE);
                    }
                    for b in &blocks {
                        assert!(!b.is_occupied());
                        assert_eq!(b.as_ptr().cast::<u8>().as_ptr().addr(), at, "blocks tile the pool");
                        assert!((MIN_BLOCK..=T::MAX_BLOCK_SIZE).contains(&b.size()));
                        at += b.size();
                    }
                    assert_eq!(tlsf.check(), Ok((blocks.len(), capacity)));
                    let full = blocks.iter().filter(|b| b.size() == T::MAX_BLOCK_SIZE).count();
                    let mut live = Vec::new();
                    let max = Layout::from_size_align(T::MAX_ALLOCATION_SIZE, 1).unwrap();
                    while let Some(p) = tlsf.allocate(max) {
                        live.push(p);
                        tlsf.check().unwrap();
                    }
                    assert_eq!(live.len(), full, "every largest block served a largest allocation");
                    let small = Layout::from_size_align(1, 1).unwrap();
                    while let Some(p) = tlsf.allocate(small) {
                        live.push(p);
                        tlsf.check().unwrap();
                    }
                    assert_eq!(tlsf.check(), Ok((0, 0)), "every byte of the pool was handed out");
                    // SAFETY: the pool.
                    let stats = unsafe { tlsf.check_pool(pool) }.unwrap();
                    assert_eq!((stats.used_blocks, stats.used_bytes), (live.len(), capacity));
                    for p in live {
                        // SAFETY: live, freed once.
                        unsafe { tlsf.deallocate(p, 1) };
                        tlsf.check().unwrap();
                    }
                    // SAFETY: the pool.
                    let stats = unsafe { tlsf.check_pool(pool) }.unwrap();
                    assert_eq!((stats.used_blocks, stats.free_bytes), (0, capacity));
                }
            }

            /// rlsf's scenario tests (`minimal`, `adaa`, `aadd`, `ara`,
            /// `append_free_block_ptr`) for this configuration, checked after each step.
            #[test]
            fn rlsf_scenarios() {
                // minimal, adaa: a 65,536-byte pool, one-byte and zero-size allocations.
                let mut pool = [MaybeUninit::uninit(); 65536];
                let mut tlsf: Tlsf<'_, $fl, $sl, $fllen, $sllen> = Tlsf::new();
                tlsf.insert_free_block(&mut pool).unwrap();
                let p = tlsf.allocate(Layout::from_size_align(1, 1).unwrap()).unwrap();
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(p, 1) };
                let z = [(); 3].map(|()| tlsf.allocate(Layout::from_size_align(0, 1).unwrap()).unwrap());
                assert!(z[0] != z[1] && z[1] != z[2] && z[0] != z[2], "zero-size blocks are unique");
                tlsf.check().unwrap();

                // aadd, ara: a 96-byte pool (64-aligned).
                let buffer = memory(96);
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 96)).unwrap() };
                let a = tlsf.allocate(Layout::from_size_align(0, 1).unwrap()).unwrap();
                let b = tlsf.allocate(Layout::from_size_align(0, 1).unwrap()).unwrap();
                // SAFETY: live, each freed once. (`b` first: in the smallest configurations
                // `a` is the 48-byte block and `b` the 32-byte one, both on one list, and the
                // list head, the last freed, must fit the 17-byte request below.)
                unsafe {
                    tlsf.deallocate(b, 1);
                    tlsf.deallocate(a, 1);
                }
                assert_eq!(tlsf.check().unwrap().1, 96 - GRANULARITY);
                let p = tlsf.allocate(Layout::from_size_align(17, 1).unwrap()).unwrap();
                // SAFETY: `p` is live; the result replaces it.
                let p = unsafe { tlsf.reallocate(p, Layout::from_size_align(0, 1).unwrap()) }.unwrap();
                let q = tlsf.allocate(Layout::from_size_align(0, 1).unwrap());
                tlsf.check().unwrap();
                // SAFETY: live, each freed once.
                unsafe {
                    tlsf.deallocate(p, 1);
                    if let Some(q) = q {
                        tlsf.deallocate(q, 1);
                    }
                    let stats = tlsf.check_pool(buffer.slice(0, 96)).unwrap();
                    assert_eq!((stats.used_blocks, stats.free_bytes), (0, 96 - GRANULARITY));
                }

                // append_free_block_ptr: half of 512 bytes, then the rest; 384 bytes fit only
                // after the growth (when the configuration's blocks are that large at all).
                let buffer = memory(512);
                let mut tlsf = T::new();
                // SAFETY: the first half, then the rest starting where the pool ends.
                unsafe {
                    let len0 = tlsf.insert_free_block_ptr(buffer.slice(0, 256)).unwrap().get();
                    assert!(tlsf.allocate(Layout::from_size_align(384, 1).unwrap()).is_none());
                    let len1 = tlsf.append_free_block_ptr(buffer.slice(len0, 512 - len0));
                    assert_eq!(len0 + len1, 512);
                    let stats = tlsf.check_pool(buffer.slice(0, 512)).unwrap();
                    assert_eq!(stats.free_bytes, 512 - GRANULARITY);
                    let p = tlsf.allocate(Layout::from_size_align(384, 1).unwrap());
                    assert_eq!(p.is_some(), T::MAX_ALLOCATION_SIZE >= 384);
                    if let Some(p) = p {
                        tlsf.deallocate(p, 1);
                    }
                }
                tlsf.check().unwrap();
            }
        }
    };
}

// Under Miri (about 12 s per configuration) only three run: the fixed tiling (`<1, 1>`), the
// smallest that splits and merges with the natural level 0 (`<1, 8>`) and with the floored one
// over two levels (`<2, 1>`).
suite!(u8_u8_1_1, u8, u8, 1, 1);
#[cfg(not(miri))]
suite!(u8_u8_1_2, u8, u8, 1, 2);
#[cfg(not(miri))]
suite!(u8_u8_1_4, u8, u8, 1, 4);
suite!(u8_u8_1_8, u8, u8, 1, 8);
#[cfg(not(miri))]
suite!(u16_u16_1_1, u16, u16, 1, 1);
#[cfg(not(miri))]
suite!(u16_u8_1_8, u16, u8, 1, 8);
suite!(u8_u8_2_1, u8, u8, 2, 1);
#[cfg(not(miri))]
suite!(u16_u16_2_1, u16, u16, 2, 1);
#[cfg(not(miri))]
suite!(u8_u8_2_2, u8, u8, 2, 2);
#[cfg(not(miri))]
suite!(u8_u8_3_1, u8, u8, 3, 1);
#[cfg(not(miri))]
suite!(u8_u8_8_1, u8, u8, 8, 1);

/// The smallest configurations' exact blocks (64-bit targets): `FLLEN` 1 with `SLLEN` up to 4
/// has blocks of 32 and 48 bytes only, which neither merge nor split, so a pool is a fixed
/// tiling; `FLLEN` 1 with `SLLEN` 8 reaches 112 bytes.
#[test]
#[cfg(target_pointer_width = "64")]
fn smallest_configurations_on_64_bit() {
    assert_eq!(Tlsf::<'_, u8, u8, 1, 1>::MAX_BLOCK_SIZE, 48);
    assert_eq!(Tlsf::<'_, u8, u8, 1, 1>::MAX_ALLOCATION_SIZE, 32);
    assert_eq!(Tlsf::<'_, u8, u8, 1, 2>::MAX_BLOCK_SIZE, 48);
    assert_eq!(Tlsf::<'_, u8, u8, 1, 4>::MAX_BLOCK_SIZE, 48);
    assert_eq!(Tlsf::<'_, u8, u8, 1, 8>::MAX_BLOCK_SIZE, 112);
    assert_eq!(Tlsf::<'_, u8, u8, 2, 1>::MAX_BLOCK_SIZE, 112);
    // rlsf's `<u8, u8, 8, 1>` largest block is 8160 bytes; here 8176.
    assert_eq!(Tlsf::<'_, u8, u8, 8, 1>::MAX_BLOCK_SIZE, 8176);

    // A pool of 1000 bytes for `<u8, u8, 1, 1>`: 976 bytes of blocks, cut into 19 blocks of 48
    // bytes and, as 64 bytes are left, two of 32 (a 48-byte block would leave 16); freed blocks
    // stay separate (no merge, no split).
    let buffer = memory(1024);
    let mut tlsf: Tlsf<'_, u8, u8, 1, 1> = Tlsf::new();
    // SAFETY: the buffer, once.
    let covered = unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 1000)) }.unwrap();
    assert_eq!(covered.get(), 992);
    let pool = buffer.slice(0, 992);
    // SAFETY: the pool just inserted.
    let sizes: Vec<usize> = unsafe { tlsf.iter_blocks(pool) }
        .map(|b| b.size())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 976);
    assert_eq!(sizes.iter().filter(|&&s| s == 48).count(), 19);
    assert_eq!(sizes.iter().filter(|&&s| s == 32).count(), 2);
    let before = sizes.clone();
    let all: Vec<_> = core::iter::from_fn(|| tlsf.allocate(Layout::new::<u8>())).collect();
    assert_eq!(all.len(), 21, "one allocation per block");
    assert_eq!(tlsf.check(), Ok((0, 0)));
    for p in all {
        // SAFETY: live, freed once.
        unsafe { tlsf.deallocate(p, 1) };
    }
    // SAFETY: the pool.
    let after: Vec<usize> = unsafe { tlsf.iter_blocks(pool) }
        .map(|b| b.size())
        .collect();
    assert_eq!(after, before, "the tiling never changes");
    assert_eq!(tlsf.check(), Ok((21, 976)));
}
