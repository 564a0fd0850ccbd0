//! `SmpHeap::free`, `usable_size` and `reallocate_unsized` (docs/design/08-heap.md §"Frees without a layout: the page map"): every
//! route freed without its layout, its usable bytes written, reallocated without its layout
//! across routes, interleaved with the sized API, `check()` (which verifies the page map
//! against the slabs and blocks) after each step, and every page back at the end; then each
//! documented bad input: what release builds do (ignored, untouched) and what debug builds do
//! (panic).

mod support;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::Mutex;

use smpalloc::BuddyPageAllocator;
use smpalloc::heap::{Route, SmpHeap, SystemPages};
use support::memory::{fill, holds};

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn cpu_source() -> usize {
    CPU.with(Cell::get)
}

type StdHeap = SmpHeap<SystemPages, 4>;
type Pages = BuddyPageAllocator<4096, 10, 4>;
type KernelHeap = SmpHeap<&'static Pages, 4>;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn std_heap() -> Box<StdHeap> {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    Box::new(SmpHeap::new(SystemPages::new()))
}

/// A heap over a buddy zone of `bytes` (the kernel's setting: whole pages for huge blocks).
fn kernel_heap(bytes: usize) -> (&'static Pages, Box<KernelHeap>) {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let pages: &'static Pages = support::pages::leaked_buddy(bytes);
    (pages, Box::new(SmpHeap::new(pages)))
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// One layout per route and kind: small classes, TLSF (odd alignment, medium sizes), huge
/// (large, and small with a page-plus alignment).
const LAYOUTS: [(usize, usize); 10] = [
    (8, 8),
    (24, 8),
    (100, 16),
    (4096, 4096),
    (24, 256),
    (5000, 4096),
    (10_000, 8),
    (200_000, 16),
    (300_000, 8),
    (8, 8192),
];

/// What `usable_size` must say for a block of `l` on a heap whose huge blocks are whole pages
/// (`pages`) or the size asked (at least a page: `SystemPages`).
fn expected_usable(l: Layout, usable: usize, whole_pages: bool) -> bool {
    match Route::of(l) {
        Route::Small(class) => usable == smpalloc::byte::slab::class::class_size(class),
        Route::Huge if whole_pages => usable == l.size().next_multiple_of(4096),
        Route::Huge => usable == l.size().max(4096),
        // A TLSF block: its payload, at least the size, less than a minimum block more (or
        // whole pages for a direct block).
        _ => usable >= l.size() && usable < l.size().max(4096).next_multiple_of(4096) + 4096,
    }
}

fn every_route<P: smpalloc::heap::PageSource, const C: usize>(
    heap: &SmpHeap<P, C>,
    whole_pages: bool,
) {
    let mut live = Vec::new();
    for (tag, &(size, align)) in LAYOUTS.iter().enumerate() {
        let l = layout(size, align);
        let p = heap.allocate(l).unwrap();
        // SAFETY: live.
        let usable = unsafe { heap.usable_size(p) }.expect("a live block has a usable size");
        // A huge block: what its source says (`MmapPages`: pages in eighths of a power of two).
        let source_says = Route::of(l) == Route::Huge
            && usable >= l.size()
            && usable == heap.pages().huge_usable(l);
        assert!(
            expected_usable(l, usable, whole_pages) || source_says,
            "{l:?}: usable {usable}"
        );
        // Every usable byte is the block's: written, and no other block changes.
        fill(p, usable, tag as u8);
        heap.check().unwrap();
        live.push((p, usable, tag as u8));
    }
    for &(p, usable, tag) in &live {
        assert!(
            holds(p, usable, tag),
            "a block's usable bytes were overwritten"
        );
    }
    // Freed without layouts, in a scrambled order, from several CPUs.
    for (k, &i) in [3usize, 9, 0, 7, 5, 1, 8, 2, 6, 4].iter().enumerate() {
        CPU.with(|c| c.set(k % 4));
        let (p, usable, tag) = live[i];
        assert!(holds(p, usable, tag));
        // SAFETY: live, freed once.
        unsafe { heap.free(p) };
        heap.check().unwrap();
    }
    let stats = heap.check().unwrap();
    assert_eq!(
        (stats.small_bytes, stats.huge_bytes, stats.tlsf_direct_bytes),
        (0, 0, 0)
    );
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.map_bytes(), 0, "empty map nodes go back in reclaim");
}

#[test]
fn every_route_is_freed_without_its_layout_over_system_pages() {
    let _serial = serial();
    let heap = std_heap();
    every_route(&*heap, false);
    assert_eq!(heap.pages().held_bytes(), 0);
}

#[test]
fn every_route_is_freed_without_its_layout_over_the_buddy() {
    let _serial = serial();
    let (pages, heap) = kernel_heap(8 << 20);
    every_route(&*heap, true);
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// Reallocation without the old layout along a chain of routes (small -> small -> TLSF ->
/// TLSF -> huge -> huge -> TLSF -> small), keeping the contents, each result a block the sized
/// API accepts (`Layout(new_size, align)`): the last is freed with `deallocate`.
fn realloc_chain<P: smpalloc::heap::PageSource, const C: usize>(heap: &SmpHeap<P, C>) {
    let sizes = [24, 100, 3000, 10_000, 20_000, 300_000, 700_000, 9000, 40];
    let mut p = heap.allocate(layout(sizes[0], 16)).unwrap();
    let mut size = sizes[0];
    fill(p, size, 7);
    for &next in &sizes[1..] {
        // SAFETY: live.
        let q = unsafe { heap.reallocate_unsized(p, next, 16) }.unwrap();
        assert_eq!(q.as_ptr().addr() % 16, 0);
        assert!(
            holds(q, size.min(next), 7),
            "{size} -> {next} lost contents"
        );
        // SAFETY: live.
        assert!(unsafe { heap.usable_size(q) }.unwrap() >= next);
        fill(q, next, 7);
        heap.check().unwrap();
        p = q;
        size = next;
    }
    // SAFETY: the block `allocate(Layout(40, 16))` would be; freed once.
    unsafe { heap.deallocate(p, layout(size, 16)) };
    // In place within a class, and an over-aligned block keeps its alignment only if asked.
    let a = heap.allocate(layout(20, 8)).unwrap();
    // SAFETY: live.
    assert_eq!(unsafe { heap.reallocate_unsized(a, 24, 8) }, Some(a));
    let b = heap.allocate(layout(300, 4096)).unwrap();
    // SAFETY: live.
    let c = unsafe { heap.reallocate_unsized(b, 400, 4096) }.unwrap();
    assert_eq!(c.as_ptr().addr() % 4096, 0);
    // SAFETY: both live, freed once, `c` as `Layout(400, 4096)`.
    unsafe {
        heap.free(a);
        heap.deallocate(c, layout(400, 4096));
    }
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
}

#[test]
fn reallocation_without_the_layout_crosses_routes() {
    let _serial = serial();
    let heap = std_heap();
    realloc_chain(&*heap);
    assert_eq!(heap.pages().held_bytes(), 0);
    let (pages, heap) = kernel_heap(8 << 20);
    realloc_chain(&*heap);
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// Over the mmap page source (the C library's): every route freed without its layout, and the
/// realloc chain, whose huge steps resize mappings of their own in place, through the kept
/// ranges or by `mremap` (docs/design/08-heap.md §"The mmap page source", K4); everything back after `reclaim`.
#[cfg(all(feature = "mmap", unix, not(miri)))]
#[test]
fn routes_and_reallocation_over_mmap_pages() {
    let _serial = serial();
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let heap = Box::new(SmpHeap::<smpalloc::MmapPages, 4>::new(
        smpalloc::MmapPages::new(),
    ));
    every_route(&*heap, true);
    realloc_chain(&*heap);
    // A huge block grown a page at a time and shrunk, its contents kept at every step.
    let mut size = 260 * 1024;
    let mut p = heap.allocate(layout(size, 16)).unwrap();
    fill(p, size, 3);
    while size < 3 << 20 {
        let next = size + 4096 + size / 64;
        // SAFETY: live.
        let q = unsafe { heap.reallocate_unsized(p, next, 16) }.unwrap();
        assert!(holds(q, size, 3), "{size} -> {next} lost contents");
        fill(q, next, 3);
        p = q;
        size = next;
        heap.check().unwrap();
        heap.pages().check().unwrap();
    }
    // SAFETY: live.
    let q = unsafe { heap.reallocate_unsized(p, 300 * 1024, 16) }.unwrap();
    assert!(holds(q, 300 * 1024, 3));
    // SAFETY: live, freed once.
    unsafe { heap.free(q) };
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    heap.pages().check().unwrap();
    assert_eq!(heap.pages().held_bytes(), 0);
    assert_eq!(heap.pages().kept_bytes() + heap.pages().cached_bytes(), 0);
}

/// Blocks from the sized API freed without layouts and the other way round, over every route.
#[test]
fn sized_and_unsized_calls_interleave() {
    let _serial = serial();
    let heap = std_heap();
    for round in 0..4 {
        let blocks: Vec<_> = LAYOUTS
            .iter()
            .map(|&(s, a)| (heap.allocate(layout(s, a)).unwrap(), layout(s, a)))
            .collect();
        for (k, &(p, l)) in blocks.iter().enumerate() {
            // SAFETY: live, freed once (one way or the other).
            unsafe {
                if (k + round) % 2 == 0 {
                    heap.free(p);
                } else {
                    heap.deallocate(p, l);
                }
            }
        }
        heap.check().unwrap();
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.pages().held_bytes(), 0);
}

/// Direct blocks (the region table full of `add_memory` regions): freed, sized and resized
/// without their layout; whole pages usable; every page back.
#[test]
fn direct_blocks_without_their_layout() {
    let _serial = serial();
    let (pages, heap) = kernel_heap(8 << 20);
    let user = Layout::from_size_align(16 * 4096, 4096).unwrap();
    // SAFETY: non-zero size; leaked (the heap keeps using it).
    let start = unsafe { std::alloc::alloc(user) }.expose_provenance();
    for k in 0..16 {
        heap.tlsf().add_memory(start + k * 4096, 4096).unwrap();
    }
    let l = layout(64 << 10, 8);
    assert_eq!(Route::of(l), Route::Tlsf);
    let p = heap.allocate(l).unwrap();
    assert_eq!(heap.check().unwrap().tlsf_direct_bytes, 64 << 10);
    // SAFETY: live.
    assert_eq!(unsafe { heap.usable_size(p) }, Some(64 << 10));
    fill(p, 64 << 10, 3);
    // One page more: the buddy cannot resize in place, so it moves (to a new direct block).
    // SAFETY: live.
    let q = unsafe { heap.reallocate_unsized(p, (64 << 10) + 1, 16) }.unwrap();
    assert!(holds(q, 64 << 10, 3));
    // SAFETY: live.
    assert_eq!(unsafe { heap.usable_size(q) }, Some(68 << 10));
    assert_eq!(heap.check().unwrap().tlsf_direct_bytes, 68 << 10);
    // Within its pages: in place (the buddy's `realloc_huge` keeps the page count).
    // SAFETY: live.
    assert_eq!(unsafe { heap.reallocate_unsized(q, 66 << 10, 16) }, Some(q));
    // A TLSF block in a user region, freed without its layout.
    let t = heap.allocate(layout(24, 256)).unwrap();
    assert!((start..start + 16 * 4096).contains(&t.as_ptr().addr()));
    // SAFETY: both live, freed once.
    unsafe {
        assert!(heap.usable_size(t).unwrap() >= 24);
        heap.free(t);
        heap.free(q);
    }
    let stats = heap.check().unwrap();
    assert_eq!(stats.tlsf_direct_bytes, 0);
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(pages.available_pages(), pages.total_pages());
}

/// Page 0 holds size-0 blocks' dangling pointers (alignment below 4096): `free` is a no-op,
/// `usable_size` is 0, `reallocate_unsized` allocates afresh. In every build.
#[test]
fn size_zero_blocks() {
    let _serial = serial();
    let heap = std_heap();
    let z = heap.allocate(layout(0, 64)).unwrap();
    // SAFETY: a size-0 block.
    unsafe {
        assert_eq!(heap.usable_size(z), Some(0));
        heap.free(z);
        let p = heap.reallocate_unsized(z, 100, 16).unwrap();
        assert!(heap.usable_size(p).unwrap() >= 100);
        heap.free(p);
    }
    heap.check().unwrap();
}

/// `reallocate_unsized` with an alignment that is not a power of two: `None`, the block
/// untouched and still live. In every build.
#[test]
fn bad_alignment_is_refused() {
    let _serial = serial();
    let heap = std_heap();
    let p = heap.allocate(layout(100, 8)).unwrap();
    fill(p, 100, 9);
    // SAFETY: live.
    unsafe {
        assert_eq!(heap.reallocate_unsized(p, 200, 3), None);
        assert_eq!(heap.reallocate_unsized(p, usize::MAX, 8), None);
    }
    assert!(holds(p, 100, 9));
    // SAFETY: live, freed once.
    unsafe { heap.free(p) };
    heap.check().unwrap();
}

/// Bad pointers that every build detects: `usable_size` answers `None` and
/// `reallocate_unsized` refuses (`None`), touching nothing, for a foreign pointer, a pointer
/// inside a small object, inside a slab's header, inside a huge block (its first page and a
/// later one), and a huge block freed already.
#[test]
fn bad_pointers_have_no_size_and_are_not_resized() {
    let _serial = serial();
    let heap = std_heap();
    let foreign = Box::new([5u8; 64]);
    let f = NonNull::from(&*foreign).cast::<u8>();
    let small = heap.allocate(layout(24, 8)).unwrap();
    let slab = small.as_ptr().addr() & !4095;
    let header = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(
        slab + 4096 - 64,
    ))
    .unwrap();
    let huge = heap.allocate(layout(300_000, 8)).unwrap();
    let freed = heap.allocate(layout(8, 8192)).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(freed) };
    // SAFETY: each offset lies inside its live block.
    let (inside_small, inside_huge, later_page) =
        unsafe { (small.add(8), huge.add(16), huge.add(8192)) };
    let bad = [f, inside_small, header, inside_huge, later_page, freed];
    for p in bad {
        // SAFETY: the bad inputs `usable_size` and `reallocate_unsized` document (no reclaim
        // runs meanwhile).
        unsafe {
            assert_eq!(heap.usable_size(p), None, "{p:?}");
            assert_eq!(heap.reallocate_unsized(p, 64, 8), None, "{p:?}");
        }
    }
    assert_eq!(*foreign, [5u8; 64], "the foreign block is untouched");
    let stats = heap.check().unwrap();
    assert_eq!(stats.huge_bytes, 300_000usize.next_multiple_of(4096));
    // SAFETY: live, freed once.
    unsafe {
        heap.free(small);
        heap.free(huge);
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.pages().held_bytes(), 0);
}

/// Release builds: `free` ignores a foreign pointer, interior pointers and a huge block freed
/// twice, touching nothing; so does a sized huge-route `deallocate` of a pointer that starts no
/// huge block (before the page map it went to the page source: glibc's `free` of a foreign
/// address).
#[cfg(not(debug_assertions))]
#[test]
fn release_builds_ignore_bad_frees() {
    let _serial = serial();
    let heap = std_heap();
    let foreign = Box::new([5u8; 64]);
    let f = NonNull::from(&*foreign).cast::<u8>();
    let small = heap.allocate(layout(24, 8)).unwrap();
    let huge = heap.allocate(layout(300_000, 8)).unwrap();
    let twice = heap.allocate(layout(8, 8192)).unwrap();
    let before = heap.check().unwrap();
    // SAFETY: the bad inputs `free` documents (no reclaim runs meanwhile); `twice` is freed
    // once properly first.
    unsafe {
        heap.free(f);
        heap.free(small.add(8));
        heap.free(huge.add(16));
        heap.free(huge.add(8192));
        heap.deallocate(f, layout(300_000, 8));
        heap.free(twice);
        heap.free(twice);
    }
    assert_eq!(*foreign, [5u8; 64]);
    let after = heap.check().unwrap();
    assert_eq!(after.small_bytes, before.small_bytes);
    assert_eq!(after.huge_bytes, before.huge_bytes - 4096);
    // SAFETY: live, freed once.
    unsafe {
        heap.free(small);
        heap.free(huge);
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.pages().held_bytes(), 0);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not a block of this heap")]
fn debug_builds_panic_on_a_foreign_free() {
    let heap = std_heap();
    let foreign = Box::new([5u8; 64]);
    // SAFETY: the documented bad input (panics in debug builds before touching anything).
    unsafe { heap.free(NonNull::from(&*foreign).cast()) };
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "inside a slab object")]
fn debug_builds_panic_on_an_interior_small_free() {
    let heap = std_heap();
    let p = heap.allocate(layout(24, 8)).unwrap();
    // SAFETY: the documented bad input.
    unsafe { heap.free(p.add(8)) };
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not a block of this heap")]
fn debug_builds_panic_on_a_huge_double_free() {
    let heap = std_heap();
    let p = heap.allocate(layout(8, 8192)).unwrap();
    // SAFETY: freed once properly, then the documented bad input.
    unsafe {
        heap.free(p);
        heap.free(p);
    }
}

/// Before the page map, a sized huge-route free of a foreign pointer went to the page source
/// (`SystemPages`: glibc's `free` of an address it never returned, which aborts the process).
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not a huge block of this heap")]
fn debug_builds_panic_on_a_foreign_sized_huge_free() {
    let heap = std_heap();
    let foreign = Box::new([5u8; 64]);
    // SAFETY: the documented bad input.
    unsafe { heap.deallocate(NonNull::from(&*foreign).cast(), layout(300_000, 8)) };
}
