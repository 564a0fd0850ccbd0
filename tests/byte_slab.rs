//! `SlabByteAllocator`: random programs against a shadow model over real memory (no overlap,
//! alignment up to 8192, contents intact, exact `used_bytes`, `check()` after every step, all
//! memory back at the end), one regression test per defect of arceos' slab allocator, and
//! the bad-input cases. Runs under Miri (strict provenance) with fewer and shorter cases.

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;

use smpalloc::byte::slab::class::{CLASSES, class_for, class_size, slab_bytes};
use smpalloc::{AllocError, BaseAllocator, ByteAllocator, SlabByteAllocator};
use support::Rng;
use support::bytes::{self, ByteShadow, check, layout};
use support::memory::Memory;

/// Under Miri 512 KiB: one slab of every class (332 KiB) fits, and every `check()` scans the
/// buddy's state map of the whole pool.
const POOL: usize = if cfg!(miri) { 512 * 1024 } else { 4 << 20 };
const MAX_SIZE: usize = if cfg!(miri) { 8 * 1024 } else { 64 * 1024 };
const OPS: usize = if cfg!(miri) { 30 } else { 300 };

fn slab_over(pool: &Memory, offset: usize, len: usize) -> (SlabByteAllocator, ByteShadow) {
    bytes::over(pool, offset, len)
}

bytes::random_programs_test!(SlabByteAllocator, pool: POOL, ops: OPS, max_size: MAX_SIZE);

/// Many objects of every class, freed in random order: slabs fill, empty and go back; at the
/// end (after `reclaim`) all memory is back in the buddy as its initial free blocks.
#[test]
fn every_class_fills_and_returns_its_slabs() {
    let pool = Memory::new(POOL, 4096);
    let (mut a, mut shadow) = slab_over(&pool, 0, POOL);
    let (blocks, largest) = (a.buddy().free_blocks(), a.buddy().largest_free_block());
    let per_class = if cfg!(miri) { 3 } else { 40 };
    for c in 0..CLASSES {
        for _ in 0..per_class {
            shadow.alloc(&mut a, layout(class_size(c), 1)).unwrap();
        }
        assert!(a.class_counts(c).slabs >= 1 && a.class_counts(c).inuse == per_class);
        check(&a);
    }
    let mut rng = Rng::new(11);
    while shadow.len() > 0 {
        let pick = rng.below(shadow.len());
        shadow.free_nth(&mut a, pick);
        if shadow.len() % 64 == 0 {
            check(&a);
        }
    }
    // Each class keeps at most one empty slab until `reclaim`.
    for c in 0..CLASSES {
        assert!(a.class_counts(c).slabs <= 1 && a.class_counts(c).empty_slabs <= 1);
    }
    shadow.free_all(&mut a);
    for c in 0..CLASSES {
        assert_eq!(a.class_counts(c).slabs, 0);
    }
    assert_eq!(
        (a.buddy().free_blocks(), a.buddy().largest_free_block()),
        (blocks, largest)
    );
}

/// arceos serves every request of at most 4096 bytes from its 4096-byte slab, whose blocks are
/// only 4 KiB aligned, whatever the layout's alignment. Here alignments above 4096 go to the
/// buddy allocator, aligned.
#[test]
fn alignments_above_4096_are_honoured() {
    let pool = Memory::new(POOL, 4096);
    let (mut a, mut shadow) = slab_over(&pool, 4096 + 16, POOL - 8192);
    for _ in 0..if cfg!(miri) { 1 } else { 3 } {
        for (size, align) in [
            (8, 8192),
            (64, 16384),
            (4096, 8192),
            (100, 32768),
            (4096, 4096),
        ] {
            let p = shadow.alloc(&mut a, layout(size, align)).unwrap();
            assert_eq!(p.as_ptr().addr() % align, 0, "size {size} align {align}");
        }
        check(&a);
    }
    shadow.free_all(&mut a);
}

/// arceos adds the slabs' bytes to the buddy heap's although the slabs were carved from it.
/// Here `total_bytes` is the region's block bytes whatever is allocated, `used_bytes` the
/// live objects' class bytes plus the direct blocks, and used + available + slab overhead =
/// total.
#[test]
fn statistics_count_each_byte_once() {
    // Under Miri 128 KiB: the fill below is one interpreted allocation per object.
    const LEN: usize = if cfg!(miri) { 128 * 1024 } else { POOL };
    let pool = Memory::new(LEN, 4096);
    let (mut a, mut shadow) = slab_over(&pool, 0, LEN);
    let total = a.total_bytes();
    assert_eq!(total, a.buddy().total_bytes());
    assert!(total <= LEN);
    assert_eq!(a.available_bytes(), total);
    shadow.alloc(&mut a, layout(24, 8)).unwrap();
    assert_eq!(a.used_bytes(), 24);
    assert_eq!(a.total_bytes(), total);
    let slab = slab_bytes(class_for(24, 8).unwrap());
    assert_eq!(a.buddy().used_bytes(), slab);
    assert_eq!(
        a.used_bytes() + a.available_bytes() + a.overhead_bytes(),
        total
    );
    shadow.alloc(&mut a, layout(5000, 8)).unwrap();
    assert_eq!(a.used_bytes(), 24 + 8192);
    assert_eq!(a.total_bytes(), total);
    // Fill the rest with one class: the identity holds to the last object.
    let fill = if cfg!(miri) { 2048 } else { 640 };
    while shadow.alloc(&mut a, layout(fill, 8)).is_some() {}
    assert_eq!(a.total_bytes(), total);
    assert_eq!(
        a.used_bytes() + a.available_bytes() + a.overhead_bytes(),
        total
    );
    check(&a);
    shadow.free_all(&mut a);
    assert_eq!(a.total_bytes(), total);
}

/// arceos' benchmark shapes: 520 `u64`s (4,160 bytes: past the largest class, so direct
/// buddy blocks) and 64 `u64`s (a slab class), freed in random order.
#[test]
fn arceos_vec_shapes_freed_shuffled() {
    let pool = Memory::new(if cfg!(miri) { 256 * 1024 } else { 64 << 20 }, 4096);
    for (n, elems) in [
        (if cfg!(miri) { 20 } else { 7_500 }, 520),
        (if cfg!(miri) { 100 } else { 25_000 }, 64),
    ] {
        let (mut a, _) = slab_over(&pool, 0, pool.len());
        let l = layout(elems * 8, 8);
        let mut ptrs: Vec<NonNull<u8>> = (0..n).map(|_| a.alloc(l).unwrap()).collect();
        Rng::new(elems as u64).shuffle(&mut ptrs);
        for p in ptrs {
            a.try_dealloc(p, l).unwrap();
        }
        a.reclaim();
        check(&a);
        assert_eq!(a.available_bytes(), a.total_bytes());
    }
}

/// Bad input changes nothing: double free, foreign pointers, a slab object freed with a
/// direct layout and the reverse, a wrong class, an interior pointer; overlapping and
/// too-small regions; zero-size layouts.
#[test]
fn bad_input_is_refused() {
    let pool = Memory::new(POOL, 4096);
    let (mut a, mut shadow) = slab_over(&pool, 0, POOL / 2);
    let small = layout(48, 8);
    let big = layout(5000, 8);
    let s = shadow.alloc(&mut a, small).unwrap();
    let s2 = shadow.alloc(&mut a, small).unwrap();
    let b = shadow.alloc(&mut a, big).unwrap();
    let snapshot = |a: &SlabByteAllocator| {
        (
            a.used_bytes(),
            a.available_bytes(),
            a.total_bytes(),
            a.buddy().free_blocks(),
        )
    };
    let before = snapshot(&a);
    let refused = |a: &mut SlabByteAllocator, ptr: NonNull<u8>, l: Layout| {
        assert!(!a.is_allocated(ptr, l));
        assert_eq!(
            a.try_dealloc(ptr, l),
            Err(AllocError::NotAllocated),
            "{ptr:?} {l:?}"
        );
        check(a);
    };
    assert!(a.is_allocated(s, small) && a.is_allocated(b, big));
    // A slab object freed as a direct block or with another class; a direct block freed as a
    // slab object; interior pointers; outside every region; a slab object not yet carved.
    refused(&mut a, s, layout(8192, 1));
    refused(&mut a, s, layout(16, 8));
    refused(&mut a, s, layout(4096, 1));
    refused(&mut a, b, small);
    refused(&mut a, b, layout(4096, 4096));
    refused(
        &mut a,
        NonNull::new(s.as_ptr().wrapping_add(8)).unwrap(),
        small,
    );
    refused(
        &mut a,
        NonNull::new(b.as_ptr().wrapping_add(16)).unwrap(),
        big,
    );
    let outside = 0u64;
    refused(&mut a, NonNull::from(&outside).cast(), small);
    refused(&mut a, pool.slice(POOL / 2 + 4096, 16).cast(), small);
    let third = NonNull::new(
        s.as_ptr()
            .wrapping_add(2 * 48)
            .max(s2.as_ptr().wrapping_add(48)),
    )
    .unwrap();
    refused(&mut a, third, small);
    // A slab's first byte (an object of the class's slab, freed with a direct layout of the
    // slab's size) is not a direct block.
    let slab = slab_bytes(class_for(48, 8).unwrap());
    let start = NonNull::new(s.as_ptr().map_addr(|x| x & !(slab - 1))).unwrap();
    refused(&mut a, start, layout(slab, slab));
    assert_eq!(snapshot(&a), before);
    // Zero size.
    let z = a.alloc(layout(0, 8192)).unwrap();
    assert_eq!(z.as_ptr().addr() % 8192, 0);
    a.dealloc(z, layout(0, 8192));
    assert_eq!(snapshot(&a), before);
    // Double free of a slab object and of a direct block.
    a.try_dealloc(s, small).unwrap();
    a.try_dealloc(b, big).unwrap();
    let after = snapshot(&a);
    refused(&mut a, s, small);
    refused(&mut a, b, big);
    assert_eq!(snapshot(&a), after);
    a.try_dealloc(s2, small).unwrap();
    // Regions. SAFETY (all `add_region` calls): the pool outlives the allocator; refused ones
    // are not used.
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            a.add_region(pool.slice(64, 100_000)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            a.add_region(pool.slice(POOL / 2, 300)),
            Err(AllocError::InvalidParam)
        );
    }
    assert_eq!(
        a.add_memory(usize::MAX - 100, 200),
        Err(AllocError::InvalidParam)
    );
    a.reclaim();
    check(&a);
    assert_eq!(a.used_bytes(), 0);
    assert_eq!(a.available_bytes(), a.total_bytes());
}

/// The trait's `dealloc` refuses bad input with a `debug_assert!`.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "double free")]
fn dealloc_of_a_freed_object_panics_in_debug() {
    bytes::dealloc_twice::<SlabByteAllocator>();
}

/// `init` panics with the reason when the region is refused.
#[test]
#[should_panic(expected = "SlabByteAllocator::init")]
fn init_of_a_null_region_panics() {
    SlabByteAllocator::default().init(0, 4096);
}

/// `new` is `const`: the allocator lives in a `static` behind the crate's lock.
#[test]
fn lives_in_a_static_behind_a_lock() {
    static SLAB: smpalloc::SpinLock<SlabByteAllocator> =
        smpalloc::SpinLock::new(SlabByteAllocator::new());
    let pool = Memory::new(128 * 1024, 4096);
    let mut a = SLAB.lock();
    // SAFETY: the pool outlives every use of the allocator below (it is emptied first).
    unsafe { a.add_region(pool.all()) }.unwrap();
    let p = a.alloc(layout(200, 8)).unwrap();
    a.try_dealloc(p, layout(200, 8)).unwrap();
    a.reclaim();
    check(&*a);
    assert_eq!(a.used_bytes(), 0);
    // The pool is freed when this test ends: reset the static so no one uses it after.
    *a = SlabByteAllocator::new();
}
