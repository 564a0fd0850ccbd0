//! Loom models of the SMP heap's protocols (docs/design/08-heap.md §"The CPU layer: magazines" to §"Orderings"): a magazine exchange with the
//! depot racing another CPU's exchange; a cross-CPU free; a slab released to the page source
//! racing an allocation from the same slab; a drain racing a free (and a thread that finds its
//! slot busy); a TLSF pool returned by `reclaim` racing a TLSF allocation; two TLSF growths
//! racing each other's first tries; a direct block freed on another CPU; thread caches: a
//! thread's exit racing frees of what it allocated, a heap dropped while its thread exits; the
//! depot's slots: a push racing a pop and `reclaim`, a pop racing the next push.
//! Empty unless built
//! with `--cfg loom`.
//!
//! Under loom the heap is shrunk: magazines of 2 objects, a depot of 1 magazine, no empty slab
//! kept (a slab goes back to the pages the moment it empties), and 4 slab classes (8..32 B).
//! Every model uses class 0 (8 B), whose slab holds 496 objects: one slab.
//!
//! Each model ends with the heap's `check()` (magazines hold in-use objects, each once; slabs
//! consistent; counters right) and, after `drain_cpu_caches()` + `reclaim()`, no slab held.
//! The page source is `fixed.rs` (the same addresses in every execution, which the page map's
//! walks need for loom to replay executions).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_heap`
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use smpalloc::heap::{MAGAZINE, SmpHeap};

#[path = "fixed.rs"]
mod fixed;
use fixed::Fixed;
use smpalloc::percpu::set_model_cpu;

/// Thread-cache records are process-wide (a pool that every model's threads adopt from and
/// release to), and the test harness runs the models of this file in parallel. Models that
/// count records run alone (write); the others may run together (read).
static RECORDS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs a model that may use thread caches but does not count records.
fn model(f: impl Fn(usize) + Sync + Send + 'static) {
    let _shared = RECORDS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fixed::model(f);
}

/// Runs a model that asserts on [`smpalloc::heap::thread_cache_records`]: no other model of
/// this file runs meanwhile.
fn model_counting_records(f: impl Fn(usize) + Sync + Send + 'static) {
    let _alone = RECORDS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fixed::model(f);
}

type Heap = SmpHeap<Fixed, 3>;
type OneSlot = SmpHeap<Fixed, 1>;

const SMALL: Layout = match Layout::from_size_align(8, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// A pointer that crosses model threads (heap objects are plain addresses).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Obj(usize);

impl Obj {
    fn ptr(self) -> NonNull<u8> {
        NonNull::new(core::ptr::with_exposed_provenance_mut(self.0)).unwrap()
    }
}

fn alloc<const CPUS: usize>(heap: &SmpHeap<Fixed, CPUS>) -> Obj {
    let p = heap.allocate(SMALL).expect("one slab is enough");
    Obj(p.as_ptr().expose_provenance())
}

fn free<const CPUS: usize>(heap: &SmpHeap<Fixed, CPUS>, obj: Obj) {
    // SAFETY: every model frees each object it allocated exactly once.
    unsafe { heap.deallocate(obj.ptr(), SMALL) };
}

/// The end state: invariants, `live` objects allocated, and everything back with the pages
/// (slabs, TLSF pools, direct blocks) once the live ones are freed and the caches drained and
/// reclaimed.
fn finish<const CPUS: usize>(heap: &SmpHeap<Fixed, CPUS>, live: Vec<Obj>) {
    heap.check().unwrap();
    assert_eq!(heap.class_stats(0).unwrap().allocated, live.len());
    for obj in live {
        free(heap, obj);
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    assert_eq!(
        (
            stats.slab_bytes,
            stats.tlsf_pool_bytes,
            stats.tlsf_direct_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(heap.pages().held_bytes(), 0);
}

fn distinct(mut objs: Vec<Obj>) -> Vec<Obj> {
    let n = objs.len();
    objs.sort();
    objs.dedup();
    assert_eq!(objs.len(), n, "an object was handed out twice");
    objs
}

/// Two CPUs each free `2 * MAGAZINE + 1` objects (filling loaded and previous, then handing
/// a full magazine to the depot, which has room for one: the other goes back to the slabs),
/// then allocate as many (emptying both magazines, then loading from the depot, possibly the
/// other CPU's magazine). No object is lost or handed out twice.
#[test]
fn magazine_exchange_races_exchange() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(2);
        let n = 2 * MAGAZINE + 1;
        let mut objs: Vec<Obj> = (0..2 * n).map(|_| alloc(&heap)).collect();
        let theirs = objs.split_off(n);
        let handles: Vec<_> = [(0, objs), (1, theirs)]
            .into_iter()
            .map(|(cpu, mine)| {
                let heap = heap.clone();
                thread::spawn(move || {
                    set_model_cpu(cpu);
                    for obj in mine {
                        free(&heap, obj);
                    }
                    (0..n).map(|_| alloc(&heap)).collect::<Vec<_>>()
                })
            })
            .collect();
        let live: Vec<Obj> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let live = distinct(live);
        finish(&heap, live);
    });
}

/// An object allocated on CPU 0 is published to CPU 1, which frees it into its own magazine
/// while CPU 0 allocates again; the counters of both CPUs add up.
#[test]
fn cross_cpu_free() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        let mailbox = Arc::new(AtomicUsize::new(0));
        let consumer = {
            let (heap, mailbox) = (heap.clone(), mailbox.clone());
            thread::spawn(move || {
                set_model_cpu(1);
                let addr = loop {
                    match mailbox.load(Ordering::Acquire) {
                        0 => thread::yield_now(),
                        addr => break addr,
                    }
                };
                free(&heap, Obj(addr));
                heap.cpu_stats(1, 0).unwrap().net_allocations
            })
        };
        set_model_cpu(0);
        let first = alloc(&heap);
        mailbox.store(first.0, Ordering::Release);
        let second = alloc(&heap);
        assert_eq!(consumer.join().unwrap(), -1);
        assert_eq!(heap.cpu_stats(0, 0).unwrap().net_allocations, 2);
        assert_ne!(first, second);
        finish(&heap, vec![second]);
    });
}

/// CPU 0 frees the last in-use object of the only slab and drains its magazines, so the slab
/// empties and goes back to the pages (no empty slab is kept under loom), while CPU 1 refills
/// its magazine from the same class: it either takes objects of that slab before the release
/// or gets a new slab after it, never an object of a released slab.
#[test]
fn slab_release_races_allocation() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(2);
        let last = alloc(&heap);
        heap.drain_cpu_caches(); // the slab now has exactly one object in use: `last`
        let releaser = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(0);
                free(&heap, last);
                heap.drain_cpu_caches();
            })
        };
        set_model_cpu(1);
        let mine = alloc(&heap);
        releaser.join().unwrap();
        finish(&heap, vec![mine]);
    });
}

/// A drain of every CPU's magazines races frees on CPU 0 (which may find its slot locked by
/// the drain and free straight into the slabs) and an allocation there.
#[test]
fn drain_races_free() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(0);
        let objs: Vec<Obj> = (0..3).map(|_| alloc(&heap)).collect();
        let drainer = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                heap.drain_cpu_caches();
            })
        };
        for obj in objs {
            free(&heap, obj);
        }
        let again = alloc(&heap);
        drainer.join().unwrap();
        finish(&heap, vec![again]);
    });
}

/// Two threads on the same CPU slot of a one-slot heap (a migrated thread with nowhere to
/// probe): one finds the slot busy and takes the direct path through the class lock; nothing
/// is lost or duplicated. (With more slots it would probe the next one first.)
#[test]
fn two_threads_on_one_slot() {
    model(|base| {
        let heap = Arc::new(OneSlot::new(Fixed::new(base)));
        let other = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(0);
                let a = alloc(&heap);
                let b = alloc(&heap);
                free(&heap, a);
                b
            })
        };
        set_model_cpu(0);
        let c = alloc(&heap);
        let d = alloc(&heap);
        free(&heap, d);
        let b = other.join().unwrap();
        let live = distinct(vec![b, c]);
        finish(&heap, live);
    });
}

/// Two threads on CPU 0 of a three-slot heap: the one that finds slot 0 busy probes slot 1 and
/// uses its magazines; the counters of both slots add up and nothing is lost.
#[test]
fn busy_slot_probes_the_next() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        let other = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(0);
                let a = alloc(&heap);
                free(&heap, a);
                alloc(&heap)
            })
        };
        set_model_cpu(0);
        let c = alloc(&heap);
        let b = other.join().unwrap();
        let live = distinct(vec![b, c]);
        let net: isize = (0..3)
            .map(|cpu| heap.cpu_stats(cpu, 0).unwrap().net_allocations)
            .sum();
        assert_eq!(net, 2);
        finish(&heap, live);
    });
}

/// A TLSF-routed layout under loom (above the 4 slab classes of 8..32 B).
const MEDIUM: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// CPU 0 grows a TLSF pool, frees its block and reclaims, which returns the (now wholly free)
/// pool to the pages, while CPU 1 allocates a TLSF block: it is served from the pool before
/// the return (and the return is refused while it lives) or from a pool grown again after it
/// (reusing the region entry). The lock order (`tlsf_grow`, the arenas' `grow`, an arena, the
/// pages) admits no deadlock; at the end every pool is back. (One CPU slot, to keep the long
/// executions of `reclaim` few.)
#[test]
fn tlsf_pool_return_races_allocation() {
    model(|base| {
        let heap = Arc::new(OneSlot::new(Fixed::new(base)));
        set_model_cpu(0);
        let first = heap.allocate(MEDIUM).expect("grows a pool");
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(first, MEDIUM) };
        let user = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                let p = heap.allocate(MEDIUM).expect("a pool, old or grown again");
                // SAFETY: a live block of `MEDIUM.size()` bytes.
                unsafe { p.as_ptr().write_bytes(0x5a, MEDIUM.size()) };
                Obj(p.as_ptr().expose_provenance())
            })
        };
        heap.reclaim();
        let p = user.join().unwrap().ptr();
        assert!(
            heap.stats().tlsf_pool_bytes > 0,
            "a pool with a live block went back"
        );
        // SAFETY: the live block of the user thread.
        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), MEDIUM.size()) };
        assert!(bytes.iter().all(|&b| b == 0x5a));
        // SAFETY: allocated by the user thread, freed once.
        unsafe { heap.deallocate(p, MEDIUM) };
        finish(&heap, vec![]);
    });
}

/// A TLSF-routed layout under loom that a fresh 8 KiB pool serves once: a second one needs
/// another pool.
const BIG: Layout = match Layout::from_size_align(5000, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// Regression (a grower's new pool taken by another CPU first): two CPUs each allocate a `BIG`
/// TLSF block from a fresh heap, so both need growth. The grower allocates from its new pool in
/// the same critical section of the arena lock that adds it, so the other CPU's first try
/// (borrowing every arena) cannot take it first: both are served from pools, never `None` and
/// never a direct block while a pool can be added.
#[test]
fn tlsf_growth_races_first_try() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        let other = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                let p = heap.allocate(BIG).expect("a pool for each");
                Obj(p.as_ptr().expose_provenance())
            })
        };
        set_model_cpu(0);
        let mine = heap.allocate(BIG).expect("a pool for each");
        let theirs = other.join().unwrap().ptr();
        let stats = heap.stats();
        assert_eq!(stats.tlsf_direct_bytes, 0, "a pool could be added");
        assert!(stats.tlsf_pool_bytes >= 2 * 8192);
        // SAFETY: both live, allocated with `BIG`, freed once.
        unsafe {
            heap.deallocate(mine, BIG);
            heap.deallocate(theirs, BIG);
        }
        finish(&heap, vec![]);
    });
}

/// A TLSF-routed layout under loom larger than an arena's largest block (8 KiB): a fresh pool
/// cannot serve it, so it is a direct block from the page source.
const DIRECT: Layout = match Layout::from_size_align(12 << 10, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// Regression (a direct block's free racing the pool taken out, D1-D3): CPU 0 allocates a
/// direct block (a pool is taken, added, found unable to serve it and taken out again in one
/// critical section, then the block comes from the pages) and hands it to CPU 1, which frees it
/// (its region lookup misses, the direct count says a direct block is live, so it goes back to
/// the pages) while CPU 0 grows a pool for a `MEDIUM` block and frees it. Everything is back
/// with the pages at the end.
#[test]
fn direct_block_freed_on_another_cpu() {
    model(|base| {
        let heap = Arc::new(OneSlot::new(Fixed::new(base)));
        let mailbox = Arc::new(AtomicUsize::new(0));
        let freer = {
            let (heap, mailbox) = (heap.clone(), mailbox.clone());
            thread::spawn(move || {
                set_model_cpu(1);
                let addr = loop {
                    match mailbox.load(Ordering::Acquire) {
                        0 => thread::yield_now(),
                        addr => break addr,
                    }
                };
                // SAFETY: the direct block CPU 0 allocated with `DIRECT`, freed once.
                unsafe { heap.deallocate(Obj(addr).ptr(), DIRECT) };
            })
        };
        set_model_cpu(0);
        let direct = heap.allocate(DIRECT).expect("a direct block");
        assert_eq!(heap.stats().tlsf_pool_bytes, 0, "no pool kept for it");
        mailbox.store(direct.as_ptr().expose_provenance(), Ordering::Release);
        let p = heap.allocate(MEDIUM).expect("grows a pool");
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(p, MEDIUM) };
        freer.join().unwrap();
        assert_eq!(heap.stats().tlsf_direct_bytes, 0);
        finish(&heap, vec![]);
    });
}

/// Thread caches (docs/design/08-heap.md §"Thread caches (std)", T1-T5), thread exit racing remote frees: thread A (a std
/// thread: no CPU id, so a thread cache) allocates `MAGAZINE + 1` objects, hands them over,
/// allocates and frees one more (magazine writes after its last synchronisation with anyone)
/// and exits, while thread B frees the objects into its own cache (spilling a magazine to the
/// depot) and allocates one more. A's exit makes its cache an orphan (Release CAS) that B's
/// bind or the final check collects (Acquire); nothing is lost or handed out twice, the
/// counts add up, and each record goes back to the pool exactly once.
#[test]
fn thread_exit_races_remote_frees() {
    model_counting_records(|base| {
        set_model_cpu(0);
        let (adopted, released) = smpalloc::heap::thread_cache_records();
        let heap = Arc::new(OneSlot::new(Fixed::new(base)));
        let mailbox = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let owner = {
            let (heap, mailbox) = (heap.clone(), mailbox.clone());
            thread::spawn(move || {
                let objs: Vec<Obj> = (0..=MAGAZINE).map(|_| alloc(&heap)).collect();
                *mailbox.lock().unwrap() = objs;
                // Magazine writes after the last synchronisation with anyone: only the exit
                // hook's Release CAS publishes them to the collector (T2).
                let obj = alloc(&heap);
                free(&heap, obj);
            })
        };
        let freer = {
            let (heap, mailbox) = (heap.clone(), mailbox.clone());
            thread::spawn(move || {
                let objs = loop {
                    let objs = core::mem::take(&mut *mailbox.lock().unwrap());
                    if !objs.is_empty() {
                        break objs;
                    }
                    thread::yield_now();
                };
                for obj in distinct(objs) {
                    free(&heap, obj);
                }
                alloc(&heap)
            })
        };
        let kept = freer.join().unwrap();
        // A loom join (like a std scope's) returns before the thread's thread-locals are
        // dropped, that is before its exit hook. Without joining the owner, wait for both
        // caches to be orphaned and collected (`check` collects).
        while heap.check().unwrap().thread_caches != 0 {
            thread::yield_now();
        }
        owner.join().unwrap();
        finish(&heap, vec![kept]);
        let (adopted_now, released_now) = smpalloc::heap::thread_cache_records();
        assert_eq!(adopted_now - adopted, 2);
        assert_eq!(
            released_now - released,
            2,
            "each record released exactly once"
        );
    });
}

/// A heap the main thread can take away (and drop) while another thread uses it.
type Shared = Arc<loom::sync::Mutex<Option<OneSlot>>>;

/// Spawns a thread that binds its cache to the shared heap by allocating and freeing one
/// object (which stays cached), then exits.
fn spawn_cached_user(heap: &Shared) -> thread::JoinHandle<()> {
    let heap = heap.clone();
    thread::spawn(move || {
        let guard = heap.lock().unwrap();
        let heap = guard.as_ref().unwrap();
        let obj = alloc(heap);
        free(heap, obj);
    })
}

/// Waits until the user has bound its cache and cached the object, then takes the heap.
fn take_once_bound(heap: &Shared) -> OneSlot {
    loop {
        let mut guard = heap.lock().unwrap();
        if guard.as_ref().unwrap().stats().thread_caches == 1 {
            return guard.take().unwrap();
        }
        drop(guard);
        thread::yield_now();
    }
}

/// Thread caches (T2, T3): a heap dropped while the thread bound to it exits. The heap's
/// `Drop` moves the record `BOUND -> IDLE` and the exit hook `BOUND -> ORPHAN`, both by
/// compare-and-swap on one word: whichever comes second releases the record, exactly once,
/// and the heap takes the cached objects back either way.
#[test]
fn heap_drop_races_thread_exit() {
    model_counting_records(|base| {
        set_model_cpu(0);
        let (adopted, released) = smpalloc::heap::thread_cache_records();
        let heap = Arc::new(loom::sync::Mutex::new(Some(OneSlot::new(Fixed::new(base)))));
        let user = spawn_cached_user(&heap);
        drop(take_once_bound(&heap));
        user.join().unwrap();
        // The exit hook runs after the join returns (see above): wait for it.
        while smpalloc::heap::thread_cache_records().1 == released {
            thread::yield_now();
        }
        let (adopted_now, released_now) = smpalloc::heap::thread_cache_records();
        assert_eq!(adopted_now - adopted, 1);
        assert_eq!(
            released_now - released,
            1,
            "the record released exactly once"
        );
    });
}

/// Thread caches (T2, T3): a record released by an exiting thread after the heap's `Drop`
/// unbound it is adopted by a new thread. The main thread drops heap A while thread U, bound
/// to A, exits; thread W waits for U's record to reach the pool, adopts it and allocates from
/// heap B (writing the record's magazines). When `Drop` wins, its flush of the magazines must
/// happen before W's writes: `Drop`'s Release CAS to `IDLE`, read by the exit hook's failed
/// CAS (Acquire), then the pool's lock. Mutation caught: a Relaxed failure ordering on the
/// exit hook's CAS (loom: W's magazine access races `Drop`'s flush).
#[test]
fn released_record_is_adopted_after_heap_drop() {
    model_counting_records(|base| {
        set_model_cpu(0);
        let released = smpalloc::heap::thread_cache_records().1;
        let half = fixed::REGION / 2;
        let heap = Arc::new(loom::sync::Mutex::new(Some(OneSlot::new(Fixed::within(
            base, half,
        )))));
        let user = spawn_cached_user(&heap);
        let adopter = thread::spawn(move || {
            // U's record is pooled once both its exit hook and A's `Drop` ran (either last).
            while smpalloc::heap::thread_cache_records().1 == released {
                thread::yield_now();
            }
            let heap = OneSlot::new(Fixed::within(base + half, half));
            let obj = alloc(&heap);
            free(&heap, obj);
            finish(&heap, vec![]);
        });
        drop(take_once_bound(&heap));
        user.join().unwrap();
        adopter.join().unwrap();
    });
}

/// The depot's slots (DP1-DP5, 13.4): CPU 0 frees `2 * MAGAZINE + 1` objects, so its full
/// previous magazine is pushed into the depot's slot (claim, copy in, publish), while CPU 1
/// allocates one object from empty magazines (popping that magazine if it is published, else
/// filling from the slabs) and the main thread reclaims (popping the slot into the slabs, if
/// full). No object is lost or handed out twice, statistics add up, and everything is back at
/// the end. Mutation caught: a Relaxed publication of a push (loom: the popper's copy races
/// the pusher's).
#[test]
fn depot_push_races_pop_and_reclaim() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(2);
        let objs: Vec<Obj> = (0..2 * MAGAZINE + 1).map(|_| alloc(&heap)).collect();
        let pusher = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(0);
                for obj in objs {
                    free(&heap, obj);
                }
            })
        };
        let popper = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                alloc(&heap)
            })
        };
        heap.reclaim();
        pusher.join().unwrap();
        let mine = popper.join().unwrap();
        finish(&heap, vec![mine]);
    });
}

/// The depot's slots (DP1-DP2): CPU 0 frees `2 * MAGAZINE + 1` objects (pushing a full
/// magazine into the depot's one slot), then tells CPU 1, which allocates one object from
/// empty magazines (popping that magazine), while CPU 0 frees `MAGAZINE` more (pushing a second
/// full magazine: into the slot if the pop released it, else to the slabs). The slot is reused
/// only after the popper's copy out. (A pop whose claim does not mark the slot busy is not
/// caught here: loom explores no schedule with the second push between the pop's claim and its
/// release; `depot_push_races_pop_and_reclaim` catches a Relaxed publication.)
#[test]
fn depot_pop_races_next_push() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(2);
        let mut objs: Vec<Obj> = (0..3 * MAGAZINE + 1).map(|_| alloc(&heap)).collect();
        let later = objs.split_off(2 * MAGAZINE + 1);
        let pushed = Arc::new(AtomicUsize::new(0));
        let popper = {
            let (heap, pushed) = (heap.clone(), pushed.clone());
            thread::spawn(move || {
                set_model_cpu(1);
                while pushed.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                alloc(&heap)
            })
        };
        set_model_cpu(0);
        for obj in objs {
            free(&heap, obj);
        }
        pushed.store(1, Ordering::Release);
        for obj in later {
            free(&heap, obj);
        }
        let mine = popper.join().unwrap();
        finish(&heap, vec![mine]);
    });
}
