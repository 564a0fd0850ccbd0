//! [`FlexTlsf`]: a [`Tlsf`] that grows its memory from a [`FlexSource`] on demand, with rlsf
//! 0.2's interface (`rlsf::FlexTlsf`, `rlsf::FlexSource`, `rlsf::GlobalAllocAsFlexSource`),
//! and the sources that come with it: [`GlobalAllocAsFlexSource`] (any `GlobalAlloc`),
//! [`SliceSource`] (a `static` array or any borrowed slice, grown in place) and
//! [`PageAllocatorSource`] (our page layer, or anything implementing [`PageAllocator`]).
//!
//! # Pools and their record
//!
//! Every memory block the source hands out (an *allocation* of the source) starts, at its first
//! [`GRANULARITY`] boundary, with a two-granule record: the previous record, the allocation's
//! address and length, and the length of the TLSF pool that follows the record. The records
//! form a list from the newest allocation to the oldest, which [`FlexTlsf::check`],
//! [`FlexTlsf::iter_blocks`] and `Drop` (when the source supports `dealloc`) walk. rlsf keeps
//! a similar list (in a pool footer) only when the source can deallocate; here it is always
//! kept, so `check` can walk every pool (it costs two granules per source allocation).
//!
//! # Growing
//!
//! When the TLSF cannot serve a request, `FlexTlsf` computes the free block that request needs
//! (the same size `Tlsf::allocate` searches for) and then, in order:
//! 1. if the source supports [`realloc_inplace_grow`](FlexSource::realloc_inplace_grow) and
//!    there is a pool, grows the newest source allocation in place by that block plus a
//!    header, and appends the new memory to its pool (merging with the pool's last free
//!    block);
//! 2. if that fails and the source [`is_contiguous_growable`](FlexSource::is_contiguous_growable),
//!    fails (as rlsf: a new allocation could only come from the same region);
//! 3. otherwise asks the source for a new allocation holding that block, the record and a
//!    sentinel, and adds it as a new pool.
//!
//! A fresh free block at least as large as the searched size always serves the request
//! (`Tlsf`'s rlsf #15 fallback takes a list's head when the rounded search finds nothing), so
//! a request fails after a successful growth only when its alignment makes the searched size
//! exceed [`Tlsf::MAX_BLOCK_SIZE`] (then `FlexTlsf` does not grow at all).

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use super::tlsf::{BitmapWord, BlockInfo, CheckError, GRANULARITY, PoolStats, Tlsf};
use crate::traits::PageAllocator;

/// A used block's header (as in `tlsf.rs`).
const HDR: usize = GRANULARITY;
/// The smallest block (as in `tlsf.rs`).
const MIN_BLOCK: usize = 2 * GRANULARITY;

/// The storage a [`FlexTlsf`] takes its pools from (rlsf's `FlexSource`, the same methods,
/// defaults and contracts).
///
/// # Safety
/// A block returned by [`alloc`](FlexSource::alloc) is at least `min_size` bytes long, valid
/// for reads and writes for its whole length and used by nothing else until it is passed to [`dealloc`](FlexSource::dealloc) (or
/// for as long as the source lives, when it does not support `dealloc`); a successful
/// [`realloc_inplace_grow`](FlexSource::realloc_inplace_grow) extends the same block in place
/// to the length it returns, at least `min_new_len`.
/// `supports_dealloc`, `supports_realloc_inplace_grow`, `is_contiguous_growable` and
/// `min_align` return the same value every time for one instance; every block returned is
/// aligned to `min_align()`.
pub unsafe trait FlexSource {
    /// Allocates a block of at least `min_size` bytes; returns its address range, or `None`.
    /// The default: always `None`.
    ///
    /// # Safety
    /// `min_size` is a non-zero multiple of [`GRANULARITY`].
    #[inline]
    unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
        let _ = min_size;
        None
    }

    /// Grows the block `ptr` in place to at least `min_new_len` bytes; returns its new length
    /// (`>= min_new_len`), or `None` (the block unchanged). The default: always `None`.
    ///
    /// # Safety
    /// `ptr` is a live block of this source (with its current length) and
    /// `min_new_len >= ptr.len()`.
    #[inline]
    unsafe fn realloc_inplace_grow(
        &mut self,
        ptr: NonNull<[u8]>,
        min_new_len: usize,
    ) -> Option<usize> {
        let _ = (ptr, min_new_len);
        None
    }

    /// Frees the block `ptr`. Called only when [`supports_dealloc`](FlexSource::supports_dealloc)
    /// is `true`; the default panics (that would be a source bug).
    ///
    /// # Safety
    /// `ptr` is a live block of this source, with its current length.
    #[inline]
    unsafe fn dealloc(&mut self, ptr: NonNull<[u8]>) {
        let _ = ptr;
        unimplemented!("FlexSource: `supports_dealloc` is true but `dealloc` is not implemented");
    }

    /// Whether [`dealloc`](FlexSource::dealloc) is implemented (then [`FlexTlsf`] frees every
    /// pool back when it is dropped). Default `false`.
    #[inline]
    fn supports_dealloc(&self) -> bool {
        false
    }

    /// Whether [`realloc_inplace_grow`](FlexSource::realloc_inplace_grow) is implemented.
    /// Default `false`.
    #[inline]
    fn supports_realloc_inplace_grow(&self) -> bool {
        false
    }

    /// Whether the source is one region that only grows (`alloc` and `realloc_inplace_grow`
    /// both extend it): then [`FlexTlsf`] does not call `alloc` after a failed in-place
    /// growth. Default `false`.
    #[inline]
    fn is_contiguous_growable(&self) -> bool {
        false
    }

    /// The alignment of every block returned (a power of two). Default 1.
    #[inline]
    fn min_align(&self) -> usize {
        1
    }
}

/// A [`GlobalAlloc`] as a [`FlexSource`] (rlsf's `GlobalAllocAsFlexSource`): each pool is one
/// allocation of the wrapped allocator, aligned to `ALIGN` (at least [`GRANULARITY`]; `ALIGN`
/// must be a power of two, checked at compile time), freed back when the [`FlexTlsf`] drops.
/// No in-place growth, so every growth is a new pool.
#[derive(Default, Debug, Copy, Clone)]
pub struct GlobalAllocAsFlexSource<T, const ALIGN: usize>(pub T);

impl<T: GlobalAlloc, const ALIGN: usize> GlobalAllocAsFlexSource<T, ALIGN> {
    const ALIGN: usize = {
        assert!(
            ALIGN.is_power_of_two(),
            "GlobalAllocAsFlexSource: ALIGN is not a power of two"
        );
        if ALIGN < GRANULARITY {
            GRANULARITY
        } else {
            ALIGN
        }
    };
}

// SAFETY: blocks are `T`'s allocations of the layout asked for, freed with the same layout
// (rebuilt from their length); every one is aligned to `Self::ALIGN`.
unsafe impl<T: GlobalAlloc, const ALIGN: usize> FlexSource for GlobalAllocAsFlexSource<T, ALIGN> {
    unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
        let layout = Layout::from_size_align(min_size, Self::ALIGN)
            .ok()?
            .pad_to_align();
        // SAFETY: `min_size` is non-zero (caller).
        let ptr = NonNull::new(unsafe { self.0.alloc(layout) })?;
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<[u8]>) {
        // SAFETY: `alloc` returned this block with exactly this (valid) layout (caller).
        unsafe {
            let layout = Layout::from_size_align_unchecked(ptr.len(), Self::ALIGN);
            self.0.dealloc(ptr.cast::<u8>().as_ptr(), layout);
        }
    }

    fn supports_dealloc(&self) -> bool {
        true
    }

    fn min_align(&self) -> usize {
        Self::ALIGN
    }
}

/// A borrowed slice (a `static` array, typically) as a contiguous, growable [`FlexSource`]:
/// `alloc` hands out its first `min_size` bytes (rounded up to [`GRANULARITY`]) once, and
/// every later growth extends that block in place until the slice is used up, as a
/// `memory.grow`-style region would. It never frees (nothing to give back to).
///
/// ```
/// use core::alloc::Layout;
/// use core::mem::MaybeUninit;
/// use smpalloc::byte::{FlexTlsf, SliceSource};
///
/// let mut memory = [MaybeUninit::<u8>::uninit(); 16 * 1024];
/// let mut tlsf: FlexTlsf<SliceSource<'_>, u32, u32, 16, 8> =
///     FlexTlsf::new(SliceSource::new(&mut memory));
/// let p = tlsf.allocate(Layout::new::<[u64; 4]>()).unwrap();
/// // SAFETY: allocated above with that alignment.
/// unsafe { tlsf.deallocate(p, 8) };
/// assert!(tlsf.source_ref().used() > 0);
/// ```
pub struct SliceSource<'a> {
    /// The whole slice.
    memory: NonNull<[u8]>,
    /// Bytes handed out (the one block's length).
    used: usize,
    _borrow: core::marker::PhantomData<&'a mut [MaybeUninit<u8>]>,
}

// SAFETY: the source owns the exclusive borrow of its slice.
unsafe impl Send for SliceSource<'_> {}
// SAFETY: `&SliceSource` only reads the two fields.
unsafe impl Sync for SliceSource<'_> {}

impl<'a> SliceSource<'a> {
    /// A source handing out `memory`.
    pub const fn new(memory: &'a mut [MaybeUninit<u8>]) -> Self {
        let len = memory.len();
        let ptr = memory.as_mut_ptr().cast::<u8>();
        Self {
            // SAFETY: a slice's pointer is non-null.
            memory: NonNull::slice_from_raw_parts(unsafe { NonNull::new_unchecked(ptr) }, len),
            used: 0,
            _borrow: core::marker::PhantomData,
        }
    }

    /// Bytes of the slice handed out so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The slice's length.
    pub fn capacity(&self) -> usize {
        self.memory.len()
    }

    /// `min_len` rounded up to a granule, or `None` when the slice is shorter.
    fn fit(&self, min_len: usize) -> Option<usize> {
        let len = min_len.checked_next_multiple_of(GRANULARITY)?;
        (len <= self.memory.len()).then_some(len)
    }
}

impl fmt::Debug for SliceSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SliceSource")
            .field("capacity", &self.memory.len())
            .field("used", &self.used)
            .finish()
    }
}

// SAFETY: the one block is a prefix of the exclusively borrowed slice, only ever extended.
unsafe impl FlexSource for SliceSource<'_> {
    unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
        if self.used != 0 {
            return None;
        }
        let len = self.fit(min_size)?;
        self.used = len;
        Some(NonNull::slice_from_raw_parts(self.memory.cast::<u8>(), len))
    }

    unsafe fn realloc_inplace_grow(
        &mut self,
        ptr: NonNull<[u8]>,
        min_new_len: usize,
    ) -> Option<usize> {
        debug_assert!(ptr.cast::<u8>() == self.memory.cast::<u8>() && ptr.len() == self.used);
        let len = self.fit(min_new_len)?;
        self.used = len;
        Some(len)
    }

    fn supports_realloc_inplace_grow(&self) -> bool {
        true
    }

    fn is_contiguous_growable(&self) -> bool {
        true
    }
}

/// Where a [`PageAllocatorSource`] takes pages from: every [`PageAllocator`] (owned, arceos'
/// `&mut self` interface) and shared references to our concurrent page allocators
/// (`&BitmapPageAllocator`, `&BuddyPageAllocator`: a kernel's `static` page layer).
pub trait PageSupply {
    /// The page size in bytes (a power of two).
    const PAGE_SIZE: usize;
    /// Allocates `num_pages` contiguous pages aligned to `align_pow2`; their address.
    fn supply_pages(&mut self, num_pages: usize, align_pow2: usize) -> Option<usize>;
    /// Frees what `supply_pages(num_pages, _)` returned at `pos`.
    fn return_pages(&mut self, pos: usize, num_pages: usize);
}

impl<P: PageAllocator> PageSupply for P {
    const PAGE_SIZE: usize = P::PAGE_SIZE;
    fn supply_pages(&mut self, num_pages: usize, align_pow2: usize) -> Option<usize> {
        self.alloc_pages(num_pages, align_pow2).ok()
    }
    fn return_pages(&mut self, pos: usize, num_pages: usize) {
        self.dealloc_pages(pos, num_pages);
    }
}

#[cfg(feature = "page")]
impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B> PageSupply
    for &crate::page::BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B>
where
    B: core::borrow::Borrow<crate::bitmap::AtomicBitmap<WORDS, SUMMARY>>,
{
    const PAGE_SIZE: usize = PAGE_SIZE;
    fn supply_pages(&mut self, num_pages: usize, align_pow2: usize) -> Option<usize> {
        (**self).alloc_pages(num_pages, align_pow2).ok()
    }
    fn return_pages(&mut self, pos: usize, num_pages: usize) {
        (**self).dealloc_pages(pos, num_pages);
    }
}

#[cfg(feature = "page")]
impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> PageSupply
    for &crate::page::BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    const PAGE_SIZE: usize = PAGE_SIZE;
    fn supply_pages(&mut self, num_pages: usize, align_pow2: usize) -> Option<usize> {
        (**self).alloc_pages(num_pages, align_pow2).ok()
    }
    fn return_pages(&mut self, pos: usize, num_pages: usize) {
        (**self).dealloc_pages(pos, num_pages);
    }
}

/// Our page layer as a [`FlexSource`]: pages from a [`PageSupply`] (an owned
/// [`PageAllocator`], or `&BitmapPageAllocator` / `&BuddyPageAllocator` shared with the rest
/// of a kernel). Each pool is a run of whole pages (at least `MIN_PAGES`), freed back when the
/// [`FlexTlsf`] drops. The page addresses must be usable as pointers (identity mapped, or the
/// kernel's direct map): [`PageAllocatorSource::new`] is `unsafe` for that.
pub struct PageAllocatorSource<P, const MIN_PAGES: usize = 1> {
    pages: P,
}

impl<P: PageSupply, const MIN_PAGES: usize> PageAllocatorSource<P, MIN_PAGES> {
    /// Takes pages from `pages`.
    ///
    /// # Safety
    /// Every address `pages` supplies is the address of memory valid for reads and writes of
    /// the pages asked for (with exposed provenance: it becomes a pointer through
    /// [`core::ptr::with_exposed_provenance_mut`]), used by nothing else until it is returned.
    pub const unsafe fn new(pages: P) -> Self {
        Self { pages }
    }

    /// The page allocator.
    pub fn pages(&self) -> &P {
        &self.pages
    }
}

impl<P: fmt::Debug, const MIN_PAGES: usize> fmt::Debug for PageAllocatorSource<P, MIN_PAGES> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageAllocatorSource")
            .field("pages", &self.pages)
            .finish()
    }
}

// SAFETY: blocks are runs of pages `P` supplies (valid memory, `new`'s contract), returned
// with the same page count.
unsafe impl<P: PageSupply, const MIN_PAGES: usize> FlexSource
    for PageAllocatorSource<P, MIN_PAGES>
{
    unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
        let pages = min_size.div_ceil(P::PAGE_SIZE).max(MIN_PAGES);
        let bytes = pages.checked_mul(P::PAGE_SIZE)?;
        let addr = self.pages.supply_pages(pages, P::PAGE_SIZE)?;
        let ptr = NonNull::new(ptr::with_exposed_provenance_mut::<u8>(addr))?;
        Some(NonNull::slice_from_raw_parts(ptr, bytes))
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<[u8]>) {
        let addr = ptr.cast::<u8>().as_ptr().expose_provenance();
        self.pages.return_pages(addr, ptr.len() / P::PAGE_SIZE);
    }

    fn supports_dealloc(&self) -> bool {
        true
    }

    fn min_align(&self) -> usize {
        P::PAGE_SIZE
    }
}

/// The record at the start of every source allocation (two granules).
#[repr(C)]
struct PoolRecord {
    /// The previous (older) record, or null.
    older: *mut PoolRecord,
    /// The source allocation's first byte.
    alloc_start: *mut u8,
    /// The source allocation's length.
    alloc_len: usize,
    /// The length of the TLSF pool right after this record.
    pool_len: usize,
}

const RECORD: usize = size_of::<PoolRecord>();
const _: () = assert!(RECORD == 2 * GRANULARITY);

impl PoolRecord {
    /// The TLSF pool after the record.
    fn pool(this: *mut PoolRecord) -> NonNull<[u8]> {
        // SAFETY: records live in source allocations, so the address after one is non-null;
        // `pool_len` is read from a record this allocator wrote (callers hold one).
        unsafe {
            let start = NonNull::new_unchecked(this.cast::<u8>().add(RECORD));
            NonNull::slice_from_raw_parts(start, (*this).pool_len)
        }
    }
}

/// rlsf's `FlexTlsf`: a [`Tlsf`] that takes its pools from a [`FlexSource`] whenever it runs
/// out (see the [module documentation](self) for how it grows), and gives them back to the
/// source when dropped if the source supports `dealloc`. `&mut self` like `Tlsf` (put it in a
/// [`SpinLock`](crate::SpinLock) to share it; `SpinLock<FlexTlsf>` implements
/// [`CAlloc`](crate::byte::CAlloc)).
///
/// Same as rlsf 0.2: the type parameters, `new` (`const`), `allocate`, `deallocate`,
/// `reallocate`, `source_ref`, `source_mut_unchecked`, `Default` (with a `Default` source),
/// freeing on drop. Differs: `allocation_usable_size` is available without rlsf's
/// `unstable` feature; [`check`](FlexTlsf::check) and [`iter_blocks`](FlexTlsf::iter_blocks)
/// are ours; the pool record is always kept (two granules per source allocation); the
/// alignment padding of an over-aligned allocation is freed, not kept (as in our [`Tlsf`]).
///
/// # Errors
/// `allocate` and `reallocate` return `None`, changing nothing observable (a pool may have been
/// added or grown, which later requests use), when: the size exceeds
/// [`Tlsf::MAX_ALLOCATION_SIZE`]; the size plus alignment overflows or, for an alignment above
/// [`GRANULARITY`], exceeds [`Tlsf::MAX_BLOCK_SIZE`] (nothing is taken from the source then);
/// or the source has no more memory.
pub struct FlexTlsf<Source: FlexSource, FLBitmap, SLBitmap, const FLLEN: usize, const SLLEN: usize>
{
    tlsf: Tlsf<'static, FLBitmap, SLBitmap, FLLEN, SLLEN>,
    /// The newest pool's record, or null.
    newest: *mut PoolRecord,
    source: Source,
}

// SAFETY: the records and pools are owned by this value (through its source); moving it moves
// that ownership.
unsafe impl<
    S: FlexSource + Send,
    FL: BitmapWord,
    SL: BitmapWord,
    const FLLEN: usize,
    const SLLEN: usize,
> Send for FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
}
// SAFETY: `&self` methods only read (the records, the free lists through `Tlsf::check`).
unsafe impl<
    S: FlexSource + Sync,
    FL: BitmapWord,
    SL: BitmapWord,
    const FLLEN: usize,
    const SLLEN: usize,
> Sync for FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
}

impl<S: FlexSource, FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>
    FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
    /// An empty allocator over `source` (takes nothing from it yet).
    pub const fn new(source: S) -> Self {
        Self {
            tlsf: Tlsf::new(),
            newest: ptr::null_mut(),
            source,
        }
    }

    /// The source.
    pub fn source_ref(&self) -> &S {
        &self.source
    }

    /// The source, mutably.
    ///
    /// # Safety
    /// The caller neither replaces the source nor frees or changes the blocks it handed to
    /// this allocator.
    pub unsafe fn source_mut_unchecked(&mut self) -> &mut S {
        &mut self.source
    }

    /// The free block size `Tlsf::allocate` searches for `layout`, when growing can help.
    fn search_size(layout: Layout) -> Option<usize> {
        if layout.size() > Tlsf::<'static, FL, SL, FLLEN, SLLEN>::MAX_ALLOCATION_SIZE {
            return None;
        }
        let need = layout
            .size()
            .checked_add(HDR)?
            .checked_next_multiple_of(GRANULARITY)?
            .max(MIN_BLOCK);
        let search = if layout.align() <= GRANULARITY {
            need
        } else {
            need.checked_add(layout.align())?.checked_add(GRANULARITY)?
        };
        (search <= Tlsf::<'static, FL, SL, FLLEN, SLLEN>::MAX_BLOCK_SIZE).then_some(search)
    }

    /// Allocates `layout`, growing the pool from the source when needed; `None` on the cases
    /// listed under "Errors" on the type. A zero-size layout gets a unique minimum block.
    ///
    /// # Time Complexity
    /// O(1) plus the source's call when it grows (O(new pool / `MAX_BLOCK_SIZE`) to add it).
    #[inline]
    pub fn allocate(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if let Some(ptr) = self.tlsf.allocate(layout) {
            return Some(ptr);
        }
        self.allocate_growing(layout)
    }

    #[inline(never)]
    fn allocate_growing(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let search = Self::search_size(layout)?;
        self.grow(search)?;
        self.tlsf.allocate(layout)
    }

    /// Adds at least one free block of `search` bytes, from the source. `None`: the source
    /// has nothing (nothing changed).
    fn grow(&mut self, search: usize) -> Option<()> {
        if !self.newest.is_null() && self.source.supports_realloc_inplace_grow() {
            if self.grow_in_place(search).is_some() {
                return Some(());
            }
            if self.source.is_contiguous_growable() {
                return None;
            }
        }
        self.add_pool(search)
    }

    /// Grows the newest source allocation in place so that its pool gains `search` bytes.
    fn grow_in_place(&mut self, search: usize) -> Option<()> {
        let rec = self.newest;
        // SAFETY: `rec` is our newest record (non-null, checked by the caller), in memory the
        // source handed us; the block passed to the source is its live allocation with its
        // current length; the appended range is the memory it just added behind our pool.
        unsafe {
            let old = NonNull::slice_from_raw_parts(
                NonNull::new_unchecked((*rec).alloc_start),
                (*rec).alloc_len,
            );
            // The pool ends at the last granule boundary in the allocation or before it (an
            // append that added nothing leaves it there), and the new memory starts at the
            // old sentinel: `search` more bytes (a multiple of the granule) add a body of at
            // least `search`.
            let want = (*rec).alloc_len.checked_add(search)?;
            let new_len = self.source.realloc_inplace_grow(old, want)?;
            debug_assert!(
                new_len >= want,
                "FlexSource::realloc_inplace_grow: too short"
            );
            if new_len < (*rec).alloc_len {
                // A source breaking its contract (the block shrank): add nothing.
                return None;
            }
            (*rec).alloc_len = new_len;
            let pool = PoolRecord::pool(rec);
            let pool_end = pool.cast::<u8>().as_ptr().add(pool.len());
            let alloc_end = (*rec).alloc_start.add(new_len);
            let added = NonNull::slice_from_raw_parts(
                NonNull::new_unchecked(pool_end),
                alloc_end.addr() - pool_end.addr(),
            );
            let body = self.tlsf.append_free_block_ptr(added);
            (*rec).pool_len += body;
            (body != 0).then_some(())
        }
    }

    /// Takes a new allocation from the source holding a free block of `search` bytes.
    fn add_pool(&mut self, search: usize) -> Option<()> {
        let slack = if self.source.min_align() < GRANULARITY {
            GRANULARITY - 1
        } else {
            0
        };
        // Slack, record, the block, the sentinel.
        let min_size = search
            .checked_add(slack + RECORD + HDR)?
            .checked_next_multiple_of(GRANULARITY)?;
        // SAFETY: `min_size` is a non-zero multiple of `GRANULARITY`.
        let block = unsafe { self.source.alloc(min_size) }?;
        if block.len() < min_size {
            // A source breaking its contract: do not carve a pool that may not fit.
            debug_assert!(false, "FlexSource::alloc: a block shorter than asked");
            if self.source.supports_dealloc() {
                // SAFETY: the block the source just returned, unused.
                unsafe { self.source.dealloc(block) };
            }
            return None;
        }
        let start = block.cast::<u8>().as_ptr();
        let first = start.addr().checked_next_multiple_of(GRANULARITY)?;
        let end = start.addr().checked_add(block.len())?;
        // SAFETY: the source's contract makes `block` ours; `first + RECORD` lies inside it
        // (its length is at least `min_size`, which includes the slack and the record).
        unsafe {
            let rec = start.add(first - start.addr()).cast::<PoolRecord>();
            rec.write(PoolRecord {
                older: self.newest,
                alloc_start: start,
                alloc_len: block.len(),
                pool_len: 0,
            });
            let pool_start = rec.cast::<u8>().add(RECORD);
            let pool = NonNull::slice_from_raw_parts(
                NonNull::new_unchecked(pool_start),
                end - pool_start.addr(),
            );
            match self.tlsf.insert_free_block_ptr(pool) {
                Some(len) => {
                    (*rec).pool_len = len.get();
                    self.newest = rec;
                    Some(())
                }
                None => {
                    // Cannot happen with a source that keeps its contract (the block has room
                    // for a minimum block and the sentinel); give it back.
                    if self.source.supports_dealloc() {
                        self.source.dealloc(block);
                    }
                    None
                }
            }
        }
    }

    /// Frees the allocation at `ptr`. `align` is accepted for rlsf compatibility (our blocks
    /// need no alignment to be freed). Debug builds check the header as
    /// [`Tlsf::deallocate`] does.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate`/`reallocate` of this allocator and not freed since.
    ///
    /// # Time Complexity
    /// O(1).
    #[inline]
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, align: usize) {
        // SAFETY: caller.
        unsafe { self.tlsf.deallocate(ptr, align) }
    }

    /// Resizes the allocation at `ptr` to `new_layout` (its alignment need not be the old
    /// one: a pointer not aligned to it moves), in place when possible, growing the pool from
    /// the source when needed. `None`: as under "Errors" on the type; the old allocation is
    /// untouched then.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate`/`reallocate` of this allocator and not freed since.
    ///
    /// # Time Complexity
    /// O(1) in place; O(size) when it moves; plus the source's call when it grows.
    pub unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        new_layout: Layout,
    ) -> Option<NonNull<u8>> {
        // SAFETY: caller.
        if let Some(new) = unsafe { self.tlsf.reallocate(ptr, new_layout) } {
            return Some(new);
        }
        self.grow(Self::search_size(new_layout)?)?;
        // SAFETY: caller; the growth above left a free block that serves `new_layout`.
        unsafe { self.tlsf.reallocate(ptr, new_layout) }
    }

    /// The bytes usable at `ptr` (at least the size it was allocated with; rlsf: behind its
    /// `unstable` feature).
    ///
    /// # Safety
    /// `ptr` was returned by a `FlexTlsf` or `Tlsf` and not freed since.
    ///
    /// # Time Complexity
    /// O(1).
    pub unsafe fn allocation_usable_size(ptr: NonNull<u8>) -> usize {
        // SAFETY: caller.
        unsafe { Tlsf::<'static, FL, SL, FLLEN, SLLEN>::usable_size(ptr) }
    }

    /// The pools, newest first (each the address range `Tlsf::iter_blocks` and
    /// `Tlsf::check_pool` take).
    pub fn pools(&self) -> impl Iterator<Item = NonNull<[u8]>> + '_ {
        let mut rec = self.newest;
        core::iter::from_fn(move || {
            if rec.is_null() {
                return None;
            }
            let pool = PoolRecord::pool(rec);
            // SAFETY: a non-null record in the list is one we wrote, in source memory we hold.
            rec = unsafe { (*rec).older };
            Some(pool)
        })
    }

    /// Every block of every pool (pools newest first, blocks in address order), as rlsf's
    /// `Tlsf::iter_blocks` gives them for one pool.
    pub fn iter_blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        // SAFETY: each is one of our pools with its current length; `&self` keeps it still.
        self.pools()
            .flat_map(move |pool| unsafe { self.tlsf.iter_blocks(pool) })
    }

    /// Checks the free lists ([`Tlsf::check`]), every pool ([`Tlsf::check_pool`]), every pool
    /// record (the pool inside its source allocation) and that the free blocks the lists hold
    /// are exactly the free blocks of the pools. Returns the totals over all pools.
    ///
    /// # Time Complexity
    /// O(blocks x list length + FLLEN * SLLEN).
    pub fn check(&self) -> Result<PoolStats, CheckError> {
        let (free_blocks, free_bytes) = self.tlsf.check()?;
        let mut total = PoolStats::default();
        let mut rec = self.newest;
        while !rec.is_null() {
            // SAFETY: a record we wrote, in source memory we hold; its pool is ours.
            let stats = unsafe {
                let r = &*rec;
                let pool_start = rec.cast::<u8>().add(RECORD);
                let before = pool_start.addr() - r.alloc_start.addr();
                if before > GRANULARITY - 1 + RECORD || r.alloc_len < before + r.pool_len {
                    return Err(CheckError("FlexTlsf: a pool outside its source allocation"));
                }
                let pool = PoolRecord::pool(rec);
                rec = r.older;
                self.tlsf.check_pool(pool)?
            };
            total.used_bytes += stats.used_bytes;
            total.used_blocks += stats.used_blocks;
            total.free_bytes += stats.free_bytes;
            total.free_blocks += stats.free_blocks;
            total.overhead_bytes += stats.overhead_bytes;
        }
        if (total.free_blocks, total.free_bytes) != (free_blocks, free_bytes) {
            return Err(CheckError(
                "FlexTlsf: the free lists and the pools' free blocks differ",
            ));
        }
        Ok(total)
    }
}

impl<
    S: FlexSource + Default,
    FL: BitmapWord,
    SL: BitmapWord,
    const FLLEN: usize,
    const SLLEN: usize,
> Default for FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
    fn default() -> Self {
        Self::new(S::default())
    }
}

impl<
    S: FlexSource + fmt::Debug,
    FL: BitmapWord,
    SL: BitmapWord,
    const FLLEN: usize,
    const SLLEN: usize,
> fmt::Debug for FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlexTlsf")
            .field("source", &self.source)
            .field("pools", &self.pools().count())
            .finish_non_exhaustive()
    }
}

impl<S: FlexSource, FL, SL, const FLLEN: usize, const SLLEN: usize> Drop
    for FlexTlsf<S, FL, SL, FLLEN, SLLEN>
{
    fn drop(&mut self) {
        if !self.source.supports_dealloc() {
            return;
        }
        let mut rec = self.newest;
        while !rec.is_null() {
            // SAFETY: a record we wrote in a live source allocation; read it before freeing
            // that allocation, which nothing uses any more (the allocator is going away).
            unsafe {
                let PoolRecord {
                    older,
                    alloc_start,
                    alloc_len,
                    ..
                } = rec.read();
                let block =
                    NonNull::slice_from_raw_parts(NonNull::new_unchecked(alloc_start), alloc_len);
                self.source.dealloc(block);
                rec = older;
            }
        }
    }
}
