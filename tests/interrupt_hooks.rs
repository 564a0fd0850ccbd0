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

use core::alloc::Layout;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::sync::{LazyLock, Mutex, Once};

use smpalloc::heap::{SmpHeap, SystemPages};
use smpalloc::page::BuddyPageAllocator;
use smpalloc::{SpinLock, percpu};

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
                let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1);
                let mut live: Vec<(core::ptr::NonNull<u8>, Layout)> = Vec::new();
                let mut pages = Vec::new();
                for _ in 0..20_000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let size = match rng % 8 {
                        0 => 5000 + (rng >> 8) as usize % 60_000, // TLSF
                        1 => 300_000,                             // huge
                        _ => 1 + (rng >> 8) as usize % 4096,      // slab classes
                    };
                    if live.len() < 200 && rng % 3 != 0 {
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        live.push((HEAP.allocate(layout).unwrap(), layout));
                    } else if let Some((p, layout)) = live.pop() {
                        // SAFETY: allocated above with `layout`, freed once.
                        unsafe { HEAP.deallocate(p, layout) };
                    }
                    if rng % 5 == 0 {
                        let count = 1 + (rng >> 20) as usize % 3;
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
