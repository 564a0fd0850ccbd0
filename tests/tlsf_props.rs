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
use smpalloc::byte::GRANULARITY;
use smpalloc::{AllocError, Tlsf};
use support::memory::Memory;
use support::tlsf::{OPS, block_for, cases, op, run};

const BUF: usize = if cfg!(miri) { 8 * 1024 } else { 96 * 1024 };

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

/// `(gap before, length, growth room after)` of each pool.
fn pools() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    proptest::collection::vec((0..67usize, 0..BUF / 4, 0..BUF / 16), 1..=4)
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
                    run::<$fl, $sl, $fllen, $sllen>(&layout, &ops, BUF, false, &size_of_raw);
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
                    // rlsf's name for it agrees.
                    assert_eq!(T::allocation_usable_size(a), target);
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
