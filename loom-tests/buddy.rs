//! Loom models of `BuddyPageAllocator`'s protocols (docs/design/05-pages.md §"BuddyPageAllocator" and §"Per-CPU page caches"): splits racing
//! merges through the per-CPU caches, cache refill and drain racing a remote free, double
//! frees racing, two threads on one CPU slot (a migrated thread), a partial free racing the
//! exact free (allocation links), 2-page blocks through the caches (invariant C), an interrupt handler whose allocation fails while its CPU
//! holds its cache (the drain skips it), and exact counters at the end. Empty unless built
//! with `--cfg loom`.
//!
//! The allocator is shrunk to a window of 4 pages (`MAX_ORDER = 2`, one maximal block), two
//! CPU slots, caches of high watermark 2 and batch 1 (`PCP_*` under loom), so every
//! operation crosses split, merge, refill or drain boundaries.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_buddy`
#![cfg(loom)]

use core::cell::{Cell, RefCell};

use loom::sync::Arc;
use loom::thread;
use smpalloc::AllocError;
use smpalloc::page::BuddyPageAllocator;
use smpalloc::percpu::{set_interrupt_hooks, set_model_cpu};

const P: usize = 4096;
const BASE: usize = 0x10_0000;
type Pages = BuddyPageAllocator<P, 2, 2>;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn setup(high: usize, batch: usize) -> Arc<Pages> {
    let pages = Pages::with_window(BASE, 4 * P).with_watermarks(high, batch);
    pages.add_memory(BASE, 4 * P).unwrap();
    Arc::new(pages)
}

/// The end state: invariants hold, `used` pages are allocated, and after draining the caches
/// every free page is back in the zone merged into maximal blocks (the whole window free is
/// one order-2 block).
fn assert_exact(pages: &Pages, used: usize) {
    pages.check().unwrap();
    assert_eq!(pages.used_pages(), used);
    assert_eq!(pages.available_pages(), 4 - used);
    pages.drain_cpu_caches();
    pages.check().unwrap();
    assert_eq!(pages.cached_pages(), 0);
    if used == 0 {
        assert_eq!(pages.free_blocks()[2], 1, "free buddies left unmerged");
    }
}

/// One thread frees a single page through its CPU cache (high watermark 1: the free drains
/// to the zone and merges) while another splits a block for a 2-page allocation.
#[test]
fn split_races_merge_through_pcp() {
    model(|| {
        let pages = setup(1, 1);
        set_model_cpu(0);
        let single = pages.alloc_pages(1, P).unwrap();
        let other = pages.clone();
        let splitter = thread::spawn(move || {
            set_model_cpu(1);
            other.alloc_pages(2, 2 * P)
        });
        pages.try_dealloc_pages(single, 1).unwrap();
        pages
            .try_dealloc_pages(pages.alloc_pages(1, P).unwrap(), 1)
            .unwrap();
        let pair = splitter
            .join()
            .unwrap()
            .expect("two aligned pages are always free");
        assert_eq!(pair % (2 * P), 0);
        assert_exact(&pages, 2);
        pages.try_dealloc_pages(pair, 2).unwrap();
        assert_exact(&pages, 0);
    });
}

/// CPU 0 refills its cache and frees back into it while CPU 1 frees a page CPU 0 allocated
/// (a remote free, into CPU 1's cache) and then drains every cache.
#[test]
fn refill_and_drain_race_remote_free() {
    model(|| {
        let pages = setup(2, 1);
        set_model_cpu(0);
        let remote = pages.alloc_pages(1, P).unwrap();
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(1);
            other.try_dealloc_pages(remote, 1).unwrap();
            other.drain_cpu_caches();
        });
        let a = pages.alloc_pages(1, P).unwrap();
        let b = pages.alloc_pages(1, P).unwrap();
        assert_ne!(a, b);
        pages.try_dealloc_pages(a, 1).unwrap();
        t.join().unwrap();
        assert_exact(&pages, 1);
        pages.try_dealloc_pages(b, 1).unwrap();
        assert_exact(&pages, 0);
    });
}

/// Two racing frees of one allocation: exactly one succeeds, the other is `NotAllocated`.
fn assert_one_frees(mine: Result<(), AllocError>, theirs: Result<(), AllocError>) {
    assert!(
        matches!(
            (mine, theirs),
            (Ok(()), Err(AllocError::NotAllocated)) | (Err(AllocError::NotAllocated), Ok(()))
        ),
        "{mine:?} {theirs:?}"
    );
}

/// Two threads free the same page at once (a double free): exactly one succeeds, the page is
/// parked or freed once, and the counters stay exact.
#[test]
fn racing_double_free_frees_once() {
    model(|| {
        let pages = setup(2, 1);
        set_model_cpu(0);
        let page = pages.alloc_pages(1, P).unwrap();
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(1);
            other.try_dealloc_pages(page, 1)
        });
        let mine = pages.try_dealloc_pages(page, 1);
        let theirs = t.join().unwrap();
        assert_one_frees(mine, theirs);
        assert_exact(&pages, 0);
    });
}

/// Two threads on one CPU slot (a thread that migrated after reading its CPU id): the one
/// that finds the cache locked goes to the zone; no page is handed out twice.
#[test]
fn shared_slot_falls_back_to_zone() {
    model(|| {
        let pages = setup(2, 1);
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(0);
            let page = other.alloc_pages(1, P).unwrap();
            other.try_dealloc_pages(page, 1).unwrap();
            other.alloc_pages(1, P).unwrap()
        });
        set_model_cpu(0);
        let mine = pages.alloc_pages(1, P).unwrap();
        let theirs = t.join().unwrap();
        assert_ne!(mine, theirs, "one page handed out twice");
        assert_exact(&pages, 2);
    });
}

/// A free of the first 2 pages of a 3-page allocation (blocks `0..2` with `MORE`, `2` with
/// `CONT`) races the exact free: the partial one never claims a block (its one block expects
/// `ALLOC | 1` without links), so it always fails and the exact one always succeeds.
/// Mutation: allocation states without links (every block `ALLOC | k`, as they once were) let
/// the partial free win.
#[test]
fn partial_free_races_exact_free() {
    model(|| {
        let pages = setup(2, 1);
        set_model_cpu(0);
        let a = pages.alloc_pages(3, P).unwrap();
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(1);
            (
                other.try_dealloc_pages(a, 2),
                other.try_dealloc_pages(a + 2 * P, 1),
            )
        });
        let exact = pages.try_dealloc_pages(a, 3);
        let (part, tail) = t.join().unwrap();
        assert_eq!(exact, Ok(()));
        assert_eq!(part, Err(AllocError::NotAllocated));
        assert_eq!(tail, Err(AllocError::NotAllocated));
        assert_exact(&pages, 0);
    });
}

/// Invariant C (blocks of order `k > 0` in the per-CPU caches): CPU 0 allocates two 2-page
/// blocks (its order-1 stack refills from the zone) and frees one into its cache, while CPU 1
/// frees the other (a remote free, into CPU 1's cache) racing CPU 0's double free of it, and
/// drains every cache; CPU 0 then allocates a 2-page block again (from its cache, or the zone
/// after the drain). Exactly one of the racing frees succeeds, no block is handed out twice,
/// and after draining the window merges back into one block.
/// Mutation: a load-then-store instead of the claim CAS lets both frees park the block.
#[test]
fn blocks_through_caches_race_double_free_and_drain() {
    model(|| {
        let pages = setup(2, 1);
        set_model_cpu(0);
        let a = pages.alloc_pages(2, P).unwrap();
        let b = pages.alloc_pages(2, 2 * P).unwrap();
        assert_ne!(a, b);
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(1);
            let freed = other.try_dealloc_pages(b, 2);
            other.drain_cpu_caches();
            freed
        });
        let mine = pages.try_dealloc_pages(b, 2);
        pages.try_dealloc_pages(a, 2).unwrap();
        let again = pages.alloc_pages(2, 2 * P).unwrap();
        let theirs = t.join().unwrap();
        assert_one_frees(mine, theirs);
        assert_exact(&pages, 2);
        // The other block is free (parked or in the zone): one more 2-page block exists, and
        // no third one.
        let last = pages.alloc_pages(2, 2 * P).unwrap();
        assert_ne!(last, again, "one block handed out twice");
        assert_eq!(pages.alloc_pages(2, P), Err(AllocError::NoMemory));
        pages.try_dealloc_pages(last, 2).unwrap();
        pages.try_dealloc_pages(again, 2).unwrap();
        assert_exact(&pages, 0);
    });
}

// Simulated interrupts (as in tests/percpu_interrupt_hooks.rs): `off`/`on` count a per-thread depth,
// and when it returns to 0 a pending handler runs right there, on the same model thread.
loom::thread_local! {
    static DEPTH: Cell<usize> = Cell::new(0);
    static HANDLER: RefCell<Option<Arc<Pages>>> = RefCell::new(None);
    static HANDLER_RESULT: Cell<Option<Result<usize, AllocError>>> = Cell::new(None);
}

fn off() {
    DEPTH.with(|d| d.set(d.get() + 1));
}

fn on() {
    let depth = DEPTH.with(|d| {
        d.set(d.get() - 1);
        d.get()
    });
    if depth == 0 {
        // One shot: the handler is taken before it runs.
        if let Some(pages) = HANDLER.with(|h| h.borrow_mut().take()) {
            // Hardware enters a handler with interrupts off.
            DEPTH.with(|d| d.set(1));
            let result = pages.alloc_pages(2, P);
            if let Ok(pair) = result {
                pages.try_dealloc_pages(pair, 2).unwrap();
            }
            HANDLER_RESULT.with(|r| r.set(Some(result)));
            DEPTH.with(|d| d.set(0));
        }
    }
}

/// Regression (a drain waiting on a cache an interrupted free holds). CPU 0's cache is at its
/// high watermark; a free on CPU 0 holds the cache, returns a batch to the zone, and is
/// interrupted as the zone lock is released. The handler asks for 2 pages; meanwhile CPU 1
/// frees a page into its own cache and drains every cache. The handler's allocation may succeed
/// (when CPU 1's drain made a free pair) or fail, but it never waits for CPU 0's cache (the
/// drain skips it), and nothing is lost. (When CPU 1's drain empties CPU 0's cache first, the
/// free does not touch the zone and no interrupt comes in it; the handler is then withdrawn.)
/// Mutation: a drain that `lock`s the caches spins forever in the handler (loom reports it).
#[test]
fn failing_allocation_in_a_handler_skips_the_held_cache() {
    static HOOKS: std::sync::Once = std::sync::Once::new();
    static DELIVERED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    HOOKS.call_once(|| set_interrupt_hooks(off, on));
    model(|| {
        let pages = setup(2, 1);
        set_model_cpu(0);
        let all: Vec<usize> = (0..4).map(|_| pages.alloc_pages(1, P).unwrap()).collect();
        pages.try_dealloc_pages(all[0], 1).unwrap();
        pages.try_dealloc_pages(all[1], 1).unwrap();
        let other = pages.clone();
        let remote = all[3];
        let t = thread::spawn(move || {
            set_model_cpu(1);
            other.try_dealloc_pages(remote, 1).unwrap();
            other.drain_cpu_caches();
        });
        HANDLER.with(|h| *h.borrow_mut() = Some(pages.clone()));
        pages.try_dealloc_pages(all[2], 1).unwrap();
        HANDLER.with(|h| h.borrow_mut().take());
        if let Some(result) = HANDLER_RESULT.with(Cell::take) {
            DELIVERED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            assert!(
                matches!(result, Ok(_) | Err(AllocError::NoMemory)),
                "{result:?}"
            );
        }
        t.join().unwrap();
        assert_exact(&pages, 0);
    });
    assert!(DELIVERED.load(core::sync::atomic::Ordering::Relaxed) > 0);
}
