//! Loom model of `SpinLock`: mutual exclusion, `try_lock` while held, a waiter that loses the
//! race for a freed lock and goes on waiting, and that each critical section sees the previous
//! one's writes. Empty unless built with `--cfg loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_lock`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smpalloc::SpinLock;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Two threads do a non-atomic read-modify-write of the protected value; loom's `UnsafeCell`
/// tracking fails the model if two critical sections ever overlap, and the final count fails
/// it if an update is lost.
#[test]
fn mutual_exclusion() {
    model(|| {
        let lock = Arc::new(SpinLock::new(0usize));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                thread::spawn(move || {
                    let mut guard = lock.lock();
                    let value = *guard;
                    *guard = value + 1;
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(*lock.lock(), 2);
    });
}

/// `try_lock` never succeeds while another thread holds the lock, and a successful `try_lock`
/// sees the holder's write.
#[test]
fn try_lock_excludes() {
    model(|| {
        let lock = Arc::new(SpinLock::new(0usize));
        let other = lock.clone();
        let holder = thread::spawn(move || {
            let mut guard = other.lock();
            *guard = 7;
        });
        if let Some(mut guard) = lock.try_lock() {
            assert!(*guard == 0 || *guard == 7);
            *guard += 1;
        }
        holder.join().unwrap();
        let value = *lock.lock();
        assert!(value == 7 || value == 8, "lost or torn update: {value}");
    });
}

/// A waiter may lose the race for a just-freed lock (here to the thread that freed it) and must
/// go on waiting in `lock`'s contended loop (one backoff for the whole wait) without entering
/// early; every critical section sees the previous one's write. (The only model that fails when
/// the contended loop enters by a load and a store instead of the CAS: with two threads that
/// each lock once, nobody races a waiter for the freed lock.)
#[test]
fn lost_race_keeps_waiting() {
    model(|| {
        let lock = Arc::new(SpinLock::new(0usize));
        let other = lock.clone();
        let waiter = thread::spawn(move || {
            let mut guard = other.lock();
            let value = *guard;
            *guard = value + 1;
        });
        for _ in 0..2 {
            let mut guard = lock.lock();
            let value = *guard;
            *guard = value + 1;
        }
        waiter.join().unwrap();
        assert_eq!(*lock.lock(), 3);
    });
}
