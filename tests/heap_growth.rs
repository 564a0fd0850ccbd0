//! `SmpHeap`'s TLSF growth under contention (issue 14, defect 2): the heap returns `None` only
//! when the page source refuses. Many threads start at once on a fresh heap and each needs
//! TLSF memory that is not there yet, so growths race each other and the other threads' first
//! tries; no request may fail while the system has memory.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::{Arc, Barrier};
use std::thread;

use smpalloc::heap::{Route, SmpHeap, SystemPages};

/// Threads per round (more than the 2 cores of the development machine, so growths are
/// preempted mid-way).
const THREADS: usize = 16;
/// Blocks each thread allocates per round.
const BLOCKS: usize = 3;

/// One round: a fresh heap, `THREADS` threads released together, each allocating `BLOCKS`
/// blocks of 200 KiB (TLSF route), filling and checking them, then freeing them. Returns how
/// many allocations returned `None`.
fn round(layout: Layout) -> usize {
    let heap = Arc::new(SmpHeap::<SystemPages>::new(SystemPages::new()));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (heap, start) = (heap.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut failed = 0;
                let mut mine: Vec<NonNull<u8>> = Vec::new();
                for _ in 0..BLOCKS {
                    match heap.allocate(layout) {
                        Some(p) => {
                            // SAFETY: a fresh block of `layout.size()` bytes; the first and last
                            // bytes are enough to see an overlap with another thread's block.
                            unsafe {
                                p.as_ptr().write(t as u8);
                                p.as_ptr().add(layout.size() - 1).write(t as u8);
                            }
                            mine.push(p);
                        }
                        None => failed += 1,
                    }
                }
                for p in mine {
                    // SAFETY: written above; allocated with `layout`, freed once.
                    unsafe {
                        assert_eq!(p.as_ptr().read(), t as u8);
                        assert_eq!(p.as_ptr().add(layout.size() - 1).read(), t as u8);
                        heap.deallocate(p, layout);
                    }
                }
                failed
            })
        })
        .collect();
    let failed = handles.into_iter().map(|h| h.join().unwrap()).sum();
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.stats().tlsf_pool_bytes, 0);
    assert_eq!(heap.pages().held_bytes(), 0);
    failed
}

/// Issue 14, defect 2. Before the fix the thread that grew the arenas retried its allocation
/// once; another thread's first try could take the new pool meanwhile, and the grower returned
/// `None` (a `#[global_allocator]` then aborts). Failed within a few hundred rounds on a
/// 2-core machine.
#[test]
fn racing_tlsf_growth_never_fails() {
    let layout = Layout::from_size_align(200 << 10, 8).unwrap();
    assert_eq!(Route::of(layout), Route::Tlsf);
    let rounds = if cfg!(miri) { 1 } else { 2000 };
    // A big stack: a debug build copies the heap (about 300 KiB) through the stack on its way
    // into the `Arc`.
    thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            for r in 0..rounds {
                let failed = round(layout);
                assert_eq!(
                    failed, 0,
                    "round {r}: {failed} TLSF allocations returned None while the system had memory"
                );
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
