//! arceos' `BitmapPageAllocator` example and unit tests (RESEARCH.md 2.5) re-pointed at
//! smpalloc, regression tests for the original's verified defects (RESEARCH.md 2.7: single
//! pages ignore alignment, `alloc_pages_at` underflows below its base, no `add_memory`), the
//! arceos traits driving both allocators, and every bad input of both allocators: a clear
//! error and nothing changed.

use smpalloc::bitmap::{AtomicBitmap, summary_words};
use smpalloc::page::{
    BitmapPageAllocator, BitmapPageAllocator256M, BuddyPageAllocator, MAX_REGIONS, PageMeta,
};
use smpalloc::{AllocError, PageAllocator};

const PAGE_SIZE: usize = 4096;

/// The seed's example 2, unchanged but for the crate name (its `let mut` is needed by the
/// original's `&mut self` methods; ours take `&self`).
#[test]
#[allow(unused_mut)]
fn seed_example_bitmap_page_allocator() {
    use smpalloc::BitmapPageAllocator;

    // Define page size as 4KB (common kernel page size)
    const PAGE_SIZE: usize = 4096;
    let mut allocator = BitmapPageAllocator::<PAGE_SIZE>::new();

    // Initialize: Manage 2GB memory starting at 0x200000 (2GB / 4KB = 524,288 pages)
    allocator.init(0x200000, 2 * 1024 * 1024 * 1024);

    // Allocate 10 contiguous pages (alignment requirement = page size)
    let page_addr = allocator.alloc_pages(10, PAGE_SIZE).expect("页分配失败");
    assert!(page_addr % PAGE_SIZE == 0); // Ensure page-aligned address

    // Deallocate the 10 pages
    allocator.dealloc_pages(page_addr, 10);

    // (Not in the seed: the example left the allocator as it found it.)
    assert_eq!(allocator.used_pages(), 0);
    assert_eq!(allocator.total_pages(), 524_288);
    assert_eq!(allocator.check(), Ok(()));
}

/// The same example through the arceos traits, for both allocators.
fn seed_through_traits<A: PageAllocator>(allocator: &mut A) {
    allocator.init(0x200000, 2 * 1024 * 1024 * 1024);
    let page_addr = allocator.alloc_pages(10, A::PAGE_SIZE).expect("pages");
    assert!(page_addr % A::PAGE_SIZE == 0);
    assert_eq!(allocator.used_pages(), 10);
    allocator.dealloc_pages(page_addr, 10);
    assert_eq!(allocator.used_pages(), 0);
    assert_eq!(allocator.available_pages(), allocator.total_pages());
    // The trait's dealloc has no result: bad input must leave everything unchanged.
    let held = allocator.alloc_pages(3, A::PAGE_SIZE).unwrap();
    allocator.dealloc_pages(held + 1, 1); // misaligned
    allocator.dealloc_pages(held, 0);
    allocator.dealloc_pages(held + 7, 3);
    allocator.dealloc_pages(0x1000, 1);
    allocator.dealloc_pages(usize::MAX & !0xfff, 1);
    allocator.add_memory(0x100000, 0x200000).unwrap_err();
}

#[test]
fn seed_example_through_traits() {
    let mut bitmap = BitmapPageAllocator::<PAGE_SIZE>::new();
    seed_through_traits(&mut bitmap);
    assert_eq!(bitmap.check(), Ok(()));

    let mut buddy = BuddyPageAllocator::<PAGE_SIZE>::new();
    seed_through_traits(&mut buddy);
    assert_eq!(buddy.used_pages(), 3);
    assert_eq!(buddy.check(), Ok(()));
}

// -------------------------------------------------------------------------------------------
// The original's unit tests (`src/bitmap.rs`)

#[test]
fn bitmap_one_page() {
    let allocator = BitmapPageAllocator::<PAGE_SIZE>::new();
    allocator.init(0x1000, PAGE_SIZE);
    assert_eq!(allocator.total_pages(), 1);
    assert_eq!(allocator.used_pages(), 0);
    let addr = allocator.alloc_pages(1, PAGE_SIZE).unwrap();
    assert_eq!(addr, 0x1000);
    assert_eq!(allocator.used_pages(), 1);
    assert_eq!(
        allocator.alloc_pages(1, PAGE_SIZE),
        Err(AllocError::NoMemory)
    );
    allocator.dealloc_pages(addr, 1);
    assert_eq!(allocator.used_pages(), 0);
    assert_eq!(allocator.alloc_pages(1, PAGE_SIZE), Ok(0x1000));
    assert_eq!(allocator.check(), Ok(()));
}

/// The original's 2 GiB test. Multi-page runs are first fit, so they start at the base as the
/// original's did; single pages come from a per-CPU cursor, so only their alignment is checked.
#[test]
fn bitmap_size_2g() {
    const SIZE_1G: usize = 1 << 30;
    const SIZE_2M: usize = 1 << 21;
    let base = SIZE_1G + PAGE_SIZE;
    let allocator = BitmapPageAllocator::<PAGE_SIZE>::new();
    allocator.init(base, 2 * SIZE_1G);
    for n in [10, 100, 1000] {
        let addr = allocator.alloc_pages(n, PAGE_SIZE).unwrap();
        assert_eq!(addr, base);
        allocator.dealloc_pages(addr, n);
    }
    let one = allocator.alloc_pages(1, PAGE_SIZE).unwrap();
    assert!((base..base + 2 * SIZE_1G).contains(&one));
    allocator.dealloc_pages(one, 1);
    for (n, align) in [(1, PAGE_SIZE), (10, SIZE_2M), (100, SIZE_1G)] {
        let addr = allocator.alloc_pages(n, align).unwrap();
        assert_eq!(addr % align, 0);
        if n > 1 {
            assert_eq!(addr, base.next_multiple_of(align));
        }
        allocator.dealloc_pages(addr, n);
    }
    let a = allocator.alloc_pages(1, PAGE_SIZE).unwrap();
    let b = allocator.alloc_pages(10, SIZE_2M).unwrap();
    let c = allocator.alloc_pages(100, SIZE_1G).unwrap();
    assert_eq!((b % SIZE_2M, c % SIZE_1G), (0, 0));
    assert_eq!(allocator.used_pages(), 111);
    for (addr, n) in [(a, 1), (b, 10), (c, 100)] {
        allocator.try_dealloc_pages(addr, n).unwrap();
    }
    // alloc_pages_at at the base and at an aligned address inside.
    assert_eq!(allocator.alloc_pages_at(base, 10, PAGE_SIZE), Ok(base));
    assert_eq!(
        allocator.alloc_pages_at(base, 1, PAGE_SIZE),
        Err(AllocError::MemoryOverlap)
    );
    let at = 2 * SIZE_1G;
    assert_eq!(allocator.alloc_pages_at(at, 100, SIZE_1G), Ok(at));
    allocator.try_dealloc_pages(base, 10).unwrap();
    allocator.try_dealloc_pages(at, 100).unwrap();
    assert_eq!(allocator.used_pages(), 0);
    assert_eq!(allocator.check(), Ok(()));
}

/// The original panics with "bitmap capacity exceeded"; ours reports it from `add_memory` (and
/// `init` panics with the error).
#[test]
fn bitmap_capacity_exceeded() {
    let allocator = BitmapPageAllocator256M::<PAGE_SIZE>::new();
    assert_eq!(
        allocator.add_memory(0x1000, 257 << 20),
        Err(AllocError::InvalidParam)
    );
    allocator.add_memory(0x1000, 256 << 20).unwrap();
    assert_eq!(allocator.total_pages(), 65_536);
    let result = std::panic::catch_unwind(|| {
        BitmapPageAllocator256M::<PAGE_SIZE>::new().init(0, 1 << 30);
    });
    assert!(result.is_err());
}

// -------------------------------------------------------------------------------------------
// The original's defects

/// Defect 1: `alloc_pages(1, 8192)` returned an address only 4 KiB aligned.
#[test]
fn single_pages_honour_alignment() {
    let allocator = BitmapPageAllocator::<PAGE_SIZE>::new();
    allocator.init((1 << 30) + PAGE_SIZE, 1 << 30);
    for shift in 13..=22 {
        let align = 1 << shift;
        let addr = allocator.alloc_pages(1, align).unwrap();
        assert_eq!(addr % align, 0, "alloc_pages(1, {align:#x}) = {addr:#x}");
    }
    assert_eq!(allocator.used_pages(), 10);
    let buddy = BuddyPageAllocator::<PAGE_SIZE>::new();
    let mut buddy = buddy;
    buddy.init((1 << 30) + PAGE_SIZE, 1 << 28);
    for shift in 13..=22 {
        let align = 1 << shift;
        let addr = buddy.alloc_pages(1, align).unwrap();
        assert_eq!(addr % align, 0);
    }
    assert_eq!(buddy.used_pages(), 10);
    assert_eq!(buddy.check(), Ok(()));
}

/// Defect 2: `alloc_pages_at` below the base underflowed (a panic in debug builds), and it
/// accepted a count of 0.
#[test]
fn alloc_pages_at_validates_its_address() {
    let allocator = BitmapPageAllocator::<PAGE_SIZE>::new();
    allocator.init(0x4000_0000, 0x100_0000);
    for (addr, n) in [
        (0x1000, 1),
        (0x3fff_f000, 1),
        (0x3fff_f000, 2),
        (0x4100_0000, 1),
        (0x40ff_f000, 2),
        (usize::MAX & !0xfff, 2),
    ] {
        assert_eq!(
            allocator.alloc_pages_at(addr, n, PAGE_SIZE),
            Err(AllocError::InvalidParam),
            "{addr:#x}"
        );
    }
    assert_eq!(
        allocator.alloc_pages_at(0x4000_0000, 0, PAGE_SIZE),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(
        allocator.alloc_pages_at(0x4000_1000, 1, 0x2000),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(allocator.used_pages(), 0);
    assert_eq!(allocator.check(), Ok(()));
}

/// Defect 8: no `add_memory`; here regions may be added (anywhere in the window, in any
/// order after the first), adjacent regions form contiguous runs, overlaps are refused.
#[test]
fn bitmap_add_memory() {
    let allocator = BitmapPageAllocator256M::<PAGE_SIZE>::new();
    allocator.add_memory(0x10_0000, 0x10_0000).unwrap();
    allocator.add_memory(0x40_0000, 0x1_0000).unwrap();
    allocator.add_memory(0x30_0000, 0x10_0000).unwrap();
    assert_eq!(
        allocator.add_memory(0x3f_f000, 0x2000),
        Err(AllocError::MemoryOverlap)
    );
    assert_eq!(
        allocator.add_memory(0x0, 0x10_0000),
        Err(AllocError::InvalidParam)
    ); // below the window
    assert_eq!(
        allocator.add_memory(0x20_0000, 0),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(
        allocator.add_memory(0x20_0000, 0xfff),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(allocator.total_pages(), 256 + 256 + 16);
    // A run crossing the boundary of the adjacent regions at 0x40_0000.
    assert_eq!(
        allocator.alloc_pages_at(0x3f_f000, 3, PAGE_SIZE),
        Ok(0x3f_f000)
    );
    // No run crosses the gap 0x20_0000..0x30_0000.
    assert_eq!(
        allocator.alloc_pages_at(0x1f_f000, 2, PAGE_SIZE),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(allocator.check(), Ok(()));
    for i in 3..MAX_REGIONS {
        allocator.add_memory(0x100_0000 * i, PAGE_SIZE).unwrap();
    }
    assert_eq!(
        allocator.add_memory(0x1000_0000, PAGE_SIZE),
        Err(AllocError::NoMemory)
    );
    assert_eq!(allocator.check(), Ok(()));
}

/// Caller-provided storage: the bitmap need not be part of the allocator (1 TiB is 32 MiB).
#[test]
fn bitmap_from_storage() {
    type Storage = AtomicBitmap<1024, { summary_words(1024) }>;
    let storage: &'static mut Storage = Box::leak(Box::new(Storage::new())); // all free: reset
    let allocator = BitmapPageAllocator::<PAGE_SIZE, 1024, { summary_words(1024) }, &'static Storage>::from_storage(storage);
    assert_eq!(
        allocator.alloc_pages(1, PAGE_SIZE),
        Err(AllocError::NoMemory)
    );
    allocator.init(0x8000_0000, 64 * PAGE_SIZE);
    let run = allocator.alloc_pages(64, PAGE_SIZE).unwrap();
    assert_eq!(run, 0x8000_0000);
    assert_eq!(
        allocator.alloc_pages(1, PAGE_SIZE),
        Err(AllocError::NoMemory)
    );
    allocator.try_dealloc_pages(run, 64).unwrap();
    assert_eq!(allocator.check(), Ok(()));
}

/// The 1 TiB capacity (2^28 pages) in 32 MiB of zeroed heap memory handed in at run time, as a
/// kernel would hand in memory it set aside: nothing of it is a `static` or on a stack.
#[test]
fn bitmap_1t_from_zeroed_storage() {
    use smpalloc::page::{Bitmap1T, BitmapPageAllocator1T};
    let layout = core::alloc::Layout::new::<Bitmap1T>();
    assert!(layout.size() >= 32 << 20);
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid `Bitmap1T` (arrays of
    // atomic words), which `from_storage` then resets; the box owns the allocation, which is
    // leaked on purpose to get the `&'static mut` a kernel would pass.
    let storage: &'static mut Bitmap1T = unsafe {
        let raw = std::alloc::alloc_zeroed(layout).cast::<Bitmap1T>();
        assert!(!raw.is_null());
        Box::leak(Box::from_raw(raw))
    };
    let pages = BitmapPageAllocator1T::<PAGE_SIZE>::from_storage(storage);
    pages.init(0x1000, (1 << 40) - 0x1000);
    assert_eq!(pages.total_pages(), (1 << 28) - 1);
    let high = (1 << 40) - (1 << 30);
    assert_eq!(pages.alloc_pages_at(high, 512, 1 << 21), Ok(high));
    let huge = pages.alloc_pages(1, 1 << 30).unwrap();
    assert_eq!(huge % (1 << 30), 0);
    assert_eq!(pages.used_pages(), 513);
    pages.try_dealloc_pages(high, 512).unwrap();
    pages.try_dealloc_pages(huge, 1).unwrap();
    assert_eq!(pages.check(), Ok(()));
}

// -------------------------------------------------------------------------------------------
// Bad input: a clear error, nothing changed

/// Every bad input of one allocator; `frees_partial` says whether freeing part of an
/// allocation is allowed (bitmap) or refused (buddy).
macro_rules! bad_input_suite {
    ($pages:expr, $check:expr, frees_partial: $partial:expr) => {{
        let pages = $pages;
        let check = $check;
        let base = 0x4000_0000;
        let a = pages.alloc_pages(4, 4 * PAGE_SIZE).unwrap();
        let used = pages.used_pages();
        let expect_unchanged = |pages: &_, what: &str| {
            assert_eq!(check(pages), Ok(()), "{what}");
            assert_eq!(pages.used_pages(), used, "{what}");
        };
        // Count 0, bad alignments.
        assert_eq!(
            pages.alloc_pages(0, PAGE_SIZE),
            Err(AllocError::InvalidParam)
        );
        for align in [0, 1, PAGE_SIZE / 2, 3 * PAGE_SIZE, PAGE_SIZE + 1] {
            assert_eq!(
                pages.alloc_pages(1, align),
                Err(AllocError::InvalidParam),
                "{align}"
            );
            assert_eq!(
                pages.alloc_pages(2, align),
                Err(AllocError::InvalidParam),
                "{align}"
            );
        }
        assert_eq!(pages.try_dealloc_pages(a, 0), Err(AllocError::InvalidParam));
        expect_unchanged(&pages, "count 0 / alignment");
        // Misaligned and outside addresses.
        assert_eq!(
            pages.try_dealloc_pages(a + 1, 4),
            Err(AllocError::InvalidParam)
        );
        assert_eq!(
            pages.try_dealloc_pages(base - PAGE_SIZE, 1),
            Err(AllocError::InvalidParam)
        );
        assert_eq!(pages.try_dealloc_pages(0, 1), Err(AllocError::InvalidParam));
        assert_eq!(
            pages.try_dealloc_pages(usize::MAX & !0xfff, 2),
            Err(AllocError::InvalidParam)
        );
        assert_eq!(
            pages.try_dealloc_pages(base + (16 << 20), 1),
            Err(AllocError::InvalidParam)
        );
        expect_unchanged(&pages, "outside");
        // Never allocated, and a range running past an allocation.
        assert_eq!(
            pages.try_dealloc_pages(a + 4 * PAGE_SIZE, 1),
            Err(AllocError::NotAllocated)
        );
        assert_eq!(pages.try_dealloc_pages(a, 5), Err(AllocError::NotAllocated));
        if !$partial {
            assert_eq!(pages.try_dealloc_pages(a, 2), Err(AllocError::NotAllocated));
            assert_eq!(
                pages.try_dealloc_pages(a + PAGE_SIZE, 1),
                Err(AllocError::NotAllocated)
            );
        }
        expect_unchanged(&pages, "never allocated");
        // Overlapping regions.
        assert_eq!(
            pages.add_memory(base, PAGE_SIZE),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            pages.add_memory(base - PAGE_SIZE, 2 * PAGE_SIZE),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            pages.add_memory(base + (16 << 20) - PAGE_SIZE, 1 << 20),
            Err(AllocError::MemoryOverlap)
        );
        expect_unchanged(&pages, "overlap");
        // alloc_pages_at on taken pages.
        assert_eq!(
            pages.alloc_pages_at(a, 1, PAGE_SIZE),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            pages.alloc_pages_at(a + 3 * PAGE_SIZE, 2, PAGE_SIZE),
            Err(AllocError::MemoryOverlap)
        );
        expect_unchanged(&pages, "alloc_pages_at taken");
        // Double free.
        pages.try_dealloc_pages(a, 4).unwrap();
        let used = pages.used_pages();
        assert_eq!(pages.try_dealloc_pages(a, 4), Err(AllocError::NotAllocated));
        assert_eq!(pages.try_dealloc_pages(a, 1), Err(AllocError::NotAllocated));
        assert_eq!(pages.used_pages(), used);
        // A single page freed twice (the buddy parks it in a CPU cache in between).
        let one = pages.alloc_pages(1, PAGE_SIZE).unwrap();
        pages.try_dealloc_pages(one, 1).unwrap();
        assert_eq!(
            pages.try_dealloc_pages(one, 1),
            Err(AllocError::NotAllocated)
        );
        assert_eq!(pages.used_pages(), used);
        assert_eq!(check(&pages), Ok(()));
    }};
}

#[test]
fn bitmap_bad_input() {
    let pages = BitmapPageAllocator::<PAGE_SIZE>::new();
    pages.init(0x4000_0000, 16 << 20);
    bad_input_suite!(pages, |p: &BitmapPageAllocator<PAGE_SIZE>| p.check(), frees_partial: true);
}

#[test]
fn buddy_bad_input() {
    let mut pages = BuddyPageAllocator::<PAGE_SIZE>::with_window(0x3000_0000, 0x2000_0000);
    pages.init(0x4000_0000, 16 << 20);
    bad_input_suite!(pages, |p: &BuddyPageAllocator<PAGE_SIZE>| p.check(), frees_partial: false);
}

#[test]
fn buddy_specific_bad_input() {
    let pages = BuddyPageAllocator::<PAGE_SIZE, 4, 2>::new();
    // No metadata: nothing can be added.
    assert_eq!(
        pages.add_memory(0x1000, PAGE_SIZE),
        Err(AllocError::InvalidParam)
    );
    let pages = BuddyPageAllocator::<PAGE_SIZE, 4, 2>::with_window(0x10_0000, 0x10_0000);
    assert_eq!(
        pages.add_memory(0x8_0000, 0x10_0000),
        Err(AllocError::InvalidParam)
    ); // outside
    pages.add_memory(0x10_0000, 0x10_0000).unwrap();
    // Beyond a maximal block (16 pages).
    assert_eq!(pages.alloc_pages(17, PAGE_SIZE), Err(AllocError::NoMemory));
    assert_eq!(
        pages.alloc_pages(1, 32 * PAGE_SIZE),
        Err(AllocError::NoMemory)
    );
    assert_eq!(pages.alloc_order(5), Err(AllocError::NoMemory));
    assert_eq!(
        pages.free_order(0x10_0000, 5),
        Err(AllocError::InvalidParam)
    );
    let block = pages.alloc_order(4).unwrap();
    assert_eq!(block % (16 * PAGE_SIZE), 0);
    assert_eq!(pages.free_order(block, 3), Err(AllocError::NotAllocated));
    pages.free_order(block, 4).unwrap();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.check(), Ok(()));
}

// -------------------------------------------------------------------------------------------
// Buddy behaviour

/// Metadata handed in by the caller: the allocator can be a `static`, and it never writes
/// to the pages (the addresses here are fake).
#[test]
fn buddy_static_with_caller_metadata() {
    static META: [PageMeta; 64] = [const { PageMeta::new() }; 64];
    static PAGES: BuddyPageAllocator<PAGE_SIZE, 4, 2> =
        BuddyPageAllocator::with_metadata(0xffff_8000_0010_0000, &META);
    PAGES
        .add_memory(0xffff_8000_0010_3000, 40 * PAGE_SIZE)
        .unwrap();
    assert_eq!(PAGES.total_pages(), 40);
    let run = PAGES.alloc_pages(5, 8 * PAGE_SIZE).unwrap();
    assert_eq!(run % (8 * PAGE_SIZE), 0);
    assert_eq!(PAGES.used_pages(), 5);
    PAGES.try_dealloc_pages(run, 5).unwrap();
    assert_eq!(PAGES.check(), Ok(()));
}

/// Fresh metadata is all zero bytes, so a kernel's `static` metadata array (3 MiB for 1 GiB of
/// RAM) lands in `.bss` instead of the kernel image (found by the riscv kernel in `kernel/`).
#[test]
fn fresh_page_metadata_is_all_zero_bytes() {
    const BYTES: usize = size_of::<PageMeta>();
    // SAFETY: `PageMeta` is three `AtomicU32`s: no padding, and every byte is initialised.
    let bytes: [u8; BYTES] = unsafe { core::mem::transmute(PageMeta::new()) };
    assert_eq!(bytes, [0; BYTES]);
}

/// Splitting, exact trimming, merging back to maximal blocks, and the per-CPU caches.
#[test]
fn buddy_split_merge_and_caches() {
    let mut pages = BuddyPageAllocator::<PAGE_SIZE, 10, 1>::new().with_watermarks(8, 4);
    pages.init(0x4000_0000, 4 << 20); // one maximal block
    assert_eq!(pages.free_blocks()[10], 1);
    let mut singles: Vec<usize> = (0..100)
        .map(|_| pages.alloc_pages(1, PAGE_SIZE).unwrap())
        .collect();
    singles.sort_unstable();
    singles.dedup();
    assert_eq!(singles.len(), 100);
    let three = pages.alloc_pages(3, PAGE_SIZE).unwrap();
    assert_eq!(pages.used_pages(), 103);
    assert_eq!(pages.check(), Ok(()));
    for &page in &singles {
        pages.try_dealloc_pages(page, 1).unwrap();
        assert_eq!(pages.check(), Ok(()));
    }
    // At most `high` pages stay parked; the rest went back in batches.
    assert!(pages.cached_pages() <= 8, "{}", pages.cached_pages());
    assert_eq!(pages.used_pages(), 3);
    pages.try_dealloc_pages(three, 3).unwrap();
    assert!(
        pages.drain_cpu_caches(),
        "no cache busy: every cache drained"
    );
    assert_eq!(pages.cached_pages(), 0);
    assert_eq!(
        pages.free_blocks()[10],
        1,
        "everything merged back: {:?}",
        pages.free_blocks()
    );
    assert_eq!(pages.available_pages(), 1024);
    assert_eq!(pages.check(), Ok(()));
}

/// Exhaustion with pages parked in another CPU slot's cache: the allocation drains them
/// rather than failing.
#[test]
fn buddy_exhaustion_drains_caches() {
    let mut pages = BuddyPageAllocator::<PAGE_SIZE, 3, 4>::new().with_watermarks(8, 8);
    pages.init(0x10_0000, 16 * PAGE_SIZE);
    let all: Vec<usize> = (0..16)
        .map(|_| pages.alloc_pages(1, PAGE_SIZE).unwrap())
        .collect();
    assert_eq!(pages.alloc_pages(1, PAGE_SIZE), Err(AllocError::NoMemory));
    // Free them from another thread (another CPU slot), where they stay parked.
    std::thread::scope(|s| {
        s.spawn(|| {
            for &page in &all {
                pages.try_dealloc_pages(page, 1).unwrap();
            }
        });
    });
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.available_pages(), 16);
    // Two 8-page blocks need every parked page back in the zone.
    let a = pages.alloc_pages(8, PAGE_SIZE).unwrap();
    let b = pages.alloc_pages(8, PAGE_SIZE).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        pages.alloc_pages_at(0x10_0000, 1, PAGE_SIZE),
        Err(AllocError::MemoryOverlap)
    );
    pages.try_dealloc_pages(a, 8).unwrap();
    pages.try_dealloc_pages(b, 8).unwrap();
    assert_eq!(pages.check(), Ok(()));
}
