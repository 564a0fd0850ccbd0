//! Every `unsafe` block of the crate, and its concurrent paths, exercised at sizes small
//! enough for Miri (`.ci/run` runs this file and the `percpu` tests under
//! `cargo +nightly miri test` with strict provenance; under plain `cargo test` it is one more
//! functional test):
//! - `SpinLock`: the guard's cell pointer (`Deref`/`DerefMut`), `get_mut`, `into_inner`, and two
//!   threads contending, so Miri's data-race detector checks the lock's orderings;
//! - `PerCpu::new` (the `const` union construction) with values that own heap memory, so Miri
//!   sees any double drop or leak;
//! - `Pid::from_raw` / `into_raw`, and two threads sharing a `PidAllocator`;
//! - `TlsfHeap::deallocate` of a block freed twice after it merged with both neighbours
//!   (issue 14): the header check reads only the block's own header and successor, refuses it
//!   (a panic in debug builds), and the heap keeps serving from its pool only.

use core::alloc::Layout;
use core::panic::AssertUnwindSafe;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::panic::catch_unwind;
use std::thread;

use smpalloc::bitmap::BITS;
use smpalloc::percpu::PerCpu;
use smpalloc::{Pid, PidAllocator, Policy, SpinLock, TlsfHeap};

const ROUNDS: usize = if cfg!(miri) { 50 } else { 5_000 };

#[test]
fn spin_lock_guards_and_contention() {
    let lock = SpinLock::new(Vec::<usize>::new());
    thread::scope(|s| {
        for t in 0..2 {
            let lock = &lock;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let mut guard = lock.lock();
                    guard.push(t * ROUNDS + i);
                    assert!(!guard.is_empty());
                }
            });
        }
    });
    let guard = lock.try_lock().expect("nobody holds the lock");
    assert!(
        lock.try_lock().is_none(),
        "try_lock succeeded while the lock was held"
    );
    assert!(lock.is_locked());
    assert_eq!(format!("{lock:?}"), "SpinLock { data: \"<locked>\" }");
    drop(guard);
    let mut lock = lock;
    lock.get_mut().sort_unstable();
    let all = lock.into_inner();
    assert_eq!(
        all,
        (0..2 * ROUNDS).collect::<Vec<_>>(),
        "a critical section was lost"
    );
}

/// Two shared borrows of one guard alive at once: `Deref` must not create a `&mut` each time
/// (Miri reported this as undefined behaviour under Stacked Borrows before `deref_shared`).
#[test]
fn spin_lock_guard_allows_overlapping_shared_borrows() {
    let lock = SpinLock::new([1_usize, 2, 3]);
    let mut guard = lock.lock();
    let first: &[usize; 3] = &guard;
    let second: &[usize; 3] = &guard;
    assert_eq!(first[0] + second[2], 4);
    assert_eq!(first, second);
    guard[1] = 20;
    let third: &[usize; 3] = &guard;
    assert_eq!(third, &[1, 20, 3]);
}

#[test]
fn per_cpu_const_construction_moves_each_value_once() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Owned(String);
    impl Drop for Owned {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let slots = PerCpu::new([Owned("a".into()), Owned("b".into()), Owned("c".into())]);
    assert_eq!(
        DROPS.load(Ordering::Relaxed),
        0,
        "a value was dropped while being moved"
    );
    assert_eq!(
        slots.iter().map(|o| o.0.as_str()).collect::<String>(),
        "abc"
    );
    assert_eq!(slots.get(4).0, "b");
    drop(slots);
    assert_eq!(
        DROPS.load(Ordering::Relaxed),
        3,
        "each value must be dropped exactly once"
    );
}

#[test]
fn pid_raw_round_trip() {
    let pids = PidAllocator::<1, 0>::with_reserved(1);
    let pid = pids.allocate().unwrap();
    let raw = pid.into_raw();
    assert!(pids.contains(raw), "into_raw must keep the ID allocated");
    // SAFETY: `raw` came from `into_raw` on this allocator and no other handle exists.
    let back: Pid<'_, 1, 0> = unsafe { Pid::from_raw(&pids, raw) };
    assert_eq!(*back, raw);
    drop(back);
    assert!(
        !pids.contains(raw),
        "dropping the rebuilt handle frees the ID"
    );
    assert_eq!(pids.used(), 0);
}

#[test]
fn two_threads_share_a_small_allocator() {
    for policy in [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree] {
        let pids = PidAllocator::<2, 1>::new().with_policy(policy);
        let owner: Vec<AtomicUsize> = (0..2 * BITS).map(|_| AtomicUsize::new(0)).collect();
        thread::scope(|s| {
            for t in 1..=2 {
                let (pids, owner) = (&pids, &owner);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..ROUNDS {
                        let pid = pids.allocate().expect("at most 8 IDs are held at once");
                        let prev = owner[*pid].swap(t, Ordering::Relaxed);
                        assert_eq!(prev, 0, "{policy:?}: ID {} handed out twice", *pid);
                        held.push(pid);
                        if held.len() > 4 || i % 3 == 0 {
                            let pid = held.remove(0);
                            owner[*pid].store(0, Ordering::Relaxed);
                        }
                    }
                    for pid in held {
                        owner[*pid].store(0, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(pids.used(), 0, "{policy:?}");
        pids.check().unwrap();
    }
}

/// Issue 14, defect 1, through `TlsfHeap`: allocate `a`, `b`, `c` (64 B), free `a`, `c`, then
/// `b` (merging with both neighbours), then `b` again. The second free must be refused: a
/// panic in debug builds, ignored in release builds; the heap stays intact and never hands out
/// a block outside its pool (it used to, past the pool's end).
#[test]
fn tlsf_heap_double_free_after_a_merge_is_refused() {
    const LEN: usize = if cfg!(miri) { 8 * 1024 } else { 64 * 1024 };
    let mut pool = vec![0u8; LEN].into_boxed_slice();
    let range = pool.as_mut_ptr_range();
    let (lo, hi) = (range.start.addr(), range.end.addr());
    let heap: TlsfHeap<1> = TlsfHeap::new();
    // SAFETY: the pool outlives the heap's use below and nothing else touches it meanwhile.
    unsafe { heap.add_pool(NonNull::from(&mut *pool)).unwrap() };
    let layout = Layout::from_size_align(64, 8).unwrap();
    let a = heap.allocate(layout).unwrap();
    let b = heap.allocate(layout).unwrap();
    let c = heap.allocate(layout).unwrap();
    // SAFETY: live, each freed once.
    unsafe {
        heap.deallocate(a, layout);
        heap.deallocate(c, layout);
        heap.deallocate(b, layout);
    }
    assert_eq!(heap.check(), Ok(0));
    let again = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: deliberately a double free: the contract is broken on purpose, and the
        // heap's check must catch it before any write.
        unsafe { heap.deallocate(b, layout) }
    }));
    assert_eq!(
        again.is_err(),
        cfg!(debug_assertions),
        "a debug build panics on the double free; a release build ignores it"
    );
    assert_eq!(heap.check(), Ok(0), "the refused free changed the heap");
    // Fill the heap: every block lies inside the pool, none overlaps another.
    let mut blocks = Vec::new();
    while let Some(p) = heap.allocate(layout) {
        let addr = p.as_ptr().addr();
        assert!(
            lo <= addr && addr + layout.size() <= hi,
            "block {addr:#x} outside the pool {lo:#x}..{hi:#x}"
        );
        // SAFETY: 64 fresh bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, layout.size()) };
        blocks.push(addr);
    }
    blocks.sort_unstable();
    assert!(blocks.windows(2).all(|w| w[0] + layout.size() <= w[1]));
    assert!(
        blocks.len() >= (LEN - 1024) / 96,
        "only {} blocks",
        blocks.len()
    );
    assert!(heap.check().is_ok());
    // The pool outlives every use of the heap (its blocks are never touched again).
    drop(pool);
}
