//! Pinned mode (`percpu::set_pin_hooks`, docs/design/02-percpu.md §"The CPU-local section (pinned mode)"): the heap's magazines and the buddy's
//! page caches as CPU-local sections. Each test thread plays one CPU (a fixed id, one thread
//! per id at a time); "pinning" keeps a per-thread depth. A simulated interrupt is delivered
//! from the interrupt hook `off` while the thread is inside a section (the section's slow path
//! takes a lock): the handler allocates and frees from the same heap or buddy, must find the
//! slot busy, take the slow path and leave every structure consistent (`check`).
//!
//! The hooks are process-wide, so this file is its own test binary, and its tests run one at a
//! time.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::{LazyLock, Mutex, MutexGuard, Once};
use std::thread;

use smpalloc::BuddyPageAllocator;
use smpalloc::heap::{HEAP_CLASSES, SmpHeap, SystemPages};
use smpalloc::percpu;

thread_local! {
    /// This thread's CPU id.
    static CPU: Cell<usize> = const { Cell::new(0) };
    /// Pin depth.
    static PINNED: Cell<usize> = const { Cell::new(0) };
    /// All `pin` calls on this thread.
    static PINS: Cell<usize> = const { Cell::new(0) };
    /// Interrupt-off depth.
    static MASKED: Cell<usize> = const { Cell::new(0) };
    /// The handler to deliver at the next `off` inside a section.
    static ARMED: Cell<Option<fn()>> = const { Cell::new(None) };
    /// Handlers delivered.
    static DELIVERED: Cell<usize> = const { Cell::new(0) };
}

fn cpu() -> usize {
    CPU.get()
}

fn pin() {
    PINNED.set(PINNED.get() + 1);
    PINS.set(PINS.get() + 1);
}

fn unpin() {
    PINNED.set(PINNED.get().checked_sub(1).expect("unpin without pin"));
}

/// "Interrupts off": an interrupt that was pending arrives just before, while the thread is
/// pinned (inside a CPU-local section whose slow path is taking a lock).
fn off() {
    if MASKED.get() == 0 && PINNED.get() > 0 {
        if let Some(handler) = ARMED.take() {
            handler();
            DELIVERED.set(DELIVERED.get() + 1);
        }
    }
    MASKED.set(MASKED.get() + 1);
}

fn on() {
    MASKED.set(MASKED.get().checked_sub(1).expect("on without off"));
}

fn install() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    static ONCE: Once = Once::new();
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ONCE.call_once(|| {
        percpu::set_cpu_id_source(cpu);
        percpu::set_interrupt_hooks(off, on);
        // SAFETY: every test thread has a unique CPU id while it runs (tests are serial, and
        // threads of one test get distinct ids); a thread never migrates "CPUs"; nothing here
        // locks a heap or buddy slot except through the allocators.
        unsafe { percpu::set_pin_hooks(pin, unpin) };
    });
    assert!(percpu::pinned_mode());
    CPU.set(0);
    serial
}

type Heap = SmpHeap<SystemPages, 4>;

/// Rounds of the threaded tests (fewer under Miri).
const ROUNDS: usize = if cfg!(miri) { 3 } else { 20 };
/// Blocks each CPU allocates per round of the heap's threaded test (fewer under Miri).
const PER_ROUND: usize = if cfg!(miri) { 40 } else { 100 };
type Pages = BuddyPageAllocator<4096, 4, 4>;

/// A buddy over 4 MiB of address space (never touched: pages are only counted), and that
/// address space, given back when it is dropped.
struct Window {
    pages: Box<Pages>,
    /// A pointer, not an address, so that Miri sees the static window as reachable.
    base: NonNull<u8>,
}

// SAFETY: the window's memory is never read or written, only given back on drop.
unsafe impl Send for Window {}
// SAFETY: as above.
unsafe impl Sync for Window {}

const WINDOW: usize = 4 << 20;

fn window_layout() -> Layout {
    Layout::from_size_align(WINDOW, 64 << 10).unwrap()
}

fn pages() -> Window {
    // SAFETY: a non-zero layout.
    let base = NonNull::new(unsafe { std::alloc::alloc(window_layout()) }).unwrap();
    let start = base.as_ptr().expose_provenance();
    let pages = Box::new(Pages::with_window(start, WINDOW));
    pages.add_memory(start, WINDOW).unwrap();
    Window { pages, base }
}

impl core::ops::Deref for Window {
    type Target = Pages;
    fn deref(&self) -> &Pages {
        &self.pages
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: allocated in `pages` with this layout; the buddy never touched it.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), window_layout()) };
    }
}

fn small(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The heap and class the armed heap handler uses (a static: handlers are `fn()`).
static HANDLER_HEAP: Heap = SmpHeap::new(SystemPages::new());
/// The buddy the armed page handler uses (a static: handlers are `fn()`).
static HANDLER_PAGES: LazyLock<Window> = LazyLock::new(pages);

/// Runs while the interrupted thread is inside its slot (its refill is taking the class
/// lock): an allocation must not touch the slot (slow path: the slot's counters stay), and a
/// free neither.
fn heap_handler() {
    let layout = small(200);
    let slot = || {
        (0..HEAP_CLASSES)
            .map(|class| {
                let stats = HANDLER_HEAP.cpu_stats(cpu(), class).unwrap();
                (stats.net_allocations, stats.magazine_fill)
            })
            .collect::<Vec<_>>()
    };
    let before = slot();
    let p = HANDLER_HEAP.allocate(layout).expect("handler allocation");
    // SAFETY: fresh block of 200 bytes.
    unsafe { p.as_ptr().write_bytes(0xa5, 200) };
    // SAFETY: allocated just above with `layout`, freed once.
    unsafe { HANDLER_HEAP.deallocate(p, layout) };
    assert_eq!(before, slot(), "the handler went through the busy slot");
}

/// Runs while the interrupted thread is inside its page cache (refilling it under the zone
/// lock, which it is about to take): the handler's page comes from the zone and goes back to
/// it; the caches' published sizes do not move.
fn page_handler() {
    let pages = &*HANDLER_PAGES;
    let cached = pages.cached_pages();
    let page = pages.alloc_pages(1, 4096).expect("handler page");
    assert_eq!(
        pages.cached_pages(),
        cached,
        "the handler used the busy cache"
    );
    pages.try_dealloc_pages(page, 1).unwrap();
    assert_eq!(
        pages.cached_pages(),
        cached,
        "the handler used the busy cache"
    );
}

#[test]
fn heap_interrupt_inside_a_section_takes_the_slow_path() {
    let _serial = install();
    let heap = &HANDLER_HEAP;
    let pins = PINS.get();
    // The first allocation of a class refills its magazine: the interrupt arrives there.
    ARMED.set(Some(heap_handler));
    let mut blocks: Vec<(NonNull<u8>, Layout)> = Vec::new();
    // Under Miri 60 sizes (8 to 256 bytes), natively 300 (each size several times).
    for i in 0..if cfg!(miri) { 60 } else { 300 } {
        let layout = small(8 + (i * 24) % 250);
        let p = heap.allocate(layout).unwrap();
        // SAFETY: fresh block of `layout.size()` bytes.
        unsafe { p.as_ptr().write_bytes(i as u8, layout.size()) };
        blocks.push((p, layout));
    }
    assert_eq!(
        DELIVERED.get(),
        1,
        "the interrupt was delivered inside a section"
    );
    assert!(PINS.get() > pins, "the pinned path ran");
    assert_eq!(PINNED.get(), 0, "pins and unpins balance");
    heap.check().unwrap();
    // Enough of one class that frees overflow both magazines and the depot (at most
    // `depot_limit(class)` magazines, exchanged without a lock): a spill past the depot's limit
    // takes the class lock.
    let smpalloc::heap::Route::Small(class) = smpalloc::heap::Route::of(small(64)) else {
        unreachable!("64 bytes is a slab class")
    };
    for i in 0..(smpalloc::heap::depot_limit(class) + 3) * smpalloc::heap::MAGAZINE {
        let layout = small(64);
        let p = heap.allocate(layout).unwrap();
        // SAFETY: fresh block of 64 bytes.
        unsafe { p.as_ptr().write_bytes(i as u8, 64) };
        blocks.push((p, layout));
    }
    heap.check().unwrap();
    ARMED.set(Some(heap_handler));
    for (p, layout) in blocks.into_iter().rev() {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { heap.deallocate(p, layout) };
    }
    assert_eq!(
        DELIVERED.get(),
        2,
        "the second interrupt arrived inside a spill"
    );
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    heap.check().unwrap();
    assert_eq!(heap.stats().small_bytes, 0);
    assert_eq!(heap.pages().held_bytes(), 0, "every slab went back");
}

#[test]
fn heap_one_thread_per_cpu_with_cross_cpu_frees() {
    let _serial = install();
    let heap: &Heap = &Box::new(SmpHeap::new(SystemPages::new()));
    let handoff: &Mutex<Vec<(usize, Layout)>> = &Mutex::new(Vec::new());
    thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|id| {
                scope.spawn(move || {
                    CPU.set(id);
                    for round in 0..ROUNDS {
                        let mut mine = Vec::new();
                        for i in 0..PER_ROUND {
                            let layout = small(8 + (id * 37 + i * 13 + round) % 500);
                            let p = heap.allocate(layout).unwrap();
                            // SAFETY: fresh block.
                            unsafe { p.as_ptr().write_bytes(id as u8, layout.size()) };
                            mine.push((p.as_ptr() as usize, layout));
                        }
                        // Half to whichever CPU frees next; free what others left.
                        let theirs: Vec<_> = {
                            let mut shared = handoff.lock().unwrap();
                            let theirs = core::mem::take(&mut *shared);
                            shared.extend(mine.drain(..PER_ROUND / 2));
                            theirs
                        };
                        for (addr, layout) in mine.into_iter().chain(theirs) {
                            // SAFETY: a live block of this heap with `layout`, freed once.
                            unsafe {
                                heap.deallocate(NonNull::new(addr as *mut u8).unwrap(), layout)
                            };
                        }
                    }
                    // Each CPU returns its own slot (docs/design/02-percpu.md §"The CPU-local section (pinned mode)").
                    heap.drain_cpu_caches();
                    assert_eq!(PINNED.get(), 0);
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
    for (addr, layout) in handoff.lock().unwrap().drain(..) {
        // SAFETY: as above.
        unsafe { heap.deallocate(NonNull::new(addr as *mut u8).unwrap(), layout) };
    }
    heap.drain_cpu_caches();
    heap.check().unwrap();
    for class in 0..HEAP_CLASSES {
        let stats = heap.class_stats(class).unwrap();
        assert_eq!(
            (stats.allocated, stats.magazine_objects),
            (0, 0),
            "class {class}"
        );
    }
    heap.reclaim();
    assert_eq!(heap.pages().held_bytes(), 0);
}

#[test]
fn buddy_interrupt_inside_a_section_takes_the_slow_path() {
    let _serial = install();
    let pages = &*HANDLER_PAGES;
    let total = pages.total_pages();
    // The first allocation refills the empty cache under the zone lock: the interrupt arrives.
    ARMED.set(Some(page_handler));
    let mut held: Vec<usize> = (0..100)
        .map(|_| pages.alloc_pages(1, 4096).unwrap())
        .collect();
    assert_eq!(DELIVERED.get(), 1);
    pages.check().unwrap();
    // Frees fill the cache to its high watermark; the drain of a batch takes the zone lock.
    ARMED.set(Some(page_handler));
    for page in held.drain(..) {
        pages.try_dealloc_pages(page, 1).unwrap();
    }
    assert_eq!(DELIVERED.get(), 2);
    assert_eq!(PINNED.get(), 0);
    pages.check().unwrap();
    assert!(pages.cached_pages() > 0);
    assert!(pages.drain_cpu_caches(), "the only CPU that cached drained");
    assert_eq!(pages.cached_pages(), 0);
    assert_eq!(pages.available_pages(), total);
    pages.check().unwrap();
}

#[test]
fn buddy_drain_reaches_only_the_calling_cpus_cache() {
    let _serial = install();
    let pages = &pages();
    let total = pages.total_pages();
    // CPU 1 parks pages in its cache.
    thread::scope(|scope| {
        scope
            .spawn(move || {
                CPU.set(1);
                let got: Vec<usize> = (0..8)
                    .map(|_| pages.alloc_pages(1, 4096).unwrap())
                    .collect();
                for page in got {
                    pages.try_dealloc_pages(page, 1).unwrap();
                }
            })
            .join()
            .unwrap()
    });
    let parked = pages.cached_pages();
    assert!(parked >= 8);
    pages.check().unwrap();
    // CPU 0 cannot reach CPU 1's cache: it drains its own, and says not everything went back.
    assert!(!pages.drain_cpu_caches());
    assert_eq!(pages.cached_pages(), parked);
    assert_eq!(pages.available_pages(), total, "parked pages are free");
    pages.check().unwrap();
    // Run on CPU 1, the drain returns them.
    thread::scope(|scope| {
        scope
            .spawn(move || {
                CPU.set(1);
                assert!(pages.drain_cpu_caches());
            })
            .join()
            .unwrap()
    });
    assert_eq!(pages.cached_pages(), 0);
    assert_eq!(
        pages
            .free_blocks()
            .iter()
            .enumerate()
            .map(|(k, n)| n << k)
            .sum::<usize>(),
        total
    );
    pages.check().unwrap();
}

#[test]
fn buddy_threads_one_per_cpu() {
    let _serial = install();
    let pages = &pages();
    let total = pages.total_pages();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|id| {
                scope.spawn(move || {
                    CPU.set(id);
                    let mut held = Vec::new();
                    // Cycles of two rounds of 30 allocations and one of frees (under Miri 4
                    // cycles: each buddy operation costs much wall time there).
                    for round in 0..ROUNDS * if cfg!(miri) { 4 } else { 10 } {
                        if round % 3 == 2 {
                            for page in held.drain(..) {
                                pages.try_dealloc_pages(page, 1).unwrap();
                            }
                        } else {
                            held.extend((0..30).map(|_| pages.alloc_pages(1, 4096).unwrap()));
                        }
                    }
                    for page in held {
                        pages.try_dealloc_pages(page, 1).unwrap();
                    }
                    pages.drain_cpu_caches();
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
    assert!(pages.drain_cpu_caches());
    assert_eq!(pages.available_pages(), total);
    assert_eq!(pages.used_pages(), 0);
    pages.check().unwrap();
}

#[test]
fn cpu_ids_beyond_the_slots_take_the_slow_path() {
    let _serial = install();
    CPU.set(6); // 4 slots: two CPUs would share slot 2 if ids were reduced
    let heap: Heap = SmpHeap::new(SystemPages::new());
    let layout = small(64);
    let p = heap.allocate(layout).unwrap();
    assert!((0..4).all(|cpu| heap.cpu_stats(cpu, 3).unwrap().net_allocations == 0));
    // SAFETY: allocated above with `layout`, freed once.
    unsafe { heap.deallocate(p, layout) };
    heap.check().unwrap();
    let pages = pages();
    let page = pages.alloc_pages(1, 4096).unwrap();
    pages.try_dealloc_pages(page, 1).unwrap();
    assert_eq!(pages.cached_pages(), 0, "no cache was used");
    pages.check().unwrap();
    CPU.set(0);
}
