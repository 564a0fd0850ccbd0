//! The heap's statistics (per class, per CPU, whole) and its check errors. Counters are plain
//! `Relaxed` loads and stores by each counter's only writer (a cache's user, a class lock's
//! holder), read by anyone: exact when the heap is quiescent, a recent value otherwise.

use core::fmt;
use core::ptr::NonNull;

use arrayvec::ArrayVec;

use crate::byte::slab::cache;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::model::SIZES;

/// A violated invariant found by [`SmpHeap::check`](super::SmpHeap::check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// A class's slabs are inconsistent.
    Slab {
        /// The class.
        class: usize,
        /// What is wrong.
        error: cache::CheckError,
    },
    /// A magazine (CPU or depot) holds a pointer that is not an in-use object of its class,
    /// or one object twice, or a depot magazine is not full, or a previous magazine is neither
    /// full nor empty.
    Magazine {
        /// The class.
        class: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The TLSF arenas are inconsistent.
    Tlsf(crate::byte::tlsf::CheckError),
    /// The page map disagrees with the slabs or the huge and direct blocks (docs/design/08-heap.md §"Frees without a layout: the page map").
    PageMap(&'static str),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Slab { class, error } => write!(f, "class {class}: {error}"),
            CheckError::Magazine { class, what } => write!(f, "class {class}: {what}"),
            CheckError::Tlsf(e) => write!(f, "tlsf: {e:?}"),
            CheckError::PageMap(what) => write!(f, "page map: {what}"),
        }
    }
}

impl core::error::Error for CheckError {}

/// Statistics of one size class, read without stopping the heap (each field is exact when the
/// heap is quiescent, a recent value otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class.
    pub size: usize,
    /// Objects allocated by callers and not freed (allocations minus frees over all CPUs).
    pub allocated: usize,
    /// Slabs held from the page source.
    pub slabs: usize,
    /// Of those, slabs with no object in use (kept as hysteresis).
    pub empty_slabs: usize,
    /// Objects handed out of the slabs (to callers or into magazines).
    pub slab_inuse: usize,
    /// Objects in CPU magazines.
    pub magazine_objects: usize,
    /// Objects in the depot's full magazines.
    pub depot_objects: usize,
    /// Bytes parked: magazine and depot objects plus empty slabs.
    pub parked_bytes: usize,
}

/// Statistics of one CPU slot and class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuClassStats {
    /// Allocations minus frees on this CPU (negative on a CPU that frees what others allocate).
    pub net_allocations: isize,
    /// Objects in the slot's two magazines.
    pub magazine_fill: usize,
}

/// Whole-heap statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of slabs held from the page source.
    pub slab_bytes: usize,
    /// Bytes of objects allocated by callers from the slab classes (class sizes).
    pub small_bytes: usize,
    /// Bytes parked in magazines, depots and empty slabs.
    pub parked_bytes: usize,
    /// Bytes of TLSF pools taken from the page source (and not yet returned: `reclaim` returns
    /// the wholly free ones).
    pub tlsf_pool_bytes: usize,
    /// Bytes of TLSF-route blocks served straight from the page source (whole pages each),
    /// because the arenas could not grow: 16 pools held, or no pool of the size needed.
    pub tlsf_direct_bytes: usize,
    /// Bytes of huge blocks allocated straight from the page source.
    pub huge_bytes: usize,
    /// Thread caches bound to the heap (std, docs/design/08-heap.md §"Thread caches (std)"), including those of exited
    /// threads not yet collected.
    pub thread_caches: usize,
}

/// The magazine objects of one class collected by `check`, on the stack: `check` must not
/// allocate (the heap may be the global allocator, and `check` holds its locks). Repeats are
/// found by sorting; past `CHECK_OBJECTS` objects (more than 40 CPU slots) only the first
/// ones are compared.
pub(super) struct Objects {
    seen: ArrayVec<usize, CHECK_OBJECTS>,
}

const CHECK_OBJECTS: usize = SIZES.check_objects;

impl Objects {
    pub(super) fn new() -> Self {
        Self {
            seen: ArrayVec::new(),
        }
    }

    pub(super) fn push(&mut self, object: NonNull<u8>) {
        let _ = self.seen.try_push(object.as_ptr().addr());
    }

    pub(super) fn has_repeats(&mut self) -> bool {
        self.seen.sort_unstable();
        self.seen.windows(2).any(|w| w[0] == w[1])
    }
}

#[inline]
pub(super) fn load(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

#[inline]
pub(super) fn store(counter: &AtomicUsize, value: usize) {
    counter.store(value, Ordering::Relaxed);
}
