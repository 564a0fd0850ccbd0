//! [`TlsfHeap`]: a TLSF heap of several arenas, each a [`Tlsf`] behind its own [`SpinLock`].
//!
//! # Protocol (docs/design/06-tlsf-and-arenas.md; loom models in `loom-tests/arena.rs`)
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
//! - **Publication and reuse.** Each entry carries a sequence number `seq`: odd while it
//!   holds a live region, even while vacant (0 at first, so an empty heap is all zeros). Under
//!   the `grow` lock a region is added to the
//!   lowest vacant entry (a `Release` fence, the fields, then `seq` made odd with `Release`)
//!   before its memory is inserted into the arena; [`TlsfHeap::remove_pool`] takes a wholly
//!   free region out of its arena and makes `seq` even in one critical section of that arena's
//!   lock. Lock-free readers (`deallocate`, `reallocate`) take a consistent snapshot of each
//!   entry (`seq` with `Acquire`, the fields, a fence, `seq` again) and *skip* entries that
//!   are vacant or changed meanwhile: the region of a live block never changes, so they never
//!   wait and never match a torn or stale entry (docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings", E1-E4).
//! - **Lazy start.** A heap built with [`TlsfHeap::with_pool`] (a `const fn`, for
//!   `#[global_allocator]` statics) carves its pool into regions on first use: `state` goes
//!   `UNINIT -> STARTING` by one CAS (the winner adds the pool, then stores `READY` with
//!   `Release`); everyone else waits until it loads `READY` (`Acquire`).

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use super::dangling;
use super::tlsf::{CheckError, GRANULARITY, Tlsf};
use crate::lock::SpinLock;
use crate::percpu::{self, PerCpu};
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering, fence};
use crate::sync::model::ArenaTlsf;
use crate::sync::{Backoff, loom_const_fn};
use crate::traits::{AllocError, AllocResult};

/// Regions (pools) one heap can hold.
pub(crate) const MAX_REGIONS: usize = 16;

/// A region is split across all arenas only when every share is at least this long.
const MIN_SHARE: usize = 64 * 1024;

// `READY` is 0: a heap built by `new` (nothing to start) is all zeros, so a `static` one lies
// in `.bss`.
const READY: usize = 0;
const UNINIT: usize = 1;
const STARTING: usize = 2;

/// One entry of the region table. `seq` odd: the entry holds a live region; even: vacant (or
/// being rewritten; 0 in a new table). Fields change only while `seq` is even (docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings",
/// E1-E4).
struct Entry {
    seq: AtomicUsize,
    /// The region's first byte (carrying the pool's provenance).
    start: AtomicPtr<u8>,
    /// The region's length in bytes.
    len: AtomicUsize,
    /// The arena owning the region.
    owner: AtomicUsize,
}

impl Entry {
    loom_const_fn! {
        fn vacant() -> Self {
            Self {
                seq: AtomicUsize::new(0),
                start: AtomicPtr::new(ptr::null_mut()),
                len: AtomicUsize::new(0),
                owner: AtomicUsize::new(0),
            }
        }
    }
}

/// A consistent snapshot of a live entry.
#[derive(Clone, Copy)]
struct Region {
    /// The entry's index and the (odd) `seq` the snapshot was taken at.
    index: usize,
    seq: usize,
    start: *mut u8,
    len: usize,
    owner: usize,
}

impl Region {
    /// `(start, end)` addresses.
    fn bounds(&self) -> (usize, usize) {
        (self.start.addr(), self.start.addr() + self.len)
    }
}

/// The table of regions: which arena owns which address range. Entries are reused after a
/// region is removed; lock-free readers take consistent snapshots by `seq` (a per-entry
/// seqlock whose readers skip, never wait: docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings").
struct Regions {
    entries: [Entry; MAX_REGIONS],
    /// Entries ever used (a high-water mark): readers scan below it. Written only under the
    /// heap's `grow` lock (`Release`), after the new entry is live.
    used: AtomicUsize,
}

impl Regions {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            entries: [const { Entry::vacant() }; MAX_REGIONS],
            used: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            entries: core::array::from_fn(|_| Entry::vacant()),
            used: AtomicUsize::new(0),
        }
    }

    /// A consistent snapshot of entry `index`, or `None` when it is vacant or was rewritten
    /// while we read it (E4). Lock-free readers use it; it never waits.
    #[inline]
    fn snapshot(&self, index: usize) -> Option<Region> {
        let entry = &self.entries[index];
        // Acquire: pairs with the Release store that made this `seq` live, so the field loads
        // below return the values stored before it, or later ones.
        let seq = entry.seq.load(Ordering::Acquire);
        if seq % 2 == 0 {
            return None;
        }
        let start = entry.start.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed);
        let owner = entry.owner.load(Ordering::Relaxed);
        // Acquire fence: if a field load above returned a later rewrite's value, that rewrite's
        // Release fence synchronizes with this one, so the even `seq` stored before that
        // rewrite is visible to the load below and the snapshot is refused.
        fence(Ordering::Acquire);
        (entry.seq.load(Ordering::Relaxed) == seq).then_some(Region {
            index,
            seq,
            start,
            len,
            owner,
        })
    }

    /// Whether entry `region.index` still holds the snapshot `region` (its `seq` unchanged).
    /// Exact when the caller holds the region's owner's arena lock (vacating happens under it).
    #[inline]
    fn still_holds(&self, region: &Region) -> bool {
        self.entries[region.index].seq.load(Ordering::Relaxed) == region.seq
    }

    /// Consistent snapshots of the live entries. Exact for the `grow` lock holder (no entry
    /// changes meanwhile); for anyone else, entries live at some point during the scan.
    fn live(&self) -> impl Iterator<Item = Region> + '_ {
        // Acquire: pairs with the Release in `insert`, so the new entries below it are visible.
        let used = self.used.load(Ordering::Acquire);
        (0..used).filter_map(|i| self.snapshot(i))
    }

    /// The live region containing `addr`. For the address of a live block it is the block's
    /// region (E2-E4); a pointer of no live block may find nothing.
    #[inline]
    fn find(&self, addr: usize) -> Option<Region> {
        let used = self.used.load(Ordering::Acquire);
        (0..used).find_map(|i| {
            self.snapshot(i)
                .filter(|r| r.start.addr() <= addr && addr - r.start.addr() < r.len)
        })
    }

    /// Live entries. Exact for the `grow` lock holder.
    fn count(&self) -> usize {
        self.live().count()
    }

    /// Makes `(start, len, owner)` a live region in the lowest vacant entry and returns its
    /// snapshot. The caller holds the heap's `grow` lock (one writer) and has checked there is
    /// a vacant entry (fewer than `MAX_REGIONS` live).
    fn insert(&self, start: *mut u8, len: usize, owner: usize) -> Region {
        let used = self.used.load(Ordering::Relaxed);
        let index = (0..used)
            .find(|&i| self.entries[i].seq.load(Ordering::Relaxed) % 2 == 0)
            .unwrap_or(used);
        let entry = &self.entries[index];
        let seq = entry.seq.load(Ordering::Relaxed);
        debug_assert!(seq % 2 == 0, "inserting into a live entry");
        // Release fence: the even `seq` (stored when the entry was vacated, which happens before
        // this under the `grow` lock) is ordered before the field stores for any reader that
        // sees one of them and then fences (E4).
        fence(Ordering::Release);
        entry.start.store(start, Ordering::Relaxed);
        entry.len.store(len, Ordering::Relaxed);
        entry.owner.store(owner, Ordering::Relaxed);
        // Release: a reader that loads this `seq` sees the fields above.
        entry.seq.store(seq.wrapping_add(1), Ordering::Release);
        if index == used {
            // Release: a reader that sees `used` includes the live entry above.
            self.used.store(used + 1, Ordering::Release);
        }
        Region {
            index,
            seq: seq.wrapping_add(1),
            start,
            len,
            owner,
        }
    }

    /// Makes the entry of `region` vacant. The caller holds the `grow` lock and the region
    /// owner's arena lock, and has just taken every block of the region out of the arena (E2).
    fn vacate(&self, region: &Region) {
        let entry = &self.entries[region.index];
        debug_assert_eq!(entry.seq.load(Ordering::Relaxed), region.seq);
        // Relaxed: readers that must see it are ordered by the `grow` lock (a later `insert`
        // into this entry, whose Release fence follows) or the arena lock (re-validation).
        entry
            .seq
            .store(region.seq.wrapping_add(1), Ordering::Relaxed);
    }
}

/// A TLSF heap of `ARENAS` arenas, each a [`DefaultTlsf`](super::DefaultTlsf) behind its own
/// [`SpinLock`], chosen by CPU; frees go to the arena owning the address. Usable as
/// `#[global_allocator]` (over a static pool, see [`with_pool`](TlsfHeap::with_pool)), as an
/// `Allocator` (features `allocator-api2` and `nightly`), or directly.
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

    /// Takes the growth lock, then every arena's lock in index order, and keeps them (the
    /// heap's fork handler, `SmpHeap::lock_for_fork`; the same order as `add_pool`'s).
    #[cfg(feature = "heap")]
    pub(crate) fn lock_for_fork(&self) {
        self.grow.lock_held();
        for arena in self.arenas.iter() {
            arena.lock_held();
        }
    }

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took (releasing never waits, so
    /// the order does not matter).
    ///
    /// # Safety
    /// The caller (or the forked child of it) holds them from `lock_for_fork`.
    #[cfg(feature = "heap")]
    pub(crate) unsafe fn unlock_after_fork(&self) {
        for arena in self.arenas.iter() {
            // SAFETY: caller: held since `lock_for_fork`.
            unsafe { arena.unlock_held() };
        }
        // SAFETY: as above.
        unsafe { self.grow.unlock_held() };
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
        unsafe { self.add_pool_inner(pool, None, None) }.map(|_| ())
    }

    /// Adds `pool` whole to arena `arena % ARENAS` (the SMP heap's growth: one region per
    /// pool) and allocates `layout` from it in the same critical section of that arena's lock,
    /// so no other thread can take the new memory first (docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks"). `Ok(Some)`:
    /// the pool is the heap's, the block the caller's. `Ok(None)`: the fresh pool cannot serve
    /// `layout` (larger than an arena's largest block); it is taken out again in that same
    /// critical section (its entry vacated, E2) and is the caller's again. Errors as
    /// [`add_pool`](TlsfHeap::add_pool) (nothing changes, the pool stays the caller's).
    ///
    /// # Safety
    /// As for [`add_pool`](TlsfHeap::add_pool).
    #[cfg(feature = "heap")]
    pub(crate) unsafe fn add_pool_and_allocate(
        &self,
        pool: NonNull<[u8]>,
        arena: usize,
        layout: Layout,
    ) -> Result<Option<NonNull<u8>>, AllocError> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.add_pool_inner(pool, Some(arena % ARENAS), Some(layout)) }
    }

    /// `add_pool`, split across the arenas (`owner == None`, when large enough) or whole to
    /// one arena; with `serve` (only with an `owner`: one share), also allocates that layout
    /// from the pool under the same arena lock, and takes the pool out again if it cannot.
    ///
    /// # Safety
    /// As for [`add_pool`](TlsfHeap::add_pool).
    unsafe fn add_pool_inner(
        &self,
        pool: NonNull<[u8]>,
        owner: Option<usize>,
        serve: Option<Layout>,
    ) -> Result<Option<NonNull<u8>>, AllocError> {
        debug_assert!(
            serve.is_none() || owner.is_some(),
            "serving needs one share"
        );
        let start = pool.cast::<u8>().as_ptr();
        let len = pool.len();
        let end = start
            .addr()
            .checked_add(len)
            .ok_or(AllocError::InvalidParam)?;
        let _grow = self.grow.lock();
        if self.regions.live().any(|r| {
            let (s, e) = r.bounds();
            start.addr() < e && s < end
        }) {
            return Err(AllocError::MemoryOverlap);
        }
        let used = self.regions.count();
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
            let region = self.regions.insert(share_start, share_len, owner);
            let block = NonNull::slice_from_raw_parts(
                // SAFETY: inside `pool`, which is non-null.
                unsafe { NonNull::new_unchecked(share_start) },
                share_len,
            );
            let mut arena = self.arenas.get(owner).lock();
            // SAFETY: disjoint from every other region (checked above; shares are disjoint);
            // the caller gives us the memory.
            let inserted = unsafe { arena.insert_free_block_ptr(block) };
            debug_assert!(inserted.is_some(), "share long enough by the check above");
            if let Some(layout) = serve {
                // One share (`owner` given). Still under the arena lock that inserted it: no
                // other thread has seen this memory in the arena yet.
                if let Some(ptr) = arena.allocate(layout) {
                    return Ok(Some(ptr));
                }
                // SAFETY: inserted into this arena with exactly this range just above, under
                // the lock we hold; nothing was allocated from it.
                let taken = unsafe { arena.take_free_pool(block) };
                debug_assert!(taken, "a fresh pool is wholly free");
                // E2: vacated in the critical section that took its blocks out of the arena.
                self.regions.vacate(&region);
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Takes `pool` back from the heap when none of its memory is allocated: afterwards the
    /// heap never touches it again and the caller owns it (e.g. returns it to the page source
    /// it came from). `pool` must be exactly the range of one earlier
    /// [`add_pool`](TlsfHeap::add_pool) / [`add_memory`](TlsfHeap::add_memory) call that went
    /// whole to one arena (a pool split across the arenas is several regions and cannot be
    /// removed as one), or the `with_pool` pool when it went whole to one arena. The region's
    /// table entry is reused by later additions. Lookups by concurrent frees in other regions
    /// stay correct (docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings").
    ///
    /// Errors (nothing changes): `InvalidParam` when no region of the heap is exactly `pool`;
    /// `MemoryOverlap` when an allocated block lies in it.
    ///
    /// # Time Complexity
    /// O(regions + blocks in the pool), under the `grow` lock and the owner arena's lock.
    pub fn remove_pool(&self, pool: NonNull<[u8]>) -> AllocResult {
        self.ensure_ready();
        let start = pool.cast::<u8>().as_ptr().addr();
        let _grow = self.grow.lock();
        let region = self
            .regions
            .live()
            .find(|r| r.start.addr() == start && r.len == pool.len())
            .ok_or(AllocError::InvalidParam)?;
        let mut arena = self.arenas.get(region.owner).lock();
        let range = NonNull::slice_from_raw_parts(
            NonNull::new(region.start).ok_or(AllocError::InvalidParam)?,
            region.len,
        );
        // SAFETY: the region was inserted into this arena with exactly this range (E3), and
        // we hold its lock.
        if !unsafe { arena.take_free_pool(range) } {
            return Err(AllocError::MemoryOverlap);
        }
        // E2: vacated in the critical section that took its blocks out of the arena.
        self.regions.vacate(&region);
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

    /// The region containing `ptr` (a snapshot of its entry: bounds, owner).
    ///
    /// Also returns `ptr` re-derived from the region's own pointer: a caller's pointer may
    /// carry provenance for its block only (a `Box` retags it to its size), while freeing reads
    /// the header before the block.
    #[inline]
    fn owner(&self, ptr: NonNull<u8>) -> Option<(NonNull<u8>, Region)> {
        let region = self.regions.find(ptr.as_ptr().addr())?;
        let ptr = NonNull::new(region.start.with_addr(ptr.as_ptr().addr()))?;
        Some((ptr, region))
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
        // SAFETY: the caller's contract, forwarded.
        let _ = unsafe { self.deallocate_in_region(ptr) };
    }

    /// Frees `ptr` into the arena owning the region that contains it, as
    /// [`deallocate`](TlsfHeap::deallocate) (size non-zero); returns `false`, touching nothing,
    /// when no live region contains `ptr`. For the address of a live block of this heap the
    /// region lookup is exact (docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings", E2-E4), and so is a miss for memory that lies
    /// in no region of it (the SMP heap's direct blocks, 13.5).
    ///
    /// # Safety
    /// As for [`deallocate`](TlsfHeap::deallocate).
    #[inline]
    pub(crate) unsafe fn deallocate_in_region(&self, ptr: NonNull<u8>) -> bool {
        let Some((ptr, region)) = self.owner(ptr) else {
            return false;
        };
        let mut arena = self.arenas.get(region.owner).lock();
        // Re-validation (docs/design/06-tlsf-and-arenas.md §"Atomic protocols and their orderings"): a region is vacated only under its owner's lock, so
        // an unchanged `seq` means the region is still this arena's. Always true for a live
        // block; a stale pointer whose pool was just removed is ignored here.
        if !self.regions.still_holds(&region) {
            debug_assert!(false, "TlsfHeap::deallocate: a pointer into a removed pool");
            return true;
        }
        // SAFETY: `ptr` lies in `region`, a region of this arena (re-validated under its lock).
        let freed = unsafe { arena.try_deallocate_within(ptr, region.bounds()) };
        drop(arena);
        debug_assert!(
            freed.is_ok(),
            "TlsfHeap::deallocate: double free or not an allocation"
        );
        true
    }

    /// The payload bytes of the live block at `ptr`: `None` when no live region contains
    /// `ptr` (as [`in_region`](TlsfHeap::in_region)); `Some(None)` when one does but its
    /// header is not a live block's (the check of `Tlsf::try_deallocate`, under the owner's
    /// lock); changes nothing.
    ///
    /// # Safety
    /// `ptr` is a block of this heap (live, or a bad pointer the header check refuses, within
    /// `Tlsf::try_deallocate`'s limits).
    #[cfg(feature = "heap")]
    pub(crate) unsafe fn usable_in_region(&self, ptr: NonNull<u8>) -> Option<Option<usize>> {
        let (ptr, region) = self.owner(ptr)?;
        let arena = self.arenas.get(region.owner).lock();
        if !self.regions.still_holds(&region) {
            return Some(None);
        }
        // SAFETY: `ptr` lies in `region`, a region of this arena (re-validated under its lock).
        Some(unsafe { arena.usable_within(ptr, region.bounds()) })
    }

    /// Whether the region table has a vacant entry (a hint: exact only while nothing adds or
    /// removes regions).
    #[cfg(feature = "heap")]
    pub(crate) fn has_room(&self) -> bool {
        self.regions.count() < MAX_REGIONS
    }

    /// Whether a live region contains `ptr` (exact for a live block, as
    /// [`deallocate_in_region`](TlsfHeap::deallocate_in_region)).
    #[cfg(feature = "heap")]
    pub(crate) fn in_region(&self, ptr: NonNull<u8>) -> bool {
        self.regions.find(ptr.as_ptr().addr()).is_some()
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
        let (ptr, region) = self.owner(ptr)?;
        {
            let mut arena = self.arenas.get(region.owner).lock();
            if !self.regions.still_holds(&region) {
                // Not a live block (its pool was removed): the caller broke the contract.
                return None;
            }
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
        for (k, a) in self.regions.live().enumerate() {
            let (a_start, a_end) = a.bounds();
            if a.owner >= ARENAS {
                return Err(CheckError("a region names no arena"));
            }
            if self.regions.live().skip(k + 1).any(|b| {
                let (b_start, b_end) = b.bounds();
                a_start < b_end && b_start < a_end
            }) {
                return Err(CheckError("two live regions overlap"));
            }
        }
        let mut used = 0;
        for (i, arena) in self.arenas.iter().enumerate() {
            let arena = arena.lock();
            let (blocks, bytes) = arena.check()?;
            let (mut seen_blocks, mut seen_bytes) = (0, 0);
            for region in self.regions.live() {
                if region.owner != i {
                    continue;
                }
                let pool = NonNull::slice_from_raw_parts(
                    NonNull::new(region.start).ok_or(CheckError("null region"))?,
                    region.len,
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
            .field("regions", &self.regions.count())
            .finish_non_exhaustive()
    }
}
