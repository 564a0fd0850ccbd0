//! [`TlsfByteAllocator`]: arceos' byte-allocator API over one [`Tlsf`].

use core::alloc::Layout;
use core::ptr::NonNull;

use super::dangling;
use super::tlsf::{GRANULARITY, Tlsf};
use crate::traits::{AllocError, AllocResult, BaseAllocator, ByteAllocator};

/// The `Tlsf` configuration of [`TlsfByteAllocator`] and [`TlsfHeap`](super::TlsfHeap)
/// arenas: 28 first-level classes of 32 lists (arceos' choice), blocks up to 64 GiB on 64-bit
/// targets, a 7.3 KB header.
pub type DefaultTlsf = Tlsf<'static, u32, u32, 28, 32>;

/// How many separate regions one allocator tracks (`add_memory` right after an existing region
/// grows it instead of taking a slot).
const MAX_REGIONS: usize = 16;

/// The header of the block before the payload, and the sentinel at a pool's end.
const HDR: usize = GRANULARITY;

/// The smallest pool a `Tlsf` accepts: a minimum block (two granules) and the sentinel.
const MIN_POOL: usize = 3 * GRANULARITY;

/// Bytes and bits of one bitmap word.
const WORD: usize = size_of::<usize>();
const WORD_BITS: usize = usize::BITS as usize;

/// One region: the range handed to `add_memory` (grown by later adjacent ones), a `Tlsf` pool
/// over its front and the bitmap of used block starts right after that pool:
///
/// ```text
///  start   first                              pool_end                          end
///  | slack | blocks ...              | sentinel | bitmap (1 bit per granule) | slack |
/// ```
#[derive(Clone, Copy)]
struct Region {
    /// The range as given (`start < end`); regions are pairwise disjoint.
    start: usize,
    end: usize,
    /// The first granule boundary at or above `start`: the first block's header.
    first: usize,
    /// The end of the pool (the sentinel's end; granule-aligned), where the bitmap starts.
    pool_end: usize,
}

impl Region {
    const EMPTY: Self = Self {
        start: 0,
        end: 0,
        first: 0,
        pool_end: 0,
    };

    /// Where the pool of a region whose blocks start at `first` and whose memory ends at
    /// `end` ends: the most granules `n` with `n` granules plus a bitmap of `n` bits (whole
    /// words) fitting in `end - first`. Every `WORD_BITS` granules cost one word of bitmap,
    /// 1/129 of the memory on 64-bit targets.
    const fn pool_end_for(first: usize, end: usize) -> usize {
        let room = end.saturating_sub(first);
        let group = WORD_BITS * GRANULARITY + WORD;
        let (full, rest) = (room / group, room % group);
        let tail = if rest > WORD {
            (rest - WORD) / GRANULARITY
        } else {
            0
        };
        first + (full * WORD_BITS + tail) * GRANULARITY
    }

    /// Words of the bitmap of a pool `[first, pool_end)`: one bit per granule.
    const fn words_for(first: usize, pool_end: usize) -> usize {
        ((pool_end - first) / GRANULARITY).div_ceil(WORD_BITS)
    }

    /// The bitmap's first word (with the region's exposed provenance).
    fn bits(&self) -> *mut usize {
        core::ptr::with_exposed_provenance_mut(self.pool_end)
    }

    /// The word holding the bit of the block starting at `block`, and the bit's mask.
    ///
    /// `first <= block < pool_end`, `block` granule-aligned.
    #[inline(always)]
    fn bit(&self, block: usize) -> (*mut usize, usize) {
        let i = (block - self.first) / GRANULARITY;
        // `i / WORD_BITS` is below the bitmap's word count (`block < pool_end`).
        (
            self.bits().wrapping_add(i / WORD_BITS),
            1 << (i % WORD_BITS),
        )
    }

    /// The pool's memory as `insert_free_block_ptr` took it.
    fn pool(&self) -> Option<NonNull<[u8]>> {
        let ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(self.start))?;
        Some(NonNull::slice_from_raw_parts(
            ptr,
            self.pool_end - self.start,
        ))
    }
}

/// A TLSF byte allocator with arceos' `TlsfByteAllocator` interface ([`BaseAllocator`] +
/// [`ByteAllocator`]).
///
/// Differences from arceos (all fixes): zero-size layouts get a dangling pointer aligned to
/// the layout and freeing it is a no-op; `add_memory` reports overlap (`MemoryOverlap`), a
/// too-small region (`InvalidParam`) and a full region table (`NoMemory`) instead of
/// accepting everything; a region starting where another ends grows that pool in place;
/// `used_bytes` counts whole blocks (headers included), so `used_bytes + available_bytes` is
/// exactly the bytes in blocks.
///
/// **Every free is validated.** Each region keeps, after its pool, a bitmap with one bit per
/// granule that is set exactly where a used block starts (set by `alloc`, cleared by a
/// free). [`dealloc`](ByteAllocator::dealloc) and [`try_dealloc`](Self::try_dealloc) free
/// only a pointer whose block-start bit is set, so no pointer (stale, double, interior, into
/// a merged block, foreign, misaligned, or behind bytes that mimic a header) can make the
/// allocator write anywhere but into a live block's header and its free neighbours: it is
/// refused and nothing changes. The bitmap costs 1/129 of each region (one word per 64
/// granules on 64-bit targets), taken from `available_bytes`.
///
/// ```
/// use smpalloc::{BaseAllocator, ByteAllocator, TlsfByteAllocator};
/// use core::alloc::Layout;
/// let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
/// let mut allocator = TlsfByteAllocator::new();
/// allocator.init(pool.as_mut_ptr() as usize, pool.len());
/// let layout = Layout::from_size_align(1024, 16).unwrap();
/// let ptr = allocator.alloc(layout).unwrap();
/// // SAFETY: 1024 bytes were just allocated at `ptr`.
/// unsafe { ptr.as_ptr().cast::<u32>().write(0xdead_beef) };
/// allocator.dealloc(ptr, layout);
/// assert_eq!(allocator.used_bytes(), 0);
/// assert!(allocator.try_dealloc(ptr, layout).is_err(), "a double free is refused");
/// ```
pub struct TlsfByteAllocator {
    inner: DefaultTlsf,
    /// The regions handed to `inner`; pairwise disjoint; only the first `regions_len` are
    /// meaningful.
    regions: [Region; MAX_REGIONS],
    regions_len: usize,
    /// Sum of region lengths as given.
    total: usize,
    /// Bytes of all blocks (free and used) in the pools: `total` minus slack, sentinels and
    /// bitmaps.
    managed: usize,
    /// Bytes of allocated blocks, headers included.
    used: usize,
}

impl TlsfByteAllocator {
    /// An allocator with no memory; add some with `init` or `add_memory`.
    pub const fn new() -> Self {
        Self {
            inner: Tlsf::new(),
            regions: [Region::EMPTY; MAX_REGIONS],
            regions_len: 0,
            total: 0,
            managed: 0,
            used: 0,
        }
    }

    /// The underlying [`Tlsf`] (for `check` and diagnostics).
    pub fn tlsf(&self) -> &DefaultTlsf {
        &self.inner
    }

    /// Runs [`Tlsf::check`] and walks every region with [`Tlsf::check_pool`], checking that
    /// the regions' block totals agree with this allocator's counters and that each region's
    /// bitmap has a bit set exactly at the start of every used block.
    pub fn check(&self) -> Result<(), super::tlsf::CheckError> {
        let (_, free) = self.inner.check()?;
        let mut used = 0;
        let mut blocks = 0;
        for r in &self.regions[..self.regions_len] {
            let pool = r.pool().ok_or(super::tlsf::CheckError("null region"))?;
            // SAFETY: every region's pool was inserted (and grown) with exactly this range.
            let stats = unsafe { self.inner.check_pool(pool)? };
            used += stats.used_bytes;
            blocks += stats.used_bytes + stats.free_bytes;
            // SAFETY: as above.
            for block in unsafe { self.inner.iter_blocks(pool) } {
                let (word, mask) = r.bit(block.start.as_ptr().addr());
                // SAFETY: inside the region's bitmap (the block starts in the pool).
                if (unsafe { word.read() } & mask != 0) != block.used {
                    return Err(super::tlsf::CheckError(
                        "bitmap bit disagrees with a block's state",
                    ));
                }
            }
            let words = Region::words_for(r.first, r.pool_end);
            // SAFETY: the region's bitmap is `words` words long.
            let set: usize = (0..words)
                .map(|w| unsafe { r.bits().add(w).read() }.count_ones() as usize)
                .sum();
            if set != stats.used_blocks {
                return Err(super::tlsf::CheckError(
                    "bitmap marks a granule where no used block starts",
                ));
            }
        }
        if used != self.used || blocks != self.managed || free != self.managed - self.used {
            return Err(super::tlsf::CheckError(
                "byte counters disagree with the pools",
            ));
        }
        Ok(())
    }

    /// The region whose range (as given) contains `addr`.
    #[inline]
    fn region_of(&self, addr: usize) -> Option<Region> {
        self.regions[..self.regions_len]
            .iter()
            .copied()
            .find(|r| r.start <= addr && addr < r.end)
    }

    /// Frees `pos` like [`dealloc`](ByteAllocator::dealloc), but reports what it refused as
    /// `Err(NotAllocated)`, changing nothing: a pointer outside every region, not
    /// granule-aligned, in a region's first granule or its bitmap, or at which no used block
    /// starts now (a double free, a stale pointer whose block was merged, split or reused, an
    /// interior pointer, whatever bytes lie in front of it). A zero-size `layout` is a no-op
    /// (`Ok`). The layout is not otherwise checked: the block's own size is freed.
    ///
    /// # Time Complexity
    /// O(regions) to find the region (at most 16), O(1) to free.
    pub fn try_dealloc(&mut self, pos: NonNull<u8>, layout: Layout) -> AllocResult {
        if layout.size() == 0 {
            return Ok(());
        }
        let addr = pos.as_ptr().addr();
        let region = self.region_of(addr).ok_or(AllocError::NotAllocated)?;
        self.free_in(addr, region)
    }

    /// Frees the allocation at `addr`, which lies in `region`, if a used block starts right
    /// before it.
    #[inline(always)]
    fn free_in(&mut self, addr: usize, region: Region) -> AllocResult {
        if addr % GRANULARITY != 0 || addr < region.first + HDR || addr >= region.pool_end {
            return Err(AllocError::NotAllocated);
        }
        let (word, mask) = region.bit(addr - HDR);
        // SAFETY: the block start lies in the pool, so its bit in the region's bitmap.
        let bits = unsafe { word.read() };
        if bits & mask == 0 {
            return Err(AllocError::NotAllocated);
        }
        let ptr = core::ptr::with_exposed_provenance_mut::<u8>(addr);
        // SAFETY: a set bit means a used block starts at `addr - HDR` (the bitmap invariant,
        // `check`): `addr` is a live allocation of `inner`, whose memory is ours (exposed when
        // the region was added). The bit's word is ours as well.
        unsafe {
            let size = self.inner.free_live(NonNull::new_unchecked(ptr));
            word.write(bits & !mask);
            self.used -= size;
        }
        Ok(())
    }

    /// Marks the block of the fresh allocation at `ptr` used in its region's bitmap.
    #[inline]
    fn mark_used(&mut self, ptr: NonNull<u8>) {
        let block = ptr.as_ptr().addr() - HDR;
        let region = self.regions[..self.regions_len]
            .iter()
            .find(|r| r.first <= block && block < r.pool_end);
        debug_assert!(region.is_some(), "an allocation outside every pool");
        if let Some(r) = region {
            let (word, mask) = r.bit(block);
            // SAFETY: the block lies in `r`'s pool, so its bit in `r`'s bitmap.
            unsafe { word.write(word.read() | mask) };
        }
    }
}

impl Default for TlsfByteAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl BaseAllocator for TlsfByteAllocator {
    /// Adds the first region. Panics (with the reason) when `add_memory` would refuse it.
    fn init(&mut self, start: usize, size: usize) {
        if let Err(e) = self.add_memory(start, size) {
            panic!("TlsfByteAllocator::init({start:#x}, {size:#x}): {e}");
        }
    }

    /// Adds `[start, start + size)`, which must be memory the allocator may use for the rest
    /// of the program. Errors (nothing changes): `InvalidParam` for an empty or overflowing
    /// range or one too small for a block, the sentinel and the bitmap (`3 * GRANULARITY`
    /// after alignment, plus a word); `MemoryOverlap` when it overlaps a region already added;
    /// `NoMemory` when 16 separate regions are in use.
    ///
    /// A region starting exactly where an earlier one ends grows that pool in place: the
    /// bitmap moves to the new end (its bits are copied, so live allocations keep theirs) and
    /// the pool's last free block absorbs the old bitmap's place and the new memory.
    /// `InvalidParam` when the growth is too short to add a block (nothing changes then).
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
        if size == 0 || start == 0 {
            return Err(AllocError::InvalidParam);
        }
        if self.regions[..self.regions_len]
            .iter()
            .any(|r| start < r.end && r.start < end)
        {
            return Err(AllocError::MemoryOverlap);
        }
        if let Some(i) = self.regions[..self.regions_len]
            .iter()
            .position(|r| r.end == start)
        {
            return self.grow(i, end);
        }
        if self.regions_len == MAX_REGIONS {
            return Err(AllocError::NoMemory);
        }
        let first = start
            .checked_next_multiple_of(GRANULARITY)
            .ok_or(AllocError::InvalidParam)?;
        let pool_end = Region::pool_end_for(first, end);
        if pool_end - first < MIN_POOL {
            return Err(AllocError::InvalidParam);
        }
        let region = Region {
            start,
            end,
            first,
            pool_end,
        };
        let pool = region.pool().ok_or(AllocError::InvalidParam)?;
        // SAFETY: the bitmap lies in `[pool_end, end)` (`pool_end_for`), memory the caller
        // gives us.
        unsafe {
            region
                .bits()
                .write_bytes(0, Region::words_for(first, pool_end))
        };
        // SAFETY: the range is disjoint from every pool (checked) and the caller gives it to us.
        let covered = unsafe { self.inner.insert_free_block_ptr(pool) };
        debug_assert_eq!(
            covered.map(|c| c.get()),
            Some(pool_end - start),
            "a pool of at least MIN_POOL after its first granule is accepted whole"
        );
        self.regions[self.regions_len] = region;
        self.regions_len += 1;
        self.total += size;
        self.managed += pool_end - first - HDR;
        Ok(())
    }
}

impl TlsfByteAllocator {
    /// Grows region `i` to end at `end`: the pool takes the old bitmap's place and the new
    /// memory, the bitmap moves to the new pool end.
    fn grow(&mut self, i: usize, end: usize) -> AllocResult {
        let old = self.regions[i];
        let pool_end = Region::pool_end_for(old.first, end);
        if pool_end <= old.pool_end {
            return Err(AllocError::InvalidParam);
        }
        let added_ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(old.pool_end))
            .ok_or(AllocError::InvalidParam)?;
        let added = NonNull::slice_from_raw_parts(added_ptr, pool_end - old.pool_end);
        // SAFETY: `added` starts exactly at the end of region `i`'s pool; it reads only that
        // pool's sentinel and last block.
        let body = unsafe { self.inner.append_len(added) };
        if body == 0 {
            return Err(AllocError::InvalidParam);
        }
        let grown = Region {
            end,
            pool_end,
            ..old
        };
        let old_words = Region::words_for(old.first, old.pool_end);
        let new_words = Region::words_for(old.first, pool_end);
        // SAFETY: both bitmaps lie in the grown region (`pool_end_for`), which is ours; they may
        // overlap (`copy` is a memmove). The pool's growth below writes only below `pool_end`,
        // where the new bitmap starts.
        unsafe {
            core::ptr::copy(old.bits(), grown.bits(), old_words);
            grown
                .bits()
                .add(old_words)
                .write_bytes(0, new_words - old_words);
            let appended = self.inner.append_free_block_ptr(added);
            debug_assert_eq!(appended, body);
        }
        self.regions[i] = grown;
        self.total += end - old.end;
        self.managed += body;
        Ok(())
    }
}

impl ByteAllocator for TlsfByteAllocator {
    /// Allocates `layout`; `Err(NoMemory)` when no free block can serve it. Zero-size layouts
    /// get a dangling, aligned pointer.
    ///
    /// # Time Complexity
    /// O(1) to allocate, O(regions) (at most 16) to mark the block in its region's bitmap.
    fn alloc(&mut self, layout: Layout) -> AllocResult<NonNull<u8>> {
        if layout.size() == 0 {
            return Ok(dangling(layout.align()));
        }
        let ptr = self.inner.allocate(layout).ok_or(AllocError::NoMemory)?;
        self.mark_used(ptr);
        // SAFETY: `ptr` was just allocated.
        self.used += unsafe { DefaultTlsf::block_size(ptr) };
        Ok(ptr)
    }

    /// Frees `pos`. Zero-size layouts and pointers outside every region are ignored; any other
    /// pointer at which no used block starts (double free, stale, interior, misaligned: see
    /// [`try_dealloc`](TlsfByteAllocator::try_dealloc)) panics in debug builds and is ignored
    /// in release builds, the allocator unchanged. Use `try_dealloc` to see the refusal.
    ///
    /// # Time Complexity
    /// O(regions) to find the region (at most 16), O(1) to free.
    fn dealloc(&mut self, pos: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let addr = pos.as_ptr().addr();
        let Some(region) = self.region_of(addr) else {
            return;
        };
        let result = self.free_in(addr, region);
        debug_assert!(
            result.is_ok(),
            "TlsfByteAllocator::dealloc: double free or not an allocation"
        );
    }

    fn total_bytes(&self) -> usize {
        self.total
    }

    fn used_bytes(&self) -> usize {
        self.used
    }

    fn available_bytes(&self) -> usize {
        self.managed - self.used
    }
}
