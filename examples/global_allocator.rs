//! smpalloc's SMP heap as a program's `#[global_allocator]`: every `Box`, `Vec` and `String`
//! below (and the standard library's own allocations) come from it.
//!
//! ```text
//! cargo run --release --example global_allocator
//! ```
//!
//! `StdHeap` is `SmpHeap<SystemPages>`: per-thread caches of magazines over per-class depots
//! and slabs, with pages from the system allocator. `SmpHeap<MmapPages>` takes its pages
//! straight from `mmap` instead (no `malloc` underneath: what the C library in `capi/` uses).

use std::collections::HashMap;

use smpalloc::heap::{StdHeap, SystemPages};

#[global_allocator]
static HEAP: StdHeap = StdHeap::new(SystemPages::new());

fn main() {
    // Several threads allocate and free at once; each has its own cache, so they do not
    // contend on a lock for small objects.
    let counts: Vec<usize> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    let mut words: HashMap<String, usize> = HashMap::new();
                    for i in 0..10_000 {
                        *words
                            .entry(format!("word-{}", (i * 7 + t) % 500))
                            .or_default() += 1;
                    }
                    words.len()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(counts.iter().all(|&n| n == 500));

    // A block freed on another thread than the one that allocated it.
    let block = std::thread::spawn(|| vec![7u8; 100_000]).join().unwrap();
    assert_eq!(
        block.iter().map(|&b| usize::from(b)).sum::<usize>(),
        700_000
    );
    drop(block);

    let stats = HEAP.stats();
    println!("distinct words per thread: {counts:?}");
    println!(
        "heap: {} bytes in small objects live, {} bytes of pages taken from the system",
        stats.small_bytes,
        HEAP.pages().held_bytes()
    );
    HEAP.check().expect("heap invariants");
}
