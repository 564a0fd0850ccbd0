//! The SMP-heap contestants and workloads, shared by the showcase's heap section and
//! `benches/heap.rs`; they reuse [`crate::bytes`]' pool, single-threaded contestants and arceos
//! collection workloads.
//!
//! Every contestant is used as a `GlobalAlloc + Sync` shared by the threads of a run:
//! - ours: `smpalloc::heap::StdHeap` (per-CPU magazines over `SystemPages`, one static for the
//!   whole process, as `#[global_allocator]` would be) and `TlsfHeap<2>` (TLSF arenas behind spin
//!   locks, over the pool);
//! - peers that take memory from the OS: `std::alloc::System` (glibc), `mimalloc::MiMalloc`,
//!   `tikv_jemallocator::Jemalloc` (jemalloc 5.3, its symbols prefixed, so it does not replace
//!   glibc's `malloc`), `snmalloc_rs::SnMalloc` (snmalloc 0.7), rlsf's `GlobalTlsf` (one pthread
//!   mutex, pools from `mmap`);
//! - `no_std` peers over the pool (128 MiB, the same leaked buffer for each in turn, a fresh
//!   allocator per run): talc 4 behind `smpalloc::SpinLock`, `buddy_system_allocator::LockedHeap`
//!   (its own spin mutex), `linked_list_allocator::LockedHeap` (its own spin lock), axallocator's
//!   `SlabByteAllocator` and `TlsfByteAllocator` behind `smpalloc::SpinLock`.
//!
//! Workloads (each a seeded sequence, the same for every contestant):
//! - [`churn`]: per thread a live set of 1,000 blocks of 8..=256 B; each operation replaces a
//!   random one (allocate the new block, then free the old);
//! - [`producer_consumer`]: per pair of threads, one allocates blocks of 16..=512 B and hands
//!   them through a lock-free single-producer single-consumer ring of pointers (no allocation of
//!   its own) to the other, which frees them;
//! - [`larson`]: a shared live set of 1,000 atomic pointers per thread; each operation allocates
//!   8..=1,024 B, swaps it into a random slot and frees what was there (blocks cross threads);
//! - [`arceos`]: arceos' collection benchmarks ([`crate::bytes::Collections`]) through
//!   `allocator_api2::Allocator`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::RefCell;
use core::hint::black_box;
use core::panic::AssertUnwindSafe;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::panic::{catch_unwind, resume_unwind};
use std::sync::Barrier;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use smpalloc::TlsfHeap;
use smpalloc::heap::{StdHeap, SystemPages};
use smpalloc_testkit::Rng;

use crate::bytes::{self as bytes, AxSlab, AxTlsf, Bytes, Collections, Locked, Talc};

/// Live blocks per thread of [`churn`] and [`larson`].
pub const LIVE: usize = 1_000;
/// Seed of every random choice here.
const SEED: u64 = 0x5eed_4ea9;

// ---------------------------------------------------------------------------------------------
// The contestants

// SAFETY: `Locked` serializes every call into `B`; blocks come from `B`'s pool and stay valid
// until freed; a failed allocation is a null pointer.
unsafe impl<B: Bytes> GlobalAlloc for Locked<B> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract: `ptr` came from `alloc(layout)` (so it is non-null).
        unsafe { self.0.lock().free(NonNull::new_unchecked(ptr), layout) }
    }
}

/// Our heap: one process-wide static, as `#[global_allocator]` would be.
static OURS: StdHeap = StdHeap::new(SystemPages::new());
/// rlsf's global allocator (memory from `mmap`, one pthread mutex).
static RLSF: rlsf::GlobalTlsf = rlsf::GlobalTlsf::new();

/// Which contestant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contestant {
    Ours,
    OursTlsfHeap,
    System,
    Mimalloc,
    Jemalloc,
    Snmalloc,
    Rlsf,
    Talc,
    Buddy,
    LinkedList,
    AxSlab,
    AxTlsf,
}

/// Runs something generic over one contestant.
pub trait Visit {
    type Out;
    fn visit<A: GlobalAlloc + Sync>(self, a: &A) -> Self::Out;
}

impl Contestant {
    /// The contestants of the threaded workloads.
    pub const THREADED: [Contestant; 11] = [
        Contestant::Ours,
        Contestant::OursTlsfHeap,
        Contestant::System,
        Contestant::Mimalloc,
        Contestant::Jemalloc,
        Contestant::Snmalloc,
        Contestant::Rlsf,
        Contestant::Talc,
        Contestant::Buddy,
        Contestant::LinkedList,
        Contestant::AxSlab,
    ];
    /// The contestants of the larson run that oversubscribes the CPUs (32 threads):
    /// [`THREADED`](Self::THREADED) less two whose cost grows with the 32,000-block live set,
    /// not with the threads: linked_list_allocator scans its free list (about 0.1 ms per
    /// operation) and buddy_system_allocator's frees search a linked free list for the buddy to
    /// merge with (freeing the live set after each run takes it 4 to 10 s).
    pub const OVERSUBSCRIBED: [Contestant; 9] = [
        Contestant::Ours,
        Contestant::OursTlsfHeap,
        Contestant::System,
        Contestant::Mimalloc,
        Contestant::Jemalloc,
        Contestant::Snmalloc,
        Contestant::Rlsf,
        Contestant::Talc,
        Contestant::AxSlab,
    ];
    /// The general-purpose peers (the ones a program would pick as its global allocator).
    pub const GENERAL: [Contestant; 4] = [
        Contestant::Mimalloc,
        Contestant::Jemalloc,
        Contestant::Snmalloc,
        Contestant::System,
    ];
    /// The contestants of the arceos collection set.
    pub const ARCEOS: [Contestant; 8] = [
        Contestant::Ours,
        Contestant::OursTlsfHeap,
        Contestant::AxSlab,
        Contestant::AxTlsf,
        Contestant::System,
        Contestant::Mimalloc,
        Contestant::Jemalloc,
        Contestant::Snmalloc,
    ];
    /// The contestants whose resident memory a probe process measures.
    pub const PROBED: [Contestant; 5] = [
        Contestant::Ours,
        Contestant::System,
        Contestant::Mimalloc,
        Contestant::Jemalloc,
        Contestant::Snmalloc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contestant::Ours => "smpalloc StdHeap",
            Contestant::OursTlsfHeap => "smpalloc TlsfHeap<2>",
            Contestant::System => "glibc (std System)",
            Contestant::Mimalloc => "mimalloc 0.1",
            Contestant::Jemalloc => "jemalloc (tikv 0.7)",
            Contestant::Snmalloc => "snmalloc-rs 0.7",
            Contestant::Rlsf => "rlsf 0.2 GlobalTlsf",
            Contestant::Talc => "talc 4 (SpinLock)",
            Contestant::Buddy => "buddy_system_alloc 0.13",
            Contestant::LinkedList => "linked_list_alloc 0.10",
            Contestant::AxSlab => "axallocator::slab 0.2",
            Contestant::AxTlsf => "axallocator::TLSF 0.2",
        }
    }

    /// A short name for the command line of a probe.
    pub fn key(self) -> &'static str {
        match self {
            Contestant::Ours => "ours",
            Contestant::OursTlsfHeap => "tlsfheap",
            Contestant::System => "system",
            Contestant::Mimalloc => "mimalloc",
            Contestant::Jemalloc => "jemalloc",
            Contestant::Snmalloc => "snmalloc",
            Contestant::Rlsf => "rlsf",
            Contestant::Talc => "talc",
            Contestant::Buddy => "buddy",
            Contestant::LinkedList => "linkedlist",
            Contestant::AxSlab => "axslab",
            Contestant::AxTlsf => "axtlsf",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        [Contestant::AxTlsf]
            .into_iter()
            .chain(Contestant::THREADED)
            .find(|c| c.key() == key)
    }

    pub fn ours(self) -> bool {
        matches!(self, Contestant::Ours | Contestant::OursTlsfHeap)
    }

    /// A no_std peer behind one lock (the targets of the 2-thread churn name them).
    pub fn locked_peer(self) -> bool {
        matches!(
            self,
            Contestant::Rlsf
                | Contestant::Talc
                | Contestant::Buddy
                | Contestant::LinkedList
                | Contestant::AxSlab
                | Contestant::AxTlsf
        )
    }

    /// Operations to run of a workload sized `ops` for the fast contestants: the free-list
    /// scanning linked_list_allocator gets a tenth (it takes microseconds per operation).
    pub fn scaled(self, ops: usize) -> usize {
        if self == Contestant::LinkedList {
            (ops / 10).max(1)
        } else {
            ops
        }
    }

    /// Behind one spin lock that every operation takes (no lock-free or per-CPU front).
    pub fn spins(self) -> bool {
        matches!(
            self,
            Contestant::OursTlsfHeap
                | Contestant::Talc
                | Contestant::Buddy
                | Contestant::LinkedList
                | Contestant::AxSlab
                | Contestant::AxTlsf
        )
    }

    /// Operations to run of an oversubscribed workload (more threads than CPUs) sized `ops`:
    /// [`scaled`](Self::scaled), and a tenth of that for the contestants that [`spin`](Self::spins)
    /// (a preempted lock holder makes each of their operations take microseconds).
    pub fn scaled_oversubscribed(self, ops: usize) -> usize {
        let ops = self.scaled(ops);
        if self.spins() { (ops / 10).max(1) } else { ops }
    }

    /// Calls `v` with this contestant: a process-wide one, or a fresh one over the pool.
    pub fn with<V: Visit>(self, v: V) -> V::Out {
        let pool = || bytes::pool(bytes::MAX_POOL);
        match self {
            Contestant::Ours => v.visit(&OURS),
            Contestant::OursTlsfHeap => {
                let heap: Box<TlsfHeap<2>> = Box::default();
                // SAFETY: the pool is this heap's alone until it is dropped below.
                unsafe { heap.add_pool(pool()).unwrap() };
                v.visit(&*heap)
            }
            Contestant::System => v.visit(&std::alloc::System),
            Contestant::Mimalloc => v.visit(&mimalloc::MiMalloc),
            Contestant::Jemalloc => v.visit(&tikv_jemallocator::Jemalloc),
            Contestant::Snmalloc => v.visit(&snmalloc_rs::SnMalloc),
            Contestant::Rlsf => v.visit(&RLSF),
            Contestant::Talc => {
                // SAFETY: the pool is this allocator's alone until it is dropped below.
                let talc = unsafe { Locked::<Talc>::over(pool()) };
                v.visit(&talc)
            }
            Contestant::AxSlab => {
                // SAFETY: as above.
                let slab = unsafe { Locked::<AxSlab>::over(pool()) };
                v.visit(&slab)
            }
            Contestant::AxTlsf => {
                // SAFETY: as above.
                let tlsf = unsafe { Locked::<AxTlsf>::over(pool()) };
                v.visit(&tlsf)
            }
            Contestant::Buddy => {
                let heap = Box::new(buddy_system_allocator::LockedHeap::<32>::new());
                let pool = pool();
                // SAFETY: as above.
                unsafe {
                    heap.lock()
                        .init(pool.cast::<u8>().as_ptr().expose_provenance(), pool.len())
                };
                v.visit(&*heap)
            }
            Contestant::LinkedList => {
                let heap = linked_list_allocator::LockedHeap::empty();
                let pool = pool();
                // SAFETY: as above.
                unsafe { heap.lock().init(pool.cast::<u8>().as_ptr(), pool.len()) };
                v.visit(&heap)
            }
        }
    }
}

/// The most bytes our heap has held from the OS at once (its `SystemPages` count them).
pub fn ours_peak_bytes() -> usize {
    OURS.pages().peak_bytes()
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// Runs `body(thread)` on `threads` threads released together; returns the wall time from the
/// first thread's start after the release to the last thread's end. `prepare(thread)` runs on
/// each thread before the release. The threads read the clock themselves: with more threads
/// than CPUs the thread that spawned them may run long after the release, so its own clock
/// would miss the start of the run.
fn timed_threads<T>(
    threads: usize,
    prepare: impl Fn(usize) -> T + Sync,
    body: impl Fn(usize, T) + Sync,
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    let epoch = Instant::now();
    // Nanoseconds since `epoch`: the earliest start and the latest end of any thread.
    let (first_start, last_end) = (AtomicU64::new(u64::MAX), AtomicU64::new(0));
    let since_epoch = || epoch.elapsed().as_nanos() as u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, prepare, body) = (&barrier, &prepare, &body);
            let (first_start, last_end, since_epoch) = (&first_start, &last_end, &since_epoch);
            s.spawn(move || {
                // A panic (a failed allocation) still reaches both barriers, so the other
                // threads finish and the scope re-raises it instead of hanging.
                let state = catch_unwind(AssertUnwindSafe(|| prepare(t)));
                barrier.wait();
                first_start.fetch_min(since_epoch(), Ordering::Relaxed);
                let done =
                    state.and_then(|state| catch_unwind(AssertUnwindSafe(|| body(t, state))));
                last_end.fetch_max(since_epoch(), Ordering::Relaxed);
                barrier.wait();
                if let Err(panic) = done {
                    resume_unwind(panic);
                }
            });
        }
        barrier.wait();
        barrier.wait();
    });
    // The second barrier orders every thread's stores before this point.
    let (start, end) = (
        first_start.load(Ordering::Relaxed),
        last_end.load(Ordering::Relaxed),
    );
    Duration::from_nanos(end.saturating_sub(start))
}

/// A layout of `size` bytes aligned to 8 (sizes here are small and non-zero).
#[inline]
fn layout(size: usize) -> Layout {
    // SAFETY: 8 is a power of two; sizes are at most a few KiB.
    unsafe { Layout::from_size_align_unchecked(size, 8) }
}

/// Allocates `size` bytes from `a` and writes the first byte (as a program would), panicking
/// on failure (the pools are far larger than any live set here).
#[inline]
fn alloc_touch<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    // SAFETY: non-zero size.
    let ptr = unsafe { a.alloc(layout(size)) };
    assert!(!ptr.is_null(), "allocation of {size} B failed");
    // SAFETY: at least one byte was allocated.
    unsafe { ptr.write(size as u8) };
    ptr
}

/// What a threaded run found.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Wall time of the timed part.
    pub elapsed: Duration,
    /// Operations of all threads together.
    pub ops: usize,
    /// The largest number of requested bytes live at once (summed over the threads' peaks).
    pub peak_live: usize,
}

impl Run {
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.ops as f64
    }
}

/// Small-object churn: each of `threads` threads fills its own live set of [`LIVE`] blocks of
/// 8..=256 B, then `ops` times allocates a block of a random size and puts it in a random slot,
/// freeing the block that was there; the live sets are freed after the timed part.
pub fn churn<A: GlobalAlloc + Sync>(a: &A, threads: usize, ops: usize) -> Run {
    let peaks: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
    let elapsed = timed_threads(
        threads,
        |t| {
            let mut rng = Rng::new(SEED ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let live: Vec<(*mut u8, usize)> = (0..LIVE)
                .map(|_| {
                    let size = 8 + rng.below(249);
                    (alloc_touch(a, size), size)
                })
                .collect();
            (rng, live)
        },
        |t, (mut rng, mut live)| {
            let mut bytes: usize = live.iter().map(|&(_, size)| size).sum();
            let mut peak = bytes;
            for _ in 0..ops {
                let slot = &mut live[rng.below(LIVE)];
                let size = 8 + rng.below(249);
                let (old, old_size) = core::mem::replace(slot, (alloc_touch(a, size), size));
                bytes += size;
                peak = peak.max(bytes);
                // SAFETY: allocated by `a` with this layout, freed once.
                unsafe { a.dealloc(old, layout(old_size)) };
                bytes -= old_size;
            }
            peaks[t].store(peak, Ordering::Relaxed);
            for (ptr, size) in live {
                // SAFETY: as above.
                unsafe { a.dealloc(ptr, layout(size)) };
            }
        },
    );
    Run {
        elapsed,
        ops: threads * ops,
        peak_live: peaks.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
    }
}

/// A bounded lock-free single-producer single-consumer ring of block addresses: the producer
/// writes a slot, then publishes it with a release store of `tail`; the consumer acquires
/// `tail`, reads the slot, then frees it with a release store of `head`. It never allocates.
struct Ring {
    slots: Box<[AtomicUsize]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    const CAPACITY: usize = 256;

    fn new() -> Self {
        Self {
            slots: (0..Self::CAPACITY).map(|_| AtomicUsize::new(0)).collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Waits while the ring is full or empty: spins a little, then yields (the threads may
    /// share a CPU).
    fn wait(spins: &mut u32) {
        *spins += 1;
        if *spins < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    /// Producer side.
    fn push(&self, value: usize) {
        let tail = self.tail.load(Ordering::Relaxed);
        let mut spins = 0;
        while tail - self.head.load(Ordering::Acquire) == Self::CAPACITY {
            Self::wait(&mut spins);
        }
        self.slots[tail % Self::CAPACITY].store(value, Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
    }

    /// Consumer side.
    fn pop(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let mut spins = 0;
        while self.tail.load(Ordering::Acquire) == head {
            Self::wait(&mut spins);
        }
        let value = self.slots[head % Self::CAPACITY].load(Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
        value
    }
}

/// Which threaded workload, with its operations per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// [`churn`] on `threads` threads, `ops` operations each.
    Churn { threads: usize, ops: usize },
    /// [`producer_consumer`]: `pairs` pairs, `blocks` blocks per pair.
    ProducerConsumer { pairs: usize, blocks: usize },
    /// [`larson`] on `threads` threads, `ops` operations each.
    Larson { threads: usize, ops: usize },
}

impl Visit for Workload {
    type Out = Run;
    fn visit<A: GlobalAlloc + Sync>(self, a: &A) -> Run {
        match self {
            Workload::Churn { threads, ops } => churn(a, threads, ops),
            Workload::ProducerConsumer { pairs, blocks } => producer_consumer(a, pairs, blocks),
            Workload::Larson { threads, ops } => larson(a, threads, ops),
        }
    }
}

impl Workload {
    /// The same workload with the operations `contestant` runs (see `Contestant::scaled`).
    pub fn for_contestant(self, contestant: Contestant) -> Self {
        match self {
            Workload::Churn { threads, ops } => Workload::Churn {
                threads,
                ops: contestant.scaled(ops),
            },
            Workload::ProducerConsumer { pairs, blocks } => Workload::ProducerConsumer {
                pairs,
                blocks: contestant.scaled(blocks),
            },
            Workload::Larson { threads, ops } => Workload::Larson {
                threads,
                ops: contestant.scaled(ops),
            },
        }
    }

    /// The probe's command-line name.
    pub fn key(self) -> String {
        match self {
            Workload::Churn { threads, ops } => format!("churn:{threads}:{ops}"),
            Workload::ProducerConsumer { pairs, blocks } => format!("pc:{pairs}:{blocks}"),
            Workload::Larson { threads, ops } => format!("larson:{threads}:{ops}"),
        }
    }

    /// The workload a [`key`](Self::key) names.
    pub fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.split(':');
        let (name, threads, ops) = (parts.next()?, parts.next()?, parts.next()?);
        let (threads, ops) = (threads.parse().ok()?, ops.parse().ok()?);
        match name {
            "churn" => Some(Workload::Churn { threads, ops }),
            "pc" => Some(Workload::ProducerConsumer {
                pairs: threads,
                blocks: ops,
            }),
            "larson" => Some(Workload::Larson { threads, ops }),
            _ => None,
        }
    }
}

/// Producer/consumer: `pairs` pairs of threads, each with its own `Ring`; the even thread of
/// a pair allocates `blocks` blocks of 16..=512 B and pushes them into the ring, the odd one pops
/// and frees them (it replays the same seeded sizes for the layouts). One pair is the showcase's
/// row; four pairs (8 threads) oversubscribe a 2-CPU machine on purpose.
pub fn producer_consumer<A: GlobalAlloc + Sync>(a: &A, pairs: usize, blocks: usize) -> Run {
    let rings: Vec<Ring> = (0..pairs).map(|_| Ring::new()).collect();
    let size_of = |rng: &mut Rng| 16 + rng.below(497);
    let elapsed = timed_threads(
        2 * pairs,
        |t| Rng::new(SEED ^ 0x9c ^ (((t / 2) as u64) << 8)),
        |t, mut rng| {
            let ring = &rings[t / 2];
            for _ in 0..blocks {
                let size = size_of(&mut rng);
                if t % 2 == 0 {
                    ring.push(alloc_touch(a, size).expose_provenance());
                } else {
                    let ptr = core::ptr::with_exposed_provenance_mut::<u8>(ring.pop());
                    // SAFETY: the producer allocated it with this layout (the same seeded
                    // sizes) and handed it over through the ring; it is freed once.
                    unsafe {
                        black_box(ptr.read());
                        a.dealloc(ptr, layout(size));
                    }
                }
            }
        },
    );
    Run {
        elapsed,
        ops: pairs * blocks,
        peak_live: 0, // not tracked
    }
}

/// Larson-style server churn: a shared live set of [`LIVE`] atomic pointers per thread, filled
/// by the calling thread; each of `threads` threads `ops` times allocates 8..=1,024 B (its size
/// in its first word), swaps it into a random slot and frees the block it took out, wherever
/// that came from. The caller frees the live set at the end.
pub fn larson<A: GlobalAlloc + Sync>(a: &A, threads: usize, ops: usize) -> Run {
    let mut rng = Rng::new(SEED ^ 0x1a75);
    let new_block = |rng: &mut Rng| {
        let size = 8 + rng.below(1017);
        let ptr = alloc_touch(a, size);
        // SAFETY: at least 8 bytes, aligned to 8.
        unsafe { ptr.cast::<usize>().write(size) };
        ptr
    };
    let slots: Vec<AtomicPtr<u8>> = (0..LIVE * threads)
        .map(|_| AtomicPtr::new(new_block(&mut rng)))
        .collect();
    let elapsed = timed_threads(
        threads,
        |t| Rng::new(SEED ^ (t as u64 + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        |_, mut rng| {
            for _ in 0..ops {
                let fresh = new_block(&mut rng);
                let slot = &slots[rng.below(slots.len())];
                // AcqRel: release our block's size word to the thread that takes it out;
                // acquire the size word of the block we take out.
                let old = slot.swap(fresh, Ordering::AcqRel);
                // SAFETY: every slot holds a live block whose first word is its size; the swap
                // made us its only owner, so it is freed once.
                unsafe { a.dealloc(old, layout(old.cast::<usize>().read())) };
            }
        },
    );
    let peak_live = slots
        .into_iter()
        .map(|slot| {
            let ptr = slot.into_inner();
            // SAFETY: as above; the threads are done.
            let size = unsafe { ptr.cast::<usize>().read() };
            // SAFETY: as above.
            unsafe { a.dealloc(ptr, layout(size)) };
            size
        })
        .sum();
    Run {
        elapsed,
        ops: threads * ops,
        peak_live,
    }
}

/// A `GlobalAlloc` borrowed as a single-threaded [`Bytes`] contestant (for the collections).
pub struct ByGlobal<'a, A: GlobalAlloc>(pub &'a A);

impl<A: GlobalAlloc> Bytes for ByGlobal<'_, A> {
    unsafe fn over(_pool: NonNull<[u8]>) -> Self {
        unreachable!("built from a reference")
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: the collections never ask for zero bytes (`Api` answers those itself).
        NonNull::new(unsafe { self.0.alloc(layout) })
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { self.0.dealloc(ptr.as_ptr(), layout) }
    }
}

/// Times arceos' collection workload on `a` through `allocator_api2::Allocator` (the same
/// `Api` adapter for every contestant).
pub fn arceos<A: GlobalAlloc>(a: &A, workload: Collections) -> Duration {
    let b = RefCell::new(ByGlobal(a));
    let start = Instant::now();
    black_box(workload.run(bytes::Api(&b)));
    start.elapsed()
}
