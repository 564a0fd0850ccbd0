//! The byte allocators (`BuddyByteAllocator`, `SlabByteAllocator`) under test: the adapter
//! trait they are driven through ([`Bytes`]), the oracle of one run ([`ByteShadow`]: the memory
//! oracle plus the exact `used_bytes`), and the random program both run.

use core::alloc::Layout;
use core::ptr::NonNull;

use smpalloc::byte::slab::class::{class_for, class_size};
use smpalloc::{AllocResult, BuddyByteAllocator, ByteAllocator, SlabByteAllocator};

use super::memory::{Fill, MemShadow, Memory};

/// The byte allocators as the tests drive them (`&mut self`: they live behind a lock).
pub(crate) trait Bytes: ByteAllocator + Sized {
    /// A new, empty allocator.
    fn empty() -> Self;
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

/// The calls both allocators spell alike; `$charged` is the bytes `used_bytes` grows by.
macro_rules! impl_bytes {
    ($ty:ty, charged: $charged:expr $(, reclaim: $reclaim:ident)?) => {
        impl Bytes for $ty {
            fn empty() -> Self {
                Self::new()
            }
            fn charged(layout: Layout) -> usize {
                $charged(layout)
            }
            fn try_free(&mut self, ptr: NonNull<u8>, layout: Layout) -> AllocResult {
                self.try_dealloc(ptr, layout)
            }
            fn invariants(&self) -> Result<(), String> {
                self.check().map_err(|e| e.to_string())
            }
            unsafe fn add(&mut self, region: NonNull<[u8]>) -> AllocResult {
                // SAFETY: the caller's.
                unsafe { self.add_region(region) }
            }
            $(fn reclaim_all(&mut self) {
                self.$reclaim();
            })?
        }
    };
}

impl_bytes!(BuddyByteAllocator, charged: buddy_block);
impl_bytes!(SlabByteAllocator, charged: slab_charge, reclaim: reclaim);

/// A slab allocation's bytes for `layout`: its class, or a buddy block beyond the classes.
pub(crate) fn slab_charge(layout: Layout) -> usize {
    match class_for(layout.size(), layout.align()) {
        Some(c) => class_size(c),
        None => buddy_block(layout),
    }
}

/// A fresh allocator over `memory`'s bytes `[offset, offset + len)`, and its oracle.
pub(crate) fn over<A: Bytes>(memory: &Memory, offset: usize, len: usize) -> (A, ByteShadow) {
    let mut a = A::empty();
    let mut shadow = ByteShadow::new();
    add_region(&mut a, &mut shadow, memory, offset, len);
    (a, shadow)
}

/// Gives `memory`'s bytes `[offset, offset + len)` to `a` as a region, and tells its oracle.
pub(crate) fn add_region<A: Bytes>(
    a: &mut A,
    shadow: &mut ByteShadow,
    memory: &Memory,
    offset: usize,
    len: usize,
) {
    let region = memory.slice(offset, len);
    // SAFETY: the memory outlives the allocator (the tests drop it last) and nothing else uses
    // these bytes: each test gives every byte of its memory to one region at most.
    unsafe { a.add(region) }.unwrap();
    shadow.pool(region);
}

/// The random-programs property of a byte allocator over `pool` bytes: one region with a
/// weakly aligned start (`offset`) and a cut end, and, if `second`, a second region in the
/// other half; then [`run`].
pub(crate) fn random_program<A: Bytes>(
    pool: usize,
    ops: &[Op],
    (offset, cut, second): (usize, usize, bool),
    max_size: usize,
) {
    let memory = Memory::new(pool, 4096);
    let half = pool / 2;
    let (mut a, mut shadow) = over::<A>(&memory, offset, half - offset - cut);
    if second {
        add_region(&mut a, &mut shadow, &memory, half + offset, half - offset);
    }
    run(&mut a, &mut shadow, ops, max_size);
}

/// Allocates a block of a fresh `A` and frees it twice through the trait's `dealloc`, which
/// refuses the second free with a `debug_assert!` (the calling test expects that panic).
pub(crate) fn dealloc_twice<A: Bytes>() {
    let memory = Memory::new(64 * 1024, 4096);
    let (mut a, _) = over::<A>(&memory, 0, memory.len());
    let p = a.alloc(layout(64, 8)).unwrap();
    a.dealloc(p, layout(64, 8));
    a.dealloc(p, layout(64, 8));
}

/// The `random_programs` property test of a byte allocator `$ty` over `$pool` bytes: up to
/// `$ops` steps of [`op`]s with sizes up to `$max_size`, through [`random_program`] (64 cases,
/// 2 under Miri).
macro_rules! random_programs_test {
    ($ty:ty, pool: $pool:expr, ops: $ops:expr, max_size: $max_size:expr) => {
        proptest::proptest! {
            #![proptest_config(proptest::test_runner::Config {
                cases: if cfg!(miri) { 2 } else { 64 },
                failure_persistence: None,
                ..proptest::test_runner::Config::default()
            })]

            /// Random programs over one region with a random (weakly aligned) start and
            /// length, and over two regions.
            #[test]
            fn random_programs(
                ops in proptest::collection::vec($crate::support::bytes::op(), 1..$ops),
                offset in 0usize..64,
                cut in 0usize..4096,
                second in proptest::prelude::any::<bool>(),
            ) {
                $crate::support::bytes::random_program::<$ty>(
                    $pool,
                    &ops,
                    (offset, cut, second),
                    $max_size,
                );
            }
        }
    };
}
pub(crate) use random_programs_test;

/// The oracle of one run: the live blocks (a [`MemShadow`] over the pools, filled at both
/// ends), the order they were allocated in (what [`free_nth`](Self::free_nth) picks from), and
/// the expected `used_bytes`.
pub(crate) struct ByteShadow {
    memory: MemShadow,
    order: Vec<usize>,
    used: usize,
}

impl ByteShadow {
    pub(crate) fn new() -> Self {
        Self {
            memory: MemShadow::new(Fill::Ends),
            order: Vec::new(),
            used: 0,
        }
    }

    /// Records a region given to the allocator.
    pub(crate) fn pool(&mut self, region: NonNull<[u8]>) {
        self.memory.pool(region);
    }

    pub(crate) fn len(&self) -> usize {
        self.memory.len()
    }

    /// Allocates `layout` from `a`, checks the result against the model and records it.
    pub(crate) fn alloc<A: Bytes>(&mut self, a: &mut A, layout: Layout) -> Option<NonNull<u8>> {
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
        self.memory.allocated(ptr, layout);
        self.used += A::charged(layout);
        assert_eq!(a.used_bytes(), self.used, "used_bytes after {layout:?}");
        self.order.push(addr);
        Some(ptr)
    }

    /// Frees the live block number `pick` (modulo the live count), checking its contents.
    pub(crate) fn free_nth<A: Bytes>(&mut self, a: &mut A, pick: usize) {
        if self.order.is_empty() {
            return;
        }
        let addr = self.order.swap_remove(pick % self.order.len());
        let live = self.memory.freeing_at(addr);
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
    pub(crate) fn free_all<A: Bytes>(&mut self, a: &mut A) {
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
        self.memory.nth(0).map(|l| (l.ptr, l.layout))
    }
}

/// The allocator's invariant check, plus `used + available <= total`.
pub(crate) fn check<A: Bytes>(a: &A) {
    if let Err(e) = a.invariants() {
        panic!("invariant broken: {e}");
    }
    assert!(a.used_bytes() + a.available_bytes() <= a.total_bytes());
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
pub(crate) fn run<A: Bytes>(a: &mut A, shadow: &mut ByteShadow, ops: &[Op], max_size: usize) {
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
