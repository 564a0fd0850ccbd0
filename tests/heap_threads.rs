//! The std heap's thread caches (docs/design/08-heap.md §"Thread caches (std)"): with no CPU-id source registered (this
//! binary never registers one), each thread that allocates gets its own cache, bound to one
//! heap at a time. These tests check that caches are used, that they come back at thread exit
//! (also while other threads free what the exiting thread allocated), that a heap's `Drop`
//! unbinds live threads, that heaps may move while bound, and that 10,000 short-lived threads
//! leave the heap and the process's record count flat. Every test ends with `check()` and,
//! after draining and reclaiming, every page back with the system.
//!
//! Threads are joined with their handles: a handle's `join` waits for the thread's exit
//! hooks, a scope's implicit join does not.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::mpsc;
use std::thread;

use smpalloc::heap::{SmpHeap, SystemPages, thread_cache_records};

type Heap = SmpHeap<SystemPages, 4>;

fn heap() -> Heap {
    SmpHeap::new(SystemPages::new())
}

/// A block address that crosses threads.
#[derive(Clone, Copy)]
struct Block(usize, Layout);

impl Block {
    fn new(heap: &Heap, size: usize) -> Block {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let ptr = heap.allocate(layout).expect("the system has memory");
        // SAFETY: a fresh block of `size` bytes.
        unsafe { ptr.as_ptr().write_bytes(size as u8, size) };
        Block(ptr.as_ptr().expose_provenance(), layout)
    }

    fn free(self, heap: &Heap) {
        let ptr = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(self.0)).unwrap();
        // SAFETY: written by `new` with this layout and not freed since.
        let intact = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), self.1.size()) }
            .iter()
            .all(|&b| b == self.1.size() as u8);
        assert!(intact, "a block was overwritten while live");
        // SAFETY: allocated by `new` from `heap` with this layout, freed once.
        unsafe { heap.deallocate(ptr, self.1) };
    }
}

fn sizes(i: usize) -> usize {
    [8, 24, 48, 100, 256, 1000, 4096][i % 7]
}

/// Everything back: invariants hold, no thread cache of an exited thread is left, and after
/// draining and reclaiming no page is held.
fn all_returned(heap: &Heap) {
    let stats = heap.check().expect("invariants");
    assert_eq!(stats.small_bytes, 0, "{stats:?}");
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().expect("invariants");
    assert_eq!(stats.parked_bytes, 0, "{stats:?}");
    assert_eq!(heap.pages().held_bytes(), 0, "{stats:?}");
}

#[test]
fn each_thread_allocates_from_its_own_cache() {
    let heap = heap();
    let rounds = if cfg!(miri) { 20 } else { 5_000 };
    thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut live = Vec::new();
                    for i in 0..rounds {
                        live.push(Block::new(&heap, sizes(i)));
                        if i % 3 == 0 {
                            live.swap_remove(i % live.len()).free(&heap);
                        }
                    }
                    // Bound to this heap: the CPU slots saw nothing of this thread.
                    let stats = heap.stats();
                    assert!(stats.thread_caches >= 1, "{stats:?}");
                    heap.check().unwrap();
                    for block in live {
                        block.free(&heap);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
    for cpu in 0..4 {
        for class in 0..smpalloc::heap::HEAP_CLASSES {
            assert_eq!(heap.cpu_stats(cpu, class).unwrap().net_allocations, 0);
        }
    }
    all_returned(&heap);
    assert_eq!(
        heap.stats().thread_caches,
        0,
        "exited threads' caches collected"
    );
}

/// Thread exit racing remote frees: each producer allocates blocks and exits while a consumer
/// frees them into its own cache; the producers' caches become orphans the heap collects.
#[test]
fn exits_race_frees_of_what_the_exiting_threads_allocated() {
    let heap = heap();
    let blocks = if cfg!(miri) { 20 } else { 20_000 };
    let (tx, rx) = mpsc::sync_channel::<Block>(64);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut got = 0;
            for block in rx {
                block.free(&heap);
                got += 1;
            }
            got
        });
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let tx = tx.clone();
                let heap = &heap;
                s.spawn(move || {
                    for i in 0..blocks {
                        tx.send(Block::new(heap, sizes(i + p))).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(consumer.join().unwrap(), 3 * blocks);
    });
    // The consumer freed everything: its net is -3 * blocks, the producers' +blocks each,
    // folded into the heap's counts when their caches were collected.
    all_returned(&heap);
}

/// A heap dropped while a thread bound to it lives: the thread's cache is emptied and
/// unbound, and the thread binds it to the next heap it uses.
#[test]
fn a_dropped_heap_unbinds_live_threads() {
    // Blocks per heap (under Miri 14: each of the seven sizes twice).
    let n = if cfg!(miri) { 14 } else { 100 };
    let first = std::sync::Arc::new(heap());
    let second = heap();
    let (go, wait) = mpsc::channel::<()>();
    let (done, bound) = mpsc::channel::<()>();
    let second_ref = &second;
    let worker_first = first.clone();
    thread::scope(|s| {
        let worker = s.spawn(move || {
            let first = worker_first;
            let keep: Vec<_> = (0..n).map(|i| Block::new(&first, sizes(i))).collect();
            for block in keep {
                block.free(&first);
            }
            drop(first);
            done.send(()).unwrap();
            wait.recv().unwrap();
            // The first heap is gone: this thread's cache serves the second now.
            let second = second_ref;
            let blocks: Vec<_> = (0..n).map(|i| Block::new(second, sizes(i))).collect();
            assert_eq!(second.stats().thread_caches, 1, "{:?}", second.stats());
            for block in blocks {
                block.free(second);
            }
            second.check().unwrap();
        });
        bound.recv().unwrap();
        assert_eq!(first.stats().thread_caches, 1);
        // The worker's cache holds objects of the first heap: dropping it takes them back.
        let first = std::sync::Arc::into_inner(first).expect("the worker let go");
        drop(first);
        go.send(()).unwrap();
        worker.join().unwrap();
    });
    all_returned(&second);
}

/// A thread bound to one heap uses the CPU slots of another.
#[test]
fn a_second_heap_uses_the_cpu_slots() {
    let first = heap();
    let second = heap();
    thread::scope(|s| {
        s.spawn(|| {
            let a = Block::new(&first, 64);
            let b = Block::new(&second, 64);
            assert_eq!(first.stats().thread_caches, 1);
            assert_eq!(second.stats().thread_caches, 0);
            let class = smpalloc::heap::Route::of(a.1);
            let smpalloc::heap::Route::Small(class) = class else {
                panic!("64 bytes is a slab class")
            };
            let slots: isize = (0..4)
                .map(|cpu| second.cpu_stats(cpu, class).unwrap().net_allocations)
                .sum();
            assert_eq!(slots, 1, "the second heap's block came from a CPU slot");
            a.free(&first);
            b.free(&second);
        })
        .join()
        .unwrap();
    });
    all_returned(&first);
    all_returned(&second);
}

/// Records name no heap address: a heap moved while a thread's cache is bound to it keeps
/// working, and its `Drop` at the new place unbinds the cache.
#[test]
fn a_heap_may_move_while_bound() {
    // Debug builds keep several copies of the heap on the stack while it moves.
    thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move_while_bound)
        .unwrap()
        .join()
        .unwrap();
}

fn move_while_bound() {
    // Blocks before and after the move (under Miri 14: each of the seven sizes twice).
    let n = if cfg!(miri) { 14 } else { 50 };
    let heap = heap();
    let blocks: Vec<_> = (0..n).map(|i| Block::new(&heap, sizes(i))).collect();
    assert_eq!(heap.stats().thread_caches, 1);
    let moved = Box::new(heap);
    for block in blocks {
        block.free(&moved);
    }
    let more: Vec<_> = (0..n).map(|i| Block::new(&moved, sizes(i))).collect();
    assert_eq!(moved.stats().thread_caches, 1);
    for block in more {
        block.free(&moved);
    }
    all_returned(&moved);
    drop(moved);
    // This thread's cache is idle again: a new heap binds it.
    let next = heap_after_drop();
    assert_eq!(next.stats().thread_caches, 1);
}

fn heap_after_drop() -> Heap {
    let heap = heap();
    Block::new(&heap, 8).free(&heap);
    heap
}

/// 10,000 short-lived threads (8 at a time), each allocating 100 blocks and freeing most of
/// them (the rest are freed by the main thread; Miri: 8 threads of 10 blocks): held bytes and mapped records stay flat.
#[test]
fn ten_thousand_short_lived_threads_leave_the_heap_flat() {
    let heap = heap();
    let (threads, batch) = if cfg!(miri) { (8, 4) } else { (10_000, 8) };
    let blocks = if cfg!(miri) { 10 } else { 100 };
    let (mapped_before, _) = thread_cache_records();
    let mut peak_held = 0;
    let mut leftovers = Vec::new();
    for round in 0..threads / batch {
        thread::scope(|s| {
            let workers: Vec<_> = (0..batch)
                .map(|t| {
                    let heap = &heap;
                    s.spawn(move || {
                        let mut blocks: Vec<_> = (0..blocks)
                            .map(|i| Block::new(heap, sizes(i + t)))
                            .collect();
                        let kept = blocks.pop().unwrap();
                        for block in blocks {
                            block.free(heap);
                        }
                        kept
                    })
                })
                .collect();
            for worker in workers {
                leftovers.push(worker.join().unwrap());
            }
        });
        for block in leftovers.drain(..) {
            block.free(&heap);
        }
        if round % 64 == 0 {
            heap.check().unwrap();
        }
        peak_held = peak_held.max(heap.pages().held_bytes());
    }
    let stats = heap.check().unwrap();
    // Every exited thread's cache was collected (by the next binds and by `check`), and its
    // record went back to the pool for the next thread; the one left is this thread's own
    // (it freed the leftovers).
    assert_eq!(stats.thread_caches, 1, "{stats:?}");
    let (mapped_after, _) = thread_cache_records();
    // Other tests of this binary run meanwhile; each holds a few records at most.
    assert!(
        mapped_after - mapped_before <= 4 * batch,
        "records mapped: {mapped_before} -> {mapped_after}"
    );
    // Held memory is what 8 threads' caches and their slabs need, not what 10,000 did.
    assert!(peak_held <= 24 << 20, "peak held {peak_held} bytes");
    all_returned(&heap);
}
