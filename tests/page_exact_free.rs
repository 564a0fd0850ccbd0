//! Issue 14, defect 5: a page free must name exactly one allocation.
//!
//! `BuddyPageAllocator::try_dealloc_pages` accepted a part of an allocation (3 pages allocated,
//! the first 2 freed: `Ok`, used pages 3 -> 1) and two neighbouring allocations freed as one.
//! The buddy now records where each allocation begins and ends in its page states, so every
//! such free is `NotAllocated` with nothing changed. The bitmap keeps no allocation boundaries:
//! it frees *pages*, and its documented behaviour for the same inputs is asserted here too.
//!
//! Each bad free is followed by `check()` and a comparison of every counter.

use smpalloc::AllocError;
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator};

const P: usize = 4096;
const BASE: usize = 0x4000_0000;
type Buddy = BuddyPageAllocator<P, 4, 2>;
type Bitmap = BitmapPageAllocator<P>;

/// Every counter of a buddy, to compare before and after a refused call.
fn buddy_counters(pages: &Buddy) -> (usize, usize, usize, usize, [usize; 32]) {
    (
        pages.total_pages(),
        pages.used_pages(),
        pages.available_pages(),
        pages.cached_pages(),
        pages.free_blocks(),
    )
}

/// A buddy over 64 pages at `BASE` (four maximal blocks of 16).
fn buddy() -> Buddy {
    let pages = Buddy::with_window(BASE, 64 * P).with_watermarks(4, 2);
    pages.add_memory(BASE, 64 * P).unwrap();
    pages
}

/// Asserts `free(addr, count)` fails with `error` and changes nothing.
#[track_caller]
fn refused(pages: &Buddy, addr: usize, count: usize, error: AllocError) {
    let before = buddy_counters(pages);
    let owned: Vec<bool> = (0..64).map(|i| pages.is_allocated(BASE + i * P)).collect();
    assert_eq!(
        pages.try_dealloc_pages(addr, count),
        Err(error),
        "free({addr:#x}, {count})"
    );
    assert_eq!(pages.check(), Ok(()));
    assert_eq!(buddy_counters(pages), before, "free({addr:#x}, {count})");
    let after: Vec<bool> = (0..64).map(|i| pages.is_allocated(BASE + i * P)).collect();
    assert_eq!(after, owned, "free({addr:#x}, {count})");
}

/// The reproducer: allocate 3 pages, free the first 2.
#[test]
fn buddy_refuses_a_partial_free_of_three_pages() {
    let pages = buddy();
    let a = pages.alloc_pages(3, P).unwrap();
    assert_eq!(pages.used_pages(), 3);
    refused(&pages, a, 2, AllocError::NotAllocated);
    refused(&pages, a, 1, AllocError::NotAllocated);
    refused(&pages, a + P, 2, AllocError::NotAllocated);
    refused(&pages, a + 2 * P, 1, AllocError::NotAllocated);
    refused(&pages, a + P, 1, AllocError::NotAllocated);
    refused(&pages, a, 4, AllocError::NotAllocated);
    pages.try_dealloc_pages(a, 3).unwrap();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.check(), Ok(()));
}

/// A 3-page allocation whose first canonical block is a single page (it starts at an odd
/// page): its first page alone, freed through the one-page fast path, is a part too.
#[test]
fn buddy_refuses_a_partial_free_through_the_single_page_path() {
    let pages = buddy();
    let a = pages.alloc_pages_at(BASE + P, 3, P).unwrap();
    refused(&pages, a, 1, AllocError::NotAllocated);
    refused(&pages, a + P, 2, AllocError::NotAllocated);
    refused(&pages, a, 2, AllocError::NotAllocated);
    // And 5 pages at page 3 (blocks 3, 4..8): the head page, the tail block.
    let b = pages.alloc_pages_at(BASE + 19 * P, 5, P).unwrap();
    refused(&pages, b, 1, AllocError::NotAllocated);
    refused(&pages, b + P, 4, AllocError::NotAllocated);
    pages.try_dealloc_pages(a, 3).unwrap();
    pages.try_dealloc_pages(b, 5).unwrap();
    pages.drain_cpu_caches();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.free_blocks()[4], 4, "everything merged back");
    assert_eq!(pages.check(), Ok(()));
}

/// The second reproducer: two neighbouring allocations freed as one.
#[test]
fn buddy_refuses_two_neighbours_freed_as_one() {
    let pages = buddy();
    // 2 pages + 1 page: together the canonical decomposition of a 3-page range.
    let x = pages.alloc_pages_at(BASE, 2, P).unwrap();
    let y = pages.alloc_pages_at(BASE + 2 * P, 1, P).unwrap();
    refused(&pages, x, 3, AllocError::NotAllocated);
    // 1 page + 2 pages at an odd page.
    let u = pages.alloc_pages_at(BASE + 17 * P, 1, P).unwrap();
    let v = pages.alloc_pages_at(BASE + 18 * P, 2, P).unwrap();
    refused(&pages, u, 3, AllocError::NotAllocated);
    // 8 pages + 4 pages: together the canonical decomposition of a 12-page range.
    let w = pages.alloc_pages_at(BASE + 32 * P, 8, P).unwrap();
    let z = pages.alloc_pages_at(BASE + 40 * P, 4, P).unwrap();
    refused(&pages, w, 12, AllocError::NotAllocated);
    // A 3-page allocation and the page after it.
    let t = pages.alloc_pages_at(BASE + 48 * P, 3, P).unwrap();
    let s = pages.alloc_pages_at(BASE + 51 * P, 1, P).unwrap();
    refused(&pages, t, 4, AllocError::NotAllocated);
    refused(&pages, t + 2 * P, 2, AllocError::NotAllocated);
    for (addr, count) in [
        (x, 2),
        (y, 1),
        (u, 1),
        (v, 2),
        (w, 8),
        (z, 4),
        (t, 3),
        (s, 1),
    ] {
        pages.try_dealloc_pages(addr, count).unwrap();
        assert_eq!(pages.check(), Ok(()));
    }
    assert_eq!(pages.used_pages(), 0);
}

/// The other bad frees of the issue: a count of 0, a range past the zone, an unaligned base, a
/// count too large; each refused with nothing changed, the allocation intact.
#[test]
fn buddy_refuses_other_bad_frees_of_an_allocation() {
    let pages = buddy();
    let a = pages.alloc_pages(3, P).unwrap();
    refused(&pages, a, 0, AllocError::InvalidParam);
    refused(&pages, BASE + 63 * P, 2, AllocError::InvalidParam);
    refused(&pages, BASE + 64 * P, 1, AllocError::InvalidParam);
    refused(&pages, a + 1, 3, AllocError::InvalidParam);
    refused(&pages, a + P / 2, 3, AllocError::InvalidParam);
    refused(&pages, a, 65, AllocError::InvalidParam);
    refused(&pages, a, usize::MAX, AllocError::InvalidParam);
    refused(&pages, a, usize::MAX / P, AllocError::InvalidParam);
    refused(&pages, a, 16, AllocError::NotAllocated);
    pages.try_dealloc_pages(a, 3).unwrap();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.check(), Ok(()));
}

/// Every allocation the buddy makes can be freed exactly, and only exactly: all sizes 1..=16
/// at every alignment, and every other (start, count) inside them refused.
#[test]
fn buddy_frees_exactly_every_allocation_shape() {
    let pages = buddy();
    for count in 1..=16 {
        for start in 0..(64 - count) {
            let addr = pages.alloc_pages_at(BASE + start * P, count, P).unwrap();
            for first in 0..count {
                for len in 1..=count - first + 1 {
                    if first == 0 && len == count {
                        continue;
                    }
                    assert_eq!(
                        pages.try_dealloc_pages(addr + first * P, len),
                        Err(AllocError::NotAllocated),
                        "allocation ({start}, {count}), free ({}, {len})",
                        start + first
                    );
                }
            }
            assert_eq!(pages.used_pages(), count);
            pages.try_dealloc_pages(addr, count).unwrap();
            assert_eq!(pages.check(), Ok(()));
        }
    }
    pages.drain_cpu_caches();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.free_blocks()[4], 4);
}

// -------------------------------------------------------------------------------------------
// The bitmap: no allocation boundaries, so it frees pages.

fn bitmap() -> Bitmap {
    let pages = Bitmap::new();
    pages.add_memory(BASE, 64 * P).unwrap();
    pages
}

/// Documented: the bitmap frees any range of allocated pages, so a part of an allocation is
/// freed (exactly the pages named) and the rest stays allocated until freed in turn.
#[test]
fn bitmap_frees_part_of_an_allocation_as_documented() {
    let pages = bitmap();
    let a = pages.alloc_pages(3, P).unwrap();
    assert_eq!(pages.try_dealloc_pages(a, 2), Ok(()));
    assert_eq!(pages.used_pages(), 1);
    assert!(!pages.is_allocated(a) && !pages.is_allocated(a + P));
    assert!(pages.is_allocated(a + 2 * P));
    assert_eq!(pages.check(), Ok(()));
    // What it does detect: a range with a free page in it, nothing changed.
    assert_eq!(pages.try_dealloc_pages(a, 3), Err(AllocError::NotAllocated));
    assert_eq!(pages.used_pages(), 1);
    assert_eq!(pages.try_dealloc_pages(a + 2 * P, 1), Ok(()));
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.check(), Ok(()));
}

/// Documented: two neighbouring allocations freed as one range are both freed.
#[test]
fn bitmap_frees_two_neighbours_as_one_as_documented() {
    let pages = bitmap();
    let x = pages.alloc_pages_at(BASE, 2, P).unwrap();
    let y = pages.alloc_pages_at(BASE + 2 * P, 1, P).unwrap();
    assert_eq!(y, x + 2 * P);
    assert_eq!(pages.used_pages(), 3);
    assert_eq!(pages.try_dealloc_pages(x, 3), Ok(()));
    assert_eq!(pages.used_pages(), 0);
    // Both are gone: freeing either now is a double free.
    assert_eq!(pages.try_dealloc_pages(y, 1), Err(AllocError::NotAllocated));
    assert_eq!(pages.try_dealloc_pages(x, 2), Err(AllocError::NotAllocated));
    assert_eq!(pages.check(), Ok(()));
}

/// The bad frees the bitmap does detect, each with nothing changed.
#[test]
fn bitmap_refuses_other_bad_frees_of_an_allocation() {
    let pages = bitmap();
    let a = pages.alloc_pages(3, P).unwrap();
    for (addr, count, error) in [
        (a, 0, AllocError::InvalidParam),
        (BASE + 63 * P, 2, AllocError::InvalidParam),
        (BASE + 64 * P, 1, AllocError::InvalidParam),
        (a + 1, 3, AllocError::InvalidParam),
        (a, 65, AllocError::InvalidParam),
        (a, usize::MAX, AllocError::InvalidParam),
        (a, 4, AllocError::NotAllocated),
    ] {
        assert_eq!(pages.try_dealloc_pages(addr, count), Err(error), "{count}");
        assert_eq!(pages.used_pages(), 3);
        assert_eq!(pages.check(), Ok(()));
        assert!((0..3).all(|i| pages.is_allocated(a + i * P)));
    }
    pages.try_dealloc_pages(a, 3).unwrap();
    assert_eq!(pages.used_pages(), 0);
}
