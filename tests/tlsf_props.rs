//! `Tlsf` against a shadow model, for several (bitmap type, FLLEN, SLLEN) configurations: random
//! allocate / reallocate / free / grow-pool programs over 1..4 pools of odd sizes and offsets,
//! and double/stale frees of earlier pointers (which must be refused and change nothing), with
//! the allocator's own `check` and a `check_pool` walk of every pool after every step; plus the
//! scenario tests (rlsf's example, rlsf issue #15, bad input, double free, double free after a
//! merge (issue 14), in-place reallocation, pool growth, alignments up to 4096). Runs under
//! Miri (strict provenance) with fewer and shorter cases.

mod support;

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use proptest::prelude::*;
use smpalloc::byte::{BitmapWord, GRANULARITY, PoolStats};
use smpalloc::{AllocError, Tlsf};
use support::memory::{Fill, MemShadow, Memory};

const BUF: usize = if cfg!(miri) { 8 * 1024 } else { 96 * 1024 };
/// Cases per configuration: 200 (2 under Miri), or `TLSF_PROP_CASES` for a deep run
/// (`TLSF_PROP_CASES=20000 cargo test --release --test tlsf_props random` takes about a minute).
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

/// Mostly small sizes, some medium, a few as large as a pool.
fn size_of_raw(raw: u32) -> usize {
    let r = raw as usize >> 4;
    match raw % 16 {
        0 => 0,
        1..=10 => r % 129,
        11..=14 => r % 2049,
        _ => r % (BUF / 2),
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

/// `(gap before, length, growth room after)` of each pool.
fn pools() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    proptest::collection::vec((0..67usize, 0..BUF / 4, 0..BUF / 16), 1..=4)
}

/// The block a request of `size` bytes needs.
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

fn run<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    layout: &[(usize, usize, usize)],
    ops: &[Op],
) {
    let buffer = Memory::page_aligned(BUF);
    let base = buffer.ptr().as_ptr().addr();
    let mut tlsf: Tlsf<'static, FL, SL, FLLEN, SLLEN> = Tlsf::new();
    let mut shadow = MemShadow::new(Fill::Whole);
    let mut pools: Vec<Pool> = Vec::new();
    let mut cursor = 0;
    for &(gap, len, room) in layout {
        let offset = cursor + gap;
        if offset + len + room > BUF {
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
    let verify =
        |tlsf: &Tlsf<'static, FL, SL, FLLEN, SLLEN>, shadow: &MemShadow, pools: &[Pool]| {
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
                    // rlsf's accessors agree with the fields.
                    assert_eq!((b.is_occupied(), b.size()), (b.used, b.size));
                    assert_eq!(
                        (b.as_ptr().cast::<u8>(), b.as_ptr().len()),
                        (b.start, b.size)
                    );
                    let s = b.start.as_ptr().addr();
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
    // A fresh allocation `[p, p + size)`: stale pointers at `p`, or whose header it covers
    // (the shadow fills it), leave the list.
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
                    Layout::from_size_align(size_of_raw(size), align_of_raw(align)).unwrap();
                match tlsf.allocate(layout) {
                    Some(ptr) => {
                        covered(&mut stale, ptr, layout.size());
                        shadow.allocated(ptr, layout);
                    }
                    None => {
                        // Good fit finds any block one class step above the search size, and
                        // the head check (rlsf #15) serves a lone fitting free block.
                        let need = block_for(layout.size()).max(2 * GRANULARITY);
                        let search = if layout.align() <= GRANULARITY {
                            need
                        } else {
                            need + layout.align() + GRANULARITY
                        };
                        let mut free = Vec::new();
                        for p in &pools {
                            // SAFETY: as above.
                            free.extend(
                                unsafe { tlsf.iter_blocks(slice_of(p)) }.filter(|b| !b.used),
                            );
                        }
                        for b in &free {
                            assert!(
                                b.size < search + search / SLLEN + GRANULARITY,
                                "{layout:?} failed beside a free block of {}",
                                b.size
                            );
                        }
                        if let [only] = free[..] {
                            assert!(
                                layout.align() > GRANULARITY || only.size < need,
                                "{layout:?} failed beside the only free block, of {} (rlsf #15)",
                                only.size
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
                        Layout::from_size_align(size_of_raw(size), old.layout.align()).unwrap();
                    shadow.freeing(old.ptr);
                    // SAFETY: a live allocation.
                    match unsafe { tlsf.reallocate(old.ptr, new_layout) } {
                        Some(new) => {
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

/// The scenario tests and the property test, for one configuration.
macro_rules! suite {
    ($name:ident, $fl:ty, $sl:ty, $fllen:literal, $sllen:literal) => {
        mod $name {
            use super::*;
            type T = Tlsf<'static, $fl, $sl, $fllen, $sllen>;

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

            /// rlsf issue #15: the largest free block can be handed out whole.
            #[test]
            fn largest_free_block_is_allocatable() {
                let buffer = Memory::page_aligned(BUF);
                for len in [200, 1000, BUF - 1] {
                    let mut tlsf = T::new();
                    // SAFETY: the buffer is ours; one pool at a time.
                    unsafe { tlsf.insert_free_block_ptr(buffer.slice(1, len)).unwrap() };
                    // SAFETY: the pool just inserted.
                    let largest = unsafe { tlsf.iter_blocks(buffer.slice(1, len)) }
                        .map(|b| b.max_payload_size())
                        .max()
                        .unwrap();
                    let layout = Layout::from_size_align(largest, 1).unwrap();
                    let p = tlsf.allocate(layout).expect("the largest free block must be served");
                    assert!(tlsf.allocate(Layout::from_size_align(largest + 1, 1).unwrap()).is_none());
                    // SAFETY: live, freed once.
                    unsafe { tlsf.deallocate(p, 1) };
                    tlsf.check().unwrap();
                }
            }

            /// Alignments up to 4096 are honoured and the gap in front is reusable.
            #[test]
            fn alignments_up_to_4096() {
                const LEN: usize = 32 * 1024;
                let buffer = Memory::page_aligned(LEN);
                let mut tlsf = T::new();
                // SAFETY: the whole buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(3, LEN - 3)).unwrap() };
                let mut live = Vec::new();
                for shift in 0..=12 {
                    let layout = Layout::from_size_align(24, 1 << shift).unwrap();
                    if let Some(p) = tlsf.allocate(layout) {
                        assert_eq!(p.as_ptr().addr() % (1 << shift), 0);
                        live.push((p, layout));
                    } else {
                        assert!(
                            block_for(24) + (1 << shift) + GRANULARITY > T::MAX_BLOCK_SIZE,
                            "align {} failed",
                            1 << shift
                        );
                    }
                    tlsf.check().unwrap();
                }
                for (p, layout) in live {
                    // SAFETY: live, freed once.
                    unsafe { tlsf.deallocate(p, layout.align()) };
                    tlsf.check().unwrap();
                }
                // SAFETY: the pool inserted above.
                let stats = unsafe { tlsf.check_pool(buffer.slice(3, LEN - 3)) }.unwrap();
                assert_eq!(stats.used_blocks, 0);
            }

            /// Bad input changes nothing: tiny pools, overflowing pools, impossible layouts.
            #[test]
            fn bad_input_changes_nothing() {
                let buffer = Memory::page_aligned(4096);
                let mut tlsf = T::new();
                for (offset, len) in [(0, 0), (1, 3 * GRANULARITY - 1), (5, 3 * GRANULARITY), (0, GRANULARITY)] {
                    // SAFETY: inside the buffer.
                    let r = unsafe { tlsf.insert_free_block_ptr(buffer.slice(offset, len)) };
                    assert!(r.is_none(), "pool {offset}+{len} is too small");
                }
                let near_end = NonNull::new(core::ptr::without_provenance_mut::<u8>(usize::MAX - 40)).unwrap();
                // SAFETY: rejected before any access (its end overflows).
                let r = unsafe { tlsf.insert_free_block_ptr(NonNull::slice_from_raw_parts(near_end, 100)) };
                assert!(r.is_none());
                assert_eq!(tlsf.check(), Ok((0, 0)), "a rejected pool changed the heap");
                assert!(tlsf.allocate(Layout::new::<u8>()).is_none(), "an empty heap allocated");
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 4096)).unwrap() };
                let before = tlsf.check().unwrap();
                for layout in [
                    Layout::from_size_align(isize::MAX as usize - 4096, 1).unwrap(),
                    Layout::from_size_align(5000, 1).unwrap(),
                    Layout::from_size_align(8, 1 << 20).unwrap(),
                    Layout::from_size_align(1, 1 << 62).unwrap(),
                    Layout::from_size_align(T::MAX_ALLOCATION_SIZE + 1, 1).unwrap(),
                ] {
                    assert!(tlsf.allocate(layout).is_none(), "{layout:?} cannot fit");
                    assert_eq!(tlsf.check().unwrap(), before, "a failed allocation changed the heap");
                }
                let zero = tlsf.allocate(Layout::from_size_align(0, 8).unwrap()).expect("zero size");
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(zero, 8) };
                assert_eq!(tlsf.check().unwrap(), before);
            }

            /// A second free of the same block is refused (`try_deallocate`) and the heap
            /// stays intact; a pointer that is no block start is refused too.
            #[test]
            fn double_free_is_refused() {
                let buffer = Memory::page_aligned(4096);
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 4096)).unwrap() };
                let a = tlsf.allocate(Layout::new::<[u64; 4]>()).unwrap();
                let _b = tlsf.allocate(Layout::new::<[u64; 4]>()).unwrap();
                // SAFETY: live.
                unsafe { tlsf.try_deallocate(a).unwrap() };
                let before = tlsf.check().unwrap();
                // SAFETY: `a` points into the pool (its header is readable).
                assert_eq!(unsafe { tlsf.try_deallocate(a) }, Err(AllocError::NotAllocated));
                // SAFETY: as above.
                assert_eq!(unsafe { tlsf.try_deallocate(a.add(GRANULARITY)) }, Err(AllocError::NotAllocated));
                assert_eq!(tlsf.check().unwrap(), before, "a refused free changed the heap");
            }

            /// `deallocate` panics on a double free in debug builds.
            #[test]
            #[cfg(debug_assertions)]
            #[should_panic(expected = "double free")]
            fn double_free_panics_in_debug() {
                let buffer = Memory::page_aligned(4096);
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 4096)).unwrap() };
                let a = tlsf.allocate(Layout::new::<u64>()).unwrap();
                let _b = tlsf.allocate(Layout::new::<u64>()).unwrap();
                // SAFETY: deliberately freed twice; the second is caught before any write.
                unsafe {
                    tlsf.deallocate(a, 8);
                    tlsf.deallocate(a, 8);
                }
            }

            /// A pool of one free block over `buffer` (512 bytes; 496 fit every
            /// configuration's largest block) and three 64-byte blocks cut from it in physical
            /// order.
            fn three_neighbours(buffer: &Memory) -> (T, [NonNull<u8>; 3]) {
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 512)).unwrap() };
                let layout = Layout::from_size_align(64, 8).unwrap();
                let blocks = [(); 3].map(|()| tlsf.allocate(layout).unwrap());
                (tlsf, blocks)
            }

            /// Issue 14, defect 1: `b` merges into its free predecessor `a` and successor `c`;
            /// a second free of `b` must be refused (its absorbed header used to keep `USED`,
            /// with the merged successor's stale back-link pointing at it) and change nothing.
            #[test]
            fn double_free_after_a_merge_is_refused() {
                let buffer = Memory::page_aligned(512);
                let (mut tlsf, [a, b, c]) = three_neighbours(&buffer);
                // Physical order a, b, c: b merges with both.
                assert_eq!(b.as_ptr().addr() - a.as_ptr().addr(), block_for(64));
                assert_eq!(c.as_ptr().addr() - b.as_ptr().addr(), block_for(64));
                // SAFETY: live, each freed once; the second free of `b` is the test (its
                // header bytes were never written by us).
                unsafe {
                    tlsf.try_deallocate(a).unwrap();
                    tlsf.try_deallocate(c).unwrap();
                    tlsf.try_deallocate(b).unwrap();
                    let before = tlsf.check().unwrap();
                    assert_eq!(before, (1, 512 - GRANULARITY), "one free block again");
                    assert_eq!(tlsf.try_deallocate(b), Err(AllocError::NotAllocated));
                    assert_eq!(tlsf.try_deallocate(c), Err(AllocError::NotAllocated));
                    assert_eq!(tlsf.check().unwrap(), before, "a refused free changed the heap");
                    let stats = tlsf.check_pool(buffer.slice(0, 512)).unwrap();
                    assert_eq!((stats.used_blocks, stats.free_blocks), (0, 1));
                }
            }

            /// `deallocate` panics on the same double free in debug builds.
            #[test]
            #[cfg(debug_assertions)]
            #[should_panic(expected = "double free")]
            fn double_free_after_a_merge_panics_in_debug() {
                let buffer = Memory::page_aligned(512);
                let (mut tlsf, [a, b, c]) = three_neighbours(&buffer);
                // SAFETY: deliberately `b` twice; the second is caught before any write.
                unsafe {
                    tlsf.deallocate(a, 8);
                    tlsf.deallocate(c, 8);
                    tlsf.deallocate(b, 8);
                    tlsf.deallocate(b, 8);
                }
            }

            /// Reallocation grows into a free successor and shrinks in place.
            #[test]
            fn reallocate_in_place() {
                let buffer = Memory::page_aligned(4096);
                let mut tlsf = T::new();
                // SAFETY: the buffer, once.
                unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 4096)).unwrap() };
                // Cut from a fresh block, so its successor is the free rest of that block.
                let a = tlsf.allocate(Layout::from_size_align(40, 8).unwrap()).unwrap();
                let big = T::MAX_ALLOCATION_SIZE.min(1000);
                // SAFETY: `a` is live; it is freed once at the end.
                unsafe {
                    a.as_ptr().write_bytes(7, 40);
                    let end = a.as_ptr().addr() + T::usable_size(a);
                    let next = tlsf
                        .iter_blocks(buffer.slice(0, 4096))
                        .find(|b| b.start.as_ptr().addr() == end)
                        .expect("a successor block");
                    assert!(!next.used, "the rest of a's block is free");
                    let target = T::usable_size(a) + next.size;
                    let grown = tlsf.reallocate(a, Layout::from_size_align(target, 8).unwrap()).unwrap();
                    assert_eq!(grown, a, "growing into a free successor must not move");
                    assert!(core::slice::from_raw_parts(a.as_ptr(), 40).iter().all(|&x| x == 7));
                    assert_eq!(T::usable_size(a), target);
                    let shrunk = tlsf.reallocate(a, Layout::from_size_align(16, 8).unwrap()).unwrap();
                    assert_eq!(shrunk, a, "shrinking must not move");
                    assert!(T::usable_size(a) < 2 * GRANULARITY, "the shrunk tail was not given back");
                    tlsf.check().unwrap();
                    // A neighbour in the way forces a move.
                    let blocker = tlsf.allocate(Layout::from_size_align(8, 8).unwrap()).unwrap();
                    let moved = tlsf.reallocate(a, Layout::from_size_align(big, 8).unwrap()).unwrap();
                    assert!(core::slice::from_raw_parts(moved.as_ptr(), 16).iter().all(|&x| x == 7));
                    tlsf.check().unwrap();
                    tlsf.deallocate(moved, 8);
                    tlsf.deallocate(blocker, 8);
                }
                assert_eq!(tlsf.check().unwrap().1, 4096 - GRANULARITY);
            }

            /// A pool grown in place merges its last free block with the new memory.
            #[test]
            fn append_grows_the_pool() {
                let buffer = Memory::page_aligned(4096);
                let mut tlsf = T::new();
                // SAFETY: the first part of the buffer; the rest is appended below.
                let covered = unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 300)).unwrap() };
                let big = Layout::from_size_align(T::MAX_ALLOCATION_SIZE.min(600), 8).unwrap();
                assert!(tlsf.allocate(big).is_none());
                // SAFETY: starts where the pool ends.
                let added = unsafe { tlsf.append_free_block_ptr(buffer.slice(300, 3796)) };
                assert!(added > 0);
                tlsf.check().unwrap();
                // SAFETY: the grown pool's range.
                let stats = unsafe { tlsf.check_pool(buffer.slice(0, covered.get() + added)) }.unwrap();
                assert_eq!((stats.used_blocks, stats.free_bytes), (0, 4096 - GRANULARITY));
                let p = tlsf.allocate(big).expect("the grown pool serves it");
                // SAFETY: live, freed once.
                unsafe { tlsf.deallocate(p, 8) };
            }
        }
    };
}

suite!(u8_u8_4_4, u8, u8, 4, 4);
suite!(u8_u8_8_8, u8, u8, 8, 8);
suite!(u16_u16_12_16, u16, u16, 12, 16);
suite!(u32_u32_28_32, u32, u32, 28, 32);
suite!(u64_u8_20_4, u64, u8, 20, 4);
suite!(usize_u128_16_128, usize, u128, 16, 128);

/// The seed's rlsf example, with only the crate name changed.
#[test]
#[allow(
    clippy::std_instead_of_core,
    clippy::undocumented_unsafe_blocks,
    reason = "rlsf's README example, verbatim"
)]
fn rlsf_readme_example() {
    use smpalloc::Tlsf;
    use std::{alloc::Layout, mem::MaybeUninit};

    let mut pool = [MaybeUninit::uninit(); 65536];

    // On 32-bit systems, the maximum block size is 16 << FLLEN = 65536 bytes.
    // The worst-case fragmentation is (16 << FLLEN) / SLLEN - 2 = 4094 bytes.
    // `'pool` represents the memory pool's lifetime (`pool` in this case).
    let mut tlsf: Tlsf<'_, u16, u16, 12, 16> = Tlsf::INIT;
    //                 ^^            ^^  ^^
    //                  |             |  |
    //                'pool           |  SLLEN
    //                               FLLEN
    tlsf.insert_free_block(&mut pool);

    unsafe {
        let mut ptr1 = tlsf.allocate(Layout::new::<u64>()).unwrap().cast::<u64>();
        let mut ptr2 = tlsf.allocate(Layout::new::<u64>()).unwrap().cast::<u64>();
        *ptr1.as_mut() = 42;
        *ptr2.as_mut() = 56;
        assert_eq!(*ptr1.as_ref(), 42);
        assert_eq!(*ptr2.as_ref(), 56);
        tlsf.deallocate(ptr1.cast(), Layout::new::<u64>().align());
        tlsf.deallocate(ptr2.cast(), Layout::new::<u64>().align());
    }
}

/// The safe `insert_free_block` over a borrowed slice, and the block iterator's view of it.
#[test]
fn insert_free_block_borrows_the_pool() {
    let mut pool = [MaybeUninit::<u8>::uninit(); 1000];
    let mut tlsf: Tlsf<'_, u16, u16, 12, 16> = Tlsf::new();
    let covered = tlsf
        .insert_free_block(&mut pool)
        .expect("1000 bytes are enough");
    assert!(covered.get() <= 1000 && covered.get() > 1000 - 2 * GRANULARITY);
    let (blocks, bytes) = tlsf.check().unwrap();
    assert_eq!(blocks, 1);
    assert!(bytes >= 1000 - 3 * GRANULARITY);
}

/// Regression (found by a 20,000-case run): a used block and its free successor may sum past
/// `MAX_BLOCK_SIZE`; growing in place into the successor must then leave a free rest, or move.
#[test]
fn in_place_growth_never_exceeds_the_largest_block() {
    type T = Tlsf<'static, u8, u8, 4, 4>; // blocks of at most 496 bytes
    let buffer = Memory::page_aligned(4096);
    let mut tlsf = T::new();
    // SAFETY: the buffer's first 1024 bytes, once: pieces of 496, 480 and 32 bytes.
    unsafe { tlsf.insert_free_block_ptr(buffer.slice(0, 1024)).unwrap() };
    let pool = buffer.slice(0, 1024);
    // SAFETY: the pool just inserted.
    let sizes: Vec<usize> = unsafe { tlsf.iter_blocks(pool) }.map(|b| b.size).collect();
    assert_eq!(sizes, [496, 480, 32], "the scenario needs this carving");
    let x = tlsf
        .allocate(Layout::from_size_align(480, 8).unwrap())
        .unwrap();
    let y = tlsf
        .allocate(Layout::from_size_align(464, 8).unwrap())
        .unwrap();
    // SAFETY: `x` is live and freed once.
    unsafe { tlsf.deallocate(x, 8) };
    // `y` (480 bytes) and the free 32-byte block after it sum to 512 > 496.
    // SAFETY: the pool; `y` is live.
    let blocks: Vec<_> = unsafe { tlsf.iter_blocks(pool) }.collect();
    assert!(
        blocks[1].used && !blocks[2].used && blocks[1].size + blocks[2].size > T::MAX_BLOCK_SIZE
    );
    // SAFETY: `y` is live; the result replaces it.
    let z = unsafe { tlsf.reallocate(y, Layout::from_size_align(472, 8).unwrap()) }.unwrap();
    tlsf.check().unwrap();
    // SAFETY: the pool.
    unsafe { tlsf.check_pool(pool) }.unwrap();
    // SAFETY: `z` is live and freed once.
    unsafe { tlsf.deallocate(z, 8) };
    assert_eq!(tlsf.check().unwrap().1, 1024 - GRANULARITY);
}
