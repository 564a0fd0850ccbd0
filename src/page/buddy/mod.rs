//! [`BuddyPageAllocator`]: the binary buddy system (Knowlton 1965; Knuth, TAOCP vol. 1,
//! 2.5) as Linux's page allocator implements it, with per-CPU page caches in front.
//!
//! The zone algorithm (free lists, split, merge, the window layout and the allocation links)
//! is single-threaded, in [`zone`]; this module makes it concurrent: the zone lock, the per-CPU
//! page caches, and the lock-free claim by which a free takes a block.
//!
//! # Page states and who may change them
//! | state | meaning | leaves it |
//! |---|---|---|
//! | `NONE` | not a block head (interior page, or outside every region) | the zone lock holder |
//! | `FREE \| k` | head of a free block in list `k` | the zone lock holder |
//! | `ALLOC \| links \| k` | head of a block the user owns | anyone, by CAS to `HELD` (a free) |
//! | `HELD \| k` | owned by the allocator in transit, or parked in a CPU cache | its owner |
//!
//! A free first wins the CAS `ALLOC | links | k -> HELD | k` (a double free loses it and gets
//! `NotAllocated`, nothing changed); from then on the block is the freeing thread's to park in
//! its CPU cache (one block of order `k <= PCP_MAX_ORDER`) or give to the zone. Blocks being
//! allocated are `HELD` until their final state is stored (under the zone lock), so no free
//! can claim a block half-way. `FREE` is
//! written and cleared only under the zone lock, so under that lock a `Relaxed` load of a
//! buddy's state is exact (docs/design/05-pages.md §"BuddyPageAllocator"). Page *contents* change hands through the zone
//! lock or a cache lock (`Acquire`/`Release`), never through the state word, so every state
//! access is `Relaxed`.
//!
//! # Locks
//! The zone [`SpinLock`] guards the free lists, counters and region table. Each CPU cache has
//! its own `SpinLock`, taken with `try_lock` only on every allocation, free and drain path (a
//! busy cache is skipped, never waited for: an interrupt handler may have interrupted its
//! holder); the order is always cache, then zone. Only `check` and the statistics
//! (`cached_pages`, `used_pages`, `available_pages`) wait for the caches: not for handlers.
//!
//! # Page 0
//! The page at address 0 is never managed: a region containing it starts at the next page
//! (`region_pages`), so no call returns address 0 and every address converts to a non-null
//! pointer (the heap's page source needs that).

mod zone;

#[cfg(feature = "alloc")]
use alloc::boxed::Box;
use arrayvec::ArrayVec;
use core::fmt;

use self::zone::{ALLOC, HELD, KIND, NIL, NONE, ORDER, ORDERS, Zone, alloc_state, mark_allocation};
use super::pcp::{
    DEFAULT_PCP_BATCH, DEFAULT_PCP_HIGH, PCP_CAPACITY, PCP_MAX_ORDER, PageCache, PcpSlot,
};
use super::{CheckError, align_in_pages, for_each_block, order_for, page_number, region_pages};
use crate::percpu::{self, PerCpu};
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::loom_const_fn;
use crate::traits::{AllocError, AllocResult, BaseAllocator, PageAllocator};
use crate::{SpinLock, SpinLockGuard};

/// The metadata of one page: free-list links (used under the zone lock) and its state.
///
/// All fields are atomics accessed `Relaxed`, so the array can be shared by the zone (under
/// its lock) and the lock-free free path (which only CASes the state) without `unsafe`; on
/// x86-64 and AArch64 these are plain loads and stores. 12 bytes per page (0.3 % of 4 KiB).
pub struct PageMeta {
    prev: AtomicU32,
    next: AtomicU32,
    state: AtomicU32,
}

impl PageMeta {
    loom_const_fn! {
        /// Metadata of a page the allocator does not manage yet.
        pub fn new() -> Self {
            Self {
                // All zeros, so a `static` metadata array lands in `.bss` (a 1 GiB window's
                // 3 MiB would otherwise be in the kernel image). The links are read only for
                // pages on a free list, and `push` writes both before linking a page.
                prev: AtomicU32::new(0),
                next: AtomicU32::new(0),
                state: AtomicU32::new(NONE),
            }
        }
    }

    #[inline(always)]
    fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_state(&self, state: u32) {
        self.state.store(state, Ordering::Relaxed);
    }

    /// The lock-free claim of a free: CAS the state `expected -> new`.
    #[inline(always)]
    fn claim_state(&self, expected: u32, new: u32) -> bool {
        self.state
            .compare_exchange(expected, new, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The previous block on the free list (under the zone lock).
    #[inline(always)]
    fn prev(&self) -> u32 {
        self.prev.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_prev(&self, prev: u32) {
        self.prev.store(prev, Ordering::Relaxed);
    }

    /// The next block on the free list (under the zone lock).
    #[inline(always)]
    fn next(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_next(&self, next: u32) {
        self.next.store(next, Ordering::Relaxed);
    }
}

impl Default for PageMeta {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PageMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageMeta({:#x})", self.state())
    }
}

/// Where the page metadata lives. Every variant holds its slice at the same place (`Missing`
/// an empty one), so [`pages`](Self::pages), on every allocation and free, reads it with no
/// branch on the variant.
enum Metadata {
    /// None yet (`new()` before `init`): always the empty slice.
    Missing(&'static [PageMeta]),
    /// Caller-provided.
    Static(&'static [PageMeta]),
    /// Allocated by `init` or `with_window`.
    #[cfg(feature = "alloc")]
    Owned(Box<[PageMeta]>),
}

impl Metadata {
    #[inline(always)]
    fn pages(&self) -> &[PageMeta] {
        match self {
            Metadata::Missing(meta) | Metadata::Static(meta) => meta,
            #[cfg(feature = "alloc")]
            Metadata::Owned(meta) => meta,
        }
    }
}

/// A buddy page allocator with per-CPU page caches.
///
/// - `PAGE_SIZE`: bytes per page (a power of two);
/// - `MAX_ORDER`: the largest block is `2^MAX_ORDER` pages (Linux: 10, 4 MiB of 4 KiB pages);
///   at most 31;
/// - `CPUS`: per-CPU cache slots (CPU ids are reduced modulo `CPUS`).
///
/// Metadata ([`PageMeta`], 12 bytes per page) lives outside the managed pages: pass a
/// `&'static [PageMeta]` to [`with_metadata`](Self::with_metadata) (`const`, so the
/// allocator can be a `static`), or, with the `alloc` feature, let [`init`](Self::init) or
/// [`with_window`](Self::with_window) allocate it. Nothing is ever written into the pages.
///
/// ```
/// use smpalloc::page::BuddyPageAllocator;
/// let mut pages = BuddyPageAllocator::<4096>::new();
/// pages.init(0x4000_0000, 16 << 20); // 16 MiB of fake physical memory: never touched
/// let a = pages.alloc_pages(1, 4096).unwrap(); // through this CPU's cache
/// let b = pages.alloc_pages(3, 16384).unwrap(); // 3 pages, 16 KiB aligned
/// assert_eq!(b % 16384, 0);
/// assert_eq!(pages.used_pages(), 4);
/// pages.try_dealloc_pages(b, 3).unwrap();
/// pages.try_dealloc_pages(a, 1).unwrap();
/// assert!(pages.try_dealloc_pages(a, 1).is_err()); // double free: refused, nothing changed
/// pages.drain_cpu_caches();
/// assert_eq!(pages.available_pages(), pages.total_pages());
/// ```
pub struct BuddyPageAllocator<
    const PAGE_SIZE: usize,
    const MAX_ORDER: usize = 10,
    const CPUS: usize = 16,
> {
    /// One entry per window page.
    meta: Metadata,
    /// The page number of window index 0 (a multiple of `2^MAX_ORDER`).
    base: usize,
    zone: SpinLock<Zone>,
    caches: PerCpu<PcpSlot, CPUS>,
    /// Per cached order `k`: a free into a stack holding `high >> k` blocks (at least 1) first
    /// returns a batch of `batch >> k` blocks (at least 1) to the zone, and a refill takes a
    /// batch (`watermarks`).
    marks: [Watermark; PCP_ORDERS],
}

/// Orders the caches hold (`0..=PCP_MAX_ORDER`).
const PCP_ORDERS: usize = PCP_MAX_ORDER + 1;

/// One cached order's watermarks, in blocks of that order.
#[derive(Clone, Copy)]
struct Watermark {
    /// A free into a stack holding this many blocks first returns a batch to the zone.
    high: usize,
    /// Blocks per refill or drain.
    batch: usize,
}

/// The per-order watermarks for `high` and `batch` pages (`1 <= batch <= high <=
/// PCP_CAPACITY`): order `k` gets `high >> k` and `batch >> k` blocks, at least 1 each, so
/// `batch_k <= high_k <= capacity(k)` (the stack of order `k` holds `PCP_CAPACITY >> k`, at
/// least 1).
const fn watermarks(high: usize, batch: usize) -> [Watermark; PCP_ORDERS] {
    let mut marks = [Watermark { high: 1, batch: 1 }; PCP_ORDERS];
    let mut order = 0;
    while order < PCP_ORDERS {
        if high >> order > 1 {
            marks[order].high = high >> order;
        }
        if batch >> order > 1 {
            marks[order].batch = batch >> order;
        }
        order += 1;
    }
    marks
}

#[cfg(not(loom))]
const fn caches<const CPUS: usize>() -> PerCpu<PcpSlot, CPUS> {
    PerCpu::new([const { PcpSlot::new() }; CPUS])
}

#[cfg(loom)]
fn caches<const CPUS: usize>() -> PerCpu<PcpSlot, CPUS> {
    PerCpu::from_fn(|_| PcpSlot::new())
}

impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize>
    BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    const VALID: () = {
        assert!(
            PAGE_SIZE.is_power_of_two(),
            "BuddyPageAllocator: PAGE_SIZE must be a power of two"
        );
        assert!(
            MAX_ORDER < ORDERS,
            "BuddyPageAllocator: MAX_ORDER must be at most 31"
        );
    };

    /// Pages in the largest block.
    const MAX_BLOCK: usize = 1 << MAX_ORDER;

    /// The largest order the CPU caches hold.
    const CACHED_MAX: usize = if PCP_MAX_ORDER < MAX_ORDER {
        PCP_MAX_ORDER
    } else {
        MAX_ORDER
    };

    loom_const_fn! {
        /// An allocator without metadata: [`init`](Self::init) allocates it (feature `alloc`).
        pub fn new() -> Self {
            let () = Self::VALID;
            Self {
                meta: Metadata::Missing(&[]),
                base: 0,
                zone: SpinLock::new(Zone::new()),
                caches: caches(),
                marks: watermarks(DEFAULT_PCP_HIGH, DEFAULT_PCP_BATCH),
            }
        }
    }

    loom_const_fn! {
        /// An allocator whose window starts at address `base` (a multiple of
        /// `PAGE_SIZE << MAX_ORDER`) and has one page per entry of `meta` (at most 2^32 - 1).
        /// Add regions inside the window with [`add_memory`](Self::add_memory). The entries must
        /// be fresh ([`PageMeta::new`]) and used by no other allocator.
        ///
        /// # Panics
        /// If `base` is misaligned or `meta` too long (at compile time in a `static`).
        pub fn with_metadata(base: usize, meta: &'static [PageMeta]) -> Self {
            let () = Self::VALID;
            assert!(
                base % (PAGE_SIZE << MAX_ORDER) == 0,
                "BuddyPageAllocator::with_metadata: base must be aligned to PAGE_SIZE << MAX_ORDER"
            );
            assert!(meta.len() < NIL as usize, "BuddyPageAllocator: window too large");
            Self {
                meta: Metadata::Static(meta),
                base: base / PAGE_SIZE,
                zone: SpinLock::new(Zone::new()),
                caches: caches(),
                marks: watermarks(DEFAULT_PCP_HIGH, DEFAULT_PCP_BATCH),
            }
        }
    }

    /// Sets the per-CPU cache watermarks, in pages: a free into a cache holding `high` single
    /// pages first returns `batch` of them to the zone, and an empty cache takes `batch` pages.
    /// For blocks of order `k` (up to [`PCP_MAX_ORDER`](super::PCP_MAX_ORDER)) the watermark
    /// and batch are `high >> k` and `batch >> k` blocks (at least 1 each), so each order
    /// parks at most `high` pages per CPU. `high` is clamped to `1..=PCP_CAPACITY` and `batch`
    /// to `1..=high`; `high = 1, batch = 1` makes the caches nearly pass-through.
    #[must_use]
    pub fn with_watermarks(mut self, high: usize, batch: usize) -> Self {
        let high = high.clamp(1, PCP_CAPACITY);
        self.marks = watermarks(high, batch.clamp(1, high));
        self
    }

    /// An allocator with metadata allocated for the window covering `[start, start + size)`
    /// (rounded out to maximal blocks), and no region yet: add regions inside it with
    /// [`add_memory`](Self::add_memory).
    ///
    /// # Panics
    /// If the window has more than 2^32 - 1 pages or overflows the address space.
    #[cfg(feature = "alloc")]
    pub fn with_window(start: usize, size: usize) -> Self {
        let mut this = Self::new();
        this.allocate_window(start, size);
        this
    }

    #[cfg(feature = "alloc")]
    fn allocate_window(&mut self, start: usize, size: usize) {
        let block = Self::MAX_BLOCK;
        let end = start
            .checked_add(size)
            .expect("BuddyPageAllocator: window overflows the address space");
        let first = start / PAGE_SIZE / block * block;
        let last = end.div_ceil(PAGE_SIZE).div_ceil(block) * block;
        let pages = last - first;
        assert!(pages < NIL as usize, "BuddyPageAllocator: window too large");
        self.meta = Metadata::Owned((0..pages).map(|_| PageMeta::new()).collect());
        self.base = first;
    }

    #[inline(always)]
    fn meta(&self) -> &[PageMeta] {
        self.meta.pages()
    }

    /// Blocks of `order` at which a free drains a batch first.
    #[inline(always)]
    fn high(&self, order: usize) -> usize {
        self.marks[order].high
    }

    /// Blocks of `order` per refill or drain.
    #[inline(always)]
    fn batch(&self, order: usize) -> usize {
        self.marks[order].batch
    }

    /// The window index of the page at `addr`, if page-aligned and inside the window with
    /// `count` pages after it.
    #[inline]
    fn index(&self, addr: usize, count: usize) -> AllocResult<usize> {
        let page = page_number(addr, PAGE_SIZE)?;
        let index = page
            .checked_sub(self.base)
            .ok_or(AllocError::InvalidParam)?;
        match index.checked_add(count) {
            Some(end) if end <= self.meta().len() => Ok(index),
            _ => Err(AllocError::InvalidParam),
        }
    }

    #[inline(always)]
    fn address(&self, index: usize) -> usize {
        (self.base + index) * PAGE_SIZE
    }

    /// Adds the region `[start, start + size)` (whole pages inside it; never the page at
    /// address 0, so no call returns address 0: a region starting there starts at the next
    /// page). It must lie in the metadata window.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: no whole page (page 0 alone counts as none), overflow,
    ///   or (part of) it outside the window (or no metadata at all);
    /// - [`AllocError::MemoryOverlap`]: it overlaps a region already added;
    /// - [`AllocError::NoMemory`]: [`MAX_REGIONS`](super::MAX_REGIONS) regions exist already.
    ///
    /// Nothing changes on error.
    ///
    /// # Time Complexity
    /// O(regions + (pages / 2^MAX_ORDER + MAX_ORDER) * MAX_ORDER) under the zone lock.
    pub fn add_memory(&self, start: usize, size: usize) -> AllocResult {
        let (first, last) = region_pages(start, size, PAGE_SIZE)?;
        let meta = self.meta();
        let mut zone = self.zone.lock();
        let base = self.base;
        if zone
            .regions
            .iter()
            .any(|&(s, e)| first < base + e && base + s < last)
        {
            return Err(AllocError::MemoryOverlap);
        }
        let index = self.index(first * PAGE_SIZE, last - first)?;
        let end = index + (last - first);
        zone.regions
            .try_push((index, end))
            .map_err(|_| AllocError::NoMemory)?;
        zone.total_pages += end - index;
        for_each_block(index, end, MAX_ORDER, |block, order| {
            zone.free_block(meta, block, order, MAX_ORDER);
        });
        Ok(())
    }

    /// Adds the first region, as arceos' `init`; with the `alloc` feature and no metadata
    /// yet, first allocates metadata for exactly this region's window (use
    /// [`with_window`](Self::with_window) to leave room for more regions).
    ///
    /// # Panics
    /// If the region cannot be added (see [`add_memory`](Self::add_memory)), or there is no
    /// metadata and no `alloc` feature.
    pub fn init(&mut self, start: usize, size: usize) {
        #[cfg(feature = "alloc")]
        if matches!(self.meta, Metadata::Missing(_)) {
            self.allocate_window(start, size);
        }
        if let Err(error) = self.add_memory(start, size) {
            panic!("BuddyPageAllocator::init({start:#x}, {size:#x}): {error}");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Allocation

    /// Allocates `num_pages` contiguous pages whose address is a multiple of `align_pow2`
    /// bytes; returns the address. A request that is exactly one block of at most
    /// 2^[`PCP_MAX_ORDER`](super::PCP_MAX_ORDER) pages (`num_pages` a power of two, at most 8,
    /// `align_pow2` at most `num_pages` pages) comes from this CPU's cache; anything else is a
    /// block of `2^order >= max(num_pages, align)` pages from the zone, whose unused tail goes
    /// straight back (so exactly `num_pages` pages are used; free them with the same count).
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`, or `align_pow2` not a power of two or
    ///   smaller than `PAGE_SIZE`;
    /// - [`AllocError::NoMemory`]: no block large enough is free (after draining the CPU
    ///   caches that are not busy: the drain never waits, so this is safe in an interrupt
    ///   handler; see [`drain_cpu_caches`](Self::drain_cpu_caches)), or the request exceeds a
    ///   maximal block.
    ///
    /// # Time Complexity
    /// One cached block: O(1) from the cache, O(batch * MAX_ORDER) on a refill. Otherwise
    /// O(MAX_ORDER) plus O(MAX_ORDER^2) to return the tail, under the zone lock.
    #[inline]
    pub fn alloc_pages(&self, num_pages: usize, align_pow2: usize) -> AllocResult<usize> {
        let align = align_in_pages(align_pow2, PAGE_SIZE)?;
        if num_pages == 0 {
            return Err(AllocError::InvalidParam);
        }
        if num_pages == 1 && align == 1 {
            return self.alloc_cached(0).map(|index| self.address(index));
        }
        // Exactly one block of a cached order: `num_pages = 2^k <= 2^CACHED_MAX` (a power of
        // two: `num_pages >= 1` has no bit in common with `num_pages - 1`), and the block's
        // natural alignment covers `align <= num_pages` (both powers of two).
        if num_pages <= 1 << Self::CACHED_MAX
            && num_pages & (num_pages - 1) == 0
            && align <= num_pages
        {
            // `num_pages >= 2` here (one page with `align == 1` went above, and with a larger
            // alignment it is no single block), so `order >= 1`: `max` tells the compiler, which
            // then drops the order-0 branches of the cache's bookkeeping.
            let order = (num_pages.trailing_zeros() as usize).max(1);
            return self.alloc_cached(order).map(|index| self.address(index));
        }
        if num_pages > Self::MAX_BLOCK || align > Self::MAX_BLOCK {
            return Err(AllocError::NoMemory);
        }
        let order = order_for(num_pages).max(align.trailing_zeros() as usize);
        let meta = self.meta();
        // Take the block and give back its unused tail under one lock hold, so no other
        // thread ever sees the tail pages outside both the free lists and an allocation.
        let attempt = || {
            let mut zone = self.zone.lock();
            if num_pages == 1 << order {
                return zone.alloc_block(meta, order, ALLOC);
            }
            // `HELD` (no free can claim it) until every block has its final state.
            let index = zone.alloc_block(meta, order, HELD)?;
            let end = index + num_pages;
            mark_allocation(meta, index, end, MAX_ORDER);
            for_each_block(end, index + (1 << order), MAX_ORDER, |block, k| {
                zone.free_block(meta, block, k, MAX_ORDER);
            });
            Some(index)
        };
        let index = match attempt() {
            Some(index) => index,
            None => {
                self.drain_cpu_caches();
                attempt().ok_or(AllocError::NoMemory)?
            }
        };
        Ok(self.address(index))
    }

    /// Allocates one block of `2^order` pages, naturally aligned; returns its address. The
    /// refill primitive for slab caches: orders up to [`PCP_MAX_ORDER`](super::PCP_MAX_ORDER)
    /// go through the CPU cache.
    ///
    /// # Errors
    /// [`AllocError::NoMemory`] if no block is free or `order > MAX_ORDER`.
    ///
    /// # Time Complexity
    /// As [`alloc_pages`](Self::alloc_pages).
    #[inline]
    pub fn alloc_order(&self, order: usize) -> AllocResult<usize> {
        if order > MAX_ORDER {
            return Err(AllocError::NoMemory);
        }
        let index = if order <= Self::CACHED_MAX {
            self.alloc_cached(order)?
        } else {
            self.alloc_block(order, ALLOC)?
        };
        Ok(self.address(index))
    }

    /// Frees a block from [`alloc_order`](Self::alloc_order).
    ///
    /// # Errors
    /// As [`try_dealloc_pages`](Self::try_dealloc_pages) with `2^order` pages
    /// (`InvalidParam` for `order > MAX_ORDER`).
    #[inline]
    pub fn free_order(&self, addr: usize, order: usize) -> AllocResult {
        if order > MAX_ORDER {
            return Err(AllocError::InvalidParam);
        }
        self.try_dealloc_pages(addr, 1 << order)
    }

    /// A block of `order` from the zone with head state `state | order`, draining the CPU
    /// caches once if the zone has none.
    fn alloc_block(&self, order: usize, state: u32) -> AllocResult<usize> {
        let meta = self.meta();
        if let Some(index) = self.zone.lock().alloc_block(meta, order, state) {
            return Ok(index);
        }
        self.drain_cpu_caches();
        self.zone
            .lock()
            .alloc_block(meta, order, state)
            .ok_or(AllocError::NoMemory)
    }

    /// One block of `order <= CACHED_MAX`: pop this CPU's cache (refilling its stack with a
    /// batch from the zone when empty); when the cache is busy (another thread on this slot,
    /// or, pinned, an interrupted section on this CPU), straight from the zone.
    #[inline(always)]
    fn alloc_cached(&self, order: usize) -> AllocResult<usize> {
        let meta = self.meta();
        let Ok((slot, mut cache)) = self.caches.lock_local(|slot| &slot.cache) else {
            return self.alloc_block(order, ALLOC);
        };
        let index = match cache.pop(order) {
            Some(index) => index,
            None => match self.refill(&mut cache, order) {
                Some(index) => index,
                None => {
                    // The zone has no such block; other CPUs may hold parked blocks.
                    drop(cache);
                    return self.alloc_block(order, ALLOC);
                }
            },
        };
        slot.publish(&cache, order);
        drop(cache);
        // The block is ours (HELD, taken from our locked cache): hand it to the user.
        meta[index].set_state(ALLOC | order as u32);
        Ok(index)
    }

    /// Moves a batch of blocks of `order` from the zone into the (held, empty) stack of
    /// `order` in one zone lock hold, and takes one of them; `None` if the zone has none.
    #[inline(never)]
    fn refill(&self, cache: &mut PageCache, order: usize) -> Option<usize> {
        let meta = self.meta();
        let mut zone = self.zone.lock();
        for _ in 0..self.batch(order) {
            let Some(index) = zone.alloc_block(meta, order, HELD) else {
                break;
            };
            // The stack is empty and `batch <= high <= capacity`: the push fits (were it full,
            // the block would go back rather than be lost).
            if !cache.push(order, index) {
                zone.free_block(meta, index, order, MAX_ORDER);
                break;
            }
        }
        drop(zone);
        cache.pop(order)
    }

    /// Allocates the `num_pages` pages starting exactly at `base` (a multiple of
    /// `align_pow2`).
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`, a bad alignment, `base` not a multiple
    ///   of it, or a page of the range outside every region;
    /// - [`AllocError::MemoryOverlap`]: a page of the range is not free (after draining the
    ///   CPU caches).
    ///
    /// # Time Complexity
    /// O(log num_pages * MAX_ORDER^2) under the zone lock.
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
        let index = self.index(base, num_pages)?;
        let end = index + num_pages;
        if !self.zone.lock().covers(index, end) {
            return Err(AllocError::InvalidParam);
        }
        if self.carve_range(index, end) || {
            self.drain_cpu_caches();
            self.carve_range(index, end)
        } {
            Ok(base)
        } else {
            Err(AllocError::MemoryOverlap)
        }
    }

    /// Carves every canonical block of `[start, end)` out of the free lists, or none.
    fn carve_range(&self, start: usize, end: usize) -> bool {
        let meta = self.meta();
        let mut zone = self.zone.lock();
        let mut carved_to = start;
        let mut failed = false;
        for_each_block(start, end, MAX_ORDER, |block, order| {
            if !failed && zone.carve(meta, block, order, MAX_ORDER) {
                carved_to = block + (1 << order);
            } else {
                failed = true;
            }
        });
        if failed {
            for_each_block(start, carved_to, MAX_ORDER, |block, order| {
                zone.free_block(meta, block, order, MAX_ORDER);
            });
        } else {
            mark_allocation(meta, start, end, MAX_ORDER);
        }
        !failed
    }

    // ---------------------------------------------------------------------------------------
    // Freeing

    /// Frees the `num_pages` pages at `pos`, which must be exactly one allocation (the same
    /// address and count it was made with), reporting bad input.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`]: `num_pages == 0`, `pos` not page-aligned, or a page of
    ///   the range outside every region;
    /// - [`AllocError::NotAllocated`]: the range is not exactly one allocation: a double free,
    ///   memory never allocated, a part of an allocation (3 pages allocated, 2 freed), two or
    ///   more neighbouring allocations at once, a range running past an allocation. Each
    ///   allocation's blocks carry links that only a free of its exact range matches.
    ///
    /// Nothing changes on error, also when two threads race to free the same pages (one wins).
    ///
    /// # Time Complexity
    /// One block of at most 2^[`PCP_MAX_ORDER`](super::PCP_MAX_ORDER) pages (a power of two
    /// at an address aligned to it): a CAS and a push onto this CPU's cache (a batch drain to
    /// the zone when the cache's stack of that order is at its high watermark). Otherwise
    /// O(log num_pages * MAX_ORDER) under the zone lock.
    #[inline]
    pub fn try_dealloc_pages(&self, pos: usize, num_pages: usize) -> AllocResult {
        if num_pages == 0 {
            return Err(AllocError::InvalidParam);
        }
        let index = self.index(pos, num_pages)?;
        let end = index + num_pages;
        if num_pages == 1 {
            if self.claim(index, 0) {
                self.free_cached(index, 0);
                return Ok(());
            }
            return Err(self.free_error(index, end));
        }
        // One naturally aligned block of a cached order: its canonical decomposition is that
        // block alone, whose expected state (invariant L) is `ALLOC | order`, no links.
        // (`num_pages >= 1`: a power of two has no bit in common with `num_pages - 1`, and an
        // index aligned to it neither.)
        if num_pages <= 1 << Self::CACHED_MAX && (num_pages | index) & (num_pages - 1) == 0 {
            // `num_pages >= 2` here (one page went above): `order >= 1`, as in `alloc_pages`.
            let order = (num_pages.trailing_zeros() as usize).max(1);
            if self.claim(index, order) {
                self.free_cached(index, order);
                return Ok(());
            }
            return Err(self.free_error(index, end));
        }
        self.free_range(index, end)
    }

    /// Frees the allocation `[index, end)` of more than one page.
    #[inline(always)]
    fn free_range(&self, index: usize, end: usize) -> AllocResult {
        let meta = self.meta();
        // Claim every block (ALLOC with the links of exactly this range -> HELD), or none.
        let mut claimed_to = index;
        let mut failed = false;
        for_each_block(index, end, MAX_ORDER, |block, order| {
            if !failed && self.claim_state(block, order, alloc_state(block, order, index, end)) {
                claimed_to = block + (1 << order);
            } else {
                failed = true;
            }
        });
        if failed {
            for_each_block(index, claimed_to, MAX_ORDER, |block, order| {
                meta[block].set_state(alloc_state(block, order, index, end));
            });
            return Err(self.free_error(index, end));
        }
        let mut zone = self.zone.lock();
        for_each_block(index, end, MAX_ORDER, |block, order| {
            zone.free_block(meta, block, order, MAX_ORDER);
        });
        Ok(())
    }

    /// The right to free the one-block allocation `index` of `order`: CAS
    /// `ALLOC | order -> HELD | order` (no links: a block of a longer allocation fails).
    #[inline(always)]
    fn claim(&self, index: usize, order: usize) -> bool {
        self.claim_state(index, order, ALLOC | order as u32)
    }

    /// The right to free block `index` of `order` whose state must be exactly `expected`
    /// (an `ALLOC` state): CAS `expected -> HELD | order`.
    #[inline(always)]
    fn claim_state(&self, index: usize, order: usize, expected: u32) -> bool {
        self.meta()[index].claim_state(expected, HELD | order as u32)
    }

    /// Why freeing `[start, end)` failed.
    #[cold]
    fn free_error(&self, start: usize, end: usize) -> AllocError {
        if self.zone.lock().covers(start, end) {
            AllocError::NotAllocated
        } else {
            AllocError::InvalidParam
        }
    }

    /// Parks a claimed (`HELD | order`) block of `order <= CACHED_MAX` in this CPU's cache,
    /// draining a batch of that order to the zone when its stack is at the high watermark;
    /// straight to the zone when the cache is busy.
    #[inline(always)]
    fn free_cached(&self, index: usize, order: usize) {
        let meta = self.meta();
        let Ok((slot, mut cache)) = self.caches.lock_local(|slot| &slot.cache) else {
            self.zone.lock().free_block(meta, index, order, MAX_ORDER);
            return;
        };
        if cache.len(order) >= self.high(order) {
            self.drain_batch(&mut cache, order);
        }
        // Below the watermark now, and `high <= capacity`: the push fits (were it full, the
        // block would go to the zone rather than be lost).
        if !cache.push(order, index) {
            self.zone.lock().free_block(meta, index, order, MAX_ORDER);
        }
        slot.publish(&cache, order);
    }

    /// Returns the `batch` oldest (coldest: the bottom of the stack) blocks of `order` of a
    /// held cache to the zone in one zone lock hold.
    #[inline(never)]
    fn drain_batch(&self, cache: &mut PageCache, order: usize) {
        let meta = self.meta();
        let mut zone = self.zone.lock();
        cache.drain_oldest(order, self.batch(order), |block| {
            zone.free_block(meta, block, order, MAX_ORDER);
        });
    }

    /// Frees; bad input changes nothing (use [`try_dealloc_pages`](Self::try_dealloc_pages)
    /// to see the error).
    #[inline]
    pub fn dealloc_pages(&self, pos: usize, num_pages: usize) {
        let _ = self.try_dealloc_pages(pos, num_pages);
    }

    /// Returns the pages parked in the CPU caches to the zone (for a CPU going offline, memory
    /// pressure, or before reading exact free-block statistics). Returns `true` when every
    /// cache was drained, `false` when some cache was busy and skipped.
    ///
    /// With pin hooks (`percpu::set_pin_hooks`) a cache is its CPU's alone: this drains the
    /// calling CPU's cache (skipped when busy: called from a handler that interrupted it) and
    /// returns `true` when, after that, every cache's published size is 0. To return every
    /// cache, run it on each CPU (as Linux's `drain_all_pages` does; docs/design/02-percpu.md §"The CPU-local section (pinned mode)").
    ///
    /// Never waits for a cache: one whose lock is taken at this instant (an allocation or free
    /// on its CPU in progress, or the code an interrupt handler interrupted) keeps its pages,
    /// which stay free and reachable (its holder uses them; a later drain returns them). So
    /// this is safe in an interrupt handler, like the allocation paths that call it before
    /// reporting `NoMemory` (docs/design/01-sync-and-lock.md §"SpinLock" and docs/design/05-pages.md §"Per-CPU page caches"). With no call running, it drains every
    /// cache and returns `true`.
    ///
    /// # Time Complexity
    /// O(CPUS + parked pages * MAX_ORDER).
    pub fn drain_cpu_caches(&self) -> bool {
        if percpu::pinned_mode() {
            let Ok((slot, mut cache)) = self.caches.lock_local(|slot| &slot.cache) else {
                return false;
            };
            self.drain_cache(slot, &mut cache);
            drop(cache);
            return self.caches.iter().all(|slot| slot.parked() == 0);
        }
        let mut complete = true;
        for slot in self.caches.iter() {
            // `try_lock`, masking interrupts while this CPU holds the cache.
            let Some(mut cache) = slot.cache.try_lock() else {
                complete = false;
                continue;
            };
            self.drain_cache(slot, &mut cache);
        }
        complete
    }

    /// Returns every block of a held cache to the zone.
    fn drain_cache(&self, slot: &PcpSlot, cache: &mut PageCache) {
        if cache.pages() == 0 {
            return;
        }
        let meta = self.meta();
        let mut zone = self.zone.lock();
        cache.drain_all(|block, order| zone.free_block(meta, block, order, MAX_ORDER));
        slot.publish_all(cache);
    }

    // ---------------------------------------------------------------------------------------
    // Queries

    /// The number of pages in all regions.
    pub fn total_pages(&self) -> usize {
        self.zone.lock().total_pages
    }

    /// Pages parked in the CPU caches (free, but not in the zone). Waits for each cache's
    /// lock, like the other statistics and `check`: not for interrupt handlers. With pin hooks:
    /// the sum of the caches' published sizes (waits for nothing).
    pub fn cached_pages(&self) -> usize {
        if percpu::pinned_mode() {
            return self.caches.iter().map(PcpSlot::parked).sum();
        }
        self.caches
            .iter()
            .map(|slot| slot.cache.lock().pages())
            .sum()
    }

    /// The number of free pages, parked pages included: exact when no call is running.
    pub fn available_pages(&self) -> usize {
        // Caches first (lock order: cache, then zone); a page moving between them meanwhile
        // makes this a snapshot, as documented.
        let parked = self.cached_pages();
        parked + self.zone.lock().free_pages
    }

    /// The number of allocated pages: exact when no call is running.
    pub fn used_pages(&self) -> usize {
        let parked = self.cached_pages();
        let zone = self.zone.lock();
        zone.total_pages.saturating_sub(zone.free_pages + parked)
    }

    /// Free blocks per order in the zone (parked pages not included), for diagnostics.
    pub fn free_blocks(&self) -> [usize; ORDERS] {
        self.zone.lock().blocks
    }

    /// Whether the page at `addr` is allocated to a user (the head of an allocated block, or a
    /// page inside one).
    pub fn is_allocated(&self, addr: usize) -> bool {
        let Ok(index) = self.index(addr, 1) else {
            return false;
        };
        let meta = self.meta();
        (0..=MAX_ORDER).any(|order| {
            let head = index & !((1 << order) - 1);
            meta[head].state() & (KIND | ORDER) == ALLOC | order as u32
        })
    }

    /// Checks every invariant (call it when no other thread uses the allocator; tests call it
    /// after every step). Locks every cache, then the zone.
    /// - free lists: links consistent both ways, each block's head `FREE | k`, aligned to
    ///   `2^k`, inside the window and inside regions; no two free buddies left unmerged;
    /// - every page of every region is covered by exactly one free block, allocated block or
    ///   parked block; interior pages of blocks and pages outside regions are `NONE`;
    /// - cached blocks are `HELD | k` (`k` their stack's order) and appear once; counters
    ///   equal what they count.
    ///
    /// # Time Complexity
    /// O(window pages * regions + parked pages^2).
    pub fn check(&self) -> Result<(), CheckError> {
        let pinned = percpu::pinned_mode();
        // Pinned: the calling CPU's cache only (the others are their CPUs' alone; their pages
        // are counted through the published sizes below). Otherwise every cache.
        let mut own: Option<&PcpSlot> = None;
        let guards: ArrayVec<SpinLockGuard<'_, PageCache>, CPUS> = if pinned {
            let held = self.caches.lock_local(|slot| &slot.cache).ok();
            own = held.as_ref().map(|&(slot, _)| slot);
            held.map(|(_, guard)| guard).into_iter().collect()
        } else {
            self.caches.iter().map(|slot| slot.cache.lock()).collect()
        };
        let zone = self.zone.lock();
        let meta = self.meta();
        let held = zone.check(meta, MAX_ORDER)?;
        // One shared borrow per guard, reused below (each `Deref` of a guard makes a fresh
        // borrow of the cell; two of them alive at once would alias).
        let caches: ArrayVec<&PageCache, CPUS> = guards.iter().map(|guard| &**guard).collect();
        let mut parked: usize = caches.iter().map(|cache| cache.pages()).sum();
        if pinned {
            // The held cache's published size is exact; the others' are as last published
            // (exact when no call is running, as `check` requires).
            if let Some(slot) = own {
                if slot.parked() != parked {
                    return Err(CheckError::Count {
                        what: "a cache's published size",
                        counted: slot.parked(),
                        actual: parked,
                    });
                }
            }
            parked = self.caches.iter().map(PcpSlot::parked).sum();
        }
        if parked != held {
            return Err(CheckError::Count {
                what: "parked pages",
                counted: parked,
                actual: held,
            });
        }
        // Invariant C: each entry is a `HELD` head of its stack's order, once. (The zone's walk
        // has counted every `HELD | k` head as `2^k` parked pages with `NONE` interior pages,
        // and the totals are equal, so the entries cover exactly the parked blocks.)
        let all = caches.iter().flat_map(|cache| cache.blocks());
        for (i, (page, order)) in all.clone().enumerate() {
            let state = meta.get(page).map_or(NIL, PageMeta::state);
            if state != HELD | order as u32
                || all.clone().skip(i + 1).any(|(other, _)| other == page)
            {
                return Err(CheckError::PageState { page, state });
            }
        }
        let regions: usize = zone.regions.iter().map(|&(s, e)| e - s).sum();
        if regions != zone.total_pages {
            return Err(CheckError::Count {
                what: "total pages",
                counted: zone.total_pages,
                actual: regions,
            });
        }
        Ok(())
    }
}

impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> Default
    for BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> BaseAllocator
    for BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    /// See [`BuddyPageAllocator::init`] (panics if the region cannot be added).
    fn init(&mut self, start: usize, size: usize) {
        Self::init(self, start, size);
    }

    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        Self::add_memory(self, start, size)
    }
}

impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> PageAllocator
    for BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    const PAGE_SIZE: usize = PAGE_SIZE;

    fn alloc_pages(&mut self, num_pages: usize, align_pow2: usize) -> AllocResult<usize> {
        Self::alloc_pages(self, num_pages, align_pow2)
    }

    /// Frees; bad input changes nothing (use
    /// [`try_dealloc_pages`](BuddyPageAllocator::try_dealloc_pages) to see the error).
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

impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> fmt::Debug
    for BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyPageAllocator")
            .field("page_size", &PAGE_SIZE)
            .field("max_order", &MAX_ORDER)
            .field("window_pages", &self.meta().len())
            .field("total_pages", &self.total_pages())
            .field("used_pages", &self.used_pages())
            .finish()
    }
}
