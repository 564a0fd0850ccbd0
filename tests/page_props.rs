//! Property tests of both page allocators against a reference model: the live allocations as
//! page ranges (`support::RangeShadow`, inside the union of the regions). Random operation sequences over 1..4 regions of odd
//! sizes, gaps (adjacent regions included) and unaligned starts; after every step:
//! - no page is handed out twice (the model refuses an overlap), every allocation is
//!   aligned as asked and lies inside the regions;
//! - an allocation fails only when the model has no fitting free run (exact for the bitmap's
//!   first fit; for the buddy, no free naturally aligned block of the needed order);
//! - bad input gets the documented error and changes nothing;
//! - `used_pages`, `available_pages`, `total_pages` agree with the model, `is_allocated` with
//!   the owned set, and the allocator's own `check()` passes.

mod support;

use proptest::prelude::*;
use smpalloc::AllocError;
use smpalloc::bitmap::summary_words;
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator};
use support::pages::Pages;
use support::{RangeShadow, Regions};

const P: usize = 4096;
/// Bitmap window: 9 words (576 pages, one summary level).
const WORDS: usize = 9;
type Bitmap = BitmapPageAllocator<P, WORDS, { summary_words(WORDS) }>;
/// Buddy: blocks up to 16 pages, 2 CPU slots, small caches (high 4, batch 2).
const MAX_ORDER: usize = 4;
type Buddy = BuddyPageAllocator<P, MAX_ORDER, 2>;

/// The reference model.
struct Model {
    /// Live allocations as page numbers `[first, end)`; the regions in page numbers.
    live: RangeShadow<()>,
    /// Allocations freed earlier (for double frees): address, pages.
    freed: Vec<(usize, usize)>,
}

impl Model {
    fn new() -> Self {
        Self {
            live: RangeShadow::new(Regions::Union),
            freed: Vec::new(),
        }
    }

    fn regions(&self) -> &[(usize, usize)] {
        self.live.regions()
    }

    fn in_regions(&self, page: usize) -> bool {
        self.live.in_regions(page, page + 1)
    }

    fn owned(&self, page: usize) -> bool {
        self.live.covering(page).is_some()
    }

    fn run_free(&self, first: usize, count: usize) -> bool {
        self.live.is_free(first, first + count)
    }

    /// Whether some run of `count` pages at a multiple of `align` pages is free.
    fn fits(&self, count: usize, align: usize) -> bool {
        let lo = self.regions().iter().map(|r| r.0).min().unwrap();
        let hi = self.regions().iter().map(|r| r.1).max().unwrap();
        (lo.next_multiple_of(align)..hi)
            .step_by(align)
            .any(|s| self.run_free(s, count))
    }

    /// Buddy: whether a naturally aligned block of `2^order` pages is entirely free.
    fn block_fits(&self, order: usize) -> bool {
        self.fits(1 << order, 1 << order)
    }

    /// Records an allocation; panics if a page of it is outside the regions or handed out
    /// twice.
    fn take(&mut self, addr: usize, count: usize, context: &dyn core::fmt::Debug) {
        let first = addr / P;
        if let Err(e) = self.live.insert(first, first + count, ()) {
            panic!("{context:?}: pages {e}");
        }
    }

    fn release(&mut self, addr: usize) {
        let (end, ()) = self.live.remove(addr / P).unwrap();
        self.freed.push((addr, end - addr / P));
    }

    /// The `which`-th live allocation (modulo their number): address, pages.
    fn pick(&self, which: usize) -> Option<(usize, usize)> {
        self.live.nth(which).map(|(s, e, ())| (s * P, e - s))
    }

    fn verify(&self, pages: &impl Pages, context: &dyn core::fmt::Debug) {
        if let Err(e) = pages.invariants() {
            panic!("{context:?}: invariant: {e}");
        }
        let total = self.live.region_total();
        let used = self.live.covered();
        assert_eq!(pages.total(), total, "{context:?}: total");
        assert_eq!(pages.used(), used, "{context:?}: used");
        assert_eq!(pages.available(), total - used, "{context:?}: available");
        for &(s, e) in self.regions() {
            for page in s.saturating_sub(2)..e + 2 {
                assert_eq!(
                    pages.owned(page * P),
                    self.owned(page),
                    "{context:?}: is_allocated({:#x})",
                    page * P
                );
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        count: usize,
        align_shift: u32,
    },
    AllocAt {
        region: usize,
        offset: usize,
        count: usize,
        align_shift: u32,
    },
    Free {
        which: usize,
    },
    DoubleFree {
        which: usize,
    },
    FreeNeverAllocated {
        region: usize,
        offset: usize,
    },
    FreeOutside {
        which: u8,
    },
    FreeZero {
        which: usize,
    },
    FreeMisaligned {
        which: usize,
    },
    /// A part of a live allocation (the buddy refuses it; the bitmap, which frees pages, is
    /// tested for it in `page_exact_free.rs`).
    FreePart {
        which: usize,
        cut: usize,
    },
    /// Two neighbouring live allocations as one range (the buddy refuses it).
    FreeNeighbours {
        which: usize,
    },
    BadAlign {
        count: usize,
        which: u8,
    },
    AddOverlap {
        region: usize,
        offset: usize,
        len: usize,
    },
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop_oneof![4 => Just(1usize), 3 => 1usize..=9, 1 => 10usize..=40], 0u32..=4)
            .prop_map(|(count, align_shift)| Op::Alloc { count, align_shift }),
        2 => (0usize..4, 0usize..200, 1usize..=6, 0u32..=2).prop_map(
            |(region, offset, count, align_shift)| Op::AllocAt { region, offset, count, align_shift }
        ),
        7 => any::<usize>().prop_map(|which| Op::Free { which }),
        1 => any::<usize>().prop_map(|which| Op::DoubleFree { which }),
        1 => (0usize..4, 0usize..200)
            .prop_map(|(region, offset)| Op::FreeNeverAllocated { region, offset }),
        1 => (0u8..3).prop_map(|which| Op::FreeOutside { which }),
        1 => any::<usize>().prop_map(|which| Op::FreeZero { which }),
        1 => any::<usize>().prop_map(|which| Op::FreeMisaligned { which }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(which, cut)| Op::FreePart { which, cut }),
        1 => any::<usize>().prop_map(|which| Op::FreeNeighbours { which }),
        1 => (0usize..3, 0u8..3).prop_map(|(count, which)| Op::BadAlign { count, which }),
        1 => (0usize..4, 0usize..200, 1usize..50)
            .prop_map(|(region, offset, len)| Op::AddOverlap { region, offset, len }),
        1 => Just(Op::Drain),
    ]
}

/// Up to 4 regions: a first page, then (gap, length) pairs; gaps may be 0 (adjacent).
fn regions() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (
        1usize..70,
        proptest::collection::vec((0usize..20, 1usize..120), 1..=4),
    )
}

/// Builds the region list in page numbers, clipped to `limit` pages after the first.
fn layout(first: usize, spec: &[(usize, usize)], limit: usize) -> Vec<(usize, usize)> {
    let mut regions = Vec::new();
    let mut pos = first;
    for &(gap, len) in spec {
        let start = pos + gap;
        let end = (start + len).min(first + limit);
        if start >= end {
            break;
        }
        regions.push((start, end));
        pos = end;
    }
    regions
}

fn run<A: Pages>(pages: &A, regions: Vec<(usize, usize)>, ops: &[Op]) {
    let mut model = Model::new();
    // Regions are added with byte-unaligned edges where possible: whole pages are kept.
    for (i, &(s, e)) in regions.iter().enumerate() {
        let (start, size) = if i % 2 == 1 && s > 0 {
            (s * P - P / 2, (e - s) * P + P / 2 + P / 3)
        } else {
            (s * P, (e - s) * P)
        };
        pages.add(start, size).unwrap();
        model.live.add_region(s, e);
        model.verify(pages, &("add", s, e));
    }
    let lo = regions[0].0;
    let hi = regions.iter().map(|r| r.1).max().unwrap();
    for (step, op) in ops.iter().enumerate() {
        let context = (step, op);
        match *op {
            Op::Alloc { count, align_shift } => {
                let align = 1 << align_shift;
                match pages.alloc(count, align * P) {
                    Ok(addr) => {
                        assert_eq!(addr % (align * P), 0, "{context:?}: misaligned {addr:#x}");
                        model.take(addr, count, &context);
                    }
                    Err(AllocError::NoMemory) => {
                        let possible = if A::FIRST_FIT {
                            model.fits(count, align)
                        } else {
                            let order = count.next_power_of_two().trailing_zeros().max(align_shift);
                            order as usize <= MAX_ORDER && model.block_fits(order as usize)
                        };
                        assert!(!possible, "{context:?}: NoMemory although a run is free");
                    }
                    Err(e) => panic!("{context:?}: {e:?}"),
                }
            }
            Op::AllocAt {
                region,
                offset,
                count,
                align_shift,
            } => {
                let (s, e) = model.regions()[region % model.regions().len()];
                let align = 1usize << align_shift;
                let first = (s + offset % (e - s)).next_multiple_of(align);
                let result = pages.alloc_at(first * P, count, align * P);
                let covered = (first..first + count).all(|p| model.in_regions(p));
                if !covered {
                    assert_eq!(result, Err(AllocError::InvalidParam), "{context:?}");
                } else if model.run_free(first, count) {
                    assert_eq!(result, Ok(first * P), "{context:?}");
                    model.take(first * P, count, &context);
                } else {
                    assert_eq!(result, Err(AllocError::MemoryOverlap), "{context:?}");
                }
            }
            Op::Free { which } => {
                if let Some((addr, count)) = model.pick(which) {
                    assert_eq!(pages.free(addr, count), Ok(()), "{context:?}");
                    model.release(addr);
                }
            }
            Op::DoubleFree { which } => {
                if !model.freed.is_empty() {
                    let (addr, count) = model.freed[which % model.freed.len()];
                    // Only a true double free if none of it was handed out again.
                    if (addr / P..addr / P + count).all(|p| !model.owned(p)) {
                        assert_eq!(
                            pages.free(addr, count),
                            Err(AllocError::NotAllocated),
                            "{context:?}"
                        );
                    }
                }
            }
            Op::FreeNeverAllocated { region, offset } => {
                let (s, e) = model.regions()[region % model.regions().len()];
                let page = s + offset % (e - s);
                if !model.owned(page) {
                    assert_eq!(
                        pages.free(page * P, 1),
                        Err(AllocError::NotAllocated),
                        "{context:?}"
                    );
                }
            }
            Op::FreeOutside { which } => {
                let page = match which {
                    0 => lo - 1,
                    1 => hi + 3,
                    _ => (lo..hi).find(|&p| !model.in_regions(p)).unwrap_or(hi),
                };
                assert_eq!(
                    pages.free(page * P, 1),
                    Err(AllocError::InvalidParam),
                    "{context:?}"
                );
                // A range starting inside a region and running out of it.
                let (_, e) = model.regions()[which as usize % model.regions().len()];
                if !model.in_regions(e) {
                    assert_eq!(
                        pages.free((e - 1) * P, 2),
                        Err(AllocError::InvalidParam),
                        "{context:?}"
                    );
                }
            }
            Op::FreeZero { which } => {
                let addr = model.pick(which).map_or(lo * P, |a| a.0);
                assert_eq!(
                    pages.free(addr, 0),
                    Err(AllocError::InvalidParam),
                    "{context:?}"
                );
            }
            Op::FreeMisaligned { which } => {
                if let Some((addr, count)) = model.pick(which) {
                    assert_eq!(pages.free(addr + 8, count), Err(AllocError::InvalidParam));
                }
            }
            Op::FreePart { which, cut } => {
                if let Some((addr, count)) = model.pick(which).filter(|&(_, c)| c > 1) {
                    if !A::FIRST_FIT {
                        // Any (start, len) inside the allocation but not all of it.
                        let first = cut % count;
                        let len = 1 + (cut / count) % (count - first);
                        let len = if first == 0 && len == count {
                            count - 1
                        } else {
                            len
                        };
                        assert_eq!(
                            pages.free(addr + first * P, len),
                            Err(AllocError::NotAllocated),
                            "{context:?}"
                        );
                    }
                }
            }
            Op::FreeNeighbours { which } => {
                let pairs: Vec<(usize, usize)> = model
                    .live
                    .iter()
                    .filter_map(|(s, e, ())| model.live.get(e).map(|(f, ())| (s * P, f - s)))
                    .collect();
                if !A::FIRST_FIT && !pairs.is_empty() {
                    let (addr, count) = pairs[which % pairs.len()];
                    assert_eq!(
                        pages.free(addr, count),
                        Err(AllocError::NotAllocated),
                        "{context:?}"
                    );
                }
            }
            Op::BadAlign { count, which } => {
                let align = [3 * P, P / 2, 0][which as usize];
                assert_eq!(pages.alloc(count + 1, align), Err(AllocError::InvalidParam));
                assert_eq!(pages.alloc(0, P), Err(AllocError::InvalidParam));
                assert_eq!(
                    pages.alloc_at(lo * P, 1, align),
                    Err(AllocError::InvalidParam)
                );
                assert_eq!(pages.alloc_at(lo * P, 0, P), Err(AllocError::InvalidParam));
            }
            Op::AddOverlap {
                region,
                offset,
                len,
            } => {
                let (s, e) = model.regions()[region % model.regions().len()];
                let start = s + offset % (e - s);
                assert_eq!(
                    pages.add(start * P, len * P),
                    Err(AllocError::MemoryOverlap),
                    "{context:?}"
                );
            }
            Op::Drain => pages.drain(),
        }
        model.verify(pages, &context);
    }
    // Everything back: all pages free again, and allocatable.
    let live: Vec<(usize, usize)> = model.live.iter().map(|(s, e, ())| (s * P, e - s)).collect();
    for (addr, count) in live {
        assert_eq!(pages.free(addr, count), Ok(()));
        model.release(addr);
    }
    pages.drain();
    model.verify(pages, &"end");
    assert_eq!(pages.used(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn bitmap_against_model(
        (first, spec) in regions(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let regions = layout(first, &spec, WORDS * 64 - 1);
        let pages = Bitmap::new();
        run(&pages, regions, &ops);
    }

    #[test]
    fn buddy_against_model(
        (first, spec) in regions(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let regions = layout(first, &spec, 512);
        let lo = regions[0].0;
        let hi = regions.iter().map(|r| r.1).max().unwrap();
        let pages = Buddy::with_window(lo * P, (hi - lo) * P).with_watermarks(4, 2);
        run(&pages, regions, &ops);
    }
}
