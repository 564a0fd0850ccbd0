//! Fork safety (issue 16, docs/design/08-heap.md §"Fork"): `SmpHeap::lock_for_fork` in a `pthread_atfork`
//! prepare handler and `unlock_after_fork` in the parent and child handlers let a child forked
//! while other threads allocate (and while one of them holds the TLSF growth lock, parked in
//! the page source) allocate through every route, reclaim and pass `check`.
//!
//! A child that finds a lock held by a thread it does not have waits forever: a watchdog
//! (`alarm`) turns that hang into a `SIGALRM` death, which the parent reports as a failure.
#![cfg(all(unix, not(miri)))]

mod support;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use smpalloc::heap::{PageSource, SmpHeap, SystemPages};
use support::Rng;

/// The system's pages, except that the thread marked `PARK` stops inside `alloc_pages`
/// (holding whatever heap lock it took on the way) until a fork's prepare handler runs.
struct ParkingPages(SystemPages);

/// Set while the marked thread should park in `alloc_pages`.
static HOLD: AtomicBool = AtomicBool::new(false);
/// Set once the marked thread is parked.
static PARKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static PARK: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to `SystemPages`, which upholds the contract; parking changes no memory.
unsafe impl PageSource for ParkingPages {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        if PARK.get() && HOLD.load(Ordering::Acquire) {
            PARKED.store(true, Ordering::Release);
            while HOLD.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
        self.0.alloc_pages(bytes, align)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.0.free_pages(ptr, bytes, align) }
    }
}

static HEAP: SmpHeap<ParkingPages> = SmpHeap::new(ParkingPages(SystemPages::new()));

/// Prepare handler: lets the parked thread go (it finishes its allocation and releases the
/// growth lock), then takes every heap lock.
extern "C" fn prepare() {
    HOLD.store(false, Ordering::Release);
    HEAP.lock_for_fork();
}

extern "C" fn after() {
    // SAFETY: `prepare` took the locks on this thread (or on the thread this child forked
    // from); glibc runs exactly one of the parent and child handlers after it.
    unsafe { HEAP.unlock_after_fork() };
}

/// The sizes the threads and the child use: every route (slab, TLSF, huge, over-aligned).
const LAYOUTS: [(usize, usize); 7] = [
    (16, 8),
    (200, 8),
    (3000, 8),
    (20_000, 8),
    (150_000, 8),
    (600_000, 8),
    (64, 8192),
];

/// In the child: allocate, write, free through every route, with and without layouts; then
/// reclaim (the TLSF growth lock, the classes, the map) and check (every lock). Exit code 0
/// when all went well; the watchdog kills a child that hangs.
fn child() -> i32 {
    // SAFETY: `alarm` only arms a timer.
    unsafe { libc::alarm(20) };
    let mut held = Vec::new();
    for round in 0..50 {
        for &(size, align) in &LAYOUTS {
            let layout = Layout::from_size_align(size + round, align).unwrap();
            let Some(p) = HEAP.allocate(layout) else {
                return 2;
            };
            // SAFETY: a fresh block of `layout.size()` bytes.
            unsafe { p.as_ptr().write_bytes(0x5A, layout.size()) };
            held.push((p, layout));
        }
    }
    for (i, (p, layout)) in held.into_iter().enumerate() {
        // SAFETY: allocated above, freed once.
        unsafe {
            if i % 2 == 0 {
                HEAP.deallocate(p, layout);
            } else {
                HEAP.free(p);
            }
        }
    }
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    if HEAP.check().is_err() {
        return 3;
    }
    // A thread of the child's own binds a cache and allocates.
    let spawned = thread::spawn(|| {
        let layout = Layout::from_size_align(100, 8).unwrap();
        let p = HEAP.allocate(layout)?;
        // SAFETY: allocated above.
        unsafe { HEAP.deallocate(p, layout) };
        Some(())
    });
    if spawned.join().ok().flatten().is_none() {
        return 4;
    }
    0
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn child_allocates_after_fork_from_allocating_threads() {
    // SAFETY: the handlers are `extern "C"` functions that live for the whole process.
    let registered = unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    assert_eq!(registered, 0);
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..4usize {
            let stop = &stop;
            let rounds = &rounds;
            s.spawn(move || {
                let mut held: Vec<(NonNull<u8>, Layout)> = Vec::new();
                let mut rng = Rng::new(t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let (size, align) = LAYOUTS[rng.below(LAYOUTS.len())];
                    let layout = Layout::from_size_align(size + rng.below(100), align).unwrap();
                    if let Some(p) = HEAP.allocate(layout) {
                        held.push((p, layout));
                    }
                    if held.len() > 32 {
                        let (p, layout) = held.swap_remove(rng.below(held.len()));
                        // SAFETY: allocated above, freed once.
                        unsafe { HEAP.deallocate(p, layout) };
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
                for (p, layout) in held {
                    // SAFETY: allocated above, freed once.
                    unsafe { HEAP.deallocate(p, layout) };
                }
            });
        }
        // Stops the threads however this closure ends (a failed assertion included), so that
        // the scope's join returns and the failure is reported instead of hanging.
        let _stop = StopOnDrop(&stop);
        for fork in 0..20 {
            // One thread parks in the page source while it grows the TLSF arenas (holding
            // their growth lock) until the fork's prepare handler lets it go.
            HOLD.store(true, Ordering::Release);
            PARKED.store(false, Ordering::Release);
            let parker = s.spawn(move || {
                PARK.set(true);
                // Larger than any pool held so far: the arenas must grow.
                let layout = Layout::from_size_align(200_000 + fork * 4096, 8).unwrap();
                let p = HEAP.allocate(layout).unwrap();
                // SAFETY: allocated above.
                unsafe { HEAP.deallocate(p, layout) };
            });
            while !PARKED.load(Ordering::Acquire) && !parker.is_finished() {
                thread::yield_now();
            }
            // SAFETY: the child only allocates through the heap, then exits with `_exit`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let code = child();
                // SAFETY: leaves the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer; `pid` is our child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "fork {fork}: the child failed (status {status:#x}: exit code, or killed by \
                 signal {} — 14 is the watchdog: a lock held by a vanished thread)",
                libc::WTERMSIG(status)
            );
            parker.join().unwrap();
        }
    });
    assert!(rounds.load(Ordering::Relaxed) > 0);
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    HEAP.check().unwrap();
}
