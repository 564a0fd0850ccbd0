//! Loom models of `AtomicBitmap`'s protocols (docs/design/03-bitmap-and-ids.md, "AtomicBitmap"). Empty unless built
//! with `--cfg loom`.
//!
//! Capacities are shrunk so a preemption bound of 2-3 reaches full and boundary states: one or
//! two leaf words, pre-filled to one bit from full with `with_prefix_allocated`, so the threads'
//! few operations cross the full/not-full boundary that the summary protocol guards.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_bitmap`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smpalloc::bitmap::{AtomicBitmap, BITS, BitmapError, Cursor, CyclicCursor, summary_words};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Two leaf words under a one-word summary.
type Two = AtomicBitmap<2, 1>;
/// 65 leaf words: two summary levels (2 words, then 1).
type ThreeLevels = AtomicBitmap<65, { summary_words(65) }>;

/// The two frees of a bitmap: [`AtomicBitmap::free`] (reads the whole old word, a CAS loop on
/// x86) and [`AtomicBitmap::free_bit`] (a single-bit RMW, then a load of the parent word). The
/// fill-versus-free models run once with each.
#[derive(Clone, Copy, Debug)]
enum Free {
    Word,
    Bit,
}

impl Free {
    const BOTH: [Free; 2] = [Free::Word, Free::Bit];

    fn free<const W: usize, const S: usize>(
        self,
        bitmap: &AtomicBitmap<W, S>,
        id: usize,
    ) -> Result<(), BitmapError> {
        match self {
            Free::Word => bitmap.free(id),
            Free::Bit => bitmap.free_bit(id),
        }
    }
}

/// The end state every model checks (quiescent use only): summaries exact, then allocating
/// until `None` finds exactly `free` IDs (a freed ID hidden by a stale summary would make it
/// fewer), and the summaries are still exact once the bitmap is full.
fn assert_drains<const W: usize, const S: usize>(bitmap: &AtomicBitmap<W, S>, free: usize) {
    bitmap.check().unwrap();
    let mut found = 0;
    while bitmap.alloc_lowest().is_some() {
        found += 1;
    }
    assert_eq!(found, free, "a free ID was hidden by a stale summary");
    bitmap.check().unwrap();
}

/// Two allocators racing for the last two free IDs get one each, never the same one.
#[test]
fn concurrent_allocs_are_unique() {
    model(|| {
        let bitmap = Arc::new(Two::with_prefix_allocated(2 * BITS - 2));
        let other = bitmap.clone();
        let t = thread::spawn(move || other.alloc_lowest());
        let mine = bitmap.alloc_lowest();
        let theirs = t.join().unwrap();
        let (a, b) = (
            mine.expect("a free ID was hidden"),
            theirs.expect("a free ID was hidden"),
        );
        assert_ne!(a, b, "the same ID was handed out twice");
        assert_eq!(bitmap.alloc_lowest(), None);
        bitmap.check().unwrap();
    });
}

/// The classic race: one thread fills word 0 (and must mark it full in the summary) while
/// another frees a bit in it (and must clear the summary bit). Whatever the interleaving, the
/// summary ends exact and the freed ID can be allocated again.
#[test]
fn fill_races_free_in_same_word() {
    for kind in Free::BOTH {
        model(move || {
            // Word 0 has one free bit (63); word 1 is full, so only word 0 can serve.
            let bitmap = Arc::new(Two::with_prefix_allocated(BITS - 1));
            for id in BITS..2 * BITS {
                bitmap.alloc_specific(id).unwrap();
            }
            let other = bitmap.clone();
            let filler = thread::spawn(move || other.alloc_lowest());
            kind.free(&bitmap, 5).unwrap();
            let got = filler.join().unwrap();
            assert!(matches!(got, Some(5) | Some(63)), "unexpected ID {got:?}");
            assert_drains(&bitmap, 1);
        });
    }
}

/// The same race one level up: filling the last free leaf bit fills a level-1 summary word,
/// which must propagate to level 2, while a free un-fills both.
#[test]
fn fill_races_free_across_two_summary_levels() {
    for kind in Free::BOTH {
        model(move || {
            // Leaves 0..64 full, leaf 64 (alone under level-1 word 1) one bit from full.
            let bitmap = Arc::new(ThreeLevels::with_prefix_allocated(65 * BITS - 1));
            let other = bitmap.clone();
            let filler = thread::spawn(move || other.alloc_lowest());
            kind.free(&bitmap, 64 * BITS + 3).unwrap();
            let got = filler.join().unwrap();
            assert!(got.is_some(), "a free ID was hidden");
            assert_drains(&bitmap, 1);
        });
    }
}

/// Frees racing allocations never hide a free ID: after both threads finish, every freed ID is
/// allocatable again, and the count is exact.
#[test]
fn alloc_racing_free_hides_nothing() {
    for kind in Free::BOTH {
        model(move || {
            let bitmap = Arc::new(Two::with_prefix_allocated(2 * BITS));
            let other = bitmap.clone();
            let freer = thread::spawn(move || {
                kind.free(&other, 10).unwrap();
                kind.free(&other, BITS + 10).unwrap();
            });
            let got = bitmap.alloc_lowest();
            freer.join().unwrap();
            bitmap.check().unwrap();
            let expected_free = if got.is_some() { 1 } else { 2 };
            assert_eq!(bitmap.count_allocated(), 2 * BITS - expected_free);
            assert_drains(&bitmap, expected_free);
        });
    }
}

/// A specific-ID claim racing next-fit allocation: both succeed with different IDs, or the
/// specific claim fails because next-fit took that very ID.
#[test]
fn specific_races_next_fit() {
    model(|| {
        let bitmap = Arc::new(Two::with_prefix_allocated(2 * BITS - 2));
        let cursor = Arc::new(Cursor::new(0));
        let (b, c) = (bitmap.clone(), cursor.clone());
        let t = thread::spawn(move || b.alloc_next_fit(&c, 0));
        let specific = bitmap.alloc_specific(2 * BITS - 1);
        let next = t.join().unwrap().expect("a free ID was hidden");
        match specific {
            Ok(()) => assert_eq!(next, 2 * BITS - 2),
            Err(BitmapError::AlreadyAllocated) => assert_eq!(next, 2 * BITS - 1),
            Err(e) => panic!("unexpected error {e:?}"),
        }
        assert_eq!(
            bitmap.count_allocated(),
            2 * BITS - (specific.is_err() as usize)
        );
        bitmap.check().unwrap();
    });
}

/// A contiguous claim that spans two words races a single claim of a bit inside its range:
/// either the range is claimed whole, or it is rolled back without leaking its first word's
/// bit. No ID is owned twice and the count is exact.
#[test]
fn contiguous_races_single_with_rollback() {
    model(|| {
        // Free: 63 (end of word 0) and 64, 65 (start of word 1); all else allocated.
        let bitmap = Arc::new(Two::with_prefix_allocated(BITS - 1));
        for id in BITS + 2..2 * BITS {
            bitmap.alloc_specific(id).unwrap();
        }
        let other = bitmap.clone();
        let single = thread::spawn(move || other.alloc_specific(BITS));
        let range = bitmap.alloc_contiguous(2, 1, BITS - 1).unwrap();
        let single = single.join().unwrap();
        match (range, single) {
            (Some(start), Err(BitmapError::AlreadyAllocated)) => assert_eq!(start, BITS - 1),
            (Some(start), Ok(())) => assert_eq!(start, BITS + 1, "range overlaps the single ID"),
            (None, Ok(())) => {}
            other => panic!("impossible outcome {other:?}"),
        }
        bitmap.check().unwrap();
        let held = range.map_or(0, |_| 2) + usize::from(single.is_ok());
        assert_eq!(
            bitmap.count_allocated(),
            2 * BITS - 3 + held,
            "rollback leaked an ID"
        );
    });
}

/// Two range frees and an allocation: counters are exact and summaries agree at the end.
#[test]
fn range_free_races_alloc() {
    model(|| {
        let bitmap = Arc::new(Two::with_prefix_allocated(2 * BITS));
        let other = bitmap.clone();
        let t = thread::spawn(move || other.free_range(BITS - 1, 2));
        let got = bitmap.alloc_lowest();
        t.join().unwrap().unwrap();
        bitmap.check().unwrap();
        let free = 2 - usize::from(got.is_some());
        assert_eq!(bitmap.count_allocated(), 2 * BITS - free);
        assert_drains(&bitmap, free);
    });
}

/// Three threads: one fills the last free bit of word 0, one frees a bit of word 0, one frees a
/// bit of word 1 (un-filling the other summary bit). Summaries end exact and both freed IDs are
/// found again.
#[test]
fn three_threads_fill_and_free() {
    for kind in Free::BOTH {
        model(move || {
            let bitmap = Arc::new(Two::with_prefix_allocated(2 * BITS - 1));
            bitmap.alloc_specific(2 * BITS - 1).unwrap();
            bitmap.free(BITS - 1).unwrap();
            let (b1, b2) = (bitmap.clone(), bitmap.clone());
            let filler = thread::spawn(move || b1.alloc_lowest());
            let freer = thread::spawn(move || kind.free(&b2, BITS + 7).unwrap());
            kind.free(&bitmap, 3).unwrap();
            let got = filler.join().unwrap().expect("a free ID was hidden");
            freer.join().unwrap();
            assert!([3, BITS - 1, BITS + 7].contains(&got));
            assert_drains(&bitmap, 2);
        });
    }
}

/// Strict next-fit shared by two threads that each allocate and free twice. A position whose
/// ID was held by the other thread when it was reserved is skipped until the next lap, so the
/// cursor may advance a few positions per allocation; with 16 free IDs four allocations cannot
/// wrap, so all four IDs must differ, however the threads interleave (a stale cursor read must
/// not hand out an ID that was allocated and freed in this lap).
#[test]
fn cyclic_never_reuses_within_a_lap() {
    model(|| {
        let floor = BITS - 16;
        let bitmap = Arc::new(AtomicBitmap::<1, 0>::with_prefix_allocated(floor));
        let cursor = Arc::new(CyclicCursor::new(0));
        let run = move |bitmap: &AtomicBitmap<1, 0>, cursor: &CyclicCursor| {
            let a = bitmap
                .alloc_cyclic(cursor, floor)
                .expect("a free ID was hidden");
            bitmap.free(a).unwrap();
            let b = bitmap
                .alloc_cyclic(cursor, floor)
                .expect("a free ID was hidden");
            bitmap.free(b).unwrap();
            [a, b]
        };
        let (b, c) = (bitmap.clone(), cursor.clone());
        let t = thread::spawn(move || run(&b, &c));
        let mine = run(&bitmap, &cursor);
        let theirs = t.join().unwrap();
        let mut all = [mine[0], mine[1], theirs[0], theirs[1]];
        all.sort_unstable();
        assert!(
            all.windows(2).all(|w| w[0] != w[1]),
            "an ID was reused within a lap: {all:?}"
        );
        assert_eq!(bitmap.count_allocated(), floor);
        bitmap.check().unwrap();
    });
}

/// Lowest-free stays lowest under contention: with IDs 62 and 63 free in word 0 and all of
/// word 1 free, two concurrent `alloc_lowest` calls get exactly 62 and 63 (a CAS lost to the
/// other thread must not send the loser on to word 1).
#[test]
fn lowest_free_is_lowest_under_contention() {
    model(|| {
        let bitmap = Arc::new(Two::with_prefix_allocated(BITS - 2));
        let other = bitmap.clone();
        let t = thread::spawn(move || other.alloc_lowest());
        let mine = bitmap.alloc_lowest().expect("a free ID was hidden");
        let theirs = t.join().unwrap().expect("a free ID was hidden");
        let mut got = [mine, theirs];
        got.sort_unstable();
        assert_eq!(got, [BITS - 2, BITS - 1], "not the lowest free IDs");
        bitmap.check().unwrap();
    });
}
