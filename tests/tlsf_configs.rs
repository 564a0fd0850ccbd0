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

// The memory and the shadow oracle (the test-support kit).
mod support;
use support::memory::{Fill, MemShadow as Shadow, Memory};
fn memory(len: usize) -> Memory {
    Memory::page_aligned(len)
}
fn shadow() -> Shadow {
    Shadow::new(Fill::Whole)
}
fn base(m: &Memory) -> usize {
    m.addr()
}

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use proptest::prelude::*;
use smpalloc::byte::{BitmapWord, GRANULARITY, PoolStats};
use smpalloc::{AllocError, Tlsf};

/// The smallest block: a header and two links (two granules).
const MIN_BLOCK: usize = 2 * GRANULARITY;

/// Cases per configuration: 200 (2 under Miri), or `TLSF_PROP_CASES` for a deep run.
fn cases() -> u32 {
    if cfg!(miri) {
        return 2;
    }
    std::env::var("TLSF_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
const OPS: usize = if cfg!(miri) { 24 } else { 250 };

/// The buffer the random program's pools come from: about 40 largest blocks (at least 2 KiB,
/// at most 96 KiB; 8 KiB under Miri), so pools are cut into many blocks and a `check_pool`
/// walk (quadratic in the blocks of one list) stays cheap.
fn buffer_len(max_block: usize) -> usize {
    let cap = if cfg!(miri) { 8 * 1024 } else { 96 * 1024 };
    (max_block * 40).clamp(2048, cap)
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u32, u8),
    Free(usize),
    Realloc(usize, u32),
    Grow(usize),
    /// Free a pointer freed earlier (double / stale free): must be refused, nothing changed.
    BadFree(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), any::<u8>()).prop_map(|(s, a)| Op::Alloc(s, a)),
        4 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(i, s)| Op::Realloc(i, s)),
        1 => any::<usize>().prop_map(Op::Grow),
        2 => any::<usize>().prop_map(Op::BadFree),
    ]
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

/// Mostly word alignment, sometimes up to 4096.
fn align_of_raw(raw: u8) -> usize {
    if raw < 160 {
        1 << (raw % 4)
    } else {
        1 << (raw % 13)
    }
}

/// `(gap before, length, growth room after)` of each pool, as fractions of the buffer
/// (per mille), scaled by `run`.
fn pools() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    proptest::collection::vec((0..67usize, 0..250usize, 0..63usize), 1..=4)
}

/// The block a request of `size` bytes needs (before the minimum).
fn block_for(size: usize) -> usize {
    (size + 2 * GRANULARITY - 1) / GRANULARITY * GRANULARITY
}

struct Pool {
    start: usize,
    /// Bytes covered (as `insert_free_block_ptr` returns, grown by appends).
    covered: usize,
    /// Requested end, where an append would start.
    given_end: usize,
    room: usize,
    grown: bool,
    /// Bytes in blocks right after insertion/growth (all free then, and at the end again).
    capacity: usize,
}

/// `tlsf_props.rs`'s random program, for one configuration.
fn run<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    layout: &[(usize, usize, usize)],
    ops: &[Op],
) {
    type T<'a, FL, SL, const FLLEN: usize, const SLLEN: usize> = Tlsf<'a, FL, SL, FLLEN, SLLEN>;
    let max = T::<FL, SL, FLLEN, SLLEN>::MAX_ALLOCATION_SIZE;
    let buf = buffer_len(T::<FL, SL, FLLEN, SLLEN>::MAX_BLOCK_SIZE);
    let buffer = memory(buf);
    let base = base(&buffer);
    let mut tlsf: T<'static, FL, SL, FLLEN, SLLEN> = Tlsf::new();
    let mut shadow = shadow();
    let mut pools: Vec<Pool> = Vec::new();
    let mut cursor = 0;
    for &(gap, len, room) in layout {
        let (len, room) = (len * buf / 1000, room * buf / 1000);
        let offset = cursor + gap;
        if offset + len + room > buf {
            break;
        }
        cursor = offset + len + room + 1;
        let start = base + offset;
        let first = start.next_multiple_of(GRANULARITY);
        let end = (start + len) / GRANULARITY * GRANULARITY;
        // SAFETY: a fresh range of the buffer, disjoint from the other pools.
        let covered = unsafe { tlsf.insert_free_block_ptr(buffer.slice(offset, len)) };
        let fits = end >= first && end - first >= 3 * GRANULARITY;
        assert_eq!(
            covered.is_some(),
            fits,
            "pool {offset}+{len}: wrong acceptance"
        );
        let Some(covered) = covered else { continue };
        assert_eq!(covered.get(), end - start);
        shadow.set_pool(pools.len(), start, start + covered.get());
        pools.push(Pool {
            start,
            covered: covered.get(),
            given_end: start + len,
            room,
            grown: false,
            capacity: end - first - GRANULARITY,
        });
    }
    let slice_of = |p: &Pool| buffer.slice(p.start - base, p.covered);
    let verify = |tlsf: &T<'static, FL, SL, FLLEN, SLLEN>, shadow: &Shadow, pools: &[Pool]| {
        let (free_blocks, free_bytes) = tlsf.check().unwrap_or_else(|e| panic!("check: {e}"));
        let live = shadow.live_per_pool();
        let mut total = PoolStats::default();
        for (i, p) in pools.iter().enumerate() {
            // SAFETY: the pool's exact covered range.
            let stats = unsafe { tlsf.check_pool(slice_of(p)) }
                .unwrap_or_else(|e| panic!("check_pool {i}: {e}"));
            assert_eq!(
                stats.used_bytes + stats.free_bytes + stats.overhead_bytes,
                p.covered,
                "pool {i}: used + free + overhead != pool size"
            );
            assert_eq!(
                stats.used_blocks, live[i],
                "pool {i}: used blocks != live allocations"
            );
            assert_eq!(
                stats.used_bytes + stats.free_bytes,
                p.capacity,
                "pool {i}: bytes lost"
            );
            total.free_blocks += stats.free_blocks;
            total.free_bytes += stats.free_bytes;
            // Every block is a valid size for this configuration.
            // SAFETY: as above.
            for b in unsafe { tlsf.iter_blocks(slice_of(p)) } {
                assert!(
                    (MIN_BLOCK..=T::<FL, SL, FLLEN, SLLEN>::MAX_BLOCK_SIZE).contains(&b.size()),
                    "pool {i}: a block of {} bytes",
                    b.size()
                );
            }
        }
        assert_eq!(
            (total.free_blocks, total.free_bytes),
            (free_blocks, free_bytes),
            "lists vs pools"
        );
        // Every live allocation lies inside a used block of its pool.
        for l in shadow.lives() {
            let addr = l.ptr.as_ptr().addr();
            let pool = &pools[shadow.pool_of(addr).unwrap()];
            // SAFETY: as above.
            let inside = unsafe { tlsf.iter_blocks(slice_of(pool)) }.any(|b| {
                let s = b.as_ptr().cast::<u8>().as_ptr().addr();
                b.is_occupied() && s < addr && addr + l.layout.size() <= s + b.size()
            });
            assert!(inside, "allocation at {addr:#x} is not inside a used block");
        }
        shadow.verify_all();
    };
    verify(&tlsf, &shadow, &pools);
    // Pointers freed since and not handed out again whose header the test has not written
    // since (`try_deallocate`'s contract): every free of one must be refused.
    let mut stale: Vec<NonNull<u8>> = Vec::new();
    let covered = |stale: &mut Vec<NonNull<u8>>, p: NonNull<u8>, size: usize| {
        let (s, e) = (p.as_ptr().addr(), p.as_ptr().addr() + size.max(1));
        stale.retain(|q| {
            let q = q.as_ptr().addr();
            q != s && (q <= s || q - GRANULARITY >= e)
        });
    };
    for op in ops {
        match *op {
            Op::Alloc(size, align) => {
                let layout =
                    Layout::from_size_align(size_of_raw(size, max, buf), align_of_raw(align))
                        .unwrap();
                match tlsf.allocate(layout) {
                    Some(ptr) => {
                        assert!(layout.size() <= max, "{layout:?} is over the maximum");
                        covered(&mut stale, ptr, layout.size());
                        shadow.allocated(ptr, layout);
                    }
                    None => {
                        // Good fit finds any block one class step above the search size, and
                        // the head check (rlsf #15) serves a lone fitting free block.
                        let need = block_for(layout.size()).max(MIN_BLOCK);
                        let search = if layout.align() <= GRANULARITY {
                            need
                        } else {
                            need + layout.align() + GRANULARITY
                        };
                        let mut free = Vec::new();
                        for p in &pools {
                            // SAFETY: as above.
                            free.extend(
                                unsafe { tlsf.iter_blocks(slice_of(p)) }
                                    .filter(|b| !b.is_occupied()),
                            );
                        }
                        for b in &free {
                            assert!(
                                b.size() < search + search / SLLEN + GRANULARITY,
                                "{layout:?} failed beside a free block of {}",
                                b.size()
                            );
                        }
                        if let [only] = free[..] {
                            assert!(
                                layout.align() > GRANULARITY || only.size() < need,
                                "{layout:?} failed beside the only free block, of {} (rlsf #15)",
                                only.size()
                            );
                        }
                    }
                }
            }
            Op::Free(k) => {
                if let Some(l) = shadow.nth(k) {
                    shadow.freeing(l.ptr);
                    // SAFETY: a live allocation, freed once.
                    unsafe { tlsf.deallocate(l.ptr, l.layout.align()) };
                    stale.push(l.ptr);
                }
            }
            Op::Realloc(k, size) => {
                if let Some(old) = shadow.nth(k) {
                    let new_layout =
                        Layout::from_size_align(size_of_raw(size, max, buf), old.layout.align())
                            .unwrap();
                    shadow.freeing(old.ptr);
                    // SAFETY: a live allocation.
                    match unsafe { tlsf.reallocate(old.ptr, new_layout) } {
                        Some(new) => {
                            assert!(new_layout.size() <= max);
                            if new != old.ptr {
                                stale.push(old.ptr);
                            }
                            covered(&mut stale, new, new_layout.size());
                            shadow.reallocated(old, new, new_layout);
                        }
                        None => shadow.restore(old),
                    }
                }
            }
            Op::Grow(i) => {
                if pools.is_empty() {
                    continue;
                }
                let i = i % pools.len();
                let p = &mut pools[i];
                if p.grown || p.room == 0 {
                    continue;
                }
                p.grown = true;
                // SAFETY: the room after this pool is reserved for it and starts at its end.
                let added =
                    unsafe { tlsf.append_free_block_ptr(buffer.slice(p.given_end - base, p.room)) };
                let new_end = (p.given_end + p.room) / GRANULARITY * GRANULARITY;
                if added > 0 {
                    assert_eq!(added, new_end - (p.given_end / GRANULARITY * GRANULARITY));
                    p.covered = new_end - p.start;
                    p.capacity += added;
                    shadow.set_pool(i, p.start, new_end);
                }
            }
            Op::BadFree(k) => {
                if stale.is_empty() {
                    continue;
                }
                let q = stale[k % stale.len()];
                let before = tlsf.check().unwrap();
                // SAFETY: `q` was returned by this allocator and freed since; its header
                // bytes were not written by the test since (`covered`).
                let r = unsafe { tlsf.try_deallocate(q) };
                assert_eq!(
                    r,
                    Err(AllocError::NotAllocated),
                    "stale {q:p} was freed again"
                );
                assert_eq!(
                    tlsf.check().unwrap(),
                    before,
                    "a refused free changed the heap"
                );
            }
        }
        verify(&tlsf, &shadow, &pools);
    }
    // Free everything: every pool is whole again.
    while let Some(l) = shadow.nth(0) {
        shadow.freeing(l.ptr);
        // SAFETY: live, freed once.
        unsafe { tlsf.deallocate(l.ptr, l.layout.align()) };
    }
    verify(&tlsf, &shadow, &pools);
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
                    run::<$fl, $sl, $fllen, $sllen>(&layout, &ops);
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
