//! The byte-allocator contestants and workloads, shared by the showcase's bytes and heap
//! sections, [`crate::heap`], `benches/tlsf.rs` and `benches/heap.rs`.
//!
//! - ours: `smpalloc::Tlsf<u32, u32, 28, 32>` (the algorithm), `TlsfByteAllocator` (arceos'
//!   API) and `TlsfHeap` (arenas behind spin locks, what `#[global_allocator]` uses);
//! - peers: `rlsf` 0.2 (`Tlsf<u32, u32, 28, 32>`, arceos' configuration), `talc` 4
//!   (`Talc<ErrOnOom>`), `buddy_system_allocator` 0.13 (`Heap<32>`), `linked_list_allocator`
//!   0.10 (`Heap`), axallocator 0.2's `TlsfByteAllocator` (rlsf inside) and `std::alloc::System`;
//! - the arceos set only: ours `BuddyByteAllocator` and `SlabByteAllocator` against
//!   axallocator 0.2's `BuddyByteAllocator` (buddy_system_allocator 0.10 inside) and
//!   `SlabByteAllocator` (ax_slab_allocator 0.4 inside).
//!
//! The workload is one seeded sequence of steps over `SLOTS` slots: each step picks a slot and
//! frees its block if it holds one, otherwise allocates there (70% 8..128 B, 25% 129 B..4 KiB,
//! 5% 4..64 KiB). Every allocator runs exactly the same steps over the same pool memory.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::RefCell;
use core::ptr::NonNull;
use core::time::Duration;
use std::sync::OnceLock;
use std::time::Instant;

use smpalloc::{SpinLock, TlsfHeap};
use smpalloc_testkit::Rng;

/// The largest pool any workload uses (128 MiB, the arceos set); smaller pools are prefixes.
pub const MAX_POOL: usize = 128 << 20;
/// The churn pool.
pub const POOL: usize = 64 << 20;
/// The heap-efficiency pool.
pub const EFFICIENCY_POOL: usize = 16 << 20;
/// Slots of the churn workload (about half hold a block in the steady state).
pub const SLOTS: usize = 8192;
/// Seed of every random choice.
pub const SEED: u64 = 0x7157_f00d;

/// The pool memory: one leaked, page-aligned 128 MiB buffer, handed to one allocator at a time.
pub fn pool(len: usize) -> NonNull<[u8]> {
    static BASE: OnceLock<usize> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let layout = Layout::from_size_align(MAX_POOL, 4096).unwrap();
        // SAFETY: non-zero size; leaked on purpose (every allocator reuses it).
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null());
        // Touch every page once, so no allocator pays the first-touch faults.
        // SAFETY: the buffer was just allocated.
        unsafe { ptr.write_bytes(0, MAX_POOL) };
        ptr.expose_provenance()
    });
    assert!(len <= MAX_POOL);
    let ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(base)).unwrap();
    NonNull::slice_from_raw_parts(ptr, len)
}

/// A request size of the mix: 70% 8..=128 B, 25% 129 B..=4 KiB, 5% 4..=64 KiB.
pub fn mix_size(rng: &mut Rng) -> usize {
    let class = rng.below(100);
    if class < 70 {
        8 + rng.below(121)
    } else if class < 95 {
        129 + rng.below(4096 - 128)
    } else {
        4097 + rng.below(65536 - 4096)
    }
}

/// One step: the slot, and the size to allocate there if it is empty.
#[derive(Clone, Copy)]
pub struct Step {
    pub slot: u32,
    pub size: u32,
}

/// The seeded step sequence (`stream` selects an independent one, for threads).
pub fn steps(stream: u64, len: usize) -> Vec<Step> {
    let mut rng = Rng::new(SEED ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    (0..len)
        .map(|_| Step {
            slot: rng.below(SLOTS) as u32,
            size: mix_size(&mut rng) as u32,
        })
        .collect()
}

/// Alignment of every churn request.
pub const ALIGN: usize = 8;

// ---------------------------------------------------------------------------------------------
// The allocators

/// A byte allocator under test, owning a pool.
pub trait Bytes {
    /// A fresh allocator over `pool`.
    ///
    /// # Safety
    /// The pool's memory is unused by anything else until the allocator is dropped.
    unsafe fn over(pool: NonNull<[u8]>) -> Self;
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>>;
    /// # Safety
    /// `ptr` came from `alloc(layout)` and was not freed.
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout);
}

/// `smpalloc::Tlsf` with arceos' parameters.
pub struct OursTlsf(Box<smpalloc::byte::DefaultTlsf>);
/// `smpalloc::TlsfByteAllocator`.
pub struct OursByte(Box<smpalloc::TlsfByteAllocator>);
/// `smpalloc::TlsfHeap<2>`, used from one thread (its locks uncontended).
pub struct OursHeap(Box<TlsfHeap<2>>);
/// rlsf's `Tlsf` with arceos' parameters.
pub struct Rlsf(Box<rlsf::Tlsf<'static, u32, u32, 28, 32>>);
/// talc's `Talc` with `ErrOnOom` (the pool is claimed up front).
pub struct Talc(talc::Talc<talc::ErrOnOom>);
/// buddy_system_allocator's `Heap<32>`.
pub struct Buddy(Box<buddy_system_allocator::Heap<32>>);
/// linked_list_allocator's `Heap`.
pub struct LinkedList(linked_list_allocator::Heap);
/// One of axallocator's byte allocators.
pub struct Ax<T>(Box<T>);
/// axallocator's `TlsfByteAllocator` (rlsf inside).
pub type AxTlsf = Ax<axallocator::TlsfByteAllocator>;
/// `std::alloc::System` (ignores the pool).
pub struct System;
/// `smpalloc::BuddyByteAllocator`.
pub struct OursBuddy(Box<smpalloc::BuddyByteAllocator>);
/// `smpalloc::SlabByteAllocator`.
pub struct OursSlab(Box<smpalloc::SlabByteAllocator>);
/// axallocator's `BuddyByteAllocator` (buddy_system_allocator 0.10 inside).
pub type AxBuddy = Ax<axallocator::BuddyByteAllocator>;
/// axallocator's `SlabByteAllocator` (ax_slab_allocator 0.4 inside: slabs of 64..4096 B over a
/// buddy heap).
pub type AxSlab = Ax<axallocator::SlabByteAllocator>;

/// `Bytes` for a type with arceos' traits (`$base`, `$bytes`: the crate's trait paths).
macro_rules! arceos_bytes {
    ($name:ident, $ty:ty, $base:path, $bytes:path) => {
        impl Bytes for $name {
            unsafe fn over(pool: NonNull<[u8]>) -> Self {
                let mut a = Box::new(<$ty>::new());
                <$ty as $base>::init(
                    &mut a,
                    pool.cast::<u8>().as_ptr().expose_provenance(),
                    pool.len(),
                );
                Self(a)
            }
            #[inline]
            fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
                <$ty as $bytes>::alloc(&mut *self.0, layout).ok()
            }
            #[inline]
            unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
                <$ty as $bytes>::dealloc(&mut *self.0, ptr, layout);
            }
        }
    };
}

/// `Bytes` for a TLSF with rlsf's API (`insert_free_block_ptr`, `allocate`, `deallocate` by
/// alignment): ours and rlsf's.
macro_rules! tlsf_bytes {
    ($name:ident, $ty:ty) => {
        impl Bytes for $name {
            unsafe fn over(pool: NonNull<[u8]>) -> Self {
                let mut tlsf = Box::new(<$ty>::new());
                // SAFETY: the caller gives us the pool.
                unsafe { tlsf.insert_free_block_ptr(pool).unwrap() };
                Self(tlsf)
            }
            #[inline]
            fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
                self.0.allocate(layout)
            }
            #[inline]
            unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: the caller's contract.
                unsafe { self.0.deallocate(ptr, layout.align()) }
            }
        }
    };
}

tlsf_bytes!(OursTlsf, smpalloc::byte::DefaultTlsf);
tlsf_bytes!(Rlsf, rlsf::Tlsf<'static, u32, u32, 28, 32>);

arceos_bytes!(
    OursByte,
    smpalloc::TlsfByteAllocator,
    smpalloc::BaseAllocator,
    smpalloc::ByteAllocator
);
arceos_bytes!(
    OursBuddy,
    smpalloc::BuddyByteAllocator,
    smpalloc::BaseAllocator,
    smpalloc::ByteAllocator
);
arceos_bytes!(
    OursSlab,
    smpalloc::SlabByteAllocator,
    smpalloc::BaseAllocator,
    smpalloc::ByteAllocator
);

impl Bytes for OursHeap {
    unsafe fn over(pool: NonNull<[u8]>) -> Self {
        let heap = Box::new(TlsfHeap::new());
        // SAFETY: the caller gives us the pool.
        unsafe { heap.add_pool(pool).unwrap() };
        Self(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.allocate(layout)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

impl Bytes for Talc {
    unsafe fn over(pool: NonNull<[u8]>) -> Self {
        let mut talc = talc::Talc::new(talc::ErrOnOom);
        let start = pool.cast::<u8>().as_ptr();
        // SAFETY: the caller gives us the pool.
        unsafe {
            talc.claim(talc::Span::from(start..start.add(pool.len())))
                .unwrap()
        };
        Self(talc)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: `malloc` has no precondition beyond a non-zero size (the mix never asks 0).
        unsafe { self.0.malloc(layout) }.ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.free(ptr, layout) }
    }
}

impl Bytes for Buddy {
    unsafe fn over(pool: NonNull<[u8]>) -> Self {
        let mut heap = Box::new(buddy_system_allocator::Heap::<32>::empty());
        // SAFETY: the caller gives us the pool.
        unsafe { heap.init(pool.cast::<u8>().as_ptr().expose_provenance(), pool.len()) };
        Self(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.alloc(layout).ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

impl Bytes for LinkedList {
    unsafe fn over(pool: NonNull<[u8]>) -> Self {
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the caller gives us the pool.
        unsafe { heap.init(pool.cast::<u8>().as_ptr(), pool.len()) };
        Self(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.allocate_first_fit(layout).ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

impl<T: axallocator::ByteAllocator + Default> Bytes for Ax<T> {
    unsafe fn over(pool: NonNull<[u8]>) -> Self {
        let mut a = Box::new(T::default());
        a.init(pool.cast::<u8>().as_ptr().expose_provenance(), pool.len());
        Self(a)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.alloc(layout).ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        self.0.dealloc(ptr, layout);
    }
}

impl Bytes for System {
    unsafe fn over(_pool: NonNull<[u8]>) -> Self {
        Self
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: non-zero size.
        NonNull::new(unsafe { std::alloc::System.alloc(layout) })
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { std::alloc::System.dealloc(ptr.as_ptr(), layout) }
    }
}

/// Which contestant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    OursTlsf,
    OursByte,
    OursHeap,
    Rlsf,
    Talc,
    Buddy,
    LinkedList,
    AxTlsf,
    System,
    OursBuddy,
    OursSlab,
    AxBuddy,
    AxSlab,
}

/// Runs something generic over one contestant.
pub trait Visit {
    type Out;
    fn visit<B: Bytes>(self, kind: Kind) -> Self::Out;
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::OursTlsf,
        Kind::OursByte,
        Kind::OursHeap,
        Kind::Rlsf,
        Kind::Talc,
        Kind::Buddy,
        Kind::LinkedList,
        Kind::AxTlsf,
        Kind::System,
    ];

    /// The slab and buddy contestants (the arceos set only; not in `ALL`).
    pub const BUDDY_SLAB: [Kind; 5] = [
        Kind::OursBuddy,
        Kind::OursSlab,
        Kind::AxBuddy,
        Kind::AxSlab,
        Kind::System,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::OursTlsf => "smpalloc Tlsf",
            Kind::OursByte => "smpalloc TlsfByteAllocator",
            Kind::OursHeap => "smpalloc TlsfHeap<2>",
            Kind::Rlsf => "rlsf 0.2",
            Kind::Talc => "talc 4",
            Kind::Buddy => "buddy_system_allocator 0.13",
            Kind::LinkedList => "linked_list_allocator 0.10",
            Kind::AxTlsf => "axallocator 0.2 TLSF",
            Kind::System => "std System",
            Kind::OursBuddy => "smpalloc BuddyByteAllocator",
            Kind::OursSlab => "smpalloc SlabByteAllocator",
            Kind::AxBuddy => "axallocator 0.2 buddy",
            Kind::AxSlab => "axallocator 0.2 slab",
        }
    }

    pub fn ours(self) -> bool {
        matches!(
            self,
            Kind::OursTlsf | Kind::OursByte | Kind::OursHeap | Kind::OursBuddy | Kind::OursSlab
        )
    }

    pub fn with<V: Visit>(self, v: V) -> V::Out {
        match self {
            Kind::OursTlsf => v.visit::<OursTlsf>(self),
            Kind::OursByte => v.visit::<OursByte>(self),
            Kind::OursHeap => v.visit::<OursHeap>(self),
            Kind::Rlsf => v.visit::<Rlsf>(self),
            Kind::Talc => v.visit::<Talc>(self),
            Kind::Buddy => v.visit::<Buddy>(self),
            Kind::LinkedList => v.visit::<LinkedList>(self),
            Kind::AxTlsf => v.visit::<AxTlsf>(self),
            Kind::System => v.visit::<System>(self),
            Kind::OursBuddy => v.visit::<OursBuddy>(self),
            Kind::OursSlab => v.visit::<OursSlab>(self),
            Kind::AxBuddy => v.visit::<AxBuddy>(self),
            Kind::AxSlab => v.visit::<AxSlab>(self),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Churn

/// The live blocks of a churn run.
pub struct Slots(Vec<Option<(NonNull<u8>, Layout)>>);

impl Default for Slots {
    fn default() -> Self {
        Self::new()
    }
}

impl Slots {
    pub fn new() -> Self {
        Self(vec![None; SLOTS])
    }

    /// Runs `steps`, returns how many allocations failed.
    #[inline]
    pub fn run<B: Bytes>(&mut self, b: &mut B, steps: &[Step]) -> usize {
        let mut failed = 0;
        for step in steps {
            let slot = &mut self.0[step.slot as usize];
            match slot.take() {
                // SAFETY: allocated by `b` with `layout` and not freed since.
                Some((ptr, layout)) => unsafe { b.free(ptr, layout) },
                None => {
                    // SAFETY: `ALIGN` is a power of two and sizes are small.
                    let layout =
                        unsafe { Layout::from_size_align_unchecked(step.size as usize, ALIGN) };
                    match b.alloc(layout) {
                        Some(ptr) => {
                            // Touch the block, as a program would.
                            // SAFETY: at least one byte was allocated.
                            unsafe { ptr.as_ptr().write(1) };
                            *slot = Some((ptr, layout));
                        }
                        None => failed += 1,
                    }
                }
            }
        }
        failed
    }

    /// Frees every live block.
    pub fn drain<B: Bytes>(&mut self, b: &mut B) {
        for slot in &mut self.0 {
            if let Some((ptr, layout)) = slot.take() {
                // SAFETY: live, freed once.
                unsafe { b.free(ptr, layout) };
            }
        }
    }
}

/// Warm-up steps before timing (the live set reaches its steady state).
pub const WARMUP: usize = 4 * SLOTS;

/// Times `ops` churn steps on a fresh `B` over the 64 MiB pool (after the warm-up).
pub fn time_churn<B: Bytes>(ops: usize) -> Duration {
    static STEPS: OnceLock<Vec<Step>> = OnceLock::new();
    let all = STEPS.get_or_init(|| steps(0, WARMUP + 3_000_000));
    let ops = ops.min(all.len() - WARMUP);
    // SAFETY: the pool is used by this allocator only, until it is dropped below.
    let mut b = unsafe { B::over(pool(POOL)) };
    let mut slots = Slots::new();
    assert_eq!(
        slots.run(&mut b, &all[..WARMUP]),
        0,
        "the 64 MiB pool ran out"
    );
    let start = Instant::now();
    let failed = slots.run(&mut b, &all[WARMUP..WARMUP + ops]);
    let elapsed = start.elapsed();
    assert_eq!(failed, 0, "the 64 MiB pool ran out");
    slots.drain(&mut b);
    elapsed
}

/// Per-operation latencies (ns) of `ops` churn steps, sorted.
pub fn latencies<B: Bytes>(ops: usize) -> Vec<u32> {
    let all = steps(1, WARMUP + ops);
    // SAFETY: as in `time_churn`.
    let mut b = unsafe { B::over(pool(POOL)) };
    let mut slots = Slots::new();
    slots.run(&mut b, &all[..WARMUP]);
    let mut out = Vec::with_capacity(ops);
    for step in &all[WARMUP..] {
        let start = Instant::now();
        slots.run(&mut b, core::slice::from_ref(step));
        out.push(start.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    slots.drain(&mut b);
    out.sort_unstable();
    out
}

/// Heap efficiency: allocate the mix (3 allocations to 1 random free) on a fresh 16 MiB pool
/// until the first failure; the live requested bytes then, as a fraction of the pool.
pub fn efficiency<B: Bytes>() -> f64 {
    let mut rng = Rng::new(SEED ^ 0xeff);
    // SAFETY: as in `time_churn`.
    let mut b = unsafe { B::over(pool(EFFICIENCY_POOL)) };
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    let mut bytes = 0;
    loop {
        if rng.below(4) == 0 && !live.is_empty() {
            let (ptr, layout) = live.swap_remove(rng.below(live.len()));
            bytes -= layout.size();
            // SAFETY: live, freed once.
            unsafe { b.free(ptr, layout) };
        } else {
            let layout = Layout::from_size_align(mix_size(&mut rng), ALIGN).unwrap();
            match b.alloc(layout) {
                Some(ptr) => {
                    bytes += layout.size();
                    live.push((ptr, layout));
                }
                None => break,
            }
        }
    }
    for (ptr, layout) in live {
        // SAFETY: live, freed once.
        unsafe { b.free(ptr, layout) };
    }
    bytes as f64 / EFFICIENCY_POOL as f64
}

// ---------------------------------------------------------------------------------------------
// Threads

/// An allocator shared by threads.
pub trait Shared: Sync {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>>;
    /// # Safety
    /// `ptr` came from `alloc(layout)` and was not freed.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout);
}

impl<const N: usize> Shared for TlsfHeap<N> {
    #[inline]
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.allocate(layout)
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.deallocate(ptr, layout) }
    }
}

/// A single-threaded contestant behind one `SpinLock` (what a kernel would do with it).
pub struct Locked<B: Bytes>(pub SpinLock<B>);

impl<B: Bytes> Locked<B> {
    /// A fresh `B` over `pool`, behind the lock.
    ///
    /// # Safety
    /// As [`Bytes::over`].
    pub unsafe fn over(pool: NonNull<[u8]>) -> Self {
        // SAFETY: the caller's contract.
        Self(SpinLock::new(unsafe { B::over(pool) }))
    }
}

// SAFETY: every contestant owns its pool exclusively and keeps no thread-bound state (its raw
// pointers point into that pool), so it may move between threads; the lock serializes every access.
unsafe impl<B: Bytes> Sync for Locked<B> {}

impl<B: Bytes> Shared for Locked<B> {
    #[inline]
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.lock().alloc(layout)
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.lock().free(ptr, layout) }
    }
}

impl Shared for System {
    #[inline]
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: non-zero size.
        NonNull::new(unsafe { std::alloc::System.alloc(layout) })
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { std::alloc::System.dealloc(ptr.as_ptr(), layout) }
    }
}

/// Borrows a `Shared` allocator as a `Bytes` one, for one thread's churn.
pub struct ByRef<'a, S: Shared>(pub &'a S);

impl<S: Shared> Bytes for ByRef<'_, S> {
    unsafe fn over(_pool: NonNull<[u8]>) -> Self {
        unreachable!("built from a reference")
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.0.alloc(layout)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.free(ptr, layout) }
    }
}

/// `threads` threads each run `ops` churn steps (their own slots and sequence) on `shared`;
/// returns the wall time of the whole run.
pub fn time_threads<S: Shared>(shared: &S, threads: usize, ops: usize) -> Duration {
    let sequences: Vec<Vec<Step>> = (0..threads)
        .map(|t| steps(10 + t as u64, WARMUP + ops))
        .collect();
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for seq in &sequences {
            let barrier = &barrier;
            s.spawn(move || {
                let mut b = ByRef(shared);
                let mut slots = Slots::new();
                slots.run(&mut b, &seq[..WARMUP]);
                barrier.wait();
                assert_eq!(slots.run(&mut b, &seq[WARMUP..]), 0, "pool ran out");
                barrier.wait();
                slots.drain(&mut b);
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

// ---------------------------------------------------------------------------------------------
// The arceos benchmark set, through `allocator_api2::alloc::Allocator`

/// Any `Bytes` allocator as an `allocator_api2` allocator (arceos' `AllocatorRc` does the same
/// with `Rc<RefCell<_>>`).
pub struct Api<'a, B: Bytes>(pub &'a RefCell<B>);

impl<B: Bytes> Clone for Api<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Bytes> Copy for Api<'_, B> {}

// SAFETY: blocks come from `B`, live until deallocated; zero-size layouts get a dangling aligned
// pointer that is never passed to `B`.
unsafe impl<B: Bytes> allocator_api2::alloc::Allocator for Api<'_, B> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        if layout.size() == 0 {
            let dangling =
                NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align())).unwrap();
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let ptr = self
            .0
            .borrow_mut()
            .alloc(layout)
            .ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }
    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller's contract.
            unsafe { self.0.borrow_mut().free(ptr, layout) }
        }
    }
}

/// The four workloads of arceos' `benches/collections.rs`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Collections {
    /// Push 3,000,000 `u32` into a growing `Vec`.
    VecPush3M,
    /// 25,000 `Vec<u64>` of capacity 64, freed in shuffled order.
    RandFree25K64,
    /// 7,500 `Vec<u64>` of capacity 520, freed in shuffled order.
    RandFree7500x520,
    /// 50,000 random inserts (80%) and removals (20%) on a map with `Vec<u8>` keys.
    Map50K,
}

impl Collections {
    pub const ALL: [Collections; 4] = [
        Collections::VecPush3M,
        Collections::RandFree25K64,
        Collections::RandFree7500x520,
        Collections::Map50K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Collections::VecPush3M => "vec_push_3M",
            Collections::RandFree25K64 => "vec_rand_free_25K_64",
            Collections::RandFree7500x520 => "vec_rand_free_7500_520",
            Collections::Map50K => "hash_map_50K (btree_map_50K stand-in)",
        }
    }

    /// Runs the workload in `a`; returns a checksum (so nothing is optimized away).
    pub fn run<A: allocator_api2::alloc::Allocator + Copy>(self, a: A) -> u64 {
        use allocator_api2::vec::Vec as AVec;
        let mut rng = Rng::new(SEED ^ 0xa5ce05);
        match self {
            Collections::VecPush3M => {
                let mut v = AVec::new_in(a);
                for _ in 0..3_000_000 {
                    v.push(rng.next_u64() as u32);
                }
                v[v.len() / 2] as u64 + v.len() as u64
            }
            Collections::RandFree25K64 | Collections::RandFree7500x520 => {
                let (n, blk) = if self == Collections::RandFree25K64 {
                    (25_000, 64)
                } else {
                    (7_500, 520)
                };
                let mut vs: Vec<AVec<u64, A>> = (0..n)
                    .map(|i| {
                        let mut v = AVec::with_capacity_in(blk, a);
                        v.push(i as u64);
                        v
                    })
                    .collect();
                // Fisher-Yates with the seeded generator.
                for i in (1..vs.len()).rev() {
                    vs.swap(i, rng.below(i + 1));
                }
                let mut sum = 0;
                for v in vs {
                    sum += v[0];
                    drop(v);
                }
                sum
            }
            Collections::Map50K => {
                let mut map = hashbrown::HashMap::new_in(a);
                let mut keys: Vec<u64> = Vec::new();
                for _ in 0..50_000 {
                    if rng.below(5) == 0 && !keys.is_empty() {
                        let k = keys.swap_remove(rng.below(keys.len()));
                        let mut key = AVec::new_in(a);
                        key.extend_from_slice(format!("key_{k}").as_bytes());
                        map.remove(&key);
                    } else {
                        let v = rng.next_u64();
                        let mut key = AVec::new_in(a);
                        key.extend_from_slice(format!("key_{v}").as_bytes());
                        map.insert(key, v);
                        keys.push(v);
                    }
                }
                map.len() as u64
            }
        }
    }
}

/// Times `workload` with a fresh `B` over the 128 MiB pool, through `Api`.
pub fn time_collections<B: Bytes>(workload: Collections) -> Duration {
    // SAFETY: as in `time_churn`.
    let b = RefCell::new(unsafe { B::over(pool(MAX_POOL)) });
    let start = Instant::now();
    core::hint::black_box(workload.run(Api(&b)));
    start.elapsed()
}

/// Times `workload` on `std`'s global allocator (allocator_api2's `Global`).
pub fn time_collections_global(workload: Collections) -> Duration {
    let start = Instant::now();
    core::hint::black_box(workload.run(allocator_api2::alloc::Global));
    start.elapsed()
}
