//! [`SmpHeap`]: the composition of the heap's layers. Calls go one way: the heap routes a
//! request ([`Route`]); small sizes go to the caches (per CPU slot: `cpu.rs`, magazines:
//! `magazine.rs`), which exchange whole magazines with the class layer (`depot.rs`: depot and
//! slabs), which takes slabs from the page source; the rest goes to the TLSF arenas or straight
//! to the page source (`large.rs`). Statistics and check errors: `stats.rs`.
//!
//! Protocol, invariants and loom models: DESIGN.md section 13 and `loom-tests/heap.rs`.
//! Cross-CPU frees go into the freeing CPU's magazine (Bonwick's choice); the depot carries
//! them back to allocating CPUs a magazine at a time (DESIGN.md 13.4 has the figures).

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use super::PageSource;
use super::cpu::{self, CpuCaches};
use super::depot::Depot;
use super::large::{Large, Resize};
use super::route::{HEAP_CLASSES, Route};
use super::stats::{ClassStats, CpuClassStats, HeapCheckError, HeapStats};
use crate::TlsfHeap;
use crate::byte::slab::class::{class_size, slab_bytes};
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
            Self { cpus: CpuCaches::new(), depot: Depot::new(), large: Large::new(), pages }
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
            Route::Tlsf => self.large.alloc_tlsf(layout, &self.pages),
            Route::Huge => self.large.alloc_huge(layout, &self.pages),
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
            Route::Tlsf => unsafe { self.large.free_tlsf(ptr, layout, &self.pages) },
            // SAFETY: caller: a huge block of this heap.
            Route::Huge => unsafe { self.large.free_huge(ptr, layout, &self.pages) },
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
                match unsafe { self.large.realloc_tlsf(ptr, layout, new_size, &self.pages) } {
                    Resize::Done(moved) => return Some(moved),
                    Resize::Refuse => return None,
                    Resize::Move => {}
                }
            }
            (Route::Huge, Route::Huge) => {
                // SAFETY: caller: a huge block of this heap with `layout`; the new layout is
                // formed.
                let moved = unsafe { self.large.realloc_huge(ptr, layout, new_size, &self.pages) };
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

    // ----- slab classes: the fast path ------------------------------------------------------

    #[inline(always)]
    fn alloc_small(&self, class: usize) -> Option<NonNull<u8>> {
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

    // ----- reclaim, statistics, check ------------------------------------------------------

    /// Returns every CPU's magazines to the slabs (for each slot: its lock, then each class's
    /// lock), releasing slabs beyond the empty-slab hysteresis to the page source. The CPUs keep
    /// working: a CPU whose slot is being drained takes the direct path meanwhile. With pin
    /// hooks (`percpu::set_pin_hooks`), only the calling CPU's slot: run it on each CPU.
    pub fn drain_cpu_caches(&self) {
        self.cpus.drain(&self.depot, &self.pages);
    }

    /// Returns depot magazines to the slabs, every empty slab and every TLSF pool the heap grew
    /// that is wholly free to the page source, then drains the source's own caches. Memory
    /// given to the arenas with [`TlsfHeap::add_memory`] stays; huge blocks are returned on
    /// free already.
    pub fn reclaim(&self) {
        self.depot.reclaim(&self.pages);
        self.large.return_pools(&self.pages);
        self.pages.drain();
    }

    /// Statistics of class `class`; `None` when `class >= HEAP_CLASSES`.
    pub fn class_stats(&self, class: usize) -> Option<ClassStats> {
        if class >= HEAP_CLASSES {
            return None;
        }
        let counts = self.depot.counts(class);
        let size = class_size(class);
        let mut allocated = counts.direct_net;
        let mut magazine_objects = 0;
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
    /// magazines full; the published counters equal to the slabs'; the TLSF arenas. With pin
    /// hooks, only the calling CPU's slot is locked and its objects checked one by one; the
    /// other CPUs' slots are seen through their counters (DESIGN.md 4.1).
    pub fn check(&self) -> Result<HeapStats, HeapCheckError> {
        let slots = self.cpus.lock_and_check()?;
        for class in 0..HEAP_CLASSES {
            self.depot.check(class, cpu::cached(&slots, class))?;
        }
        drop(slots);
        self.tlsf().check().map_err(HeapCheckError::Tlsf)?;
        Ok(self.stats())
    }
}

/// Returns what the heap holds to its page source: every CPU's magazines and the depots go back
/// to the slabs, empty slabs and the TLSF pools to the pages. Slabs that still hold live objects
/// (a heap dropped with allocations outstanding) stay with the page source's caller.
impl<P: PageSource, const CPUS: usize> Drop for SmpHeap<P, CPUS> {
    fn drop(&mut self) {
        self.cpus.drain_exclusive(&self.depot, &self.pages);
        self.reclaim();
        // SAFETY: `&mut self`: the arenas are never used again.
        unsafe { self.large.free_pools(&self.pages) };
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

/// `ptr` with the provenance its slab exposed (a no-op at run time).
#[inline(always)]
fn reissue(ptr: NonNull<u8>) -> NonNull<u8> {
    // SAFETY: the address is `ptr`'s, which is non-null.
    unsafe { NonNull::new_unchecked(ptr::with_exposed_provenance_mut(ptr.as_ptr().addr())) }
}
