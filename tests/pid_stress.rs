//! Multithreaded stress tests: threads share one `PidAllocator` (every `Policy`), each
//! allocating into a ring and dropping the oldest entry, with occasional `allocate_specific`,
//! raw IDs and `alloc_id` / `dealloc_id` ranges. A shared ownership table (one `AtomicU8` per
//! ID) catches any ID owned twice at the moment it happens. Afterwards every count must be
//! exact, `check()` must pass, and every ID must be allocatable again. Also a `SpinLock`
//! mutual-exclusion test.
//!
//! Operation counts are 4x smaller in debug builds (the default `cargo test`; about 1.5
//! million operations in all there), so that the whole file runs in a few seconds;
//! `cargo test --release --test stress` runs the full counts.

mod support;

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Barrier;
use std::thread;

use smpalloc::bitmap::summary_words;
use smpalloc::{AllocError, BaseAllocator, Pid, PidAllocator, Policy, SpinLock};
use support::Rng;

/// Divides the operation counts in debug builds.
const SCALE: usize = if cfg!(debug_assertions) { 4 } else { 1 };

const POLICIES: [Policy; 3] = [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree];

/// One owned thing in a thread's ring.
enum Held<'a, const O: usize, const S: usize> {
    Handle(Pid<'a, O, S>),
    Raw(usize),
    Range(usize, usize),
}

/// Who owns which ID: 0 = nobody, 1 = some thread.
struct Table(Vec<AtomicU8>);

impl Table {
    fn new(capacity: usize) -> Self {
        Self((0..capacity).map(|_| AtomicU8::new(0)).collect())
    }

    /// Marks `id` owned; panics if it already was (the allocator handed out a duplicate).
    #[track_caller]
    fn claim(&self, id: usize, how: &str) {
        assert_eq!(
            self.0[id].swap(1, Ordering::AcqRel),
            0,
            "duplicate: {id} from {how} is already owned"
        );
    }

    /// Marks `id` free; panics if it was not owned.
    #[track_caller]
    fn release(&self, id: usize) {
        assert_eq!(
            self.0[id].swap(0, Ordering::AcqRel),
            1,
            "{id} released but not owned"
        );
    }

    fn owned(&self) -> usize {
        self.0
            .iter()
            .filter(|o| o.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// How one stress run is shaped.
#[derive(Clone, Copy, Debug)]
struct Shape {
    threads: usize,
    ops_per_thread: usize,
    ring: usize,
    /// Whether `allocate()` may answer `None` (near exhaustion). Otherwise `None` is a
    /// failure (after a few retries, since a search racing many frees may miss).
    none_allowed: bool,
    /// The largest `alloc_id` count.
    max_range: usize,
}

/// Frees one ring entry, clearing the table first.
fn free_held<const O: usize, const S: usize>(
    alloc: &PidAllocator<O, S>,
    table: &Table,
    held: Held<'_, O, S>,
) {
    match held {
        Held::Handle(pid) => {
            table.release(*pid);
            drop(pid);
        }
        Held::Raw(id) => {
            table.release(id);
            assert_eq!(alloc.free(id), Ok(()), "freeing raw {id}");
        }
        Held::Range(start, count) => {
            for id in start..start + count {
                table.release(id);
            }
            assert_eq!(
                alloc.dealloc_id(start, count),
                Ok(()),
                "freeing {start}+{count}"
            );
        }
    }
}

/// What the threads of one run did.
#[derive(Debug, Default)]
struct Counts {
    /// `allocate()` / `allocate_raw()` calls that answered `None`.
    nones: AtomicUsize,
    /// Ring entries obtained (handles, raw IDs, ranges).
    taken: AtomicUsize,
}

/// One thread's work; adds to `counts`.
fn worker<'a, const O: usize, const S: usize>(
    alloc: &'a PidAllocator<O, S>,
    table: &Table,
    shape: Shape,
    seed: u64,
    counts: &Counts,
) {
    let mut rng = Rng::new(seed);
    let mut ring: VecDeque<Held<'a, O, S>> = VecDeque::with_capacity(shape.ring + 1);
    let (lo, hi) = (alloc.reserved(), alloc.reserved() + alloc.size());
    let mut nones = 0;
    for _ in 0..shape.ops_per_thread {
        let roll = rng.below(100);
        // `allocate()` / `allocate_raw()`, retried a few times unless `None` is allowed.
        let mut retry = |f: &dyn Fn() -> Option<Held<'a, O, S>>| {
            let mut got = f();
            let mut tries = 0;
            while got.is_none() && !shape.none_allowed && tries < 8 {
                thread::yield_now();
                got = f();
                tries += 1;
            }
            if got.is_none() {
                assert!(
                    shape.none_allowed,
                    "allocation found nothing, {} IDs free",
                    alloc.available()
                );
                nones += 1;
            }
            got
        };
        let got = if roll < 70 {
            retry(&|| {
                alloc.allocate().map(|pid| {
                    table.claim(*pid, "allocate");
                    Held::Handle(pid)
                })
            })
        } else if roll < 80 {
            retry(&|| {
                alloc.allocate_raw().map(|id| {
                    table.claim(id, "allocate_raw");
                    Held::Raw(id)
                })
            })
        } else if roll < 88 {
            let id = lo + rng.below(hi - lo);
            alloc.allocate_specific(id).ok().map(|pid| {
                assert_eq!(*pid, id);
                table.claim(id, "allocate_specific");
                Held::Handle(pid)
            })
        } else if roll < 92 {
            // A raw ID turned back into a handle.
            retry(&|| {
                alloc.allocate().map(|pid| {
                    table.claim(*pid, "allocate + into_raw");
                    let id = pid.into_raw();
                    // SAFETY: `id` was just detached from its only handle; nobody else frees
                    // it.
                    Held::Handle(unsafe { Pid::from_raw(alloc, id) })
                })
            })
        } else {
            let count = 1 + rng.below(shape.max_range);
            let align = 1 << rng.below(4);
            match alloc.alloc_id(count, align) {
                Ok(start) => {
                    assert_eq!(start % align, 0, "alloc_id alignment");
                    for id in start..start + count {
                        table.claim(id, "alloc_id");
                    }
                    Some(Held::Range(start, count))
                }
                Err(AllocError::NoMemory) => None,
                Err(e) => panic!("alloc_id({count}, {align}): {e:?}"),
            }
        };
        if got.is_some() {
            counts.taken.fetch_add(1, Ordering::Relaxed);
        }
        ring.extend(got);
        while ring.len() > shape.ring {
            let oldest = ring.pop_front().expect("non-empty");
            free_held(alloc, table, oldest);
        }
    }
    for held in ring {
        free_held(alloc, table, held);
    }
    counts.nones.fetch_add(nones, Ordering::Relaxed);
}

/// Runs `shape.threads` workers on `alloc`, then checks the end state: nothing owned, exact
/// counts, `check()`, and every managed ID allocatable again.
fn stress<const O: usize, const S: usize>(alloc: &PidAllocator<O, S>, shape: Shape) -> Counts {
    let capacity = PidAllocator::<O, S>::CAPACITY;
    let table = Table::new(capacity);
    let counts = Counts::default();
    // All threads start together, so that they really overlap.
    let start = Barrier::new(shape.threads);
    thread::scope(|scope| {
        for t in 0..shape.threads {
            let (table, counts, start) = (&table, &counts, &start);
            scope.spawn(move || {
                start.wait();
                worker(alloc, table, shape, 0x5EED_0000 + t as u64, counts);
            });
        }
    });
    let context = format!("{:?} {shape:?} {counts:?}", alloc.policy());
    // The threads did real work: most operations allocate; near exhaustion, `None` is only
    // possible once (nearly) every ID was taken.
    let taken = counts.taken.load(Ordering::Relaxed);
    if shape.none_allowed {
        assert!(taken * shape.max_range >= alloc.size(), "{context}");
    } else {
        assert!(
            taken >= shape.threads * shape.ops_per_thread / 2,
            "{context}"
        );
    }
    assert_eq!(table.owned(), 0, "{context}");
    assert_eq!(alloc.used(), 0, "{context}: every ID freed");
    assert_eq!(alloc.available(), alloc.size(), "{context}");
    assert_eq!(alloc.check(), Ok(()), "{context}");

    // Every managed ID is allocatable again, each exactly once.
    let mut pids = Vec::with_capacity(alloc.size());
    while let Some(pid) = alloc.allocate() {
        table.claim(*pid, "the final fill");
        pids.push(pid);
    }
    assert_eq!(pids.len(), alloc.size(), "{context}: final fill");
    assert_eq!(alloc.alloc_id(1, 1), Err(AllocError::NoMemory));
    assert_eq!(alloc.check(), Ok(()), "{context}: full");
    for pid in pids {
        table.release(*pid);
    }
    assert_eq!(alloc.used(), 0, "{context}");
    assert_eq!(alloc.check(), Ok(()), "{context}");
    counts
}

/// 2 and 4 threads, each policy, 1,024 IDs (16 words): at most 4 x 32 ring entries of up to
/// 4 IDs are live, so `allocate()` always finds an ID.
#[test]
fn threads_share_one_allocator() {
    for threads in [2, 4] {
        for policy in POLICIES {
            let alloc = PidAllocator::<16>::with_reserved(1).with_policy(policy);
            let shape = Shape {
                threads,
                ops_per_thread: 400_000 / SCALE / threads,
                ring: 32,
                none_allowed: false,
                max_range: 4,
            };
            let counts = stress(&alloc, shape);
            assert_eq!(
                counts.nones.into_inner(),
                0,
                "{policy:?}: allocate never answered None"
            );
        }
    }
}

/// Near exhaustion: 128 IDs, 3 threads that together want more. `None` is allowed,
/// duplicates are not; the end state must still be exact.
#[test]
fn near_exhaustion_two_words_three_threads() {
    for policy in POLICIES {
        let alloc = PidAllocator::<2>::new().with_policy(policy);
        let shape = Shape {
            threads: 3,
            ops_per_thread: 200_000 / SCALE,
            ring: 50,
            none_allowed: true,
            max_range: 3,
        };
        stress(&alloc, shape);
    }
}

/// Churn where fullness flips at two summary levels: `init` leaves only IDs 3,968..4,160
/// managed in a 65-word bitmap (the last two leaf words under level-1 word 0, and the one
/// leaf word under level-1 word 1), so words fill and empty at every level.
#[test]
fn near_exhaustion_across_summary_levels() {
    for policy in POLICIES {
        let mut alloc =
            Box::new(PidAllocator::<65, { summary_words(65) }>::new().with_policy(policy));
        let start = 62 * usize::BITS as usize;
        BaseAllocator::init(&mut *alloc, start, 3 * usize::BITS as usize);
        assert_eq!((alloc.reserved(), alloc.size()), (start, 192));
        let shape = Shape {
            threads: 3,
            ops_per_thread: 200_000 / SCALE,
            ring: 70,
            none_allowed: true,
            max_range: 8,
        };
        stress(&alloc, shape);
    }
}

/// `SpinLock`: threads increment a non-atomic counter (and keep two fields equal) under the
/// lock, some through `try_lock`; the final value is exact.
#[test]
fn spin_lock_mutual_exclusion() {
    const THREADS: usize = 4;
    let per_thread = 400_000 / SCALE;
    let lock = SpinLock::new((0u64, 0u64));
    thread::scope(|scope| {
        for t in 0..THREADS {
            let lock = &lock;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let mut guard = if (t + i) % 3 == 0 {
                        loop {
                            if let Some(guard) = lock.try_lock() {
                                break guard;
                            }
                            core::hint::spin_loop();
                        }
                    } else {
                        lock.lock()
                    };
                    assert!(lock.is_locked(), "held while a guard exists");
                    let (a, b) = *guard;
                    assert_eq!(a, b, "another thread is inside the critical section");
                    guard.0 = a + 1;
                    guard.1 = b + 1;
                }
            });
        }
    });
    assert!(!lock.is_locked());
    let total = (THREADS * per_thread) as u64;
    assert_eq!(lock.into_inner(), (total, total));
}

/// Regression: `NextFit` shared by two threads allocating and dropping at once must not hand
/// out an ID again before its cursor wraps (a stale cursor read once reused about a quarter of
/// the IDs). Each thread holds at most one ID, so a reservation skips at most the other
/// thread's ID and the cursor moves at most 3 positions per allocation: 2 x 25,000 allocations
/// cannot wrap 262,144 IDs, and no ID may repeat.
#[test]
fn next_fit_never_reuses_before_wrap_under_contention() {
    let pids = PidAllocator::<4096>::new();
    let per_thread = 25_000 / SCALE;
    let logs: Vec<Vec<usize>> = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..per_thread)
                        .map(|_| *pids.allocate().expect("half empty allocator"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut seen = vec![false; PidAllocator::<4096>::CAPACITY];
    let reused = logs
        .iter()
        .flatten()
        .filter(|&&id| core::mem::replace(&mut seen[id], true))
        .count();
    assert_eq!(
        reused, 0,
        "IDs handed out again before the cursor came round"
    );
    assert_eq!(pids.used(), 0);
    pids.check().unwrap();
}
