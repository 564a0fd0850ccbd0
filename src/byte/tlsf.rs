//! [`Tlsf`]: the two-level segregated fit allocator (Masmano, Ripoll, Crespo and Real, "TLSF: a
//! new dynamic memory allocator for real-time systems", ECRTS 2004), with rlsf's interface.
//!
//! # Layout
//!
//! Memory is handed in as *pools*. A pool is cut into physically adjacent *blocks*, every one
//! starting on a [`GRANULARITY`] boundary and a multiple of it long, and ends in a
//! header-sized, permanently used *sentinel*:
//!
//! ```text
//!  pool:  | slack | block | block | ... | block | sentinel | slack |
//!  block: | size+flags | prev_phys | payload ...                    |   (used)
//!         | size+flags | prev_phys | next_free | prev_free | ...   |   (free)
//! ```
//!
//! A used block's header is two words ([`GRANULARITY`] bytes: 16 on 64-bit targets, rlsf's is
//! the same); the payload starts right after it, so every payload is `GRANULARITY`-aligned. A
//! free block also holds its free-list links, so the minimum block is two granules (32 bytes on
//! 64-bit targets, as rlsf). Larger alignments are served by cutting the gap in front of the
//! aligned payload off as a free block of its own, so the header always sits right before the
//! payload: `deallocate` and [`Tlsf::usable_size`] need no alignment, and no padding is lost
//! inside a used block (rlsf keeps that padding inside the allocation).
//!
//! # Size classes
//!
//! Free blocks are kept in `FLLEN x SLLEN` doubly linked lists. With
//! `L = max(SLLEN * GRANULARITY, 2 * MIN_BLOCK)` (`SLLEN` granules, but at least four), first
//! level 0 holds sizes `0..L` in `SLLEN` equal steps (one granule apart when `SLLEN >= 4`);
//! first level `f >= 1` holds `L << (f-1) .. L << f` in `SLLEN` equal steps. A bit per list (and
//! one per first level) says whether it is non-empty, so finding the first non-empty list at or
//! above a class is two bit scans. The largest block is `(L << (FLLEN-1)) - GRANULARITY`
//! ([`Tlsf::MAX_BLOCK_SIZE`]); longer pools are cut into several blocks.
//!
//! The floor on `L` matters only for `SLLEN < 4`: without it, level 0 (and for `SLLEN == 1`
//! level 1) would cover only sizes below the minimum block, lists no block can ever be on, and
//! `FLLEN == 1` would leave a largest block smaller than the smallest. With it, every
//! configuration rlsf accepts (every `FLLEN` and `SLLEN` of at least 1) is valid here, its
//! largest block is at least `2 * MIN_BLOCK - GRANULARITY` (what cutting a pool needs, see the
//! invariants) and above rlsf's documented maximum `(4 words << FLLEN) - 4 words` for the same
//! `FLLEN`, so no size rlsf can allocate in a configuration is too large for this `Tlsf`.
//!
//! # Fragmentation
//!
//! A request of `n` bytes takes the block `max(round_up(n + 16, 16), 32)` (64-bit), so the
//! header and rounding cost at most 31 bytes per allocation, the same as rlsf (header 16,
//! granule 32: at most 47). "Good fit" search rounds the request up to the next class, so an
//! allocation may pick a block up to one class step larger than needed: the rest is split off
//! whenever it is at least a minimum block, so the internal fragmentation of one allocation is
//! below `max(31, one class step)`, where a class step is `size / SLLEN` (rlsf: the same
//! bound with its 32-byte granule).
//!
//! # rlsf issue #15: serving the largest free block
//!
//! Good-fit rounding means a block of exactly the requested class is never taken by the
//! bit-scan search (rlsf cannot hand out its largest free block). Here, when the rounded search
//! finds nothing, `allocate` looks at the *head* of the request's own list and takes it if it
//! fits. This is one more list head read, so still O(1). It guarantees: an allocation that fits
//! some free block fails only if every fitting block sits in the request's own list behind a
//! head that is too small (in particular, a pool's single free block is always allocatable up
//! to its full payload).
//!
//! # Invariants (checked by [`Tlsf::check`] and [`Tlsf::check_pool`])
//!
//! 1. Blocks of a pool tile it exactly: each header's `prev_phys` is the block before it (null
//!    for the first), and the last is the sentinel.
//! 2. Two physically adjacent free blocks always sum to more than [`Tlsf::MAX_BLOCK_SIZE`]
//!    (otherwise they are merged).
//!
//!    Invariant 2 is why `MAX_BLOCK_SIZE >= 2 * MIN_BLOCK - GRANULARITY` (three granules) is
//!    required, and all that is: a pool longer than the largest block is cut into pieces of at
//!    most `MAX_BLOCK_SIZE`, adjacent pieces summing past it; when the rest after a full piece
//!    would be under a minimum block, the piece gives up a minimum block to the end instead,
//!    and is then still at least `MAX_BLOCK_SIZE + GRANULARITY - MIN_BLOCK`, a valid block only
//!    if that is at least `MIN_BLOCK`. The floor on `L` above guarantees it for every
//!    configuration. In the tiniest (`FLLEN == 1`, `SLLEN <= 4`: blocks of 32 or 48 bytes on
//!    64-bit targets) no two free blocks can ever merge (any two sum past the maximum) and no
//!    block can be split (the rest would be under a minimum block), so a pool is a fixed
//!    tiling, allocations take whole blocks, and an aligned allocation succeeds only where a
//!    block's payload happens to be aligned; every operation and check is unchanged.
//! 3. A free block is in exactly the list of its size class; a list's bit is set iff the list is
//!    non-empty; a first-level bit is set iff its second-level word is non-zero.
//!
//! And the header rule, a property of memory contents that the checks cannot walk: a word pair
//! the allocator wrote reads as a used, non-sentinel header whose successor points back only in
//! front of a live allocation (`release` clears a header it merges into its predecessor). It is
//! what makes [`Tlsf::try_deallocate`] refuse every double or stale free of a pointer it
//! returned (docs/design/06-tlsf-and-arenas.md §"Tlsf: layout and size classes").

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::num::NonZeroUsize;
use core::ptr::{self, NonNull};

use crate::traits::AllocError;

/// The allocation unit: block sizes and addresses are multiples of it (two machine words; 16
/// bytes on 64-bit targets). A used block's header is this long.
pub const GRANULARITY: usize = 2 * size_of::<usize>();

/// Bytes of header in front of every payload.
const HDR: usize = GRANULARITY;
/// The smallest block: a header plus the two free-list links.
const MIN_BLOCK: usize = 2 * GRANULARITY;
/// `size` flag: the block is allocated (or is the sentinel).
const USED: usize = 1;
/// `size` flag: the block is a pool's end sentinel.
const SENTINEL: usize = 2;
const FLAGS: usize = USED | SENTINEL;

/// The header every block starts with.
#[repr(C)]
struct BlockHdr {
    /// Block length in bytes (a multiple of `GRANULARITY`) ORed with `USED`/`SENTINEL`.
    size: usize,
    /// The physically preceding block of the same pool, or null for a pool's first block.
    prev_phys: *mut BlockHdr,
}

/// A free block's header: the common header plus its free-list links.
#[repr(C)]
struct FreeHdr {
    common: BlockHdr,
    /// Next block in the same size-class list, or null.
    next_free: *mut FreeHdr,
    /// Previous block in the same list, or null when this block is the list's head.
    prev_free: *mut FreeHdr,
}

mod sealed {
    pub trait Sealed {}
}

/// An unsigned integer usable as a TLSF bitmap word (`u8`, `u16`, `u32`, `u64`, `u128`,
/// `usize`). Sealed; the methods are implementation details.
pub trait BitmapWord: Copy + Eq + fmt::Debug + Send + Sync + sealed::Sealed + 'static {
    /// All bits clear.
    const ZERO: Self;
    /// Width in bits.
    const BITS: u32;
    #[doc(hidden)]
    fn set(self, i: usize) -> Self;
    #[doc(hidden)]
    fn clear(self, i: usize) -> Self;
    #[doc(hidden)]
    fn get(self, i: usize) -> bool;
    /// The lowest set bit at index `i` or above.
    #[doc(hidden)]
    fn lowest_from(self, i: usize) -> Option<usize>;
}

macro_rules! bitmap_word {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl BitmapWord for $t {
            const ZERO: Self = 0;
            const BITS: u32 = <$t>::BITS;
            #[inline(always)]
            fn set(self, i: usize) -> Self { self | (1 << i) }
            #[inline(always)]
            fn clear(self, i: usize) -> Self { self & !(1 << i) }
            #[inline(always)]
            fn get(self, i: usize) -> bool { self & (1 << i) != 0 }
            #[inline(always)]
            fn lowest_from(self, i: usize) -> Option<usize> {
                if i >= <$t>::BITS as usize {
                    return None;
                }
                let masked = self & (<$t>::MAX << i);
                if masked == 0 { None } else { Some(masked.trailing_zeros() as usize) }
            }
        }
    )*};
}
bitmap_word!(u8, u16, u32, u64, u128, usize);

/// The TLSF allocator over pools that live for `'pool`.
///
/// `FLBitmap`/`SLBitmap` are the bitmap words (at least `FLLEN`/`SLLEN` bits wide); `FLLEN` is
/// the number of first-level classes (powers of two), `SLLEN` (a power of two) the number of
/// lists per class. All operations take `&mut self`; wrap it in a lock
/// ([`TlsfHeap`](super::TlsfHeap) does, one per arena) to share it.
///
/// Every configuration rlsf 0.2 accepts is accepted, `Tlsf<'_, u8, u8, 1, 1>` included. Invalid
/// parameters are compile errors (from [`Tlsf::new`]), exactly rlsf's: `FLLEN` or `SLLEN` zero,
/// `SLLEN` not a power of two, a bitmap word narrower than `FLLEN`/`SLLEN` bits.
///
/// The largest block, [`MAX_BLOCK_SIZE`](Tlsf::MAX_BLOCK_SIZE), is `(L << (FLLEN - 1)) - 16`
/// bytes with `L = 16 * max(SLLEN, 4)` (64-bit targets; capped at `isize::MAX`); no
/// allocation's payload exceeds [`MAX_ALLOCATION_SIZE`](Tlsf::MAX_ALLOCATION_SIZE), 16 bytes
/// less, and longer pools are cut into several blocks, all usable. It is never below rlsf's
/// `(32 << FLLEN) - 32` for the same `FLLEN`, so no size rlsf can allocate in a configuration
/// is too large here (rlsf's largest allocation is further cut by its good-fit rounding); for
/// `SLLEN > 4` it is about `SLLEN / 4` times rlsf's (`<u16, u16, 12, 16>`: 512 KiB, rlsf
/// 128 KiB). The smallest configurations are small allocators: with `FLLEN == 1` and
/// `SLLEN <= 4` every block is 32 or 48 bytes (payloads of at most 32 bytes; rlsf: 16), and
/// blocks neither merge nor split (module documentation, invariant 2). Each step of `FLLEN`
/// doubles the largest block.
///
/// ```
/// use smpalloc::Tlsf;
/// use core::{alloc::Layout, mem::MaybeUninit};
/// let mut pool = [MaybeUninit::uninit(); 4096];
/// let mut tlsf: Tlsf<'_, u16, u16, 12, 16> = Tlsf::new();
/// tlsf.insert_free_block(&mut pool);
/// let p = tlsf.allocate(Layout::from_size_align(100, 64).unwrap()).unwrap();
/// assert_eq!(p.as_ptr() as usize % 64, 0);
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { tlsf.deallocate(p, 64) };
/// ```
pub struct Tlsf<'pool, FLBitmap, SLBitmap, const FLLEN: usize, const SLLEN: usize> {
    /// Bit `f` set iff `sl_bitmap[f] != 0`.
    fl_bitmap: FLBitmap,
    /// Bit `s` of `sl_bitmap[f]` set iff `heads[f][s]` is non-null.
    sl_bitmap: [SLBitmap; FLLEN],
    /// Head of each free list (null when empty); every block on list `(f, s)` is free and its
    /// size maps to `(f, s)`.
    heads: [[*mut FreeHdr; SLLEN]; FLLEN],
    _pool: PhantomData<&'pool mut [MaybeUninit<u8>]>,
}

// SAFETY: the allocator owns its pools' memory (handed over by `&'pool mut` or by the caller's
// `unsafe` contract); its raw pointers point only there, so moving it to another thread moves
// that ownership with it.
unsafe impl<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize> Send
    for Tlsf<'_, FL, SL, FLLEN, SLLEN>
{
}
// SAFETY: `&Tlsf` only reads headers (`check`, `iter_blocks`); every mutation needs `&mut`.
unsafe impl<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize> Sync
    for Tlsf<'_, FL, SL, FLLEN, SLLEN>
{
}

/// A block seen by [`Tlsf::iter_blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// The block's first byte (its header).
    pub start: NonNull<u8>,
    /// The block's length in bytes, header included.
    pub size: usize,
    /// Whether the block is allocated.
    pub used: bool,
}

impl BlockInfo {
    /// The most bytes an allocation in this block can use (its length minus the header).
    pub fn max_payload_size(&self) -> usize {
        self.size - HDR
    }

    /// The block's length in bytes, header included (rlsf's `BlockInfo::size`; the same as
    /// the field).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The block's address range, header included (rlsf's `BlockInfo::as_ptr`).
    pub fn as_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.start, self.size)
    }

    /// Whether the block is allocated (rlsf's `BlockInfo::is_occupied`; the field `used`).
    pub fn is_occupied(&self) -> bool {
        self.used
    }
}

/// Totals found by [`Tlsf::check_pool`]: `used_bytes + free_bytes + overhead_bytes` equals the
/// pool length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in allocated blocks, headers included.
    pub used_bytes: usize,
    /// Allocated blocks.
    pub used_blocks: usize,
    /// Bytes in free blocks.
    pub free_bytes: usize,
    /// Free blocks.
    pub free_blocks: usize,
    /// Alignment slack at both ends plus the sentinel.
    pub overhead_bytes: usize,
}

/// An invariant violation found by [`Tlsf::check`] or [`Tlsf::check_pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckError(pub &'static str);

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for CheckError {}

#[inline(always)]
const fn log2(x: usize) -> u32 {
    usize::BITS - 1 - x.leading_zeros()
}

impl<'pool, FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>
    Tlsf<'pool, FL, SL, FLLEN, SLLEN>
{
    /// Compile-time validation of the parameters (evaluated by [`Tlsf::new`]).
    const VALID: () = {
        assert!(FLLEN > 0, "Tlsf: FLLEN must be at least 1");
        assert!(SLLEN > 0, "Tlsf: SLLEN must be at least 1");
        assert!(
            SLLEN.is_power_of_two(),
            "Tlsf: SLLEN must be a power of two"
        );
        assert!(
            FLLEN <= FL::BITS as usize,
            "Tlsf: FLBitmap has fewer than FLLEN bits"
        );
        assert!(
            SLLEN <= SL::BITS as usize,
            "Tlsf: SLBitmap has fewer than SLLEN bits"
        );
        // Holds for every configuration the checks above accept (`LIN_LOG` below); invariant 2
        // and pool cutting need it (module documentation).
        assert!(
            Self::MAX_BLOCK_SIZE >= 2 * MIN_BLOCK - GRANULARITY,
            "Tlsf: the largest block is under 2 * MIN_BLOCK - GRANULARITY"
        );
    };

    const SL_SHIFT: u32 = SLLEN.trailing_zeros();
    const G_SHIFT: u32 = GRANULARITY.trailing_zeros();
    /// log2 of the end of first level 0, `L = max(SLLEN * GRANULARITY, 2 * MIN_BLOCK)`: at
    /// least four granules, so that level 0 holds block sizes and `FLLEN == 1` a largest
    /// block of at least `2 * MIN_BLOCK - GRANULARITY`. Level 0's step is
    /// `2^(LIN_LOG - SL_SHIFT)`, the granule when `SLLEN >= 4`.
    const LIN_LOG: u32 = {
        let natural = Self::SL_SHIFT + Self::G_SHIFT;
        let floor = (2 * MIN_BLOCK).trailing_zeros();
        if natural < floor { floor } else { natural }
    };

    /// The largest block (header included) this configuration can represent; longer pools are
    /// cut into blocks of at most this size, and no allocation can be larger.
    pub const MAX_BLOCK_SIZE: usize = {
        let top = Self::LIN_LOG as usize + FLLEN - 1;
        if top >= usize::BITS as usize - 1 {
            isize::MAX as usize & !(GRANULARITY - 1)
        } else {
            (1usize << top) - GRANULARITY
        }
    };

    /// The largest payload one allocation can have.
    pub const MAX_ALLOCATION_SIZE: usize = Self::MAX_BLOCK_SIZE - HDR;

    /// An empty allocator (`Tlsf::new()` as a constant, for rlsf 0.1 compatibility).
    pub const INIT: Self = Self::new();

    /// An empty allocator with no pools.
    ///
    /// # Time Complexity
    /// O(FLLEN * SLLEN) (compile time when used in a constant).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        Self {
            fl_bitmap: FL::ZERO,
            sl_bitmap: [SL::ZERO; FLLEN],
            heads: [[ptr::null_mut(); SLLEN]; FLLEN],
            _pool: PhantomData,
        }
    }

    /// The list holding blocks of `size` bytes (`size <= MAX_BLOCK_SIZE`).
    ///
    /// Written without a linear-or-logarithmic branch (a `max` and a saturating subtraction):
    /// block sizes of a real workload straddle the end of the linear level, and a mispredicted
    /// branch here, on every link, costs more than the arithmetic. Level 0 behaves like level 1
    /// without its leading bit: the same step (`2^(LIN_LOG - SL_SHIFT)`, the granule when
    /// `SLLEN >= 4`), starting at 0.
    #[inline(always)]
    fn map_floor(size: usize) -> (usize, usize) {
        let l = log2(size | 1);
        let f = (l + 1).saturating_sub(Self::LIN_LOG);
        let top = l.max(Self::LIN_LOG);
        (f as usize, (size >> (top - Self::SL_SHIFT)) & (SLLEN - 1))
    }

    /// The first list whose every block is at least `size` bytes (`size` a multiple of the
    /// granule, at most `MAX_BLOCK_SIZE`); the first level may be `FLLEN` (no such list).
    #[inline(always)]
    fn map_ceil(size: usize) -> (usize, usize) {
        let top = log2(size | 1).max(Self::LIN_LOG);
        // Round up to the next step of `size`'s level (a no-op on level 0 when its step is the
        // granule, `SLLEN >= 4`), then map down.
        Self::map_floor(size + (1usize << (top - Self::SL_SHIFT)) - 1)
    }

    /// The block size serving `size` payload bytes (`None` beyond `MAX_BLOCK_SIZE`).
    #[inline(always)]
    fn block_size_for(size: usize) -> Option<usize> {
        let need = size.checked_add(HDR + GRANULARITY - 1)? & !(GRANULARITY - 1);
        let need = if need < MIN_BLOCK { MIN_BLOCK } else { need };
        (need <= Self::MAX_BLOCK_SIZE).then_some(need)
    }

    /// The head of list `(f, s)`, without bounds checks (every index the allocator computes
    /// is in range by construction: sizes are at most `MAX_BLOCK_SIZE`, and bitmap bits at or
    /// above `FLLEN`/`SLLEN` are never set).
    ///
    /// # Safety
    /// `f < FLLEN` and `s < SLLEN`.
    #[inline(always)]
    unsafe fn head(&mut self, f: usize, s: usize) -> &mut *mut FreeHdr {
        debug_assert!(f < FLLEN && s < SLLEN);
        // SAFETY: in bounds (caller).
        unsafe { self.heads.get_unchecked_mut(f).get_unchecked_mut(s) }
    }

    /// Second-level word `f`, without bounds checks.
    ///
    /// # Safety
    /// `f < FLLEN`.
    #[inline(always)]
    unsafe fn sl(&mut self, f: usize) -> &mut SL {
        debug_assert!(f < FLLEN);
        // SAFETY: in bounds (caller).
        unsafe { self.sl_bitmap.get_unchecked_mut(f) }
    }

    /// Pushes free block `b` of `size` bytes onto its list.
    ///
    /// # Safety
    /// `b` is a block of one of this allocator's pools, at least `MIN_BLOCK` long, not on any
    /// list.
    #[inline(always)]
    unsafe fn link(&mut self, b: *mut BlockHdr, size: usize) {
        let (f, s) = Self::map_floor(size);
        let b = b.cast::<FreeHdr>();
        // SAFETY: `size <= MAX_BLOCK_SIZE` (caller), so `(f, s)` is in range; `b` is at least
        // `MIN_BLOCK` bytes of our pool (caller), so its link fields exist; `head`, if
        // non-null, is a free block on this list (invariant 3).
        unsafe {
            let head = *self.head(f, s);
            (*b).next_free = head;
            (*b).prev_free = ptr::null_mut();
            if !head.is_null() {
                (*head).prev_free = b;
            }
            *self.head(f, s) = b;
            let word = self.sl(f);
            *word = word.set(s);
        }
        self.fl_bitmap = self.fl_bitmap.set(f);
    }

    /// Removes free block `b` of `size` bytes from its list.
    ///
    /// # Safety
    /// `b` is on the list of `size`'s class.
    #[inline(always)]
    unsafe fn unlink(&mut self, b: *mut BlockHdr, size: usize) {
        let b = b.cast::<FreeHdr>();
        // SAFETY: `b` is a listed free block (caller), so its links and neighbours are valid.
        unsafe {
            let next = (*b).next_free;
            let prev = (*b).prev_free;
            if !next.is_null() {
                (*next).prev_free = prev;
            }
            if !prev.is_null() {
                (*prev).next_free = next;
            } else {
                let (f, s) = Self::map_floor(size);
                *self.head(f, s) = next;
                if next.is_null() {
                    let word = self.sl(f);
                    *word = word.clear(s);
                    if *word == SL::ZERO {
                        self.fl_bitmap = self.fl_bitmap.clear(f);
                    }
                }
            }
        }
    }

    /// Frees block `b` of `size` bytes: merges it with free physical neighbours (invariant 2)
    /// and links the result.
    ///
    /// A header absorbed into its predecessor is cleared (size 0, no flags): otherwise it would
    /// keep `USED`, and with the merged successor's stale `prev_phys` still pointing at it, a
    /// second free of the same pointer would pass the header check and corrupt the heap. A
    /// header absorbed as the successor was already a free header.
    ///
    /// # Safety
    /// `b` is a block of one of our pools, not on any list, whose `prev_phys` is valid and
    /// whose physical successor at `b + size` has a valid header; `size` is a multiple of the
    /// granule, and at least `MIN_BLOCK` unless the block merges into its predecessor.
    #[inline(always)]
    unsafe fn release(&mut self, mut b: *mut BlockHdr, mut size: usize) {
        // SAFETY: headers of `b`, its successor and predecessor are valid (caller; pool tiling).
        unsafe {
            let next = b.byte_add(size);
            let next_size = (*next).size;
            if next_size & USED == 0 && size + next_size <= Self::MAX_BLOCK_SIZE {
                self.unlink(next, next_size);
                size += next_size;
            }
            let prev = (*b).prev_phys;
            if !prev.is_null() {
                let prev_size = (*prev).size;
                if prev_size & USED == 0 && prev_size + size <= Self::MAX_BLOCK_SIZE {
                    self.unlink(prev, prev_size);
                    size += prev_size;
                    // No longer a block: it must not look `USED` (see above).
                    (*b).size = 0;
                    b = prev;
                }
            }
            debug_assert!(size >= MIN_BLOCK);
            (*b).size = size;
            (*b.byte_add(size)).prev_phys = b;
            self.link(b, size);
        }
    }

    /// Lays out `[start, start + body)` as free blocks followed by a sentinel; the first block's
    /// predecessor is `prev`. Returns nothing; every block is released (merged as allowed).
    ///
    /// # Safety
    /// `start` is granule-aligned, `[start, start + body + HDR)` is memory the allocator may own
    /// for `'pool`, `body` is a multiple of the granule and either at least `MIN_BLOCK` or
    /// mergeable into a free `prev`; `prev` is null or the block ending at `start`.
    unsafe fn carve(&mut self, start: *mut u8, body: usize, prev: *mut BlockHdr) {
        // SAFETY: all writes stay inside `[start, start + body + HDR)` (caller).
        unsafe {
            // First write every header as used (so `release` sees no free neighbour among
            // the pieces), then release them.
            let mut offset = 0;
            let mut prev_block = prev;
            while offset < body {
                let rest = body - offset;
                let mut size = if rest > Self::MAX_BLOCK_SIZE {
                    Self::MAX_BLOCK_SIZE
                } else {
                    rest
                };
                if rest != size && rest - size < MIN_BLOCK {
                    // Leave a minimum block for the end; both pieces still sum past the max.
                    size = rest - MIN_BLOCK;
                }
                let b = start.add(offset).cast::<BlockHdr>();
                b.write(BlockHdr {
                    size: size | USED,
                    prev_phys: prev_block,
                });
                prev_block = b;
                offset += size;
            }
            let sentinel = start.add(body).cast::<BlockHdr>();
            sentinel.write(BlockHdr {
                size: HDR | USED | SENTINEL,
                prev_phys: prev_block,
            });
            // Release back to front: pieces never merge with each other (any two sum past
            // the maximum), only the first with `prev`; and the first, largest piece is
            // pushed last, so it heads its list (the rlsf #15 fallback in `allocate` can
            // then hand it out whole).
            let mut b = prev_block;
            while b != prev {
                let earlier = (*b).prev_phys;
                let size = (*b).size & !FLAGS;
                self.release(b, size);
                b = earlier;
            }
        }
    }

    /// Adds `block` as a new pool. Returns the length of the prefix of `block` the pool covers
    /// (alignment slack included: pass `block` cut to this length to [`iter_blocks`] and
    /// [`check_pool`]), or `None` when the granule-aligned part of `block` is shorter than
    /// `3 * GRANULARITY` (a minimum block and the sentinel) or its end overflows the address
    /// space; then nothing changes.
    ///
    /// [`iter_blocks`]: Tlsf::iter_blocks
    /// [`check_pool`]: Tlsf::check_pool
    ///
    /// # Safety
    /// The memory of `block` is valid for reads and writes for `'pool`, not used by anything
    /// else meanwhile, and does not overlap another pool of this allocator.
    ///
    /// # Time Complexity
    /// O(block.len() / MAX_BLOCK_SIZE).
    pub unsafe fn insert_free_block_ptr(&mut self, block: NonNull<[u8]>) -> Option<NonZeroUsize> {
        let len = block.len();
        let start = block.cast::<u8>().as_ptr();
        let addr = start.addr();
        let end = addr.checked_add(len)? & !(GRANULARITY - 1);
        let first = addr.checked_add(GRANULARITY - 1)? & !(GRANULARITY - 1);
        if end < first || end - first < MIN_BLOCK + HDR {
            return None;
        }
        // SAFETY: `first..end` lies inside `block` (just computed), which the caller hands us.
        unsafe { self.carve(start.add(first - addr), end - first - HDR, ptr::null_mut()) };
        NonZeroUsize::new(end - addr)
    }

    /// Adds the memory of `block` as a new pool (the safe form of
    /// [`insert_free_block_ptr`](Tlsf::insert_free_block_ptr); the borrow lasts as long as the
    /// allocator may hand the memory out). Returns the covered prefix length, or `None` when
    /// the block is too small (nothing changes).
    ///
    /// # Time Complexity
    /// O(block.len() / MAX_BLOCK_SIZE).
    pub fn insert_free_block(
        &mut self,
        block: &'pool mut [MaybeUninit<u8>],
    ) -> Option<NonZeroUsize> {
        let len = block.len();
        let ptr = NonNull::slice_from_raw_parts(NonNull::from(block).cast::<u8>(), len);
        // SAFETY: the exclusive borrow for `'pool` gives us the memory for that long.
        unsafe { self.insert_free_block_ptr(ptr) }
    }

    /// Grows the pool that ends where `block` starts by `block`'s memory, merging with that
    /// pool's last free block when possible. Returns the number of bytes added (0 when `block`
    /// is too short to add anything; then nothing changes).
    ///
    /// # Safety
    /// `block` starts exactly at the end (`pool start + returned length`) of a pool previously
    /// added to this allocator, and its memory is valid for reads and writes for `'pool` and
    /// used by nothing else.
    ///
    /// # Time Complexity
    /// O(block.len() / MAX_BLOCK_SIZE).
    pub unsafe fn append_free_block_ptr(&mut self, block: NonNull<[u8]>) -> usize {
        // SAFETY: caller.
        let Some((sentinel, body)) = (unsafe { self.append_plan(block) }) else {
            return 0;
        };
        // SAFETY: `[sentinel, sentinel + body + HDR)` is the old sentinel and `block`'s
        // granule-rounded memory (caller), ours from now on.
        unsafe {
            let prev = (*sentinel).prev_phys;
            self.carve(sentinel.cast::<u8>(), body, prev);
        }
        body
    }

    /// The bytes [`append_free_block_ptr`](Tlsf::append_free_block_ptr) would add for `block`
    /// (0: it would add nothing and change nothing). Reads only the pool's sentinel and last
    /// block; writes nothing.
    ///
    /// # Safety
    /// As for `append_free_block_ptr`.
    pub(crate) unsafe fn append_len(&self, block: NonNull<[u8]>) -> usize {
        // SAFETY: caller.
        unsafe { self.append_plan(block) }.map_or(0, |(_, body)| body)
    }

    /// The old sentinel and the body (bytes added) of an append of `block`, or `None` when it
    /// would add nothing.
    ///
    /// # Safety
    /// As for `append_free_block_ptr`.
    unsafe fn append_plan(&self, block: NonNull<[u8]>) -> Option<(*mut BlockHdr, usize)> {
        let start = block.cast::<u8>().as_ptr();
        let addr = start.addr();
        let end = addr.checked_add(block.len())? & !(GRANULARITY - 1);
        let old_end = addr & !(GRANULARITY - 1);
        if end <= old_end {
            return None;
        }
        // SAFETY: the pool before `block` ends in a sentinel whose end is `old_end`, the granule
        // boundary at or below `addr` (caller; `insert_free_block_ptr` rounds ends down).
        unsafe {
            let sentinel = start.sub(addr - old_end).sub(HDR).cast::<BlockHdr>();
            debug_assert!(
                (*sentinel).size & SENTINEL != 0,
                "append: no pool ends here"
            );
            if (*sentinel).size & SENTINEL == 0 {
                return None;
            }
            let prev = (*sentinel).prev_phys;
            let body = end - old_end;
            let prev_size = (*prev).size;
            let merges = prev_size & USED == 0 && prev_size + body <= Self::MAX_BLOCK_SIZE;
            if body < MIN_BLOCK && !merges {
                return None;
            }
            Some((sentinel, body))
        }
    }

    /// Allocates a block for `layout`, or `None` when no free block can serve it (or the size
    /// exceeds [`MAX_ALLOCATION_SIZE`](Tlsf::MAX_ALLOCATION_SIZE)); nothing changes then. A
    /// zero-size layout gets a minimum block (a unique pointer that must be deallocated).
    ///
    /// # Time Complexity
    /// O(1).
    #[inline(always)]
    pub fn allocate(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // Fast path, small enough to inline: word alignment, and a list at or above the
        // rounded-up class is non-empty.
        if layout.align() <= GRANULARITY {
            if let Some(need) = Self::block_size_for(layout.size()) {
                let (f, s) = Self::map_ceil(need);
                if let Some((f, s)) = self.find_list(f, s) {
                    // SAFETY: `(f, s)` is a non-empty list (its bit is set, invariant 3); every
                    // block on it is at least `need` bytes (good fit); no gap is needed.
                    return Some(unsafe {
                        let b = (*self.head(f, s)).cast::<BlockHdr>();
                        self.take_head(f, s, b, need)
                    });
                }
            }
        }
        self.allocate_general(layout)
    }

    /// `allocate` for alignments above the granule, and the rlsf #15 fallback.
    #[inline(never)]
    fn allocate_general(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let need = Self::block_size_for(layout.size())?;
        let align = layout.align();
        let search = if align <= GRANULARITY {
            need
        } else {
            // Worst-case gap in front of an aligned payload (see `gap_for`).
            need.checked_add(align)?.checked_add(GRANULARITY)?
        };
        let found = if search <= Self::MAX_BLOCK_SIZE {
            let (f, s) = Self::map_ceil(search);
            self.find_list(f, s)
        } else {
            None
        };
        // SAFETY: list heads are free blocks of our pools (invariant 3).
        unsafe {
            let (f, s, b, gap) = match found {
                Some((f, s)) => {
                    let b = (*self.head(f, s)).cast::<BlockHdr>();
                    (f, s, b, Self::gap_for(b, align))
                }
                None => {
                    // rlsf #15: the request's own list may still hold a fitting head.
                    let clamped = if search > Self::MAX_BLOCK_SIZE {
                        Self::MAX_BLOCK_SIZE
                    } else {
                        search
                    };
                    let (f, s) = Self::map_floor(clamped);
                    let b = (*self.head(f, s)).cast::<BlockHdr>();
                    if b.is_null() {
                        return None;
                    }
                    let gap = Self::gap_for(b, align);
                    if (*b).size < gap + need {
                        return None;
                    }
                    (f, s, b, gap)
                }
            };
            Some(self.take(f, s, b, gap, need))
        }
    }

    /// The first non-empty list at or above `(f, s)`.
    #[inline(always)]
    fn find_list(&mut self, f: usize, s: usize) -> Option<(usize, usize)> {
        if f >= FLLEN {
            return None;
        }
        // SAFETY: `f < FLLEN` (checked); a set first-level bit is below `FLLEN`.
        unsafe {
            if let Some(s) = self.sl(f).lowest_from(s) {
                return Some((f, s));
            }
            let f = self.fl_bitmap.lowest_from(f + 1)?;
            Some((f, self.sl(f).lowest_from(0)?))
        }
    }

    /// Bytes to skip at the front of block `b` so its payload is `align`-aligned: 0, or at
    /// least `MIN_BLOCK` (so the skipped part can be a free block). At most `align + G`.
    ///
    /// # Safety
    /// `b` points into one of our pools.
    #[inline(always)]
    unsafe fn gap_for(b: *mut BlockHdr, align: usize) -> usize {
        if align <= GRANULARITY {
            return 0;
        }
        let payload = b.addr() + HDR;
        let mut gap = (align - (payload & (align - 1))) & (align - 1);
        if gap != 0 && gap < MIN_BLOCK {
            gap += align;
        }
        gap
    }

    /// Marks block `b` (of `size` bytes, on no list) used with `need` bytes, releasing the
    /// rest as a free block when it is at least a minimum block. Returns whether it split; if
    /// not, `b` keeps all `size` bytes and its successor's `prev_phys` is left as it was.
    ///
    /// # Safety
    /// `b` is a block of one of our pools with a valid header and successor, `need <= size`,
    /// both multiples of the granule.
    #[inline(always)]
    unsafe fn trim(&mut self, b: *mut BlockHdr, size: usize, need: usize) -> bool {
        // SAFETY: the tail lies inside `b` (caller).
        unsafe {
            if size - need >= MIN_BLOCK {
                (*b).size = need | USED;
                // The tail's predecessor is `b` (used): only its successor can merge.
                let tail = b.byte_add(need);
                let mut tail_size = size - need;
                let next = b.byte_add(size);
                let next_size = (*next).size;
                if next_size & USED == 0 && tail_size + next_size <= Self::MAX_BLOCK_SIZE {
                    self.unlink(next, next_size);
                    tail_size += next_size;
                }
                (*tail).size = tail_size;
                (*tail).prev_phys = b;
                (*tail.byte_add(tail_size)).prev_phys = tail;
                self.link(tail, tail_size);
                true
            } else {
                (*b).size = size | USED;
                false
            }
        }
    }

    /// Removes free block `b`, the head of list `(f, s)`, from that list: its list is known,
    /// so no class computation and no predecessor.
    ///
    /// # Safety
    /// `b` is the head of list `(f, s)`.
    #[inline(always)]
    unsafe fn pop_head(&mut self, f: usize, s: usize, b: *mut BlockHdr) {
        // SAFETY: `b` is a listed free block (caller), its successor on the list one too.
        unsafe {
            let next = (*b.cast::<FreeHdr>()).next_free;
            *self.head(f, s) = next;
            if next.is_null() {
                let word = self.sl(f);
                *word = word.clear(s);
                if *word == SL::ZERO {
                    self.fl_bitmap = self.fl_bitmap.clear(f);
                }
            } else {
                (*next).prev_free = ptr::null_mut();
            }
        }
    }

    /// The fast path's [`take`](Tlsf::take) (no front gap): takes free block `b`, the head of
    /// list `(f, s)`, cuts everything past `need` off its back and returns its payload.
    ///
    /// A function of its own, not `take` with a zero gap: where the compiler does not
    /// specialize `take` for the constant (a non-generic caller such as
    /// `TlsfByteAllocator`), the fast path would run the general body, which saves six
    /// registers on every call (measured under cachegrind).
    ///
    /// Out of line: the caller, `allocate`, is inlined everywhere and stays small; this body
    /// is the same code for every caller.
    ///
    /// # Safety
    /// `b` is the head of list `(f, s)` with `size >= need`.
    #[inline(never)]
    unsafe fn take_head(
        &mut self,
        f: usize,
        s: usize,
        b: *mut BlockHdr,
        need: usize,
    ) -> NonNull<u8> {
        // SAFETY: all headers written lie inside `b` (size >= need) or are its successor.
        unsafe {
            let size = (*b).size;
            self.pop_head(f, s, b);
            // Unsplit, the successor's `prev_phys` already points at `b`: not touching its
            // line saves a cache miss.
            self.trim(b, size, need);
            NonNull::new_unchecked(b.cast::<u8>().add(HDR))
        }
    }

    /// Takes free block `b`, the head of list `(f, s)`, cuts `gap` bytes off its front and
    /// everything past `need` off its back (both released), marks the middle used and returns
    /// its payload.
    ///
    /// # Safety
    /// `b` is the head of list `(f, s)` with `size >= gap + need`, `gap` is 0 or at least
    /// `MIN_BLOCK` and a multiple of the granule.
    #[inline]
    unsafe fn take(
        &mut self,
        f: usize,
        s: usize,
        b: *mut BlockHdr,
        gap: usize,
        need: usize,
    ) -> NonNull<u8> {
        // SAFETY: all headers written lie inside `b` (size >= gap + need) or are its successor.
        unsafe {
            let size = (*b).size;
            self.pop_head(f, s, b);
            let mut block = b;
            let mut rest = size;
            if gap != 0 {
                block = b.byte_add(gap);
                rest -= gap;
                block.write(BlockHdr {
                    size: rest | USED,
                    prev_phys: b,
                });
                (*b).size = gap | USED;
                self.release(b, gap);
            }
            if !self.trim(block, rest, need) && gap != 0 {
                // The successor's `prev_phys` pointed at `b`. (With no gap it already points
                // at `block`: not touching its line saves a cache miss.)
                (*block.byte_add(rest)).prev_phys = block;
            }
            NonNull::new_unchecked(block.cast::<u8>().add(HDR))
        }
    }

    /// The header of the allocation at `ptr`, if it looks like a live allocation of ours
    /// (used, not a sentinel, and its successor points back at it).
    ///
    /// # Safety
    /// `ptr - GRANULARITY` and the word pair at the end of the block it claims to be must be
    /// readable (true for any pointer returned by this allocator); `ptr <= limit`.
    #[inline(always)]
    unsafe fn used_header(ptr: NonNull<u8>, limit: usize) -> Option<(*mut BlockHdr, usize)> {
        // SAFETY: caller; the successor is read only when it ends at or below `limit`.
        unsafe {
            let b = ptr.as_ptr().sub(HDR).cast::<BlockHdr>();
            let size = (*b).size;
            if size & FLAGS != USED {
                return None;
            }
            let size = size & !FLAGS;
            // `ptr <= limit`, so `limit - b.addr() >= HDR`; subtracting (not adding to a
            // forged `size`) cannot overflow.
            if size < MIN_BLOCK || limit - b.addr() - HDR < size {
                return None;
            }
            if (*b.byte_add(size)).prev_phys != b {
                return None;
            }
            Some((b, size))
        }
    }

    /// Frees the allocation at `ptr`. `align` is accepted for rlsf compatibility and unused
    /// (the header always sits right before the payload).
    ///
    /// In debug builds the header is checked first (as [`try_deallocate`](Tlsf::try_deallocate)
    /// does, with the same guarantee): a double free, a stale pointer and most wild pointers
    /// panic. Release builds trust the caller, as rlsf does (the check costs about 10 % of a
    /// free on the churn benchmark); use `try_deallocate` to check in every build.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate`/`reallocate` of this allocator and not freed since.
    ///
    /// # Time Complexity
    /// O(1).
    #[inline]
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, align: usize) {
        let _ = align;
        if cfg!(debug_assertions) {
            // SAFETY: caller.
            let freed = unsafe { self.try_deallocate(ptr) };
            assert!(
                freed.is_ok(),
                "Tlsf::deallocate: double free or not a block of ours"
            );
        } else {
            // SAFETY: a live allocation (caller).
            unsafe { self.free_live(ptr) };
        }
    }

    /// Frees the allocation at `ptr` like [`deallocate`](Tlsf::deallocate), but first checks
    /// that the header in front of `ptr` is a live block's and reports anything else as
    /// `Err(NotAllocated)`, changing nothing, in all builds.
    ///
    /// **What it detects.** The check accepts `ptr` iff the two words before it read as a used,
    /// non-sentinel header of at least a minimum block whose physical successor's `prev_phys`
    /// points back at it. The allocator keeps such a header only in front of a live
    /// allocation: a freed block's header becomes a free header, a header absorbed by a merge
    /// into its predecessor is cleared, free-list links never carry the `USED` bit, and the
    /// sentinel carries `SENTINEL`. So, for any pointer this allocator returned, `Ok` means it
    /// is live now, and every double free, every free of a stale pointer (its block since
    /// merged, split or reused by other blocks) and every free of a merged block's former
    /// payload is refused, unless the caller wrote the header bytes itself (below).
    ///
    /// **What it cannot detect.** The allocator keeps no record of its blocks outside their
    /// headers (rlsf's interface knows no pool bounds), and a header is ordinary memory. Bytes
    /// the caller writes into a live allocation, or left there before freeing it, that mimic a
    /// used header and its successor's back-link (say, at an interior pointer of a live
    /// allocation, or where a stale pointer's header used to be) are indistinguishable from a
    /// real block; a pointer whose header is such bytes is accepted and its "block" freed,
    /// and a forged size can send the successor read outside the pool. A stale pointer that
    /// the allocator has since handed out again is live, and is freed. For a complete check
    /// of any pointer, use [`TlsfByteAllocator::try_dealloc`](crate::TlsfByteAllocator::try_dealloc),
    /// which keeps a bitmap of block starts outside the blocks.
    ///
    /// # Safety
    /// `ptr` is a pointer returned by `allocate`/`reallocate` of this allocator (live, or
    /// freed since: the double and stale frees this function exists to refuse), and the caller
    /// has not written the [`GRANULARITY`] bytes in front of `ptr` since it was freed
    /// (through a later allocation covering them). Any other pointer must at least point into
    /// one of this allocator's pools, past its first granule, with those bytes initialized and
    /// not caller-written.
    ///
    /// # Time Complexity
    /// O(1).
    pub unsafe fn try_deallocate(&mut self, ptr: NonNull<u8>) -> Result<(), AllocError> {
        // SAFETY: caller.
        unsafe { self.try_deallocate_within(ptr, (0, usize::MAX)).map(|_| ()) }
    }

    /// [`try_deallocate`](Tlsf::try_deallocate) for a pointer known to lie in the pool
    /// `[start, limit)`: a pointer in its first granule or not granule-aligned is refused, and
    /// a corrupt size field cannot make the check read past `limit`. Returns the freed block's
    /// size.
    ///
    /// # Safety
    /// `start <= ptr < limit`, and `start .. limit` is memory of one of this allocator's pools.
    pub(crate) unsafe fn try_deallocate_within(
        &mut self,
        ptr: NonNull<u8>,
        (start, limit): (usize, usize),
    ) -> Result<usize, AllocError> {
        let addr = ptr.as_ptr().addr();
        if addr - start < HDR || addr % GRANULARITY != 0 {
            return Err(AllocError::NotAllocated);
        }
        // SAFETY: caller; the header before `ptr` is aligned and inside the pool.
        unsafe {
            let (b, size) = Self::used_header(ptr, limit).ok_or(AllocError::NotAllocated)?;
            self.release(b, size);
            Ok(size)
        }
    }

    /// The payload bytes of the allocation at `ptr` in the pool `[start, limit)` when its
    /// header passes [`try_deallocate`](Tlsf::try_deallocate)'s check (same guarantee and
    /// limits); `None`, nothing read past the pool, otherwise. Changes nothing.
    ///
    /// # Safety
    /// As for [`try_deallocate_within`](Tlsf::try_deallocate_within).
    #[cfg(feature = "heap")]
    pub(crate) unsafe fn usable_within(
        &self,
        ptr: NonNull<u8>,
        (start, limit): (usize, usize),
    ) -> Option<usize> {
        let addr = ptr.as_ptr().addr();
        if addr - start < HDR || addr % GRANULARITY != 0 {
            return None;
        }
        // SAFETY: caller; as in `try_deallocate_within`.
        unsafe { Self::used_header(ptr, limit).map(|(_, size)| size - HDR) }
    }

    /// Frees the live allocation at `ptr` without checking its header; returns the freed
    /// block's size (header included).
    ///
    /// # Safety
    /// `ptr` is a live allocation of this allocator.
    #[inline]
    pub(crate) unsafe fn free_live(&mut self, ptr: NonNull<u8>) -> usize {
        // SAFETY: a live allocation's header precedes it, and its neighbours' headers are
        // valid (caller, invariant 1).
        unsafe {
            let b = ptr.as_ptr().sub(HDR).cast::<BlockHdr>();
            let size = (*b).size & !FLAGS;
            debug_assert!(
                (*b).size & FLAGS == USED && (*b.byte_add(size)).prev_phys == b,
                "Tlsf::free_live: not a live block"
            );
            self.release(b, size);
            size
        }
    }

    /// Resizes the allocation at `ptr` to `new_layout.size()` bytes: in place when shrinking or
    /// when the next block is free and large enough, otherwise by allocating, copying and
    /// freeing. `new_layout.align()` must be the allocation's alignment. Returns `None` (the old
    /// allocation untouched) when no memory can serve the new size.
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and not freed since.
    ///
    /// # Time Complexity
    /// O(1) in place; O(size) when it moves (the copy).
    pub unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        new_layout: Layout,
    ) -> Option<NonNull<u8>> {
        let need = Self::block_size_for(new_layout.size())?;
        // SAFETY: `ptr` is a live allocation (caller), so its header and successor are ours.
        unsafe {
            let b = ptr.as_ptr().sub(HDR).cast::<BlockHdr>();
            let size = (*b).size & !FLAGS;
            debug_assert!(
                (*b).size & FLAGS == USED,
                "Tlsf::reallocate: not a live block"
            );
            if ptr.as_ptr().addr() & (new_layout.align() - 1) == 0 {
                if need <= size {
                    self.trim(b, size, need);
                    return Some(ptr);
                }
                let next = b.byte_add(size);
                let next_size = (*next).size;
                if next_size & USED == 0 && Self::grows_into(size + next_size, need) {
                    self.unlink(next, next_size);
                    let total = size + next_size;
                    if !self.trim(b, total, need) {
                        (*b.byte_add(total)).prev_phys = b;
                    }
                    return Some(ptr);
                }
            }
            let new = self.allocate(new_layout)?;
            let keep = if size - HDR < new_layout.size() {
                size - HDR
            } else {
                new_layout.size()
            };
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), keep);
            self.release(b, size);
            Some(new)
        }
    }

    /// The bytes usable at `ptr` (at least the size it was allocated with).
    ///
    /// # Safety
    /// `ptr` was returned by a `Tlsf` and not freed since.
    ///
    /// # Time Complexity
    /// O(1).
    pub unsafe fn usable_size(ptr: NonNull<u8>) -> usize {
        // SAFETY: a live allocation's header precedes it (caller).
        unsafe { ((*ptr.as_ptr().sub(HDR).cast::<BlockHdr>()).size & !FLAGS) - HDR }
    }

    /// rlsf's name for [`usable_size`](Self::usable_size) (rlsf has it behind its `unstable`
    /// feature; here it is always there).
    ///
    /// # Safety
    /// As for [`usable_size`](Self::usable_size): `ptr` was returned by a `Tlsf` and not freed
    /// since.
    ///
    /// # Time Complexity
    /// O(1).
    pub unsafe fn allocation_usable_size(ptr: NonNull<u8>) -> usize {
        // SAFETY: the caller's guarantee is `usable_size`'s.
        unsafe { Self::usable_size(ptr) }
    }

    /// The largest payload the allocation at `ptr` can be resized to in place (its block plus
    /// a free successor).
    ///
    /// # Safety
    /// `ptr` is a live allocation of this allocator.
    pub(crate) unsafe fn in_place_capacity(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: a live allocation's header and its successor's are ours (caller).
        unsafe {
            let b = ptr.as_ptr().sub(HDR).cast::<BlockHdr>();
            let size = (*b).size & !FLAGS;
            let next_size = (*b.byte_add(size)).size;
            if next_size & USED != 0 {
                return size - HDR;
            }
            let room = size + next_size;
            // The largest block size `grows_into` accepts (see there).
            let most = if room <= Self::MAX_BLOCK_SIZE {
                room
            } else {
                (room - MIN_BLOCK).min(Self::MAX_BLOCK_SIZE)
            };
            most - HDR
        }
    }

    /// Whether a used block can grow in place to `need` bytes by taking its free successor,
    /// `room` being their sum: enough room, and the result fits a block. When `room` exceeds
    /// `MAX_BLOCK_SIZE` (a used block and a free one may sum past it), the rest must be split
    /// off as a free block, so at least a minimum block must remain.
    #[inline(always)]
    fn grows_into(room: usize, need: usize) -> bool {
        room >= need && (room <= Self::MAX_BLOCK_SIZE || room - need >= MIN_BLOCK)
    }

    /// The block size (header included) of the live allocation at `ptr`.
    ///
    /// # Safety
    /// As for [`usable_size`](Tlsf::usable_size).
    pub(crate) unsafe fn block_size(ptr: NonNull<u8>) -> usize {
        // SAFETY: caller.
        unsafe { Self::usable_size(ptr) + HDR }
    }

    /// The blocks of `pool` in address order (the sentinel excluded).
    ///
    /// # Safety
    /// `pool` is a block passed to `insert_free_block(_ptr)` cut to the returned length
    /// (extended by every `append_free_block_ptr` since), and no allocation is modified while
    /// the iterator lives (guaranteed by the shared borrow).
    ///
    /// # Time Complexity
    /// O(1) per block.
    pub unsafe fn iter_blocks(&self, pool: NonNull<[u8]>) -> impl Iterator<Item = BlockInfo> + '_ {
        let start = pool.cast::<u8>().as_ptr();
        let first = (start.addr() + GRANULARITY - 1) & !(GRANULARITY - 1);
        // SAFETY: the first block starts at the first granule boundary of the pool.
        let mut b = unsafe { start.add(first - start.addr()) }.cast::<BlockHdr>();
        core::iter::from_fn(move || {
            // SAFETY: blocks tile the pool up to its sentinel (invariant 1, caller).
            unsafe {
                let size = (*b).size;
                if size & SENTINEL != 0 {
                    return None;
                }
                let info = BlockInfo {
                    start: NonNull::new_unchecked(b.cast::<u8>()),
                    size: size & !FLAGS,
                    used: size & USED != 0,
                };
                b = b.byte_add(size & !FLAGS);
                Some(info)
            }
        })
    }

    /// Takes a wholly free pool out of the allocator: when every block of `pool` is free,
    /// unlinks them all from the free lists and returns `true` (the allocator then holds
    /// nothing of `pool` and never touches it again); otherwise returns `false` and changes
    /// nothing.
    ///
    /// # Safety
    /// As for [`iter_blocks`](Tlsf::iter_blocks): `pool` starts where a pool of this allocator
    /// starts.
    ///
    /// # Time Complexity
    /// O(blocks in the pool).
    pub(crate) unsafe fn take_free_pool(&mut self, pool: NonNull<[u8]>) -> bool {
        // SAFETY: caller.
        if unsafe { self.iter_blocks(pool) }.any(|block| block.used) {
            return false;
        }
        let start = pool.cast::<u8>().as_ptr();
        let first = (start.addr() + GRANULARITY - 1) & !(GRANULARITY - 1);
        // SAFETY: the pool's blocks tile it up to its sentinel (invariant 1, caller); every one
        // is free (just walked), so on its list; unlinking leaves the headers' sizes intact.
        unsafe {
            let mut b = start.add(first - start.addr()).cast::<BlockHdr>();
            loop {
                let size = (*b).size;
                if size & SENTINEL != 0 {
                    break;
                }
                self.unlink(b, size);
                b = b.byte_add(size);
            }
        }
        true
    }

    /// Checks the free lists and bitmaps: every bit against its list, every listed block's
    /// links, flags, size class and physical neighbours (invariants 2 and 3). Returns the
    /// number of free blocks and their total size.
    ///
    /// # Time Complexity
    /// O(free blocks + FLLEN * SLLEN).
    pub fn check(&self) -> Result<(usize, usize), CheckError> {
        let mut blocks = 0;
        let mut bytes = 0;
        for f in 0..FLLEN {
            if self.fl_bitmap.get(f) != (self.sl_bitmap[f] != SL::ZERO) {
                return Err(CheckError(
                    "first-level bit disagrees with its second-level word",
                ));
            }
            for s in 0..SLLEN {
                let head = self.heads[f][s];
                if self.sl_bitmap[f].get(s) == head.is_null() {
                    return Err(CheckError("second-level bit disagrees with its list"));
                }
                let mut prev: *mut FreeHdr = ptr::null_mut();
                let mut b = head;
                while !b.is_null() {
                    // SAFETY: listed blocks are free blocks of our pools (what we check).
                    unsafe {
                        if (*b).prev_free != prev {
                            return Err(CheckError("free list prev link broken"));
                        }
                        let size = (*b).common.size;
                        if size & FLAGS != 0 {
                            return Err(CheckError("listed block is marked used"));
                        }
                        if size < MIN_BLOCK
                            || size % GRANULARITY != 0
                            || size > Self::MAX_BLOCK_SIZE
                        {
                            return Err(CheckError("listed block has a bad size"));
                        }
                        if Self::map_floor(size) != (f, s) {
                            return Err(CheckError("listed block is on the wrong list"));
                        }
                        let bh = b.cast::<BlockHdr>();
                        let next = bh.byte_add(size);
                        if (*next).prev_phys != bh {
                            return Err(CheckError("successor's prev_phys does not point back"));
                        }
                        let ns = (*next).size;
                        if ns & USED == 0 && ns + size <= Self::MAX_BLOCK_SIZE {
                            return Err(CheckError("two adjacent free blocks left unmerged"));
                        }
                        let p = (*bh).prev_phys;
                        if !p.is_null() {
                            let ps = (*p).size;
                            if p.byte_add(ps & !FLAGS) != bh {
                                return Err(CheckError("prev_phys does not end at this block"));
                            }
                            if ps & USED == 0 && ps + size <= Self::MAX_BLOCK_SIZE {
                                return Err(CheckError("two adjacent free blocks left unmerged"));
                            }
                        }
                        blocks += 1;
                        bytes += size;
                        // A cycle revisits a block whose `prev_free` is not the block we came
                        // from, which the first test above reports.
                        prev = b;
                        b = (*b).next_free;
                    }
                }
            }
        }
        Ok((blocks, bytes))
    }

    /// Walks every block of `pool` (invariant 1: tiling, `prev_phys`, sizes, the sentinel at
    /// the end; invariant 2; every free block is on its list) and returns its totals.
    ///
    /// # Safety
    /// As for [`iter_blocks`](Tlsf::iter_blocks).
    ///
    /// # Time Complexity
    /// O(blocks x list length).
    pub unsafe fn check_pool(&self, pool: NonNull<[u8]>) -> Result<PoolStats, CheckError> {
        let start = pool.cast::<u8>().as_ptr();
        let addr = start.addr();
        let first = (addr + GRANULARITY - 1) & !(GRANULARITY - 1);
        let end = (addr + pool.len()) & !(GRANULARITY - 1);
        let mut stats = PoolStats {
            overhead_bytes: first - addr + (addr + pool.len() - end),
            ..PoolStats::default()
        };
        // SAFETY: the pool tiles as checked step by step; reads stay below `end`.
        unsafe {
            let mut b = start.add(first - addr).cast::<BlockHdr>();
            let mut prev: *mut BlockHdr = ptr::null_mut();
            let mut prev_free_size = 0;
            loop {
                if b.addr() + HDR > end {
                    return Err(CheckError("blocks run past the pool end"));
                }
                if (*b).prev_phys != prev {
                    return Err(CheckError("prev_phys is not the previous block"));
                }
                let raw = (*b).size;
                let size = raw & !FLAGS;
                if raw & SENTINEL != 0 {
                    if raw != HDR | USED | SENTINEL || b.addr() + HDR != end {
                        return Err(CheckError("sentinel is not a header at the pool end"));
                    }
                    stats.overhead_bytes += HDR;
                    return Ok(stats);
                }
                if size < MIN_BLOCK || size % GRANULARITY != 0 || size > Self::MAX_BLOCK_SIZE {
                    return Err(CheckError("block has a bad size"));
                }
                if raw & USED != 0 {
                    stats.used_bytes += size;
                    stats.used_blocks += 1;
                    prev_free_size = 0;
                } else {
                    if prev_free_size != 0 && prev_free_size + size <= Self::MAX_BLOCK_SIZE {
                        return Err(CheckError("two adjacent free blocks left unmerged"));
                    }
                    let (f, s) = Self::map_floor(size);
                    let mut x = self.heads[f][s];
                    while !x.is_null() && x.cast::<BlockHdr>() != b {
                        x = (*x).next_free;
                    }
                    if x.is_null() {
                        return Err(CheckError("free block missing from its list"));
                    }
                    stats.free_bytes += size;
                    stats.free_blocks += 1;
                    prev_free_size = size;
                }
                prev = b;
                b = b.byte_add(size);
            }
        }
    }
}

impl<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize> Default
    for Tlsf<'_, FL, SL, FLLEN, SLLEN>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize> fmt::Debug
    for Tlsf<'_, FL, SL, FLLEN, SLLEN>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tlsf")
            .field("fl_bitmap", &self.fl_bitmap)
            .field("sl_bitmap", &self.sl_bitmap)
            .finish_non_exhaustive()
    }
}
