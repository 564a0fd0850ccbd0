//! [`Regions`]: an append-only table of page ranges that readers search without a lock.
//!
//! Writers (`add_memory`) serialize on a [`SpinLock`]; each writes the next entry with
//! `Relaxed` stores and then publishes it by storing the new count with `Release`. Readers load
//! the count with `Acquire` and read only entries below it, which were written before the
//! count that covers them, so they are never seen half-written. Entries never change once
//! published.

use crate::SpinLock;
use crate::sync::atomic::{AtomicUsize, Ordering, usize_array};
use crate::sync::loom_const_fn;
use crate::traits::{AllocError, AllocResult};

/// The most regions one page allocator manages.
pub const MAX_REGIONS: usize = 16;

/// Up to [`MAX_REGIONS`] disjoint page ranges `[start, end)` (page numbers).
pub(super) struct Regions {
    /// Serializes writers.
    writer: SpinLock<()>,
    /// Published entries: `count` (`Release` store, `Acquire` load).
    count: AtomicUsize,
    starts: [AtomicUsize; MAX_REGIONS],
    ends: [AtomicUsize; MAX_REGIONS],
}

impl Regions {
    loom_const_fn! {
        pub(super) fn new() -> Self {
            Self {
                writer: SpinLock::new(()),
                count: AtomicUsize::new(0),
                starts: usize_array::<MAX_REGIONS>(0),
                ends: usize_array::<MAX_REGIONS>(0),
            }
        }
    }

    /// Adds `[start, end)` unless it overlaps a region (`MemoryOverlap`) or the table is full
    /// (`NoMemory`). `validate` runs under the writer lock after those checks and before the
    /// entry is published (it is told whether this is the first region); an error from it
    /// aborts the addition. Returns the entry's index.
    pub(super) fn add(
        &self,
        start: usize,
        end: usize,
        validate: impl FnOnce(bool) -> AllocResult,
    ) -> AllocResult<usize> {
        let _writer = self.writer.lock();
        let count = self.count.load(Ordering::Relaxed);
        if self.iter().any(|(s, e)| start < e && s < end) {
            return Err(AllocError::MemoryOverlap);
        }
        if count == MAX_REGIONS {
            return Err(AllocError::NoMemory);
        }
        validate(count == 0)?;
        self.starts[count].store(start, Ordering::Relaxed);
        self.ends[count].store(end, Ordering::Relaxed);
        self.count.store(count + 1, Ordering::Release);
        Ok(count)
    }

    /// The published regions, in the order they were added.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let count = self.count.load(Ordering::Acquire);
        (0..count).map(|i| {
            (
                self.starts[i].load(Ordering::Relaxed),
                self.ends[i].load(Ordering::Relaxed),
            )
        })
    }

    /// Whether every page of `[start, end)` lies in some region (adjacent regions may together
    /// cover it). O(regions²) in the worst case, one comparison for one region.
    pub(super) fn covers(&self, start: usize, end: usize) -> bool {
        let mut pos = start;
        'outer: while pos < end {
            for (s, e) in self.iter() {
                if s <= pos && pos < e {
                    pos = e;
                    continue 'outer;
                }
            }
            return false;
        }
        true
    }

    /// The total number of pages in all regions.
    pub(super) fn pages(&self) -> usize {
        self.iter().map(|(s, e)| e - s).sum()
    }
}
