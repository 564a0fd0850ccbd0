//! [`SmpHeap`]: per-CPU magazines over per-class slab caches over a [`PageSource`], TLSF arenas
//! for odd and medium sizes, huge blocks straight from the pages.
//!
//! # Protocol (DESIGN.md section 13; loom models in `loom-tests/heap.rs`)
//!
//! - **Routing** is a pure function of the `Layout` ([`Route`]), so a free goes where its
//!   allocation came from without looking anything up. A `realloc` that changes the route moves.
//! - **CPU layer.** Each CPU slot holds, per class, a *loaded* and a *previous* magazine (arrays of
//!   object pointers), all behind one `SpinLock` per slot that is only ever taken with
//!   `try_lock` on the fast path: the lock word is on the slot's own cache line, so the common
//!   alloc (pop) and free (push) touch only this CPU's lines. A thread that migrated, or shares
//!   a slot with another thread, and finds the slot busy tries the next [`PROBES`] slots, then
//!   goes straight to the class layer for that one operation: it never waits on, and never
//!   corrupts, another CPU's magazines.
//! - **Magazine rule** (Bonwick and Adams 2001). The previous magazine is always full or empty.
//!   Alloc from an empty loaded magazine swaps with a full previous one, else takes a full
//!   magazine from the depot, else fills one from the slabs. Free into a full loaded magazine
//!   swaps with an empty previous one, else gives the full previous one to the depot (or, if the
//!   depot is at its limit, back to the slabs) and swaps.
//! - **Class layer.** Per class one `SpinLock` guards the depot (full magazines only) and the
//!   class's `SlabCache`. Lock order: CPU slot, then class, then the page source. Slabs
//!   released to the page source are freed after the class lock is dropped.
//! - **Cross-CPU frees** go into the freeing CPU's magazine (Bonwick's choice); the depot carries
//!   them back to allocating CPUs a magazine at a time (DESIGN.md 13.4 has the figures).
//! - **TLSF growth** (DESIGN.md 13.5, G1-G2, D1-D3) allocates the grower's block from its new
//!   pool in the critical section that adds the pool, so no other thread takes it first; when
//!   no pool can be added the request is a *direct block* from the page source, which a free
//!   recognises by its address lying in no TLSF region while the direct count is non-zero.

use core::alloc::Layout;
use core::fmt;
use core::mem;
#[cfg(not(loom))]
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use super::PageSource;
use super::source::huge_bytes;
use crate::TlsfHeap;
use crate::byte::slab::class::{CLASSES, MAX_SMALL, SLAB_PAGE, class_for, class_size, slab_bytes};
use crate::byte::slab::{SlabCache, SlabCheckError};
use crate::lock::{SpinLock, SpinLockGuard};
use crate::percpu::{self, PerCpu};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::loom_const_fn;

/// Objects per magazine (2 under loom, so models reach every exchange quickly).
pub const MAGAZINE: usize = if cfg!(loom) { 2 } else { 32 };

/// The most full magazines a class's depot holds (its actual limit shrinks with the class size,
/// see [`depot_limit`]).
pub const DEPOT: usize = if cfg!(loom) { 1 } else { 16 };

/// Classes the heap serves from slabs (the first 4 under loom: 8..32 B; larger sizes go to
/// TLSF there), all 32 otherwise.
pub const HEAP_CLASSES: usize = if cfg!(loom) { 4 } else { CLASSES };

/// Other slots a thread tries when its own is busy, before the class lock.
pub const PROBES: usize = 2;

/// Requests above this many bytes skip TLSF and go to the page source.
pub const HUGE: usize = 256 * 1024;

/// Empty slabs a class keeps before returning one to the pages (0 under loom, so a model's
/// single slab goes back as soon as it empties).
const KEEP_EMPTY: usize = if cfg!(loom) { 0 } else { 2 };

/// The first TLSF pool taken from the pages; each one taken while others are held is twice the
/// size for each held one (`TLSF_CHUNK << held`). 8 KiB under loom, so a model's pool holds
/// one block of a few KiB and growths race for it.
const TLSF_CHUNK: usize = if cfg!(loom) { 8 * 1024 } else { 256 * 1024 };

/// Full magazines the depot of `class` may hold: about 256 KiB of objects, 1 to [`DEPOT`].
pub const fn depot_limit(class: usize) -> usize {
    let bytes = MAGAZINE * class_size(class);
    let limit = (256 * 1024) / bytes;
    if limit < 1 {
        1
    } else if limit > DEPOT {
        DEPOT
    } else {
        limit
    }
}

/// Where a layout is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Size 0: a dangling aligned pointer, nothing allocated.
    Zero,
    /// A slab class (index).
    Small(usize),
    /// The TLSF arenas: sizes above the slab classes up to [`HUGE`], and odd alignments.
    Tlsf,
    /// Straight from the page source ([`PageSource::alloc_huge`]).
    Huge,
}

impl Route {
    /// The route of `layout` (a pure function: frees and reallocs recompute it).
    #[inline(always)]
    pub const fn of(layout: Layout) -> Route {
        let size = layout.size();
        if size == 0 {
            return Route::Zero;
        }
        if let Some(class) = class_for(size, layout.align()) {
            if class < HEAP_CLASSES {
                return Route::Small(class);
            }
        }
        if size <= HUGE && layout.align() <= MAX_SMALL {
            Route::Tlsf
        } else {
            Route::Huge
        }
    }
}

/// A magazine: object pointers, fixed capacity.
struct Magazine(ArrayVec<NonNull<u8>, MAGAZINE>);

impl Magazine {
    const fn new() -> Self {
        Self(ArrayVec::new_const())
    }

    /// Moves every object into the empty magazine `to` (the "swap" of the magazine rule: one
    /// copy of the valid pointers instead of exchanging two whole arrays).
    #[inline]
    fn move_into(&mut self, to: &mut Magazine) {
        debug_assert!(to.0.is_empty());
        let _ = to.0.try_extend_from_slice(&self.0);
        self.0.clear();
    }
}

/// One CPU's magazines of one class.
struct CpuClass {
    loaded: Magazine,
    previous: Magazine,
}

impl CpuClass {
    const fn new() -> Self {
        Self {
            loaded: Magazine::new(),
            previous: Magazine::new(),
        }
    }
}

/// Statistics of one CPU and class, written by the slot's lock holder with plain (`Relaxed`
/// load + store, not read-modify-write) updates, read by anyone.
struct CpuClassCounters {
    /// Allocations minus frees on this CPU (wrapping; a CPU that frees what others allocated
    /// goes negative).
    net: AtomicUsize,
    /// Objects moved into the slot's magazines from the class layer minus objects moved back
    /// (wrapping). Changes only on exchanges, so the fast path updates `net` alone; the
    /// magazines hold `moved - net` objects.
    moved: AtomicUsize,
}

impl CpuClassCounters {
    loom_const_fn! {
        fn new() -> Self {
            Self { net: AtomicUsize::new(0), moved: AtomicUsize::new(0) }
        }
    }
}

/// One CPU slot.
struct CpuSlot {
    caches: SpinLock<[CpuClass; HEAP_CLASSES]>,
    counters: [CpuClassCounters; HEAP_CLASSES],
}

impl CpuSlot {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            caches: SpinLock::new([const { CpuClass::new() }; HEAP_CLASSES]),
            counters: [const { CpuClassCounters::new() }; HEAP_CLASSES],
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            caches: SpinLock::new([const { CpuClass::new() }; HEAP_CLASSES]),
            counters: core::array::from_fn(|_| CpuClassCounters::new()),
        }
    }
}

/// The class layer: the depot and the slabs.
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
    /// Allocations minus frees that took the direct path (slot busy), under the class lock.
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

#[cfg(not(loom))]
const fn new_classes() -> [CachePadded<Class>; HEAP_CLASSES] {
    let mut out = [const { MaybeUninit::<CachePadded<Class>>::uninit() }; HEAP_CLASSES];
    let mut i = 0;
    while i < HEAP_CLASSES {
        out[i] = MaybeUninit::new(CachePadded::new(Class::new(i)));
        i += 1;
    }
    // SAFETY: every element was initialised above; `MaybeUninit<T>` and `T` have the same layout,
    // and so do arrays of them.
    unsafe { mem::transmute::<[MaybeUninit<CachePadded<Class>>; HEAP_CLASSES], _>(out) }
}

#[cfg(loom)]
fn new_classes() -> [CachePadded<Class>; HEAP_CLASSES] {
    core::array::from_fn(|i| CachePadded::new(Class::new(i)))
}

#[cfg(not(loom))]
const fn new_cpus<const CPUS: usize>() -> PerCpu<CpuSlot, CPUS> {
    PerCpu::new([const { CpuSlot::new() }; CPUS])
}

#[cfg(loom)]
fn new_cpus<const CPUS: usize>() -> PerCpu<CpuSlot, CPUS> {
    PerCpu::from_fn(|_| CpuSlot::new())
}

/// Slabs to give back after the class lock is dropped.
type Released = ArrayVec<NonNull<u8>, MAGAZINE>;

/// The TLSF pools a heap took from its page source and still holds: `(start, bytes)`, each
/// taken with `alloc_pages(bytes, 4096)`. At most as many as `TlsfHeap` has regions (16); when
/// they are all held (or the source has no pool of the size needed), TLSF-route requests the
/// arenas cannot serve are *direct blocks* from the page source (DESIGN.md 13.5). Only these
/// pools are ever returned by `reclaim` (never memory a kernel gave with
/// `TlsfHeap::add_memory`).
struct Pools(ArrayVec<(NonNull<u8>, usize), 16>);

// SAFETY: the pointers name memory the heap owns; only the `tlsf_grow` lock holder (or `drop`)
// reads them.
unsafe impl Send for Pools {}

/// The SMP heap: sizes up to 4 KiB from per-CPU slab magazines, odd alignments and sizes up to
/// 256 KiB from TLSF arenas ([`TlsfHeap`]) that grow from the page source (or, once they hold
/// 16 pools or the source has no pool of the size needed, straight from the page source),
/// larger blocks straight from the page source. It returns `None` only when the page source
/// refuses. `CPUS` slots of per-CPU magazines (ids reduced modulo `CPUS`).
///
/// `const fn new`, so it can be a `static` and a `#[global_allocator]`:
///
/// ```
/// use smpalloc::heap::{SmpHeap, SystemPages};
/// use core::alloc::Layout;
///
/// static HEAP: SmpHeap<SystemPages> = SmpHeap::new(SystemPages::new());
/// let layout = Layout::new::<[u64; 4]>();
/// let p = HEAP.allocate(layout).unwrap();
/// // SAFETY: allocated above with `layout`, freed once.
/// unsafe { HEAP.deallocate(p, layout) };
/// HEAP.drain_cpu_caches();
/// HEAP.reclaim();
/// assert_eq!(HEAP.pages().held_bytes(), 0); // every slab went back to the system
/// ```
pub struct SmpHeap<P: PageSource, const CPUS: usize = 16> {
    cpus: PerCpu<CpuSlot, CPUS>,
    classes: [CachePadded<Class>; HEAP_CLASSES],
    tlsf: TlsfHeap<4>,
    /// Serialises TLSF growth and pool return; holds the pools taken from the page source and
    /// not yet returned (`reclaim` returns the free ones, drop the rest).
    tlsf_grow: SpinLock<Pools>,
    tlsf_bytes: AtomicUsize,
    /// Bytes of live direct blocks (TLSF-route blocks from `PageSource::alloc_huge`, each
    /// counted as `huge_bytes(size)`, at least one page): non-zero exactly while one is live,
    /// which gates a TLSF free that finds no region (DESIGN.md 13.5, D1-D3).
    tlsf_direct: AtomicUsize,
    huge_bytes: AtomicUsize,
    pages: P,
}

// SAFETY: magazines hold pointers to objects owned by the heap; all state is behind `SpinLock`s
// or in atomics, and `P: Sync`.
unsafe impl<P: PageSource, const CPUS: usize> Sync for SmpHeap<P, CPUS> {}
// SAFETY: as above; the heap owns what its magazines and slabs point to.
unsafe impl<P: PageSource + Send, const CPUS: usize> Send for SmpHeap<P, CPUS> {}

/// A violated invariant found by [`SmpHeap::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapCheckError {
    /// A class's slabs are inconsistent.
    Slab {
        /// The class.
        class: usize,
        /// What is wrong.
        error: SlabCheckError,
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
    Tlsf(crate::byte::CheckError),
}

impl fmt::Display for HeapCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapCheckError::Slab { class, error } => write!(f, "class {class}: {error}"),
            HeapCheckError::Magazine { class, what } => write!(f, "class {class}: {what}"),
            HeapCheckError::Tlsf(e) => write!(f, "tlsf: {e:?}"),
        }
    }
}

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
}

impl<P: PageSource, const CPUS: usize> SmpHeap<P, CPUS> {
    loom_const_fn! {
        /// A heap over `pages` with nothing allocated yet (`const`: a `static` or
        /// `#[global_allocator]`).
        pub fn new(pages: P) -> Self {
            Self {
                cpus: new_cpus(),
                classes: new_classes(),
                tlsf: TlsfHeap::new(),
                tlsf_grow: SpinLock::new(Pools(ArrayVec::new_const())),
                tlsf_bytes: AtomicUsize::new(0),
                tlsf_direct: AtomicUsize::new(0),
                huge_bytes: AtomicUsize::new(0),
                pages,
            }
        }
    }

    /// The page source.
    pub const fn pages(&self) -> &P {
        &self.pages
    }

    /// The TLSF arenas (odd alignments and sizes above 4 KiB). A kernel may give them memory at
    /// boot with [`TlsfHeap::add_memory`]; otherwise they grow from the page source.
    pub const fn tlsf(&self) -> &TlsfHeap<4> {
        &self.tlsf
    }

    /// Allocates `layout`. `None` only when the page source refuses (nothing changed): a
    /// TLSF-route request the arenas cannot serve grows them, or, when they cannot grow (16
    /// pools held, or no pool of the size needed), is served straight from the page source
    /// (a *direct block*, DESIGN.md 13.5). Size 0 gets a dangling
    /// pointer aligned to the layout (freeing it is a no-op). Any alignment a `Layout` can hold
    /// is honoured; alignments above 4 KiB are served by the page source, which refuses what it
    /// cannot align.
    ///
    /// # Time Complexity
    /// O(1): a magazine pop on the fast path; a magazine exchange or a refill of at most
    /// [`MAGAZINE`] objects otherwise; O(1) TLSF; the page source's cost for huge blocks.
    #[inline(always)]
    pub fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        match Route::of(layout) {
            Route::Small(class) => self.alloc_small(class),
            Route::Zero => Some(crate::byte::dangling(layout.align())),
            Route::Tlsf => self.alloc_tlsf(layout),
            Route::Huge => self.alloc_huge(layout),
        }
    }

    /// Frees `ptr`, allocated from this heap with `layout`. Size 0 is a no-op.
    ///
    /// Bad input: a pointer this heap did not allocate, or a double free, is undefined
    /// behaviour for small sizes in release builds (the magazines do not look at the object,
    /// which is what makes them fast); debug builds check the slab header of every small free
    /// (panic on a foreign pointer) and refuse a double free into the same magazine. TLSF
    /// frees check the block header in every build (ignored in release, panic in debug). A
    /// TLSF-route pointer in no TLSF region is a direct block when direct blocks are live (then
    /// a bad one reaches the page source's `free_huge`, as a bad huge free does), and is
    /// ignored otherwise (panic in debug).
    ///
    /// # Safety
    /// `ptr` was returned by this heap's `allocate` (or `reallocate`) for `layout` and has not
    /// been freed since.
    #[inline(always)]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match Route::of(layout) {
            // SAFETY: caller.
            Route::Small(class) => unsafe { self.free_small(ptr, class) },
            Route::Zero => {}
            // SAFETY: caller: a TLSF block of this heap.
            Route::Tlsf => unsafe { self.free_tlsf(ptr, layout) },
            // SAFETY: caller: a huge block of this heap.
            Route::Huge => unsafe { self.free_huge(ptr, layout) },
        }
    }

    /// Resizes `ptr` to `new_size` bytes (same alignment). In place when the size class stays
    /// the same or when TLSF can grow or shrink the block where it is; a huge block goes to
    /// [`PageSource::realloc_huge`] (in place when its page count holds; `SystemPages`: the
    /// system's `realloc`); otherwise allocate, copy, free. `None` (out of memory, or `new_size`
    /// overflowing a `Layout`) leaves the old block untouched.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    pub unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let new_layout = Layout::from_size_align(new_size, layout.align()).ok()?;
        match (Route::of(layout), Route::of(new_layout)) {
            (Route::Small(a), Route::Small(b)) if a == b => return Some(ptr),
            (Route::Tlsf, Route::Tlsf) => {
                // SAFETY: caller: a TLSF-route block of this heap. `None` leaves it untouched
                // (also when no region holds it: then it is a direct block); the move below
                // may grow the arenas.
                if let Some(moved) = unsafe { self.tlsf.reallocate(ptr, layout, new_size) } {
                    return Some(moved);
                }
                if !self.tlsf.in_region(ptr) {
                    if load(&self.tlsf_direct) == 0 {
                        // No live block of this heap (D3: the caller broke the contract).
                        return None;
                    }
                    // A direct block (D2): the page source resizes it as a huge block.
                    // SAFETY: caller: taken with `alloc_huge(layout)`; `new_layout` formed.
                    if let Some(moved) = unsafe { self.pages.realloc_huge(ptr, layout, new_size) } {
                        // New size first: the count stays non-zero throughout (D1).
                        self.tlsf_direct
                            .fetch_add(huge_bytes(new_size), Ordering::Relaxed);
                        self.tlsf_direct
                            .fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
                        return Some(moved);
                    }
                }
            }
            (Route::Huge, Route::Huge) => {
                // SAFETY: caller: a huge block of this heap with `layout`; `new_layout` formed.
                if let Some(moved) = unsafe { self.pages.realloc_huge(ptr, layout, new_size) } {
                    self.huge_bytes
                        .fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
                    self.huge_bytes
                        .fetch_add(huge_bytes(new_size), Ordering::Relaxed);
                    return Some(moved);
                }
            }
            _ => {}
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: caller: `ptr` is live with `layout.size()` bytes; `new` is a fresh block of
        // `new_size` bytes; they are distinct allocations.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
            self.deallocate(ptr, layout);
        }
        Some(new)
    }

    // ----- slab classes --------------------------------------------------------------------

    #[inline(always)]
    fn alloc_small(&self, class: usize) -> Option<NonNull<u8>> {
        let Some((slot, mut caches)) = self.lock_slot() else {
            return self.alloc_direct(class);
        };
        let cache = &mut caches[class];
        let counters = &slot.counters[class];
        let object = match cache.loaded.0.pop() {
            Some(object) => object,
            None => self.refill(cache, counters, class)?,
        };
        // A plain update by the slot's only writer (we hold its lock).
        store(&counters.net, load(&counters.net).wrapping_add(1));
        Some(object)
    }

    /// This CPU's slot, locked with `try_lock`; when it is busy (a migrated thread, or more
    /// threads than slots) the next [`PROBES`] slots in turn; `None` when all are busy.
    #[inline(always)]
    fn lock_slot(&self) -> Option<(&CpuSlot, SpinLockGuard<'_, [CpuClass; HEAP_CLASSES]>)> {
        let cpu = percpu::current_cpu();
        let slot = self.cpus.get(cpu);
        match slot.caches.try_lock_unmasked() {
            Some(caches) => Some((slot, caches)),
            None => self.probe_slots(cpu),
        }
    }

    #[cold]
    fn probe_slots(
        &self,
        cpu: usize,
    ) -> Option<(&CpuSlot, SpinLockGuard<'_, [CpuClass; HEAP_CLASSES]>)> {
        (1..=PROBES.min(CPUS - 1)).find_map(|k| {
            let slot = self.cpus.get(cpu.wrapping_add(k));
            slot.caches.try_lock_unmasked().map(|caches| (slot, caches))
        })
    }

    /// The loaded magazine is empty: swap with a full previous one, else load a full magazine
    /// from the depot, else fill one from the slabs; then pop.
    #[cold]
    fn refill(
        &self,
        cache: &mut CpuClass,
        counters: &CpuClassCounters,
        class: usize,
    ) -> Option<NonNull<u8>> {
        if !cache.previous.0.is_empty() {
            cache.previous.move_into(&mut cache.loaded);
            return cache.loaded.0.pop();
        }
        let c = &self.classes[class];
        let mut state = c.state.lock();
        if let Some(full) = state.depot.pop() {
            cache.loaded = full;
        } else {
            let pages = &self.pages;
            for _ in 0..MAGAZINE {
                // SAFETY: the page source's contract gives `get` exactly what `alloc` needs.
                let object = unsafe {
                    state
                        .slabs
                        .alloc(|bytes, align| pages.alloc_pages(bytes, align))
                };
                match object {
                    Some(object) => cache.loaded.0.push(object),
                    None => break,
                }
            }
        }
        self.publish(class, &state);
        drop(state);
        add_moved(counters, cache.loaded.0.len(), 0);
        cache.loaded.0.pop()
    }

    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[inline(always)]
    unsafe fn free_small(&self, ptr: NonNull<u8>, class: usize) {
        // Magazines re-issue objects: keep the slab's exposed provenance, not the caller's
        // (which may cover only the caller's layout; see `SlabCache::init_slab`).
        let ptr = reissue(ptr);
        #[cfg(debug_assertions)]
        self.debug_check_owned(ptr, class);
        let Some((slot, mut caches)) = self.lock_slot() else {
            // SAFETY: caller.
            return unsafe { self.free_direct(ptr, class) };
        };
        let cache = &mut caches[class];
        debug_assert!(
            !cache.loaded.0.contains(&ptr),
            "SmpHeap::deallocate: double free"
        );
        let counters = &slot.counters[class];
        if cache.loaded.0.try_push(ptr).is_err() {
            // SAFETY: caller.
            unsafe { self.spill(cache, counters, class, ptr) };
        }
        store(&counters.net, load(&counters.net).wrapping_sub(1));
    }

    /// The loaded magazine is full: swap with an empty previous one, else hand the full
    /// previous one to the depot (or its objects to the slabs when the depot is at its limit)
    /// and swap; then push `ptr`.
    ///
    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[cold]
    unsafe fn spill(
        &self,
        cache: &mut CpuClass,
        counters: &CpuClassCounters,
        class: usize,
        ptr: NonNull<u8>,
    ) {
        if !cache.previous.0.is_empty() {
            let c = &self.classes[class];
            let mut released = Released::new();
            let mut state = c.state.lock();
            let full = mem::replace(&mut cache.previous, Magazine::new());
            add_moved(counters, 0, full.0.len());
            if state.depot.len() < depot_limit(class) {
                state.depot.push(full);
            } else {
                for object in full.0 {
                    // SAFETY: magazine objects are in-use objects of this class.
                    unsafe { free_to_slabs(&mut state.slabs, object, &mut released) };
                }
            }
            self.publish(class, &state);
            drop(state);
            self.release(class, released);
        }
        cache.loaded.move_into(&mut cache.previous);
        cache.loaded.0.push(ptr);
    }

    /// Allocation when this CPU's slot is busy (a migrated thread, or more threads than
    /// slots): one object from the slabs under the class lock (depot magazines stay full).
    #[cold]
    fn alloc_direct(&self, class: usize) -> Option<NonNull<u8>> {
        let c = &self.classes[class];
        let mut state = c.state.lock();
        let pages = &self.pages;
        // SAFETY: the page source's contract.
        let object = unsafe {
            state
                .slabs
                .alloc(|bytes, align| pages.alloc_pages(bytes, align))
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

    /// Free when this CPU's slot is busy: straight into the slabs under the class lock.
    ///
    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[cold]
    unsafe fn free_direct(&self, ptr: NonNull<u8>, class: usize) {
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
        self.release(class, released);
    }

    /// Debug builds: `ptr` must be an in-use object of `class` (checked under the class lock).
    #[cfg(debug_assertions)]
    fn debug_check_owned(&self, ptr: NonNull<u8>, class: usize) {
        let state = self.classes[class].state.lock();
        // SAFETY: debug check; the caller promised `ptr` is an object of this class, whose slab
        // is readable. A foreign pointer may fault here rather than corrupt the heap.
        let owned = unsafe { state.slabs.owns(ptr) };
        assert!(
            owned,
            "SmpHeap::deallocate: pointer is not an object of this heap"
        );
    }

    /// Gives released slabs back to the page source (no lock held).
    fn release(&self, class: usize, released: Released) {
        let bytes = slab_bytes(class);
        for slab in released {
            // SAFETY: the slab came from `alloc_pages(bytes, bytes)` and holds no object.
            unsafe { self.pages.free_pages(slab, bytes, bytes) };
        }
    }

    /// Republishes a class's counters (we hold its lock).
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

    // ----- TLSF and huge -------------------------------------------------------------------

    #[inline]
    fn alloc_tlsf(&self, layout: Layout) -> Option<NonNull<u8>> {
        if let Some(ptr) = self.tlsf.allocate(layout) {
            return Some(ptr);
        }
        self.grow_tlsf(layout)
    }

    /// The arenas cannot serve `layout`: under `tlsf_grow`, retries (someone may have grown
    /// them meanwhile), else takes one more pool from the page source (256 KiB, doubling with
    /// each pool held, at least the request plus TLSF's overhead; halved down to that when the
    /// source cannot give more) and allocates from it in the same critical section that adds
    /// it, so no other thread can take it first (issue 14, defect 2). When no pool can be
    /// added (16 held, or the source has none of that size), the request is a direct block
    /// from the page source. `None` only when the page source refuses.
    #[cold]
    fn grow_tlsf(&self, layout: Layout) -> Option<NonNull<u8>> {
        {
            let mut pools = self.tlsf_grow.lock();
            if let Some(ptr) = self.tlsf.allocate(layout) {
                return Some(ptr);
            }
            // `has_room` is a hint (a kernel's `add_memory` may fill the table meanwhile; then
            // adding the pool fails and it goes back): it saves taking a pool for nothing.
            if !pools.0.is_full() && self.tlsf.has_room() {
                if let Some(ptr) = self.grow_pool(&mut pools, layout) {
                    return Some(ptr);
                }
            }
        }
        self.alloc_tlsf_direct(layout)
    }

    /// Takes a pool for `layout` from the page source and serves `layout` from it (see
    /// [`grow_tlsf`](Self::grow_tlsf)); `None` when the source has no pool of the size needed,
    /// or the arenas cannot take one, or a fresh pool cannot serve `layout` (nothing held
    /// then). The caller holds `tlsf_grow` (`pools`) and has checked there is room.
    fn grow_pool(&self, pools: &mut Pools, layout: Layout) -> Option<NonNull<u8>> {
        let grown = pools.0.len();
        let need = (layout.size() + layout.align() + 256).next_multiple_of(SLAB_PAGE);
        let mut chunk = TLSF_CHUNK
            .checked_shl(u32::try_from(grown).ok()?)
            .unwrap_or(usize::MAX)
            .max(need.next_power_of_two());
        let pool = loop {
            if let Some(pool) = self.pages.alloc_pages(chunk, SLAB_PAGE) {
                break pool;
            }
            if chunk / 2 < need {
                return None;
            }
            chunk /= 2;
        };
        let arena = percpu::current_cpu() % self.tlsf.arena_count();
        // SAFETY: fresh pages from the source, owned by the heap from now on if added.
        let added = unsafe {
            self.tlsf.add_pool_and_allocate(
                NonNull::slice_from_raw_parts(pool, chunk),
                arena,
                layout,
            )
        };
        match added {
            Ok(Some(ptr)) => {
                pools.0.push((pool, chunk));
                self.tlsf_bytes.fetch_add(chunk, Ordering::Relaxed);
                Some(ptr)
            }
            // Not added (the region table is full of `add_memory` regions), or added and taken
            // out again (the request is larger than an arena's largest block).
            Ok(None) | Err(_) => {
                // SAFETY: not held by the arenas; back to the source as taken.
                unsafe { self.pages.free_pages(pool, chunk, SLAB_PAGE) };
                None
            }
        }
    }

    /// A direct block: `layout` straight from the page source (whole pages), when the arenas
    /// cannot grow. Its address lies in no TLSF region, which is how a free recognises it
    /// (D1-D3 in DESIGN.md 13.5).
    #[cold]
    fn alloc_tlsf_direct(&self, layout: Layout) -> Option<NonNull<u8>> {
        let ptr = self.pages.alloc_huge(layout)?;
        // D1: counted before the block is handed out (RMW: exact under concurrency).
        self.tlsf_direct
            .fetch_add(huge_bytes(layout.size()), Ordering::Relaxed);
        Some(ptr)
    }

    /// Frees a TLSF-route block: into its arena when a region contains it, else (a direct
    /// block, D2) to the page source.
    ///
    /// # Safety
    /// `ptr` is a TLSF-route block of this heap allocated with `layout`, not freed since.
    #[inline]
    unsafe fn free_tlsf(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: caller.
        if !unsafe { self.tlsf.deallocate_in_region(ptr) } {
            // SAFETY: caller.
            unsafe { self.free_tlsf_direct(ptr, layout) };
        }
    }

    /// # Safety
    /// As for [`free_tlsf`](Self::free_tlsf); no TLSF region contains `ptr`.
    #[cold]
    unsafe fn free_tlsf_direct(&self, ptr: NonNull<u8>, layout: Layout) {
        // D2: with no direct block live, `ptr` is no live block of this heap (a stale or
        // foreign pointer): ignored, as `TlsfHeap` ignores it.
        if load(&self.tlsf_direct) == 0 {
            debug_assert!(false, "SmpHeap::deallocate: not a TLSF block of this heap");
            return;
        }
        // SAFETY: caller and D2: a live TLSF-route block in no region is a direct block,
        // taken with `alloc_huge(layout)`.
        unsafe { self.pages.free_huge(ptr, layout) };
        self.tlsf_direct
            .fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
    }

    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        let ptr = self.pages.alloc_huge(layout)?;
        // Statistics only; huge blocks are rare.
        self.huge_bytes
            .fetch_add(huge_bytes(layout.size()), Ordering::Relaxed);
        Some(ptr)
    }

    /// # Safety
    /// `ptr` is a huge block of this heap allocated with `layout`.
    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: caller: taken with exactly this layout.
        unsafe { self.pages.free_huge(ptr, layout) };
        self.huge_bytes
            .fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
    }

    // ----- reclaim, statistics, check ------------------------------------------------------

    /// Returns every CPU's magazines to the slabs (for each slot: its lock, then each class's
    /// lock), releasing slabs beyond the empty-slab hysteresis to the page source. The CPUs keep
    /// working: a CPU whose slot is being drained takes the direct path meanwhile.
    pub fn drain_cpu_caches(&self) {
        for slot in self.cpus.iter() {
            let mut caches = slot.caches.lock();
            for (class, cache) in caches.iter_mut().enumerate() {
                if cache.loaded.0.is_empty() && cache.previous.0.is_empty() {
                    continue;
                }
                let mut released = Released::new();
                let mut state = self.classes[class].state.lock();
                let counters = &slot.counters[class];
                add_moved(counters, 0, cache.loaded.0.len() + cache.previous.0.len());
                for magazine in [&mut cache.loaded, &mut cache.previous] {
                    for object in magazine.0.drain(..) {
                        // SAFETY: magazine objects are in-use objects of this class.
                        unsafe { free_to_slabs(&mut state.slabs, object, &mut released) };
                        if released.is_full() {
                            self.release_locked(class, &mut released);
                        }
                    }
                }
                self.publish(class, &state);
                drop(state);
                self.release(class, released);
            }
        }
    }

    /// Returns depot magazines to the slabs, every empty slab and every TLSF pool the heap grew
    /// that is wholly free to the page source, then drains the source's own caches. Memory
    /// given to the arenas with [`TlsfHeap::add_memory`] stays; huge blocks are returned on
    /// free already.
    pub fn reclaim(&self) {
        for class in 0..HEAP_CLASSES {
            let mut released = Released::new();
            let mut state = self.classes[class].state.lock();
            let ClassState { depot, slabs } = &mut *state;
            for magazine in depot.drain(..) {
                for object in magazine.0 {
                    // SAFETY: depot objects are in-use objects of this class.
                    unsafe { free_to_slabs(slabs, object, &mut released) };
                    if released.is_full() {
                        self.release_locked(class, &mut released);
                    }
                }
            }
            while let Some(slab) = slabs.take_empty() {
                released.push(slab);
                if released.is_full() {
                    self.release_locked(class, &mut released);
                }
            }
            self.publish(class, &state);
            drop(state);
            self.release(class, released);
        }
        self.return_tlsf_pools();
        self.pages.drain();
    }

    /// Returns every TLSF pool in `tlsf_grow` that holds no allocated block to the page source
    /// (`TlsfHeap::remove_pool` takes it out of its arena and vacates its region entry).
    fn return_tlsf_pools(&self) {
        let mut pools = self.tlsf_grow.lock();
        let mut k = 0;
        while let Some(&(pool, bytes)) = pools.0.get(k) {
            if self
                .tlsf
                .remove_pool(NonNull::slice_from_raw_parts(pool, bytes))
                .is_err()
            {
                k += 1;
                continue;
            }
            pools.0.remove(k);
            // SAFETY: taken with `alloc_pages(bytes, SLAB_PAGE)`; the arenas no longer hold any
            // of it and never touch it again (removed above).
            unsafe { self.pages.free_pages(pool, bytes, SLAB_PAGE) };
            self.tlsf_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Releases slabs while holding the class lock (only when the batch is full: lock order
    /// class -> pages permits it).
    fn release_locked(&self, class: usize, released: &mut Released) {
        self.release(class, mem::take(released));
    }

    /// Statistics of class `class`; `None` when `class >= HEAP_CLASSES`.
    pub fn class_stats(&self, class: usize) -> Option<ClassStats> {
        let c = &self.classes.get(class)?.counters;
        let size = class_size(class);
        let mut allocated = load(&c.direct_net);
        let mut magazine_objects = 0;
        for slot in self.cpus.iter() {
            allocated = allocated.wrapping_add(load(&slot.counters[class].net));
            magazine_objects += fill(&slot.counters[class]);
        }
        let depot_objects = load(&c.depot_objects);
        let empty_slabs = load(&c.empty_slabs);
        Some(ClassStats {
            size,
            allocated,
            slabs: load(&c.slabs),
            empty_slabs,
            slab_inuse: load(&c.slab_inuse),
            magazine_objects,
            depot_objects,
            parked_bytes: (magazine_objects + depot_objects) * size
                + empty_slabs * slab_bytes(class),
        })
    }

    /// Statistics of CPU slot `cpu` (reduced modulo `CPUS`) and class `class`; `None` when
    /// `class >= HEAP_CLASSES`.
    pub fn cpu_stats(&self, cpu: usize, class: usize) -> Option<CpuClassStats> {
        let counters = self.cpus.get(cpu).counters.get(class)?;
        Some(CpuClassStats {
            net_allocations: load(&counters.net) as isize,
            magazine_fill: fill(counters),
        })
    }

    /// Whole-heap statistics.
    pub fn stats(&self) -> HeapStats {
        let mut stats = HeapStats {
            tlsf_pool_bytes: load(&self.tlsf_bytes),
            tlsf_direct_bytes: load(&self.tlsf_direct),
            huge_bytes: load(&self.huge_bytes),
            ..HeapStats::default()
        };
        for class in 0..HEAP_CLASSES {
            let Some(c) = self.class_stats(class) else {
                continue;
            };
            stats.slab_bytes += c.slabs * slab_bytes(class);
            stats.small_bytes += c.allocated.wrapping_mul(c.size);
            stats.parked_bytes += c.parked_bytes;
        }
        stats
    }

    /// Checks the heap, holding every CPU slot's lock and then each class's lock in turn: each
    /// class's slabs (`SlabCache::check`); every magazine object an in-use object of its class,
    /// held once across all magazines; previous magazines full or empty; depot
    /// magazines full; the published counters equal to the slabs'; the TLSF arenas.
    pub fn check(&self) -> Result<HeapStats, HeapCheckError> {
        let slots: ArrayVec<_, CPUS> = self.cpus.iter().map(|slot| slot.caches.lock()).collect();
        for class in 0..HEAP_CLASSES {
            let state = self.classes[class].state.lock();
            let error = |what| HeapCheckError::Magazine { class, what };
            let counts = state
                .slabs
                .check()
                .map_err(|error| HeapCheckError::Slab { class, error })?;
            let mut cached = 0;
            let mut objects = Objects::new();
            for (caches, slot) in slots.iter().zip(self.cpus.iter()) {
                let cache = &caches[class];
                let previous = cache.previous.0.len();
                if previous != 0 && previous != MAGAZINE {
                    return Err(error("a previous magazine is neither full nor empty"));
                }
                if fill(&slot.counters[class]) != cache.loaded.0.len() + previous {
                    return Err(error("a slot's counters disagree with its magazines"));
                }
            }
            if state.depot.iter().any(|m| m.0.len() != MAGAZINE) {
                return Err(error("a depot magazine is not full"));
            }
            let depot = state.depot.iter().flat_map(|m| m.0.iter());
            let cpus = slots.iter().flat_map(|caches| {
                let cache = &caches[class];
                cache.loaded.0.iter().chain(&cache.previous.0)
            });
            for &object in depot.chain(cpus) {
                // SAFETY: every magazine object came out of this class's slabs.
                if !unsafe { state.slabs.owns(object) } {
                    return Err(error(
                        "a magazine holds a pointer that is not an in-use object",
                    ));
                }
                objects.push(object);
                cached += 1;
            }
            if objects.has_repeats() {
                return Err(error("an object is in two magazines"));
            }
            if cached > counts.inuse {
                return Err(error("more objects cached than handed out of the slabs"));
            }
            let published = &self.classes[class].counters;
            if load(&published.slab_inuse) != counts.inuse || load(&published.slabs) != counts.slabs
            {
                return Err(error("published counters disagree with the slabs"));
            }
        }
        drop(slots);
        self.tlsf.check().map_err(HeapCheckError::Tlsf)?;
        Ok(self.stats())
    }
}

/// The magazine objects of one class collected by `check`, on the stack: `check` must not
/// allocate (the heap may be the global allocator, and `check` holds its locks). Repeats are
/// found by sorting; past `CHECK_OBJECTS` objects (more than 40 CPU slots) only the first
/// ones are compared.
struct Objects {
    seen: ArrayVec<usize, CHECK_OBJECTS>,
}

const CHECK_OBJECTS: usize = if cfg!(loom) { 64 } else { 4096 };

impl Objects {
    fn new() -> Self {
        Self {
            seen: ArrayVec::new(),
        }
    }

    fn push(&mut self, object: NonNull<u8>) {
        let _ = self.seen.try_push(object.as_ptr().addr());
    }

    fn has_repeats(&mut self) -> bool {
        self.seen.sort_unstable();
        self.seen.windows(2).any(|w| w[0] == w[1])
    }
}

/// Returns what the heap holds to its page source: every CPU's magazines and the depots go back
/// to the slabs, empty slabs and the TLSF pools to the pages. Slabs that still hold live objects
/// (a heap dropped with allocations outstanding) stay with the page source's caller.
impl<P: PageSource, const CPUS: usize> Drop for SmpHeap<P, CPUS> {
    fn drop(&mut self) {
        self.drain_cpu_caches();
        self.reclaim();
        let pools = mem::replace(&mut self.tlsf_grow.lock().0, ArrayVec::new_const());
        for (pool, bytes) in pools {
            // SAFETY: taken with `alloc_pages(bytes, SLAB_PAGE)`; the TLSF arenas over it are
            // dropped with the heap and never used again (`&mut self`).
            unsafe { self.pages.free_pages(pool, bytes, SLAB_PAGE) };
        }
    }
}

impl<P: PageSource + fmt::Debug, const CPUS: usize> fmt::Debug for SmpHeap<P, CPUS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmpHeap")
            .field("cpus", &CPUS)
            .field("stats", &self.stats())
            .field("pages", &self.pages)
            .finish_non_exhaustive()
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

/// `ptr` with the provenance its slab exposed (a no-op at run time).
#[inline(always)]
fn reissue(ptr: NonNull<u8>) -> NonNull<u8> {
    // SAFETY: the address is `ptr`'s, which is non-null.
    unsafe { NonNull::new_unchecked(ptr::with_exposed_provenance_mut(ptr.as_ptr().addr())) }
}

/// Records objects moved into (`inward`) and out of (`outward`) a slot's magazines; by the
/// slot's lock holder.
fn add_moved(counters: &CpuClassCounters, inward: usize, outward: usize) {
    store(
        &counters.moved,
        load(&counters.moved)
            .wrapping_add(inward)
            .wrapping_sub(outward),
    );
}

/// Objects in a slot's two magazines (a recent value while the slot is busy: the two loads
/// are not one snapshot).
fn fill(counters: &CpuClassCounters) -> usize {
    load(&counters.moved).wrapping_sub(load(&counters.net))
}

#[inline]
fn load(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

#[inline]
fn store(counter: &AtomicUsize, value: usize) {
    counter.store(value, Ordering::Relaxed);
}
