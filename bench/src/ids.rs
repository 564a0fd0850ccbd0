//! The ID-allocator contestants and workloads, shared by the showcase's IDs section and
//! `benches/pid.rs`.
//!
//! Every allocator manages 262,144 IDs (`pid_allocator`'s `ORDER = 4096` words of 64 bits) and
//! hands out handles that free their ID when dropped, so all of them run the same code:
//!
//! - ours: `smpalloc::PidAllocator<4096>` with each [`Policy`];
//! - peers: the `pid_allocator` crate (one spin mutex in an `Arc`), `index-set`'s lock-free
//!   `AtomicBitSet::set_next_free_bit`, rcore's `bitmap-allocator` segment tree behind a
//!   `SpinLock`, and a `SpinLock<[u64; 4096]>` lowest-free linear scan (the textbook baseline).

use core::hint::black_box;
use core::ops::Deref;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::time::Instant;

use bitmap_allocator::BitAlloc;
use smpalloc::{Policy, SpinLock};
use smpalloc_testkit::Rng;

/// Words of 64 bits in every allocator (the `ORDER` of both `PidAllocator`s).
pub const ORDER: usize = 4096;
/// IDs managed by every allocator.
pub const CAPACITY: usize = ORDER * 64;
/// IDs held in the dense scenario: the prefix `0..DENSE`, 90% of the capacity.
pub const DENSE: usize = 235_930;
/// IDs freed again in the holes scenario: a seeded-random 10% of the capacity.
pub const HOLES: usize = CAPACITY / 10;
/// Handles each thread keeps in the ring workload.
pub const RING: usize = 16;
/// The seed of every random choice (the holes pattern).
pub const SEED: u64 = 0x5eed_1d5a;

// ---------------------------------------------------------------------------------------------
// The allocators

/// An ID allocator under test: `allocate` returns a handle that frees its ID when dropped.
pub trait Ids: Sync {
    /// The allocation handle; derefs to the ID.
    type Handle<'a>: Deref<Target = usize>
    where
        Self: 'a;

    /// Allocates one ID, `None` when full.
    fn allocate(&self) -> Option<Self::Handle<'_>>;
}

impl Ids for smpalloc::PidAllocator<ORDER> {
    type Handle<'a> = smpalloc::Pid<'a, ORDER>;

    #[inline]
    fn allocate(&self) -> Option<Self::Handle<'_>> {
        smpalloc::PidAllocator::allocate(self)
    }
}

impl Ids for pid_allocator::PidAllocator<ORDER> {
    type Handle<'a> = pid_allocator::Pid<ORDER>;

    #[inline]
    fn allocate(&self) -> Option<Self::Handle<'_>> {
        pid_allocator::PidAllocator::allocate(self)
    }
}

/// A handle-less allocator; [`Held`] gives it a freeing handle.
pub trait RawIds: Sync {
    /// Allocates one ID, `None` when full.
    fn alloc_raw(&self) -> Option<usize>;
    /// Frees an ID returned by `alloc_raw`.
    fn free_raw(&self, id: usize);
}

/// The handle of a [`RawIds`] allocator: frees the ID on drop, like the crates' own handles.
pub struct Held<'a, R: RawIds> {
    id: usize,
    owner: &'a R,
}

impl<R: RawIds> Deref for Held<'_, R> {
    type Target = usize;
    #[inline]
    fn deref(&self) -> &usize {
        &self.id
    }
}

impl<R: RawIds> Drop for Held<'_, R> {
    #[inline]
    fn drop(&mut self) {
        self.owner.free_raw(self.id);
    }
}

impl<R: RawIds> Ids for R {
    type Handle<'a>
        = Held<'a, R>
    where
        R: 'a;

    #[inline]
    fn allocate(&self) -> Option<Self::Handle<'_>> {
        self.alloc_raw().map(|id| Held { id, owner: self })
    }
}

/// `index-set`'s lock-free bitset: `set_next_free_bit` CASes the first non-full word at or
/// after a rotation hint; `remove` is one `fetch_and`.
pub struct IndexSet(index_set::AtomicBitSet<ORDER>);

impl RawIds for IndexSet {
    #[inline]
    fn alloc_raw(&self) -> Option<usize> {
        self.0.set_next_free_bit()
    }

    #[inline]
    fn free_raw(&self, id: usize) {
        let words: &[AtomicUsize] = &self.0;
        index_set::SharedBitSet::remove(words, id);
    }
}

/// rcore's `bitmap-allocator` (a 16-ary segment tree, lowest free first) behind a `SpinLock`.
/// The crate has no 256K type, so this is `BitAlloc1M` with only the first 262,144 bits free.
pub struct RcoreBitmap(SpinLock<bitmap_allocator::BitAlloc1M>);

impl RawIds for RcoreBitmap {
    #[inline]
    fn alloc_raw(&self) -> Option<usize> {
        self.0.lock().alloc()
    }

    #[inline]
    fn free_raw(&self, id: usize) {
        self.0.lock().dealloc(id);
    }
}

/// The baseline: a `SpinLock<[u64; 4096]>`, lowest free ID by a first-fit scan of the words.
pub struct SpinScan(SpinLock<[u64; ORDER]>);

impl RawIds for SpinScan {
    #[inline]
    fn alloc_raw(&self) -> Option<usize> {
        let mut words = self.0.lock();
        let (index, word) = words
            .iter_mut()
            .enumerate()
            .find(|(_, word)| **word != u64::MAX)?;
        let bit = (!*word).trailing_zeros() as usize;
        *word |= 1 << bit;
        Some(index * 64 + bit)
    }

    #[inline]
    fn free_raw(&self, id: usize) {
        self.0.lock()[id / 64] &= !(1 << (id % 64));
    }
}

/// Something to do with a freshly built allocator of any kind (see [`Kind::with`]).
pub trait Visit {
    /// What the visit returns.
    type Out;
    /// Runs on the fresh allocator.
    fn visit<A: Ids>(self, ids: &A) -> Self::Out;
}

/// One contestant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `smpalloc::PidAllocator`, `Policy::NextFit` (the default).
    NextFit,
    /// `smpalloc::PidAllocator`, `Policy::LowestFree`.
    LowestFree,
    /// `smpalloc::PidAllocator`, `Policy::PerCpuNextFit`.
    PerCpuNextFit,
    /// The `pid_allocator` crate.
    PidAllocator,
    /// `index-set`'s `AtomicBitSet`.
    IndexSet,
    /// `bitmap-allocator` behind a `SpinLock`.
    BitmapAllocator,
    /// `SpinLock<[u64; 4096]>` linear scan.
    SpinScan,
}

impl Kind {
    /// Every contestant, ours first.
    pub const ALL: [Kind; 7] = [
        Kind::NextFit,
        Kind::LowestFree,
        Kind::PerCpuNextFit,
        Kind::PidAllocator,
        Kind::IndexSet,
        Kind::BitmapAllocator,
        Kind::SpinScan,
    ];

    /// The contestants of the thread-scaling table.
    pub const SCALING: [Kind; 5] = [
        Kind::NextFit,
        Kind::LowestFree,
        Kind::PerCpuNextFit,
        Kind::PidAllocator,
        Kind::SpinScan,
    ];

    /// The name printed in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NextFit => "smpalloc NextFit",
            Kind::LowestFree => "smpalloc LowestFree",
            Kind::PerCpuNextFit => "smpalloc PerCpuNextFit",
            Kind::PidAllocator => "pid_allocator 0.1.6",
            Kind::IndexSet => "index-set AtomicBitSet",
            Kind::BitmapAllocator => "bitmap-allocator+SpinLock",
            Kind::SpinScan => "SpinLock<[u64]> scan",
        }
    }

    /// A short identifier (criterion benchmark ids).
    pub fn id(self) -> &'static str {
        match self {
            Kind::NextFit => "smpalloc_nextfit",
            Kind::LowestFree => "smpalloc_lowestfree",
            Kind::PerCpuNextFit => "smpalloc_percpu_nextfit",
            Kind::PidAllocator => "pid_allocator",
            Kind::IndexSet => "index_set",
            Kind::BitmapAllocator => "bitmap_allocator",
            Kind::SpinScan => "spinlock_scan",
        }
    }

    /// Whether this is someone else's allocator (ratios compare us with the best of these).
    pub fn is_peer(self) -> bool {
        !matches!(self, Kind::NextFit | Kind::LowestFree | Kind::PerCpuNextFit)
    }

    /// Builds a fresh, empty allocator of this kind and hands it to `visit`.
    pub fn with<V: Visit>(self, visit: V) -> V::Out {
        let ours = |policy| Box::new(smpalloc::PidAllocator::<ORDER>::new().with_policy(policy));
        match self {
            Kind::NextFit => visit.visit(&*ours(Policy::NextFit)),
            Kind::LowestFree => visit.visit(&*ours(Policy::LowestFree)),
            Kind::PerCpuNextFit => visit.visit(&*ours(Policy::PerCpuNextFit)),
            Kind::PidAllocator => visit.visit(&pid_allocator::PidAllocator::<ORDER>::new()),
            Kind::IndexSet => visit.visit(&*Box::new(IndexSet(index_set::AtomicBitSet::new()))),
            Kind::BitmapAllocator => {
                let tree = Box::new(RcoreBitmap(SpinLock::new(
                    bitmap_allocator::BitAlloc1M::DEFAULT,
                )));
                tree.0.lock().insert(0..CAPACITY);
                visit.visit(&*tree)
            }
            Kind::SpinScan => visit.visit(&*Box::new(SpinScan(SpinLock::new([0; ORDER])))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workloads

/// Which state the allocator is in while allocate+drop pairs are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Nothing held.
    Empty,
    /// IDs `0..DENSE` held (90%, a dense prefix).
    Dense,
    /// Everything held but a seeded-random 10% ([`HOLES`] IDs).
    Holes,
}

/// Brings a fresh allocator into the state `fill`; returns the handles it must keep alive.
///
/// The same IDs end up held for every allocator and policy: all IDs are allocated, then the
/// unwanted ones dropped. (Allocating `DENSE` IDs from fresh would not give the prefix with
/// per-CPU cursors, which start spread over the ID space.)
pub fn prepare<A: Ids>(ids: &A, fill: Fill) -> Vec<A::Handle<'_>> {
    if fill == Fill::Empty {
        return Vec::new();
    }
    let mut held: Vec<_> = (0..CAPACITY)
        .map(|_| ids.allocate().expect("fill: full too early"))
        .collect();
    assert!(
        ids.allocate().is_none(),
        "fill: allocator holds more than {CAPACITY} IDs"
    );
    match fill {
        Fill::Empty => unreachable!(),
        Fill::Dense => held.retain(|h| **h < DENSE),
        Fill::Holes => {
            let holes = hole_mask();
            held.retain(|h| !holes[**h]);
        }
    }
    let expected = if fill == Fill::Dense {
        DENSE
    } else {
        CAPACITY - HOLES
    };
    assert_eq!(held.len(), expected, "fill: wrong number of IDs held");
    held
}

/// `mask[id]` is true for the [`HOLES`] IDs the holes scenario frees: a seeded partial
/// Fisher-Yates shuffle, the same on every run.
pub fn hole_mask() -> Vec<bool> {
    let mut rng = Rng::new(SEED);
    let mut order: Vec<usize> = (0..CAPACITY).collect();
    for i in 0..HOLES {
        let j = i + rng.below(CAPACITY - i);
        order.swap(i, j);
    }
    let mut mask = vec![false; CAPACITY];
    for &id in &order[..HOLES] {
        mask[id] = true;
    }
    mask
}

/// One measured operation: allocate an ID and drop its handle at once.
#[inline(always)]
pub fn alloc_drop<A: Ids>(ids: &A) -> usize {
    let handle = ids.allocate().expect("allocator full");
    black_box(*handle)
}

/// Times `ops` allocate+drop pairs.
pub fn time_pairs<A: Ids>(ids: &A, ops: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..ops {
        alloc_drop(ids);
    }
    start.elapsed()
}

/// One run of the ring workload.
#[derive(Debug, Clone, Copy)]
pub struct RingRun {
    /// Wall time from the first thread's start to the last thread's finish.
    pub elapsed: Duration,
    /// The threads' CPU time (summed) over `elapsed`: how many CPUs were really busy with the
    /// run. Near the thread count when the threads ran side by side; near 1 when the scheduler
    /// took turns on one CPU (another process had the other). `None` where per-thread CPU
    /// time is not measured (only 64-bit Linux is).
    pub cpus: Option<f64>,
}

/// Nanoseconds of CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), on 64-bit
/// Linux; `None` elsewhere.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_ns() -> Option<u64> {
    /// `struct timespec` on 64-bit Linux.
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        /// POSIX `clock_gettime`, from the C library std already links.
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` has this signature on 64-bit Linux, and `time` is a valid,
    // writable `struct timespec` for the duration of the call.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (status == 0).then(|| time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64)
}

/// Nanoseconds of CPU time the calling thread has used: not measured on this platform.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

/// The ring workload: `threads` threads share `ids`; each keeps its own ring of [`RING`]
/// handles, and each operation allocates a handle into the ring, dropping the oldest one.
/// The threads do `ceil(ops / threads)` operations each.
///
/// The threads start together: each waits (yielding) until all have arrived, so that none runs
/// alone while the others are still being spawned.
pub fn time_ring<A: Ids>(ids: &A, threads: usize, ops: u64) -> RingRun {
    let per_thread = ops.div_ceil(threads as u64);
    let arrived = AtomicUsize::new(0);
    let spans: Vec<(Instant, Instant, Option<u64>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut ring: [Option<A::Handle<'_>>; RING] = core::array::from_fn(|_| None);
                    arrived.fetch_add(1, Ordering::Relaxed);
                    while arrived.load(Ordering::Relaxed) < threads {
                        std::thread::yield_now();
                    }
                    let cpu_start = thread_cpu_ns();
                    let start = Instant::now();
                    for i in 0..per_thread {
                        let handle = ids.allocate().expect("allocator full");
                        ring[(i % RING as u64) as usize] = Some(black_box(handle));
                    }
                    let end = Instant::now();
                    let cpu = thread_cpu_ns()
                        .zip(cpu_start)
                        .map(|(end, start)| end - start);
                    drop(ring);
                    (start, end, cpu)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("ring worker panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|span| span.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|span| span.1)
        .max()
        .expect("at least one thread");
    let elapsed = end - start;
    let cpu_ns: Option<u64> = spans.iter().map(|span| span.2).sum();
    let cpus = cpu_ns.map(|ns| ns as f64 / 1e9 / elapsed.as_secs_f64().max(1e-12));
    RingRun { elapsed, cpus }
}
