//! Lock-free ID allocation: [`PidAllocator`] and its RAII handle [`Pid`].
//!
//! A drop-in for the `pid_allocator` crate (`PidAllocator::<ORDER>::new()`, `allocate() ->
//! Option<Pid>`, `*pid`, recycling on drop, `contains`; capacity `ORDER * usize::BITS`), built
//! on [`AtomicBitmap`] instead of one spin lock around a linear scan:
//!
//! - no lock on any path: allocation is a summary-guided search plus one CAS, a free is one
//!   `fetch_and`;
//! - `new()` is a `const fn`, so the allocator can be a `static`, and handles borrow it (no
//!   `Arc`, no heap);
//! - PID order by default: next-fit from a cursor with wrap-around, so a freed ID is not handed
//!   out again at once; lowest-free-first ([`Policy::LowestFree`], the seed's order) and per-CPU
//!   cursors ([`Policy::PerCpuNextFit`]) on request;
//! - a reserved low range ([`PidAllocator::with_reserved`]), specific IDs, raw IDs
//!   ([`Pid::into_raw`] / [`Pid::from_raw`]), counts, and arceos' [`IdAllocator`] trait.
//!
//! ```
//! use smpalloc::{Pid, PidAllocator};
//!
//! const ORDER: usize = 32;
//! let allocator = PidAllocator::<ORDER>::new();
//! if let Some(pid) = allocator.allocate() {
//!     assert!(allocator.contains(*pid));
//!     let number = *pid;
//!     drop(pid); // recycled
//!     assert!(!allocator.contains(number));
//! }
//! ```

use core::fmt;
use core::ops::Deref;

use crossbeam_utils::CachePadded;

use crate::bitmap::{AtomicBitmap, BitmapError, Cursor, CyclicCursor, DEFAULT_SUMMARY_WORDS};
use crate::percpu::PerCpu;
use crate::sync::loom_const_fn;
use crate::traits::{AllocError, AllocResult, BaseAllocator, IdAllocator};

/// The number of per-CPU cursors a [`PidAllocator`] keeps for [`Policy::PerCpuNextFit`]
/// (CPU ids are reduced modulo this).
pub const HINT_SLOTS: usize = 16;

/// A violated invariant found by [`PidAllocator::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// The bitmap's summaries disagree with its leaves.
    Bitmap(crate::bitmap::CheckError),
    /// A reserved ID (below [`PidAllocator::reserved`]) is free.
    ReservedFree,
    /// An ID past the managed range is free.
    UnmanagedFree,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bitmap(_) => "bitmap summaries disagree with the leaves",
            Self::ReservedFree => "a reserved ID is free",
            Self::UnmanagedFree => "an ID past the managed range is free",
        })
    }
}

impl core::error::Error for CheckError {}

/// How a [`PidAllocator`] chooses the next ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Strict next-fit from one shared cursor, wrapping around to the reserved floor: IDs come
    /// in increasing order and a freed ID is reused only once the cursor comes round (Unix
    /// PIDs), however many threads allocate at once. Costs one CAS on the shared cursor per
    /// allocation ([`AtomicBitmap::alloc_cyclic`]).
    NextFit,
    /// Next-fit from a cursor per CPU (spread over the ID space at construction), so CPUs
    /// allocating at once work in different bitmap words and never share a cursor line. Each
    /// CPU's IDs increase, but a freed ID may be reused sooner by another CPU (and by a thread
    /// that shares the CPU's cursor after migrating). No shared write per allocation.
    PerCpuNextFit,
    /// Always the lowest free ID (POSIX file descriptors; the `pid_allocator` crate's order).
    LowestFree,
}

/// A lock-free allocator of `ORDER * usize::BITS` IDs.
///
/// `SUMMARY` sizes the bitmap's summary levels; the default covers `ORDER <= 4096` (262,144
/// IDs with 64-bit words). For more, pass `{ smpalloc::bitmap::summary_words(ORDER) }`:
///
/// ```
/// use smpalloc::{PidAllocator, bitmap::summary_words};
/// // 2^22 IDs, Linux's PID_MAX_LIMIT (65,536 words of 64 bits).
/// static PIDS: PidAllocator<65536, { summary_words(65536) }> = PidAllocator::with_reserved(1);
/// assert_eq!(PIDS.size(), (1 << 22) - 1);
/// ```
///
/// Memory: `8 * (ORDER + SUMMARY)` bytes of bitmap plus `(HINT_SLOTS + 1)` cache-padded
/// cursors (128 bytes each on x86_64).
pub struct PidAllocator<const ORDER: usize, const SUMMARY: usize = DEFAULT_SUMMARY_WORDS> {
    bitmap: AtomicBitmap<ORDER, SUMMARY>,
    /// IDs below this are never handed out (kept allocated in the bitmap).
    reserved: usize,
    /// IDs at or above this are never handed out (kept allocated in the bitmap); `capacity`
    /// unless `BaseAllocator::init` narrowed the range.
    limit: usize,
    policy: Policy,
    /// The shared strict next-fit cursor ([`Policy::NextFit`]).
    cursor: CachePadded<CyclicCursor>,
    /// Per-CPU next-fit cursors ([`Policy::PerCpuNextFit`]).
    hints: PerCpu<Cursor, HINT_SLOTS>,
}

impl<const ORDER: usize, const SUMMARY: usize> PidAllocator<ORDER, SUMMARY> {
    /// The number of IDs: `ORDER * usize::BITS`.
    pub const CAPACITY: usize = AtomicBitmap::<ORDER, SUMMARY>::CAPACITY;

    loom_const_fn! {
        /// An allocator of IDs `0..ORDER * usize::BITS`, all free, next-fit order (`const`, so
        /// it can be a `static`).
        pub fn new() -> Self {
            Self::with_reserved(0)
        }
    }

    loom_const_fn! {
        /// An allocator whose IDs `0..reserved` are never handed out (ID 0 for `1`, Linux's
        /// low PIDs for `300`); `reserved` is clamped to the capacity.
        pub fn with_reserved(reserved: usize) -> Self {
            let reserved = if reserved < Self::CAPACITY { reserved } else { Self::CAPACITY };
            Self {
                bitmap: AtomicBitmap::with_prefix_allocated(reserved),
                reserved,
                limit: Self::CAPACITY,
                policy: Policy::NextFit,
                cursor: CachePadded::new(CyclicCursor::new(reserved)),
                hints: spread_cursors(reserved, Self::CAPACITY),
            }
        }
    }

    /// The same allocator with another allocation order.
    pub const fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The allocation order.
    pub const fn policy(&self) -> Policy {
        self.policy
    }

    /// Allocates an ID; `None` when every ID is taken (never a duplicate).
    ///
    /// # Time Complexity
    /// O(levels) word reads and one CAS when uncontended; no lock.
    #[inline]
    pub fn allocate(&self) -> Option<Pid<'_, ORDER, SUMMARY>> {
        self.allocate_raw().map(|id| Pid {
            id,
            allocator: self,
        })
    }

    /// Allocates an ID without a handle; free it with [`free`](Self::free).
    #[inline]
    pub fn allocate_raw(&self) -> Option<usize> {
        match self.policy {
            Policy::NextFit => self.bitmap.alloc_cyclic(&self.cursor, self.reserved),
            Policy::PerCpuNextFit => self
                .bitmap
                .alloc_next_fit(self.hints.current(), self.reserved),
            Policy::LowestFree => self.bitmap.alloc_lowest_from(self.reserved),
        }
    }

    /// Allocates exactly `id` (for init and friends).
    ///
    /// # Errors
    /// - [`BitmapError::Reserved`] if `id` is in the reserved low range;
    /// - [`BitmapError::OutOfRange`] if `id` is outside the managed range;
    /// - [`BitmapError::AlreadyAllocated`] if it is taken.
    pub fn allocate_specific(&self, id: usize) -> Result<Pid<'_, ORDER, SUMMARY>, BitmapError> {
        self.allocate_specific_raw(id).map(|()| Pid {
            id,
            allocator: self,
        })
    }

    /// [`allocate_specific`](Self::allocate_specific) without a handle.
    ///
    /// # Errors
    /// As [`allocate_specific`](Self::allocate_specific).
    pub fn allocate_specific_raw(&self, id: usize) -> Result<(), BitmapError> {
        self.check_managed(id)?;
        self.bitmap.alloc_specific(id)
    }

    /// Frees an ID that was detached from its handle ([`Pid::into_raw`], `allocate_raw`).
    ///
    /// # Errors
    /// - [`BitmapError::Reserved`] / [`BitmapError::OutOfRange`] for an ID outside the managed
    ///   range;
    /// - [`BitmapError::NotAllocated`] if it is free (a double free): nothing changes.
    ///
    /// Freeing an ID that a live [`Pid`] still holds is a logic error the allocator cannot
    /// see at this call: when the handle drops later, its free finds the ID free (a
    /// `debug_assert!` fires in debug builds; release builds change nothing) or, if the ID was
    /// handed out again meanwhile, frees the new owner's ID.
    pub fn free(&self, id: usize) -> Result<(), BitmapError> {
        self.check_managed(id)?;
        self.release_id(id)
    }

    /// The bitmap free for this policy (`id` need not be in the managed range: the bitmap
    /// checks the capacity, and reserved and unmanaged IDs stay allocated).
    ///
    /// On x86, `LowestFree` takes the single-bit free ([`AtomicBitmap::free_bit`]): its next
    /// allocation reads the same leaf word at once, and the CAS loop's load before its
    /// `lock cmpxchg` made the pair 10.3 ns against 7.0 ns (2026-12-06). The cursor
    /// policies keep [`AtomicBitmap::free`], whose pair was faster for them (6.5 against
    /// 7.2 ns for `PerCpuNextFit`). Elsewhere `free` is one instruction that returns the whole
    /// old word (RISC-V `amoand`, AArch64 `ldclr`), so `free_bit`'s extra load would only
    /// cost. docs/design/03-bitmap-and-ids.md, "Free".
    #[inline(always)]
    fn release_id(&self, id: usize) -> Result<(), BitmapError> {
        if cfg!(any(target_arch = "x86", target_arch = "x86_64"))
            && self.policy == Policy::LowestFree
        {
            self.bitmap.free_bit(id)
        } else {
            self.bitmap.free(id)
        }
    }

    fn check_managed(&self, id: usize) -> Result<(), BitmapError> {
        if id < self.reserved {
            Err(BitmapError::Reserved)
        } else if id >= self.limit {
            Err(BitmapError::OutOfRange)
        } else {
            Ok(())
        }
    }

    /// Whether `id` is allocated; `false` for reserved and out-of-range IDs.
    ///
    /// # Time Complexity
    /// One load.
    #[inline]
    pub fn contains(&self, id: usize) -> bool {
        id >= self.reserved && id < self.limit && self.bitmap.contains(id)
    }

    /// The number of IDs of the type, `ORDER * usize::BITS` (the `pid_allocator` capacity).
    pub const fn capacity(&self) -> usize {
        Self::CAPACITY
    }

    /// The size of the reserved low range.
    pub const fn reserved(&self) -> usize {
        self.reserved
    }

    /// The number of IDs that can be handed out: the managed range minus the reserved range.
    pub const fn size(&self) -> usize {
        self.limit - self.reserved
    }

    /// The number of allocated IDs (reserved ones excluded). Exact when no thread is
    /// allocating or freeing.
    ///
    /// # Time Complexity
    /// O(ORDER) loads (a popcount; the hot paths keep no shared counter).
    pub fn used(&self) -> usize {
        self.bitmap.count_allocated_in(self.reserved, self.limit)
    }

    /// The number of IDs still free: `size() - used()`.
    pub fn available(&self) -> usize {
        self.size() - self.used()
    }

    /// The underlying bitmap (read-only diagnostics).
    pub const fn bitmap(&self) -> &AtomicBitmap<ORDER, SUMMARY> {
        &self.bitmap
    }

    /// Checks the invariants (call it while no thread uses the allocator): the bitmap's own
    /// ([`AtomicBitmap::check`]), and every reserved and unmanaged ID held.
    ///
    /// # Errors
    /// The first violation found ([`CheckError`]).
    pub fn check(&self) -> Result<(), CheckError> {
        self.bitmap.check().map_err(CheckError::Bitmap)?;
        if self.bitmap.count_allocated_in(0, self.reserved) != self.reserved {
            return Err(CheckError::ReservedFree);
        }
        if self.bitmap.count_allocated_in(self.limit, Self::CAPACITY) != Self::CAPACITY - self.limit
        {
            return Err(CheckError::UnmanagedFree);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // IdAllocator operations on `&self`

    /// Allocates `count` contiguous IDs starting at a multiple of `align_pow2`.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`] if `count == 0` or `align_pow2` is not a power of two;
    /// - [`AllocError::NoMemory`] if no such range is free.
    pub fn alloc_id(&self, count: usize, align_pow2: usize) -> AllocResult<usize> {
        self.bitmap
            .alloc_contiguous(count, align_pow2, self.reserved)?
            .ok_or(AllocError::NoMemory)
    }

    /// Frees `count` contiguous IDs from `start_id`.
    ///
    /// # Errors
    /// - [`AllocError::InvalidParam`] if `count == 0` or the range leaves the managed range;
    /// - [`AllocError::NotAllocated`] if any ID of it is free: nothing changes.
    pub fn dealloc_id(&self, start_id: usize, count: usize) -> AllocResult {
        let end = start_id
            .checked_add(count)
            .ok_or(AllocError::InvalidParam)?;
        if start_id < self.reserved || end > self.limit {
            return Err(AllocError::InvalidParam);
        }
        Ok(self.bitmap.free_range(start_id, count)?)
    }

    /// Allocates exactly `id` (the `IdAllocator` name for
    /// [`allocate_specific_raw`](Self::allocate_specific_raw)).
    ///
    /// # Errors
    /// [`AllocError::InvalidParam`] outside the managed range, [`AllocError::MemoryOverlap`]
    /// if taken.
    pub fn alloc_fixed_id(&self, id: usize) -> AllocResult {
        Ok(self.allocate_specific_raw(id)?)
    }
}

/// `HINT_SLOTS` cursors spread evenly over `start..end`.
#[cfg(not(loom))]
const fn spread_cursors(start: usize, end: usize) -> PerCpu<Cursor, HINT_SLOTS> {
    let mut cursors = [const { Cursor::new(0) }; HINT_SLOTS];
    let stride = (end - start) / HINT_SLOTS;
    let mut i = 0;
    while i < HINT_SLOTS {
        cursors[i] = Cursor::new(start + i * stride);
        i += 1;
    }
    PerCpu::new(cursors)
}

/// `HINT_SLOTS` cursors spread evenly over `start..end`.
#[cfg(loom)]
fn spread_cursors(start: usize, end: usize) -> PerCpu<Cursor, HINT_SLOTS> {
    let stride = (end - start) / HINT_SLOTS;
    PerCpu::from_fn(|i| Cursor::new(start + i * stride))
}

impl<const ORDER: usize, const SUMMARY: usize> Default for PidAllocator<ORDER, SUMMARY> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ORDER: usize, const SUMMARY: usize> fmt::Debug for PidAllocator<ORDER, SUMMARY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidAllocator")
            .field("policy", &self.policy)
            .field("reserved", &self.reserved)
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

impl<const ORDER: usize, const SUMMARY: usize> BaseAllocator for PidAllocator<ORDER, SUMMARY> {
    /// Makes `start..start + size` (clamped to the capacity) the managed ID range: IDs below
    /// `start` become the reserved range, IDs past the end are never handed out, and every
    /// ID of the range is free. Forgets all earlier allocations (`&mut self`: no handle can be
    /// alive).
    fn init(&mut self, start: usize, size: usize) {
        let start = start.min(Self::CAPACITY);
        let end = start.saturating_add(size).min(Self::CAPACITY);
        let policy = self.policy;
        *self = Self::with_reserved(start).with_policy(policy);
        if end < Self::CAPACITY {
            let result = self.bitmap.alloc_contiguous(Self::CAPACITY - end, 1, end);
            debug_assert_eq!(result, Ok(Some(end)), "a fresh bitmap has its tail free");
        }
        self.limit = end;
        self.hints = spread_cursors(start, end);
    }

    /// Adds `start..start + size` to the managed range. The managed IDs stay one interval, so
    /// the new range must touch it (end where it starts, or start where it ends). When the
    /// managed range is empty (`init(x, 0)`), any range containing its position `x` becomes the
    /// managed range.
    ///
    /// # Errors
    /// - [`AllocError::MemoryOverlap`] if the range overlaps the managed range;
    /// - [`AllocError::InvalidParam`] if it is empty, leaves the capacity or does not touch the
    ///   managed range.
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
        if size == 0 || end > Self::CAPACITY {
            return Err(AllocError::InvalidParam);
        }
        if self.reserved == self.limit && start <= self.reserved && end >= self.limit {
            self.bitmap.free_range(start, size)?;
            (self.reserved, self.limit) = (start, end);
            self.hints = spread_cursors(start, end);
            return Ok(());
        }
        if start < self.limit && end > self.reserved {
            return Err(AllocError::MemoryOverlap);
        }
        if end == self.reserved {
            self.bitmap.free_range(start, size)?;
            self.reserved = start;
        } else if start == self.limit {
            self.bitmap.free_range(start, size)?;
            self.limit = end;
        } else {
            return Err(AllocError::InvalidParam);
        }
        Ok(())
    }
}

impl<const ORDER: usize, const SUMMARY: usize> IdAllocator for PidAllocator<ORDER, SUMMARY> {
    fn alloc_id(&mut self, count: usize, align_pow2: usize) -> AllocResult<usize> {
        PidAllocator::alloc_id(self, count, align_pow2)
    }

    /// Frees the range; a range that is not fully allocated changes nothing (use the inherent
    /// [`PidAllocator::dealloc_id`] to see the error).
    fn dealloc_id(&mut self, start_id: usize, count: usize) {
        let _ = PidAllocator::dealloc_id(self, start_id, count);
    }

    fn is_allocated(&self, id: usize) -> bool {
        self.contains(id)
    }

    fn alloc_fixed_id(&mut self, id: usize) -> AllocResult {
        PidAllocator::alloc_fixed_id(self, id)
    }

    fn size(&self) -> usize {
        PidAllocator::size(self)
    }

    fn used(&self) -> usize {
        PidAllocator::used(self)
    }

    fn available(&self) -> usize {
        PidAllocator::available(self)
    }
}

/// An allocated ID; derefs to the number and frees it when dropped.
///
/// Unlike the `pid_allocator` crate's handle, it borrows its allocator instead of holding an
/// `Arc`: no heap, no reference count, and the allocator can be a `static` (handles are then
/// `Pid<'static, ORDER>`).
pub struct Pid<'a, const ORDER: usize, const SUMMARY: usize = DEFAULT_SUMMARY_WORDS> {
    id: usize,
    allocator: &'a PidAllocator<ORDER, SUMMARY>,
}

impl<'a, const ORDER: usize, const SUMMARY: usize> Pid<'a, ORDER, SUMMARY> {
    /// The ID.
    #[inline]
    pub const fn id(&self) -> usize {
        self.id
    }

    /// Detaches the ID from the handle: it stays allocated until passed to
    /// [`PidAllocator::free`] or turned back into a handle with [`from_raw`](Self::from_raw).
    pub fn into_raw(self) -> usize {
        let id = self.id;
        core::mem::forget(self);
        id
    }

    /// Rebuilds a handle from an ID detached with [`into_raw`](Self::into_raw); dropping it
    /// frees the ID.
    ///
    /// # Safety
    /// - `id` must be allocated in `allocator` (from `into_raw`, `allocate_raw` or
    ///   `allocate_specific_raw` of this same allocator);
    /// - no other handle for `id` may exist, and nobody else may free it: otherwise the ID is
    ///   freed twice, and the second free may release an ID that was handed out again.
    pub unsafe fn from_raw(allocator: &'a PidAllocator<ORDER, SUMMARY>, id: usize) -> Self {
        debug_assert!(
            allocator.contains(id),
            "Pid::from_raw: ID {id} is not allocated"
        );
        Self { id, allocator }
    }
}

impl<const ORDER: usize, const SUMMARY: usize> Deref for Pid<'_, ORDER, SUMMARY> {
    type Target = usize;
    #[inline]
    fn deref(&self) -> &usize {
        &self.id
    }
}

impl<const ORDER: usize, const SUMMARY: usize> Drop for Pid<'_, ORDER, SUMMARY> {
    #[inline]
    fn drop(&mut self) {
        let freed = self.allocator.release_id(self.id);
        // Not while unwinding: a second panic would abort and hide the first one. (Release
        // builds still load the panic count here: with the check compiled out, `NextFit`'s
        // allocate+drop went from 8.2 to 9.6 ns in the showcase, 2026-12-06, with the
        // allocation code byte-identical; measured, not understood. docs/design/03, "Speed
        // against index-set".)
        #[cfg(feature = "std")]
        let unwinding = std::thread::panicking();
        #[cfg(not(feature = "std"))]
        let unwinding = false;
        debug_assert!(
            freed.is_ok() || unwinding,
            "Pid {} was freed behind its handle's back",
            self.id
        );
    }
}

impl<const ORDER: usize, const SUMMARY: usize> fmt::Debug for Pid<'_, ORDER, SUMMARY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pid").field(&self.id).finish()
    }
}

impl<const ORDER: usize, const SUMMARY: usize> fmt::Display for Pid<'_, ORDER, SUMMARY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

impl<const ORDER: usize, const SUMMARY: usize> PartialEq for Pid<'_, ORDER, SUMMARY> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && core::ptr::eq(self.allocator, other.allocator)
    }
}

impl<const ORDER: usize, const SUMMARY: usize> Eq for Pid<'_, ORDER, SUMMARY> {}

impl<const ORDER: usize, const SUMMARY: usize> core::hash::Hash for Pid<'_, ORDER, SUMMARY> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}
