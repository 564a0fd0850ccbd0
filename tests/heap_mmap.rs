//! `SmpHeap<MmapPages>` as this test binary's `#[global_allocator]`: everything the harness and
//! std allocate comes from `mmap` through the page source's cache. Threads grow vectors and
//! maps, a vector grows past the chunk size (huge blocks resized by `mremap`), and after
//! draining and reclaiming the heap's invariants hold and the source's cache is empty.
#![cfg(all(feature = "mmap", unix, not(miri)))]

use std::collections::HashMap;
use std::thread;

use smpalloc::{MmapPages, SmpHeap};

#[global_allocator]
static HEAP: SmpHeap<MmapPages> = SmpHeap::new(MmapPages::new());

/// One test function, so no other test allocates while the memory is measured.
#[test]
fn std_programs_run_on_the_heap_over_mmap() {
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    HEAP.pages().check().unwrap();
    let before = HEAP.check().unwrap();

    threads_grow_collections();
    HEAP.check().unwrap();
    HEAP.pages().check().unwrap();

    a_vector_grows_through_huge_blocks();
    HEAP.check().unwrap();
    HEAP.pages().check().unwrap();

    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    let after = HEAP.check().unwrap();
    HEAP.pages().check().unwrap();
    assert_eq!(HEAP.pages().cached_bytes(), 0, "reclaim drains the cache");
    assert_eq!(after.huge_bytes, before.huge_bytes);
    assert!(
        after.slab_bytes <= before.slab_bytes + 64 * 1024,
        "slabs not returned: {before:?} -> {after:?}"
    );
    // Everything the source holds is the heap's: slabs, pools, huge blocks and map nodes
    // (spans at their power-of-two size: a huge block's usable size is its span).
    assert!(
        HEAP.pages().held_bytes()
            <= after.slab_bytes + after.tlsf_pool_bytes + after.huge_bytes + HEAP.map_bytes(),
        "{after:?}, held {}",
        HEAP.pages().held_bytes()
    );
    assert!(HEAP.pages().peak_bytes() >= 64 << 20);
}

fn threads_grow_collections() {
    thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut v: Vec<u64> = Vec::new();
                let mut map = HashMap::new();
                let mut strings = Vec::new();
                for i in 0..100_000u64 {
                    v.push(i ^ t);
                    if i % 3 == 0 {
                        map.insert(i, vec![t as u8; (i % 700) as usize]);
                    }
                    if i % 5 == 0 {
                        strings.push(format!("{t}-{i}"));
                    }
                    if i % 10_000 == 0 {
                        map.clear();
                        strings.clear();
                    }
                }
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ t));
                assert!(map.iter().all(
                    |(&k, b)| b.len() == (k % 700) as usize && b.iter().all(|&x| x == t as u8)
                ));
            });
        }
    });
}

fn a_vector_grows_through_huge_blocks() {
    let mut v: Vec<u32> = Vec::new();
    let mut moves = 0;
    let mut last = v.as_ptr();
    for i in 0..(32u32 << 20) / 4 * 3 {
        v.push(i);
        if v.as_ptr() != last {
            moves += 1;
            last = v.as_ptr();
        }
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    assert!(moves > 0);
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
}
