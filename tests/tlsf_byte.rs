//! `TlsfByteAllocator` through arceos' traits: the seed's example, the byte counters
//! (`used + available` equals the bytes in blocks after every step, and the allocator's own
//! `check` agrees), region errors, growth in place (the bitmap moving with it), zero-size
//! layouts, and refused frees: every bad pointer (stale, double, merged, interior, forged
//! header, foreign, misaligned, first granule, bitmap) is `Err(NotAllocated)` and changes
//! nothing (issue 14).

mod support;

use core::alloc::Layout;
use core::panic::AssertUnwindSafe;
use core::ptr::NonNull;
use std::panic::catch_unwind;

use smpalloc::byte::GRANULARITY;
use smpalloc::{AllocError, BaseAllocator, ByteAllocator, TlsfByteAllocator};
use support::Rng;
use support::memory::{Fill, MemShadow};

/// A leaked, 4096-aligned buffer (arceos hands the allocator plain addresses).
fn region(len: usize) -> usize {
    let layout = Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: non-zero size; leaked on purpose (the allocator keeps it).
    unsafe { std::alloc::alloc(layout) }.expose_provenance()
}

/// Seed 001's TLSF example, on a real buffer instead of address 0x100000.
#[test]
fn arceos_readme_example() {
    let start = region(1024 * 1024);
    let mut allocator = TlsfByteAllocator::new();
    allocator.init(start, 1024 * 1024); // init(start_addr, size)
    let layout = Layout::from_size_align(1024, 16).unwrap();
    let ptr = allocator.alloc(layout).expect("分配失败");
    // SAFETY: 1024 bytes were just allocated.
    unsafe { ptr.as_ptr().cast::<u32>().write(0xdead_beef) };
    allocator.dealloc(ptr, layout);
    assert_eq!(allocator.used_bytes(), 0);
    assert_eq!(allocator.total_bytes(), 1024 * 1024);
    allocator.check().unwrap();
}

/// Random alloc/free against the shadow model; counters and `check` after every step.
#[test]
fn counters_track_every_step() {
    let len = 256 * 1024 + 13;
    let start = region(len + 64) + 5;
    let mut a = TlsfByteAllocator::new();
    a.init(start, len);
    let mut shadow = MemShadow::new(Fill::Whole);
    shadow.set_pool(0, start, start + len);
    let capacity = a.available_bytes();
    // Slack, the sentinel, and the bitmap: one word per 64 granules (1/129 of the region).
    let bitmap = len.div_ceil(129 * GRANULARITY / 2) * GRANULARITY / 2;
    assert!(capacity > len - 4 * GRANULARITY - bitmap && capacity < len - bitmap + GRANULARITY);
    let mut rng = Rng::new(42);
    // Pointers freed since (stale unless handed out again): each step also tries to free one,
    // or a random address of the region, which must be refused and change nothing.
    let mut stale: Vec<(NonNull<u8>, Layout)> = Vec::new();
    for step in 0..5000 {
        let bad = if rng.below(2) == 0 && !stale.is_empty() {
            stale[rng.below(stale.len())].0.as_ptr().addr()
        } else {
            start + rng.below(len)
        };
        if !shadow.lives().any(|l| l.ptr.as_ptr().addr() == bad) {
            let used = a.used_bytes();
            let ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(bad)).unwrap();
            assert_eq!(
                a.try_dealloc(ptr, Layout::new::<u64>()),
                Err(AllocError::NotAllocated),
                "a free of {bad:#x}, no live allocation, was accepted"
            );
            assert_eq!(a.used_bytes(), used);
        }
        if rng.below(3) != 0 || shadow.is_empty() {
            let size = if rng.below(10) == 0 {
                rng.below(20_000)
            } else {
                rng.below(200)
            };
            let layout = Layout::from_size_align(size, 1 << rng.below(8)).unwrap();
            match a.alloc(layout) {
                Ok(p) => shadow.allocated(p, layout),
                Err(e) => assert_eq!(e, AllocError::NoMemory),
            }
        } else {
            let l = shadow.nth(rng.below(shadow.len())).unwrap();
            shadow.freeing(l.ptr);
            a.dealloc(l.ptr, l.layout);
            stale.push((l.ptr, l.layout));
        }
        a.check().unwrap();
        if step % 100 == 0 {
            shadow.verify_all();
        }
        assert_eq!(a.used_bytes() + a.available_bytes(), capacity);
        assert!(a.used_bytes() >= shadow.lives().map(|l| l.layout.size()).sum::<usize>());
    }
    while let Some(l) = shadow.nth(0) {
        shadow.freeing(l.ptr);
        a.dealloc(l.ptr, l.layout);
    }
    assert_eq!((a.used_bytes(), a.available_bytes()), (0, capacity));
}

/// Region errors change nothing; a region right after another grows that pool.
#[test]
fn add_memory_errors_and_growth() {
    let start = region(64 * 1024);
    let mut a = TlsfByteAllocator::new();
    assert_eq!(a.add_memory(start, 0), Err(AllocError::InvalidParam));
    assert_eq!(a.add_memory(start, 40), Err(AllocError::InvalidParam));
    assert_eq!(
        a.add_memory(usize::MAX - 10, 100),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(a.add_memory(0, 4096), Err(AllocError::InvalidParam));
    // Ends exactly at the top of the address space, too short for a pool (never touched).
    assert_eq!(
        a.add_memory(usize::MAX - 40, 40),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(
        (a.total_bytes(), a.available_bytes()),
        (0, 0),
        "errors changed the allocator"
    );
    a.add_memory(start, 1000).unwrap();
    assert_eq!(
        a.add_memory(start + 500, 1000),
        Err(AllocError::MemoryOverlap)
    );
    assert_eq!(a.add_memory(start - 10, 11), Err(AllocError::MemoryOverlap));
    let big = Layout::from_size_align(3000, 8).unwrap();
    assert_eq!(a.alloc(big), Err(AllocError::NoMemory));
    // Right after the first region: grows it in place, so 3000 bytes fit in one block.
    a.add_memory(start + 1000, 3000).unwrap();
    let p = a.alloc(big).expect("the grown pool serves it");
    a.check().unwrap();
    a.dealloc(p, big);
    // Fifteen more separate regions fill the table; the next is refused.
    for i in 1..16 {
        a.add_memory(start + i * 4096, 1024).unwrap();
    }
    assert_eq!(
        a.add_memory(start + 16 * 4096 - 1024, 1024),
        Err(AllocError::NoMemory)
    );
    assert_eq!(a.total_bytes(), 4000 + 15 * 1024);
    a.check().unwrap();
}

/// Zero-size layouts and refused frees.
#[test]
fn zero_size_and_refused_frees() {
    let start = region(8192);
    let mut a = TlsfByteAllocator::new();
    a.init(start, 8192);
    let before = a.available_bytes();
    for align in [1, 16, 4096] {
        let zst = Layout::from_size_align(0, align).unwrap();
        let p = a.alloc(zst).unwrap();
        assert_eq!(p.as_ptr().addr(), align);
        a.dealloc(p, zst);
    }
    assert_eq!(a.available_bytes(), before);
    let layout = Layout::new::<[u64; 8]>();
    let p = a.alloc(layout).unwrap();
    let _q = a.alloc(layout).unwrap();
    let used = a.used_bytes();
    let mut outside = [0u64; 8];
    let outside = NonNull::from(&mut outside).cast::<u8>();
    assert_eq!(
        a.try_dealloc(outside, layout),
        Err(AllocError::NotAllocated)
    );
    a.dealloc(outside, layout); // ignored
    // SAFETY: inside the live block `p`, so inside the region.
    let inner = unsafe { p.add(GRANULARITY) };
    assert_eq!(a.try_dealloc(inner, layout), Err(AllocError::NotAllocated));
    a.try_dealloc(p, layout).unwrap();
    assert_eq!(
        a.try_dealloc(p, layout),
        Err(AllocError::NotAllocated),
        "double free"
    );
    assert!(a.used_bytes() < used);
    a.check().unwrap();
}

/// `init` with an unusable region panics with the reason.
#[test]
#[should_panic(expected = "invalid parameter")]
fn init_with_a_tiny_region_panics() {
    let start = region(64);
    TlsfByteAllocator::new().init(start, 20);
}

/// A free of a pointer inside a live block whose data looks like a used header with a huge
/// size is refused, not an overflowing bounds check.
#[test]
fn refused_free_of_a_forged_huge_header() {
    let start = region(8192);
    let mut a = TlsfByteAllocator::new();
    a.init(start, 8192);
    let layout = Layout::new::<[u64; 8]>();
    let p = a.alloc(layout).unwrap();
    let used = a.used_bytes();
    // SAFETY: `p` holds 64 bytes; the forged header is the first two words at `p + 16`.
    let forged = unsafe {
        let h = p.add(GRANULARITY).cast::<usize>();
        h.write(usize::MAX - 2); // size `usize::MAX - 3`, flags `USED`
        h.add(1).write(0);
        p.add(2 * GRANULARITY)
    };
    assert_eq!(a.try_dealloc(forged, layout), Err(AllocError::NotAllocated));
    assert_eq!(a.used_bytes(), used);
    a.dealloc(p, layout);
    a.check().unwrap();
}

/// Issue 14, defect 1, exactly as reported: `b` is freed while both neighbours are free, so it
/// merges into `a` (its predecessor) and `c`; a second free of `b` used to pass the header
/// check (the absorbed header kept `USED`, and the merged successor's stale `prev_phys` still
/// pointed at it), returned `Ok`, wrapped `used_bytes` and corrupted the free lists.
#[test]
fn double_free_after_a_merge_is_refused() {
    let start = region(64 * 1024);
    let mut alloc = TlsfByteAllocator::new();
    alloc.init(start, 64 * 1024);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let a = alloc.alloc(layout).unwrap();
    let b = alloc.alloc(layout).unwrap();
    let c = alloc.alloc(layout).unwrap();
    alloc.try_dealloc(a, layout).unwrap();
    alloc.try_dealloc(c, layout).unwrap();
    alloc.try_dealloc(b, layout).unwrap();
    alloc.check().unwrap();
    let counters = (alloc.used_bytes(), alloc.available_bytes());
    assert_eq!(counters.0, 0);
    assert_eq!(
        alloc.try_dealloc(b, layout),
        Err(AllocError::NotAllocated),
        "the second free of a merged block"
    );
    assert_eq!((alloc.used_bytes(), alloc.available_bytes()), counters);
    alloc.check().unwrap();
    // The heap is intact: its whole capacity is one allocation again.
    let whole = Layout::from_size_align(counters.1 - GRANULARITY, 8).unwrap();
    let p = alloc.alloc(whole).expect("the pool is one free block");
    alloc.dealloc(p, whole);
    alloc.check().unwrap();
}

/// Every kind of bad pointer is refused by `try_dealloc` (`NotAllocated`) and changes
/// nothing: counters, `check`, the contents of live allocations. `dealloc` of the same pointer
/// panics in debug builds when the pointer lies in a region (ignored in release builds) and is
/// always ignored outside every region; it changes nothing either.
#[test]
fn bad_pointers_are_refused_and_change_nothing() {
    const LEN: usize = 64 * 1024;
    let start = region(LEN);
    let other_start = region(LEN);
    let mut alloc = TlsfByteAllocator::new();
    alloc.init(start, LEN);
    let mut other = TlsfByteAllocator::new();
    other.init(other_start, LEN);
    let small = Layout::from_size_align(64, 8).unwrap();
    let medium = Layout::from_size_align(96, 8).unwrap();
    let large = Layout::from_size_align(128, 8).unwrap();
    let big = Layout::from_size_align(512, 8).unwrap();
    // Blocks in address order from the region's start; `r1` is the last, before the free tail.
    let _left = alloc.alloc(small).unwrap();
    let stale = alloc.alloc(small).unwrap();
    let _right = alloc.alloc(small).unwrap();
    let m1 = alloc.alloc(medium).unwrap();
    let merged = alloc.alloc(medium).unwrap();
    let m3 = alloc.alloc(medium).unwrap();
    let _fence = alloc.alloc(medium).unwrap();
    let r0 = alloc.alloc(large).unwrap();
    let r1 = alloc.alloc(large).unwrap();
    // Stale: freed between two live blocks (not merged).
    alloc.dealloc(stale, small);
    // Merged: freed into a free predecessor and a free successor (the repro).
    alloc.dealloc(m1, medium);
    alloc.dealloc(m3, medium);
    alloc.dealloc(merged, medium);
    // Reused: `r1` merges into `r0` and the tail; the next large allocation starts at `r0` and
    // covers `r1`'s old header, where its owner writes a perfect used header below.
    alloc.dealloc(r0, large);
    alloc.dealloc(r1, large);
    let live = alloc.alloc(big).unwrap();
    assert_eq!(
        live, r0,
        "the scenario needs the merged tail to serve `live`"
    );
    // SAFETY: `live` holds 512 bytes; the writes stay inside them.
    unsafe { live.as_ptr().write_bytes(0xa5, big.size()) };
    // A forged used block of 64 bytes at `live + at` (header: size | USED, prev_phys) whose
    // successor's `prev_phys` (at `live + at + 64 + 8`) points back at it; its payload
    // `live + at + 16` passes any header check.
    let forge = |at: usize| {
        assert!(at + 80 <= big.size());
        // SAFETY: `at .. at + 80` lies inside `live`'s 512 bytes (asserted).
        unsafe {
            let h = live.as_ptr().add(at).cast::<usize>();
            h.write(64 | 1);
            h.add(1).write(0);
            h.byte_add(64 + 8).write(h.addr());
            live.add(at + GRANULARITY)
        }
    };
    assert_eq!(
        forge(r1.as_ptr().addr() - GRANULARITY - live.as_ptr().addr()),
        r1
    );
    let forged = forge(320);
    let forged_huge = {
        // SAFETY: inside `live`; a used header with a size running far past the region.
        unsafe {
            let h = live.as_ptr().add(256).cast::<usize>();
            h.write(usize::MAX - 2);
            live.add(256 + GRANULARITY)
        }
    };
    let foreign_live = other.alloc(small).unwrap();
    let mut on_stack = [0u64; 8];
    let on_stack = NonNull::from(&mut on_stack).cast::<u8>();
    let at =
        |addr: usize| NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
    let in_live = |offset: usize| at(live.as_ptr().addr() + offset);
    let first = start.next_multiple_of(GRANULARITY);

    let cases: Vec<(&str, NonNull<u8>, bool)> = vec![
        ("stale (freed, not merged)", stale, true),
        ("double free after a merge", merged, true),
        ("stale, a forged header where its own was", r1, true),
        ("interior: forged header and back-link", forged, true),
        ("interior: forged huge header", forged_huge, true),
        ("interior: one granule in", in_live(GRANULARITY), true),
        ("interior: two granules in", in_live(2 * GRANULARITY), true),
        ("misaligned: byte 1", in_live(1), true),
        ("misaligned: half a granule", in_live(GRANULARITY / 2), true),
        ("first granule: region start", at(start), true),
        ("first granule: first block's header", at(first), true),
        ("free memory, never allocated", at(start + LEN / 2), true),
        (
            "bitmap at the region's end",
            at(start + LEN - 2 * GRANULARITY),
            true,
        ),
        ("last byte of the region", at(start + LEN - 1), true),
        (
            "foreign: another allocator's live block",
            foreign_live,
            false,
        ),
        (
            "foreign: another allocator's pool",
            at(other_start + LEN / 2),
            false,
        ),
        ("foreign: the stack", on_stack, false),
        ("foreign: address 8", at(8), false),
        ("foreign: just past the region", at(start + LEN), false),
    ];
    alloc.check().unwrap();
    other.check().unwrap();
    let counters = |a: &TlsfByteAllocator| (a.used_bytes(), a.available_bytes(), a.total_bytes());
    let before = (counters(&alloc), counters(&other));
    // SAFETY: `live` holds 512 bytes.
    let contents = unsafe { core::slice::from_raw_parts(live.as_ptr(), big.size()) }.to_vec();
    for (name, ptr, in_region) in cases {
        for layout in [small, big, Layout::new::<u8>()] {
            assert_eq!(
                alloc.try_dealloc(ptr, layout),
                Err(AllocError::NotAllocated),
                "{name}: try_dealloc accepted it"
            );
            let panicked = catch_unwind(AssertUnwindSafe(|| alloc.dealloc(ptr, layout))).is_err();
            assert_eq!(
                panicked,
                in_region && cfg!(debug_assertions),
                "{name}: dealloc panics in debug builds iff the pointer is in a region"
            );
            alloc.check().unwrap_or_else(|e| panic!("{name}: {e}"));
            other.check().unwrap();
            assert_eq!(
                (counters(&alloc), counters(&other)),
                before,
                "{name}: changed counters"
            );
            // SAFETY: as above.
            let now = unsafe { core::slice::from_raw_parts(live.as_ptr(), big.size()) };
            assert_eq!(
                now,
                &contents[..],
                "{name}: a live allocation was overwritten"
            );
        }
    }
    // The real blocks are still freed normally, once.
    alloc.try_dealloc(live, big).unwrap();
    assert_eq!(alloc.try_dealloc(live, big), Err(AllocError::NotAllocated));
    other.try_dealloc(foreign_live, small).unwrap();
    alloc.check().unwrap();
    other.check().unwrap();
}

/// Growth in place moves the bitmap to the new end: live blocks keep their bits (freed once,
/// refused twice), growths that overlap the old bitmap or add less than a block work or are
/// refused cleanly, and `check` (which compares the bitmap with every block) passes after
/// every step.
#[test]
fn growth_moves_the_bitmap() {
    const LEN: usize = 16 * 1024;
    // The loop below grows while `end < start + LEN - 200`, by up to 1,000 bytes: the last
    // growth may end past `start + LEN`, so the buffer has room for it (it once did not, and
    // the allocator wrote its bitmap into someone else's heap memory).
    let start = region(LEN + 1000);
    let mut a = TlsfByteAllocator::new();
    a.add_memory(start, 600).unwrap();
    let layout = Layout::from_size_align(24, 8).unwrap();
    let mut live = Vec::new();
    let mut end = start + 600;
    let mut rng = Rng::new(7);
    while end < start + LEN - 200 {
        while let Ok(p) = a.alloc(layout) {
            live.push(p);
        }
        // Free some, so free blocks sit before the growth.
        for _ in 0..live.len() / 3 {
            let p = live.swap_remove(rng.below(live.len()));
            a.dealloc(p, layout);
        }
        a.check().unwrap();
        let step = [8, 16, 24, 40, 100, 1000][rng.below(6)];
        let before = (a.used_bytes(), a.available_bytes(), a.total_bytes());
        match a.add_memory(end, step) {
            Ok(()) => {
                assert_eq!(a.total_bytes(), before.2 + step);
                assert!(
                    a.available_bytes() > before.1,
                    "a growth of {step} added nothing"
                );
                end += step;
            }
            Err(e) => {
                assert_eq!(e, AllocError::InvalidParam, "growth by {step}");
                assert!(
                    step < 3 * GRANULARITY,
                    "a growth of {step} bytes was refused"
                );
                assert_eq!(
                    (a.used_bytes(), a.available_bytes(), a.total_bytes()),
                    before
                );
                // Refused: the next growth must start at the region's end again.
            }
        }
        a.check().unwrap();
    }
    for p in live.drain(..) {
        a.try_dealloc(p, layout).unwrap();
        assert_eq!(a.try_dealloc(p, layout), Err(AllocError::NotAllocated));
    }
    a.check().unwrap();
    assert_eq!(a.used_bytes(), 0);
    // Still one region: its whole capacity is one allocation.
    let whole = Layout::from_size_align(a.available_bytes() - GRANULARITY, 8).unwrap();
    let p = a.alloc(whole).expect("one pool, one free block");
    a.dealloc(p, whole);
    a.check().unwrap();
}
