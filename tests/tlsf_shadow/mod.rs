//! The shadow model shared by the TLSF tests: the live allocations (address range, requested
//! layout, fill byte) and the pools, checked after every step: no two live blocks overlap,
//! every block is aligned and inside one pool, and its bytes still hold its fill pattern.

#![allow(
    dead_code,
    reason = "each test crate uses a different part of this module"
)]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;

/// One live allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) layout: Layout,
    pub(crate) fill: u8,
}

/// The oracle: live allocations by address, and the pools (`start..end` address ranges).
#[derive(Debug, Default)]
pub(crate) struct Shadow {
    live: BTreeMap<usize, Live>,
    pools: Vec<(usize, usize)>,
    next_fill: u8,
}

impl Shadow {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a pool (or the grown range of one: pass the whole new range).
    pub(crate) fn set_pool(&mut self, index: usize, start: usize, end: usize) {
        if index == self.pools.len() {
            self.pools.push((start, end));
        } else {
            self.pools[index] = (start, end);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The `k`-th live allocation (modulo the count), if any.
    pub(crate) fn nth(&self, k: usize) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        self.live.values().nth(k % self.live.len()).copied()
    }

    pub(crate) fn lives(&self) -> impl Iterator<Item = &Live> {
        self.live.values()
    }

    /// The pool index containing `addr`.
    pub(crate) fn pool_of(&self, addr: usize) -> Option<usize> {
        self.pools.iter().position(|&(s, e)| s <= addr && addr < e)
    }

    /// Records a fresh allocation after checking it: aligned, inside one pool, overlapping no
    /// live allocation. Fills its bytes with a new pattern.
    pub(crate) fn allocated(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let addr = ptr.as_ptr().addr();
        assert_eq!(
            addr % layout.align(),
            0,
            "{layout:?} at {addr:#x} is misaligned"
        );
        if layout.size() == 0 && self.pool_of(addr).is_none() {
            return; // a dangling zero-size pointer: owns nothing
        }
        // A zero-size allocation inside a pool still owns its address.
        let end = addr + layout.size().max(1);
        let pool = self
            .pool_of(addr)
            .unwrap_or_else(|| panic!("{addr:#x} is in no pool"));
        assert!(
            end <= self.pools[pool].1,
            "{layout:?} at {addr:#x} runs past its pool"
        );
        if let Some((&s, live)) = self.live.range(..end).next_back() {
            assert!(
                s + live.layout.size().max(1) <= addr,
                "{layout:?} at {addr:#x} overlaps {:?} at {s:#x}",
                live.layout
            );
        }
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        let fill = self.next_fill;
        // SAFETY: the allocator just gave us `layout.size()` bytes at `ptr`.
        unsafe { ptr.as_ptr().write_bytes(fill, layout.size()) };
        self.live.insert(addr, Live { ptr, layout, fill });
    }

    /// Checks the allocation's pattern and forgets it (before it is freed).
    pub(crate) fn freeing(&mut self, ptr: NonNull<u8>) -> Live {
        let live = self
            .live
            .remove(&ptr.as_ptr().addr())
            .expect("freeing an allocation the model does not know");
        Self::verify(&live);
        live
    }

    /// A reallocation moved (or kept) `old` to `new` with `new_layout`: the kept prefix must
    /// hold the old pattern; the rest is refilled.
    pub(crate) fn reallocated(&mut self, old: Live, new: NonNull<u8>, new_layout: Layout) {
        let keep = old.layout.size().min(new_layout.size());
        // SAFETY: `new` holds at least `keep` bytes copied from the old allocation.
        let bytes = unsafe { core::slice::from_raw_parts(new.as_ptr(), keep) };
        assert!(
            bytes.iter().all(|&b| b == old.fill),
            "reallocation lost the contents"
        );
        self.allocated(new, new_layout);
    }

    /// A failed reallocation left `old` in place: check and keep it.
    pub(crate) fn restore(&mut self, old: Live) {
        Self::verify(&old);
        self.live.insert(old.ptr.as_ptr().addr(), old);
    }

    fn verify(live: &Live) {
        // SAFETY: the allocation is live, so its bytes are ours.
        let bytes = unsafe { core::slice::from_raw_parts(live.ptr.as_ptr(), live.layout.size()) };
        assert!(
            bytes.iter().all(|&b| b == live.fill),
            "the contents of {:?} at {:p} were overwritten",
            live.layout,
            live.ptr
        );
    }

    /// Checks every live allocation's pattern.
    pub(crate) fn verify_all(&self) {
        self.live.values().for_each(Self::verify);
    }

    /// Live allocations per pool.
    pub(crate) fn live_per_pool(&self) -> Vec<usize> {
        let mut counts = vec![0; self.pools.len()];
        for &addr in self.live.keys() {
            counts[self.pool_of(addr).expect("checked at allocation")] += 1;
        }
        counts
    }
}

/// A 4096-aligned heap buffer for pools, freed on drop; every pool pointer derives from `ptr`
/// (one allocation, so Miri checks every header access against it).
pub(crate) struct Buffer {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

impl Buffer {
    pub(crate) fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("test buffer");
        Self { ptr, len }
    }

    pub(crate) fn slice(&self, offset: usize, len: usize) -> NonNull<[u8]> {
        assert!(offset + len <= self.len);
        // SAFETY: inside the buffer.
        NonNull::slice_from_raw_parts(unsafe { self.ptr.add(offset) }, len)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align(self.len, 4096).unwrap(),
            )
        };
    }
}

/// A small seeded PRNG (xorshift64*), for the stress tests.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
