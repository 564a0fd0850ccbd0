//! The class layer: per size class, one `SpinLock` over the depot (full magazines only) and the
//! class's [`SlabCache`]; below it the page source. Lock order: a cache (CPU slot), then a
//! class, then the page source. Slabs released to the page source are freed after the class
//! lock is dropped (or, in long drains, in batches while it is held: class -> pages permits it).

use core::mem;
#[cfg(not(loom))]
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use super::PageSource;
use super::magazine::Magazine;
use super::pagemap::{PAGE, PageMap, Tally};
use super::route::{DEPOT, HEAP_CLASSES, MAGAZINE, depot_limit};
use super::stats::{HeapCheckError, Objects, load, store};
use crate::byte::slab::SlabCache;
use crate::byte::slab::class::slab_bytes;
use crate::lock::SpinLock;
use crate::sync::atomic::AtomicUsize;
use crate::sync::loom_const_fn;

/// Empty slabs a class keeps before returning one to the pages (0 under loom, so a model's
/// single slab goes back as soon as it empties).
const KEEP_EMPTY: usize = if cfg!(loom) { 0 } else { 2 };

/// Slabs to give back after the class lock is dropped.
type Released = ArrayVec<NonNull<u8>, MAGAZINE>;

/// What one class lock guards: the depot and the slabs.
struct ClassState {
    depot: ArrayVec<Magazine, DEPOT>,
    slabs: SlabCache,
}

/// Statistics of one class, republished (`Relaxed` stores) at the end of every class-locked
/// operation.
struct ClassCounters {
    slabs: AtomicUsize,
    empty_slabs: AtomicUsize,
    slab_inuse: AtomicUsize,
    depot_objects: AtomicUsize,
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
                depot_objects: AtomicUsize::new(0),
                direct_net: AtomicUsize::new(0),
            }
        }
    }
}

struct Class {
    state: SpinLock<ClassState>,
    counters: ClassCounters,
}

impl Class {
    loom_const_fn! {
        fn new(class: usize) -> Self {
            Self {
                state: SpinLock::new(ClassState {
                    depot: ArrayVec::new_const(),
                    slabs: SlabCache::new(class, KEEP_EMPTY),
                }),
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
/// `large.rs`) are recorded in (DESIGN.md 13.10).
pub(super) struct Depot {
    classes: [CachePadded<Class>; HEAP_CLASSES],
    map: PageMap,
}

impl Depot {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        let mut out = [const { MaybeUninit::<CachePadded<Class>>::uninit() }; HEAP_CLASSES];
        let mut i = 0;
        while i < HEAP_CLASSES {
            out[i] = MaybeUninit::new(CachePadded::new(Class::new(i)));
            i += 1;
        }
        // SAFETY: every element was initialised above; `MaybeUninit<T>` and `T` have the same
        // layout, and so do arrays of them.
        let classes = unsafe {
            mem::transmute::<
                [MaybeUninit<CachePadded<Class>>; HEAP_CLASSES],
                [CachePadded<Class>; HEAP_CLASSES],
            >(out)
        };
        Self {
            classes,
            map: PageMap::new(),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            classes: core::array::from_fn(|i| CachePadded::new(Class::new(i))),
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

    /// Fills the empty magazine `into`: a full magazine from the depot, else up to
    /// [`MAGAZINE`] objects from the slabs (fewer, or none, when the page source refuses).
    pub(super) fn load<P: PageSource>(&self, class: usize, pages: &P, into: &mut Magazine) {
        debug_assert!(into.0.is_empty());
        let c = &self.classes[class];
        let mut state = c.state.lock();
        if let Some(full) = state.depot.pop() {
            *into = full;
        } else {
            for _ in 0..MAGAZINE {
                // SAFETY: the page source's contract gives `get` exactly what `alloc` needs.
                let object = unsafe {
                    state
                        .slabs
                        .alloc(|bytes, align| self.new_slab(class, pages, bytes, align))
                };
                match object {
                    Some(object) => into.0.push(object),
                    None => break,
                }
            }
        }
        self.publish(class, &state);
    }

    /// Takes a full magazine: into the depot, or (at its limit) its objects into the slabs.
    ///
    /// # Safety
    /// Every object of `full` is an in-use object of `class` handed out by this depot.
    pub(super) unsafe fn unload<P: PageSource>(&self, class: usize, pages: &P, full: Magazine) {
        let c = &self.classes[class];
        let mut released = Released::new();
        let mut state = c.state.lock();
        if state.depot.len() < depot_limit(class) {
            state.depot.push(full);
        } else {
            for object in full.0 {
                // SAFETY: caller.
                unsafe { free_to_slabs(&mut state.slabs, object, &mut released) };
            }
        }
        self.publish(class, &state);
        drop(state);
        self.release(class, pages, released);
    }

    /// Frees `objects` into the slabs (a drained cache), releasing empty slabs beyond the
    /// hysteresis to the page source.
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
        let mut state = self.classes[class].state.lock();
        for object in objects {
            // SAFETY: caller.
            unsafe { free_to_slabs(&mut state.slabs, object, &mut released) };
            if released.is_full() {
                self.release(class, pages, mem::take(&mut released));
            }
        }
        self.publish(class, &state);
        drop(state);
        self.release(class, pages, released);
    }

    /// Allocation that bypasses the caches (every cache the caller may use is busy): one
    /// object from the slabs under the class lock (depot magazines stay full).
    #[cold]
    pub(super) fn alloc_one<P: PageSource>(&self, class: usize, pages: &P) -> Option<NonNull<u8>> {
        let c = &self.classes[class];
        let mut state = c.state.lock();
        // SAFETY: the page source's contract.
        let object = unsafe {
            state
                .slabs
                .alloc(|bytes, align| self.new_slab(class, pages, bytes, align))
        };
        if object.is_some() {
            // Under the class lock: its only writer.
            store(
                &c.counters.direct_net,
                load(&c.counters.direct_net).wrapping_add(1),
            );
        }
        self.publish(class, &state);
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
        let mut state = c.state.lock();
        // SAFETY: caller.
        unsafe { free_to_slabs(&mut state.slabs, ptr, &mut released) };
        store(
            &c.counters.direct_net,
            load(&c.counters.direct_net).wrapping_sub(1),
        );
        self.publish(class, &state);
        drop(state);
        self.release(class, pages, released);
    }

    /// Returns every depot magazine to the slabs and every empty slab to the page source.
    pub(super) fn reclaim<P: PageSource>(&self, pages: &P) {
        for class in 0..HEAP_CLASSES {
            let mut released = Released::new();
            let mut state = self.classes[class].state.lock();
            let ClassState { depot, slabs } = &mut *state;
            for magazine in depot.drain(..) {
                for object in magazine.0 {
                    // SAFETY: depot objects are in-use objects of this class.
                    unsafe { free_to_slabs(slabs, object, &mut released) };
                    if released.is_full() {
                        self.release(class, pages, mem::take(&mut released));
                    }
                }
            }
            while let Some(slab) = slabs.take_empty() {
                released.push(slab);
                if released.is_full() {
                    self.release(class, pages, mem::take(&mut released));
                }
            }
            self.publish(class, &state);
            drop(state);
            self.release(class, pages, released);
        }
    }

    /// Debug builds: `ptr` must be an in-use object of `class` (checked under the class lock).
    #[cfg(debug_assertions)]
    pub(super) fn debug_check_owned(&self, ptr: NonNull<u8>, class: usize) {
        let state = self.classes[class].state.lock();
        // SAFETY: debug check; the caller promised `ptr` is an object of this class, whose slab
        // is readable. A foreign pointer may fault here rather than corrupt the heap.
        let owned = unsafe { state.slabs.owns(ptr) };
        assert!(
            owned,
            "SmpHeap::deallocate: pointer is not an object of this heap"
        );
    }

    /// The published counters of `class` (which is `< HEAP_CLASSES`).
    pub(super) fn counts(&self, class: usize) -> ClassCounts {
        let c = &self.classes[class].counters;
        ClassCounts {
            slabs: load(&c.slabs),
            empty_slabs: load(&c.empty_slabs),
            slab_inuse: load(&c.slab_inuse),
            depot_objects: load(&c.depot_objects),
            direct_net: load(&c.direct_net),
        }
    }

    /// Checks `class` under its lock, given every object the caches hold (`cached`, which the
    /// caller keeps still): the slabs (`SlabCache::check`); depot magazines full; every depot
    /// and cache object an in-use object of the class, held once; the published counters
    /// equal to the slabs'.
    pub(super) fn check<'a>(
        &self,
        class: usize,
        cached: impl Iterator<Item = &'a NonNull<u8>>,
    ) -> Result<(), HeapCheckError> {
        let state = self.classes[class].state.lock();
        let error = |what| HeapCheckError::Magazine { class, what };
        let counts = state
            .slabs
            .check()
            .map_err(|error| HeapCheckError::Slab { class, error })?;
        if state.depot.iter().any(|m| m.0.len() != MAGAZINE) {
            return Err(error("a depot magazine is not full"));
        }
        let mut objects = Objects::new();
        let mut held = 0;
        let depot = state.depot.iter().flat_map(|m| m.0.iter().copied());
        for object in depot.chain(cached.copied()) {
            // SAFETY: every magazine object came out of this class's slabs.
            if !unsafe { state.slabs.owns(object) } {
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
        let published = &self.classes[class].counters;
        if load(&published.slab_inuse) != counts.inuse || load(&published.slabs) != counts.slabs {
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
    ) -> Result<(), HeapCheckError> {
        let states: ArrayVec<_, HEAP_CLASSES> =
            self.classes.iter().map(|c| c.state.lock()).collect();
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
            .map_err(HeapCheckError::PageMap)?;
        for (class, state) in states.iter().enumerate() {
            let pages = state.slabs.counts().slabs * slab_bytes(class) / PAGE;
            if tally.slab_pages[class] != pages {
                return Err(HeapCheckError::PageMap(
                    "a class's slab pages and its map entries differ",
                ));
            }
        }
        if tally.slab_pages[HEAP_CLASSES..].iter().any(|&n| n != 0) {
            return Err(HeapCheckError::PageMap(
                "a slab entry names no class of the heap",
            ));
        }
        Ok(())
    }

    /// Republishes a class's counters (the caller holds its lock).
    fn publish(&self, class: usize, state: &ClassState) {
        let counters = &self.classes[class].counters;
        let slabs = state.slabs.counts();
        store(&counters.slabs, slabs.slabs);
        store(&counters.empty_slabs, slabs.empty_slabs);
        store(&counters.slab_inuse, slabs.inuse);
        store(
            &counters.depot_objects,
            state.depot.iter().map(|m| m.0.len()).sum(),
        );
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
