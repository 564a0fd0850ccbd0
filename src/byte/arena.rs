//! [`TlsfHeap`]: a TLSF heap of several arenas, each a [`Tlsf`] behind its own [`SpinLock`].
//!
//! # Protocol (DESIGN.md section 12; loom models in `loom-tests/arena.rs`)
//!
//! - **Arenas.** Arena `i` is a `SpinLock<DefaultTlsf>`. An allocation locks the caller's
//!   arena (`current_cpu() % ARENAS`); when that one cannot serve it, it locks the others in
//!   turn ("borrowing") before failing. All `Tlsf` state is touched only under its arena's lock.
//! - **Regions.** Every pool an arena owns is a *region* `(start, len, arena)` in a fixed table
//!   of 16 (`MAX_REGIONS`) entries; regions are disjoint, and an arena's `Tlsf` holds memory only
//!   from its own regions. A block never spans two pools, so the region containing a block's
//!   address names the arena that allocated it: `deallocate` finds it by scanning the table
//!   (at most `MAX_REGIONS` entries, O(1)) and frees under that arena's lock, whichever CPU
//!   frees.
//! - **Publication.** Regions are added under the `grow` lock: entry fields are written, then
//!   `len` is stored with `Release`; only then is the memory inserted into the arena. A reader
//!   loads `len` with `Acquire` and reads entries below it, which are never changed again.
//! - **Lazy start.** A heap built with [`TlsfHeap::with_pool`] (a `const fn`, for
//!   `#[global_allocator]` statics) carves its pool into regions on first use: `state` goes
//!   `UNINIT -> STARTING` by one CAS (the winner adds the pool, then stores `READY` with
//!   `Release`); everyone else waits until it loads `READY` (`Acquire`).

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

#[cfg(not(loom))]
use super::DefaultTlsf;
use super::dangling;
use super::tlsf::{CheckError, GRANULARITY, Tlsf};
use crate::lock::SpinLock;
use crate::percpu::{self, PerCpu};
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::{Backoff, loom_const_fn};
use crate::traits::{AllocError, AllocResult};

/// The `Tlsf` of one arena. Under loom a small configuration (a 256-byte header instead of
/// 7 KB), so a heap fits on a model thread's stack; models use pools of a few blocks.
#[cfg(not(loom))]
type ArenaTlsf = DefaultTlsf;
#[cfg(loom)]
type ArenaTlsf = Tlsf<'static, u8, u8, 8, 4>;

/// Regions (pools) one heap can hold.
pub(crate) const MAX_REGIONS: usize = 16;

/// A region is split across all arenas only when every share is at least this long.
const MIN_SHARE: usize = 64 * 1024;

const UNINIT: usize = 0;
const STARTING: usize = 1;
const READY: usize = 2;

/// The table of regions: which arena owns which address range.
struct Regions {
    /// Entry `i < len`: the region's first byte (carrying the pool's provenance).
    starts: [AtomicPtr<u8>; MAX_REGIONS],
    /// Entry `i < len`: the region's length in bytes.
    lens: [AtomicUsize; MAX_REGIONS],
    /// Entry `i < len`: the arena owning the region.
    owners: [AtomicUsize; MAX_REGIONS],
    /// Published entries. Written only under the heap's `grow` lock (`Release`), after the
    /// entry's fields; entries below it never change.
    len: AtomicUsize,
}

impl Regions {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            starts: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_REGIONS],
            lens: [const { AtomicUsize::new(0) }; MAX_REGIONS],
            owners: [const { AtomicUsize::new(0) }; MAX_REGIONS],
            len: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            starts: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            lens: core::array::from_fn(|_| AtomicUsize::new(0)),
            owners: core::array::from_fn(|_| AtomicUsize::new(0)),
            len: AtomicUsize::new(0),
        }
    }

    /// The published entries.
    fn entries(&self) -> impl Iterator<Item = (*mut u8, usize, usize)> + '_ {
        // Acquire: pairs with the Release in `push`, so the entry fields below it are visible.
        let len = self.len.load(Ordering::Acquire);
        (0..len).map(move |i| {
            (
                self.starts[i].load(Ordering::Relaxed),
                self.lens[i].load(Ordering::Relaxed),
                self.owners[i].load(Ordering::Relaxed),
            )
        })
    }

    /// The entry containing `addr`: `((region start, region end), owner)`.
    #[inline]
    fn find(&self, addr: usize) -> Option<(*mut u8, (usize, usize), usize)> {
        self.entries().find_map(|(start_ptr, len, owner)| {
            let start = start_ptr.addr();
            (start <= addr && addr - start < len).then_some((
                start_ptr,
                (start, start + len),
                owner,
            ))
        })
    }

    /// Appends an entry. The caller holds the heap's `grow` lock (one writer) and has checked
    /// there is room.
    fn push(&self, start: *mut u8, len: usize, owner: usize) {
        let i = self.len.load(Ordering::Relaxed);
        self.starts[i].store(start, Ordering::Relaxed);
        self.lens[i].store(len, Ordering::Relaxed);
        self.owners[i].store(owner, Ordering::Relaxed);
        // Release: a reader that sees `i + 1` sees the fields above.
        self.len.store(i + 1, Ordering::Release);
    }
}

/// A TLSF heap of `ARENAS` arenas, each a [`DefaultTlsf`] behind its own [`SpinLock`], chosen
/// by CPU; frees go to the arena owning the address. Usable as `#[global_allocator]` (over a
/// static pool, see [`with_pool`](TlsfHeap::with_pool)), as an `Allocator` (features
/// `allocator-api2` and `nightly`), or directly.
///
/// ```
/// use smpalloc::TlsfHeap;
/// use core::alloc::Layout;
/// let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
/// let heap: TlsfHeap<2> = TlsfHeap::new();
/// heap.add_memory(pool.as_mut_ptr() as usize, pool.len()).unwrap();
/// let layout = Layout::from_size_align(200, 8).unwrap();
/// let p = heap.allocate(layout).unwrap();
/// // SAFETY: `p` was allocated with `layout` and is freed once.
/// unsafe { heap.deallocate(p, layout) };
/// ```
pub struct TlsfHeap<const ARENAS: usize = 4> {
    arenas: PerCpu<SpinLock<ArenaTlsf>, ARENAS>,
    regions: Regions,
    /// Serializes adding regions (and the lazy start).
    grow: SpinLock<()>,
    /// `UNINIT` until the pool of `with_pool` is carved, `STARTING` while it is, then `READY`.
    state: AtomicUsize,
    /// The pool of `with_pool` (null otherwise); read only by the thread that wins the start.
    pool: *mut u8,
    pool_len: usize,
}

// SAFETY: all mutable state is in atomics or behind `SpinLock`s; `pool` is only dereferenced by
// the one thread that wins the `UNINIT -> STARTING` CAS, under the `with_pool` contract.
unsafe impl<const ARENAS: usize> Sync for TlsfHeap<ARENAS> {}
// SAFETY: as above; the heap owns its pools.
unsafe impl<const ARENAS: usize> Send for TlsfHeap<ARENAS> {}

impl<const ARENAS: usize> TlsfHeap<ARENAS> {
    const VALID: () = assert!(
        ARENAS > 0 && ARENAS <= MAX_REGIONS,
        "TlsfHeap: 1..=16 arenas"
    );

    #[cfg(not(loom))]
    const fn new_arenas() -> PerCpu<SpinLock<ArenaTlsf>, ARENAS> {
        PerCpu::new([const { SpinLock::new(Tlsf::new()) }; ARENAS])
    }

    #[cfg(loom)]
    fn new_arenas() -> PerCpu<SpinLock<ArenaTlsf>, ARENAS> {
        PerCpu::from_fn(|_| SpinLock::new(Tlsf::new()))
    }

    loom_const_fn! {
        /// The heap with `state` and the lazily carved pool `(pool, pool_len)`.
        fn build(state: usize, pool: *mut u8, pool_len: usize) -> Self {
            #[allow(clippy::let_unit_value)]
            let () = Self::VALID;
            Self {
                arenas: Self::new_arenas(),
                regions: Regions::new(),
                grow: SpinLock::new(()),
                state: AtomicUsize::new(state),
                pool,
                pool_len,
            }
        }
    }

    loom_const_fn! {
        /// An empty heap; give it memory with [`add_memory`](TlsfHeap::add_memory) or
        /// [`add_pool`](TlsfHeap::add_pool).
        pub fn new() -> Self {
            Self::build(READY, ptr::null_mut(), 0)
        }
    }

    /// A heap that carves `[pool, pool + len)` into its arenas on first use (a `const fn`,
    /// so it can be a `#[global_allocator]` static over a `static mut` array).
    ///
    /// A `const fn` cannot report errors: if the pool turns out unusable when it is carved (too
    /// small for one block, or not inside the address space), the heap stays empty and every
    /// allocation returns null / `None`. Use [`add_pool`](TlsfHeap::add_pool) to see the error.
    ///
    /// ```
    /// use smpalloc::TlsfHeap;
    /// use core::mem::MaybeUninit;
    /// static mut POOL: [MaybeUninit<u8>; 1 << 16] = [MaybeUninit::uninit(); 1 << 16];
    /// // SAFETY: `POOL` is used by nothing but this heap.
    /// static HEAP: TlsfHeap<2> = unsafe { TlsfHeap::with_pool((&raw mut POOL).cast(), 1 << 16) };
    /// let b = HEAP.allocate(core::alloc::Layout::new::<u64>()).unwrap();
    /// # unsafe { HEAP.deallocate(b, core::alloc::Layout::new::<u64>()) };
    /// ```
    ///
    /// # Safety
    /// `pool .. pool + len` is valid for reads and writes for as long as the heap is used
    /// and nothing else uses it.
    #[cfg(not(loom))]
    pub const unsafe fn with_pool(pool: *mut u8, len: usize) -> Self {
        Self::build(UNINIT, pool, len)
    }

    /// Under loom: `with_pool` as a plain `fn` (loom's atomics are not `const`).
    ///
    /// # Safety
    /// As for the `const` version.
    #[cfg(loom)]
    pub unsafe fn with_pool(pool: *mut u8, len: usize) -> Self {
        Self::build(UNINIT, pool, len)
    }

    /// Makes sure the `with_pool` pool has been carved (a load on the fast path).
    #[inline]
    fn ensure_ready(&self) {
        // Acquire: pairs with the starter's Release store of READY.
        if self.state.load(Ordering::Acquire) != READY {
            self.start();
        }
    }

    #[cold]
    fn start(&self) {
        // Acquire on success orders nothing we rely on (the winner reads only its own fields);
        // it keeps the CAS symmetric with the waiters' loads.
        if self
            .state
            .compare_exchange(UNINIT, STARTING, Ordering::Acquire, Ordering::Acquire)
            .is_ok()
        {
            if let Some(pool) = NonNull::new(self.pool) {
                let pool = NonNull::slice_from_raw_parts(pool, self.pool_len);
                // SAFETY: the `with_pool` contract; only this thread gets here.
                let _ = unsafe { self.add_pool(pool) };
            }
            // Release: the regions and arenas filled above happen before any READY reader's
            // allocation.
            self.state.store(READY, Ordering::Release);
        } else {
            let backoff = Backoff::new();
            while self.state.load(Ordering::Acquire) != READY {
                backoff.snooze();
            }
        }
    }

    /// Adds `[start, start + size)` (an address range, as arceos' `add_memory`). See
    /// [`add_pool`](TlsfHeap::add_pool) for the errors.
    pub fn add_memory(&self, start: usize, size: usize) -> AllocResult {
        let ptr = NonNull::new(ptr::with_exposed_provenance_mut::<u8>(start))
            .ok_or(AllocError::InvalidParam)?;
        // SAFETY: arceos' contract: the caller hands this memory to the heap for good.
        unsafe { self.add_pool(NonNull::slice_from_raw_parts(ptr, size)) }
    }

    /// Adds `pool` to the heap. When every arena's share would be at least 64 KiB (and the
    /// region table has room for them all) it is split evenly across all arenas; otherwise it
    /// goes whole to one arena (in turn). Errors (nothing changes): `InvalidParam` when the
    /// pool (or a share) is too small for a block or its end overflows; `MemoryOverlap` when
    /// it overlaps a region already added; `NoMemory` when the region table (16 entries) is
    /// full.
    ///
    /// # Safety
    /// The memory of `pool` is valid for reads and writes for as long as the heap is used and
    /// nothing else uses it.
    ///
    /// # Time Complexity
    /// O(ARENAS + regions).
    pub unsafe fn add_pool(&self, pool: NonNull<[u8]>) -> AllocResult {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.add_pool_inner(pool, None) }
    }

    /// Adds `pool` whole to arena `arena % ARENAS` (the SMP heap's growth: one region per
    /// pool). Errors as [`add_pool`](TlsfHeap::add_pool).
    ///
    /// # Safety
    /// As for [`add_pool`](TlsfHeap::add_pool).
    #[cfg(feature = "heap")]
    pub(crate) unsafe fn add_pool_to(&self, pool: NonNull<[u8]>, arena: usize) -> AllocResult {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.add_pool_inner(pool, Some(arena % ARENAS)) }
    }

    /// `add_pool`, split across the arenas (`owner == None`, when large enough) or whole to
    /// one arena.
    ///
    /// # Safety
    /// As for [`add_pool`](TlsfHeap::add_pool).
    unsafe fn add_pool_inner(&self, pool: NonNull<[u8]>, owner: Option<usize>) -> AllocResult {
        let start = pool.cast::<u8>().as_ptr();
        let len = pool.len();
        let end = start
            .addr()
            .checked_add(len)
            .ok_or(AllocError::InvalidParam)?;
        let _grow = self.grow.lock();
        if self
            .regions
            .entries()
            .any(|(s, l, _)| start.addr() < s.addr() + l && s.addr() < end)
        {
            return Err(AllocError::MemoryOverlap);
        }
        let used = self.regions.len.load(Ordering::Relaxed);
        let shares = if owner.is_none() && len / ARENAS >= MIN_SHARE && used + ARENAS <= MAX_REGIONS
        {
            ARENAS
        } else {
            1
        };
        if used + shares > MAX_REGIONS {
            return Err(AllocError::NoMemory);
        }
        let share = (len / shares) & !(GRANULARITY - 1);
        // The smallest pool a `Tlsf` accepts: alignment slack, a minimum block, the sentinel.
        if share < 4 * GRANULARITY {
            return Err(AllocError::InvalidParam);
        }
        for k in 0..shares {
            let owner = match owner {
                Some(owner) => owner,
                None if shares == 1 => used % ARENAS,
                None => k,
            };
            let offset = k * share;
            let share_len = if k + 1 == shares { len - offset } else { share };
            // SAFETY: `offset + share_len <= len`.
            let share_start = unsafe { start.add(offset) };
            // Publish the region before its memory can be handed out.
            self.regions.push(share_start, share_len, owner);
            let block = NonNull::slice_from_raw_parts(
                // SAFETY: inside `pool`, which is non-null.
                unsafe { NonNull::new_unchecked(share_start) },
                share_len,
            );
            // SAFETY: disjoint from every other region (checked above; shares are disjoint);
            // the caller gives us the memory.
            let inserted = unsafe { self.arenas.get(owner).lock().insert_free_block_ptr(block) };
            debug_assert!(inserted.is_some(), "share long enough by the check above");
        }
        Ok(())
    }

    /// Allocates `layout` from this CPU's arena, or from the others when it is exhausted.
    /// `None` when no arena can serve it (heap unchanged). Zero-size layouts get a dangling
    /// pointer aligned to the layout.
    ///
    /// # Time Complexity
    /// O(ARENAS) lock acquisitions at worst, O(1) work under each.
    #[inline]
    pub fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.size() == 0 {
            return Some(dangling(layout.align()));
        }
        self.ensure_ready();
        let home = percpu::current_cpu() % ARENAS;
        if let Some(ptr) = self.arenas.get(home).lock().allocate(layout) {
            return Some(ptr);
        }
        self.borrow(home, layout)
    }

    /// Tries every arena but `home`.
    #[cold]
    fn borrow(&self, home: usize, layout: Layout) -> Option<NonNull<u8>> {
        (1..ARENAS).find_map(|k| self.arenas.get((home + k) % ARENAS).lock().allocate(layout))
    }

    /// The region `(start, end)` containing `ptr` and the arena owning it.
    #[inline]
    ///
    /// Also returns `ptr` re-derived from the region's own pointer: a caller's pointer may
    /// carry provenance for its block only (a `Box` retags it to its size), while freeing reads
    /// the header before the block.
    fn owner(&self, ptr: NonNull<u8>) -> Option<(NonNull<u8>, (usize, usize), usize)> {
        let (start, region, owner) = self.regions.find(ptr.as_ptr().addr())?;
        let ptr = NonNull::new(start.with_addr(ptr.as_ptr().addr()))?;
        Some((ptr, region, owner))
    }

    /// Frees `ptr`, allocated with `layout`, into the arena that owns it. Zero-size layouts
    /// are a no-op. A pointer outside every region is ignored; one whose header is not a live
    /// block (double free) panics in debug builds and is ignored in release builds.
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout` and not freed since.
    ///
    /// # Time Complexity
    /// O(regions) to find the owner (at most 16 entries), O(1) under the owner's lock.
    #[inline]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let Some((ptr, region, owner)) = self.owner(ptr) else {
            return;
        };
        // SAFETY: `ptr` lies in `region`, a region of `owner`.
        let freed = unsafe {
            self.arenas
                .get(owner)
                .lock()
                .try_deallocate_within(ptr, region)
        };
        debug_assert!(
            freed.is_ok(),
            "TlsfHeap::deallocate: double free or not an allocation"
        );
    }

    /// Resizes the allocation at `ptr` to `new_size` bytes (same alignment): in place under
    /// the owner's lock when it can, otherwise allocate (any arena), copy, free. `None` leaves
    /// the old allocation untouched.
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout` and not freed since.
    ///
    /// # Time Complexity
    /// O(1) in place; O(size) plus an allocation when it moves.
    pub unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let new_layout = Layout::from_size_align(new_size, layout.align()).ok()?;
        if layout.size() == 0 || new_size == 0 {
            let new = self.allocate(new_layout)?;
            // SAFETY: caller; a zero-size source copies nothing.
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
                self.deallocate(ptr, layout);
            }
            return Some(new);
        }
        let (ptr, _, owner) = self.owner(ptr)?;
        {
            let mut arena = self.arenas.get(owner).lock();
            // Only the in-place cases here: a move inside the owner would wait on its lock
            // while another arena may have room.
            // SAFETY: a live allocation of this arena (caller).
            if new_size <= unsafe { arena.in_place_capacity(ptr) } {
                // SAFETY: as above.
                return unsafe { arena.reallocate(ptr, new_layout) };
            }
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: both live; `layout.size()` bytes are valid at `ptr`.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
            self.deallocate(ptr, layout);
        }
        Some(new)
    }

    /// Checks every arena ([`Tlsf::check`], [`Tlsf::check_pool`] over its regions) and that
    /// each arena's free blocks all lie in its own regions (no block was freed into the wrong
    /// arena). Returns the bytes in allocated blocks. Holds the `grow` lock and locks each
    /// arena in turn.
    pub fn check(&self) -> Result<usize, CheckError> {
        // No region may be half added (published, not yet inserted) while we walk.
        let _grow = self.grow.lock();
        let mut used = 0;
        for (i, arena) in self.arenas.iter().enumerate() {
            let arena = arena.lock();
            let (blocks, bytes) = arena.check()?;
            let (mut seen_blocks, mut seen_bytes) = (0, 0);
            for (start, len, owner) in self.regions.entries() {
                if owner != i {
                    continue;
                }
                let pool = NonNull::slice_from_raw_parts(
                    NonNull::new(start).ok_or(CheckError("null region"))?,
                    len,
                );
                // SAFETY: the region was inserted into this arena with exactly this range.
                let stats = unsafe { arena.check_pool(pool)? };
                seen_blocks += stats.free_blocks;
                seen_bytes += stats.free_bytes;
                used += stats.used_bytes;
            }
            if (seen_blocks, seen_bytes) != (blocks, bytes) {
                return Err(CheckError(
                    "an arena lists free blocks outside its own regions",
                ));
            }
        }
        Ok(used)
    }

    /// Number of arenas.
    pub const fn arena_count(&self) -> usize {
        ARENAS
    }
}

impl<const ARENAS: usize> Default for TlsfHeap<ARENAS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ARENAS: usize> fmt::Debug for TlsfHeap<ARENAS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsfHeap")
            .field("arenas", &ARENAS)
            .field("regions", &self.regions.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
