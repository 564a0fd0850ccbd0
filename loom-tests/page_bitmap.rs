//! Loom models of `BitmapPageAllocator`'s protocols (docs/design/05-pages.md §"BitmapPageAllocator"): contiguous claims
//! racing single-page claims and frees, the rollback of a failed partial claim, and exact
//! counters at the end. Empty unless built with `--cfg loom`.
//!
//! The allocator is shrunk to two bitmap words (128 pages, two CPU slots) with only a few
//! pages free around the word boundary (pages 62..66), so every contiguous claim of 3 pages
//! crosses the boundary and is claimed in two CASes that a racing thread can split.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_page_bitmap`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smpalloc::AllocError;
use smpalloc::bitmap::summary_words;
use smpalloc::page::BitmapPageAllocator;
use smpalloc::percpu::set_model_cpu;

const P: usize = 4096;
const BASE: usize = 0x10_0000;
type Pages = BitmapPageAllocator<P, 2, { summary_words(2) }>;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// 128 pages with only `free` (page indices) left free.
fn setup(free: &[usize]) -> Arc<Pages> {
    let pages = Pages::new();
    pages.add_memory(BASE, 128 * P).unwrap();
    let mut start = 0;
    for &hole in free.iter().chain([128].iter()) {
        if hole > start {
            pages
                .alloc_pages_at(BASE + start * P, hole - start, P)
                .unwrap();
        }
        start = hole + 1;
    }
    Arc::new(pages)
}

fn page(addr: usize) -> usize {
    (addr - BASE) / P
}

/// The end state: invariants hold, the counters are exact (`expected_used` allocated), and
/// exactly the remaining pages can still be allocated one by one (a rolled-back partial
/// claim leaked nothing, no summary hides a page).
fn assert_exact(pages: &Pages, expected_used: usize) {
    pages.check().unwrap();
    assert_eq!(pages.used_pages(), expected_used);
    let free = pages.available_pages();
    let mut found = 0;
    while pages.alloc_pages(1, P).is_ok() {
        found += 1;
    }
    assert_eq!(found, free, "a free page was lost");
    pages.check().unwrap();
}

/// A 3-page claim across the word boundary races a single-page claim: never the same page
/// twice; if the single page splits every run, the partial claim is rolled back and its pages
/// are free again.
#[test]
fn contiguous_claim_races_single_claim() {
    model(|| {
        let pages = setup(&[62, 63, 64, 65]);
        let other = pages.clone();
        let single = thread::spawn(move || {
            set_model_cpu(1);
            other.alloc_pages(1, P).unwrap()
        });
        set_model_cpu(0);
        let run = pages.alloc_pages(3, P);
        let single = page(single.join().unwrap());
        assert!((62..66).contains(&single), "{single}");
        let mut used = 128 - 4 + 1;
        if let Ok(run) = run {
            let run = page(run);
            assert!(
                !(run..run + 3).contains(&single),
                "page {single} owned twice"
            );
            used += 3;
        } else {
            // Only fails if the single page splits every 3-run of 62..66.
            assert!(matches!(single, 63 | 64), "{single}");
        }
        assert_exact(&pages, used);
    });
}

/// Two contiguous claims (3 pages and 2 pages) race for 4 free pages across the boundary: at
/// most one succeeds, a loser's partial claim is rolled back, and nothing leaks.
#[test]
fn contiguous_claims_race_with_rollback() {
    model(|| {
        let pages = setup(&[62, 63, 64, 65]);
        let other = pages.clone();
        let two = thread::spawn(move || {
            set_model_cpu(1);
            other.alloc_pages(2, P).ok().map(page)
        });
        set_model_cpu(0);
        let three = pages.alloc_pages(3, P).ok().map(page);
        let two = two.join().unwrap();
        let mut used = 128 - 4;
        if let (Some(a), Some(b)) = (three, two) {
            assert!(a + 3 <= b || b + 2 <= a, "overlap: {a}+3 and {b}+2");
        }
        used += three.map_or(0, |_| 3) + two.map_or(0, |_| 2);
        assert!(used < 128 + 1);
        assert_exact(&pages, used);
    });
}

/// A free that completes a run races the contiguous claim that needs it; a remote free
/// (another CPU slot's counter) keeps the counters exact.
#[test]
fn free_races_contiguous_claim() {
    model(|| {
        let pages = setup(&[62, 64]);
        let other = pages.clone();
        let freer = thread::spawn(move || {
            set_model_cpu(1);
            other.try_dealloc_pages(BASE + 63 * P, 1).unwrap();
        });
        set_model_cpu(0);
        let run = pages.alloc_pages(3, P).ok().map(page);
        freer.join().unwrap();
        if let Some(run) = run {
            assert_eq!(run, 62, "only 62..65 can be free");
        }
        let used = 128 - 3 + run.map_or(0, |_| 3);
        assert_exact(&pages, used);
    });
}

/// `add_memory` publishes a region while another thread reads the region table (through
/// `total_pages` and `alloc_pages_at`): the reader sees the table before or after the new
/// entry, never a half-written entry, and a page it gets from the new region frees cleanly.
#[test]
fn region_publication_races_readers() {
    model(|| {
        let pages = Pages::new();
        pages.add_memory(BASE, 64 * P).unwrap();
        pages.alloc_pages_at(BASE, 64, P).unwrap();
        let pages = Arc::new(pages);
        let other = pages.clone();
        let adder = thread::spawn(move || {
            set_model_cpu(1);
            other.add_memory(BASE + 64 * P, 64 * P).unwrap();
        });
        set_model_cpu(0);
        let total = pages.total_pages();
        assert!(
            total == 64 || total == 128,
            "a half-published region: {total}"
        );
        let at = BASE + 100 * P;
        let got = pages.alloc_pages_at(at, 1, P);
        assert!(
            matches!(
                got,
                Ok(_) | Err(AllocError::InvalidParam) | Err(AllocError::MemoryOverlap)
            ),
            "{got:?}"
        );
        adder.join().unwrap();
        let mut used = 64;
        if got.is_ok() {
            pages.try_dealloc_pages(at, 1).unwrap();
        }
        if pages.alloc_pages_at(at, 1, P).is_ok() {
            used += 1;
        }
        assert_exact(&pages, used);
    });
}

/// The first `add_memory` races `alloc_pages` and `used_pages` on another CPU. `base` is
/// stored once, before the region is published and its bits are freed; a reader that loaded
/// it before that store must not compute an address or an index from the unset base (an
/// allocation reports `NoMemory`, a count reads `base` only after seeing the region).
#[test]
fn first_region_races_alloc_and_counts() {
    model(|| {
        let pages = Arc::new(Pages::new());
        let other = pages.clone();
        let adder = thread::spawn(move || {
            set_model_cpu(1);
            other.add_memory(BASE, 2 * P).unwrap();
        });
        set_model_cpu(0);
        let used = pages.used_pages();
        assert!(used == 0 || used == 2, "{used}");
        let got = pages.alloc_pages(1, P);
        match got {
            Ok(addr) => assert!(addr == BASE || addr == BASE + P, "{addr:#x}"),
            Err(error) => assert_eq!(error, AllocError::NoMemory),
        }
        adder.join().unwrap();
        assert_exact(&pages, usize::from(got.is_ok()));
    });
}

/// The lowest-free placement (`LowestFreeBitmapPageAllocator`, arceos' order) on the same
/// shrunk allocator: two CPUs claiming single pages at once with pages 62, 63 and 64 free
/// (across the word boundary) get exactly 62 and 63, whichever CAS wins; freed, they come
/// back lowest first; the cursors stay untouched (`check`). Mutation: dispatching
/// `LOWEST_FREE` to the next-fit path fails it (the reallocation after the free moves on).
#[test]
fn lowest_free_single_pages_take_the_lowest() {
    use smpalloc::bitmap::AtomicBitmap;
    type Lowest = BitmapPageAllocator<
        P,
        2,
        { summary_words(2) },
        AtomicBitmap<2, { summary_words(2) }>,
        true,
    >;
    model(|| {
        let pages = Lowest::new();
        pages.add_memory(BASE, 128 * P).unwrap();
        pages.alloc_pages_at(BASE, 62, P).unwrap();
        pages.alloc_pages_at(BASE + 65 * P, 63, P).unwrap();
        let pages = Arc::new(pages);
        let other = pages.clone();
        let t = thread::spawn(move || {
            set_model_cpu(1);
            other.alloc_pages(1, P).unwrap()
        });
        set_model_cpu(0);
        let mine = page(pages.alloc_pages(1, P).unwrap());
        let theirs = page(t.join().unwrap());
        let mut got = [mine, theirs];
        got.sort_unstable();
        assert_eq!(got, [62, 63]);
        assert_eq!(pages.used_pages(), 127);
        // Freed, they come back lowest first (next-fit would move on to 64).
        pages.try_dealloc_pages(BASE + 62 * P, 2).unwrap();
        for expected in [62, 63, 64] {
            assert_eq!(pages.alloc_pages(1, P).map(page), Ok(expected));
        }
        assert_eq!(pages.alloc_pages(1, P), Err(AllocError::NoMemory));
        pages.check().unwrap();
    });
}
