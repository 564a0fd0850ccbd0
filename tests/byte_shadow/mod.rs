//! Shared support for `tests/byte_buddy.rs` and `tests/byte_slab.rs`: a real memory pool, a
//! shadow model of the live blocks (no overlap, alignment, inside the pool, contents intact
//! through a pattern written on allocation and checked on free), the interface both
//! allocators are driven through, and a small seeded PRNG.

#![allow(
    dead_code,
    reason = "each test crate uses a different part of this module"
)]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;

use smpalloc::byte::slab::class::{class_for, class_size};
use smpalloc::{AllocResult, BuddyByteAllocator, ByteAllocator, SlabByteAllocator};

/// Heap memory for a test pool, freed on drop. Pointers into it keep its provenance.
pub(crate) struct Pool {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Pool {
    /// `size` bytes aligned to `align`.
    pub(crate) fn new(size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("test pool");
        Self { ptr, layout }
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

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr().addr()
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// What the tests need of an allocator under test.
pub(crate) trait Under: ByteAllocator {
    /// The bytes `used_bytes` grows by for `layout`.
    fn charged(layout: Layout) -> usize;
    fn try_free(&mut self, ptr: NonNull<u8>, layout: Layout) -> AllocResult;
    fn invariants(&self) -> Result<(), String>;
    /// # Safety
    /// As `add_region` of the allocator.
    unsafe fn add(&mut self, region: NonNull<[u8]>) -> AllocResult;
    /// Returns parked memory (empty slabs) to the bottom layer.
    fn reclaim_all(&mut self) {}
}

/// A buddy block's bytes for `layout`.
pub(crate) fn buddy_block(layout: Layout) -> usize {
    layout
        .size()
        .max(layout.align())
        .max(smpalloc::byte::BUDDY_MIN_BLOCK)
        .next_power_of_two()
}

impl Under for BuddyByteAllocator {
    fn charged(layout: Layout) -> usize {
        buddy_block(layout)
    }
    fn try_free(&mut self, ptr: NonNull<u8>, layout: Layout) -> AllocResult {
        self.try_dealloc(ptr, layout)
    }
    fn invariants(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }
    unsafe fn add(&mut self, region: NonNull<[u8]>) -> AllocResult {
        // SAFETY: caller.
        unsafe { self.add_region(region) }
    }
}

impl Under for SlabByteAllocator {
    fn charged(layout: Layout) -> usize {
        match class_for(layout.size(), layout.align()) {
            Some(c) => class_size(c),
            None => buddy_block(layout),
        }
    }
    fn try_free(&mut self, ptr: NonNull<u8>, layout: Layout) -> AllocResult {
        self.try_dealloc(ptr, layout)
    }
    fn invariants(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }
    unsafe fn add(&mut self, region: NonNull<[u8]>) -> AllocResult {
        // SAFETY: caller.
        unsafe { self.add_region(region) }
    }
    fn reclaim_all(&mut self) {
        self.reclaim();
    }
}

/// A live block in the model.
#[derive(Debug, Clone, Copy)]
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    seed: u8,
}

/// The shadow model: the live blocks by address, the pool ranges, and the expected
/// `used_bytes`.
pub(crate) struct Shadow {
    live: BTreeMap<usize, Live>,
    order: Vec<usize>,
    pools: Vec<(usize, usize)>,
    used: usize,
    next_seed: u8,
}

fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31))
}

/// Bytes of a block the pattern covers (the whole of small blocks, both ends of large ones).
fn pattern_spans(size: usize) -> [core::ops::Range<usize>; 2] {
    if size <= 256 {
        [0..size, size..size]
    } else {
        [0..128, size - 128..size]
    }
}

impl Shadow {
    pub(crate) fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            order: Vec::new(),
            pools: Vec::new(),
            used: 0,
            next_seed: 1,
        }
    }

    /// Records a region given to the allocator.
    pub(crate) fn pool(&mut self, region: NonNull<[u8]>) {
        let start = region.cast::<u8>().as_ptr().addr();
        self.pools.push((start, start + region.len()));
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Allocates `layout` from `a`, checks the result against the model and records it.
    pub(crate) fn alloc<A: Under>(&mut self, a: &mut A, layout: Layout) -> Option<NonNull<u8>> {
        let before = (a.used_bytes(), a.available_bytes(), a.total_bytes());
        let result = a.alloc(layout);
        let Ok(ptr) = result else {
            assert_eq!(result, Err(smpalloc::AllocError::NoMemory));
            assert_eq!(
                before,
                (a.used_bytes(), a.available_bytes(), a.total_bytes())
            );
            return None;
        };
        let addr = ptr.as_ptr().addr();
        assert_eq!(addr % layout.align(), 0, "{layout:?} at {addr:#x}");
        if layout.size() == 0 {
            assert_eq!(a.used_bytes(), before.0);
            return Some(ptr);
        }
        let end = addr + layout.size();
        assert!(
            self.pools.iter().any(|&(s, e)| s <= addr && end <= e),
            "{layout:?} at {addr:#x} is outside the pools"
        );
        if let Some((&prev, live)) = self.live.range(..end).next_back() {
            assert!(
                prev + live.layout.size() <= addr,
                "{layout:?} at {addr:#x} overlaps {prev:#x}"
            );
        }
        let seed = self.next_seed;
        self.next_seed = self.next_seed.wrapping_add(1).max(1);
        for span in pattern_spans(layout.size()) {
            for i in span {
                // SAFETY: inside the block just allocated.
                unsafe { ptr.as_ptr().add(i).write(pattern(seed, i)) };
            }
        }
        self.used += A::charged(layout);
        assert_eq!(a.used_bytes(), self.used, "used_bytes after {layout:?}");
        self.live.insert(addr, Live { ptr, layout, seed });
        self.order.push(addr);
        Some(ptr)
    }

    /// Frees the live block number `pick` (modulo the live count), checking its contents.
    pub(crate) fn free_nth<A: Under>(&mut self, a: &mut A, pick: usize) {
        if self.order.is_empty() {
            return;
        }
        let addr = self.order.swap_remove(pick % self.order.len());
        let live = self.live.remove(&addr).unwrap();
        for span in pattern_spans(live.layout.size()) {
            for i in span {
                // SAFETY: inside the live block.
                let byte = unsafe { live.ptr.as_ptr().add(i).read() };
                assert_eq!(
                    byte,
                    pattern(live.seed, i),
                    "block {addr:#x} byte {i} was overwritten"
                );
            }
        }
        a.try_free(live.ptr, live.layout)
            .expect("free of a live block");
        self.used -= A::charged(live.layout);
        assert_eq!(
            a.used_bytes(),
            self.used,
            "used_bytes after freeing {:?}",
            live.layout
        );
    }

    /// Frees everything, then checks that all memory is back.
    pub(crate) fn free_all<A: Under>(&mut self, a: &mut A) {
        while !self.order.is_empty() {
            self.free_nth(a, 0);
        }
        a.reclaim_all();
        check(a);
        assert_eq!(a.used_bytes(), 0);
        assert_eq!(a.available_bytes(), a.total_bytes());
    }

    /// A live block, for the bad-input tests.
    pub(crate) fn any_live(&self) -> Option<(NonNull<u8>, Layout)> {
        self.live.values().next().map(|l| (l.ptr, l.layout))
    }
}

/// The allocator's invariant check, plus `used + available <= total`.
pub(crate) fn check<A: Under>(a: &A) {
    if let Err(e) = a.invariants() {
        panic!("invariant broken: {e}");
    }
    assert!(a.used_bytes() + a.available_bytes() <= a.total_bytes());
}

/// A seeded PRNG (splitmix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Fisher-Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The random program step: allocate (size 1..=`max_size`, mostly small, alignment
/// 1..=8192) or free a random live block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Alloc { size_raw: u32, align_shift: u8 },
    Free(usize),
}

/// A random step: allocations and frees, 3 to 2.
pub(crate) fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (any::<u32>(), any::<u8>()).prop_map(|(size_raw, align_shift)| Op::Alloc { size_raw, align_shift }),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// `Layout::from_size_align(size, align).unwrap()`.
pub(crate) fn layout(size: usize, align: usize) -> core::alloc::Layout {
    core::alloc::Layout::from_size_align(size, align).unwrap()
}

/// The size a raw value maps to: mostly small, some medium, a few up to `max_size`.
pub(crate) fn size_of_raw(raw: u32, max_size: usize) -> usize {
    let r = (raw >> 4) as usize;
    match raw % 16 {
        0..=8 => 1 + r % 128,
        9..=12 => 1 + r % 4096,
        13 => 4096 + r % 64,
        _ => 1 + r % max_size,
    }
}

/// The alignment a raw shift maps to: mostly small, up to 8192.
pub(crate) fn align_of_raw(shift: u8) -> usize {
    match shift % 16 {
        0..=9 => 1 << (shift % 4),
        10..=13 => 1 << (shift % 10),
        _ => 1 << (shift % 14),
    }
}

/// Runs `ops` on `a` (whose regions the model knows), checking after every step, then frees
/// everything and checks that all memory is back.
pub(crate) fn run<A: Under>(a: &mut A, shadow: &mut Shadow, ops: &[Op], max_size: usize) {
    check(a);
    for &op in ops {
        match op {
            Op::Alloc {
                size_raw,
                align_shift,
            } => {
                let size = size_of_raw(size_raw, max_size);
                let layout = Layout::from_size_align(size, align_of_raw(align_shift)).unwrap();
                shadow.alloc(a, layout);
            }
            Op::Free(pick) => shadow.free_nth(a, pick),
        }
        check(a);
    }
    shadow.free_all(a);
}
