//! [`BitmapPageAllocator`]: a lock-free page allocator, one bit per page on
//! [`AtomicBitmap`].
//!
//! Bit `i` stands for page `base + i`, where `base` is the first page of the first region
//! added. A set bit is a page that is allocated *or not managed*: the bitmap starts full
//! ([`AtomicBitmap::fill`]) and each region's pages are freed into it, so searches never
//! return a page outside every region and no structure but the bitmap is consulted on the
//! allocation path.
//!
//! - One page, page-aligned: next-fit from a per-CPU cursor (`AtomicBitmap::alloc_next_fit`:
//!   one load and one CAS when the cursor's word has a free bit, the summaries otherwise).
//!   CPUs start their cursors in different parts of the region, so they claim in different
//!   words. With `LOWEST_FREE` ([`LowestFreeBitmapPageAllocator`], arceos' order): the lowest
//!   free page (`AtomicBitmap::alloc_lowest`, the same scan as `PidAllocator`'s lowest-free
//!   policy: a load and a CAS when word 0 has a free bit, the summaries otherwise).
//! - Anything else (more pages, or an alignment above one page, one page included):
//!   `AtomicBitmap::alloc_contiguous_offset`, first fit, with the offset that turns an aligned
//!   *address* into a condition on the bit index (`base` need not be aligned). Runs of up to a
//!   word are found word-parallel (all aligned free runs of a word in O(log count) word
//!   operations); longer ones by whole words. A run spanning words is claimed word by word and
//!   rolled back if a racing claim took part of it.
//! - Free: a range check against the region table (lock-free reads), then one `fetch_and`
//!   for one page (`AtomicBitmap::free`) or `AtomicBitmap::free_range`, which refuse (and
//!   change nothing) unless every page of the range is allocated.
//!
//! There is no counter on the hot paths: `used_pages` counts the bitmap's set bits in the
//! regions (exact at quiescence, and immune to any drift a counter could suffer).

use core::borrow::Borrow;
use core::fmt;

use super::regions::Regions;
use super::{CheckError, align_in_pages, page_number, region_pages};
use crate::bitmap::{AtomicBitmap, BITS, BitmapError, Cursor, summary_words};
use crate::percpu::PerCpu;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::loom_const_fn;
use crate::sync::model::SIZES;
use crate::traits::{AllocError, AllocResult, BaseAllocator, PageAllocator};

/// Leaf words of the default bitmap: 4 GiB of 4 KiB pages (1,048,576 pages, 128 KiB of
/// bitmap), enough for arceos' example (2 GiB at 2 MiB) and the original's test build.
pub const DEFAULT_BITMAP_WORDS: usize = words_for(1 << 20);

/// Leaf words for `pages` pages.
const fn words_for(pages: usize) -> usize {
    pages / BITS
}

/// 65,536 pages (256 MiB of 4 KiB pages, the original's default): 8 KiB of bitmap.
pub type BitmapPageAllocator256M<const PAGE_SIZE: usize> =
    BitmapPageAllocator<PAGE_SIZE, { words_for(1 << 16) }, { summary_words(words_for(1 << 16)) }>;

/// 1,048,576 pages (4 GiB of 4 KiB pages): the default, 128 KiB of bitmap.
pub type BitmapPageAllocator4G<const PAGE_SIZE: usize> = BitmapPageAllocator<PAGE_SIZE>;

/// 16,777,216 pages (64 GiB of 4 KiB pages): 2 MiB of bitmap; put it in a `static` (it is
/// too large for a stack).
pub type BitmapPageAllocator64G<const PAGE_SIZE: usize> =
    BitmapPageAllocator<PAGE_SIZE, { words_for(1 << 24) }, { summary_words(words_for(1 << 24)) }>;

/// A [`BitmapPageAllocator`] that always hands out the lowest free pages, as arceos'
/// `BitmapPageAllocator` (axallocator 0.2) does: code that relies on that order changes only
/// its import (`use smpalloc::page::LowestFreeBitmapPageAllocator as BitmapPageAllocator;`).
/// `WORDS`/`SUMMARY` choose the capacity as for [`BitmapPageAllocator`]; see its "Placement"
/// section for what differs from next-fit and from arceos.
///
/// ```
/// use smpalloc::page::LowestFreeBitmapPageAllocator;
/// static PAGES: LowestFreeBitmapPageAllocator<4096> = LowestFreeBitmapPageAllocator::new();
/// PAGES.add_memory(0x4000_1000, 64 << 20).unwrap();
/// let a = PAGES.alloc_pages(1, 4096).unwrap();
/// assert_eq!(a, 0x4000_1000); // the region's first page
/// PAGES.dealloc_pages(a, 1);
/// assert_eq!(PAGES.alloc_pages(1, 4096).unwrap(), a); // the lowest free page again
/// ```
pub type LowestFreeBitmapPageAllocator<
    const PAGE_SIZE: usize,
    const WORDS: usize = DEFAULT_BITMAP_WORDS,
    const SUMMARY: usize = { summary_words(DEFAULT_BITMAP_WORDS) },
> = BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, AtomicBitmap<WORDS, SUMMARY>, true>;

/// The bitmap of [`BitmapPageAllocator1T`]: 268,435,456 pages, 32 MiB.
pub type Bitmap1T = AtomicBitmap<{ words_for(1 << 28) }, { summary_words(words_for(1 << 28)) }>;

/// 268,435,456 pages (1 TiB of 4 KiB pages) in 32 MiB of caller-provided storage: build it
/// with [`BitmapPageAllocator::from_storage`] from memory the kernel set aside (zeroed memory
/// is a valid `AtomicBitmap`, whose contents `from_storage` resets).
pub type BitmapPageAllocator1T<const PAGE_SIZE: usize> = BitmapPageAllocator<
    PAGE_SIZE,
    { words_for(1 << 28) },
    { summary_words(words_for(1 << 28)) },
    &'static Bitmap1T,
>;

/// CPU slots for cursors (ids are reduced modulo this).
const SLOTS: usize = SIZES.page_cursor_slots;

/// `base` before the first region is added.
const NO_BASE: usize = usize::MAX;

#[cfg(not(loom))]
const fn cursors() -> PerCpu<Cursor, SLOTS> {
    PerCpu::new([const { Cursor::new(0) }; SLOTS])
}

#[cfg(loom)]
fn cursors() -> PerCpu<Cursor, SLOTS> {
    PerCpu::from_fn(|_| Cursor::new(0))
}

/// A lock-free page allocator over an [`AtomicBitmap`] of `WORDS * BITS` pages.
///
/// `PAGE_SIZE` is the page size in bytes (a power of two). The bitmap is stored inline by
/// default (`B = AtomicBitmap<WORDS, SUMMARY>`, so `new` is `const` and the allocator can be a
/// `static`), or borrowed (`B = &'static AtomicBitmap<..>`, see [`from_storage`]) so large
/// capacities need not be statics. Capacity choices, as the original's cargo features:
/// [`BitmapPageAllocator256M`], [`BitmapPageAllocator4G`] (the default),
/// [`BitmapPageAllocator64G`], [`BitmapPageAllocator1T`] (caller storage).
///
/// Every method takes `&self` and may run on any number of CPUs at once; the arceos traits'
/// `&mut self` methods delegate to them.
///
/// # Placement
/// `LOWEST_FREE` (a constant, so each choice compiles to its own code and the default pays
/// nothing for the other) chooses where a *single page at page alignment* comes from:
/// - `false`, the default: next-fit from a per-CPU cursor. The cursors start spread over the
///   first region, so CPUs allocating at once claim pages in different bitmap words (fewer
///   failed CASes, no cache line bouncing between them) and a CPU's next page is usually in
///   the word it just used (one load and one CAS). Which page comes back depends on the CPU
///   and on what that CPU allocated before: a page just freed is not handed out again until
///   the cursor comes round.
/// - `true` ([`LowestFreeBitmapPageAllocator`]): always the lowest free page of the window,
///   arceos' order: allocate, free, allocate returns the same page. The search starts at page
///   0 each time (through the bitmap's summaries: O(levels) word reads, the same lock-free
///   scan as `PidAllocator`'s `Policy::LowestFree`), so CPUs allocating at once contend on
///   the lowest non-full word. No cursor is used.
///
/// Every other request is placed the same way under both: several pages, or an alignment
/// above one page, take the lowest free run of that many pages whose first *address* is a
/// multiple of the alignment (first fit, arceos' order too); `alloc_pages_at` takes exactly
/// the pages asked for. Under concurrency "lowest" is the lowest a search saw: a page freed
/// behind a running search may be passed over by it.
///
/// Where both policies differ from arceos 0.2 (its test suite passes against the
/// lowest-free policy with these cases aside):
/// - `alloc_pages(1, align)` with `align` above one page returns an aligned page; arceos
///   ignores the alignment for a single page and returns its lowest free page.
/// - Alignments above 1 GiB are accepted (arceos: `InvalidParam`).
/// - `alloc_pages_at` on a taken page returns `MemoryOverlap` (arceos: `NoMemory`), outside
///   every region `InvalidParam` (arceos: `NoMemory`, or an overflow panic below its base).
/// - The window starts at the first region's first page, not at that address rounded down to
///   1 GiB, so a region fits whenever its pages fit the capacity: 4 GiB of 4 KiB pages from
///   `0x1000` fits the default 4 GiB bitmap exactly, where arceos panics ("bitmap capacity
///   exceeded": its window starts at 0). More regions can be added (arceos' `add_memory`
///   always fails).
/// - Freeing never panics (arceos asserts page alignment); bad input is an error that
///   changes nothing ([`try_dealloc_pages`](Self::try_dealloc_pages)).
///
/// ```
/// use smpalloc::page::BitmapPageAllocator;
/// static PAGES: BitmapPageAllocator<4096> = BitmapPageAllocator::new();
/// PAGES.add_memory(0x8000_0000, 64 << 20).unwrap();
/// let two = PAGES.alloc_pages(2, 8192).unwrap(); // two pages, 8 KiB aligned
/// assert_eq!(two % 8192, 0);
/// assert_eq!(PAGES.used_pages(), 2);
/// PAGES.try_dealloc_pages(two, 2).unwrap();
/// assert!(PAGES.try_dealloc_pages(two, 2).is_err()); // a double free changes nothing
/// ```
///
/// [`from_storage`]: BitmapPageAllocator::from_storage
pub struct BitmapPageAllocator<
    const PAGE_SIZE: usize,
    const WORDS: usize = DEFAULT_BITMAP_WORDS,
    const SUMMARY: usize = { summary_words(DEFAULT_BITMAP_WORDS) },
    B = AtomicBitmap<WORDS, SUMMARY>,
    const LOWEST_FREE: bool = false,
> {
    /// One bit per page of the window `base..base + WORDS * BITS`; 1 = allocated or not in
    /// any region.
    bits: B,
    /// The page number of bit 0 ([`NO_BASE`] until the first region). Written once under the
    /// region table's writer lock before any bit is freed; read `Relaxed` (every page index a
    /// reader converts came from a bit whose `Release` free happened after the write).
    base: AtomicUsize,
    /// The regions, for validating frees and `alloc_pages_at`.
    regions: Regions,
    /// Per-CPU next-fit cursors for single pages.
    cursors: PerCpu<Cursor, SLOTS>,
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, const LOWEST_FREE: bool>
    BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, AtomicBitmap<WORDS, SUMMARY>, LOWEST_FREE>
{
    loom_const_fn! {
        /// An allocator managing no memory yet (every page of its window marked unavailable);
        /// add regions with [`add_memory`](Self::add_memory) or [`init`](Self::init).
        pub fn new() -> Self {
            let () = Self::VALID;
            Self {
                bits: AtomicBitmap::with_prefix_allocated(usize::MAX),
                base: AtomicUsize::new(NO_BASE),
                regions: Regions::new(),
                cursors: cursors(),
            }
        }
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, const LOWEST_FREE: bool>
    Default
    for BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, AtomicBitmap<WORDS, SUMMARY>, LOWEST_FREE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, const LOWEST_FREE: bool>
    BitmapPageAllocator<
        PAGE_SIZE,
        WORDS,
        SUMMARY,
        &'static AtomicBitmap<WORDS, SUMMARY>,
        LOWEST_FREE,
    >
{
    /// An allocator over caller-provided bitmap storage (for capacities too large for a
    /// `static`, such as [`BitmapPageAllocator1T`]'s 32 MiB). The bitmap's previous contents
    /// are discarded ([`AtomicBitmap::fill`]); `&'static mut` proves nobody else uses it.
    ///
    /// # Time Complexity
    /// O(WORDS) stores.
    pub fn from_storage(bitmap: &'static mut AtomicBitmap<WORDS, SUMMARY>) -> Self {
        let () = Self::VALID;
        bitmap.fill();
        Self {
            bits: bitmap,
            base: AtomicUsize::new(NO_BASE),
            regions: Regions::new(),
            cursors: cursors(),
        }
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B, const LOWEST_FREE: bool>
    BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B, LOWEST_FREE>
where
    B: Borrow<AtomicBitmap<WORDS, SUMMARY>>,
{
    const VALID: () = assert!(
        PAGE_SIZE.is_power_of_two(),
        "BitmapPageAllocator: PAGE_SIZE must be a power of two"
    );

    /// The number of pages the bitmap can describe (the window size).
    pub const CAPACITY: usize = WORDS * BITS;

    #[inline(always)]
    fn bits(&self) -> &AtomicBitmap<WORDS, SUMMARY> {
        self.bits.borrow()
    }

    /// Adds the region `[start, start + size)` (whole pages inside it; a partial page at
    /// either end is left out, and so is the page at address 0, which is never managed, so
    /// no call returns address 0). The first region fixes the window: its first page becomes
    /// bit 0, and every region must lie in `[that page, that page + CAPACITY)`.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: the region holds no whole page (page 0 alone counts as
    ///   none), overflows the address space, or lies (partly) outside the window;
    /// - [`AllocError::MemoryOverlap`]: it overlaps a region already added;
    /// - [`AllocError::NoMemory`]: [`MAX_REGIONS`](super::MAX_REGIONS) regions exist already.
    ///
    /// Nothing changes on error.
    ///
    /// # Time Complexity
    /// O(regions + pages / BITS).
    pub fn add_memory(&self, start: usize, size: usize) -> AllocResult {
        let (first, end) = region_pages(start, size, PAGE_SIZE)?;
        let slot = self.regions.add(first, end, |is_first| {
            let base = if is_first {
                first
            } else {
                self.base.load(Ordering::Relaxed)
            };
            if first < base || end - base > Self::CAPACITY {
                return Err(AllocError::InvalidParam);
            }
            if is_first {
                self.base.store(first, Ordering::Relaxed);
            }
            Ok(())
        })?;
        let base = self.base.load(Ordering::Relaxed);
        let (lo, count) = (first - base, end - first);
        if slot == 0 && !LOWEST_FREE {
            // Spread the CPUs' cursors over the first region (lowest-free placement leaves
            // them at 0, unused: `check` verifies that).
            for (i, cursor) in self.cursors.iter().enumerate() {
                cursor.set(lo + count / SLOTS * i);
            }
        }
        // The region is published (so frees of its pages validate); now make its pages
        // allocatable. The bits are all set (unmanaged), unless a caller freed a page of the
        // region between its publication and now (a free of never-allocated memory): then
        // free what is left page by page.
        if self.bits().free_range(lo, count).is_err() {
            for page in lo..lo + count {
                let _ = self.bits().free(page);
            }
        }
        Ok(())
    }

    /// Adds the first region, as arceos' `init`.
    ///
    /// # Panics
    /// If [`add_memory`](Self::add_memory) fails (the region holds no page, overlaps, or does
    /// not fit the bitmap): "bitmap capacity exceeded" in the original.
    pub fn init(&self, start: usize, size: usize) {
        if let Err(error) = self.add_memory(start, size) {
            panic!("BitmapPageAllocator::init({start:#x}, {size:#x}): {error}");
        }
    }

    /// Allocates `num_pages` contiguous pages whose first address is a multiple of
    /// `align_pow2` bytes; returns that address. Which pages: see the type's "Placement"
    /// (one page at page alignment: next-fit from this CPU's cursor, or the lowest free page
    /// with `LOWEST_FREE`; anything else: the lowest free run that fits, under both).
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`, or `align_pow2` is not a power of two
    ///   or is smaller than `PAGE_SIZE`;
    /// - [`AllocError::NoMemory`]: no such run is free.
    ///
    /// # Time Complexity
    /// One page, page-aligned: one load and one CAS when the CPU's cursor word (next-fit) or
    /// the lowest word (lowest-free) has a free page, O(summary levels) otherwise. Up to a word of pages (64) with alignment up to 64
    /// pages: O(log num_pages) word operations per non-full word scanned (first fit). Longer
    /// runs: O(num_pages / BITS) per candidate.
    #[inline]
    pub fn alloc_pages(&self, num_pages: usize, align_pow2: usize) -> AllocResult<usize> {
        let align = align_in_pages(align_pow2, PAGE_SIZE)?;
        if num_pages == 0 {
            return Err(AllocError::InvalidParam);
        }
        // `base` is written once, before the first region's bits are freed. This load comes
        // before the claim, so it may still see `NO_BASE` while a racing first `add_memory`
        // frees pages the claim then takes: no region was seen, so report `NoMemory` (the
        // call is ordered before that `add_memory`) instead of computing from `NO_BASE`.
        let base = self.base.load(Ordering::Relaxed);
        if base == NO_BASE {
            return Err(AllocError::NoMemory);
        }
        let index = if num_pages == 1 && align == 1 {
            // `LOWEST_FREE` is a constant: each instantiation compiles one of the two calls.
            if LOWEST_FREE {
                self.bits().alloc_lowest()
            } else {
                self.bits().alloc_next_fit(self.cursors.current(), 0)
            }
        } else {
            // Bit `i` is address `(base + i) * PAGE_SIZE`: aligned when `i % align == -base`.
            let offset = base.wrapping_neg() & (align - 1);
            self.bits()
                .alloc_contiguous_offset(num_pages, align, offset, 0)
                .map_err(AllocError::from)?
        };
        let index = index.ok_or(AllocError::NoMemory)?;
        Ok((base + index) * PAGE_SIZE)
    }

    /// Allocates the `num_pages` pages starting exactly at `base`, which must be a multiple of
    /// `align_pow2`.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`; a bad alignment (as in
    ///   [`alloc_pages`](Self::alloc_pages)); `base` not a multiple of it; a page of the range
    ///   outside every region (the original underflows below its base);
    /// - [`AllocError::MemoryOverlap`]: a page of the range is allocated.
    ///
    /// # Time Complexity
    /// O(regions + num_pages / BITS).
    pub fn alloc_pages_at(
        &self,
        base: usize,
        num_pages: usize,
        align_pow2: usize,
    ) -> AllocResult<usize> {
        align_in_pages(align_pow2, PAGE_SIZE)?;
        if num_pages == 0 || base % align_pow2 != 0 {
            return Err(AllocError::InvalidParam);
        }
        let index = self.checked_range(base, num_pages)?;
        self.bits()
            .alloc_range(index, num_pages)
            .map_err(|error| match error {
                BitmapError::AlreadyAllocated => AllocError::MemoryOverlap,
                other => other.into(),
            })?;
        Ok(base)
    }

    /// The bit index of the page at `addr`, if `addr` is page-aligned and the `num_pages` pages
    /// from it all lie in regions.
    fn checked_range(&self, addr: usize, num_pages: usize) -> AllocResult<usize> {
        let first = page_number(addr, PAGE_SIZE)?;
        let end = first
            .checked_add(num_pages)
            .ok_or(AllocError::InvalidParam)?;
        if !self.regions.covers(first, end) {
            return Err(AllocError::InvalidParam);
        }
        // Covered by a region, so `base` is set and `first >= base`.
        Ok(first - self.base.load(Ordering::Relaxed))
    }

    /// Frees the `num_pages` pages at `pos` (allocated by one or more calls), reporting bad
    /// input.
    ///
    /// The bitmap keeps one bit per page and no allocation boundaries, so it frees *pages*:
    /// any range of allocated pages is accepted, whatever calls allocated it. It detects every
    /// range with a page that is free or unmanaged (below), but it cannot detect a range whose
    /// pages are all allocated yet are not one allocation:
    /// - a part of an allocation (3 pages allocated, the first 2 freed): `Ok`, exactly those
    ///   pages are freed, and the rest stays allocated until a later call frees it;
    /// - two or more neighbouring allocations freed as one range: `Ok`, all of them freed;
    /// - pages allocated by someone else: freed (the caller's bug, as with any allocator).
    ///
    /// Nothing is corrupted either way (every bit freed was set; counts stay exact).
    /// [`BuddyPageAllocator`](super::BuddyPageAllocator) refuses the first two.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`, `pos` not page-aligned, or a page of
    ///   the range outside every region (address 0 included: it is never managed);
    /// - [`AllocError::NotAllocated`]: a page of the range is free (a double free, memory
    ///   never allocated, a range running past an allocation).
    ///
    /// Nothing changes on error. (Two threads freeing the same range at once is a double free:
    /// each page is freed once and one of them gets `NotAllocated`.)
    ///
    /// # Time Complexity
    /// O(regions + num_pages / BITS).
    #[inline]
    pub fn try_dealloc_pages(&self, pos: usize, num_pages: usize) -> AllocResult {
        if num_pages == 0 {
            return Err(AllocError::InvalidParam);
        }
        let index = self.checked_range(pos, num_pages)?;
        let bits = self.bits();
        // One page: a single `fetch_and`, which changes nothing if the bit is already clear.
        let freed = if num_pages == 1 {
            bits.free(index)
        } else {
            bits.free_range(index, num_pages)
        };
        freed.map_err(AllocError::from)
    }

    /// Frees the `num_pages` pages at `pos`; bad input (see
    /// [`try_dealloc_pages`](Self::try_dealloc_pages)) is ignored and changes nothing.
    #[inline]
    pub fn dealloc_pages(&self, pos: usize, num_pages: usize) {
        let _ = self.try_dealloc_pages(pos, num_pages);
    }

    /// Whether the page at `addr` is allocated (`false` outside every region).
    pub fn is_allocated(&self, addr: usize) -> bool {
        self.checked_range(addr, 1)
            .is_ok_and(|index| self.bits().contains(index))
    }

    /// The number of pages in all regions.
    ///
    /// # Time Complexity
    /// O(regions).
    pub fn total_pages(&self) -> usize {
        self.regions.pages()
    }

    /// The number of allocated pages, counted in the bitmap (a popcount of the regions'
    /// words): exact when no call is running, a snapshot otherwise. There is no counter on the
    /// allocation path (it would be one more atomic read-modify-write per call), so this is
    /// the one O(pages) query.
    ///
    /// # Time Complexity
    /// O(total_pages / BITS + regions).
    pub fn used_pages(&self) -> usize {
        // `base` is read after `iter` has `Acquire`d the region count: a region seen implies
        // its (first region's) `base` store is seen.
        self.regions
            .iter()
            .map(|(s, e)| {
                let base = self.base.load(Ordering::Relaxed);
                self.bits().count_allocated_in(s - base, e - base)
            })
            .sum()
    }

    /// The number of free pages (`total_pages - used_pages`).
    pub fn available_pages(&self) -> usize {
        self.total_pages() - self.used_pages()
    }

    /// Checks the invariants (call it when no other thread uses the allocator; tests call it
    /// after every step):
    /// - the bitmap's summaries agree with its leaves;
    /// - every page of the window outside every region is marked allocated;
    /// - the placement's state: next-fit cursors lie inside the window
    ///   ([`CheckError::Cursor`] otherwise); lowest-free placement never moves them from 0.
    ///
    /// # Time Complexity
    /// O(WORDS).
    pub fn check(&self) -> Result<(), CheckError> {
        let bits = self.bits();
        bits.check().map_err(CheckError::Bitmap)?;
        for (slot, cursor) in self.cursors.iter().enumerate() {
            let position = cursor.get();
            let bad = if LOWEST_FREE {
                position != 0
            } else {
                position >= Self::CAPACITY
            };
            if bad {
                return Err(CheckError::Cursor { slot, position });
            }
        }
        let mut regions: arrayvec::ArrayVec<(usize, usize), { super::MAX_REGIONS }> = self
            .regions
            .iter()
            .map(|(s, e)| {
                // After `iter`'s `Acquire` of the count, as in `used_pages`.
                let base = self.base.load(Ordering::Relaxed);
                (s - base, e - base)
            })
            .collect();
        regions.sort_unstable();
        let mut pos = 0;
        for &(start, end) in regions
            .iter()
            .chain([(Self::CAPACITY, Self::CAPACITY)].iter())
        {
            if bits.count_allocated_in(pos, start) != start - pos {
                let page = (pos..start).find(|&i| !bits.contains(i)).unwrap_or(pos);
                return Err(CheckError::Unmanaged { page });
            }
            pos = end;
        }
        Ok(())
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B, const LOWEST_FREE: bool>
    BaseAllocator for BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B, LOWEST_FREE>
where
    B: Borrow<AtomicBitmap<WORDS, SUMMARY>>,
{
    /// See [`BitmapPageAllocator::init`] (panics if the region cannot be added).
    fn init(&mut self, start: usize, size: usize) {
        Self::init(self, start, size);
    }

    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        Self::add_memory(self, start, size)
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B, const LOWEST_FREE: bool>
    PageAllocator for BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B, LOWEST_FREE>
where
    B: Borrow<AtomicBitmap<WORDS, SUMMARY>>,
{
    const PAGE_SIZE: usize = PAGE_SIZE;

    fn alloc_pages(&mut self, num_pages: usize, align_pow2: usize) -> AllocResult<usize> {
        Self::alloc_pages(self, num_pages, align_pow2)
    }

    /// Frees; bad input changes nothing (use
    /// [`try_dealloc_pages`](BitmapPageAllocator::try_dealloc_pages) to see the error).
    fn dealloc_pages(&mut self, pos: usize, num_pages: usize) {
        Self::dealloc_pages(self, pos, num_pages);
    }

    fn alloc_pages_at(
        &mut self,
        base: usize,
        num_pages: usize,
        align_pow2: usize,
    ) -> AllocResult<usize> {
        Self::alloc_pages_at(self, base, num_pages, align_pow2)
    }

    fn total_pages(&self) -> usize {
        Self::total_pages(self)
    }

    fn used_pages(&self) -> usize {
        Self::used_pages(self)
    }

    fn available_pages(&self) -> usize {
        Self::available_pages(self)
    }
}

impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B, const LOWEST_FREE: bool>
    fmt::Debug for BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B, LOWEST_FREE>
where
    B: Borrow<AtomicBitmap<WORDS, SUMMARY>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitmapPageAllocator")
            .field("page_size", &PAGE_SIZE)
            .field("capacity_pages", &Self::CAPACITY)
            .field("total_pages", &self.total_pages())
            .field("used_pages", &self.used_pages())
            .finish()
    }
}
