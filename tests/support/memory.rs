//! Real memory for the allocators under test ([`Memory`]) and the memory oracle
//! ([`MemShadow`]): the live blocks as a [`RangeShadow`] over addresses, each block filled on
//! allocation and checked before it is freed, so that overlap, a block outside its pool, a
//! misaligned block, a double free and an overwrite all fail the test where they happen.

use core::alloc::Layout;
use core::ptr::NonNull;

use super::{RangeShadow, Regions, pattern};

/// Heap memory for a test pool, freed on drop. Every pointer into it derives from one
/// allocation, so Miri checks every access (headers included) against it.
pub(crate) struct Memory {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Memory {
    /// `size` bytes aligned to `align`.
    pub(crate) fn new(size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("test pool");
        Self { ptr, layout }
    }

    /// `size` bytes aligned to a 4096-byte page.
    pub(crate) fn page_aligned(size: usize) -> Self {
        Self::new(size, 4096)
    }

    /// `[offset, offset + len)` of the pool.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> NonNull<[u8]> {
        assert!(offset + len <= self.layout.size());
        // SAFETY: inside the pool.
        let start = unsafe { self.ptr.add(offset) };
        NonNull::slice_from_raw_parts(start, len)
    }

    /// The whole pool.
    pub(crate) fn all(&self) -> NonNull<[u8]> {
        self.slice(0, self.layout.size())
    }

    /// The pool's first byte.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The pool's address.
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr().addr()
    }

    /// The pool's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Which bytes of a block the oracle fills and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Every byte, with the block's tag (one `write_bytes`: cheap under Miri).
    Whole,
    /// [`pattern`] over the whole of a block up to 256 bytes, over its first and last 128
    /// bytes otherwise (blocks of megabytes stay cheap).
    Ends,
}

/// One live block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) layout: Layout,
    /// The tag its bytes were filled with (never 0).
    pub(crate) fill: u8,
}

/// The memory oracle: the live blocks by address (a [`RangeShadow`] whose regions are the
/// pools, a block inside one pool), filled and checked as [`Fill`] says.
#[derive(Debug)]
pub(crate) struct MemShadow {
    ranges: RangeShadow<Live>,
    mode: Fill,
    next_fill: u8,
}

impl MemShadow {
    pub(crate) fn new(mode: Fill) -> Self {
        Self {
            ranges: RangeShadow::new(Regions::One),
            mode,
            next_fill: 0,
        }
    }

    /// Registers a region given to the allocator.
    pub(crate) fn pool(&mut self, region: NonNull<[u8]>) {
        let start = region.cast::<u8>().as_ptr().addr();
        self.ranges.add_region(start, start + region.len());
    }

    /// Registers pool `index` (or the grown range of one: pass the whole new range).
    pub(crate) fn set_pool(&mut self, index: usize, start: usize, end: usize) {
        self.ranges.set_region(index, start, end);
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The `k`-th live block in address order (modulo the count), if any.
    pub(crate) fn nth(&self, k: usize) -> Option<Live> {
        self.ranges.nth(k).map(|(_, _, live)| *live)
    }

    pub(crate) fn lives(&self) -> impl Iterator<Item = &Live> {
        self.ranges.iter().map(|(_, _, live)| live)
    }

    /// The pool index containing `addr`.
    pub(crate) fn pool_of(&self, addr: usize) -> Option<usize> {
        self.ranges.region_of(addr)
    }

    /// Live blocks per pool.
    pub(crate) fn live_per_pool(&self) -> Vec<usize> {
        self.ranges.live_per_region()
    }

    /// Records a fresh allocation after checking it: aligned, inside one pool, overlapping no
    /// live block; fills its bytes with a new tag. A zero-size block inside a pool owns its
    /// address (one byte); a dangling zero-size pointer outside the pools owns nothing.
    #[track_caller]
    pub(crate) fn allocated(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let addr = ptr.as_ptr().addr();
        assert_eq!(
            addr % layout.align(),
            0,
            "{layout:?} at {addr:#x} is misaligned"
        );
        if layout.size() == 0 && self.pool_of(addr).is_none() {
            return;
        }
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        let live = Live {
            ptr,
            layout,
            fill: self.next_fill,
        };
        let end = addr + layout.size().max(1);
        if let Err(e) = self.ranges.insert(addr, end, live) {
            panic!("{layout:?} at {addr:#x}: {e}");
        }
        match self.mode {
            // SAFETY: the allocator just gave us `layout.size()` bytes at `ptr`.
            Fill::Whole => unsafe { ptr.as_ptr().write_bytes(live.fill, layout.size()) },
            Fill::Ends => {
                for span in ends(layout.size()) {
                    for i in span {
                        // SAFETY: inside the block just allocated.
                        unsafe { ptr.as_ptr().add(i).write(pattern(live.fill, i)) };
                    }
                }
            }
        }
    }

    /// Checks the block's fill and forgets it (before it is freed); panics if the model has no
    /// live block at `ptr` (a double free by the test).
    #[track_caller]
    pub(crate) fn freeing(&mut self, ptr: NonNull<u8>) -> Live {
        self.freeing_at(ptr.as_ptr().addr())
    }

    /// [`freeing`](Self::freeing) of the block at address `addr` (the returned block keeps the
    /// pointer the allocator gave, with its provenance).
    #[track_caller]
    pub(crate) fn freeing_at(&mut self, addr: usize) -> Live {
        let (_, live) = self
            .ranges
            .remove(addr)
            .unwrap_or_else(|e| panic!("freeing a block the model does not know: {e}"));
        self.verify(&live);
        live
    }

    /// A reallocation moved (or kept) `old` to `new` with `new_layout`: the kept prefix must
    /// hold the old fill; the block is refilled.
    #[track_caller]
    pub(crate) fn reallocated(&mut self, old: Live, new: NonNull<u8>, new_layout: Layout) {
        let keep = old.layout.size().min(new_layout.size());
        let kept = Live {
            ptr: new,
            layout: Layout::from_size_align(keep, 1).unwrap(),
            fill: old.fill,
        };
        assert!(self.intact(&kept), "reallocation lost the contents");
        self.allocated(new, new_layout);
    }

    /// A failed reallocation left `old` in place: check and keep it.
    #[track_caller]
    pub(crate) fn restore(&mut self, old: Live) {
        self.verify(&old);
        let addr = old.ptr.as_ptr().addr();
        let end = addr + old.layout.size().max(1);
        if let Err(e) = self.ranges.insert(addr, end, old) {
            panic!("restoring {:?} at {addr:#x}: {e}", old.layout);
        }
    }

    /// Whether the live block still holds its fill.
    fn intact(&self, live: &Live) -> bool {
        let p = live.ptr.as_ptr();
        match self.mode {
            Fill::Whole => {
                // SAFETY: the block is live, so its bytes are ours.
                let bytes = unsafe { core::slice::from_raw_parts(p, live.layout.size()) };
                bytes.iter().all(|&b| b == live.fill)
            }
            Fill::Ends => {
                for span in ends(live.layout.size()) {
                    for i in span {
                        // SAFETY: inside the live block.
                        if unsafe { p.add(i).read() } != pattern(live.fill, i) {
                            return false;
                        }
                    }
                }
                true
            }
        }
    }

    #[track_caller]
    fn verify(&self, live: &Live) {
        assert!(
            self.intact(live),
            "the contents of {:?} at {:p} were overwritten",
            live.layout,
            live.ptr
        );
    }

    /// Checks every live block's fill.
    #[track_caller]
    pub(crate) fn verify_all(&self) {
        self.lives().for_each(|live| self.verify(live));
    }
}

/// The offsets [`Fill::Ends`] covers in a block of `size` bytes.
fn ends(size: usize) -> [core::ops::Range<usize>; 2] {
    if size <= 256 {
        [0..size, size..size]
    } else {
        [0..128, size - 128..size]
    }
}

/// Writes `len` bytes of the [`pattern`] of `tag` at `p` (a block of at least `len` bytes the
/// test owns).
pub(crate) fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    for i in 0..len {
        // SAFETY: the caller's block holds `len` bytes.
        unsafe { p.as_ptr().add(i).write(pattern(tag, i)) };
    }
}

/// Whether the first `len` bytes at `p` still hold the [`pattern`] of `tag`.
pub(crate) fn holds(p: NonNull<u8>, len: usize, tag: u8) -> bool {
    // SAFETY: the caller's block holds `len` bytes.
    (0..len).all(|i| unsafe { p.as_ptr().add(i).read() } == pattern(tag, i))
}
