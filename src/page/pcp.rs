//! Per-CPU page caches (Linux's per-CPU page lists, `pcp`): small stacks of blocks of orders
//! `0..=PCP_MAX_ORDER` per CPU in front of the buddy zone, so the common small allocation and
//! free (one page, or a naturally aligned block of up to 8 pages) touch only the CPU's own cache
//! line.
//!
//! Each cache sits behind its own [`SpinLock`](crate::SpinLock) in a
//! [`PerCpu`](crate::percpu::PerCpu) slot and is taken with `try_lock`: the CPU id is only a
//! hint (a thread may migrate between reading it and using the slot, or two CPUs may share a
//! slot when there are more CPUs than slots), so the lock, not the id, gives exclusion. When
//! the slot is busy the caller goes straight to the zone, so nobody ever waits on a cache.
//!
//! - Allocation pops the stack of its order; an empty stack is refilled with `batch >> k` blocks
//!   (at least 1) under one zone lock hold.
//! - Free pushes; a stack holding `high >> k` blocks (at least 1) first returns `batch >> k`
//!   blocks to the zone under one zone lock hold.
//! - `drain_cpu_caches` returns the parked pages (a CPU going offline, or memory pressure, and
//!   every allocation before it reports `NoMemory`); it too only `try_lock`s, skipping a busy
//!   cache, so no allocation or free path ever waits for a cache (an interrupt handler may
//!   have interrupted its holder on this CPU).
//!
//! With pin hooks (`percpu::set_pin_hooks`), each cache is its CPU's CPU-local section
//! (docs/design/02-percpu.md §"The CPU-local section (pinned mode)"): entered with a plain busy flag, never touched by another CPU. A drain then
//! returns the calling CPU's cache only, and the statistics and `check` read the other caches'
//! sizes from `parked`, which every change of a cache republishes (a plain store).
//!
//! Blocks parked in a cache have their head in state `HELD | k` in the page metadata: not free
//! in the zone (never merged), not the user's (a double free of a parked block fails its CAS;
//! docs/design/05-pages.md §"Per-CPU page caches", invariant C).

use crate::SpinLock;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::loom_const_fn;
use crate::sync::model::SIZES;

/// Pages a cache can hold in its order-0 stack (the stack of order `k` holds
/// `PCP_CAPACITY >> k` blocks, at least 1).
pub const PCP_CAPACITY: usize = SIZES.pcp_capacity;
/// Default high watermark: a free into a cache holding this many pages drains a batch first
/// (order `k`: `DEFAULT_PCP_HIGH >> k` blocks, at least 1).
pub const DEFAULT_PCP_HIGH: usize = SIZES.pcp_high;
/// Default batch: pages moved between a cache and the zone at once (order `k`:
/// `DEFAULT_PCP_BATCH >> k` blocks, at least 1).
pub const DEFAULT_PCP_BATCH: usize = SIZES.pcp_batch;
/// The largest order the caches hold (Linux's `PAGE_ALLOC_COSTLY_ORDER`): blocks of up to 8
/// pages; larger ones always go to the zone.
pub const PCP_MAX_ORDER: usize = 3;

/// Stacks per cache (orders `0..=PCP_MAX_ORDER`).
const ORDERS: usize = PCP_MAX_ORDER + 1;

/// Blocks the stack of `order` holds at most.
pub(super) const fn capacity(order: usize) -> usize {
    let capacity = PCP_CAPACITY >> order;
    if capacity == 0 { 1 } else { capacity }
}

/// Where each order's stack starts in [`PageCache::slots`]; `OFFSETS[ORDERS]` is the total.
const OFFSETS: [usize; ORDERS + 1] = {
    let mut offsets = [0; ORDERS + 1];
    let mut order = 0;
    while order < ORDERS {
        offsets[order + 1] = offsets[order] + capacity(order);
        order += 1;
    }
    offsets
};

/// Slots of all stacks together.
const SLOTS: usize = OFFSETS[ORDERS];

/// One CPU's parked blocks (window indices of their heads): one LIFO stack per order (the most
/// recently freed block is the most likely to be cache-hot), bottom (oldest) first.
#[derive(Debug)]
pub(super) struct PageCache {
    /// The stacks, order `k` in `OFFSETS[k]..OFFSETS[k] + capacity(k)`; its first `len[k]`
    /// entries are parked.
    slots: [u32; SLOTS],
    /// Blocks parked per order.
    len: [usize; ORDERS],
    /// Pages parked in blocks of orders above 0 (`sum len[k] << k` for `k >= 1`): kept apart
    /// so the single-page paths (order 0, a constant there) update nothing but `len[0]`.
    upper_pages: usize,
}

impl Default for PageCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PageCache {
    pub(super) const fn new() -> Self {
        Self {
            slots: [0; SLOTS],
            len: [0; ORDERS],
            upper_pages: 0,
        }
    }

    /// Pages parked, all orders together.
    #[inline(always)]
    pub(super) fn pages(&self) -> usize {
        self.len[0] + self.upper_pages
    }

    /// Blocks of `order` parked (`order <= PCP_MAX_ORDER`).
    #[inline(always)]
    pub(super) fn len(&self, order: usize) -> usize {
        self.len[order]
    }

    /// Takes the most recently parked block of `order`.
    #[inline(always)]
    pub(super) fn pop(&mut self, order: usize) -> Option<usize> {
        let len = self.len[order].checked_sub(1)?;
        self.len[order] = len;
        if order > 0 {
            self.upper_pages -= 1 << order;
        }
        Some(self.slots[OFFSETS[order] + len] as usize)
    }

    /// Parks block `index` of `order`; `false` (nothing changed) when its stack is full.
    #[inline(always)]
    pub(super) fn push(&mut self, order: usize, index: usize) -> bool {
        let len = self.len[order];
        if len >= capacity(order) {
            return false;
        }
        // Window indices are below `NIL = u32::MAX` (the window's size limit).
        self.slots[OFFSETS[order] + len] = index as u32;
        self.len[order] = len + 1;
        if order > 0 {
            self.upper_pages += 1 << order;
        }
        true
    }

    /// Removes the `count` oldest blocks of `order` (at most all of them), handing each to
    /// `f`.
    pub(super) fn drain_oldest(&mut self, order: usize, count: usize, mut f: impl FnMut(usize)) {
        let len = self.len[order];
        let count = count.min(len);
        let stack = &mut self.slots[OFFSETS[order]..OFFSETS[order] + len];
        for &index in &stack[..count] {
            f(index as usize);
        }
        stack.copy_within(count.., 0);
        self.len[order] = len - count;
        if order > 0 {
            self.upper_pages -= count << order;
        }
    }

    /// Removes every block, handing each to `f(index, order)`.
    pub(super) fn drain_all(&mut self, mut f: impl FnMut(usize, usize)) {
        for order in 0..ORDERS {
            self.drain_oldest(order, usize::MAX, |index| f(index, order));
        }
    }

    /// Every parked block, `(index, order)`.
    pub(super) fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + Clone + '_ {
        (0..ORDERS).flat_map(move |order| {
            let stack = &self.slots[OFFSETS[order]..OFFSETS[order] + self.len[order]];
            stack.iter().map(move |&index| (index as usize, order))
        })
    }
}

/// One CPU's slot: its cache, and the cache's size published for other CPUs.
pub(super) struct PcpSlot {
    pub(super) cache: SpinLock<PageCache>,
    /// The cache's single pages (order 0) as of their last change, written by whoever holds
    /// the cache with a `Relaxed` store (no read-modify-write); read by statistics and `check`
    /// in pinned mode.
    parked: AtomicUsize,
    /// The same for the pages in blocks of orders above 0. Two words, so a change of one order
    /// stores one count the holder already has in a register (the single-page paths store
    /// `len[0]`, as before the caches held blocks).
    parked_upper: AtomicUsize,
}

impl PcpSlot {
    loom_const_fn! {
        pub(super) fn new() -> Self {
            Self {
                cache: SpinLock::new(PageCache::new()),
                parked: AtomicUsize::new(0),
                parked_upper: AtomicUsize::new(0),
            }
        }
    }

    /// Republishes `cache`'s size after a change of its stack of `order` only (the caller
    /// holds this slot's cache).
    #[inline(always)]
    pub(super) fn publish(&self, cache: &PageCache, order: usize) {
        if order == 0 {
            self.parked.store(cache.len[0], Ordering::Relaxed);
        } else {
            self.parked_upper
                .store(cache.upper_pages, Ordering::Relaxed);
        }
    }

    /// Republishes `cache`'s size after a change of any of its stacks (the caller holds this
    /// slot's cache).
    pub(super) fn publish_all(&self, cache: &PageCache) {
        self.publish(cache, 0);
        self.publish(cache, 1);
    }

    /// The published size (pages).
    pub(super) fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed) + self.parked_upper.load(Ordering::Relaxed)
    }
}
