//! Issue 18: `BuddyPageAllocator`'s per-CPU caches hold blocks of orders `0..=PCP_MAX_ORDER`
//! (invariant C, docs/design/05-pages.md §"Per-CPU page caches"). A naturally aligned 2-, 4- or
//! 8-page block is allocated from and freed to this CPU's cache; every other shape still goes
//! to the zone. These tests pin what the caches must keep: exact statistics (`cached_pages`,
//! `used_pages`, `available_pages`) with parked blocks, `check()` after every step, the
//! bad-input errors of a free (a double free of a parked block, a part of it, a neighbour pair),
//! `alloc_pages_at` over a parked block (drained, then carved), the per-order watermarks, and
//! everything merged back after `drain_cpu_caches`.

use smpalloc::AllocError;
use smpalloc::page::{BuddyPageAllocator, PCP_MAX_ORDER};

const P: usize = 4096;
const BASE: usize = 0x4000_0000;
/// 4 maximal blocks of 16 pages; two CPU slots (the test thread uses one of them).
type Buddy = BuddyPageAllocator<P, 4, 2>;

/// A buddy over 64 pages at `BASE`, with watermarks `high`, `batch`.
fn buddy(high: usize, batch: usize) -> Buddy {
    let pages = Buddy::with_window(BASE, 64 * P).with_watermarks(high, batch);
    pages.add_memory(BASE, 64 * P).unwrap();
    pages
}

/// `check()`, and the counters against `used` pages owned by the test.
#[track_caller]
fn exact(pages: &Buddy, used: usize) {
    assert_eq!(pages.check(), Ok(()));
    assert_eq!(pages.used_pages(), used);
    assert_eq!(pages.available_pages(), 64 - used);
    assert_eq!(pages.total_pages(), 64);
}

/// After draining, the whole window is free again as four maximal blocks.
#[track_caller]
fn all_merged(pages: &Buddy) {
    assert!(pages.drain_cpu_caches());
    assert_eq!(pages.cached_pages(), 0);
    exact(pages, 0);
    let mut expected = [0; 32];
    expected[4] = 4;
    assert_eq!(pages.free_blocks(), expected);
}

#[test]
fn the_caches_hold_orders_up_to_three() {
    assert_eq!(PCP_MAX_ORDER, 3);
}

/// Aligned blocks of 2, 4 and 8 pages are parked on free (the statistics count them as
/// available, the zone does not) and come back from the cache, most recent first.
#[test]
fn aligned_blocks_round_trip_through_the_cache() {
    let pages = buddy(64, 16);
    for count in [2, 4, 8] {
        let a = pages.alloc_pages(count, P).unwrap();
        assert_eq!(
            a % (count * P),
            0,
            "a block of {count} is naturally aligned"
        );
        exact(&pages, count);
        let zone_free: usize = pages
            .free_blocks()
            .iter()
            .enumerate()
            .map(|(k, n)| n << k)
            .sum();
        pages.try_dealloc_pages(a, count).unwrap();
        exact(&pages, 0);
        assert!(!pages.is_allocated(a));
        assert!(pages.cached_pages() >= count, "the block is parked");
        let zone_after: usize = pages
            .free_blocks()
            .iter()
            .enumerate()
            .map(|(k, n)| n << k)
            .sum();
        assert_eq!(zone_after, zone_free, "a parked block is not in the zone");
        // The same block comes back (LIFO), aligned as asked.
        let b = pages.alloc_pages(count, count * P).unwrap();
        assert_eq!(b, a);
        assert!(pages.is_allocated(b) && pages.is_allocated(b + (count - 1) * P));
        exact(&pages, count);
        pages.try_dealloc_pages(b, count).unwrap();
        exact(&pages, 0);
    }
    all_merged(&pages);
}

/// `alloc_order`/`free_order` of orders 0..=3 go through the cache too; order 4 does not.
#[test]
fn alloc_order_uses_the_cache_for_small_orders() {
    // Small batches, so the refills leave maximal blocks for order 4.
    let pages = buddy(4, 2);
    let mut held = Vec::new();
    for order in 0..=4 {
        let a = pages.alloc_order(order).unwrap();
        assert_eq!(a % (P << order), 0);
        held.push((a, order));
    }
    exact(&pages, 1 + 2 + 4 + 8 + 16);
    let before = pages.cached_pages();
    for &(a, order) in &held {
        pages.free_order(a, order).unwrap();
    }
    exact(&pages, 0);
    assert_eq!(
        pages.cached_pages() - before,
        1 + 2 + 4 + 8,
        "orders 0..=3 parked, order 4 went to the zone"
    );
    // A double free of a parked block of each order is refused, nothing changed.
    for &(a, order) in &held {
        assert_eq!(pages.free_order(a, order), Err(AllocError::NotAllocated));
        exact(&pages, 0);
    }
    all_merged(&pages);
}

/// Bad frees of cached-order shapes: a double free of a parked block, a part of a block, a
/// block freed with a larger count (two neighbours), a block freed as its buddy's order, a
/// misaligned or outside address: each refused, nothing changed.
#[test]
fn bad_frees_of_cached_blocks_change_nothing() {
    let pages = buddy(64, 16);
    let a = pages.alloc_pages(4, P).unwrap();
    let b = pages.alloc_pages(4, P).unwrap();
    let c = pages.alloc_pages(8, P).unwrap();
    exact(&pages, 16);
    let refused = |addr: usize, count: usize, error: AllocError| {
        let before = (
            pages.used_pages(),
            pages.cached_pages(),
            pages.free_blocks(),
        );
        assert_eq!(
            pages.try_dealloc_pages(addr, count),
            Err(error),
            "free({addr:#x}, {count})"
        );
        assert_eq!(pages.check(), Ok(()));
        let after = (
            pages.used_pages(),
            pages.cached_pages(),
            pages.free_blocks(),
        );
        assert_eq!(after, before, "free({addr:#x}, {count})");
    };
    // Parts of a block: its first half, its second half, one page inside it.
    refused(c, 4, AllocError::NotAllocated);
    refused(c + 4 * P, 4, AllocError::NotAllocated);
    refused(c + 2 * P, 2, AllocError::NotAllocated);
    refused(c, 1, AllocError::NotAllocated);
    // Two neighbouring 4-page blocks as one 8-page block (when they are buddies) or range.
    let (low, high) = (a.min(b), a.max(b));
    if high == low + 4 * P {
        refused(low, 8, AllocError::NotAllocated);
    }
    // A 4-page block freed as 2 pages or as 8.
    refused(a, 2, AllocError::NotAllocated);
    refused(a & !(8 * P - 1), 8, AllocError::NotAllocated);
    // Bad input.
    refused(a + 1, 4, AllocError::InvalidParam);
    refused(BASE + 64 * P, 2, AllocError::InvalidParam);
    refused(a, 0, AllocError::InvalidParam);
    // Park `a`, then free it again: refused (its head is `HELD`, not `ALLOC | 2`).
    pages.try_dealloc_pages(a, 4).unwrap();
    exact(&pages, 12);
    refused(a, 4, AllocError::NotAllocated);
    refused(a, 2, AllocError::NotAllocated);
    pages.try_dealloc_pages(b, 4).unwrap();
    pages.try_dealloc_pages(c, 8).unwrap();
    exact(&pages, 0);
    all_merged(&pages);
}

/// `alloc_pages_at` on the range of a parked block: the block is not free in the zone, so
/// the call drains the caches and carves it; a parked block is never handed out twice.
#[test]
fn alloc_pages_at_over_a_parked_block_drains_it_first() {
    let pages = buddy(64, 16);
    let a = pages.alloc_pages(8, P).unwrap();
    pages.try_dealloc_pages(a, 8).unwrap();
    assert!(pages.cached_pages() >= 8);
    assert_eq!(pages.alloc_pages_at(a + 2 * P, 2, P), Ok(a + 2 * P));
    exact(&pages, 2);
    // The parked block was drained into the zone: nothing is parked that overlaps it.
    let b = pages.alloc_pages(8, P).unwrap();
    assert_ne!(b, a, "the carved block's pages are not free");
    exact(&pages, 10);
    pages.try_dealloc_pages(a + 2 * P, 2).unwrap();
    pages.try_dealloc_pages(b, 8).unwrap();
    all_merged(&pages);
}

/// Each order has its own watermark (`high >> k` blocks) and batch (`batch >> k`): with
/// `high = 8, batch = 4`, order 3 parks at most one 8-page block, order 2 two 4-page blocks,
/// order 1 four 2-page blocks; a free at the watermark returns a batch to the zone first.
#[test]
fn each_order_parks_at_most_its_watermark() {
    let pages = buddy(8, 4);
    for (count, most) in [(2, 4), (4, 2), (8, 1)] {
        let blocks: Vec<usize> = (0..6)
            .map(|_| pages.alloc_pages(count, P).unwrap())
            .collect();
        exact(&pages, 6 * count);
        let before = pages.cached_pages();
        for (i, &block) in blocks.iter().enumerate() {
            pages.try_dealloc_pages(block, count).unwrap();
            exact(&pages, (5 - i) * count);
            let parked = pages.cached_pages() - before;
            assert!(parked <= most * count, "{count}: {parked} pages parked");
        }
    }
    all_merged(&pages);
}

/// Shapes that are not one cached block still go to the zone and free exactly: 3 pages, one
/// page aligned to 2 (a trimmed block), 16 pages, and 4 pages at an address aligned only to 2
/// (two 2-page blocks, `alloc_pages_at`).
#[test]
fn other_shapes_still_go_to_the_zone() {
    let pages = buddy(64, 16);
    let base = BASE + 32 * P + 2 * P;
    assert_eq!(pages.alloc_pages_at(base, 4, 2 * P), Ok(base));
    let three = pages.alloc_pages(3, P).unwrap();
    let aligned_one = pages.alloc_pages(1, 2 * P).unwrap();
    let sixteen = pages.alloc_pages(16, P).unwrap();
    exact(&pages, 3 + 1 + 16 + 4);
    assert_eq!(pages.cached_pages(), 0, "nothing went through a cache");
    // A 4-page free at `base` (aligned to 2 only) is two blocks: the zone path.
    assert_eq!(
        pages.try_dealloc_pages(base, 2),
        Err(AllocError::NotAllocated)
    );
    pages.try_dealloc_pages(base, 4).unwrap();
    pages.try_dealloc_pages(three, 3).unwrap();
    pages.try_dealloc_pages(aligned_one, 1).unwrap();
    pages.try_dealloc_pages(sixteen, 16).unwrap();
    exact(&pages, 0);
    assert_eq!(pages.cached_pages(), 1, "only the one page was parked");
    all_merged(&pages);
}

/// With `MAX_ORDER = 2` the caches hold orders 0..=2 only: a 4-page (maximal) block is parked,
/// an 8-page request is beyond a maximal block, and an 8-page free is two blocks (refused
/// unless it is one allocation).
#[test]
fn small_max_order_caps_the_cached_orders() {
    // Batch 1 for order 2 (`2 >> 2`, at least 1): a refill takes one block.
    let pages = BuddyPageAllocator::<P, 2, 2>::with_window(BASE, 16 * P).with_watermarks(4, 2);
    pages.add_memory(BASE, 16 * P).unwrap();
    let a = pages.alloc_pages(4, P).unwrap();
    let b = pages.alloc_pages(4, P).unwrap();
    assert_eq!(pages.alloc_pages(8, P), Err(AllocError::NoMemory));
    let past_the_window = a + 8 * P > BASE + 16 * P;
    assert_eq!(
        pages.try_dealloc_pages(a, 8),
        Err(if past_the_window {
            AllocError::InvalidParam
        } else {
            AllocError::NotAllocated
        })
    );
    pages.try_dealloc_pages(a, 4).unwrap();
    assert_eq!(pages.cached_pages(), 4);
    assert_eq!(pages.check(), Ok(()));
    assert_eq!(pages.used_pages(), 4);
    pages.try_dealloc_pages(b, 4).unwrap();
    assert!(pages.drain_cpu_caches());
    assert_eq!(pages.check(), Ok(()));
    assert_eq!(pages.free_blocks()[2], 4);
}

/// A zone exhausted while blocks are parked: an allocation of another order drains the
/// caches and merges, so the memory parked as small blocks serves a large request.
#[test]
fn parked_blocks_serve_a_larger_request_after_the_drain() {
    let pages = buddy(64, 16);
    let blocks: Vec<usize> = (0..8).map(|_| pages.alloc_pages(8, P).unwrap()).collect();
    exact(&pages, 64);
    assert_eq!(pages.alloc_pages(8, P), Err(AllocError::NoMemory));
    for &block in &blocks {
        pages.try_dealloc_pages(block, 8).unwrap();
    }
    exact(&pages, 0);
    assert!(pages.cached_pages() > 0);
    // Four maximal blocks exist once the parked 8-page blocks are merged.
    let big: Vec<usize> = (0..4).map(|_| pages.alloc_pages(16, P).unwrap()).collect();
    exact(&pages, 64);
    for &block in &big {
        pages.try_dealloc_pages(block, 16).unwrap();
    }
    all_merged(&pages);
}
