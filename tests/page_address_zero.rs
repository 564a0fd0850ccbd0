//! Issue 14, defect 7: a page allocator managing the page at address 0, used as the heap's page
//! source, leaked that page (`PageSource::alloc_pages` turned address 0 into `None` and left
//! the page allocated).
//!
//! The choice (docs/design/05-pages.md §"BitmapPageAllocator" and §"BuddyPageAllocator", the allocators' rustdoc): neither page allocator ever hands
//! out address 0. A region that contains it starts at the next page (its first page is not
//! managed: not counted in `total_pages`, never allocated, never freed), so no API
//! (`alloc_pages`, `alloc_pages_at`, `alloc_order`, the page-source methods, huge blocks) can
//! return it, and every address they return is a valid non-null pointer.
//!
//! The addresses here are fake (never touched): the heap's huge route hands out the source's
//! pages without writing to them. What the heap itself writes (its page map's nodes) comes
//! from real memory ([`HugeFrom`]).

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;

use smpalloc::AllocError;
use smpalloc::heap::{PageSource, SmpHeap, SystemPages};
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator};
use support::pages::Pages;

const P: usize = 4096;
type Buddy = BuddyPageAllocator<P, 4, 2>;
type Bitmap = BitmapPageAllocator<P>;

/// 64 pages from address 0: the buddy (window at 0, four maximal blocks of 16 pages).
fn buddy_at_zero() -> Buddy {
    let pages = Buddy::with_window(0, 64 * P).with_watermarks(4, 2);
    pages.add_memory(0, 64 * P).unwrap();
    pages
}

fn bitmap_at_zero() -> Bitmap {
    let pages = Bitmap::new();
    pages.add_memory(0, 64 * P).unwrap();
    pages
}

/// The page at 0 is not managed: 63 pages, none of them address 0, and the direct calls that
/// name it are refused.
fn page_zero_is_never_managed(pages: &impl Pages) {
    assert_eq!(pages.total(), 63);
    assert_eq!(pages.alloc_at(0, 1, P), Err(AllocError::InvalidParam));
    assert_eq!(pages.alloc_at(0, 2, P), Err(AllocError::InvalidParam));
    assert_eq!(pages.free(0, 1), Err(AllocError::InvalidParam));
    assert_eq!(pages.alloc_at(P, 1, P), Ok(P));
    assert_eq!(pages.free(P, 1), Ok(()));
    // Exhaust page by page: 63 pages, never address 0.
    let mut all = Vec::new();
    while let Ok(addr) = pages.alloc(1, P) {
        assert_ne!(addr, 0);
        all.push(addr);
    }
    assert_eq!(all.len(), 63);
    assert_eq!(pages.used(), 63);
    assert_eq!(pages.invariants(), Ok(()));
    for addr in all {
        pages.free(addr, 1).unwrap();
    }
    assert_eq!(pages.used(), 0);
    assert_eq!(pages.invariants(), Ok(()));
}

#[test]
fn buddy_never_manages_page_zero() {
    let pages = buddy_at_zero();
    page_zero_is_never_managed(&pages);
    // The first maximal block lost its first page: pages 1..16 are blocks 1, 2..4, 4..8 and
    // 8..16; the three other maximal blocks are whole.
    let mut big = Vec::new();
    while let Ok(addr) = pages.alloc_order(4) {
        big.push(addr);
    }
    big.sort_unstable();
    assert_eq!(big, [16 * P, 32 * P, 48 * P]);
    let rest: Vec<usize> = (0..4)
        .rev()
        .map(|k| pages.alloc_order(k).unwrap())
        .collect();
    assert_eq!(rest, [8 * P, 4 * P, 2 * P, P]);
    assert_eq!(pages.alloc_order(0), Err(AllocError::NoMemory));
    assert_eq!(pages.used_pages(), 63);
    for addr in big {
        pages.free_order(addr, 4).unwrap();
    }
    for (k, addr) in (0..4).rev().zip(rest) {
        pages.free_order(addr, k).unwrap();
    }
    pages.drain_cpu_caches();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.free_blocks()[4], 3);
    assert_eq!(pages.check(), Ok(()));
}

#[test]
fn bitmap_never_manages_page_zero() {
    page_zero_is_never_managed(&bitmap_at_zero());
}

/// A region made of page 0 only holds no page: refused like an empty region.
#[test]
fn a_region_of_page_zero_alone_is_empty() {
    let buddy = Buddy::with_window(0, 64 * P);
    assert_eq!(buddy.add_memory(0, P), Err(AllocError::InvalidParam));
    assert_eq!(
        buddy.add_memory(0, P + P / 2),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(buddy.total_pages(), 0);
    buddy.add_memory(0, 2 * P).unwrap();
    assert_eq!(buddy.total_pages(), 1);
    assert_eq!(buddy.check(), Ok(()));
    let bitmap = Bitmap::new();
    assert_eq!(bitmap.add_memory(0, P), Err(AllocError::InvalidParam));
    bitmap.add_memory(0, 2 * P).unwrap();
    assert_eq!(bitmap.total_pages(), 1);
    assert_eq!(bitmap.alloc_pages(1, P), Ok(P));
    assert_eq!(bitmap.check(), Ok(()));
}

/// Through the page-source interface (what the heap calls): every request succeeds until the
/// allocator itself has no room for it, no page is lost, and everything comes back.
fn source_exhausts_without_leaking(pages: &(impl Pages + PageSource)) {
    for (bytes, align) in [(P, P), (2 * P, P), (P, 4 * P), (8 * P, 8 * P), (3 * P, P)] {
        let count = bytes / P;
        let mut taken: Vec<NonNull<u8>> = Vec::new();
        while let Some(ptr) = PageSource::alloc_pages(pages, bytes, align) {
            assert_eq!(ptr.as_ptr().addr() % align, 0);
            taken.push(ptr);
        }
        assert_eq!(
            pages.used(),
            taken.len() * count,
            "({bytes}, {align}): a page was lost"
        );
        assert_eq!(
            pages.alloc(count, align),
            Err(AllocError::NoMemory),
            "({bytes}, {align}): the source stopped while the allocator had room"
        );
        for ptr in taken {
            // SAFETY: each came from `alloc_pages(bytes, align)` on this source.
            unsafe { pages.free_pages(ptr, bytes, align) };
        }
        PageSource::drain(pages);
        assert_eq!(pages.used(), 0, "({bytes}, {align})");
        assert_eq!(pages.invariants(), Ok(()));
    }
    // Huge blocks (the trait's default: whole pages).
    let layout = Layout::from_size_align(5 * P + 1, P).unwrap();
    let mut huge = Vec::new();
    while let Some(ptr) = pages.alloc_huge(layout) {
        huge.push(ptr);
    }
    assert_eq!(pages.used(), huge.len() * 6, "huge: a page was lost");
    assert_eq!(pages.alloc(6, P), Err(AllocError::NoMemory));
    for ptr in huge {
        // SAFETY: from `alloc_huge(layout)` on this source.
        unsafe { pages.free_huge(ptr, layout) };
    }
    PageSource::drain(pages);
    assert_eq!(pages.used(), 0);
    assert_eq!(pages.invariants(), Ok(()));
}

support::suite!(source_exhausts_without_leaking:
    buddy_at_zero_as_a_page_source => buddy_at_zero(),
    bitmap_at_zero_as_a_page_source => bitmap_at_zero(),
);

/// A page source whose huge blocks come from `huge` (an allocator at address 0, its pages
/// never touched) and whose pages for the heap's own use (the page map's nodes, which the
/// heap writes) come from the system.
struct HugeFrom<'a, S> {
    huge: &'a S,
    own: SystemPages,
}

impl<'a, S> HugeFrom<'a, S> {
    fn new(huge: &'a S) -> Self {
        Self {
            huge,
            own: SystemPages::new(),
        }
    }
}

// SAFETY: each call goes to a page source, and each block goes back to the one it came from
// (pages: the system; huge blocks: `huge`).
unsafe impl<S: PageSource> PageSource for HugeFrom<'_, S> {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        self.own.alloc_pages(bytes, align)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: the caller's contract: taken from `own` by `alloc_pages`.
        unsafe { self.own.free_pages(ptr, bytes, align) }
    }

    fn drain(&self) {
        self.huge.drain();
    }

    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.huge.alloc_huge(layout)
    }

    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract: taken from `huge` by `alloc_huge`.
        unsafe { self.huge.free_huge(ptr, layout) }
    }

    fn huge_usable(&self, layout: Layout) -> usize {
        self.huge.huge_usable(layout)
    }

    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract: taken from `huge`.
        unsafe { self.huge.realloc_huge(ptr, layout, new_size) }
    }
}

/// The heap over a source managing address 0, on its huge route (which hands out the source's
/// pages untouched): allocates 75-page blocks until the source is exhausted, checks that no
/// page is lost (`used` reads the source's used pages) and gives everything back. Returns how
/// many blocks it got.
fn huge_blocks_until_exhausted<S: PageSource>(
    heap: &SmpHeap<S, 2>,
    used: impl Fn() -> usize,
) -> usize {
    let layout = Layout::from_size_align(300 << 10, P).unwrap(); // 75 pages
    let mut blocks = Vec::new();
    while let Some(ptr) = heap.allocate(layout) {
        assert_ne!(ptr.as_ptr().addr(), 0);
        blocks.push(ptr);
    }
    let count = blocks.len();
    assert_eq!(used(), count * 75, "a page was lost");
    for ptr in blocks {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { heap.deallocate(ptr, layout) };
    }
    heap.reclaim();
    assert_eq!(used(), 0);
    count
}

#[test]
fn heap_over_a_buddy_at_zero() {
    // 4 MiB from address 0: room for huge blocks.
    let pages = BuddyPageAllocator::<P, 10, 2>::with_window(0, 4 << 20);
    pages.add_memory(0, 4 << 20).unwrap();
    assert_eq!(pages.total_pages(), 1023);
    let heap: SmpHeap<_, 2> = SmpHeap::new(HugeFrom::new(&pages));
    // 75 pages take a 128-page block each (the unused tail goes back): the maximal block
    // without page 0 is blocks of 1, 2, ..., 512 pages, so 4 + 2 + 1 of them.
    assert_eq!(huge_blocks_until_exhausted(&heap, || pages.used_pages()), 7);
    assert_eq!(pages.check(), Ok(()));
}

#[test]
fn heap_over_a_bitmap_at_zero() {
    let pages = BitmapPageAllocator::<P>::new();
    pages.add_memory(0, 4 << 20).unwrap();
    assert_eq!(pages.total_pages(), 1023);
    let heap: SmpHeap<_, 2> = SmpHeap::new(HugeFrom::new(&pages));
    assert_eq!(
        huge_blocks_until_exhausted(&heap, || pages.used_pages()),
        1023 / 75
    );
    assert_eq!(pages.check(), Ok(()));
}
