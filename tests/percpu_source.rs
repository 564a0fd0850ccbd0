//! `set_cpu_id_source` and `set_cpu_count`: global state with no way to unset it, so every
//! check lives in the one test of this file (its own process).

use core::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use smpalloc::percpu::{PerCpu, cpu_count, current_cpu, set_cpu_count, set_cpu_id_source};
use smpalloc::{PidAllocator, Policy};

/// What the registered source reports.
static CPU: AtomicUsize = AtomicUsize::new(0);

fn from_static() -> usize {
    CPU.load(Ordering::Relaxed)
}

fn always_42() -> usize {
    42
}

#[test]
fn registered_source_and_count_replace_the_defaults() {
    // Before registration: the thread-slot fallback, stable per thread.
    let fallback = current_cpu();
    assert_eq!(current_cpu(), fallback);
    assert_eq!(
        cpu_count(),
        thread::available_parallelism().map_or(1, |n| n.get())
    );

    set_cpu_id_source(from_static);
    let slots: PerCpu<AtomicUsize, 4> = PerCpu::from_fn(AtomicUsize::new);
    for cpu in [7, 0, 1_000_003, usize::MAX, 2] {
        CPU.store(cpu, Ordering::Relaxed);
        assert_eq!(current_cpu(), cpu);
        assert_eq!(slots.current_index(), cpu % 4);
        assert_eq!(slots.current().load(Ordering::Relaxed), cpu % 4);
    }
    // The source is global: another thread reads the same one.
    CPU.store(9, Ordering::Relaxed);
    let seen = thread::spawn(current_cpu).join().expect("no panic");
    assert_eq!(seen, 9);

    // The per-CPU cursors of `PerCpuNextFit` follow the source: 1,024 IDs, 16 slots spread 64
    // apart from the reserved floor.
    let pids = PidAllocator::<16>::new().with_policy(Policy::PerCpuNextFit);
    CPU.store(3, Ordering::Relaxed);
    assert_eq!(pids.allocate_raw(), Some(3 * 64));
    CPU.store(3 + 16, Ordering::Relaxed);
    assert_eq!(
        pids.allocate_raw(),
        Some(3 * 64 + 1),
        "CPU 19 shares slot 3"
    );
    CPU.store(0, Ordering::Relaxed);
    assert_eq!(pids.allocate_raw(), Some(0));
    CPU.store(15, Ordering::Relaxed);
    assert_eq!(pids.allocate_raw(), Some(15 * 64));
    let reserved = PidAllocator::<16>::with_reserved(16).with_policy(Policy::PerCpuNextFit);
    CPU.store(2, Ordering::Relaxed);
    assert_eq!(reserved.allocate_raw(), Some(16 + 2 * ((1024 - 16) / 16)));

    // Registering again replaces the source.
    set_cpu_id_source(always_42);
    assert_eq!(current_cpu(), 42);
    assert_eq!(slots.current_index(), 42 % 4);

    set_cpu_count(6);
    assert_eq!(cpu_count(), 6);
    set_cpu_count(0);
    assert_eq!(cpu_count(), 1, "a zero count is taken as one");
}
