//! Per-CPU page caches (Linux's per-CPU page lists, `pcp`): a small stack of single pages per
//! CPU in front of the buddy zone, so the common one-page allocation and free touch only the
//! CPU's own cache line.
//!
//! Each cache sits behind its own [`SpinLock`](crate::SpinLock) in a
//! [`PerCpu`](crate::percpu::PerCpu) slot and is taken with `try_lock`: the CPU id is only a
//! hint (a thread may migrate between reading it and using the slot, or two CPUs may share a
//! slot when there are more CPUs than slots), so the lock, not the id, gives exclusion. When
//! the slot is busy the caller goes straight to the zone, so nobody ever waits on a cache.
//!
//! - Allocation pops; an empty cache is refilled with `batch` pages under one zone lock hold.
//! - Free pushes; a cache at `high` pages first returns `batch` pages to the zone under one
//!   zone lock hold.
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
//! Pages parked in a cache are in state `HELD` in the page metadata: not free in the zone
//! (never merged), not the user's (a double free of a parked page fails its CAS).

use arrayvec::ArrayVec;

use crate::SpinLock;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::loom_const_fn;
use crate::sync::model::SIZES;

/// Pages a cache can hold (its array's size).
pub const PCP_CAPACITY: usize = SIZES.pcp_capacity;
/// Default high watermark: a free into a cache holding this many pages drains a batch first.
pub const DEFAULT_PCP_HIGH: usize = SIZES.pcp_high;
/// Default batch: pages moved between a cache and the zone at once.
pub const DEFAULT_PCP_BATCH: usize = SIZES.pcp_batch;

/// One CPU's parked single pages (window page indices), a LIFO stack (the most recently
/// freed page is the most likely to be cache-hot).
#[derive(Debug, Default)]
pub(super) struct PageCache {
    pub(super) pages: ArrayVec<usize, PCP_CAPACITY>,
}

impl PageCache {
    pub(super) const fn new() -> Self {
        Self {
            pages: ArrayVec::new_const(),
        }
    }
}

/// One CPU's slot: its cache, and the cache's size published for other CPUs.
pub(super) struct PcpSlot {
    pub(super) cache: SpinLock<PageCache>,
    /// The cache's page count as of its last change, written by whoever holds the cache with
    /// a `Relaxed` store (no read-modify-write); read by statistics and `check` in pinned mode.
    parked: AtomicUsize,
}

impl PcpSlot {
    loom_const_fn! {
        pub(super) fn new() -> Self {
            Self { cache: SpinLock::new(PageCache::new()), parked: AtomicUsize::new(0) }
        }
    }

    /// Republishes `cache`'s size (the caller holds this slot's cache).
    #[inline(always)]
    pub(super) fn publish(&self, cache: &PageCache) {
        self.parked.store(cache.pages.len(), Ordering::Relaxed);
    }

    /// The published size.
    pub(super) fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}
