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

/// A TLSF byte allocator with arceos' `TlsfByteAllocator` interface ([`BaseAllocator`] +
/// [`ByteAllocator`]).
///
/// Differences from arceos (all fixes): zero-size layouts get a dangling pointer aligned to
/// the layout and freeing it is a no-op; `add_memory` reports overlap (`MemoryOverlap`), a
/// too-small region (`InvalidParam`) and a full region table (`NoMemory`) instead of
/// accepting everything; a region starting where another ends grows that pool in place; a
/// free outside every region is ignored; `used_bytes` counts whole blocks (headers
/// included), so `used_bytes + available_bytes` is exactly the bytes in blocks.
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
/// ```
pub struct TlsfByteAllocator {
    inner: DefaultTlsf,
    /// `(start, end)` of each region handed to `inner`, as given; pairwise disjoint; only the
    /// first `regions_len` are meaningful.
    regions: [(usize, usize); MAX_REGIONS],
    regions_len: usize,
    /// Sum of region lengths as given.
    total: usize,
    /// Bytes of all blocks (free and used) in the pools: `total` minus slack and sentinels.
    managed: usize,
    /// Bytes of allocated blocks, headers included.
    used: usize,
}

impl TlsfByteAllocator {
    /// An allocator with no memory; add some with `init` or `add_memory`.
    pub const fn new() -> Self {
        Self {
            inner: Tlsf::new(),
            regions: [(0, 0); MAX_REGIONS],
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
    /// the regions' block totals agree with this allocator's counters.
    pub fn check(&self) -> Result<(), super::CheckError> {
        let (_, free) = self.inner.check()?;
        let mut used = 0;
        let mut blocks = 0;
        for &(start, end) in &self.regions[..self.regions_len] {
            let pool = NonNull::slice_from_raw_parts(
                NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(start))
                    .ok_or(super::CheckError("null region"))?,
                end - start,
            );
            // SAFETY: every region was inserted (and grown) with exactly this range.
            let stats = unsafe { self.inner.check_pool(pool)? };
            used += stats.used_bytes;
            blocks += stats.used_bytes + stats.free_bytes;
        }
        if used != self.used || blocks != self.managed || free != self.managed - self.used {
            return Err(super::CheckError("byte counters disagree with the pools"));
        }
        Ok(())
    }

    /// The region containing address `addr`, as `(start, end)`.
    fn region_of(&self, addr: usize) -> Option<(usize, usize)> {
        self.regions[..self.regions_len]
            .iter()
            .copied()
            .find(|&(start, end)| start <= addr && addr < end)
    }

    /// Frees `pos` like [`dealloc`](ByteAllocator::dealloc), but reports what it refused:
    /// `Err(NotAllocated)` for a pointer outside every region or whose header is not a live
    /// block (a double free not yet reused or merged). The heap is unchanged then.
    pub fn try_dealloc(&mut self, pos: NonNull<u8>, layout: Layout) -> AllocResult {
        if layout.size() == 0 {
            return Ok(());
        }
        let region = self.region_of(pos.as_ptr().addr());
        self.free_in(pos, region.ok_or(AllocError::NotAllocated)?)
    }

    /// Frees `pos`, which lies in `region`.
    #[inline]
    fn free_in(&mut self, pos: NonNull<u8>, region: (usize, usize)) -> AllocResult {
        // SAFETY: `pos` lies in `region`, one of our regions, whose memory the inner
        // allocator owns.
        let size = unsafe { self.inner.try_deallocate_within(pos, region)? };
        self.used -= size;
        Ok(())
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
    /// range or one too small for a block and the sentinel (`3 * GRANULARITY` after
    /// alignment); `MemoryOverlap` when it overlaps a region already added; `NoMemory` when
    /// 16 separate regions are in use. A region starting exactly where an earlier one ends
    /// grows that pool in place (its last free block absorbs the new memory).
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
        if size == 0 || start == 0 {
            return Err(AllocError::InvalidParam);
        }
        if self.regions[..self.regions_len]
            .iter()
            .any(|&(s, e)| start < e && s < end)
        {
            return Err(AllocError::MemoryOverlap);
        }
        let ptr = core::ptr::with_exposed_provenance_mut::<u8>(start);
        // SAFETY: `start != 0`.
        let block = NonNull::slice_from_raw_parts(unsafe { NonNull::new_unchecked(ptr) }, size);
        if let Some(i) = self.regions[..self.regions_len]
            .iter()
            .position(|&(_, e)| e == start)
        {
            // SAFETY: region `i` ends at `start`; the caller gives us the memory.
            let added = unsafe { self.inner.append_free_block_ptr(block) };
            if added == 0 {
                return Err(AllocError::InvalidParam);
            }
            self.regions[i].1 = end;
            self.total += size;
            self.managed += added;
            return Ok(());
        }
        if self.regions_len == MAX_REGIONS {
            return Err(AllocError::NoMemory);
        }
        // SAFETY: the range is disjoint from every pool (checked) and the caller gives it to us.
        let covered = unsafe { self.inner.insert_free_block_ptr(block) }
            .ok_or(AllocError::InvalidParam)?
            .get();
        let first = start.next_multiple_of(GRANULARITY);
        self.regions[self.regions_len] = (start, end);
        self.regions_len += 1;
        self.total += size;
        self.managed += start + covered - first - HDR;
        Ok(())
    }
}

impl ByteAllocator for TlsfByteAllocator {
    /// Allocates `layout`; `Err(NoMemory)` when no free block can serve it. Zero-size layouts
    /// get a dangling, aligned pointer.
    ///
    /// # Time Complexity
    /// O(1).
    fn alloc(&mut self, layout: Layout) -> AllocResult<NonNull<u8>> {
        if layout.size() == 0 {
            return Ok(dangling(layout.align()));
        }
        let ptr = self.inner.allocate(layout).ok_or(AllocError::NoMemory)?;
        // SAFETY: `ptr` was just allocated.
        self.used += unsafe { DefaultTlsf::block_size(ptr) };
        Ok(ptr)
    }

    /// Frees `pos`. Zero-size layouts and pointers outside every region are ignored; a header
    /// that is not a live block (double free) panics in debug builds and is ignored in release
    /// builds. Use [`try_dealloc`](TlsfByteAllocator::try_dealloc) to see the refusal.
    ///
    /// # Time Complexity
    /// O(regions) to find the region (at most 16), O(1) to free.
    fn dealloc(&mut self, pos: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let Some(region) = self.region_of(pos.as_ptr().addr()) else {
            return;
        };
        let result = self.free_in(pos, region);
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
