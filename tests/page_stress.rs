//! Multithreaded stress tests of both page allocators: threads share one allocator, each
//! allocating runs of 1..=8 pages (mostly single pages, with alignments up to 8 pages) into a
//! ring, freeing the oldest, and handing some of their pages to a neighbour to free (remote
//! frees: the buddy's caches then receive pages another CPU allocated). A shared ownership
//! table (one `AtomicU8` per page) catches any page owned twice at the moment it happens.
//! Afterwards the counts must be exact and `check()` must pass, with every page free again.
//!
//! Operation counts are smaller in debug builds (the default `cargo test`) and under Miri.

mod support;

use core::sync::atomic::{AtomicU8, Ordering};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;

use smpalloc::AllocError;
use smpalloc::bitmap::summary_words;
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator};
use support::Rng;
use support::pages::Pages;

const P: usize = 4096;
/// Under Miri 30 per thread (at 200, `buddy_stress` alone took over a quarter of an hour of
/// wall time): still refills, ring frees, remote frees and refused partial frees in each run.
const OPS: usize = if cfg!(miri) {
    30
} else if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};
/// Pages managed: 2,048 (a first region of 1,500 pages and an odd second one).
const BASE: usize = 0x4000_0000;

type Bitmap = BitmapPageAllocator<P, 64, { summary_words(64) }>;
type Buddy = BuddyPageAllocator<P, 6, 4>;

/// Who owns which page (index from `BASE`): 0 = nobody, 1 = some thread.
struct Table(Vec<AtomicU8>);

impl Table {
    #[track_caller]
    fn claim(&self, addr: usize, count: usize) {
        for page in (addr - BASE) / P..(addr - BASE) / P + count {
            assert_eq!(
                self.0[page].swap(1, Ordering::AcqRel),
                0,
                "duplicate: page {page} of {addr:#x}+{count} is already owned"
            );
        }
    }

    #[track_caller]
    fn release(&self, addr: usize, count: usize) {
        for page in (addr - BASE) / P..(addr - BASE) / P + count {
            assert_eq!(
                self.0[page].swap(0, Ordering::AcqRel),
                1,
                "page {page} not owned"
            );
        }
    }
}

fn stress<I: Pages>(pages: &I, threads: usize, seed: u64) {
    let table = Table((0..4096).map(|_| AtomicU8::new(0)).collect());
    let total = pages.total();
    // Each thread sends some of its allocations to the next thread, which frees them.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::channel::<(usize, usize)>())
        .unzip();
    let receivers: Vec<Mutex<mpsc::Receiver<(usize, usize)>>> =
        receivers.into_iter().map(Mutex::new).collect();
    thread::scope(|s| {
        for t in 0..threads {
            let (table, receivers) = (&table, &receivers);
            let next = senders[(t + 1) % threads].clone();
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t as u64 * 0x9e37));
                let mut ring: VecDeque<(usize, usize)> = VecDeque::new();
                let inbox = receivers[t].lock().unwrap();
                for _ in 0..OPS {
                    let (count, align) = match rng.below(10) {
                        0..=6 => (1, 1),
                        7 => (1, 1 << rng.below(4)),
                        _ => (1 + rng.below(8), 1 << rng.below(4)),
                    };
                    match pages.alloc(count, align * P) {
                        Ok(addr) => {
                            assert_eq!(addr % (align * P), 0);
                            table.claim(addr, count);
                            if rng.below(8) == 0 {
                                next.send((addr, count)).unwrap();
                            } else {
                                ring.push_back((addr, count));
                            }
                        }
                        Err(AllocError::NoMemory) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                    if ring.len() > 24 || (rng.below(3) == 0 && !ring.is_empty()) {
                        let (addr, count) = ring.pop_front().unwrap();
                        if I::EXACT_FREE && count > 1 {
                            // A part of the allocation, racing the other threads' calls: refused
                            // (issue 14, defect 5), the allocation intact for the real free.
                            let (first, len) = if rng.below(2) == 0 {
                                (0, count - 1)
                            } else {
                                (1, count - 1)
                            };
                            assert_eq!(
                                pages.free(addr + first * P, len),
                                Err(AllocError::NotAllocated)
                            );
                        }
                        table.release(addr, count);
                        pages.free(addr, count).unwrap();
                    }
                    while let Ok((addr, count)) = inbox.try_recv() {
                        table.release(addr, count);
                        pages.free(addr, count).unwrap();
                    }
                }
                for (addr, count) in ring {
                    table.release(addr, count);
                    pages.free(addr, count).unwrap();
                }
            });
        }
        drop(senders);
    });
    // Remote frees still in flight when their receiver finished.
    for inbox in receivers {
        for (addr, count) in inbox.into_inner().unwrap().try_iter() {
            table.release(addr, count);
            pages.free(addr, count).unwrap();
        }
    }
    assert_eq!(pages.used(), 0);
    assert_eq!(pages.available(), total);
    pages.invariants().unwrap();
    pages.drain();
    pages.invariants().unwrap();
    assert!(table.0.iter().all(|o| o.load(Ordering::Relaxed) == 0));
}

/// The two regions: 1,500 pages, then an odd 443 after a gap.
fn regions(pages: &impl Pages) {
    pages.add(BASE + 3 * P, 1500 * P).unwrap();
    pages.add(BASE + 1600 * P, 443 * P).unwrap();
}

fn bitmap() -> Bitmap {
    let pages = Bitmap::new();
    regions(&pages);
    pages
}

fn buddy() -> Buddy {
    let pages = Buddy::with_window(BASE, 2048 * P).with_watermarks(8, 3);
    regions(&pages);
    pages
}

/// [`stress`] with 2 and 4 threads, each on a fresh allocator from `make`, seeded
/// `seed + threads`.
fn with_2_and_4_threads<I: Pages>(&(make, seed): &(fn() -> I, u64)) {
    for threads in [2, 4] {
        stress(&make(), threads, seed + threads as u64);
    }
}

support::suite!(with_2_and_4_threads:
    bitmap_stress => (bitmap as fn() -> Bitmap, 0xb17),
    buddy_stress => (buddy as fn() -> Buddy, 0xb0d),
);
