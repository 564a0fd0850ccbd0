//! [`BuddyByteAllocator`]: a binary buddy byte allocator (Knowlton 1965, Knuth TAOCP vol. 1
//! §2.5) with arceos' `BuddyByteAllocator` interface, whose merges cost O(1).
//!
//! # Layout
//!
//! Blocks are powers of two from [`MIN_BLOCK`] (16 bytes) up, each aligned to its own size as
//! an *absolute* address, so the buddy of the block at `a` of size `s` is `a ^ s` and any
//! alignment up to the block size is honoured. A region added by `init`/`add_memory` is cut
//! into maximal aligned blocks (so a weakly aligned start wastes nothing but the bytes below
//! the first 16-byte boundary). Its last bytes hold the region's metadata, outside every block:
//!
//! ```text
//! raw_start  start                                       end          raw_end
//! |  <16 B  | blocks (maximal aligned powers of two)    | Region | state map | <16 B |
//! ```
//!
//! The *state map* has, for every order `k` the region can hold, one 2-bit entry per aligned
//! `16 << k`-byte slot of the region: none, free, used (handed to a caller) or internal
//! (handed to a layer above, the slab allocator). That is `2 × 2` bits per 16-byte minimum
//! block over all orders (a geometric sum), 3.1 % of the region. Free blocks are on doubly
//! linked intrusive lists, one per order (the links live in the free block), with a bit mask
//! of the non-empty lists.
//!
//! # Complexity
//!
//! - `alloc`: the first non-empty list at or above the order (one `trailing_zeros`), pop,
//!   split down: O(orders) worst case, O(1) when a block of the right order is free.
//! - `dealloc`: validate the block's state entry (O(1)), then each merge step is an O(1) test of
//!   the buddy's entry and an O(1) unlink from its list: O(orders). The original scans the
//!   whole free list for the buddy at each step (quadratic over random-order frees).
//! - Both find the region of an address by walking the region list: O(regions), usually one.

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use super::dangling;
use crate::traits::{AllocError, AllocResult, BaseAllocator, ByteAllocator};

const MIN_SHIFT: u32 = 4;

/// The smallest block (bytes): two pointers, the free-list links.
pub const MIN_BLOCK: usize = 1 << MIN_SHIFT;

/// Number of orders: blocks of `MIN_BLOCK << k` bytes for `k < ORDERS` (up to half the
/// address space).
const ORDERS: usize = (usize::BITS - MIN_SHIFT) as usize;

const _: () = assert!(2 * size_of::<usize>() <= MIN_BLOCK);
const _: () = assert!(ORDERS < usize::BITS as usize);

/// The state of one aligned slot of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// No block of this order starts here.
    None = 0,
    /// A free block of this order starts here (it is on the order's free list).
    Free = 1,
    /// A block handed to a caller of `alloc`.
    Used = 2,
    /// A block handed to the layer above (`alloc_internal`: slabs).
    Internal = 3,
}

impl State {
    const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => State::None,
            1 => State::Free,
            2 => State::Used,
            _ => State::Internal,
        }
    }
}

/// The links in a free block.
#[repr(C)]
struct FreeBlock {
    next: *mut FreeBlock,
    prev: *mut FreeBlock,
}

/// A region's descriptor, at `end` inside the region.
#[repr(C)]
struct Region {
    /// The range handed to `add_memory`, as given (overlap checks).
    raw_start: usize,
    raw_end: usize,
    /// The blocks: `[start, end)`, both multiples of `MIN_BLOCK`.
    start: usize,
    end: usize,
    /// Largest order of an aligned block inside `[start, end)`.
    max_order: usize,
    /// The next region (list in `add_memory` order, newest first).
    next: *mut Region,
    /// The region's first byte, with the provenance of the whole region: every block pointer is
    /// `base.with_addr(address)`.
    base: *mut u8,
    /// The state map: order `k`'s entries are words `offsets[k]..offsets[k + 1]`, 32 per word.
    states: *mut u64,
    offsets: [usize; ORDERS + 1],
}

/// Bytes of a block of order `k`.
#[inline]
const fn block_size(k: usize) -> usize {
    MIN_BLOCK << k
}

/// The order of the smallest block serving `layout`, or `None` when none can.
#[inline]
fn order_of(layout: Layout) -> Option<usize> {
    let need = layout.size().max(layout.align()).max(MIN_BLOCK);
    let block = need.checked_next_power_of_two()?;
    let k = (block.trailing_zeros() - MIN_SHIFT) as usize;
    (k < ORDERS).then_some(k)
}

/// The largest order of an aligned block inside `[start, end)` (both multiples of
/// `MIN_BLOCK`, `start < end`).
fn max_order_in(start: usize, end: usize) -> usize {
    let mut k = 0;
    while k + 1 < ORDERS {
        let size = block_size(k + 1);
        let fits = start
            .checked_next_multiple_of(size)
            .and_then(|a| a.checked_add(size))
            .is_some_and(|e| e <= end);
        if !fits {
            break;
        }
        k += 1;
    }
    k
}

/// State-map word offsets for the blocks `[start, end)`: `offsets[k]` for `k <= max_order`,
/// the rest equal to the total word count.
fn state_offsets(start: usize, end: usize, max_order: usize) -> [usize; ORDERS + 1] {
    let mut offsets = [0; ORDERS + 1];
    let mut words = 0;
    for (k, offset) in offsets.iter_mut().enumerate() {
        *offset = words;
        if k <= max_order {
            let shift = MIN_SHIFT + k as u32;
            let slots = ((end - 1) >> shift) - (start >> shift) + 1;
            words += slots.div_ceil(32);
        }
    }
    offsets
}

/// The greedy carving of `[a, end)`: the order of the largest aligned block starting at `a`.
fn carve_order(a: usize, end: usize) -> usize {
    let by_align = (a.trailing_zeros() - MIN_SHIFT) as usize;
    let by_len = ((end - a).ilog2() - MIN_SHIFT) as usize;
    by_align.min(by_len).min(ORDERS - 1)
}

impl Region {
    /// The state entry of the order-`k` slot at `addr` (a multiple of `block_size(k)` inside
    /// `[start, end)`, `k <= max_order`): `(word pointer, shift)`.
    #[inline]
    fn entry(&self, k: usize, addr: usize) -> (*mut u64, u32) {
        debug_assert!(k <= self.max_order && self.start <= addr && addr < self.end);
        let shift = MIN_SHIFT + k as u32;
        let slot = (addr >> shift) - (self.start >> shift);
        let word = self.offsets[k] + slot / 32;
        debug_assert!(word < self.offsets[k + 1]);
        (self.states.wrapping_add(word), (slot % 32) as u32 * 2)
    }

    #[inline]
    fn state(&self, k: usize, addr: usize) -> State {
        let (word, shift) = self.entry(k, addr);
        // SAFETY: the word lies in this region's state map (`entry`), which the allocator owns.
        State::from_bits(unsafe { word.read() } >> shift)
    }

    #[inline]
    fn set_state(&mut self, k: usize, addr: usize, state: State) {
        let (word, shift) = self.entry(k, addr);
        // SAFETY: as in `state`; the map is written only through `&mut` of the allocator.
        unsafe { *word = (*word & !(3 << shift)) | ((state as u64) << shift) };
    }

    /// Whether the order-`k` block at `addr` lies inside the blocks.
    #[inline]
    fn holds(&self, k: usize, addr: usize) -> bool {
        k <= self.max_order && addr >= self.start && addr <= self.end - block_size(k)
    }

    fn words(&self) -> usize {
        self.offsets[ORDERS]
    }
}

/// A violated invariant found by [`BuddyByteAllocator::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckError(pub &'static str);

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for CheckError {}

/// A binary buddy byte allocator with arceos' `BuddyByteAllocator` interface
/// ([`BaseAllocator`] + [`ByteAllocator`]), single-threaded (`&mut self`; a kernel wraps it in
/// a lock, e.g. [`SpinLock`](crate::SpinLock)).
///
/// Differences from arceos' (`buddy_system_allocator` 0.10 inside), all fixes:
/// - `dealloc` finds the buddy in O(1) through the region's state map (arceos scans the free
///   list: random-order frees are quadratic);
/// - any number of regions; a weakly aligned region is cut into maximal aligned blocks; blocks
///   of 4 GiB and more are fine (arceos panics past order 31);
/// - bad input is refused and changes nothing: a pointer that is not a live block of the
///   layout's size (foreign, double free, wrong layout) gets `NotAllocated` from
///   [`try_dealloc`](Self::try_dealloc) (`dealloc` ignores it, with a `debug_assert!`),
///   overlapping regions `MemoryOverlap`, regions too small for a block and the metadata
///   `InvalidParam`;
/// - zero-size layouts get a dangling pointer aligned to the layout; freeing it is a no-op.
///
/// Statistics are exact and in whole blocks: `used_bytes` is the sum of the (power-of-two)
/// block sizes handed out, `total_bytes` the bytes of all blocks (region bytes minus the
/// metadata at each region's end and the alignment slack below 16 bytes at either end), and
/// `available_bytes = total_bytes - used_bytes` is the sum of the free blocks.
///
/// ```
/// use smpalloc::{BaseAllocator, BuddyByteAllocator, ByteAllocator};
/// use core::alloc::Layout;
/// let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
/// let mut buddy = BuddyByteAllocator::new();
/// buddy.init(pool.as_mut_ptr() as usize, pool.len());
/// let layout = Layout::from_size_align(100, 64).unwrap();
/// let ptr = buddy.alloc(layout).unwrap();
/// assert_eq!(ptr.as_ptr() as usize % 64, 0);
/// assert_eq!(buddy.used_bytes(), 128); // one 128-byte block
/// buddy.dealloc(ptr, layout);
/// assert_eq!(buddy.used_bytes(), 0);
/// assert_eq!(buddy.try_dealloc(ptr, layout), Err(smpalloc::AllocError::NotAllocated));
/// ```
pub struct BuddyByteAllocator {
    /// Free list heads, one per order.
    free: [*mut FreeBlock; ORDERS],
    /// Bit `k`: `free[k]` is not empty.
    nonempty: usize,
    /// The regions, newest first.
    regions: *mut Region,
    /// Bytes of all blocks.
    total: usize,
    /// Bytes of blocks handed out (`Used` and `Internal`).
    used: usize,
    /// Bytes of `Internal` blocks.
    internal: usize,
}

// SAFETY: the allocator owns its regions; the raw pointers are only followed through `&mut self`
// (or `&self` for reads), like a `Box`.
unsafe impl Send for BuddyByteAllocator {}

impl BuddyByteAllocator {
    /// An allocator with no memory; add some with `init` or `add_memory`.
    pub const fn new() -> Self {
        Self {
            free: [ptr::null_mut(); ORDERS],
            nonempty: 0,
            regions: ptr::null_mut(),
            total: 0,
            used: 0,
            internal: 0,
        }
    }

    /// Adds the memory `region` (as [`add_memory`](BaseAllocator::add_memory), which calls
    /// this with a pointer made from the address), keeping the pointer's provenance: the form
    /// to use under Miri's strict provenance.
    ///
    /// # Errors
    /// `InvalidParam` for a range that wraps around or is too small for one 16-byte block and
    /// the metadata (about 600 bytes plus 3.1 % of the region); `MemoryOverlap` when it overlaps
    /// a region already added. Nothing changes then.
    ///
    /// # Safety
    /// `region` is valid for reads and writes, not used by anything else for as long as the
    /// allocator (or a pointer it handed out) is used, and no other allocator owns it.
    ///
    /// # Time Complexity
    /// O(regions + region bytes / 512) (the state map is zeroed).
    pub unsafe fn add_region(&mut self, region: NonNull<[u8]>) -> AllocResult {
        let base = region.cast::<u8>().as_ptr();
        let raw_start = base.addr();
        let raw_end = raw_start
            .checked_add(region.len())
            .ok_or(AllocError::InvalidParam)?;
        if raw_start == raw_end {
            return Err(AllocError::InvalidParam);
        }
        if self
            .regions()
            .any(|r| raw_start < r.raw_end && r.raw_start < raw_end)
        {
            return Err(AllocError::MemoryOverlap);
        }
        let start = raw_start
            .checked_next_multiple_of(MIN_BLOCK)
            .ok_or(AllocError::InvalidParam)?;
        let limit = raw_end & !(MIN_BLOCK - 1);
        if start >= limit {
            return Err(AllocError::InvalidParam);
        }
        // An upper bound of the metadata: the state map for the whole range.
        let bound = state_offsets(start, limit, max_order_in(start, limit))[ORDERS];
        let meta = size_of::<Region>() + bound * size_of::<u64>();
        let end = match (limit - start).checked_sub(meta) {
            Some(len) if len >= MIN_BLOCK => (start + len) & !(MIN_BLOCK - 1),
            _ => return Err(AllocError::InvalidParam),
        };
        let max_order = max_order_in(start, end);
        let offsets = state_offsets(start, end, max_order);
        debug_assert!(end + size_of::<Region>() + offsets[ORDERS] * 8 <= raw_end);
        let descriptor = base.with_addr(end).cast::<Region>();
        let states = base.with_addr(end + size_of::<Region>()).cast::<u64>();
        // SAFETY: `[end, end + meta)` lies inside the region (computed above), which the caller
        // gives us; `end` is 16-aligned and `Region`'s size a multiple of 8, so both are aligned.
        unsafe {
            states.write_bytes(0, offsets[ORDERS]);
            descriptor.write(Region {
                raw_start,
                raw_end,
                start,
                end,
                max_order,
                next: self.regions,
                base,
                states,
                offsets,
            });
        }
        self.regions = descriptor;
        // SAFETY: just written; ours.
        let r = unsafe { &mut *descriptor };
        let mut a = start;
        while a < end {
            let k = carve_order(a, end);
            r.set_state(k, a, State::Free);
            // SAFETY: a free block of `r`, on no list.
            unsafe { Self::push(&mut self.free, &mut self.nonempty, r.base, a, k) };
            a += block_size(k);
        }
        self.total += end - start;
        Ok(())
    }

    /// The regions, newest first.
    fn regions(&self) -> impl Iterator<Item = &Region> {
        let mut r = self.regions;
        core::iter::from_fn(move || {
            // SAFETY: the list holds live descriptors of ours.
            let region = unsafe { r.as_ref()? };
            r = region.next;
            Some(region)
        })
    }

    /// The region whose blocks contain `addr`.
    #[inline]
    fn region_of(&self, addr: usize) -> Option<*mut Region> {
        let mut r = self.regions;
        while !r.is_null() {
            // SAFETY: a live descriptor of ours.
            let region = unsafe { &*r };
            if region.start <= addr && addr < region.end {
                return Some(r);
            }
            r = region.next;
        }
        None
    }

    /// Pushes the free block at `addr` of order `k` (in the region of `base`) on its list.
    ///
    /// # Safety
    /// The block is a free block of ours on no list.
    #[inline]
    unsafe fn push(
        free: &mut [*mut FreeBlock; ORDERS],
        nonempty: &mut usize,
        base: *mut u8,
        addr: usize,
        k: usize,
    ) {
        let block = base.with_addr(addr).cast::<FreeBlock>();
        let head = free[k];
        // SAFETY: caller: the block (≥ 16 bytes, 16-aligned) is ours; `head` is null or a free
        // block of ours.
        unsafe {
            block.write(FreeBlock {
                next: head,
                prev: ptr::null_mut(),
            });
            if let Some(head) = head.as_mut() {
                head.prev = block;
            }
        }
        free[k] = block;
        *nonempty |= 1 << k;
    }

    /// Unlinks the free block `block` of order `k` from its list.
    ///
    /// # Safety
    /// `block` is on list `k`.
    #[inline]
    unsafe fn unlink(&mut self, block: *mut FreeBlock, k: usize) {
        // SAFETY: caller; its neighbours are free blocks of ours on the same list.
        unsafe {
            let FreeBlock { next, prev } = block.read();
            if let Some(next) = next.as_mut() {
                next.prev = prev;
            }
            match prev.as_mut() {
                Some(prev) => prev.next = next,
                None => self.free[k] = next,
            }
        }
        if self.free[k].is_null() {
            self.nonempty &= !(1 << k);
        }
    }

    /// Allocates a block of order `k`, marking it `state`.
    #[inline]
    fn alloc_order(&mut self, k: usize, state: State) -> Option<NonNull<u8>> {
        let candidates = self.nonempty & !((1 << k) - 1);
        if candidates == 0 {
            return None;
        }
        let mut j = candidates.trailing_zeros() as usize;
        let block = self.free[j];
        let addr = block.addr();
        // A free block lies in one of our regions (invariant; `None` would leave all unchanged).
        let r = self.region_of(addr)?;
        // SAFETY: the head of list `j`.
        unsafe { self.unlink(block, j) };
        // SAFETY: a live descriptor of ours; nothing else refers to it now.
        let r = unsafe { &mut *r };
        r.set_state(j, addr, State::None);
        while j > k {
            j -= 1;
            let upper = addr + block_size(j);
            r.set_state(j, upper, State::Free);
            // SAFETY: the upper half just split off: free, ours, on no list.
            unsafe { Self::push(&mut self.free, &mut self.nonempty, r.base, upper, j) };
        }
        r.set_state(k, addr, state);
        self.used += block_size(k);
        if state == State::Internal {
            self.internal += block_size(k);
        }
        NonNull::new(r.base.with_addr(addr))
    }

    /// Frees the order-`k` block at `addr`, which must be marked `state`, merging it with free
    /// buddies. `NotAllocated` (nothing changed) when it is not.
    #[inline]
    fn free_order(&mut self, mut addr: usize, mut k: usize, state: State) -> AllocResult {
        let r = self.region_of(addr).ok_or(AllocError::NotAllocated)?;
        // SAFETY: a live descriptor of ours.
        let r = unsafe { &mut *r };
        if !r.holds(k, addr) || addr % block_size(k) != 0 || r.state(k, addr) != state {
            return Err(AllocError::NotAllocated);
        }
        r.set_state(k, addr, State::None);
        self.used -= block_size(k);
        if state == State::Internal {
            self.internal -= block_size(k);
        }
        while k < r.max_order {
            let buddy = addr ^ block_size(k);
            if !r.holds(k, buddy) || r.state(k, buddy) != State::Free {
                break;
            }
            // SAFETY: marked free: on list `k`.
            unsafe { self.unlink(r.base.with_addr(buddy).cast(), k) };
            r.set_state(k, buddy, State::None);
            addr = addr.min(buddy);
            k += 1;
        }
        r.set_state(k, addr, State::Free);
        // SAFETY: the merged block is free, ours and on no list.
        unsafe { Self::push(&mut self.free, &mut self.nonempty, r.base, addr, k) };
        Ok(())
    }

    /// Frees `pos` like [`dealloc`](ByteAllocator::dealloc), but reports what it refused:
    /// `Err(NotAllocated)` when `pos` is not a live block allocated with a layout of the same
    /// block size (outside every region, a double free, a wrong layout, a block the slab layer
    /// holds). Nothing changes then. Zero-size layouts: `Ok`, nothing done.
    ///
    /// # Time Complexity
    /// O(regions + orders).
    pub fn try_dealloc(&mut self, pos: NonNull<u8>, layout: Layout) -> AllocResult {
        if layout.size() == 0 {
            return Ok(());
        }
        let k = order_of(layout).ok_or(AllocError::NotAllocated)?;
        self.free_order(pos.as_ptr().addr(), k, State::Used)
    }

    /// Whether `pos` is a live block allocated with `layout` (or a layout of the same block
    /// size): what [`try_dealloc`](Self::try_dealloc) would accept; a kernel's debug check for
    /// foreign pointers. Zero-size layouts: `false`.
    ///
    /// # Time Complexity
    /// O(regions).
    pub fn is_allocated(&self, pos: NonNull<u8>, layout: Layout) -> bool {
        if layout.size() == 0 {
            return false;
        }
        let addr = pos.as_ptr().addr();
        let (Some(k), Some(r)) = (order_of(layout), self.region_of(addr)) else {
            return false;
        };
        // SAFETY: a live descriptor of ours.
        let r = unsafe { &*r };
        r.holds(k, addr) && addr % block_size(k) == 0 && r.state(k, addr) == State::Used
    }

    /// The size of the largest free block (0 when none): the largest request (size and
    /// alignment) that can succeed now.
    ///
    /// # Time Complexity
    /// O(1).
    pub fn largest_free_block(&self) -> usize {
        if self.nonempty == 0 {
            0
        } else {
            block_size((usize::BITS - 1 - self.nonempty.leading_zeros()) as usize)
        }
    }

    /// The number of free blocks (a walk of the free lists, for tests and diagnostics).
    ///
    /// # Time Complexity
    /// O(free blocks).
    pub fn free_blocks(&self) -> usize {
        let mut n = 0;
        for &head in &self.free {
            let mut b = head;
            while !b.is_null() {
                n += 1;
                // SAFETY: a free block of ours.
                b = unsafe { (*b).next };
            }
        }
        n
    }

    /// The number of regions added.
    pub fn regions_len(&self) -> usize {
        self.regions().count()
    }

    /// Checks every invariant: each region is tiled exactly by blocks (one state entry per
    /// block, none elsewhere), no two free buddies are left unmerged, the free lists hold
    /// exactly the free blocks (links, order, non-empty mask), and the counters agree (`used`
    /// = used + internal blocks, `total` = used + free = the regions' block bytes).
    ///
    /// # Time Complexity
    /// O(blocks × orders + state map words).
    pub fn check(&self) -> Result<(), CheckError> {
        let err = |s| Err(CheckError(s));
        let (mut total, mut used, mut internal, mut free_blocks) = (0, 0, 0, 0);
        for r in self.regions() {
            if r.start % MIN_BLOCK != 0 || r.end % MIN_BLOCK != 0 || r.start >= r.end {
                return err("region bounds are not aligned blocks");
            }
            if r.max_order != max_order_in(r.start, r.end) {
                return err("region max order is wrong");
            }
            if self
                .regions()
                .filter(|o| o.raw_start < r.raw_end && r.raw_start < o.raw_end)
                .count()
                != 1
            {
                return err("regions overlap");
            }
            total += r.end - r.start;
            let mut entries = 0;
            let mut a = r.start;
            while a < r.end {
                let mut found = None;
                for k in 0..=r.max_order {
                    if a % block_size(k) == 0 && r.holds(k, a) && r.state(k, a) != State::None {
                        if found.is_some() {
                            return err("two blocks start at one address");
                        }
                        found = Some((k, r.state(k, a)));
                    }
                }
                let Some((k, state)) = found else {
                    return err("an address is covered by no block");
                };
                entries += 1;
                match state {
                    State::Free => {
                        free_blocks += 1;
                        let buddy = a ^ block_size(k);
                        if k < r.max_order && r.holds(k, buddy) && r.state(k, buddy) == State::Free
                        {
                            return err("two free buddies are not merged");
                        }
                    }
                    State::Used => used += block_size(k),
                    State::Internal => {
                        used += block_size(k);
                        internal += block_size(k);
                    }
                    State::None => unreachable!(),
                }
                a += block_size(k);
            }
            // Entries off the tiling (stale states) would be counted here.
            let mut set = 0;
            for w in 0..r.words() {
                // SAFETY: inside the region's state map.
                let word = unsafe { r.states.add(w).read() };
                set += ((word | word >> 1) & 0x5555_5555_5555_5555).count_ones();
            }
            if set as usize != entries {
                return err("state map has entries off the block tiling");
            }
        }
        let mut listed = 0;
        for (k, &head) in self.free.iter().enumerate() {
            if head.is_null() == (self.nonempty & (1 << k) != 0) {
                return err("non-empty mask disagrees with a free list");
            }
            let mut prev = ptr::null_mut();
            let mut b = head;
            while !b.is_null() {
                let addr = b.addr();
                // SAFETY: a live descriptor of ours, if any.
                let Some(r) = self.region_of(addr).map(|r| unsafe { &*r }) else {
                    return err("free list leaves the regions");
                };
                if !r.holds(k, addr) || addr % block_size(k) != 0 || r.state(k, addr) != State::Free
                {
                    return err("listed block is not a free block of its order");
                }
                // SAFETY: a free block of ours.
                let links = unsafe { b.read() };
                if links.prev != prev {
                    return err("free list back link is wrong");
                }
                listed += 1;
                if listed > free_blocks {
                    return err("free lists hold more blocks than the regions (cycle?)");
                }
                prev = b;
                b = links.next;
            }
        }
        if listed != free_blocks {
            return err("free lists miss free blocks");
        }
        if total != self.total || used != self.used || internal != self.internal {
            return err("byte counters disagree with the blocks");
        }
        Ok(())
    }
}

/// The slab layer's access: blocks marked `Internal`, which `dealloc` refuses.
#[cfg(feature = "slab")]
impl BuddyByteAllocator {
    /// A block of `bytes` (a power of two ≥ 16), aligned to `bytes`, for the layer above (a
    /// slab); `dealloc`/`try_dealloc` refuse it. `None` when no block is free.
    pub(crate) fn alloc_internal(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        debug_assert!(bytes.is_power_of_two() && bytes >= MIN_BLOCK);
        let k = (bytes.trailing_zeros() - MIN_SHIFT) as usize;
        if k >= ORDERS {
            return None;
        }
        self.alloc_order(k, State::Internal)
    }

    /// Frees a block from [`alloc_internal`](Self::alloc_internal).
    pub(crate) fn free_internal(&mut self, block: NonNull<u8>, bytes: usize) -> AllocResult {
        let k = (bytes.trailing_zeros() - MIN_SHIFT) as usize;
        self.free_order(block.as_ptr().addr(), k, State::Internal)
    }

    /// Whether `[addr, addr + bytes)` is a live block from `alloc_internal` (then it is
    /// readable memory of ours).
    pub(crate) fn is_internal(&self, addr: usize, bytes: usize) -> bool {
        let k = (bytes.trailing_zeros() - MIN_SHIFT) as usize;
        let Some(r) = self.region_of(addr) else {
            return false;
        };
        // SAFETY: a live descriptor of ours.
        let r = unsafe { &*r };
        r.holds(k, addr) && addr % bytes == 0 && r.state(k, addr) == State::Internal
    }

    /// Bytes of the blocks held by the layer above (`alloc_internal`).
    pub(crate) fn internal_bytes(&self) -> usize {
        self.internal
    }
}

impl Default for BuddyByteAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BuddyByteAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyByteAllocator")
            .field("total", &self.total)
            .field("used", &self.used)
            .field("regions", &self.regions_len())
            .finish_non_exhaustive()
    }
}

impl BaseAllocator for BuddyByteAllocator {
    /// Adds the first region. Panics (with the reason) when `add_memory` would refuse it.
    fn init(&mut self, start: usize, size: usize) {
        if let Err(e) = self.add_memory(start, size) {
            panic!("BuddyByteAllocator::init({start:#x}, {size:#x}): {e}");
        }
    }

    /// Adds `[start, start + size)`, memory the allocator may use for the rest of the
    /// program. Errors (nothing changes): `InvalidParam` for a null, empty or wrapping range
    /// or one too small for a block and the metadata; `MemoryOverlap` when it overlaps a
    /// region already added. See [`BuddyByteAllocator::add_region`].
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        if start == 0 || size == 0 || start.checked_add(size).is_none() {
            return Err(AllocError::InvalidParam);
        }
        let ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(start))
            .ok_or(AllocError::InvalidParam)?;
        // SAFETY: the trait's contract: the caller gives us this memory.
        unsafe { self.add_region(NonNull::slice_from_raw_parts(ptr, size)) }
    }
}

impl ByteAllocator for BuddyByteAllocator {
    /// Allocates a block of `max(size, align, 16)` rounded up to a power of two, aligned to its
    /// size; `Err(NoMemory)` when no free block is large enough. Zero-size layouts get a
    /// dangling, aligned pointer.
    ///
    /// # Time Complexity
    /// O(regions + orders).
    fn alloc(&mut self, layout: Layout) -> AllocResult<NonNull<u8>> {
        if layout.size() == 0 {
            return Ok(dangling(layout.align()));
        }
        let k = order_of(layout).ok_or(AllocError::NoMemory)?;
        self.alloc_order(k, State::Used).ok_or(AllocError::NoMemory)
    }

    /// Frees `pos`. Zero-size layouts are ignored. A pointer that is not a live block of the
    /// layout's size (see [`try_dealloc`](BuddyByteAllocator::try_dealloc)) changes nothing:
    /// it panics in debug builds (`debug_assert!`) and is ignored in release builds.
    ///
    /// # Time Complexity
    /// O(regions + orders).
    fn dealloc(&mut self, pos: NonNull<u8>, layout: Layout) {
        let result = self.try_dealloc(pos, layout);
        debug_assert!(
            result.is_ok(),
            "BuddyByteAllocator::dealloc: not a live block of this layout (double free?)"
        );
    }

    fn total_bytes(&self) -> usize {
        self.total
    }

    fn used_bytes(&self) -> usize {
        self.used
    }

    fn available_bytes(&self) -> usize {
        self.total - self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(order_of(l(1, 1)), Some(0));
        assert_eq!(order_of(l(16, 1)), Some(0));
        assert_eq!(order_of(l(17, 1)), Some(1));
        assert_eq!(order_of(l(8, 64)), Some(2));
        // The largest layout (isize::MAX bytes) has an order: half the address space.
        assert_eq!(order_of(l(usize::MAX / 2, 1)), Some(ORDERS - 1));
        assert_eq!(max_order_in(16, 48), 0);
        assert_eq!(max_order_in(32, 64), 1);
        assert_eq!(max_order_in(0x1000, 0x3000), 8);
        assert_eq!(carve_order(0x10, 0x1000), 0);
        assert_eq!(carve_order(0x1000, 0x3000), 8);
        // Orders of 4 GiB and more exist and have state entries.
        let big = 1usize << 40;
        let k = max_order_in(big, big * 2);
        assert_eq!(block_size(k), big);
        let offsets = state_offsets(big, big * 2, k);
        assert_eq!(offsets[k + 1] - offsets[k], 1);
    }
}
