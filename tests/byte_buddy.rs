//! `BuddyByteAllocator`: random programs against a shadow model over real memory (no overlap,
//! alignment up to 8192, contents intact, exact `used_bytes`, `check()` after every step, all
//! memory back at the end), one regression test per defect of arceos' buddy allocator, and
//! the bad-input cases. Runs under Miri (strict provenance) with fewer and shorter cases.

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;

use smpalloc::{AllocError, BaseAllocator, BuddyByteAllocator, ByteAllocator};
use support::Rng;
use support::bytes::{self, ByteShadow, check, layout};
use support::memory::Memory;

const POOL: usize = if cfg!(miri) { 64 * 1024 } else { 4 << 20 };
const MAX_SIZE: usize = if cfg!(miri) { 8 * 1024 } else { 64 * 1024 };
const OPS: usize = if cfg!(miri) { 30 } else { 300 };

/// An allocator over `pool`'s bytes `[offset, offset + len)`.
fn buddy_over(pool: &Memory, offset: usize, len: usize) -> (BuddyByteAllocator, ByteShadow) {
    bytes::over(pool, offset, len)
}

bytes::random_programs_test!(BuddyByteAllocator, pool: POOL, ops: OPS, max_size: MAX_SIZE);

/// arceos' buddy scans the free list for the buddy on every merge, so 25,000 frees in random
/// order are quadratic (1.6 s in its benchmark). Here every merge is O(1): free 25,000
/// 512-byte blocks (arceos' `Vec<u64>` of 64) in random order and check that every merge
/// happened: all bytes available, the free blocks exactly the initial carving.
#[test]
fn random_order_frees_merge_completely() {
    let n = if cfg!(miri) { 300 } else { 25_000 };
    let pool = Memory::new(n * 512 * 2, 4096);
    let (mut a, _) = buddy_over(&pool, 0, pool.len());
    let (blocks, largest) = (a.free_blocks(), a.largest_free_block());
    let l = layout(512, 8);
    let mut ptrs: Vec<NonNull<u8>> = (0..n).map(|_| a.alloc(l).unwrap()).collect();
    assert_eq!(a.used_bytes(), n * 512);
    check(&a);
    Rng::new(7).shuffle(&mut ptrs);
    for (i, p) in ptrs.into_iter().enumerate() {
        a.try_dealloc(p, l).unwrap();
        if i % 5_000 == 0 {
            check(&a);
        }
    }
    check(&a);
    assert_eq!(a.used_bytes(), 0);
    assert_eq!(a.available_bytes(), a.total_bytes());
    assert_eq!((a.free_blocks(), a.largest_free_block()), (blocks, largest));
}

/// A weakly aligned region (start 8 bytes past a 16-byte boundary, odd length) is cut into
/// maximal aligned blocks: every 16-byte block between the first and last boundary is
/// usable, except the metadata at the end.
#[test]
fn weakly_aligned_region_wastes_nothing() {
    let len = if cfg!(miri) {
        8 * 1024 + 3
    } else {
        256 * 1024 + 3
    };
    let pool = Memory::new(len + 64, 4096);
    let (mut a, _) = buddy_over(&pool, 24, len);
    let total = a.total_bytes();
    // The metadata is 3.1 % plus the descriptor; everything else is blocks.
    assert!(total >= len - len / 32 - 1024, "total {total} of {len}");
    let mut n = 0;
    while a.alloc(layout(16, 16)).is_ok() {
        n += 1;
    }
    assert_eq!(n * 16, total);
    assert_eq!(a.available_bytes(), 0);
    check(&a);
}

/// Alignment up to the block size, and larger than the size, is honoured.
#[test]
fn alignments_up_to_64_kib() {
    let pool = Memory::new(POOL, 4096);
    let (mut a, mut shadow) = buddy_over(&pool, 16 * 3, POOL - 100);
    for shift in 0..=if cfg!(miri) { 12 } else { 16 } {
        let l = layout(1 + shift * 7, 1 << shift);
        let p = shadow.alloc(&mut a, l).expect("memory");
        assert_eq!(p.as_ptr().addr() % (1 << shift), 0);
        check(&a);
    }
    shadow.free_all(&mut a);
}

/// arceos' `buddy_system_allocator` 0.10 indexes past its 32 free lists for blocks of 4 GiB and
/// more (a panic). Here orders go up to half the address space: hand it an 8 GiB region
/// (virtual memory; only the metadata and block links are touched) and take a 4 GiB block.
#[test]
#[cfg_attr(miri, ignore = "needs gigabytes of address space")]
fn blocks_of_4_gib_and_more() {
    const GIB: usize = 1 << 30;
    if usize::BITS < 64 {
        return;
    }
    let l = Layout::from_size_align(8 * GIB, 4 * GIB).unwrap();
    // SAFETY: non-zero size.
    let Some(base) = NonNull::new(unsafe { std::alloc::alloc(l) }) else {
        eprintln!("no 8 GiB of address space here: skipped");
        return;
    };
    let mut a = BuddyByteAllocator::new();
    // SAFETY: ours until the dealloc below; the allocator is not used after it.
    unsafe { a.add_region(NonNull::slice_from_raw_parts(base, 8 * GIB)) }.unwrap();
    assert_eq!(a.largest_free_block(), 4 * GIB);
    let big = layout(4 * GIB, 1);
    let p = a.alloc(big).unwrap();
    assert_eq!(p.as_ptr().addr() % (4 * GIB), 0);
    assert_eq!(a.used_bytes(), 4 * GIB);
    assert_eq!(a.alloc(layout(4 * GIB, 1)), Err(AllocError::NoMemory));
    let small = a.alloc(layout(100, 8)).unwrap();
    a.check().unwrap();
    a.try_dealloc(small, layout(100, 8)).unwrap();
    a.try_dealloc(p, big).unwrap();
    assert_eq!(a.largest_free_block(), 4 * GIB);
    assert_eq!(a.used_bytes(), 0);
    a.check().unwrap();
    // SAFETY: allocated above with `l`.
    unsafe { std::alloc::dealloc(base.as_ptr(), l) };
}

/// Bad input changes nothing: double free, foreign pointers, wrong layouts, interior
/// pointers; overlapping and too-small regions; zero-size layouts.
#[test]
fn bad_input_is_refused() {
    let pool = Memory::new(POOL, 4096);
    let (mut a, mut shadow) = buddy_over(&pool, 0, POOL / 2);
    let l = layout(100, 8);
    let p = shadow.alloc(&mut a, l).unwrap();
    let q = shadow.alloc(&mut a, layout(3000, 64)).unwrap();
    let snapshot = |a: &BuddyByteAllocator| {
        (
            a.used_bytes(),
            a.available_bytes(),
            a.total_bytes(),
            a.free_blocks(),
        )
    };
    let before = snapshot(&a);
    assert!(a.is_allocated(p, l) && !a.is_allocated(p, layout(1000, 8)));
    let refused = |a: &mut BuddyByteAllocator, ptr: NonNull<u8>, l: Layout| {
        assert!(!a.is_allocated(ptr, l));
        assert_eq!(
            a.try_dealloc(ptr, l),
            Err(AllocError::NotAllocated),
            "{ptr:?} {l:?}"
        );
        check(a);
    };
    // Wrong block size, interior pointer, pointer outside every region, a never-allocated block.
    refused(&mut a, p, layout(1000, 8));
    refused(&mut a, p, layout(8, 8));
    refused(
        &mut a,
        NonNull::new(p.as_ptr().wrapping_add(16)).unwrap(),
        layout(16, 1),
    );
    refused(&mut a, pool.slice(POOL / 2 + 64, 16).cast(), layout(16, 1));
    let outside = 0u64;
    refused(&mut a, NonNull::from(&outside).cast(), layout(8, 8));
    refused(
        &mut a,
        NonNull::new(q.as_ptr().wrapping_add(4096)).unwrap(),
        layout(4096, 1),
    );
    assert_eq!(snapshot(&a), before);
    // Zero size: an aligned dangling pointer; freeing it is a no-op.
    let z = a.alloc(layout(0, 4096)).unwrap();
    assert_eq!(z.as_ptr().addr() % 4096, 0);
    a.try_dealloc(z, layout(0, 4096)).unwrap();
    a.dealloc(z, layout(0, 4096));
    assert_eq!(snapshot(&a), before);
    // Too large for any block.
    assert_eq!(
        a.alloc(layout(usize::MAX / 2, 1)),
        Err(AllocError::NoMemory)
    );
    assert_eq!(a.alloc(layout(POOL, 1)), Err(AllocError::NoMemory));
    assert_eq!(snapshot(&a), before);
    // Double free.
    shadow.free_nth(&mut a, 0);
    let after_free = snapshot(&a);
    let freed = if a.used_bytes() == 4096 {
        (p, l)
    } else {
        (q, layout(3000, 64))
    };
    refused(&mut a, freed.0, freed.1);
    assert_eq!(snapshot(&a), after_free);
    // Regions: overlap (inside, straddling, identical), too small, empty, wrapping.
    // SAFETY: (all `add_region` calls) the pool outlives the allocator; refused ones are unused.
    unsafe {
        assert_eq!(
            a.add_region(pool.slice(100, 1000)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            a.add_region(pool.slice(POOL / 2 - 16, 1000)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            a.add_region(pool.slice(0, POOL / 2)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            a.add_region(pool.slice(POOL / 2, 200)),
            Err(AllocError::InvalidParam)
        );
        assert_eq!(
            a.add_region(pool.slice(POOL / 2, 0)),
            Err(AllocError::InvalidParam)
        );
    }
    assert_eq!(
        a.add_memory(usize::MAX - 10, 100),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(a.add_memory(0, 100), Err(AllocError::InvalidParam));
    assert_eq!(snapshot(&a), after_free);
    assert_eq!(a.regions_len(), 1);
    // A region right after the first one is a separate region; blocks do not merge across.
    bytes::add_region(&mut a, &mut shadow, &pool, POOL / 2, POOL / 2);
    assert_eq!(a.regions_len(), 2);
    check(&a);
    shadow.free_all(&mut a);
}

/// The trait's `dealloc` refuses bad input with a `debug_assert!`.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "double free")]
fn dealloc_of_a_freed_block_panics_in_debug() {
    bytes::dealloc_twice::<BuddyByteAllocator>();
}

/// `init` panics with the reason when the region is refused.
#[test]
#[should_panic(expected = "BuddyByteAllocator::init")]
fn init_of_a_null_region_panics() {
    BuddyByteAllocator::new().init(0, 4096);
}

/// The allocator can be filled to the last block and emptied again, over several regions.
#[test]
fn fill_and_drain_several_regions() {
    // Under Miri 24 KiB, about the least the three regions fit in (the fill ends with
    // thousands of 16-byte blocks, each an interpreted step).
    const LEN: usize = if cfg!(miri) { 24 * 1024 } else { POOL };
    let pool = Memory::new(LEN, 4096);
    let mut a = BuddyByteAllocator::default();
    let mut shadow = ByteShadow::new();
    for (offset, len) in [
        (8, LEN / 4 - 8),
        (LEN / 4 + 4096, LEN / 4 - 5000),
        (LEN / 2, LEN / 2 - 1),
    ] {
        bytes::add_region(&mut a, &mut shadow, &pool, offset, len);
    }
    let mut rng = Rng::new(3);
    let sizes = [16, 24, 100, 512, 4000, 9000];
    loop {
        let size = sizes[rng.below(sizes.len())];
        if shadow.alloc(&mut a, layout(size, 8)).is_none() {
            break;
        }
    }
    while shadow.alloc(&mut a, layout(1, 1)).is_some() {}
    assert_eq!(a.available_bytes(), 0);
    assert_eq!(a.largest_free_block(), 0);
    check(&a);
    shadow.free_all(&mut a);
}

/// `new` is `const`: the allocator lives in a `static` behind the crate's lock, as a kernel
/// keeps it.
#[test]
fn lives_in_a_static_behind_a_lock() {
    static BUDDY: smpalloc::SpinLock<BuddyByteAllocator> =
        smpalloc::SpinLock::new(BuddyByteAllocator::new());
    let pool = Memory::new(64 * 1024, 4096);
    let mut a = BUDDY.lock();
    // SAFETY: the pool outlives every use of the allocator below (it is emptied first).
    unsafe { a.add_region(pool.all()) }.unwrap();
    let p = a.alloc(layout(200, 8)).unwrap();
    a.try_dealloc(p, layout(200, 8)).unwrap();
    check(&*a);
    assert_eq!(a.used_bytes(), 0);
    // The pool is freed when this test ends: reset the static so no one uses it after.
    *a = BuddyByteAllocator::new();
}
