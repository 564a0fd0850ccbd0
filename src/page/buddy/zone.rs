//! The pure buddy zone: free lists of aligned power-of-two blocks over a window of
//! [`PageMeta`], split on allocation and merged on free. Single-threaded: every method runs
//! under the zone lock of [`BuddyPageAllocator`](super::BuddyPageAllocator), which owns the
//! concurrency (the lock, the per-CPU page caches, the lock-free claim of a free); nothing here
//! touches an atomic but through `PageMeta`'s accessors.
//!
//! # Layout
//! The allocator describes a *window* of pages, `base..base + meta.len()`, with one
//! [`PageMeta`] per page kept outside the managed memory (handed in by the caller, or
//! allocated with the `alloc` feature). `base` is aligned to a maximal block
//! (`2^MAX_ORDER` pages), so a block's alignment in the window is its address's alignment.
//! Regions (any number up to [`MAX_REGIONS`](crate::page::MAX_REGIONS), anywhere in the
//! window) are cut into maximal aligned blocks when added.
//!
//! A free block of order `k` (`2^k` pages) is linked into free list `k` through its head
//! page's `prev`/`next` (window indices, `u32`, `NIL` = none), so unlinking any block is O(1);
//! its head's state says `FREE | k`. Merging on free asks only the buddy's head state:
//! `buddy = index ^ (1 << k)` is free with order `k` exactly when its state is `FREE | k`, so a
//! free is O(MAX_ORDER) and never scans a list (the original `buddy_system_allocator` scans
//! the whole list for the buddy).
//!
//! An allocation of `n` pages is the canonical decomposition of its range into aligned blocks
//! (`for_each_block`); `links` records its boundaries: `MORE` on every block but the last,
//! `CONT` on every block but the first (a one-block allocation has neither). A free of
//! `(pos, count)` decomposes its range the same way and expects exactly those states, so it
//! matches one allocation, never a part of one or two neighbours (the first block has no
//! `CONT`, the last no `MORE`, and each block in between is the next block of the same
//! allocation). One page is `ALLOC | 0` exactly, so the one-page free stays one CAS.

use arrayvec::ArrayVec;

use super::PageMeta;
use crate::page::pcp::PCP_MAX_ORDER;
use crate::page::{CheckError, MAX_REGIONS, for_each_block};

/// No page (end of a free list).
pub(super) const NIL: u32 = u32::MAX;
/// State tags (the low byte holds the order).
pub(super) const NONE: u32 = 0;
pub(super) const FREE: u32 = 1 << 8;
pub(super) const ALLOC: u32 = 2 << 8;
pub(super) const HELD: u32 = 3 << 8;
/// The kind bits of a state (`NONE`, `FREE`, `ALLOC`, `HELD`).
pub(super) const KIND: u32 = 0xff00;
/// The order bits of a state.
pub(super) const ORDER: u32 = 0xff;
/// Allocation links of an `ALLOC` head: another block of the same allocation follows.
pub(super) const MORE: u32 = 1 << 16;
/// Allocation links of an `ALLOC` head: another block of the same allocation precedes.
pub(super) const CONT: u32 = 1 << 17;

/// The `ALLOC` state of block `block` of `order` in the allocation `[start, end)`.
#[inline(always)]
pub(super) fn alloc_state(block: usize, order: usize, start: usize, end: usize) -> u32 {
    let more = if block + (1 << order) == end { 0 } else { MORE };
    let cont = if block == start { 0 } else { CONT };
    ALLOC | more | cont | order as u32
}
/// Free lists the zone has room for (orders `0..ORDERS`); `MAX_ORDER < ORDERS`.
pub(super) const ORDERS: usize = 32;

/// The free lists and counters, guarded by the zone lock. Window indices throughout.
pub(super) struct Zone {
    /// Head of free list `k` (`NIL` = empty).
    pub(super) heads: [u32; ORDERS],
    /// Blocks in free list `k`.
    pub(super) blocks: [usize; ORDERS],
    /// Pages in all free lists.
    pub(super) free_pages: usize,
    /// Pages in all regions.
    pub(super) total_pages: usize,
    /// The regions, `[start, end)` window indices.
    pub(super) regions: ArrayVec<(usize, usize), MAX_REGIONS>,
}

impl Zone {
    pub(super) const fn new() -> Self {
        Self {
            heads: [NIL; ORDERS],
            blocks: [0; ORDERS],
            free_pages: 0,
            total_pages: 0,
            regions: ArrayVec::new_const(),
        }
    }

    /// Links block `index` of `order` at the head of its list and marks it free.
    #[inline]
    pub(super) fn push(&mut self, meta: &[PageMeta], index: usize, order: usize) {
        let page = &meta[index];
        let head = self.heads[order];
        page.set_prev(NIL);
        page.set_next(head);
        if head != NIL {
            meta[head as usize].set_prev(index as u32);
        }
        self.heads[order] = index as u32;
        page.set_state(FREE | order as u32);
        self.blocks[order] += 1;
        self.free_pages += 1 << order;
    }

    /// Unlinks free block `index` of `order` (O(1)); the caller sets its new state.
    #[inline]
    pub(super) fn unlink(&mut self, meta: &[PageMeta], index: usize, order: usize) {
        let page = &meta[index];
        let prev = page.prev();
        let next = page.next();
        if prev == NIL {
            self.heads[order] = next;
        } else {
            meta[prev as usize].set_next(next);
        }
        if next != NIL {
            meta[next as usize].set_prev(prev);
        }
        self.blocks[order] -= 1;
        self.free_pages -= 1 << order;
    }

    /// Takes a block of `order`, splitting a larger one if needed (the upper halves go back
    /// to the lists), and gives its head `state | order`. O(MAX_ORDER).
    #[inline]
    pub(super) fn alloc_block(
        &mut self,
        meta: &[PageMeta],
        order: usize,
        state: u32,
    ) -> Option<usize> {
        let mut from = order;
        while self.heads.get(from)? == &NIL {
            from += 1;
        }
        let index = self.heads[from] as usize;
        self.unlink(meta, index, from);
        while from > order {
            from -= 1;
            self.push(meta, index + (1 << from), from);
        }
        meta[index].set_state(state | order as u32);
        Some(index)
    }

    /// Returns block `index` of `order` (owned by the caller: `HELD`, or unmanaged pages of a
    /// new region) to the lists, merging with free buddies. O(max_order).
    #[inline]
    pub(super) fn free_block(
        &mut self,
        meta: &[PageMeta],
        index: usize,
        order: usize,
        max_order: usize,
    ) {
        let (mut index, mut order) = (index, order);
        meta[index].set_state(NONE);
        while order < max_order {
            let buddy = index ^ (1 << order);
            // Exact under the zone lock: only its holder writes or clears FREE.
            match meta.get(buddy) {
                Some(page) if page.state() == FREE | order as u32 => {}
                _ => break,
            }
            self.unlink(meta, buddy, order);
            meta[buddy].set_state(NONE);
            index &= !(1 << order);
            order += 1;
        }
        self.push(meta, index, order);
    }

    /// Takes exactly block `index` of `order` out of whatever free block contains it
    /// (splitting around it) and marks it `HELD | order`; `false` if no free block does.
    pub(super) fn carve(
        &mut self,
        meta: &[PageMeta],
        index: usize,
        order: usize,
        max_order: usize,
    ) -> bool {
        for mut from in order..=max_order {
            let mut head = index & !((1 << from) - 1);
            if meta.get(head).map(PageMeta::state) != Some(FREE | from as u32) {
                continue;
            }
            self.unlink(meta, head, from);
            meta[head].set_state(NONE);
            while from > order {
                from -= 1;
                let half = 1 << from;
                if index >= head + half {
                    self.push(meta, head, from);
                    head += half;
                } else {
                    self.push(meta, head + half, from);
                }
            }
            meta[index].set_state(HELD | order as u32);
            return true;
        }
        false
    }

    /// Whether every page of `[start, end)` lies in a region.
    pub(super) fn covers(&self, start: usize, end: usize) -> bool {
        let mut pos = start;
        'outer: while pos < end {
            for &(s, e) in &self.regions {
                if s <= pos && pos < e {
                    pos = e;
                    continue 'outer;
                }
            }
            return false;
        }
        true
    }

    /// Checks the free lists and every window page against the zone's counters (under the
    /// zone lock, with the metadata no other thread changes); returns the pages of the blocks
    /// found `HELD` (parked in CPU caches), which the caller matches with its caches.
    /// - free lists: links consistent both ways, each block's head `FREE | k`, aligned to
    ///   `2^k`, inside the window and inside regions; no two free buddies left unmerged;
    /// - every page of every region is covered by exactly one free block, allocated block or
    ///   parked block; interior pages of blocks and pages outside regions are `NONE`; the
    ///   blocks of each allocation are the canonical decomposition its free expects.
    pub(super) fn check(&self, meta: &[PageMeta], max_order: usize) -> Result<usize, CheckError> {
        // Free lists.
        let mut free_pages = 0;
        for order in 0..ORDERS {
            let mut count = 0;
            let mut prev = NIL;
            let mut at = self.heads[order];
            while at != NIL {
                let index = at as usize;
                let bad = CheckError::FreeList { order, page: index };
                let page = meta.get(index).ok_or(bad)?;
                if order > max_order
                    || page.prev() != prev
                    || page.state() != FREE | order as u32
                    || index % (1 << order) != 0
                    || !self.covers(index, index + (1 << order))
                    || count > meta.len()
                {
                    return Err(bad);
                }
                if order < max_order {
                    let buddy = index ^ (1 << order);
                    if meta.get(buddy).map(PageMeta::state) == Some(FREE | order as u32) {
                        return Err(CheckError::Unmerged {
                            page: index.min(buddy),
                            order,
                        });
                    }
                }
                count += 1;
                free_pages += 1 << order;
                prev = at;
                at = page.next();
            }
            if count != self.blocks[order] {
                return Err(CheckError::Count {
                    what: "free blocks of an order",
                    counted: self.blocks[order],
                    actual: count,
                });
            }
        }
        if free_pages != self.free_pages {
            return Err(CheckError::Count {
                what: "free pages",
                counted: self.free_pages,
                actual: free_pages,
            });
        }
        // Every window page: heads of blocks, interior pages, parked pages, unmanaged pages.
        let (mut walked_free, mut held, mut pos) = (0, 0, 0);
        // The allocation whose blocks are being walked: (first block, where the next starts).
        let mut chain: Option<(usize, usize)> = None;
        while pos < meta.len() {
            let state = meta[pos].state();
            let bad = CheckError::PageState { page: pos, state };
            let order = (state & ORDER) as usize;
            let (kind, links) = (state & KIND, state & (MORE | CONT));
            if state & !(KIND | ORDER | MORE | CONT) != 0 || (links != 0 && kind != ALLOC) {
                return Err(bad);
            }
            // Links: a `CONT` block continues the open allocation right where it stopped; any
            // other page while one is open is an error.
            match chain {
                Some((_, next)) if kind == ALLOC && links & CONT != 0 && next == pos => {}
                None if kind != ALLOC || links & CONT == 0 => {}
                _ => return Err(bad),
            }
            let in_regions = self.covers(pos, pos + 1);
            let span = match kind {
                NONE if !in_regions => {
                    pos += 1;
                    continue;
                }
                FREE | ALLOC if order <= max_order => 1 << order,
                // A block parked in a CPU cache (invariant C): orders the caches hold.
                HELD if order <= PCP_MAX_ORDER.min(max_order) => {
                    held += 1 << order;
                    1 << order
                }
                _ => return Err(bad),
            };
            if pos % span != 0 || pos + span > meta.len() || !self.covers(pos, pos + span) {
                return Err(bad);
            }
            if kind == FREE {
                walked_free += span;
            }
            if kind == ALLOC {
                let first = chain.map_or(pos, |(first, _)| first);
                chain = if links & MORE != 0 {
                    Some((first, pos + span))
                } else {
                    // The allocation `[first, pos + span)` ends here: its blocks must be the
                    // canonical decomposition a free of that range expects.
                    let mut canonical = true;
                    for_each_block(first, pos + span, max_order, |block, k| {
                        canonical &=
                            meta[block].state() == alloc_state(block, k, first, pos + span);
                    });
                    if !canonical {
                        let state = meta[first].state();
                        return Err(CheckError::PageState { page: first, state });
                    }
                    None
                };
            }
            let interior = &meta[pos + 1..pos + span];
            if let Some(i) = interior.iter().position(|page| page.state() != NONE) {
                let state = interior[i].state();
                return Err(CheckError::PageState {
                    page: pos + 1 + i,
                    state,
                });
            }
            pos += span;
        }
        if let Some((first, _)) = chain {
            let state = meta[first].state();
            return Err(CheckError::PageState { page: first, state });
        }
        if walked_free != free_pages {
            return Err(CheckError::Count {
                what: "free pages (page walk)",
                counted: free_pages,
                actual: walked_free,
            });
        }
        Ok(held)
    }
}

/// Gives the blocks of the allocation `[start, end)` (the canonical decomposition, each head
/// owned by the caller: `HELD`, or being handed out under the zone lock) their final `ALLOC`
/// states, with the links that make a free match exactly this range.
#[inline]
pub(super) fn mark_allocation(meta: &[PageMeta], start: usize, end: usize, max_order: usize) {
    for_each_block(start, end, max_order, |block, order| {
        meta[block].set_state(alloc_state(block, order, start, end));
    });
}
