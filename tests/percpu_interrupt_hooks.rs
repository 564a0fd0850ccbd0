//! The interrupt hooks (`percpu::set_interrupt_hooks`): every blocking lock runs with
//! "interrupts" off, the per-CPU fast paths pay nothing, and an "interrupt handler" that
//! allocates at any moment interrupts are on never waits for a lock its own CPU holds.
//!
//! Interrupts are simulated per thread: `off`/`on` keep a depth counter (xv6's
//! `push_off`/`pop_off`), and when the depth returns to 0 a pending "interrupt" is delivered
//! right there, on the same thread, running a handler that allocates and frees from the same
//! heap and page allocator. A lock held with interrupts on at that moment would make the
//! handler spin forever: a watchdog turns that into a failure.
//!
//! The hooks are process-wide, so this file is its own test binary and every test in it runs
//! with them.

mod support;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex, Once};

use smpalloc::heap::{SmpHeap, SystemPages};
use smpalloc::page::BuddyPageAllocator;
use smpalloc::{AllocError, SpinLock, percpu};
use support::Rng;

thread_local! {
    /// `off` calls not yet matched by `on`.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// All `off` calls on this thread.
    static OFF_CALLS: Cell<usize> = const { Cell::new(0) };
    /// Inside the simulated handler (interrupts stay off, no nesting).
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// The handler to run when interrupts come back on.
    static HANDLER: Cell<Option<fn()>> = const { Cell::new(None) };
    /// Interrupts delivered on this thread.
    static DELIVERED: Cell<usize> = const { Cell::new(0) };
}

fn off() {
    DEPTH.with(|d| d.set(d.get() + 1));
    OFF_CALLS.with(|c| c.set(c.get() + 1));
}

fn on() {
    let depth = DEPTH.with(|d| {
        let depth = d.get().checked_sub(1).expect("interrupts on without off");
        d.set(depth);
        depth
    });
    if depth == 0 && !IN_HANDLER.get() {
        if let Some(handler) = HANDLER.get() {
            IN_HANDLER.set(true);
            // Hardware enters a handler with interrupts off: so does this one.
            handler();
            DELIVERED.with(|n| n.set(n.get() + 1));
            IN_HANDLER.set(false);
        }
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| percpu::set_interrupt_hooks(off, on));
}

/// Tests share the hooks and the statics below: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn depth() -> usize {
    DEPTH.get()
}

fn off_calls() -> usize {
    OFF_CALLS.get()
}

#[test]
fn lock_and_try_lock_hold_interrupts_off_until_the_guard_is_gone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install();
    let a = SpinLock::new(1);
    let b = SpinLock::new(2);
    assert_eq!(depth(), 0);
    let ga = a.lock();
    assert_eq!(depth(), 1);
    let gb = b.try_lock().expect("b is free");
    assert_eq!(depth(), 2);
    assert!(a.try_lock().is_none());
    assert_eq!(
        depth(),
        2,
        "a failed try_lock turns interrupts back on at once"
    );
    // Out of order: the depth counter, not a saved state, decides when interrupts return.
    drop(ga);
    assert_eq!(depth(), 1);
    drop(gb);
    assert_eq!(depth(), 0);
    let before = off_calls();
    let g = a.try_lock_unmasked().expect("a is free");
    assert_eq!(
        (depth(), off_calls()),
        (0, before),
        "try_lock_unmasked calls no hook"
    );
    drop(g);
    assert_eq!(depth(), 0);
}

static HEAP: SmpHeap<SystemPages, 4> = SmpHeap::new(SystemPages::new());
/// A buddy zone over 4 MiB of address space (never touched: pages are only counted).
static PAGES: LazyLock<BuddyPageAllocator<4096, 4, 4>> = LazyLock::new(|| {
    let layout = Layout::from_size_align(4 << 20, 64 << 10).unwrap();
    // SAFETY: a non-zero layout; the memory is never freed (the allocator is a static).
    let base = unsafe { std::alloc::alloc(layout) } as usize;
    assert_ne!(base, 0);
    let pages = BuddyPageAllocator::with_window(base, 4 << 20);
    pages.add_memory(base, 4 << 20).unwrap();
    pages
});

/// The simulated handler: allocates and frees on every route a kernel's handler might use.
fn handler() {
    assert_eq!(
        depth(),
        0,
        "entered with interrupts off but no lock counted"
    );
    let small = Layout::from_size_align(48, 8).unwrap();
    let odd = Layout::from_size_align(6000, 64).unwrap();
    for layout in [small, odd] {
        let p = HEAP.allocate(layout).expect("handler allocation");
        // SAFETY: `p` was allocated just above with `layout` and is freed once.
        unsafe { HEAP.deallocate(p, layout) };
    }
    if let Ok(page) = PAGES.alloc_pages(1, 4096) {
        PAGES.dealloc_pages(page, 1);
    }
}

#[test]
fn fast_paths_call_no_hook() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install();
    let layout = Layout::from_size_align(32, 8).unwrap();
    // Warm the magazine, then alloc/free pairs stay in it.
    let warm = HEAP.allocate(layout).unwrap();
    // SAFETY: allocated just above with `layout`.
    unsafe { HEAP.deallocate(warm, layout) };
    let before = off_calls();
    for _ in 0..8 {
        let p = HEAP.allocate(layout).unwrap();
        // SAFETY: as above.
        unsafe { HEAP.deallocate(p, layout) };
    }
    // Debug builds check each freed object's slab under the class lock; release builds touch
    // only the CPU's slot, taken with `try_lock_unmasked`.
    let masked = if cfg!(debug_assertions) { 8 } else { 0 };
    assert_eq!(
        off_calls() - before,
        masked,
        "the magazine fast path masks nothing"
    );
    assert_eq!(depth(), 0);
}

#[test]
fn a_handler_that_allocates_whenever_interrupts_come_on_never_deadlocks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install();
    LazyLock::force(&PAGES);
    // A deadlocked handler spins forever: fail instead of hanging.
    static FINISHED: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        if !FINISHED.load(Ordering::Relaxed) {
            eprintln!("an interrupt handler deadlocked on a lock its CPU held");
            std::process::abort();
        }
    });
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                HANDLER.set(Some(handler));
                let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1));
                let mut live: Vec<(core::ptr::NonNull<u8>, Layout)> = Vec::new();
                let mut pages = Vec::new();
                for _ in 0..20_000 {
                    let size = match rng.below(8) {
                        0 => 5000 + rng.below(60_000), // TLSF
                        1 => 300_000,                  // huge
                        _ => 1 + rng.below(4096),      // slab classes
                    };
                    if live.len() < 200 && rng.below(3) != 0 {
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        live.push((HEAP.allocate(layout).unwrap(), layout));
                    } else if let Some((p, layout)) = live.pop() {
                        // SAFETY: allocated above with `layout`, freed once.
                        unsafe { HEAP.deallocate(p, layout) };
                    }
                    if rng.below(5) == 0 {
                        let count = 1 + rng.below(3);
                        match PAGES.alloc_pages(count, 4096) {
                            Ok(page) => pages.push((page, count)),
                            Err(_) => {
                                for (page, count) in pages.drain(..) {
                                    PAGES.dealloc_pages(page, count);
                                }
                            }
                        }
                    }
                    assert_eq!(depth(), 0, "every lock released turns interrupts back on");
                }
                for (p, layout) in live {
                    // SAFETY: as above.
                    unsafe { HEAP.deallocate(p, layout) };
                }
                let delivered = DELIVERED.get();
                assert!(delivered > 1000, "only {delivered} interrupts delivered");
                HANDLER.set(None);
                for (page, count) in pages {
                    PAGES.dealloc_pages(page, count);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    FINISHED.store(true, Ordering::Relaxed);
    HEAP.check().unwrap();
    PAGES.check().unwrap();
}

// -------------------------------------------------------------------------------------------
// Issue 14, defect 4: an allocation that fails inside a handler must not wait for the page
// cache the interrupted code holds.

/// Fails the test binary (abort: a spinning thread cannot be unwound) unless the returned
/// sender is dropped within a minute: a deadlocked handler spins forever.
fn watchdog(what: &'static str) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(60)) {
            eprintln!("hang detected: {what}: an interrupt handler waits for a lock its CPU holds");
            std::process::abort();
        }
    });
    done
}

/// One CPU slot, so every thread uses the same page cache; 16 pages, caches of high watermark
/// 2 and batch 1.
type Tight = BuddyPageAllocator<4096, 4, 1>;
type TightHeap = SmpHeap<&'static Tight, 2>;
/// What a defect-4 handler does.
type Action = fn(&'static Tight, &'static TightHeap);

thread_local! {
    /// The allocator the one-shot handler of the current test uses.
    static TIGHT: Cell<Option<&'static Tight>> = const { Cell::new(None) };
    /// The heap over it.
    static TIGHT_HEAP: Cell<Option<&'static TightHeap>> = const { Cell::new(None) };
    /// What the handler does (runs once, then the handler unregisters itself).
    static TIGHT_ACTION: Cell<Option<Action>> = const { Cell::new(None) };
    /// The page the handler's one-page allocation got.
    static HANDLER_PAGE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The handler of the defect-4 tests: first takes the one page the zone holds (its CPU's cache
/// is busy, so it comes from the zone), then runs the test's action on an empty zone.
fn tight_handler() {
    HANDLER.set(None); // one shot
    let pages = TIGHT.get().unwrap();
    let heap = TIGHT_HEAP.get().unwrap();
    let page = pages.alloc_pages(1, 4096).expect("the zone holds one page");
    HANDLER_PAGE.set(Some(page));
    (TIGHT_ACTION.get().unwrap())(pages, heap);
    pages.try_dealloc_pages(page, 1).unwrap();
}

/// Sets up the state of the issue and delivers an interrupt into it: every page allocated, the
/// CPU's cache at its high watermark, then a free that drains one page to the zone while it
/// holds the cache; the interrupt arrives as the zone lock is released (interrupts back on),
/// the cache still held. `action` runs in the handler after it took the zone's page.
fn interrupted_free(what: &'static str, action: Action) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install();
    // Real memory: the heap writes its headers into whatever it gets (here: nothing).
    let layout = Layout::from_size_align(16 * 4096, 16 * 4096).unwrap();
    // SAFETY: a non-zero layout; leaked (the allocator lives for the rest of the test).
    let base = unsafe { std::alloc::alloc(layout) }.expose_provenance();
    assert_ne!(base, 0);
    let pages: &'static Tight = Box::leak(Box::new(
        Tight::with_window(base, 16 * 4096).with_watermarks(2, 1),
    ));
    pages.add_memory(base, 16 * 4096).unwrap();
    let heap: &'static TightHeap = Box::leak(Box::new(SmpHeap::new(pages)));
    TIGHT.set(Some(pages));
    TIGHT_HEAP.set(Some(heap));
    TIGHT_ACTION.set(Some(action));
    HANDLER_PAGE.set(None);
    let all: Vec<usize> = (0..16)
        .map(|_| pages.alloc_pages(1, 4096).unwrap())
        .collect();
    assert_eq!(pages.alloc_pages(1, 4096), Err(AllocError::NoMemory));
    // Two frees fill the cache to its high watermark (no lock but the cache's: no interrupt).
    pages.try_dealloc_pages(all[0], 1).unwrap();
    pages.try_dealloc_pages(all[1], 1).unwrap();
    let done = watchdog(what);
    let delivered = DELIVERED.get();
    HANDLER.set(Some(tight_handler));
    // The third free holds the cache, drains its oldest page (`all[0]`) to the zone under the
    // zone lock, and is interrupted when that lock is released.
    pages.try_dealloc_pages(all[2], 1).unwrap();
    drop(done);
    assert_eq!(
        DELIVERED.get(),
        delivered + 1,
        "the interrupt was delivered"
    );
    assert!(HANDLER.get().is_none(), "the handler ran once");
    assert_eq!(
        HANDLER_PAGE.get(),
        Some(all[0]),
        "the handler ran while the cache was held (its page came from the zone)"
    );
    pages.check().unwrap();
    heap.check().unwrap();
    // Nothing lost: the cache holds the second free's page and the interrupted free's.
    assert_eq!(pages.cached_pages(), 2);
    assert_eq!(pages.used_pages(), 13);
    for &page in &all[3..] {
        pages.try_dealloc_pages(page, 1).unwrap();
    }
    pages.drain_cpu_caches();
    assert_eq!(pages.used_pages(), 0);
    assert_eq!(pages.free_blocks()[4], 1);
    pages.check().unwrap();
}

/// The reproducer: the handler asks the buddy for 2 pages, which fails.
#[test]
fn a_failing_page_allocation_in_a_handler_does_not_wait_for_the_held_cache() {
    interrupted_free("buddy alloc_pages(2)", |pages, _| {
        assert_eq!(pages.alloc_pages(2, 4096), Err(AllocError::NoMemory));
        assert_eq!(pages.alloc_pages(1, 4096), Err(AllocError::NoMemory));
        assert_eq!(pages.alloc_order(1), Err(AllocError::NoMemory));
        assert_eq!(pages.alloc_order(0), Err(AllocError::NoMemory));
    });
}

/// `alloc_pages_at` drains the caches before reporting `MemoryOverlap`: the same path.
#[test]
fn a_failing_alloc_pages_at_in_a_handler_does_not_wait_for_the_held_cache() {
    interrupted_free("buddy alloc_pages_at", |pages, _| {
        let page = HANDLER_PAGE.get().unwrap();
        assert_eq!(
            pages.alloc_pages_at(page, 1, 4096),
            Err(AllocError::MemoryOverlap)
        );
    });
}

/// The explicit drain, called from a handler, skips the busy cache instead of waiting for it.
#[test]
fn drain_cpu_caches_in_a_handler_skips_the_held_cache() {
    interrupted_free("buddy drain_cpu_caches", |pages, _| {
        assert!(!pages.drain_cpu_caches(), "the held cache is skipped");
    });
}

/// The heap's slab refill over the exhausted buddy fails in the handler: the buddy's failure
/// path must not wait either.
#[test]
fn a_failing_slab_refill_in_a_handler_does_not_wait_for_the_held_cache() {
    interrupted_free("heap slab refill", |_, heap| {
        for size in [8, 64, 1024, 4096] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            assert_eq!(heap.allocate(layout), None::<NonNull<u8>>, "{size}");
        }
    });
}

/// TLSF growth and huge blocks over the exhausted buddy, in the handler.
#[test]
fn a_failing_tlsf_growth_or_huge_block_in_a_handler_does_not_wait_for_the_held_cache() {
    interrupted_free("heap TLSF growth / huge block", |_, heap| {
        for (size, align) in [(6000, 8), (100 << 10, 8), (300 << 10, 8), (64, 8192)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            assert_eq!(heap.allocate(layout), None::<NonNull<u8>>, "{size}");
        }
    });
}
