//! Loom models of `PidAllocator`: handles racing on a nearly full allocator under each policy,
//! per-CPU cursors included. Empty unless built with `--cfg loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_pid`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smpalloc::bitmap::BITS;
use smpalloc::{PidAllocator, Policy, percpu};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Two CPUs allocate and drop PIDs on an allocator with two free IDs: never the same PID at
/// once, never `None` while one is free, and all IDs back at the end.
fn two_cpus(policy: Policy) {
    model(move || {
        let pids = Arc::new(PidAllocator::<2, 1>::with_reserved(2 * BITS - 2).with_policy(policy));
        let other = pids.clone();
        let t = thread::spawn(move || {
            percpu::set_model_cpu(1);
            let pid = other.allocate().expect("a free PID was hidden");
            let id = *pid;
            drop(pid);
            id
        });
        percpu::set_model_cpu(0);
        let mine = pids.allocate().expect("a free PID was hidden");
        assert!(pids.contains(*mine));
        let theirs = t.join().unwrap();
        assert!(theirs >= 2 * BITS - 2);
        assert_eq!(pids.used(), 1);
        drop(mine);
        assert_eq!(pids.used(), 0);
        pids.check().unwrap();
        let a = pids.allocate().unwrap();
        let b = pids.allocate().unwrap();
        assert_ne!(*a, *b);
        assert!(pids.allocate().is_none());
    });
}

#[test]
fn next_fit_two_cpus() {
    two_cpus(Policy::NextFit);
}

#[test]
fn per_cpu_next_fit_two_cpus() {
    two_cpus(Policy::PerCpuNextFit);
}

#[test]
fn lowest_free_two_cpus() {
    two_cpus(Policy::LowestFree);
}

/// Exhaustion under contention: with one free PID, exactly one of two racing allocations gets
/// it and the other sees `None` (never a duplicate).
#[test]
fn exhaustion_is_none_not_duplicate() {
    model(|| {
        let pids = Arc::new(PidAllocator::<1, 0>::with_reserved(BITS - 1));
        let other = pids.clone();
        let t = thread::spawn(move || other.allocate().map(|p| p.into_raw()));
        let mine = pids.allocate().map(|p| p.into_raw());
        let theirs = t.join().unwrap();
        assert!(mine.is_some() != theirs.is_some(), "{mine:?} {theirs:?}");
        assert_eq!(pids.used(), 1);
        pids.check().unwrap();
    });
}
