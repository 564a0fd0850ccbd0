//! Magazines (Bonwick and Adams 2001): fixed arrays of object pointers that a CPU (or, with
//! `std`, a thread) pops on allocation and pushes on free, exchanged a whole magazine at a time
//! with the class layer ([`Depot`]).
//!
//! **Magazine rule.** A cache holds, per class, a *loaded* and a *previous* magazine; the
//! previous one is always full or empty. Alloc from an empty loaded magazine swaps with a full
//! previous one, else loads a full magazine from the depot (or fills one from the slabs). Free
//! into a full loaded magazine swaps with an empty previous one, else hands the full previous
//! one to the depot (or its objects to the slabs when the depot is at its limit) and swaps.

use core::ptr::NonNull;

use arrayvec::ArrayVec;

use super::PageSource;
use super::depot::Depot;
use super::route::MAGAZINE;
use super::stats::{load, store};
use crate::sync::atomic::AtomicUsize;
use crate::sync::loom_const_fn;

/// A magazine: object pointers, fixed capacity.
pub(super) struct Magazine(pub(super) ArrayVec<NonNull<u8>, MAGAZINE>);

impl Magazine {
    pub(super) const fn new() -> Self {
        Self(ArrayVec::new_const())
    }

    /// Moves every object into the empty magazine `to` (the "swap" of the magazine rule: one
    /// copy of the valid pointers instead of exchanging two whole arrays).
    #[inline]
    pub(super) fn move_into(&mut self, to: &mut Magazine) {
        debug_assert!(to.0.is_empty());
        let _ = to.0.try_extend_from_slice(&self.0);
        self.0.clear();
    }
}

/// One cache's two magazines of one class.
pub(super) struct Magazines {
    pub(super) loaded: Magazine,
    pub(super) previous: Magazine,
}

impl Magazines {
    pub(super) const fn new() -> Self {
        Self {
            loaded: Magazine::new(),
            previous: Magazine::new(),
        }
    }

    /// Objects held in both magazines.
    pub(super) fn len(&self) -> usize {
        self.loaded.0.len() + self.previous.0.len()
    }

    /// Every object held (loaded first).
    pub(super) fn objects(&self) -> impl Iterator<Item = &NonNull<u8>> {
        self.loaded.0.iter().chain(&self.previous.0)
    }

    /// The loaded magazine is empty: swap with a full previous one, else load a full magazine
    /// from the depot, else fill one from the slabs; then pop. `None` when the page source
    /// refuses a slab.
    #[cold]
    pub(super) fn refill<P: PageSource>(
        &mut self,
        counters: &CacheCounters,
        depot: &Depot,
        class: usize,
        pages: &P,
    ) -> Option<NonNull<u8>> {
        if !self.previous.0.is_empty() {
            self.previous.move_into(&mut self.loaded);
            return self.loaded.0.pop();
        }
        depot.load(class, pages, &mut self.loaded);
        counters.moved(self.loaded.0.len(), 0);
        self.loaded.0.pop()
    }

    /// The loaded magazine is full: swap with an empty previous one, else hand the full
    /// previous one to the depot (or its objects to the slabs when the depot is at its limit)
    /// and swap; then push `ptr`.
    ///
    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[cold]
    pub(super) unsafe fn spill<P: PageSource>(
        &mut self,
        counters: &CacheCounters,
        depot: &Depot,
        class: usize,
        pages: &P,
        ptr: NonNull<u8>,
    ) {
        if !self.previous.0.is_empty() {
            counters.moved(0, self.previous.0.len());
            // SAFETY: magazine objects are in-use objects of `class` (the magazine rule); the
            // previous magazine is full (M2) and `unload` leaves it empty.
            unsafe { depot.unload(class, pages, &mut self.previous) };
        }
        self.loaded.move_into(&mut self.previous);
        self.loaded.0.push(ptr);
    }

    /// Hands every object back to the class layer (draining a cache).
    pub(super) fn drain<P: PageSource>(
        &mut self,
        counters: &CacheCounters,
        depot: &Depot,
        class: usize,
        pages: &P,
    ) {
        if self.len() == 0 {
            return;
        }
        counters.moved(0, self.len());
        let objects = self.loaded.0.drain(..).chain(self.previous.0.drain(..));
        // SAFETY: magazine objects are in-use objects of `class`.
        unsafe { depot.free_all(class, pages, objects) };
    }
}

/// Statistics of one cache and class, written by the cache's only user with plain (`Relaxed`
/// load + store, not read-modify-write) updates, read by anyone.
pub(super) struct CacheCounters {
    /// Allocations minus frees through this cache (wrapping; a cache that frees what others
    /// allocated goes negative).
    net: AtomicUsize,
    /// Objects moved into the cache's magazines from the class layer minus objects moved back
    /// (wrapping). Changes only on exchanges, so the fast path updates `net` alone; the
    /// magazines hold `moved - net` objects.
    moved: AtomicUsize,
}

impl CacheCounters {
    loom_const_fn! {
        pub(super) fn new() -> Self {
            Self { net: AtomicUsize::new(0), moved: AtomicUsize::new(0) }
        }
    }

    /// One allocation (by the cache's user).
    #[inline(always)]
    pub(super) fn allocated(&self) {
        store(&self.net, load(&self.net).wrapping_add(1));
    }

    /// One free (by the cache's user).
    #[inline(always)]
    pub(super) fn freed(&self) {
        store(&self.net, load(&self.net).wrapping_sub(1));
    }

    /// Records objects moved into (`inward`) and out of (`outward`) the magazines.
    pub(super) fn moved(&self, inward: usize, outward: usize) {
        store(
            &self.moved,
            load(&self.moved).wrapping_add(inward).wrapping_sub(outward),
        );
    }

    /// Returns allocations minus frees and zeroes both counters (the magazines are empty).
    #[cfg(any(loom, all(feature = "std", unix)))]
    pub(super) fn take_net(&self) -> usize {
        let net = load(&self.net);
        store(&self.net, 0);
        store(&self.moved, 0);
        net
    }

    /// Allocations minus frees (two's complement: negative on a cache that frees more).
    pub(super) fn net(&self) -> usize {
        load(&self.net)
    }

    /// Objects in the magazines: exact while the cache is not in use. While its user updates
    /// it, the two loads are not one snapshot and their difference can be anything; a value
    /// no cache can hold (more than two magazines) is such a torn read and counts as 0, so
    /// sums over many caches stay in range.
    pub(super) fn fill(&self) -> usize {
        let fill = load(&self.moved).wrapping_sub(load(&self.net));
        if fill > 2 * MAGAZINE { 0 } else { fill }
    }
}
