//! `SmpHeap` over pages from the OS as this test binary's `#[global_allocator]`: everything
//! the test harness and std allocate comes from it. Threads run std collections, strings and
//! over-aligned boxes, and a producer/consumer passes blocks from one thread to another to
//! free; afterwards the heap's invariants hold and, after draining and reclaiming, the slabs
//! that held the workload's objects are back with the system.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::thread;

use smpalloc::heap::{StdHeap, SystemPages};

#[global_allocator]
static HEAP: StdHeap = StdHeap::new(SystemPages::new());

#[repr(align(4096))]
struct Page([u8; 4096]);

#[repr(align(64))]
struct Line(u64);

/// One test function, so no other test allocates while the memory is measured.
#[test]
fn std_programs_run_on_the_smp_heap() {
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    let before = HEAP.stats();
    collections_on_several_threads();
    producer_consumer(if cfg!(miri) { 300 } else { 200_000 });
    HEAP.check().unwrap();
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    let after = HEAP.check().unwrap();
    // The workload's objects are gone: slab bytes back to what the harness itself holds
    // (within a few slabs of its own churn), and every huge block returned.
    assert_eq!(after.huge_bytes, before.huge_bytes);
    assert!(
        after.slab_bytes <= before.slab_bytes + 64 * 1024,
        "slabs not returned: {before:?} -> {after:?}"
    );
    // The harness's own threads may allocate between the reclaim and the check, and their
    // thread caches (which only they may drain) park what they freed.
    assert!(
        after.parked_bytes <= before.parked_bytes + 64 * 1024,
        "parked: {before:?} -> {after:?}"
    );
    assert!(
        HEAP.pages().held_bytes()
            <= after.slab_bytes + after.tlsf_pool_bytes + after.huge_bytes + HEAP.map_bytes()
    );
}

fn collections_on_several_threads() {
    const THREADS: usize = 4;
    let rounds: u64 = if cfg!(miri) { 60 } else { 50_000 };
    let (tx, rx) = mpsc::channel::<Box<[u64]>>();
    thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let tx = tx.clone();
            workers.push(s.spawn(move || {
                let mut v: Vec<u64> = Vec::new();
                let mut words = String::new();
                let mut tree = BTreeMap::new();
                let mut map = HashMap::new();
                let mut queue = VecDeque::new();
                for i in 0..rounds {
                    v.push(i * t as u64);
                    if i % 7 == 0 {
                        words.push_str(&i.to_string());
                    }
                    tree.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
                    if i % 3 == 0 {
                        map.insert(format!("key{i}"), vec![i as u8; (i % 300) as usize]);
                    }
                    queue.push_back(Box::new(i));
                    if queue.len() > 100 {
                        queue.pop_front();
                    }
                    if i % 1000 == 0 || (cfg!(miri) && i % 20 == 0) {
                        tx.send(vec![i; (i % 5000) as usize + 1].into_boxed_slice())
                            .unwrap();
                        let page = Box::new(Page([t as u8; 4096]));
                        assert_eq!(core::ptr::from_ref(&*page).addr() % 4096, 0);
                        assert_eq!(page.0[4095], t as u8);
                        let line = Box::new(Line(i));
                        assert_eq!(core::ptr::from_ref(&*line).addr() % 64, 0);
                        assert_eq!(line.0, i);
                    }
                }
                assert_eq!(v.len() as u64, rounds);
                assert_eq!(tree.len() as u64, rounds);
                assert!(
                    map.iter()
                        .all(|(k, v)| k.starts_with("key") && v.len() < 300)
                );
                assert!(words.len() > 10);
            }));
        }
        drop(tx);
        let mut got = 0;
        for block in rx {
            assert!(block.iter().all(|&x| x == block[0]));
            got += 1;
        }
        let every = if cfg!(miri) { 20 } else { 1000 };
        assert_eq!(got, THREADS * rounds.div_ceil(every) as usize);
        // An explicit join waits for the thread's exit hooks (its thread cache becomes an
        // orphan for `drain_cpu_caches` to collect); the scope's own join does not.
        for worker in workers {
            worker.join().unwrap();
        }
    });
}

/// One thread allocates, the other frees: every block crosses threads.
fn producer_consumer(blocks: usize) {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1024);
    thread::scope(|s| {
        let producer = s.spawn(move || {
            for i in 0..blocks {
                let len = 16 + (i * 37) % 497;
                tx.send(vec![(i % 251) as u8; len]).unwrap();
            }
        });
        let consumer = s.spawn(move || {
            let mut i = 0;
            for block in rx {
                assert!(block.iter().all(|&b| b == (i % 251) as u8));
                assert_eq!(block.len(), 16 + (i * 37) % 497);
                i += 1;
            }
            assert_eq!(i, blocks);
        });
        producer.join().unwrap();
        consumer.join().unwrap();
    });
}
