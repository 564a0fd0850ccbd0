//! Every `unsafe` block of the crate, and its concurrent paths, exercised at sizes small
//! enough for Miri (`.ci/run` runs this file and the `percpu` tests under
//! `cargo +nightly miri test` with strict provenance; under plain `cargo test` it is one more
//! functional test):
//! - `SpinLock`: the guard's cell pointer (`Deref`/`DerefMut`), `get_mut`, `into_inner`, and two
//!   threads contending, so Miri's data-race detector checks the lock's orderings;
//! - `PerCpu::new` (the `const` union construction) with values that own heap memory, so Miri
//!   sees any double drop or leak;
//! - `Pid::from_raw` / `into_raw`, and two threads sharing a `PidAllocator`.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use smpalloc::bitmap::BITS;
use smpalloc::percpu::PerCpu;
use smpalloc::{Pid, PidAllocator, Policy, SpinLock};

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
