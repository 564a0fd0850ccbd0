//! The TLSF route and huge blocks: odd alignments and sizes above the slab classes up to
//! [`HUGE`](super::route::HUGE) from TLSF arenas that grow from the page source, larger blocks straight
//! from the page source.
//!
//! **TLSF growth** (docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks", G1-G2, D1-D3) allocates the grower's block from its new pool
//! in the critical section that adds the pool, so no other thread takes it first; when no pool
//! can be added the request is a *direct block* from the page source, which a free recognises
//! by its address lying in no TLSF region and the page map recording a direct block there
//! (docs/design/08-heap.md §"Frees without a layout: the page map"). Huge and direct blocks are recorded in the page map with their layout,
//! which their frees use.

use core::alloc::Layout;
use core::ptr::NonNull;

use arrayvec::ArrayVec;

use super::PageSource;
use super::pagemap::{MAX_BLOCK, Owner, PAGE, PageMap};
use super::source::huge_bytes;
use super::stats::load;
use crate::TlsfHeap;
use crate::byte::slab::class::SLAB_PAGE;
use crate::lock::SpinLock;
use crate::percpu;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::loom_const_fn;
use crate::sync::model::SIZES;

/// The first TLSF pool taken from the pages; each one taken while others are held is twice the
/// size for each held one (`TLSF_CHUNK << held`). 8 KiB under loom, so a model's pool holds
/// one block of a few KiB and growths race for it.
const TLSF_CHUNK: usize = SIZES.tlsf_chunk;

/// The TLSF pools a heap took from its page source and still holds: `(start, bytes)`, each
/// taken with `alloc_pages(bytes, 4096)`. At most as many as `TlsfHeap` has regions (16); when
/// they are all held (or the source has no pool of the size needed), TLSF-route requests the
/// arenas cannot serve are *direct blocks* from the page source (docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks"). Only these
/// pools are ever returned by `reclaim` (never memory a kernel gave with
/// `TlsfHeap::add_memory`).
struct Pools(ArrayVec<(NonNull<u8>, usize), 16>);

// SAFETY: the pointers name memory the heap owns; only the `grow` lock holder (or `drop`)
// reads them.
unsafe impl Send for Pools {}

/// What [`Large::realloc_tlsf`] did.
pub(super) enum Resize {
    /// Resized (in place or moved by the page source).
    Done(NonNull<u8>),
    /// Not resizable where it is: allocate, copy, free.
    Move,
    /// Not a live block of this heap: nothing changes, the reallocation fails.
    Refuse,
}

/// The TLSF arenas with their growth, direct blocks and huge blocks.
pub(super) struct Large {
    tlsf: TlsfHeap<4>,
    /// Serialises TLSF growth and pool return; holds the pools taken from the page source and
    /// not yet returned (`return_pools` returns the free ones, `free_pools` the rest).
    grow: SpinLock<Pools>,
    pool_bytes: AtomicUsize,
    /// Bytes of live direct blocks (TLSF-route blocks from `PageSource::alloc_huge`, each
    /// counted as `huge_bytes(size)`, at least one page), changed under the page map's lock
    /// (statistics; the map tells a direct block, docs/design/08-heap.md §"Frees without a layout: the page map").
    direct_bytes: AtomicUsize,
    huge_bytes: AtomicUsize,
}

impl Large {
    loom_const_fn! {
        pub(super) fn new() -> Self {
            Self {
                tlsf: TlsfHeap::new(),
                grow: SpinLock::new(Pools(ArrayVec::new_const())),
                pool_bytes: AtomicUsize::new(0),
                direct_bytes: AtomicUsize::new(0),
                huge_bytes: AtomicUsize::new(0),
            }
        }
    }

    /// Takes the growth lock, then the arenas' locks, and keeps them (docs/design/08-heap.md §"Fork").
    pub(super) fn lock_for_fork(&self) {
        self.grow.lock_held();
        self.tlsf.lock_for_fork();
    }

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took.
    ///
    /// # Safety
    /// The caller (or the forked child of it) holds them from `lock_for_fork`.
    pub(super) unsafe fn unlock_after_fork(&self) {
        // SAFETY: caller: held since `lock_for_fork`.
        unsafe {
            self.tlsf.unlock_after_fork();
            self.grow.unlock_held();
        }
    }

    pub(super) const fn tlsf(&self) -> &TlsfHeap<4> {
        &self.tlsf
    }

    /// Bytes of TLSF pools held, of live direct blocks, of live huge blocks.
    pub(super) fn bytes(&self) -> (usize, usize, usize) {
        (
            load(&self.pool_bytes),
            load(&self.direct_bytes),
            load(&self.huge_bytes),
        )
    }

    #[inline]
    pub(super) fn alloc_tlsf<P: PageSource>(
        &self,
        layout: Layout,
        pages: &P,
        map: &PageMap,
    ) -> Option<NonNull<u8>> {
        if let Some(ptr) = self.tlsf.allocate(layout) {
            return Some(ptr);
        }
        self.grow_tlsf(layout, pages, map)
    }

    /// The arenas cannot serve `layout`: under `grow`, retries (someone may have grown them
    /// meanwhile), else takes one more pool from the page source (256 KiB, doubling with each
    /// pool held, at least the request plus TLSF's overhead; halved down to that when the
    /// source cannot give more) and allocates from it in the same critical section that adds
    /// it, so no other thread can take it first (G2). When no pool can be added (16 held, or
    /// the source has none of that size), the request is a direct block from the page source.
    /// `None` only when the page source refuses.
    #[cold]
    fn grow_tlsf<P: PageSource>(
        &self,
        layout: Layout,
        pages: &P,
        map: &PageMap,
    ) -> Option<NonNull<u8>> {
        {
            let mut pools = self.grow.lock();
            if let Some(ptr) = self.tlsf.allocate(layout) {
                return Some(ptr);
            }
            // `has_room` is a hint (a kernel's `add_memory` may fill the table meanwhile; then
            // adding the pool fails and it goes back): it saves taking a pool for nothing.
            if !pools.0.is_full() && self.tlsf.has_room() {
                if let Some(ptr) = self.grow_pool(&mut pools, layout, pages) {
                    return Some(ptr);
                }
            }
        }
        self.alloc_block(layout, pages, map, true)
    }

    /// Takes a pool for `layout` from the page source and serves `layout` from it (see
    /// [`grow_tlsf`](Self::grow_tlsf)); `None` when the source has no pool of the size needed,
    /// or the arenas cannot take one, or a fresh pool cannot serve `layout` (nothing held
    /// then). The caller holds `grow` (`pools`) and has checked there is room.
    fn grow_pool<P: PageSource>(
        &self,
        pools: &mut Pools,
        layout: Layout,
        pages: &P,
    ) -> Option<NonNull<u8>> {
        let grown = pools.0.len();
        let need = (layout.size() + layout.align() + 256).next_multiple_of(SLAB_PAGE);
        let mut chunk = TLSF_CHUNK
            .checked_shl(u32::try_from(grown).ok()?)
            .unwrap_or(usize::MAX)
            .max(need.next_power_of_two());
        let pool = loop {
            if let Some(pool) = pages.alloc_pages(chunk, SLAB_PAGE) {
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
                self.pool_bytes.fetch_add(chunk, Ordering::Relaxed);
                Some(ptr)
            }
            // Not added (the region table is full of `add_memory` regions), or added and taken
            // out again (the request is larger than an arena's largest block).
            Ok(None) | Err(_) => {
                // SAFETY: not held by the arenas; back to the source as taken.
                unsafe { pages.free_pages(pool, chunk, SLAB_PAGE) };
                None
            }
        }
    }

    /// A huge block (`direct`: a direct block, when the arenas cannot grow): `layout` straight
    /// from the page source (whole pages, at least one: [`block_layout`]), recorded in the page
    /// map before it is returned (P2; a direct block's address lies in no TLSF region, D2).
    /// `None` when the source or the map refuses (nothing held then).
    #[cold]
    fn alloc_block<P: PageSource>(
        &self,
        layout: Layout,
        pages: &P,
        map: &PageMap,
        direct: bool,
    ) -> Option<NonNull<u8>> {
        let layout = block_layout(layout)?;
        let ptr = pages.alloc_huge(layout)?;
        let (owner, counter) = self.kind(layout, direct);
        let recorded = map.insert_block(ptr, owner, pages, || {
            // Under the map's lock, so `check` sees the count and the entries agree; D1: the
            // count is raised before the block is handed out.
            counter.fetch_add(huge_bytes(layout.size()), Ordering::Relaxed);
        });
        if recorded.is_err() {
            // SAFETY: just taken with `alloc_huge(layout)`, never handed out.
            unsafe { pages.free_huge(ptr, layout) };
            return None;
        }
        Some(ptr)
    }

    /// The map owner and the byte counter of a block of `layout` (already a block layout).
    fn kind(&self, layout: Layout, direct: bool) -> (Owner, &AtomicUsize) {
        if direct {
            (Owner::Direct(layout), &self.direct_bytes)
        } else {
            (Owner::Huge(layout), &self.huge_bytes)
        }
    }

    /// Frees the huge (`direct`: direct) block starting at `ptr` with the layout the map
    /// recorded (P3: the entry is cleared first). A pointer that starts no such block (a
    /// foreign pointer, a block freed already, an interior pointer) is ignored, the page source
    /// untouched; debug builds panic. Returns whether a block was freed.
    ///
    /// # Safety
    /// If the map records a block of that kind at `ptr`, it is a live block of this heap that
    /// the caller owns and no longer uses.
    #[cold]
    pub(super) unsafe fn free_block<P: PageSource>(
        &self,
        ptr: NonNull<u8>,
        pages: &P,
        map: &PageMap,
        direct: bool,
    ) -> bool {
        let counter = if direct {
            &self.direct_bytes
        } else {
            &self.huge_bytes
        };
        let removed = map.remove_block(ptr, direct, |layout| {
            counter.fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
        });
        let Some(layout) = removed else {
            if direct {
                debug_assert!(false, "SmpHeap: not a TLSF block of this heap");
            } else {
                debug_assert!(false, "SmpHeap: not a huge block of this heap");
            }
            return false;
        };
        // SAFETY: the map recorded it with this layout when it was taken with `alloc_huge`
        // (or moved by `realloc_huge`); the caller no longer uses it.
        unsafe { pages.free_huge(ptr, layout) };
        true
    }

    /// Frees a TLSF-route block: into its arena when a region contains it, else (a direct
    /// block, D2) to the page source with the layout the map recorded; a pointer that is
    /// neither is ignored (panic in debug builds).
    ///
    /// # Safety
    /// `ptr` is a TLSF-route block of this heap, not freed since.
    #[inline]
    pub(super) unsafe fn free_tlsf<P: PageSource>(
        &self,
        ptr: NonNull<u8>,
        pages: &P,
        map: &PageMap,
    ) {
        // SAFETY: caller.
        if !unsafe { self.tlsf.deallocate_in_region(ptr) } {
            // SAFETY: caller.
            unsafe { self.free_block(ptr, pages, map, true) };
        }
    }

    /// Resizes the huge (`direct`: direct) block at `ptr`, whose recorded layout is `layout`,
    /// to `new_size` bytes through the page source's `realloc_huge`, updating the map (P5:
    /// spare nodes are reserved first, so recording a moved block cannot fail). `None` leaves
    /// the block untouched (the caller moves it by copy).
    ///
    /// # Safety
    /// `ptr` is a live block of that kind of this heap with the recorded `layout`.
    pub(super) unsafe fn realloc_block<P: PageSource>(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
        pages: &P,
        map: &PageMap,
        direct: bool,
    ) -> Option<NonNull<u8>> {
        let new_layout = block_layout(Layout::from_size_align(new_size, layout.align()).ok()?)?;
        map.reserve(pages).ok()?;
        // SAFETY: caller: taken with `alloc_huge(layout)`; the new layout is formed.
        let moved = unsafe { pages.realloc_huge(ptr, layout, new_layout.size()) }?;
        let (owner, counter) = self.kind(new_layout, direct);
        let recorded = map.move_block(ptr, moved, owner, pages, || {
            // New size first: the count stays non-zero throughout (D1).
            counter.fetch_add(huge_bytes(new_layout.size()), Ordering::Relaxed);
            counter.fetch_sub(huge_bytes(layout.size()), Ordering::Relaxed);
        });
        // Only an address in the other half of the address space can fail here (the spare
        // nodes cover the rest): no source moves a block there.
        debug_assert!(
            recorded.is_ok(),
            "SmpHeap: a moved block cannot be recorded"
        );
        Some(moved)
    }

    /// Resizes a TLSF-route block to `new_size` bytes where it lies (arena) or through the
    /// page source (direct block). [`Resize::Move`]: the caller allocates, copies and frees;
    /// [`Resize::Refuse`]: `ptr` is no live block of this heap (the caller broke the
    /// contract), nothing changes.
    ///
    /// # Safety
    /// `ptr` is a TLSF-route block of this heap allocated with `layout`, not freed since;
    /// `new_size` with `layout.align()` forms a TLSF-route layout.
    pub(super) unsafe fn realloc_tlsf<P: PageSource>(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
        pages: &P,
        map: &PageMap,
    ) -> Resize {
        // SAFETY: caller. `None` leaves the block untouched (also when no region holds it:
        // then it is a direct block).
        if let Some(moved) = unsafe { self.tlsf.reallocate(ptr, layout, new_size) } {
            return Resize::Done(moved);
        }
        if self.tlsf.in_region(ptr) {
            return Resize::Move;
        }
        let Some(Owner::Direct(recorded)) = map.get(ptr.as_ptr().addr()) else {
            return Resize::Refuse;
        };
        // SAFETY: caller and the map: a live direct block with the recorded layout.
        match unsafe { self.realloc_block(ptr, recorded, new_size, pages, map, true) } {
            Some(moved) => Resize::Done(moved),
            None => Resize::Move,
        }
    }

    pub(super) fn alloc_huge<P: PageSource>(
        &self,
        layout: Layout,
        pages: &P,
        map: &PageMap,
    ) -> Option<NonNull<u8>> {
        self.alloc_block(layout, pages, map, false)
    }

    /// Returns every TLSF pool that holds no allocated block to the page source
    /// (`TlsfHeap::remove_pool` takes it out of its arena and vacates its region entry).
    pub(super) fn return_pools<P: PageSource>(&self, pages: &P) {
        let mut pools = self.grow.lock();
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
            unsafe { pages.free_pages(pool, bytes, SLAB_PAGE) };
            self.pool_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Returns every pool, free or not (the heap is being dropped).
    ///
    /// # Safety
    /// The arenas are never used again.
    pub(super) unsafe fn free_pools<P: PageSource>(&mut self, pages: &P) {
        let pools = core::mem::replace(&mut self.grow.lock().0, ArrayVec::new_const());
        for (pool, bytes) in pools {
            // SAFETY: taken with `alloc_pages(bytes, SLAB_PAGE)`; the arenas over it are never
            // used again (caller).
            unsafe { pages.free_pages(pool, bytes, SLAB_PAGE) };
        }
    }
}

/// The layout a huge or direct block is taken from the page source with: at least one page
/// (so no two blocks start in one page, even with a source whose blocks are not whole pages),
/// and `None` for 16 TiB or more (the page map records 44 bits of size).
fn block_layout(layout: Layout) -> Option<Layout> {
    if layout.size() > MAX_BLOCK {
        return None;
    }
    Layout::from_size_align(layout.size().max(PAGE), layout.align()).ok()
}
