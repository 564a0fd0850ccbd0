//! Loom model of `SpinLock`: mutual exclusion, `try_lock` while held, and that each critical
//! section sees the previous one's writes. Empty unless built with `--cfg loom`.
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
