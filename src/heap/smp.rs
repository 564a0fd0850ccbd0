//! [`SmpHeap`]: the composition of the heap's layers. Calls go one way: the heap routes a
//! request ([`Route`]); small sizes go to the caches (per CPU slot: `cpu.rs`, magazines:
//! `magazine.rs`), which exchange whole magazines with the class layer (`depot.rs`: depot and
//! slabs), which takes slabs from the page source; the rest goes to the TLSF arenas or straight
//! to the page source (`large.rs`). Statistics and check errors: `stats.rs`.
//!
//! Protocol, invariants and loom models: docs/design/08-heap.md and `loom-tests/heap.rs`.
//! Cross-CPU frees go into the freeing CPU's magazine (Bonwick's choice); the depot carries
//! them back to allocating CPUs a magazine at a time (docs/design/08-heap.md §"The depot and cross-CPU frees" has the figures).

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use arrayvec::ArrayVec;

use super::PageSource;
use super::cpu::{self, CpuCaches};
use super::depot::Depot;
use super::large::{Large, Resize};
use super::pagemap::{Owner, PAGE, PageMap, Tally};
use super::route::{ALIGN_16, HEAP_CLASSES, Route, class_16};
use super::stats::{CheckError, ClassStats, CpuClassStats, HeapStats};
use super::thread::Threads;
use crate::TlsfHeap;
use crate::byte::slab::class::{class_size, objects_per_slab, size_divisor, slab_bytes};
use crate::heap::source::huge_bytes;
use crate::sync::loom_const_fn;

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
    /// Per-thread caches (std, no CPU-id source registered; docs/design/08-heap.md §"Thread caches (std)").
    threads: Threads,
    cpus: CpuCaches<CPUS>,
    depot: Depot,
    large: Large,
    pages: P,
}

// SAFETY: magazines hold pointers to objects owned by the heap; all state is behind `SpinLock`s
// or in atomics, and `P: Sync`.
unsafe impl<P: PageSource, const CPUS: usize> Sync for SmpHeap<P, CPUS> {}
// SAFETY: as above; the heap owns what its magazines and slabs point to.
unsafe impl<P: PageSource + Send, const CPUS: usize> Send for SmpHeap<P, CPUS> {}

impl<P: PageSource, const CPUS: usize> SmpHeap<P, CPUS> {
    loom_const_fn! {
        /// A heap over `pages` with nothing allocated yet (`const`: a `static` or
        /// `#[global_allocator]`).
        pub fn new(pages: P) -> Self {
            Self {
                threads: Threads::new(),
                cpus: CpuCaches::new(),
                depot: Depot::new(),
                large: Large::new(),
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
        self.large.tlsf()
    }

    /// Allocates `layout`. `None` only when the page source refuses (nothing changed): a
    /// TLSF-route request the arenas cannot serve grows them, or, when they cannot grow (16
    /// pools held, or no pool of the size needed), is served straight from the page source
    /// (a *direct block*, docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks"). Size 0 gets a dangling
    /// pointer aligned to the layout (freeing it is a no-op). Any alignment a `Layout` can hold
    /// is honoured; alignments above 4 KiB are served by the page source, which refuses what it
    /// cannot align.
    ///
    /// # Time Complexity
    /// O(1): a magazine pop on the fast path; a magazine exchange or a refill of at most
    /// [`MAGAZINE`](super::MAGAZINE) objects otherwise; O(1) TLSF; the page source's cost for huge blocks.
    #[inline(always)]
    pub fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        match Route::of(layout) {
            Route::Small(class) => self.alloc_small(class),
            _ => self.alloc_large(layout),
        }
    }

    /// Allocates `size` bytes aligned to 16 (C's `malloc`; size 0 is served as 1, so that the
    /// block is unique and [`free`](Self::free) takes it): the block
    /// `allocate(Layout(max(size, 1), 16))` gives, the slab class found with one table load.
    /// `None` when the page source refuses or `max(size, 1)` rounded up to 16 overflows
    /// `isize::MAX` (nothing changed).
    ///
    /// # Time Complexity
    /// As for [`allocate`](Self::allocate).
    #[inline(always)]
    pub fn allocate_16(&self, size: usize) -> Option<NonNull<u8>> {
        match class_16(size) {
            Some(class) => self.alloc_small(class),
            None => self.allocate_16_large(size),
        }
    }

    /// [`allocate_16`](Self::allocate_16) above the slab classes, out of line.
    #[inline(never)]
    fn allocate_16_large(&self, size: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(size.max(1), ALIGN_16).ok()?;
        self.alloc_large(layout)
    }

    /// The routes other than `Small`, out of line so that the small path stays a leaf.
    #[inline(never)]
    fn alloc_large(&self, layout: Layout) -> Option<NonNull<u8>> {
        match Route::of(layout) {
            Route::Small(class) => self.alloc_small(class),
            Route::Zero => Some(crate::byte::dangling(layout.align())),
            Route::Tlsf => self.large.alloc_tlsf(layout, &self.pages, self.map()),
            Route::Huge => self.large.alloc_huge(layout, &self.pages, self.map()),
        }
    }

    /// Frees `ptr`, allocated from this heap with `layout`. Size 0 is a no-op.
    ///
    /// Bad input: a pointer this heap did not allocate, or a double free, is undefined
    /// behaviour for small sizes in release builds (the magazines do not look at the object,
    /// which is what makes them fast); debug builds check the slab header of every small free
    /// (panic on a foreign pointer) and refuse a double free into the same magazine. TLSF
    /// frees check the block header in every build (ignored in release, panic in debug). A
    /// TLSF-route pointer in no TLSF region, or a huge-route pointer, that starts no direct or
    /// huge block the page map knows is ignored, the page source untouched (panic in debug);
    /// huge and direct blocks are freed with the layout the map recorded.
    ///
    /// # Safety
    /// `ptr` was returned by this heap's `allocate` (or `reallocate`) for `layout` and has not
    /// been freed since.
    #[inline(always)]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match Route::of(layout) {
            // SAFETY: caller.
            Route::Small(class) => unsafe { self.free_small(ptr, class) },
            // SAFETY: caller.
            _ => unsafe { self.free_large(ptr, layout) },
        }
    }

    /// The routes other than `Small`, out of line so that the small path stays a leaf.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline(never)]
    unsafe fn free_large(&self, ptr: NonNull<u8>, layout: Layout) {
        match Route::of(layout) {
            // SAFETY: caller.
            Route::Small(class) => unsafe { self.free_small(ptr, class) },
            Route::Zero => {}
            // SAFETY: caller: a TLSF block of this heap.
            Route::Tlsf => unsafe { self.large.free_tlsf(ptr, &self.pages, self.map()) },
            // SAFETY: caller: a huge block of this heap.
            Route::Huge => unsafe {
                self.large.free_block(ptr, &self.pages, self.map(), false);
            },
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
                // SAFETY: caller: a TLSF-route block of this heap; the new layout is formed.
                let resized = unsafe {
                    self.large
                        .realloc_tlsf(ptr, layout, new_size, &self.pages, self.map())
                };
                match resized {
                    Resize::Done(moved) => return Some(moved),
                    Resize::Refuse => return None,
                    Resize::Move => {}
                }
            }
            (Route::Huge, Route::Huge) => {
                // A huge block the map does not know is no live block: refused, untouched.
                let Some(Owner::Huge(recorded)) = self.map().get(ptr.as_ptr().addr()) else {
                    return None;
                };
                // SAFETY: caller and the map: a live huge block with the recorded layout.
                let moved = unsafe {
                    self.large.realloc_block(
                        ptr,
                        recorded,
                        new_size,
                        &self.pages,
                        self.map(),
                        false,
                    )
                };
                if moved.is_some() {
                    return moved;
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

    // ----- frees and sizes without a layout (docs/design/08-heap.md §"Frees without a layout: the page map") -------------------------------

    /// The page map (its nodes are in [`map_bytes`](Self::map_bytes)).
    #[inline(always)]
    fn map(&self) -> &PageMap {
        self.depot.map()
    }

    /// Bytes of page-map nodes held from the page source (one 4 KiB node per 2 MiB of address
    /// space holding slabs or huge and direct blocks, with `std` one 32 KiB node per 16 MiB,
    /// plus the inner nodes; `reclaim` returns the empty ones). The page source's count of
    /// held bytes includes them.
    pub fn map_bytes(&self) -> usize {
        self.map().node_bytes()
    }

    /// Whether `addr`, in a slab of `class`, is an object's start (not inside an object or in
    /// the slab's header). One multiplication, no division (C's `free` calls this on every
    /// small free): the offset in the slab is a multiple of the size exactly when its product
    /// with `ceil(2^64 / size)` wraps to below that constant (Lemire, Kaser and Kurz, "Faster
    /// remainder by direct computation", 2019: exact for offsets below 2^32), and it is an
    /// object's when it is below `objects * size`.
    #[inline(always)]
    fn object_start(addr: usize, class: usize) -> bool {
        let g = &GEOMETRY[class];
        let offset = (addr & g.mask) as u64;
        offset.wrapping_mul(g.divisor) < g.divisor && offset < g.end
    }

    /// Frees the block at `ptr` without its layout (C's `free`): the route comes from the
    /// page map (docs/design/08-heap.md §"Frees without a layout: the page map"), O(1): a slab object goes to the magazines as
    /// [`deallocate`](Self::deallocate) does, a TLSF block to its arena, a huge or direct block
    /// to the page source with the layout recorded for it. A pointer in page 0 (a size-0
    /// block's dangling pointer, alignment below 4096) is a no-op; a size-0 block aligned to
    /// 4096 or more has a dangling address that may be a real page: free it with
    /// `deallocate` (a no-op), not here.
    ///
    /// Bad input (docs/design/08-heap.md §"Errors"): a pointer in no page of this heap (foreign, or a huge or
    /// direct block freed already) and a pointer inside a slab object, a slab header or a
    /// huge block are ignored, the memory untouched, in release builds, and panic in debug
    /// builds. A pointer inside a TLSF block is refused by the block header check (§12's
    /// limits). A double free of a small object is undefined behaviour in release builds, as
    /// for `deallocate` (debug builds panic while it is in the loaded magazine or back in its
    /// slab); a huge block freed twice is ignored unless its pages were handed out again.
    ///
    /// # Safety
    /// `ptr` was returned by this heap's `allocate` or a reallocation and has not been freed
    /// since; a bad pointer (above) must not be passed while [`reclaim`](Self::reclaim) runs
    /// (it returns empty map nodes), and one inside a TLSF block must not point at bytes the
    /// caller wrote to mimic a block header.
    ///
    /// # Time Complexity
    /// O(1): four loads of the page map, then the route's free.
    #[inline(always)]
    pub unsafe fn free(&self, ptr: NonNull<u8>) {
        let addr = ptr.as_ptr().addr();
        if addr < PAGE {
            return;
        }
        match self.map().slab_class(addr) {
            Ok(class) if Self::object_start(addr, class) => {
                // SAFETY: caller: a live object of `class` (the map names its slab's class).
                unsafe { self.free_small(ptr, class) };
            }
            // SAFETY: caller.
            Ok(_) => unsafe { self.free_other(ptr, None) },
            // SAFETY: caller.
            Err(entry) => unsafe { self.free_other(ptr, Some(entry)) },
        }
    }

    /// [`free`](Self::free) of anything but a slab object's start, out of line: `entry` is the
    /// page's raw map entry (`Some(None)`: none), `None` for a pointer inside a slab.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(never)]
    unsafe fn free_other(&self, ptr: NonNull<u8>, entry: Option<Option<u64>>) {
        let Some(entry) = entry else {
            debug_assert!(false, "SmpHeap::free: a pointer inside a slab object");
            return;
        };
        match PageMap::owner_of(entry, ptr.as_ptr().addr()) {
            // Not reached: `free` decodes slab entries itself.
            Some(Owner::Slab(_)) => debug_assert!(false, "SmpHeap::free: a slab entry"),
            Some(Owner::Huge(_)) => {
                // SAFETY: caller: the live huge block the map recorded at `ptr`.
                unsafe { self.large.free_block(ptr, &self.pages, self.map(), false) };
            }
            Some(Owner::Direct(_)) => {
                // SAFETY: caller: the live direct block the map recorded at `ptr`.
                unsafe { self.large.free_block(ptr, &self.pages, self.map(), true) };
            }
            None => {
                // SAFETY: caller: a TLSF block of this heap, or a bad pointer that the region
                // lookup misses (nothing touched) or the header check refuses.
                if !unsafe { self.tlsf().deallocate_in_region(ptr) } {
                    debug_assert!(false, "SmpHeap::free: not a block of this heap");
                }
            }
        }
    }

    /// The bytes usable at `ptr` (C's `malloc_usable_size`): at least the size it was
    /// allocated with, and writing that many bytes is legal. A slab object: its class size; a
    /// TLSF block: its payload; a huge or direct block:
    /// [`PageSource::huge_usable`] (whole pages by default; `SystemPages`: the size asked).
    /// `Some(0)` in page 0 (a size-0 block); `None`, touching nothing, for a pointer the heap
    /// does not know as a block start (the bad inputs of [`free`](Self::free)).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    ///
    /// # Time Complexity
    /// O(1) (a TLSF block: its arena's lock, to check its header).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Option<usize> {
        let addr = ptr.as_ptr().addr();
        if addr < PAGE {
            return Some(0);
        }
        match self.map().get(addr) {
            Some(Owner::Slab(class)) => Self::object_start(addr, class).then(|| class_size(class)),
            Some(Owner::Huge(layout) | Owner::Direct(layout)) => {
                Some(self.pages.huge_usable(layout))
            }
            // SAFETY: caller.
            None => unsafe { self.tlsf().usable_in_region(ptr) }.flatten(),
        }
    }

    /// Resizes the block at `ptr` to `new_size` bytes aligned to `align`, without its old
    /// layout (C's `realloc` passes `align = 16`; an `aligned_alloc`'ed block keeps more only
    /// if asked). The result is the block `allocate(Layout(new_size, align))` would give as far
    /// as the sized API goes (it may be freed with [`free`](Self::free) or with
    /// `deallocate(ptr, Layout(new_size, align))`). In place when the route stays: the same
    /// slab class, TLSF in place, or the page source's `realloc_huge` for a huge or direct
    /// block aligned at least to `align`; otherwise allocate, copy
    /// `min(usable_size, new_size)` bytes, free. A pointer in page 0 (a size-0 block) is
    /// allocated afresh.
    ///
    /// `None` leaves the block untouched: out of memory, `align` not a power of two or
    /// `new_size` overflowing a `Layout`, or a pointer the heap does not know as a block start
    /// (the bad inputs of [`free`](Self::free)).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    pub unsafe fn reallocate_unsized(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let new_layout = Layout::from_size_align(new_size, align).ok()?;
        let addr = ptr.as_ptr().addr();
        if addr < PAGE {
            return self.allocate(new_layout);
        }
        let route = Route::of(new_layout);
        let old = match self.map().get(addr) {
            Some(Owner::Slab(class)) => {
                if !Self::object_start(addr, class) {
                    return None;
                }
                if route == Route::Small(class) {
                    return Some(ptr);
                }
                class_size(class)
            }
            Some(owner @ (Owner::Huge(layout) | Owner::Direct(layout))) => {
                let direct = matches!(owner, Owner::Direct(_));
                let stays = if direct { Route::Tlsf } else { Route::Huge };
                if route == stays && layout.align() >= align {
                    // SAFETY: caller and the map: a live block of that kind and layout.
                    let moved = unsafe {
                        self.large.realloc_block(
                            ptr,
                            layout,
                            new_size,
                            &self.pages,
                            self.map(),
                            direct,
                        )
                    };
                    if moved.is_some() {
                        return moved;
                    }
                }
                self.pages.huge_usable(layout)
            }
            None => {
                // SAFETY: caller.
                let usable = unsafe { self.tlsf().usable_in_region(ptr) }??;
                if route == Route::Tlsf {
                    // In place, or moved inside the arenas (`Layout(usable, align)`: copies
                    // the whole payload). `None`: moved below (with growth).
                    let layout = Layout::from_size_align(usable, align).ok()?;
                    // SAFETY: a live TLSF block (caller; its header checked above).
                    if let Some(moved) = unsafe { self.tlsf().reallocate(ptr, layout, new_size) } {
                        return Some(moved);
                    }
                }
                usable
            }
        };
        let new = self.allocate(new_layout)?;
        // SAFETY: `old` bytes are usable at `ptr` (caller: live); `new` is a fresh block of
        // `new_size` bytes; distinct blocks.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old.min(new_size));
            self.free(ptr);
        }
        Some(new)
    }

    // ----- slab classes: the fast path ------------------------------------------------------

    /// With thread caches: a pop from the calling thread's cache, everything else out of line.
    /// Without (a kernel): this CPU's slot.
    #[inline(always)]
    fn alloc_small(&self, class: usize) -> Option<NonNull<u8>> {
        if Threads::ENABLED {
            if let Some(record) = self.threads.current() {
                // SAFETY: the calling thread's record, bound to this heap.
                if let Some(object) = unsafe { record.pop(class) } {
                    return Some(object);
                }
            }
            return self.alloc_small_slow(class);
        }
        self.alloc_small_cpu(class)
    }

    /// The thread cache is empty, or the thread has none bound to this heap yet (bind it), or
    /// uses CPU slots.
    #[inline(never)]
    fn alloc_small_slow(&self, class: usize) -> Option<NonNull<u8>> {
        let record = match self.threads.current() {
            Some(record) => record,
            None => match self.threads.bind(&self.depot, &self.pages) {
                Some(record) => record,
                None => return self.alloc_small_cpu(class),
            },
        };
        // SAFETY: the calling thread's record, bound to this heap.
        unsafe { record.alloc(class, &self.depot, &self.pages) }
    }

    /// Allocation through this CPU's slot (a kernel, or a std thread without a thread cache).
    #[inline(always)]
    fn alloc_small_cpu(&self, class: usize) -> Option<NonNull<u8>> {
        let Some((slot, mut caches)) = self.cpus.lock_current() else {
            return self.depot.alloc_one(class, &self.pages);
        };
        let magazines = &mut caches[class];
        let counters = &slot.counters[class];
        let object = match magazines.loaded.0.pop() {
            Some(object) => object,
            None => magazines.refill(counters, &self.depot, class, &self.pages)?,
        };
        counters.allocated();
        Some(object)
    }

    /// # Safety
    /// `ptr` is an object of `class` allocated from this heap and not freed since.
    #[inline(always)]
    unsafe fn free_small(&self, ptr: NonNull<u8>, class: usize) {
        // Magazines re-issue objects: keep the slab's exposed provenance, not the caller's
        // (which may cover only the caller's layout; see `SlabCache::init_slab`).
        let ptr = reissue(ptr);
        #[cfg(debug_assertions)]
        self.depot.debug_check_owned(ptr, class);
        if Threads::ENABLED {
            if let Some(record) = self.threads.current() {
                // SAFETY: the calling thread's record, bound to this heap; `ptr` as the caller
                // says.
                if unsafe { record.push(ptr, class) } {
                    return;
                }
            }
            // SAFETY: caller.
            return unsafe { self.free_small_slow(ptr, class) };
        }
        // SAFETY: caller.
        unsafe { self.free_small_cpu(ptr, class) }
    }

    /// The thread cache is full, or the thread has none bound to this heap yet, or uses CPU
    /// slots.
    ///
    /// # Safety
    /// As for [`free_small`](Self::free_small); `ptr` re-issued.
    #[inline(never)]
    unsafe fn free_small_slow(&self, ptr: NonNull<u8>, class: usize) {
        let record = match self.threads.current() {
            Some(record) => record,
            None => match self.threads.bind(&self.depot, &self.pages) {
                Some(record) => record,
                // SAFETY: caller.
                None => return unsafe { self.free_small_cpu(ptr, class) },
            },
        };
        // SAFETY: the calling thread's record, bound to this heap; `ptr` as the caller says.
        unsafe { record.free(ptr, class, &self.depot, &self.pages) }
    }

    /// Free through this CPU's slot.
    ///
    /// # Safety
    /// As for [`free_small`](Self::free_small); `ptr` re-issued.
    #[inline(always)]
    unsafe fn free_small_cpu(&self, ptr: NonNull<u8>, class: usize) {
        let Some((slot, mut caches)) = self.cpus.lock_current() else {
            // SAFETY: caller.
            return unsafe { self.depot.free_one(class, &self.pages, ptr) };
        };
        let magazines = &mut caches[class];
        debug_assert!(
            !magazines.loaded.0.contains(&ptr),
            "SmpHeap::deallocate: double free"
        );
        let counters = &slot.counters[class];
        if magazines.loaded.0.try_push(ptr).is_err() {
            // SAFETY: caller.
            unsafe { magazines.spill(counters, &self.depot, class, &self.pages, ptr) };
        }
        counters.freed();
    }

    // ----- fork (docs/design/08-heap.md §"Fork") -----------------------------------------------------------

    /// Takes every lock of the heap and of its page source and keeps them, so that a `fork`
    /// finds no lock held by a thread the child will not have: call it in a `pthread_atfork`
    /// *prepare* handler and [`unlock_after_fork`](Self::unlock_after_fork) in the *parent*
    /// and *child* handlers. The order (docs/design/08-heap.md §"Fork"): the thread-cache registry, the
    /// process-wide record pool, the CPU slots (none with pin hooks), each class's slabs,
    /// the TLSF growth lock, the TLSF arenas, the page map's writers, then
    /// [`PageSource::lock_for_fork`]. While they are held, every other thread that needs one
    /// of them waits (thread-cache pops and pushes do not).
    ///
    /// In the child, what the vanished threads were doing is lost, never waited on: their
    /// thread caches stay bound (their objects leak), and a depot slot one of them had
    /// claimed stays claimed (at most a magazine of objects leaks).
    ///
    /// Bad input: the record pool is process-wide, so this must not be called again (on any
    /// heap) before `unlock_after_fork`: the second call waits forever. One heap per fork
    /// handler set, or lock them in one handler with the pool taken once (not offered).
    pub fn lock_for_fork(&self) {
        self.threads.lock_for_fork();
        self.cpus.lock_for_fork();
        self.depot.lock_for_fork();
        self.large.lock_for_fork();
        self.map().lock_for_fork();
        self.pages.lock_for_fork();
    }

    /// Releases every lock [`lock_for_fork`](Self::lock_for_fork) took (the page source's
    /// first, then the heap's in reverse order; releasing never waits).
    ///
    /// # Safety
    /// The calling thread called `lock_for_fork` and has not called this since (or the
    /// calling thread is the child of a `fork` made by such a thread), and the pin mode
    /// (`percpu::set_pin_hooks`) has not changed since.
    pub unsafe fn unlock_after_fork(&self) {
        // SAFETY: caller: every lock below is held since `lock_for_fork`.
        unsafe {
            self.pages.unlock_after_fork();
            self.map().unlock_after_fork();
            self.large.unlock_after_fork();
            self.depot.unlock_after_fork();
            self.cpus.unlock_after_fork();
            self.threads.unlock_after_fork();
        }
    }

    // ----- reclaim, statistics, check ------------------------------------------------------

    /// Returns every CPU's magazines to the slabs (for each slot: its lock, then each class's
    /// lock), releasing slabs beyond the empty-slab hysteresis to the page source. The CPUs keep
    /// working: a CPU whose slot is being drained takes the direct path meanwhile. With pin
    /// hooks (`percpu::set_pin_hooks`), only the calling CPU's slot: run it on each CPU.
    ///
    /// With thread caches (std, docs/design/08-heap.md §"Thread caches (std)"): also the calling thread's cache and the
    /// caches of threads that exited; other live threads keep theirs (at most two magazines
    /// per class each) until they exit.
    pub fn drain_cpu_caches(&self) {
        self.threads.flush_current(&self.depot, &self.pages);
        self.threads.collect(&self.depot, &self.pages);
        self.cpus.drain(&self.depot, &self.pages);
    }

    /// Returns depot magazines to the slabs, every empty slab and every TLSF pool the heap grew
    /// that is wholly free to the page source, then drains the source's own caches. Memory
    /// given to the arenas with [`TlsfHeap::add_memory`] stays; huge blocks are returned on
    /// free already.
    pub fn reclaim(&self) {
        self.threads.collect(&self.depot, &self.pages);
        self.depot.reclaim(&self.pages);
        self.large.return_pools(&self.pages);
        self.map().prune(&self.pages);
        self.pages.drain();
    }

    /// Statistics of class `class`; `None` when `class >= HEAP_CLASSES`.
    pub fn class_stats(&self, class: usize) -> Option<ClassStats> {
        if class >= HEAP_CLASSES {
            return None;
        }
        let counts = self.depot.counts(class);
        let size = class_size(class);
        let (thread_net, thread_fill, _) = self.threads.counts(class);
        let mut allocated = counts.direct_net.wrapping_add(thread_net);
        let mut magazine_objects = thread_fill;
        for slot in self.cpus.iter() {
            allocated = allocated.wrapping_add(slot.counters[class].net());
            magazine_objects += slot.counters[class].fill();
        }
        Some(ClassStats {
            size,
            allocated,
            slabs: counts.slabs,
            empty_slabs: counts.empty_slabs,
            slab_inuse: counts.slab_inuse,
            magazine_objects,
            depot_objects: counts.depot_objects,
            parked_bytes: (magazine_objects + counts.depot_objects) * size
                + counts.empty_slabs * slab_bytes(class),
        })
    }

    /// Statistics of CPU slot `cpu` (reduced modulo `CPUS`) and class `class`; `None` when
    /// `class >= HEAP_CLASSES`.
    pub fn cpu_stats(&self, cpu: usize, class: usize) -> Option<CpuClassStats> {
        let counters = self.cpus.slot(cpu).counters.get(class)?;
        Some(CpuClassStats {
            net_allocations: counters.net() as isize,
            magazine_fill: counters.fill(),
        })
    }

    /// Whole-heap statistics.
    pub fn stats(&self) -> HeapStats {
        let (tlsf_pool_bytes, tlsf_direct_bytes, huge_bytes) = self.large.bytes();
        let mut stats = HeapStats {
            tlsf_pool_bytes,
            tlsf_direct_bytes,
            huge_bytes,
            thread_caches: self.threads.counts(0).2,
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
    /// magazines full; the published counters equal to the slabs'; the TLSF arenas; the page
    /// map against the slabs (every class's slab pages recorded, each slab's pages mapping to
    /// its class), the huge and direct byte counts, and the TLSF regions (no entry in one).
    /// With pin hooks, only the calling CPU's slot is locked and its objects checked one by
    /// one; the other CPUs' slots are seen through their counters (docs/design/02-percpu.md §"The CPU-local section (pinned mode)").
    ///
    /// With thread caches: first collects the caches of threads that exited; checks the calling
    /// thread's cache in full (other live threads' caches are theirs: their objects count as
    /// handed out).
    pub fn check(&self) -> Result<HeapStats, CheckError> {
        self.threads.collect(&self.depot, &self.pages);
        let slots = self.cpus.lock_and_check()?;
        for class in 0..HEAP_CLASSES {
            let mut own = ArrayVec::new();
            self.threads.check_current(class, &mut own)?;
            self.depot
                .check(class, cpu::cached(&slots, class).chain(own.iter()))?;
        }
        drop(slots);
        self.tlsf().check().map_err(CheckError::Tlsf)?;
        let tlsf = self.tlsf();
        let in_pool = |addr: usize| {
            NonNull::new(ptr::without_provenance_mut(addr)).is_some_and(|p| tlsf.in_region(p))
        };
        // The large blocks' counters change under the map's lock: compared under it.
        let counters_agree = |tally: &Tally| {
            let (_, direct, huge) = self.large.bytes();
            if tally.huge.1 != huge || tally.direct.1 != direct {
                return Err("huge or direct bytes disagree with the map's blocks");
            }
            Ok(())
        };
        self.depot
            .check_map(&huge_bytes, &in_pool, &counters_agree)?;
        Ok(self.stats())
    }
}

/// Returns what the heap holds to its page source: every CPU's magazines and the depots go back
/// to the slabs, empty slabs and the TLSF pools to the pages. Slabs that still hold live objects
/// (a heap dropped with allocations outstanding) stay with the page source's caller.
impl<P: PageSource, const CPUS: usize> Drop for SmpHeap<P, CPUS> {
    fn drop(&mut self) {
        self.threads.unbind_all(&self.depot, &self.pages);
        self.cpus.drain_exclusive(&self.depot, &self.pages);
        self.reclaim();
        // SAFETY: `&mut self`: the arenas are never used again.
        unsafe { self.large.free_pools(&self.pages) };
        self.depot.map_mut().free_all(&self.pages);
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

/// A class's slab geometry for [`SmpHeap::object_start`].
#[derive(Clone, Copy)]
struct Geometry {
    /// `slab_bytes - 1`: an address's offset in its slab.
    mask: usize,
    /// The class's `size_divisor` (`ceil(2^64 / size)`): `offset * divisor` (wrapping) is
    /// below `divisor` exactly when `size` divides `offset` (checked for every offset of every
    /// class by the unit test below and `class::tests::geometry_is_the_division`).
    divisor: u64,
    /// `objects * size`: the end of the last object.
    end: u64,
}

const GEOMETRY: [Geometry; HEAP_CLASSES] = {
    let mut table = [Geometry {
        mask: 0,
        divisor: 0,
        end: 0,
    }; HEAP_CLASSES];
    let mut class = 0;
    while class < HEAP_CLASSES {
        assert!(slab_bytes(class) <= 1 << 16);
        table[class] = Geometry {
            mask: slab_bytes(class) - 1,
            divisor: size_divisor(class),
            end: (objects_per_slab(class) * class_size(class)) as u64,
        };
        class += 1;
    }
    table
};

/// `ptr` with the provenance its slab exposed (a no-op at run time).
#[inline(always)]
fn reissue(ptr: NonNull<u8>) -> NonNull<u8> {
    // SAFETY: the address is `ptr`'s, which is non-null.
    unsafe { NonNull::new_unchecked(ptr::with_exposed_provenance_mut(ptr.as_ptr().addr())) }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::*;
    use crate::heap::SystemPages;

    /// The divisibility test gives the division's answer at every offset of every class's slab.
    #[test]
    fn object_start_is_the_division() {
        for class in 0..HEAP_CLASSES {
            let size = class_size(class);
            for offset in 0..slab_bytes(class) {
                let divided = offset % size == 0 && offset / size < objects_per_slab(class);
                // Slabs are aligned to their size: any slab base works.
                let addr = 64 * slab_bytes(class) + offset;
                assert_eq!(
                    SmpHeap::<SystemPages>::object_start(addr, class),
                    divided,
                    "class {class} offset {offset}"
                );
            }
        }
    }
}
