//! The class layer: per size class, the depot (full magazines in `DEPOT` slots claimed through
//! one atomic word, no lock: docs/design/08-heap.md §"The depot and cross-CPU frees", DP1-DP5) and one `SpinLock` over the class's
//! [`SlabCache`]; below it the page source. Lock order: a cache (CPU slot), then a class, then
//! the page source; a depot claim never waits, so it has no place in the order. Slabs released
//! to the page source are freed after the class lock is dropped (or, in long drains, in batches
//! while it is held: class -> pages permits it).

use core::mem;
use core::ptr::NonNull;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use super::PageSource;
use super::magazine::Magazine;
use super::pagemap::{PAGE, PageMap, Tally};
use super::route::{DEPOT, HEAP_CLASSES, MAGAZINE, depot_limit};
use super::stats::{CheckError, Objects, load, store};
use crate::byte::slab::SlabCache;
use crate::byte::slab::class::slab_bytes;
use crate::lock::{SpinLock, SpinLockGuard};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::model::SIZES;
use crate::sync::{MutPtr, UnsafeCell, loom_const_fn};

/// Empty slabs a class keeps before returning one to the pages (0 under loom, so a model's
/// single slab goes back as soon as it empties).
const KEEP_EMPTY: usize = SIZES.keep_empty_slabs;

/// Slabs to give back after the class lock is dropped.
type Released = ArrayVec<NonNull<u8>, MAGAZINE>;

// The depot word holds a full and a busy bit per slot.
const _: () = assert!(2 * DEPOT <= usize::BITS as usize);

/// The full bits of a depot word (bit `i`: slot `i` holds a full magazine).
const FULL: usize = (1 << DEPOT) - 1;

/// The busy bit of slot `i` (claimed by one thread, DP1).
const fn busy(i: usize) -> usize {
    1 << (DEPOT + i)
}

/// The full bit of slot `i`.
const fn full_bit(i: usize) -> usize {
    1 << i
}

/// A class's depot: `DEPOT` magazine slots and the word that says which are full and which are
/// claimed (docs/design/08-heap.md §"The depot and cross-CPU frees"). Invariants: a slot's magazine is touched only by the thread whose CAS
/// set its busy bit, until that thread's release (DP1); a slot is never full and busy at once;
/// a full slot holds `MAGAZINE` objects (DP3); a slot neither full nor busy is empty.
struct Slots {
    /// Full bits (`0..DEPOT`) and busy bits (`DEPOT..2 * DEPOT`). Every write is a
    /// read-modify-write (DP2).
    state: CachePadded<AtomicUsize>,
    magazines: [UnsafeCell<Magazine>; DEPOT],
}

// SAFETY: the magazines hold addresses of heap objects, not references to thread-bound data;
// a slot's magazine is touched only by the thread that claimed it (DP1), and the claim's
// Acquire / release's Release order those accesses (DP2).
unsafe impl Sync for Slots {}
// SAFETY: as above.
unsafe impl Send for Slots {}

impl Slots {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            state: CachePadded::new(AtomicUsize::new(0)),
            magazines: [const { UnsafeCell::new(Magazine::new()) }; DEPOT],
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            state: CachePadded::new(AtomicUsize::new(0)),
            magazines: core::array::from_fn(|_| UnsafeCell::new(Magazine::new())),
        }
    }

    /// Claims a slot below `limit` that is neither full nor busy (to push into), or `None`.
    #[inline]
    fn claim_free(&self, limit: usize) -> Option<usize> {
        let usable = if limit >= DEPOT {
            FULL
        } else {
            (1 << limit) - 1
        };
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            let free = !(word | (word >> DEPOT)) & usable;
            if free == 0 {
                return None;
            }
            let i = free.trailing_zeros() as usize;
            // Acquire (DP2): our copy into the slot comes after the last popper's copy out.
            match self.state.compare_exchange_weak(
                word,
                word | busy(i),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(i),
                Err(now) => word = now,
            }
        }
    }

    /// Claims a full slot (to pop from), clearing its full bit, or `None`.
    #[inline]
    fn claim_full(&self) -> Option<usize> {
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            let ready = word & FULL;
            if ready == 0 {
                return None;
            }
            let i = (usize::BITS - 1 - ready.leading_zeros()) as usize;
            // Acquire (DP2): the pusher's copy into the slot happens before ours out of it.
            match self.state.compare_exchange_weak(
                word,
                word ^ (full_bit(i) | busy(i)),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(i),
                Err(now) => word = now,
            }
        }
    }

    /// Claims every full slot at once (for `check`): the full bits claimed.
    fn claim_all_full(&self) -> usize {
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            let ready = word & FULL;
            if ready == 0 {
                return 0;
            }
            match self.state.compare_exchange_weak(
                word,
                word ^ ready ^ (ready << DEPOT),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return ready,
                Err(now) => word = now,
            }
        }
    }

    /// Slot `i`'s magazine, for the thread that claimed it (keep the pointer only until the
    /// release).
    fn slot(&self, i: usize) -> MutPtr<Magazine> {
        self.magazines[i].get_mut()
    }

    /// Releases claimed slots (`claimed`: their full bits) as full (after a push, or after
    /// `check` looked at them): busy off, full on, in one Release RMW (DP2).
    fn publish_full(&self, claimed: usize) {
        self.state
            .fetch_xor(claimed | (claimed << DEPOT), Ordering::Release);
    }

    /// Releases a popped slot `i` as empty: busy off (Release, DP2: our copy out happens before
    /// the next pusher's copy in).
    fn release_empty(&self, i: usize) {
        self.state.fetch_and(!busy(i), Ordering::Release);
    }

    /// Full magazines in the depot (a recent value; exact when no slot is busy).
    fn full_count(&self) -> usize {
        (self.state.load(Ordering::Relaxed) & FULL).count_ones() as usize
    }
}

/// Statistics of one class's slabs, republished (`Relaxed` stores) at the end of every
/// class-locked operation.
struct ClassCounters {
    slabs: AtomicUsize,
    empty_slabs: AtomicUsize,
    slab_inuse: AtomicUsize,
    /// Allocations minus frees that took the direct path (no cache), under the class lock.
    direct_net: AtomicUsize,
}

impl ClassCounters {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                slabs: AtomicUsize::new(0),
                empty_slabs: AtomicUsize::new(0),
                slab_inuse: AtomicUsize::new(0),
                direct_net: AtomicUsize::new(0),
            }
        }
    }
}

struct Class {
    depot: Slots,
    slabs: SpinLock<SlabCache>,
    counters: ClassCounters,
}

impl Class {
    loom_const_fn! {
        /// All zeros: the class is set on the slabs' first use (`Depot::slabs`).
        fn new() -> Self {
            Self {
                depot: Slots::new(),
                slabs: SpinLock::new(SlabCache::unconfigured()),
                counters: ClassCounters::new(),
            }
        }
    }
}

/// A class's published counters (each exact when the heap is quiescent, a recent value
/// otherwise).
pub(super) struct ClassCounts {
    pub(super) slabs: usize,
    pub(super) empty_slabs: usize,
    pub(super) slab_inuse: usize,
    pub(super) depot_objects: usize,
    /// Allocations minus frees that bypassed the caches (wrapping).
    pub(super) direct_net: usize,
}

/// The class layer of every heap class, and the page map its slabs (and the large blocks,
/// `large.rs`) are recorded in (docs/design/08-heap.md §"Frees without a layout: the page map").
pub(super) struct Depot {
    classes: [CachePadded<Class>; HEAP_CLASSES],
    map: PageMap,
}

impl Depot {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            classes: [const { CachePadded::new(Class::new()) }; HEAP_CLASSES],
            map: PageMap::new(),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            classes: core::array::from_fn(|_| CachePadded::new(Class::new())),
            map: PageMap::new(),
        }
    }

    /// The page map (slabs recorded here; huge and direct blocks by `large.rs`).
    pub(super) const fn map(&self) -> &PageMap {
        &self.map
    }

    /// The page map, exclusively (the heap is being dropped).
    pub(super) fn map_mut(&mut self) -> &mut PageMap {
        &mut self.map
    }

    /// The slabs of `class`, locked; configured for the class on first use (an empty heap
    /// holds unconfigured, all-zero caches: `.bss`).
    #[inline]
    fn slabs(&self, class: usize) -> SpinLockGuard<'_, SlabCache> {
        let mut slabs = self.classes[class].slabs.lock();
        slabs.configure(class, KEEP_EMPTY);
        slabs
    }

    /// A new slab of `class` for `SlabCache::alloc`: pages from the source, recorded in the map
    /// before any object is carved (P2); `None` (pages back) when either refuses.
    fn new_slab<P: PageSource>(
        &self,
        class: usize,
        pages: &P,
        bytes: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let slab = pages.alloc_pages(bytes, align)?;
        if self.map.insert_slab(slab, bytes, class, pages).is_err() {
            // SAFETY: just taken with `alloc_pages(bytes, align)`, never used.
            unsafe { pages.free_pages(slab, bytes, align) };
            return None;
        }
        Some(slab)
    }

    /// Gives released slabs of `class` back to the page source, their map entries cleared
    /// first (P3).
    fn release<P: PageSource>(&self, class: usize, pages: &P, released: Released) {
        self.map.remove_slabs(&released, slab_bytes(class));
        release(class, pages, released);
    }

    /// Fills the empty magazine `into`: a full magazine popped from the depot (no lock), else
    /// up to [`MAGAZINE`] objects from the slabs under the class lock (fewer, or none, when the
    /// page source refuses).
    pub(super) fn load<P: PageSource>(&self, class: usize, pages: &P, into: &mut Magazine) {
        debug_assert!(into.0.is_empty());
        let c = &self.classes[class];
        if let Some(i) = c.depot.claim_full() {
            {
                let slot = c.depot.slot(i);
                // SAFETY: DP1: our CAS set slot `i` busy, so no other thread touches it until
                // our release below; the pointer is dropped before that.
                unsafe { slot.deref() }.move_into(into);
            }
            c.depot.release_empty(i);
            return;
        }
        let mut slabs = self.slabs(class);
        for _ in 0..MAGAZINE {
            // SAFETY: the page source's contract gives `get` exactly what `alloc` needs.
            let object =
                unsafe { slabs.alloc(|bytes, align| self.new_slab(class, pages, bytes, align)) };
            match object {
                Some(object) => into.0.push(object),
                None => break,
            }
        }
        self.publish(class, &slabs);
    }

    /// Takes the objects of the full magazine `full` (leaving it empty): into a free depot
    /// slot (no lock), or, when every usable slot is full or busy, into the slabs under the
    /// class lock.
    ///
    /// # Safety
    /// Every object of `full` is an in-use object of `class` handed out by this depot.
    pub(super) unsafe fn unload<P: PageSource>(
        &self,
        class: usize,
        pages: &P,
        full: &mut Magazine,
    ) {
        debug_assert_eq!(
            full.0.len(),
            MAGAZINE,
            "only full magazines go to the depot"
        );
        let c = &self.classes[class];
        if let Some(i) = c.depot.claim_free(depot_limit(class)) {
            {
                let slot = c.depot.slot(i);
                // SAFETY: DP1, as in `load`; a slot neither full nor busy is empty.
                full.move_into(unsafe { slot.deref() });
            }
            c.depot.publish_full(full_bit(i));
            return;
        }
        // SAFETY: caller.
        unsafe { self.free_all(class, pages, full.0.drain(..)) };
    }

    /// Frees `objects` into the slabs (a drained cache, or a magazine the depot has no room
    /// for), releasing empty slabs beyond the hysteresis to the page source.
    ///
    /// # Safety
    /// Every object is an in-use object of `class` handed out by this depot.
    pub(super) unsafe fn free_all<P: PageSource>(
        &self,
        class: usize,
        pages: &P,
        objects: impl Iterator<Item = NonNull<u8>>,
    ) {
        let mut released = Released::new();
        let mut slabs = self.slabs(class);
        for object in objects {
            // SAFETY: caller.
            unsafe { free_to_slabs(&mut slabs, object, &mut released) };
            if released.is_full() {
                self.release(class, pages, mem::take(&mut released));
            }
        }
        self.publish(class, &slabs);
        drop(slabs);
        self.release(class, pages, released);
    }

    /// Allocation that bypasses the caches (every cache the caller may use is busy): one
    /// object from the slabs under the class lock (depot magazines stay full).
    #[cold]
    pub(super) fn alloc_one<P: PageSource>(&self, class: usize, pages: &P) -> Option<NonNull<u8>> {
        let c = &self.classes[class];
        let mut slabs = self.slabs(class);
        // SAFETY: the page source's contract.
        let object =
            unsafe { slabs.alloc(|bytes, align| self.new_slab(class, pages, bytes, align)) };
        if object.is_some() {
            // Under the class lock: its only writer.
            store(
                &c.counters.direct_net,
                load(&c.counters.direct_net).wrapping_add(1),
            );
        }
        self.publish(class, &slabs);
        object
    }

    /// Free that bypasses the caches: straight into the slabs under the class lock.
    ///
    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[cold]
    pub(super) unsafe fn free_one<P: PageSource>(&self, class: usize, pages: &P, ptr: NonNull<u8>) {
        let c = &self.classes[class];
        let mut released = Released::new();
        let mut slabs = self.slabs(class);
        // SAFETY: caller.
        unsafe { free_to_slabs(&mut slabs, ptr, &mut released) };
        store(
            &c.counters.direct_net,
            load(&c.counters.direct_net).wrapping_sub(1),
        );
        self.publish(class, &slabs);
        drop(slabs);
        self.release(class, pages, released);
    }

    /// Returns every depot magazine to the slabs and every empty slab to the page source. A
    /// magazine being pushed meanwhile (its slot busy) lands after this.
    pub(super) fn reclaim<P: PageSource>(&self, pages: &P) {
        for class in 0..HEAP_CLASSES {
            let c = &self.classes[class];
            let mut released = Released::new();
            let mut slabs = self.slabs(class);
            while let Some(i) = c.depot.claim_full() {
                {
                    let slot = c.depot.slot(i);
                    // SAFETY: DP1, as in `load`.
                    let magazine = unsafe { slot.deref() };
                    for object in magazine.0.drain(..) {
                        // SAFETY: depot objects are in-use objects of this class (DP3).
                        unsafe { free_to_slabs(&mut slabs, object, &mut released) };
                        if released.is_full() {
                            self.release(class, pages, mem::take(&mut released));
                        }
                    }
                }
                c.depot.release_empty(i);
            }
            while let Some(slab) = slabs.take_empty() {
                released.push(slab);
                if released.is_full() {
                    self.release(class, pages, mem::take(&mut released));
                }
            }
            self.publish(class, &slabs);
            drop(slabs);
            self.release(class, pages, released);
        }
    }

    /// Takes every class's slab lock in class order and keeps them (the heap's fork handler,
    /// docs/design/08-heap.md §"Fork"). Depot slots need no lock: a claim never waits.
    pub(super) fn lock_for_fork(&self) {
        for class in &self.classes {
            class.slabs.lock_held();
        }
    }

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took.
    ///
    /// # Safety
    /// The caller (or the forked child of it) holds them from `lock_for_fork`.
    pub(super) unsafe fn unlock_after_fork(&self) {
        for class in &self.classes {
            // SAFETY: caller: held since `lock_for_fork`.
            unsafe { class.slabs.unlock_held() };
        }
    }

    /// Debug builds: `ptr` must be an in-use object of `class` (checked under the class lock).
    #[cfg(debug_assertions)]
    pub(super) fn debug_check_owned(&self, ptr: NonNull<u8>, class: usize) {
        let slabs = self.slabs(class);
        // SAFETY: debug check; the caller promised `ptr` is an object of this class, whose slab
        // is readable. A foreign pointer may fault here rather than corrupt the heap.
        let owned = unsafe { slabs.owns(ptr) };
        assert!(
            owned,
            "SmpHeap::deallocate: pointer is not an object of this heap"
        );
    }

    /// The published counters of `class` (which is `< HEAP_CLASSES`).
    pub(super) fn counts(&self, class: usize) -> ClassCounts {
        let c = &self.classes[class];
        ClassCounts {
            slabs: load(&c.counters.slabs),
            empty_slabs: load(&c.counters.empty_slabs),
            slab_inuse: load(&c.counters.slab_inuse),
            depot_objects: c.depot.full_count() * MAGAZINE,
            direct_net: load(&c.counters.direct_net),
        }
    }

    /// Checks `class`, given every object the caches hold (`cached`, which the caller keeps
    /// still): claims every full depot slot (DP1; a slot busy with another thread's exchange
    /// is in flight and not seen), then under the class lock: the slabs
    /// (`SlabCache::check`); depot magazines full; every depot and cache object an in-use
    /// object of the class, held once; the published counters equal to the slabs'. The slots
    /// are given back full afterwards, whatever the result.
    pub(super) fn check<'a>(
        &self,
        class: usize,
        cached: impl Iterator<Item = &'a NonNull<u8>>,
    ) -> Result<(), CheckError> {
        let c = &self.classes[class];
        let claimed = c.depot.claim_all_full();
        let result = self.check_claimed(class, claimed, cached);
        if claimed != 0 {
            c.depot.publish_full(claimed);
        }
        result
    }

    /// [`check`](Self::check) with the depot slots of `claimed` (full bits) claimed.
    fn check_claimed<'a>(
        &self,
        class: usize,
        claimed: usize,
        cached: impl Iterator<Item = &'a NonNull<u8>>,
    ) -> Result<(), CheckError> {
        let c = &self.classes[class];
        let slots: ArrayVec<MutPtr<Magazine>, DEPOT> = (0..DEPOT)
            .filter(|&i| claimed & full_bit(i) != 0)
            .map(|i| c.depot.slot(i))
            .collect();
        // SAFETY: DP1: `claim_all_full` set these slots busy; nobody else touches them until
        // `check` releases them, after this function (and these references) ended.
        let magazines: ArrayVec<&Magazine, DEPOT> =
            slots.iter().map(|slot| &*unsafe { slot.deref() }).collect();
        let slabs = self.slabs(class);
        let error = |what| CheckError::Magazine { class, what };
        let counts = slabs
            .check()
            .map_err(|error| CheckError::Slab { class, error })?;
        if magazines.iter().any(|m| m.0.len() != MAGAZINE) {
            return Err(error("a depot magazine is not full"));
        }
        let mut objects = Objects::new();
        let mut held = 0;
        let depot = magazines.iter().flat_map(|m| m.0.iter().copied());
        for object in depot.chain(cached.copied()) {
            // SAFETY: every magazine object came out of this class's slabs.
            if !unsafe { slabs.owns(object) } {
                return Err(error(
                    "a magazine holds a pointer that is not an in-use object",
                ));
            }
            objects.push(object);
            held += 1;
        }
        if objects.has_repeats() {
            return Err(error("an object is in two magazines"));
        }
        if held > counts.inuse {
            return Err(error("more objects cached than handed out of the slabs"));
        }
        if load(&c.counters.slab_inuse) != counts.inuse || load(&c.counters.slabs) != counts.slabs {
            return Err(error("published counters disagree with the slabs"));
        }
        Ok(())
    }

    /// Checks the page map against the slabs, holding every class lock (in class order) and
    /// then the map's: each class's slabs have exactly their pages recorded, each slab's pages
    /// all map to its class, no entry lies in a TLSF region (`is_pool`), and `verify` (the
    /// large blocks' counts, run under the map's lock) holds.
    pub(super) fn check_map(
        &self,
        huge_bytes: &dyn Fn(usize) -> usize,
        is_pool: &dyn Fn(usize) -> bool,
        verify: &dyn Fn(&Tally) -> Result<(), &'static str>,
    ) -> Result<(), CheckError> {
        let states: ArrayVec<_, HEAP_CLASSES> =
            (0..HEAP_CLASSES).map(|class| self.slabs(class)).collect();
        let slab_bytes = |class: usize| {
            if class < HEAP_CLASSES {
                slab_bytes(class)
            } else {
                0
            }
        };
        let tally = self
            .map
            .tally(&slab_bytes, huge_bytes, is_pool, verify)
            .map_err(CheckError::PageMap)?;
        for (class, state) in states.iter().enumerate() {
            let pages = state.counts().slabs * slab_bytes(class) / PAGE;
            if tally.slab_pages[class] != pages {
                return Err(CheckError::PageMap(
                    "a class's slab pages and its map entries differ",
                ));
            }
        }
        if tally.slab_pages[HEAP_CLASSES..].iter().any(|&n| n != 0) {
            return Err(CheckError::PageMap(
                "a slab entry names no class of the heap",
            ));
        }
        Ok(())
    }

    /// Republishes a class's slab counters (the caller holds its lock).
    fn publish(&self, class: usize, slabs: &SlabCache) {
        let counters = &self.classes[class].counters;
        let counts = slabs.counts();
        store(&counters.slabs, counts.slabs);
        store(&counters.empty_slabs, counts.empty_slabs);
        store(&counters.slab_inuse, counts.inuse);
    }
}

/// Gives released slabs of `class` back to the page source.
fn release<P: PageSource>(class: usize, pages: &P, released: Released) {
    let bytes = slab_bytes(class);
    for slab in released {
        // SAFETY: the slab came from `alloc_pages(bytes, bytes)` and holds no object.
        unsafe { pages.free_pages(slab, bytes, bytes) };
    }
}

/// Frees a magazine object into its slab; a slab to release is queued in `released`.
///
/// # Safety
/// `object` is an in-use object of `slabs`' class handed out by it.
unsafe fn free_to_slabs(slabs: &mut SlabCache, object: NonNull<u8>, released: &mut Released) {
    // SAFETY: caller.
    match unsafe { slabs.free(object) } {
        Ok(Some(slab)) => released.push(slab),
        Ok(None) => {}
        Err(error) => debug_assert!(false, "SmpHeap: bad object in a magazine: {error}"),
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::heap::SystemPages;

    /// Class 1 (16 B): its depot has `DEPOT` usable slots.
    const CLASS: usize = 1;

    /// `n` in-use objects of `CLASS`, straight from the slabs.
    fn objects(depot: &Depot, pages: &SystemPages, n: usize) -> Magazine {
        let mut magazine = Magazine::new();
        for _ in 0..n {
            magazine.0.push(depot.alloc_one(CLASS, pages).unwrap());
        }
        magazine
    }

    fn check(depot: &Depot) {
        for class in 0..HEAP_CLASSES {
            depot.check(class, [].iter()).unwrap();
        }
    }

    /// Slots are claimed once each: a free slot is not handed to two pushers, a full one not to
    /// two poppers, and `check`'s claim of every full slot leaves nothing for a popper.
    #[test]
    fn slot_claims_are_exclusive() {
        let slots = Slots::new();
        let limit = depot_limit(CLASS);
        assert_eq!(limit, DEPOT);
        let pushed: ArrayVec<usize, DEPOT> = (0..limit)
            .map(|_| slots.claim_free(limit).unwrap())
            .collect();
        assert_eq!(pushed.as_slice(), (0..limit).collect::<Vec<_>>());
        assert_eq!(slots.claim_free(limit), None, "every slot is busy");
        assert_eq!(slots.claim_full(), None, "a busy slot is not full yet");
        assert_eq!(slots.full_count(), 0);
        slots.publish_full(full_bit(3));
        slots.publish_full(full_bit(5));
        assert_eq!(slots.full_count(), 2);
        assert_eq!(slots.claim_free(limit), None, "full slots are not free");
        assert_eq!(slots.claim_all_full(), full_bit(3) | full_bit(5));
        assert_eq!(slots.claim_full(), None, "claimed by check");
        slots.publish_full(full_bit(3) | full_bit(5));
        assert_eq!(slots.claim_full(), Some(5));
        assert_eq!(slots.claim_full(), Some(3));
        assert_eq!(slots.claim_full(), None);
        slots.release_empty(3);
        assert_eq!(slots.claim_free(limit), Some(3));
        assert_eq!(slots.claim_free(1), None, "only slots below the limit");
    }

    /// A depot exchange takes no lock: with the class lock held (a thread filling its magazine
    /// from the slabs, or one preempted there), a full magazine still goes into the depot and
    /// comes out again, whole.
    #[test]
    fn exchange_takes_no_class_lock() {
        let pages = SystemPages::new();
        let depot = Depot::new();
        let mut full = objects(&depot, &pages, MAGAZINE);
        let sent: Vec<NonNull<u8>> = full.0.to_vec();
        {
            let _held = depot.classes[CLASS].slabs.lock();
            // SAFETY: in-use objects of `CLASS` from this depot.
            unsafe { depot.unload(CLASS, &pages, &mut full) };
            assert!(
                full.0.is_empty(),
                "the magazine's objects moved into the depot"
            );
            assert_eq!(depot.counts(CLASS).depot_objects, MAGAZINE);
            depot.load(CLASS, &pages, &mut full);
        }
        assert_eq!(full.0.as_slice(), sent.as_slice());
        assert_eq!(depot.counts(CLASS).depot_objects, 0);
        check(&depot);
        // SAFETY: as above.
        unsafe { depot.free_all(CLASS, &pages, full.0.drain(..)) };
        depot.reclaim(&pages);
        // The page map's nodes go back when pruned (the heap's `reclaim` does it).
        depot.map().prune(&pages);
        assert_eq!(pages.held_bytes(), 0);
    }

    /// Past its limit the depot sends magazines to the slabs; `check` sees every depot object
    /// (and gives the slots back), `reclaim` returns them all, and the statistics are exact.
    #[test]
    fn full_depot_spills_and_reclaim_returns_all() {
        let pages = SystemPages::new();
        let depot = Depot::new();
        let limit = depot_limit(CLASS);
        for round in 0..limit + 2 {
            let mut full = objects(&depot, &pages, MAGAZINE);
            // SAFETY: in-use objects of `CLASS` from this depot.
            unsafe { depot.unload(CLASS, &pages, &mut full) };
            assert!(full.0.is_empty());
            let parked = (round + 1).min(limit) * MAGAZINE;
            let counts = depot.counts(CLASS);
            assert_eq!(counts.depot_objects, parked);
            assert_eq!(counts.slab_inuse, parked);
            check(&depot);
            check(&depot);
        }
        // A repeated object is caught, with the depot's copy included.
        let mut one = Magazine::new();
        depot.load(CLASS, &pages, &mut one);
        let twice = [one.0[0]];
        assert!(matches!(
            depot.check(CLASS, one.0.iter().chain(&twice)),
            Err(CheckError::Magazine { .. })
        ));
        // SAFETY: as above.
        unsafe { depot.unload(CLASS, &pages, &mut one) };
        assert_eq!(depot.counts(CLASS).depot_objects, limit * MAGAZINE);
        depot.reclaim(&pages);
        let counts = depot.counts(CLASS);
        assert_eq!(
            (counts.depot_objects, counts.slab_inuse, counts.slabs),
            (0, 0, 0)
        );
        depot.map().prune(&pages);
        assert_eq!(pages.held_bytes(), 0);
        check(&depot);
    }

    /// Pushers and poppers on several threads (the producer/consumer exchange), with `check`
    /// and `reclaim` running beside them: no object is lost or handed out twice.
    #[test]
    fn concurrent_exchanges_keep_every_object_once() {
        let pages = SystemPages::new();
        let depot = Depot::new();
        let rounds = if cfg!(miri) { 4 } else { 50_000 };
        let start = std::sync::Barrier::new(4);
        let mut all: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut held = objects(&depot, &pages, MAGAZINE);
                        start.wait();
                        for _ in 0..rounds {
                            // SAFETY: in-use objects of `CLASS` from this depot.
                            unsafe { depot.unload(CLASS, &pages, &mut held) };
                            depot.load(CLASS, &pages, &mut held);
                            assert!(!held.0.is_empty());
                            while held.0.len() < MAGAZINE {
                                held.0.push(depot.alloc_one(CLASS, &pages).unwrap());
                            }
                        }
                        held.0
                            .iter()
                            .map(|p| p.as_ptr().expose_provenance())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            start.wait();
            for _ in 0..rounds / 64 + 1 {
                depot.check(CLASS, [].iter()).unwrap();
                depot.reclaim(&pages);
            }
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "an object is held twice");
        check(&depot);
        depot.reclaim(&pages);
        assert_eq!(depot.counts(CLASS).slab_inuse, n);
        let objects = all
            .into_iter()
            .map(|addr| NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap());
        // SAFETY: the workers' in-use objects of `CLASS`, each once (checked above).
        unsafe { depot.free_all(CLASS, &pages, objects) };
        depot.reclaim(&pages);
        // The page map's nodes go back when pruned (the heap's `reclaim` does it).
        depot.map().prune(&pages);
        assert_eq!(pages.held_bytes(), 0);
    }
}
