//! The page layer: two page allocators behind arceos' [`PageAllocator`](crate::PageAllocator)
//! trait, both concurrent (`&self`), both keeping every byte of their metadata outside the
//! pages they manage (a kernel's physical pages may not be mapped yet).
//!
//! - [`BitmapPageAllocator`]: lock-free, one bit per page on [`AtomicBitmap`]. Single pages by
//!   CAS from a per-CPU next-fit cursor (or, as [`LowestFreeBitmapPageAllocator`], always the
//!   lowest free page: arceos' order); aligned contiguous runs found word-parallel through
//!   the bitmap's summaries (Bonwick's observation that a bitmap answers "is there a free run
//!   here" per word, not per bit), claimed word by word with rollback. Capacity is a const
//!   generic; the 1 TiB size takes caller-provided storage ([`BitmapPageAllocator::from_storage`]).
//! - [`BuddyPageAllocator`]: Knowlton's binary buddy system as Linux implements it (orders
//!   `0..=MAX_ORDER`, split on allocate, merge with the buddy on free in O(`MAX_ORDER`) through
//!   doubly linked free lists threaded through an external per-page [`PageMeta`] array), one zone
//!   [`SpinLock`](crate::SpinLock), and in front of it per-CPU caches of single pages refilled
//!   and drained in batches like Linux's per-CPU page lists (`pcp`).
//!
//! Addresses are `usize`, page-aligned; an alignment is a byte count, a power of two and a
//! multiple of `PAGE_SIZE`. Every bad input returns an [`AllocError`] and
//! changes nothing (docs/design/05-pages.md §"Errors" lists each case); docs/design/05-pages.md has the protocols and
//! the loom models that check them. Neither allocator manages the page at address 0, so no
//! call returns address 0.
//!
//! [`AtomicBitmap`]: crate::bitmap::AtomicBitmap

mod bitmap;
mod buddy;
mod pcp;
mod regions;

pub use bitmap::{
    Bitmap1T, BitmapPageAllocator, BitmapPageAllocator1T, BitmapPageAllocator4G,
    BitmapPageAllocator64G, BitmapPageAllocator256M, DEFAULT_BITMAP_WORDS,
    LowestFreeBitmapPageAllocator,
};
pub use buddy::{BuddyPageAllocator, PageMeta};
pub use pcp::{DEFAULT_PCP_BATCH, DEFAULT_PCP_HIGH, PCP_CAPACITY, PCP_MAX_ORDER};
pub use regions::MAX_REGIONS;

use crate::traits::{AllocError, AllocResult};

/// A violated invariant found by a page allocator's `check()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// The underlying bitmap's summaries are inconsistent.
    Bitmap(crate::bitmap::CheckError),
    /// A page outside every region is marked free (bitmap) or has a state (buddy).
    Unmanaged {
        /// The page's index in the allocator's window.
        page: usize,
    },
    /// A counter disagrees with the structure it counts.
    Count {
        /// Which counter.
        what: &'static str,
        /// Its value.
        counted: usize,
        /// What the structure holds.
        actual: usize,
    },
    /// A free list is malformed (bad link, misaligned or out-of-window block, wrong state).
    FreeList {
        /// The order of the list.
        order: usize,
        /// The block's page index.
        page: usize,
    },
    /// A page of a region is neither free, parked in a cache, nor part of an allocated block,
    /// or a block's state is inconsistent.
    PageState {
        /// The page's index in the window.
        page: usize,
        /// The raw state word.
        state: u32,
    },
    /// Two free buddies of the same order were not merged.
    Unmerged {
        /// The lower buddy's page index.
        page: usize,
        /// Their order.
        order: usize,
    },
    /// A bitmap allocator's per-CPU cursor is out of place: past the window (next-fit), or
    /// moved at all (lowest-free placement never uses the cursors).
    Cursor {
        /// The cursor's CPU slot.
        slot: usize,
        /// Its position (a page index in the window).
        position: usize,
    },
}

impl core::fmt::Display for CheckError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for CheckError {}

/// Checks a byte alignment: a power of two and a multiple of `page_size`; returns it in pages.
#[inline]
fn align_in_pages(align: usize, page_size: usize) -> AllocResult<usize> {
    if !align.is_power_of_two() || align < page_size {
        return Err(AllocError::InvalidParam);
    }
    Ok(align / page_size)
}

/// The page number of a page-aligned address.
#[inline]
fn page_number(addr: usize, page_size: usize) -> AllocResult<usize> {
    if addr % page_size != 0 {
        return Err(AllocError::InvalidParam);
    }
    Ok(addr / page_size)
}

/// The page range `[first, end)` of a region `[start, start + size)`: whole pages only (the
/// start rounded up, the end rounded down), and never page 0: address 0 is the null pointer,
/// which no caller can tell from "no page" once it becomes a pointer (the heap's page source
/// needs `NonNull`), so neither allocator manages it and no call ever returns it. (On x86 the
/// firmware reserves that page anyway; where it is RAM, as on some riscv and arm boards, 4 KiB
/// is the price.) `InvalidParam` if the range is empty or overflows.
fn region_pages(start: usize, size: usize, page_size: usize) -> AllocResult<(usize, usize)> {
    let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
    let first = start.div_ceil(page_size).max(1);
    let last = end / page_size;
    if first >= last {
        return Err(AllocError::InvalidParam);
    }
    // Every page's address must be representable: (last) * page_size <= usize::MAX + 1.
    last.checked_sub(1)
        .and_then(|l| l.checked_mul(page_size))
        .and_then(|a| a.checked_add(page_size - 1))
        .ok_or(AllocError::InvalidParam)?;
    Ok((first, last))
}

/// Calls `f(page, order)` for the canonical decomposition of `[start, end)` into naturally
/// aligned power-of-two blocks of order at most `max_order`: at each position, the largest
/// block that is aligned there and fits. Allocation, trimming and freeing all use this one
/// decomposition, so a range freed is checked block by block against how it was handed out.
#[inline]
fn for_each_block(start: usize, end: usize, max_order: usize, mut f: impl FnMut(usize, usize)) {
    let mut pos = start;
    while pos < end {
        let align = if pos == 0 {
            max_order
        } else {
            (pos.trailing_zeros() as usize).min(max_order)
        };
        let fit = (usize::BITS - 1 - (end - pos).leading_zeros()) as usize;
        let order = align.min(fit);
        f(pos, order);
        pos += 1 << order;
    }
}

/// The order of the smallest block holding `count` pages (`count >= 1`).
#[inline]
fn order_for(count: usize) -> usize {
    count.next_power_of_two().trailing_zeros() as usize
}
