//! `SmpHeap` as a kernel uses it: over a `BuddyPageAllocator` (per-CPU page caches) that owns a
//! fixed region of memory, with the CPU id from a registered source. Covers out of memory
//! (null, heap intact, usable again after frees), bad input, several threads with cross-thread
//! frees and an ownership table, and every page back with the buddy at the end (TLSF pools
//! included: `reclaim` returns the wholly free ones, never memory given with `add_memory`).

mod support;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use smpalloc::BuddyPageAllocator;
use smpalloc::heap::{Route, SmpHeap};
use support::Rng;
use support::memory::{fill, holds};

type Pages = BuddyPageAllocator<4096, 10, 4>;
type Heap = SmpHeap<&'static Pages, 4>;
/// A block in flight: address, layout, fill byte.
type Block = (usize, Layout, u8);

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn cpu_source() -> usize {
    CPU.with(Cell::get)
}

/// A buddy allocator over `bytes` of real memory (leaked: the heap writes slab headers).
fn pages(bytes: usize) -> &'static Pages {
    support::pages::leaked_buddy(bytes)
}

/// A heap over a fresh buddy allocator of `bytes`, and that allocator.
fn heap_over(bytes: usize) -> (&'static Pages, Box<Heap>) {
    let pages = pages(bytes);
    (pages, Box::new(SmpHeap::new(pages)))
}

/// Tests share the process-wide CPU-id source; each sets it and runs serially.
static SERIAL: Mutex<()> = Mutex::new(());

/// The serial lock, even when a `should_panic` test poisoned it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn out_of_memory_is_null_and_harmless() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let (pages, heap) = heap_over(4 << 20);
    let small = Layout::from_size_align(64, 8).unwrap();
    let mut held = Vec::new();
    while let Some(p) = heap.allocate(small) {
        held.push(p);
    }
    assert!(
        held.len() > 50_000,
        "4 MiB holds about 60,000 objects of 64 B"
    );
    assert!(heap.allocate(small).is_none());
    // Other routes fail cleanly too.
    assert!(
        heap.allocate(Layout::from_size_align(100_000, 8).unwrap())
            .is_none()
    );
    assert!(
        heap.allocate(Layout::from_size_align(1 << 20, 4096).unwrap())
            .is_none()
    );
    heap.check().unwrap();
    for p in held.drain(..) {
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(p, small) };
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    heap.check().unwrap();
    assert_eq!(pages.available_pages(), pages.total_pages());
    // Usable again: a huge block now fits.
    let big = Layout::from_size_align(1 << 20, 4096).unwrap();
    let p = heap.allocate(big).unwrap();
    // SAFETY: as above.
    unsafe { heap.deallocate(p, big) };
}

#[test]
fn bad_layouts_are_refused() {
    let _serial = serial();
    let (pages, heap) = heap_over(4 << 20);
    // Zero size: a dangling, aligned pointer; freeing it is a no-op.
    let zero = Layout::from_size_align(0, 64).unwrap();
    let p = heap.allocate(zero).unwrap();
    assert_eq!(p.as_ptr().addr() % 64, 0);
    // SAFETY: a zero-size allocation of this heap.
    unsafe { heap.deallocate(p, zero) };
    // An absurd alignment: the page source cannot align it, so null.
    let absurd = Layout::from_size_align(8, 1 << 40).unwrap();
    assert_eq!(Route::of(absurd), Route::Huge);
    assert!(heap.allocate(absurd).is_none());
    // A size overflow in realloc: `None`, the old block untouched.
    let layout = Layout::from_size_align(32, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    // SAFETY: a live block; the new size cannot form a Layout.
    assert!(unsafe { heap.reallocate(p, layout, usize::MAX - 3) }.is_none());
    // SAFETY: still live, freed once.
    unsafe { heap.deallocate(p, layout) };
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(pages.available_pages(), pages.total_pages());
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not an object of this heap")]
fn foreign_pointer_is_caught_in_debug_builds() {
    let (_, heap) = heap_over(1 << 20);
    let layout = Layout::from_size_align(64, 8).unwrap();
    // A 4 KiB-aligned buffer that no slab header describes.
    let foreign = Box::leak(Box::new(Aligned([0u8; 8192])));
    let ptr = NonNull::new(foreign.0.as_mut_ptr().wrapping_add(128)).unwrap();
    // SAFETY: deliberately wrong, to see the debug check refuse it.
    unsafe { heap.deallocate(ptr, layout) };
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "double free")]
fn double_free_into_the_same_magazine_is_caught_in_debug_builds() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let (_, heap) = heap_over(1 << 20);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    // SAFETY: the first free is valid; the second is the bug under test.
    unsafe {
        heap.deallocate(p, layout);
        heap.deallocate(p, layout);
    }
}

#[repr(align(4096))]
struct Aligned([u8; 8192]);

/// Threads on their own CPUs allocate, hand half of their blocks to the next thread to free
/// (cross-CPU frees), and check an ownership table: no block is handed out twice, contents
/// stay intact. At the end every page is back with the buddy.
#[test]
fn threads_with_cross_cpu_frees() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    let pages = pages(64 << 20);
    let heap: &'static Heap = Box::leak(Box::new(SmpHeap::new(pages)));
    // Ownership: address -> owner thread + 1 (0 = free); a block handed out twice trips it.
    let owners: &'static Mutex<std::collections::HashMap<usize, usize>> =
        Box::leak(Box::new(Mutex::new(std::collections::HashMap::new())));
    let handoff: &'static Mutex<Vec<Vec<Block>>> =
        Box::leak(Box::new(Mutex::new(vec![Vec::new(); THREADS])));
    let freed = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let freed = &freed;
            s.spawn(move || {
                CPU.with(|c| c.set(t));
                let mut mine: Vec<Block> = Vec::new();
                let mut rng = Rng::new(0x9e37_79b9_u64 ^ t as u64);
                for i in 0..rounds {
                    let size = [8, 24, 64, 200, 1000, 4096, 9000][rng.below(7)];
                    let align = 1 << rng.below(7);
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let p = heap.allocate(layout).expect("64 MiB is enough");
                    assert_eq!(p.as_ptr().addr() % align, 0);
                    let tag = (i % 251) as u8;
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { p.as_ptr().write_bytes(tag, size) };
                    let previous = owners.lock().unwrap().insert(p.as_ptr().addr(), t + 1);
                    assert!(previous.is_none(), "block handed out twice");
                    mine.push((p.as_ptr().expose_provenance(), layout, tag));
                    if mine.len() > 64 {
                        let (addr, layout, tag) = mine.swap_remove(rng.below(mine.len()));
                        if rng.chance(50) {
                            handoff.lock().unwrap()[(t + 1) % THREADS].push((addr, layout, tag));
                        } else {
                            free(heap, owners, (addr, layout, tag));
                            freed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if i % 16 == 0 {
                        let theirs = core::mem::take(&mut handoff.lock().unwrap()[t]);
                        for block in theirs {
                            free(heap, owners, block);
                            freed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                for block in mine {
                    free(heap, owners, block);
                    freed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    for list in handoff.lock().unwrap().drain(..) {
        for block in list {
            free(heap, owners, block);
            freed.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert_eq!(freed.load(Ordering::Relaxed), THREADS * rounds);
    assert!(owners.lock().unwrap().is_empty());
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    assert_eq!(
        (stats.slab_bytes, stats.huge_bytes, stats.parked_bytes),
        (0, 0, 0)
    );
    assert_eq!(stats.tlsf_pool_bytes, 0, "every TLSF pool is back");
    assert_eq!(
        pages.available_pages(),
        pages.total_pages(),
        "every page is back with the buddy"
    );
}

fn free(
    heap: &Heap,
    owners: &Mutex<std::collections::HashMap<usize, usize>>,
    (addr, layout, tag): Block,
) {
    let p = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
    // SAFETY: a live block of `layout.size()` bytes owned by the caller.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), layout.size()) };
    assert!(
        bytes.iter().all(|&b| b == tag),
        "contents changed while owned"
    );
    assert!(owners.lock().unwrap().remove(&addr).is_some());
    // SAFETY: allocated with `layout`, freed once (the ownership table says so).
    unsafe { heap.deallocate(p, layout) };
}

/// Huge blocks over the buddy: a resize within the same page count stays in place, a larger
/// one moves with its contents; every page returns.
#[test]
fn huge_blocks_resize_and_return() {
    let _serial = serial();
    let (pages, heap) = heap_over(8 << 20);
    let layout = Layout::from_size_align(300 * 1024 - 1000, 8).unwrap();
    assert_eq!(Route::of(layout), Route::Huge);
    let p = heap.allocate(layout).unwrap();
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { p.as_ptr().write_bytes(0x5a, layout.size()) };
    // SAFETY: a live huge block of this heap.
    let same = unsafe { heap.reallocate(p, layout, layout.size() + 500) }.unwrap();
    assert_eq!(same, p, "same page count: in place");
    let layout = Layout::from_size_align(layout.size() + 500, 8).unwrap();
    // SAFETY: as above.
    let moved = unsafe { heap.reallocate(same, layout, 900 * 1024) }.unwrap();
    // SAFETY: the first `layout.size()` bytes were copied.
    let kept = unsafe { core::slice::from_raw_parts(moved.as_ptr(), 300 * 1024 - 1000) };
    assert!(kept.iter().all(|&b| b == 0x5a));
    assert_eq!(
        heap.stats().huge_bytes,
        (900 * 1024usize).next_multiple_of(4096)
    );
    let layout = Layout::from_size_align(900 * 1024, 8).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(moved, layout) };
    assert_eq!(heap.stats().huge_bytes, 0);
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// With every block freed: drains and reclaims, checks the heap, and asserts that it holds no
/// TLSF pool or direct block and that every page is back in the buddy.
fn all_returned(heap: &Heap, pages: &Pages) {
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    assert_eq!((stats.tlsf_direct_bytes, stats.tlsf_pool_bytes), (0, 0));
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// TLSF blocks of 8..200 KiB: the size of each, freed in a scrambled order.
const TLSF_SIZES: [usize; 12] = [
    8 << 10,
    200 << 10,
    50 << 10,
    120 << 10,
    17 << 10,
    199 << 10,
    64 << 10,
    9000,
    150 << 10,
    33 << 10,
    100 << 10,
    180 << 10,
];

fn tlsf_layout(size: usize) -> Layout {
    let layout = Layout::from_size_align(size, 16).unwrap();
    assert_eq!(Route::of(layout), Route::Tlsf);
    layout
}

/// Allocates every size of `TLSF_SIZES`, filled with its index.
fn grow_tlsf(heap: &Heap) -> Vec<(NonNull<u8>, Layout, u8)> {
    TLSF_SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let layout = tlsf_layout(size);
            let p = heap.allocate(layout).expect("the buddy has room");
            // SAFETY: a fresh block of `size` bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, size) };
            heap.check().unwrap();
            (p, layout, i as u8)
        })
        .collect()
}

fn free_tlsf(heap: &Heap, (p, layout, tag): (NonNull<u8>, Layout, u8)) {
    // SAFETY: a live block of `layout.size()` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), layout.size()) };
    assert!(bytes.iter().all(|&b| b == tag), "TLSF block changed");
    // SAFETY: allocated with `layout`, freed once.
    unsafe { heap.deallocate(p, layout) };
    heap.check().unwrap();
}

/// The TLSF pools a heap grew go back to the buddy once they are empty: after drain and
/// reclaim the heap holds no pool and the buddy has every page.
#[test]
fn empty_tlsf_pools_go_back_to_the_buddy() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(0));
    let (pages, heap) = heap_over(16 << 20);
    let blocks = grow_tlsf(&heap);
    let grown = heap.stats().tlsf_pool_bytes;
    assert!(grown >= 1 << 20, "several pools grown ({grown} bytes)");
    assert_eq!(pages.used_pages() * 4096, grown);
    let mut blocks = blocks;
    let mut order = 5;
    while !blocks.is_empty() {
        order = (order * 7 + 3) % 97;
        let block = blocks.swap_remove(order % blocks.len());
        free_tlsf(&heap, block);
    }
    all_returned(&heap, pages);
}

/// A pool that still holds a live block is not returned; the others are. Once the block is
/// freed, its pool goes back too.
#[test]
fn a_pool_with_a_live_block_stays() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(1));
    let (pages, heap) = heap_over(16 << 20);
    let mut blocks = grow_tlsf(&heap);
    assert!(heap.stats().tlsf_pool_bytes > 256 << 10);
    // The first block grew the first pool (256 KiB); keep it.
    let kept = blocks.remove(0);
    for block in blocks {
        free_tlsf(&heap, block);
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    assert_eq!(
        stats.tlsf_pool_bytes,
        256 << 10,
        "only the first pool stays"
    );
    assert_eq!(pages.used_pages() * 4096, 256 << 10);
    free_tlsf(&heap, kept);
    heap.reclaim();
    assert_eq!(heap.check().unwrap().tlsf_pool_bytes, 0);
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// Growth keeps working after pools are returned: 40 grow / return cycles of several pools each
/// (more than the 16 region entries: entries are reused), on changing CPUs.
#[test]
fn tlsf_growth_after_return_reuses_region_entries() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let (pages, heap) = heap_over(16 << 20);
    let cycles = if cfg!(miri) { 18 } else { 40 };
    for cycle in 0..cycles {
        CPU.with(|c| c.set(cycle % 4));
        let blocks = grow_tlsf(&heap);
        assert!(heap.stats().tlsf_pool_bytes >= 1 << 20, "cycle {cycle}");
        for block in blocks.into_iter().rev() {
            free_tlsf(&heap, block);
        }
        heap.reclaim();
        let stats = heap.check().unwrap();
        assert_eq!(stats.tlsf_pool_bytes, 0, "cycle {cycle}");
        assert_eq!(
            pages.available_pages(),
            pages.total_pages(),
            "cycle {cycle}"
        );
    }
}

/// Memory a kernel gives the TLSF arenas with `add_memory` is never returned by `reclaim`
/// (only pools grown from the page source are): after growth beyond it and a full reclaim,
/// the next TLSF allocation is served from that memory without growing.
#[test]
fn add_memory_regions_are_never_returned() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(2));
    let (pages, heap) = heap_over(16 << 20);
    let user_len = 1 << 20;
    let user_layout = Layout::from_size_align(user_len, 4096).unwrap();
    // SAFETY: non-zero size; leaked (the heap keeps using it).
    let user = unsafe { std::alloc::alloc(user_layout) };
    assert!(!user.is_null());
    let user_start = user.expose_provenance();
    heap.tlsf().add_memory(user_start, user_len).unwrap();
    let in_user = |p: NonNull<u8>| (user_start..user_start + user_len).contains(&p.as_ptr().addr());
    let mut blocks = Vec::new();
    while heap.stats().tlsf_pool_bytes == 0 {
        blocks.extend(grow_tlsf(&heap));
    }
    assert!(
        blocks.iter().any(|b| in_user(b.0)),
        "the user memory served"
    );
    assert!(blocks.iter().any(|b| !in_user(b.0)), "and growth did");
    for block in blocks {
        free_tlsf(&heap, block);
    }
    all_returned(&heap, pages);
    // The user memory is still there, intact as heap memory.
    let layout = tlsf_layout(100 << 10);
    let p = heap.allocate(layout).unwrap();
    assert!(in_user(p), "served from the memory added at boot");
    assert_eq!(heap.stats().tlsf_pool_bytes, 0, "no growth needed");
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { p.as_ptr().write_bytes(0xa5, layout.size()) };
    free_tlsf(&heap, (p, layout, 0xa5));
    heap.reclaim();
    assert_eq!(heap.check().unwrap().tlsf_pool_bytes, 0);
}

/// Allocates `layout` (TLSF route) from a heap over a 256 MiB buddy until it returns `None`,
/// each block tagged at both ends; then the buddy itself must refuse such a block, the blocks
/// must cover at least 90 % of the buddy's memory, and after freeing them all (tags intact)
/// and a reclaim every page is back.
fn tlsf_route_fills_the_buddy(layout: Layout) {
    use smpalloc::heap::PageSource;
    assert_eq!(Route::of(layout), Route::Tlsf);
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(0));
    let total = if cfg!(miri) { 8 << 20 } else { 256 << 20 };
    let (pages, heap) = heap_over(total);
    let tag = |i: usize| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut blocks = Vec::new();
    while let Some(p) = heap.allocate(layout) {
        assert_eq!(p.as_ptr().addr() % layout.align(), 0);
        let end = layout.size() - 8;
        // SAFETY: a fresh block of `layout.size()` bytes (a multiple of 8, 8-aligned).
        unsafe {
            p.as_ptr().cast::<u64>().write(tag(blocks.len()));
            p.as_ptr().add(end).cast::<u64>().write(tag(blocks.len()));
        }
        blocks.push(p);
    }
    // `None` only because the page source refuses too.
    assert!(
        pages.alloc_huge(layout).is_none(),
        "the heap refused while the buddy had room"
    );
    let served = blocks.len() * layout.size();
    assert!(
        served >= total / 10 * 9,
        "{} blocks of {} B: {served} of {total} bytes",
        blocks.len(),
        layout.size()
    );
    let stats = heap.check().unwrap();
    assert!(
        stats.tlsf_direct_bytes > 0,
        "past the region table, served direct"
    );
    assert_eq!(
        pages.used_pages() * 4096,
        stats.tlsf_pool_bytes + stats.tlsf_direct_bytes + heap.map_bytes(),
        "every page the buddy handed out is a pool, a direct block or a page-map node"
    );
    let end = layout.size() - 8;
    for (i, p) in blocks.into_iter().enumerate().rev() {
        // SAFETY: a live block written above; allocated with `layout`, freed once.
        unsafe {
            assert_eq!(p.as_ptr().cast::<u64>().read(), tag(i), "block {i} changed");
            assert_eq!(p.as_ptr().add(end).cast::<u64>().read(), tag(i));
            heap.deallocate(p, layout);
        }
    }
    let stats = heap.check().unwrap();
    assert_eq!(stats.tlsf_direct_bytes, 0);
    all_returned(&heap, pages);
}

/// Issue 14, defect 3: the TLSF route stopped at 16 pools (812 blocks of 64 KiB, about 50 MiB
/// of 256 MiB) while the buddy had 204 MiB free. Now 99.6 % of the buddy is served: 16 pools,
/// then direct blocks.
#[test]
fn tlsf_route_serves_64_kib_blocks_until_the_buddy_is_exhausted() {
    tlsf_route_fills_the_buddy(Layout::from_size_align(64 << 10, 8).unwrap());
}

/// Issue 14, defect 3, with page-aligned blocks, which TLSF places 12 KiB apart (a header in
/// front of each aligned payload): the pools serve two thirds of their bytes, the direct blocks
/// all of theirs, 93 % of the buddy in all.
#[test]
fn tlsf_route_serves_page_aligned_8_kib_blocks_until_the_buddy_is_exhausted() {
    tlsf_route_fills_the_buddy(Layout::from_size_align(8 << 10, 4096).unwrap());
}

/// Fills the TLSF region table with 16 small regions given with `add_memory` (4 KiB each), so
/// the arenas can never grow and every TLSF-route request they cannot serve is a direct block.
/// Returns the range of that memory.
fn fill_region_table(heap: &Heap) -> core::ops::Range<usize> {
    let layout = Layout::from_size_align(16 * 4096, 4096).unwrap();
    // SAFETY: non-zero size; leaked (the heap keeps using it).
    let user = unsafe { std::alloc::alloc(layout) };
    assert!(!user.is_null());
    let start = user.expose_provenance();
    for k in 0..16 {
        heap.tlsf().add_memory(start + k * 4096, 4096).unwrap();
    }
    assert!(heap.tlsf().add_memory(start + (16 << 12), 4096).is_err());
    start..start + 16 * 4096
}

/// Direct blocks (issue 14, defect 3): with the region table full, TLSF-route requests come
/// straight from the buddy in whole pages, the statistics count them, reallocation keeps the
/// contents across every route boundary (TLSF -> TLSF moving and in place, -> huge, -> TLSF,
/// -> small), small odd-aligned requests the user regions can serve still go there, and every
/// page comes back.
#[test]
fn direct_blocks_reallocate_across_routes() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(3));
    let (pages, heap) = heap_over(4 << 20);
    let user = fill_region_table(&heap);
    let direct = |heap: &Heap| heap.check().unwrap().tlsf_direct_bytes;

    // Served by the user regions: no direct block.
    let odd = Layout::from_size_align(24, 256).unwrap();
    assert_eq!(Route::of(odd), Route::Tlsf);
    let q = heap.allocate(odd).unwrap();
    assert!(user.contains(&q.as_ptr().addr()));
    fill(q, odd.size(), 7);
    assert_eq!(direct(&heap), 0);

    // Too large for the user regions, and no pool can be added: a direct block.
    let layout = Layout::from_size_align(64 << 10, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    let stats = heap.check().unwrap();
    assert_eq!(
        (stats.tlsf_direct_bytes, stats.tlsf_pool_bytes),
        (64 << 10, 0)
    );
    assert_eq!(pages.used_pages() * 4096, (16 << 12) + heap.map_bytes());
    fill(p, layout.size(), 1);

    // TLSF -> TLSF, one page more: moves to a new direct block.
    // SAFETY: live, allocated with `layout`.
    let p = unsafe { heap.reallocate(p, layout, (64 << 10) + 100) }.unwrap();
    let layout = Layout::from_size_align((64 << 10) + 100, 8).unwrap();
    assert!(holds(p, 64 << 10, 1));
    assert_eq!(direct(&heap), 68 << 10);
    fill(p, layout.size(), 2);
    // Same page count: in place.
    // SAFETY: as above.
    let same = unsafe { heap.reallocate(p, layout, (64 << 10) + 200) }.unwrap();
    assert_eq!(same, p);
    let layout = Layout::from_size_align((64 << 10) + 200, 8).unwrap();
    assert!(holds(p, (64 << 10) + 100, 2));
    fill(p, layout.size(), 3);
    // -> huge.
    let big = 300 << 10;
    // SAFETY: as above.
    let p = unsafe { heap.reallocate(p, layout, big) }.unwrap();
    let layout = Layout::from_size_align(big, 8).unwrap();
    assert_eq!(Route::of(layout), Route::Huge);
    assert!(holds(p, (64 << 10) + 200, 3));
    let stats = heap.check().unwrap();
    assert_eq!((stats.tlsf_direct_bytes, stats.huge_bytes), (0, big));
    fill(p, big, 4);
    // -> TLSF again (direct).
    // SAFETY: as above.
    let p = unsafe { heap.reallocate(p, layout, 100 << 10) }.unwrap();
    let layout = Layout::from_size_align(100 << 10, 8).unwrap();
    assert!(holds(p, 100 << 10, 4));
    let stats = heap.check().unwrap();
    assert_eq!((stats.tlsf_direct_bytes, stats.huge_bytes), (100 << 10, 0));
    // -> small.
    // SAFETY: as above.
    let p = unsafe { heap.reallocate(p, layout, 2000) }.unwrap();
    let layout = Layout::from_size_align(2000, 8).unwrap();
    assert!(matches!(Route::of(layout), Route::Small(_)));
    assert!(holds(p, 2000, 4));
    assert_eq!(direct(&heap), 0);
    // SAFETY: live, allocated with `layout`; `q` with `odd`.
    unsafe {
        heap.deallocate(p, layout);
        assert!(holds(q, odd.size(), 7));
        heap.deallocate(q, odd);
    }
    all_returned(&heap, pages);
}

/// A heap over a buddy, and a TLSF block of it that was freed and whose pool `reclaim` then
/// returned to the buddy (no direct block live).
fn stale_tlsf_pointer() -> (&'static Pages, Box<Heap>, NonNull<u8>, Layout) {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.with(|c| c.set(0));
    let (pages, heap) = heap_over(4 << 20);
    let layout = tlsf_layout(64 << 10);
    let p = heap.allocate(layout).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { heap.deallocate(p, layout) };
    heap.reclaim();
    (pages, heap, p, layout)
}

/// A TLSF-route free of a pointer in no region while no direct block is live is no block of
/// this heap (a double free after its pool went back, or a foreign pointer): nothing is
/// touched, and debug builds panic.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not a TLSF block of this heap")]
fn stale_tlsf_free_without_direct_blocks_is_caught_in_debug_builds() {
    let _serial = serial();
    let (pages, heap, p, layout) = stale_tlsf_pointer();
    assert_eq!(pages.available_pages(), pages.total_pages());
    // SAFETY: deliberately wrong (its pool went back to the buddy), to see it refused.
    unsafe { heap.deallocate(p, layout) };
}

/// The same in release builds: ignored, the buddy untouched.
#[cfg(not(debug_assertions))]
#[test]
fn stale_tlsf_free_without_direct_blocks_is_ignored() {
    let _serial = serial();
    let (pages, heap, p, layout) = stale_tlsf_pointer();
    // The buddy hands the pages out again.
    let other = heap.allocate(Layout::from_size_align(1 << 20, 4096).unwrap());
    let used = pages.used_pages();
    // SAFETY: deliberately wrong (its pool went back to the buddy), to see it ignored.
    unsafe { heap.deallocate(p, layout) };
    assert_eq!(pages.used_pages(), used);
    heap.check().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe {
        heap.deallocate(
            other.unwrap(),
            Layout::from_size_align(1 << 20, 4096).unwrap(),
        )
    };
}
