//! `PerCpu`: slot indexing modulo `N`, `iter`, `new` / `from_fn` (including values with `Drop`),
//! cache padding, and the default (thread-slot) CPU ids. Nothing here registers a CPU-id source:
//! that is global state, tested alone in `percpu_source.rs` (its own process).

use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_utils::CachePadded;
use smpalloc::percpu::{PerCpu, cpu_count, current_cpu};

#[test]
fn slots_are_indexed_modulo_n() {
    let slots: PerCpu<AtomicUsize, 4> = PerCpu::new([const { AtomicUsize::new(0) }; 4]);
    for cpu in 0..40 {
        assert!(
            core::ptr::eq(slots.get(cpu), slots.get(cpu % 4)),
            "cpu {cpu}"
        );
    }
    assert!(core::ptr::eq(
        slots.get(usize::MAX),
        slots.get(usize::MAX % 4)
    ));
    slots.get(5).fetch_add(1, Ordering::Relaxed);
    slots.get(7).fetch_add(10, Ordering::Relaxed);
    slots.get(8).fetch_add(100, Ordering::Relaxed);
    let values: Vec<usize> = slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    assert_eq!(values, [100, 1, 0, 10]);
}

#[test]
fn new_keeps_values_in_index_order() {
    let slots = PerCpu::new([10u32, 20, 30]);
    assert_eq!(slots.iter().copied().collect::<Vec<_>>(), [10, 20, 30]);
    assert_eq!(
        (*slots.get(0), *slots.get(1), *slots.get(2), *slots.get(3)),
        (10, 20, 30, 10)
    );
    assert_eq!(slots.len(), 3);
    assert!(!slots.is_empty());
    assert_eq!(format!("{slots:?}"), "[10, 20, 30]");

    let one = PerCpu::new([7u8]);
    assert_eq!(*one.current(), 7, "one slot serves every CPU");
    assert_eq!(one.current_index(), 0);
    assert_eq!(one.len(), 1);
}

#[test]
fn from_fn_builds_each_slot_from_its_index() {
    let slots: PerCpu<String, 5> = PerCpu::from_fn(|i| format!("slot {i}"));
    let names: Vec<&str> = slots.iter().map(String::as_str).collect();
    assert_eq!(names, ["slot 0", "slot 1", "slot 2", "slot 3", "slot 4"]);
    assert_eq!(slots.get(12), "slot 2");
}

/// `new` moves the values into padded slots by hand: each must be dropped exactly once.
#[test]
fn values_are_moved_not_copied_or_leaked() {
    let shared = Arc::new(());
    {
        let slots = PerCpu::new([(); 6].map(|()| Arc::clone(&shared)));
        assert_eq!(Arc::strong_count(&shared), 7);
        assert!(slots.iter().all(|a| Arc::ptr_eq(a, &shared)));
        let built = PerCpu::<_, 3>::from_fn(|_| Arc::clone(&shared));
        assert_eq!(Arc::strong_count(&shared), 10);
        drop(built);
        assert_eq!(Arc::strong_count(&shared), 7);
    }
    assert_eq!(Arc::strong_count(&shared), 1, "every slot dropped once");
}

#[test]
fn slots_do_not_share_cache_lines() {
    let slots: PerCpu<u8, 4> = PerCpu::new([0; 4]);
    let line = core::mem::align_of::<CachePadded<u8>>();
    assert!(line >= 64);
    let addresses: Vec<usize> = slots
        .iter()
        .map(|s| core::ptr::from_ref(s) as usize)
        .collect();
    for pair in addresses.windows(2) {
        assert!(
            pair[1] - pair[0] >= line,
            "slots {pair:?} closer than {line} bytes"
        );
    }
    assert!(
        addresses.iter().all(|a| a % line == 0),
        "each slot starts a line"
    );
}

#[test]
fn current_is_the_slot_of_current_cpu() {
    let slots: PerCpu<AtomicUsize, 3> = PerCpu::from_fn(|_| AtomicUsize::new(0));
    let cpu = current_cpu();
    assert_eq!(current_cpu(), cpu, "a thread keeps its id");
    assert_eq!(slots.current_index(), cpu % 3);
    assert!(core::ptr::eq(slots.current(), slots.get(cpu)));
    slots.current().fetch_add(1, Ordering::Relaxed);
    assert_eq!(slots.get(cpu % 3).load(Ordering::Relaxed), 1);
}

/// Without a registered source, each thread gets its own slot number (handed out in order),
/// stable for the thread's life.
#[test]
fn threads_get_distinct_stable_ids() {
    let ids: Vec<usize> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                let id = current_cpu();
                for _ in 0..10 {
                    assert_eq!(current_cpu(), id);
                }
                id
            })
            .join()
            .expect("no panic")
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids {ids:?} repeat");
    // The threads ran one after another, so their ids were handed out in increasing order.
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids {ids:?} not increasing"
    );
}

#[test]
fn cpu_count_defaults_to_available_parallelism() {
    let expected = thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(cpu_count(), expected);
}
