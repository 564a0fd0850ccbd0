//! Model-based property tests of `AtomicBitmap`: random operation sequences, each step compared
//! with a shadow model of the owned IDs (`support::IdShadow`) and followed by `check()` (exact
//! summaries at every level), for bitmaps of 1, 2, 64, 65 and 4097 leaf words (no summary,
//! one level, one full level, two levels, three levels).

mod support;

use proptest::prelude::*;
use proptest::sample::select;
use smpalloc::bitmap::{AtomicBitmap, BITS, BitmapError, Cursor, summary_words};
use support::IdShadow;
use support::ids::{Pos, ShadowCheck, pick};

/// `bitmap.free(id)`, or `bitmap.free_bit(id)` when `bit` (the two must agree).
fn free<const W: usize, const S: usize>(
    bitmap: &AtomicBitmap<W, S>,
    id: usize,
    bit: bool,
) -> Result<(), BitmapError> {
    if bit {
        bitmap.free_bit(id)
    } else {
        bitmap.free(id)
    }
}

/// One step of a test sequence; positions are mapped onto the capacity by [`pick`].
#[derive(Debug, Clone)]
enum Op {
    AllocLowest,
    AllocLowestFrom(Pos),
    AllocNextFit {
        cursor: usize,
        floor: Pos,
    },
    SetCursor {
        cursor: usize,
        to: Pos,
    },
    AllocSpecific(Pos),
    AllocContiguous {
        count: usize,
        align: usize,
        floor: Pos,
    },
    /// `free` (or, `true`, `free_bit`) of any ID (free, allocated or out of range).
    Free(Pos, bool),
    /// `free` (or, `true`, `free_bit`) of the `k`-th owned ID.
    FreeOwned(usize, bool),
    /// `free_range` of any range.
    FreeRange {
        start: Pos,
        count: usize,
    },
    /// `free_range` of a range shaped around the run of the `k`-th owned ID: inside it, all of
    /// it, one past its end, or one before its start (the last two are partly free).
    FreeRunRange {
        k: usize,
        shape: u8,
        extra: usize,
    },
}

fn pos() -> impl Strategy<Value = Pos> {
    (any::<u8>(), any::<u32>()).prop_map(|(a, b)| Pos(a, b))
}

fn floor() -> impl Strategy<Value = Pos> {
    prop_oneof![3 => Just(Pos(9, 0)), 2 => pos()]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1..=4usize,
        3 => 1..=70usize,
        2 => 60..=140usize,
        1 => 4000..=4200usize,
        1 => Just(0usize),
        1 => (usize::MAX - 3)..=usize::MAX,
    ]
}

fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(1usize),
        3 => select(vec![2usize, 4, 8, 16, 32, 64]),
        1 => select(vec![128usize, 4096, 1 << 40, 1 << (usize::BITS - 1)]),
        1 => select(vec![0usize, 3, 6, 100, usize::MAX]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::AllocLowest),
        3 => pos().prop_map(Op::AllocLowestFrom),
        4 => (0..2usize, floor()).prop_map(|(cursor, floor)| Op::AllocNextFit { cursor, floor }),
        1 => (0..2usize, pos()).prop_map(|(cursor, to)| Op::SetCursor { cursor, to }),
        3 => pos().prop_map(Op::AllocSpecific),
        4 => (count(), align(), floor())
            .prop_map(|(count, align, floor)| Op::AllocContiguous { count, align, floor }),
        2 => (pos(), any::<bool>()).prop_map(|(id, bit)| Op::Free(id, bit)),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(k, bit)| Op::FreeOwned(k, bit)),
        2 => (pos(), count()).prop_map(|(start, count)| Op::FreeRange { start, count }),
        3 => (any::<usize>(), 0..4u8, any::<usize>())
            .prop_map(|(k, shape, extra)| Op::FreeRunRange { k, shape, extra }),
    ]
}

/// What `free_range(start, count)` must return given the model.
fn expected_free_range(
    model: &IdShadow,
    capacity: usize,
    start: usize,
    count: usize,
) -> Result<(), BitmapError> {
    if count == 0 {
        return Err(BitmapError::InvalidArgument);
    }
    match start.checked_add(count) {
        None => Err(BitmapError::OutOfRange),
        Some(end) if end > capacity => Err(BitmapError::OutOfRange),
        Some(end) if !model.all_owned(start, end) => Err(BitmapError::NotAllocated),
        Some(_) => Ok(()),
    }
}

/// The test body shared by every capacity: builds a bitmap with `prefix` IDs allocated and
/// runs `ops`, comparing every step with the model.
fn run<const W: usize, const S: usize>(prefix: Pos, ops: &[Op]) {
    let capacity = AtomicBitmap::<W, S>::CAPACITY;
    assert_eq!(capacity, W * BITS);
    let prefix = pick(capacity, prefix);
    let bitmap = Box::new(AtomicBitmap::<W, S>::with_prefix_allocated(prefix));
    assert_eq!(bitmap.capacity(), capacity);
    let mut model = IdShadow::with_prefix(0, capacity, prefix);
    model.verify_full(&*bitmap, &format_args!("with_prefix_allocated({prefix})"));

    let cursors = [Cursor::new(0), Cursor::new(0)];
    let mut model_cursors = [0usize, 0];

    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step}: {op:?}");
        let mut touched = Vec::new();
        match *op {
            Op::AllocLowest => {
                let want = model.lowest_free_from(0);
                assert_eq!(bitmap.alloc_lowest(), want, "{context}");
                if let Some(id) = want {
                    model.take(id);
                    touched.push(id);
                }
            }
            Op::AllocLowestFrom(floor) => {
                let floor = pick(capacity, floor);
                let want = model.lowest_free_from(floor);
                assert_eq!(
                    bitmap.alloc_lowest_from(floor),
                    want,
                    "{context} (floor {floor})"
                );
                if let Some(id) = want {
                    assert!(id >= floor);
                    model.take(id);
                    touched.push(id);
                }
                touched.push(floor);
            }
            Op::AllocNextFit { cursor, floor } => {
                let floor = pick(capacity, floor);
                let (want, after) = model.next_fit(model_cursors[cursor], floor, capacity);
                let got = bitmap.alloc_next_fit(&cursors[cursor], floor);
                assert_eq!(
                    got, want,
                    "{context} (cursor {}, floor {floor})",
                    model_cursors[cursor]
                );
                model_cursors[cursor] = after;
                if let Some(id) = want {
                    assert!(id >= floor);
                    model.take(id);
                    touched.push(id);
                }
            }
            Op::SetCursor { cursor, to } => {
                let to = pick(capacity, to);
                cursors[cursor].set(to);
                model_cursors[cursor] = to;
            }
            Op::AllocSpecific(id) => {
                let id = pick(capacity, id);
                let want = if id >= capacity {
                    Err(BitmapError::OutOfRange)
                } else if model.contains(id) {
                    Err(BitmapError::AlreadyAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(bitmap.alloc_specific(id), want, "{context} (id {id})");
                if want.is_ok() {
                    model.take(id);
                }
                touched.push(id);
            }
            Op::AllocContiguous {
                count,
                align,
                floor,
            } => {
                let floor = pick(capacity, floor);
                let want = if count == 0 || !align.is_power_of_two() {
                    Err(BitmapError::InvalidArgument)
                } else {
                    Ok(model.first_fit_range(count, align, floor))
                };
                let got = bitmap.alloc_contiguous(count, align, floor);
                assert_eq!(got, want, "{context} (floor {floor})");
                if let Ok(Some(start)) = want {
                    assert!(start >= floor && start % align == 0);
                    model.take_range(start, start + count);
                    touched.extend([start, start + count - 1]);
                }
                touched.push(floor);
            }
            Op::Free(id, bit) => {
                let id = pick(capacity, id);
                let want = if id >= capacity {
                    Err(BitmapError::OutOfRange)
                } else if !model.contains(id) {
                    Err(BitmapError::NotAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(free(&bitmap, id, bit), want, "{context} (id {id})");
                if want.is_ok() {
                    model.release(id);
                }
                touched.push(id);
            }
            Op::FreeOwned(k, bit) => {
                if let Some(id) = model.nth(k % model.len().max(1)) {
                    assert_eq!(free(&bitmap, id, bit), Ok(()), "{context} (id {id})");
                    model.release(id);
                    // A second free is a double free: an error that changes nothing.
                    assert_eq!(
                        free(&bitmap, id, !bit),
                        Err(BitmapError::NotAllocated),
                        "{context}"
                    );
                    touched.push(id);
                }
            }
            Op::FreeRange { start, count } => {
                let start = pick(capacity, start);
                let want = expected_free_range(&model, capacity, start, count);
                assert_eq!(
                    bitmap.free_range(start, count),
                    want,
                    "{context} (start {start})"
                );
                if want.is_ok() {
                    model.release_range(start, start + count);
                    touched.push(start + count - 1);
                }
                touched.push(start);
            }
            Op::FreeRunRange { k, shape, extra } => {
                let Some(id) = model.nth(k % model.len().max(1)) else {
                    continue;
                };
                let (s, e) = model.run_at(id).expect("an owned ID is in a run");
                let (start, count) = match shape {
                    0 => (id, 1 + extra % (e - id)),
                    1 => (s, e - s),
                    2 => (id, e + 1 - id),
                    _ => (s.saturating_sub(1), e - s.saturating_sub(1)),
                };
                let want = expected_free_range(&model, capacity, start, count);
                assert_eq!(
                    bitmap.free_range(start, count),
                    want,
                    "{context} (range {start}+{count}, run {s}..{e})"
                );
                if want.is_ok() {
                    model.release_range(start, start + count);
                }
                touched.extend([start, start + count - 1, s, e - 1]);
            }
        }
        model.verify(&*bitmap, &touched, &context);
        for (cursor, &want) in cursors.iter().zip(&model_cursors) {
            assert_eq!(cursor.get(), want, "cursor after {context}");
        }
        if step % 16 == 15 {
            model.verify_full(&*bitmap, &context);
        }
    }
    model.verify_full(&*bitmap, &"the end of the sequence");
}

macro_rules! bitmap_model_tests {
    ($($name:ident: ($words:expr, $summary:expr), cases $cases:expr, ops $ops:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]
            #[test]
            fn $name(prefix in prop_oneof![3 => Just(Pos(9, 0)), 2 => pos()],
                     ops in proptest::collection::vec(op(), 1..$ops)) {
                run::<{ $words }, { $summary }>(prefix, &ops);
            }
        }
    )*};
}

bitmap_model_tests! {
    model_1_word: (1, summary_words(1)), cases 256, ops 80;
    model_2_words: (2, summary_words(2)), cases 256, ops 100;
    model_64_words: (64, summary_words(64)), cases 128, ops 120;
    model_65_words_two_levels: (65, summary_words(65)), cases 128, ops 120;
    model_4097_words_three_levels: (4097, summary_words(4097)), cases 64, ops 120;
}

/// The default summary size works for small bitmaps too (unused summary words are harmless).
#[test]
fn default_summary_size_for_small_bitmaps() {
    let bitmap = AtomicBitmap::<1>::new();
    let mut model = IdShadow::new(0, BITS);
    for _ in 0..BITS {
        let id = bitmap.alloc_lowest().expect("a free ID");
        model.take(id);
    }
    assert_eq!(bitmap.alloc_lowest(), None);
    model.verify_full(&bitmap, &"full");
    let two = AtomicBitmap::<2>::with_prefix_allocated(BITS + 3);
    assert_eq!(two.alloc_lowest(), Some(BITS + 3));
    assert_eq!(two.check(), Ok(()));
}

/// Filling the last leaf word of a 4097-word bitmap propagates fullness through all three
/// summary levels (the last level-1 and level-2 words are mostly padding), and freeing one ID
/// un-does it; `alloc_lowest_from` then finds exactly that ID across the whole space.
#[test]
fn three_level_propagation_through_padding() {
    const W: usize = 4097;
    let bitmap = Box::new(AtomicBitmap::<W, { summary_words(W) }>::new());
    let cap = W * BITS;
    let last_word = (W - 1) * BITS;
    assert_eq!(
        bitmap.alloc_contiguous(BITS, BITS, last_word),
        Ok(Some(last_word))
    );
    assert_eq!(bitmap.check(), Ok(()));
    assert_eq!(bitmap.alloc_lowest_from(last_word), None);
    assert_eq!(bitmap.free(cap - 1), Ok(()));
    assert_eq!(bitmap.check(), Ok(()));
    assert_eq!(bitmap.alloc_lowest_from(last_word), Some(cap - 1));
    assert_eq!(bitmap.check(), Ok(()));
}

/// `free_bit` un-fills a word through all three summary levels exactly as `free` does (it
/// reads the parent instead of the old word), and its errors are `free`'s: out of range
/// (`capacity`, `usize::MAX`) and double free, each changing nothing.
#[test]
fn free_bit_propagation_and_errors() {
    const W: usize = 4097;
    let bitmap = Box::new(AtomicBitmap::<W, { summary_words(W) }>::new());
    let cap = W * BITS;
    let last_word = (W - 1) * BITS;
    assert_eq!(
        bitmap.alloc_contiguous(BITS, BITS, last_word),
        Ok(Some(last_word))
    );
    assert_eq!(bitmap.free_bit(cap - 1), Ok(()));
    assert_eq!(bitmap.check(), Ok(()));
    assert_eq!(bitmap.alloc_lowest_from(last_word), Some(cap - 1));
    assert_eq!(bitmap.check(), Ok(()));
    let allocated = bitmap.count_allocated();
    assert_eq!(bitmap.free_bit(cap), Err(BitmapError::OutOfRange));
    assert_eq!(bitmap.free_bit(usize::MAX), Err(BitmapError::OutOfRange));
    assert_eq!(bitmap.free_bit(5), Err(BitmapError::NotAllocated));
    assert_eq!(bitmap.free_bit(last_word + 3), Ok(()));
    assert_eq!(
        bitmap.free_bit(last_word + 3),
        Err(BitmapError::NotAllocated)
    );
    assert_eq!(bitmap.count_allocated(), allocated - 1);
    assert_eq!(bitmap.check(), Ok(()));
    // A single-word bitmap has no summary: only the leaf changes.
    let one = AtomicBitmap::<1, 0>::with_prefix_allocated(BITS);
    assert_eq!(one.free_bit(7), Ok(()));
    assert_eq!(one.free_bit(7), Err(BitmapError::NotAllocated));
    assert_eq!(one.alloc_lowest(), Some(7));
    assert_eq!(one.check(), Ok(()));
}

/// A completely full three-level bitmap: one free anywhere is found from ID 0, and the
/// summaries are exact at each step.
#[test]
fn full_three_level_bitmap_finds_a_single_hole() {
    const W: usize = 4097;
    let bitmap =
        Box::new(AtomicBitmap::<W, { summary_words(W) }>::with_prefix_allocated(usize::MAX));
    let cap = W * BITS;
    assert_eq!(bitmap.count_allocated(), cap);
    assert_eq!(bitmap.check(), Ok(()));
    assert_eq!(bitmap.alloc_lowest(), None);
    assert_eq!(bitmap.alloc_contiguous(1, 1, 0), Ok(None));
    let cursor = Cursor::new(cap / 2);
    assert_eq!(bitmap.alloc_next_fit(&cursor, 0), None);
    assert_eq!(
        cursor.get(),
        cap / 2,
        "a failed next-fit leaves the cursor alone"
    );
    for hole in [
        0,
        BITS * BITS - 1,
        BITS * BITS,
        cap / 2 + 7,
        cap - BITS,
        cap - 1,
    ] {
        assert_eq!(bitmap.free(hole), Ok(()));
        assert_eq!(bitmap.check(), Ok(()), "after freeing {hole}");
        assert_eq!(bitmap.count_allocated(), cap - 1);
        assert_eq!(
            bitmap.alloc_next_fit(&cursor, 0),
            Some(hole),
            "next-fit wraps to the hole"
        );
        assert_eq!(bitmap.check(), Ok(()), "after re-allocating {hole}");
        assert_eq!(bitmap.free(hole), Ok(()));
        assert_eq!(bitmap.alloc_lowest(), Some(hole));
        assert_eq!(bitmap.free(hole), Ok(()));
        assert_eq!(bitmap.alloc_contiguous(1, 1, 0), Ok(Some(hole)));
    }
    assert_eq!(bitmap.free_range(0, cap), Ok(()));
    assert_eq!(bitmap.count_allocated(), 0);
    assert_eq!(bitmap.check(), Ok(()));
    assert_eq!(bitmap.alloc_contiguous(cap, 1, 0), Ok(Some(0)));
    assert_eq!(bitmap.check(), Ok(()));
}
