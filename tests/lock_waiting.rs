//! Waiting that scales past the CPU count (issue 15), with `std` and no wait hook: many more
//! threads than CPUs on one `SpinLock`, holders doing work and being descheduled while they
//! hold it. Every round must complete, exactly once, with the protected state consistent.
//! (Whether a waiter yields is checked deterministically by the unit test
//! `lock::tests::contended_lock_yields_after_bounded_spin` and, for the kernel hook, by
//! `lock_wait_hook.rs`; this file asserts no timing.)

use core::hint::black_box;

use smpalloc::SpinLock;

/// Two counters that every critical section moves together, with work between the writes.
#[derive(Default)]
struct Pair {
    a: u64,
    b: u64,
}

/// Runs `threads` threads, each taking `lock` `rounds` times; a holder checks the pair, does
/// some work, yields while holding the lock every `yield_every`-th round (0: never), as a
/// holder preempted in its critical section, and moves both counters.
fn hammer(lock: &SpinLock<Pair>, threads: usize, rounds: usize, yield_every: usize) {
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(move || {
                for round in 0..rounds {
                    let mut pair = lock.lock();
                    assert_eq!(pair.a, pair.b, "two critical sections overlapped");
                    pair.a += 1;
                    let mut work = pair.a;
                    for i in 0..64 {
                        work = black_box(work.wrapping_mul(31).wrapping_add(i));
                    }
                    black_box(work);
                    if yield_every != 0 && round % yield_every == 0 {
                        std::thread::yield_now();
                    }
                    pair.b += 1;
                }
            });
        }
    });
}

/// 16 threads on the machine's CPUs (2 in CI), each holder yielding inside every 4th critical
/// section: completes, and the count is exact.
#[test]
fn sixteen_threads_one_lock_complete() {
    let lock = SpinLock::new(Pair::default());
    hammer(&lock, 16, 500, 4);
    let pair = lock.lock();
    assert_eq!((pair.a, pair.b), (16 * 500, 16 * 500));
}

/// 32 threads (the larson-style server's count), shorter critical sections that never yield
/// inside: completes, and the count is exact.
#[test]
fn thirty_two_threads_one_lock_complete() {
    let lock = SpinLock::new(Pair::default());
    hammer(&lock, 32, 300, 0);
    let pair = lock.lock();
    assert_eq!((pair.a, pair.b), (32 * 300, 32 * 300));
}
