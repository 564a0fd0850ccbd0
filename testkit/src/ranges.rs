//! The shadow oracle for owned ranges of memory: which `[start, end)` ranges are live (handed
//! out and not yet freed), each with a tag the test chooses (a fill seed, a layout, nothing),
//! and the regions they must lie in. The unit is the test's: bytes (addresses) for the byte
//! allocators and heaps, page numbers for the page allocators.
//!
//! Every change is checked: a range handed out that overlaps a live one, lies outside the
//! regions or is empty, and a free of a start that is not live (a double free, a never
//! allocated range), are a [`RangeError`]; the model is unchanged by a refused call.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Where a live range must lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regions {
    /// Inside one region: a memory pool's blocks never span two pools, even adjacent ones.
    One,
    /// Inside the union of the regions: adjacent regions of pages form one run.
    Union,
    /// Anywhere: memory from the system, no region to check against (overlap and double free
    /// are still caught).
    Any,
}

/// Why the model refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// `start >= end`.
    Empty { start: usize, end: usize },
    /// The range is not inside the regions (see [`Regions`]).
    OutsideRegions { start: usize, end: usize },
    /// The range overlaps the live range `live_start..live_end`: handed out twice.
    Overlap {
        start: usize,
        end: usize,
        live_start: usize,
        live_end: usize,
    },
    /// No live range starts at `start`: a double free, or a free of what was never handed out.
    NotLive { start: usize },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty { start, end } => write!(f, "empty range {start:#x}..{end:#x}"),
            Self::OutsideRegions { start, end } => {
                write!(f, "{start:#x}..{end:#x} is outside the regions")
            }
            Self::Overlap {
                start,
                end,
                live_start,
                live_end,
            } => write!(
                f,
                "{start:#x}..{end:#x} overlaps the live range {live_start:#x}..{live_end:#x}"
            ),
            Self::NotLive { start } => write!(f, "no live range starts at {start:#x}"),
        }
    }
}

/// The model: live ranges by start (disjoint), their tags, the regions, and the units covered.
#[derive(Debug, Clone)]
pub struct RangeShadow<T> {
    /// `start -> (end, tag)`; disjoint.
    live: BTreeMap<usize, (usize, T)>,
    /// `(start, end)` of each region, by index.
    regions: Vec<(usize, usize)>,
    within: Regions,
    /// The sum of the live ranges' lengths.
    covered: usize,
}

impl<T> RangeShadow<T> {
    /// An empty model without regions; ranges must lie as `within` says.
    pub const fn new(within: Regions) -> Self {
        Self {
            live: BTreeMap::new(),
            regions: Vec::new(),
            within,
            covered: 0,
        }
    }

    /// Adds the region `start..end`; returns its index.
    pub fn add_region(&mut self, start: usize, end: usize) -> usize {
        assert!(start <= end, "region {start:#x}..{end:#x}");
        self.regions.push((start, end));
        self.regions.len() - 1
    }

    /// Sets region `index` to `start..end` (a pool that grew), or adds it if `index` is the
    /// number of regions.
    pub fn set_region(&mut self, index: usize, start: usize, end: usize) {
        if index == self.regions.len() {
            self.add_region(start, end);
        } else {
            self.regions[index] = (start, end);
        }
    }

    /// The regions, by index.
    pub fn regions(&self) -> &[(usize, usize)] {
        &self.regions
    }

    /// The sum of the regions' lengths.
    pub fn region_total(&self) -> usize {
        self.regions.iter().map(|&(s, e)| e - s).sum()
    }

    /// The index of the first region containing `at`.
    pub fn region_of(&self, at: usize) -> Option<usize> {
        self.regions.iter().position(|&(s, e)| s <= at && at < e)
    }

    /// Whether `start..end` (non-empty) lies where ranges must lie.
    pub fn in_regions(&self, start: usize, end: usize) -> bool {
        match self.within {
            Regions::Any => true,
            Regions::One => self
                .regions
                .iter()
                .any(|&(s, e)| s <= start && start < e && end <= e),
            Regions::Union => {
                let mut at = start;
                while at < end {
                    match self.regions.iter().find(|&&(s, e)| s <= at && at < e) {
                        Some(&(_, e)) => at = e,
                        None => return false,
                    }
                }
                true
            }
        }
    }

    /// The number of live ranges.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no range is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The units the live ranges cover (bytes, pages).
    pub fn covered(&self) -> usize {
        self.covered
    }

    /// A live range overlapping `start..end`, if any (the highest such).
    pub fn overlapping(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let (&s, &(e, _)) = self.live.range(..end).next_back()?;
        (e > start).then_some((s, e))
    }

    /// Whether `start..end` (non-empty) lies in the regions and overlaps no live range: the
    /// allocator could hand it out.
    pub fn is_free(&self, start: usize, end: usize) -> bool {
        start < end && self.in_regions(start, end) && self.overlapping(start, end).is_none()
    }

    /// The live range containing `at`: `(start, end, tag)`.
    pub fn covering(&self, at: usize) -> Option<(usize, usize, &T)> {
        let (&s, (e, tag)) = self.live.range(..=at).next_back()?;
        (at < *e).then_some((s, *e, tag))
    }

    /// The live range starting at `start`: `(end, tag)`.
    pub fn get(&self, start: usize) -> Option<(usize, &T)> {
        self.live.get(&start).map(|(e, tag)| (*e, tag))
    }

    /// Records `start..end` as handed out, tagged `tag`; refused (and nothing changes) if it is
    /// empty, outside the regions, or overlaps a live range.
    pub fn insert(&mut self, start: usize, end: usize, tag: T) -> Result<(), RangeError> {
        if start >= end {
            return Err(RangeError::Empty { start, end });
        }
        if !self.in_regions(start, end) {
            return Err(RangeError::OutsideRegions { start, end });
        }
        if let Some((live_start, live_end)) = self.overlapping(start, end) {
            return Err(RangeError::Overlap {
                start,
                end,
                live_start,
                live_end,
            });
        }
        self.live.insert(start, (end, tag));
        self.covered += end - start;
        Ok(())
    }

    /// Records that the live range starting at `start` was freed; returns its end and tag.
    /// Refused (and nothing changes) if no live range starts there.
    pub fn remove(&mut self, start: usize) -> Result<(usize, T), RangeError> {
        let (end, tag) = self
            .live
            .remove(&start)
            .ok_or(RangeError::NotLive { start })?;
        self.covered -= end - start;
        Ok((end, tag))
    }

    /// The live ranges in address order: `(start, end, tag)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize, &T)> {
        self.live.iter().map(|(&s, (e, tag))| (s, *e, tag))
    }

    /// The `k`-th live range in address order, `k` taken modulo the count (`None` if empty).
    pub fn nth(&self, k: usize) -> Option<(usize, usize, &T)> {
        if self.live.is_empty() {
            return None;
        }
        self.iter().nth(k % self.live.len())
    }

    /// The number of live ranges starting in each region, by region index.
    pub fn live_per_region(&self) -> Vec<usize> {
        let mut counts = alloc::vec![0; self.regions.len()];
        for &start in self.live.keys() {
            if let Some(r) = self.region_of(start) {
                counts[r] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::{RangeError, RangeShadow, Regions};

    #[test]
    fn overlap_double_free_and_regions_are_refused_without_change() {
        let mut m = RangeShadow::new(Regions::One);
        m.add_region(100, 200);
        m.add_region(200, 300);
        assert_eq!(m.insert(100, 110, 'a'), Ok(()));
        assert_eq!(
            m.insert(105, 120, 'b'),
            Err(RangeError::Overlap {
                start: 105,
                end: 120,
                live_start: 100,
                live_end: 110
            })
        );
        assert_eq!(
            m.insert(95, 101, 'b').unwrap_err(),
            RangeError::OutsideRegions {
                start: 95,
                end: 101
            }
        );
        // Adjacent regions: one range may not span both, unless the union counts.
        assert!(m.insert(190, 210, 'c').is_err());
        assert_eq!(
            m.insert(7, 7, 'c'),
            Err(RangeError::Empty { start: 7, end: 7 })
        );
        assert_eq!((m.len(), m.covered()), (1, 10));
        assert_eq!(m.covering(109), Some((100, 110, &'a')));
        assert_eq!(m.covering(110), None);
        assert_eq!(m.remove(100), Ok((110, 'a')));
        assert_eq!(m.remove(100), Err(RangeError::NotLive { start: 100 }));
        assert!(m.is_empty() && m.covered() == 0);

        let mut u = RangeShadow::new(Regions::Union);
        u.add_region(0, 10);
        u.add_region(10, 20);
        u.add_region(30, 40);
        assert!(u.is_free(5, 15));
        assert!(!u.is_free(15, 35));
        assert_eq!(u.insert(5, 15, ()), Ok(()));
        assert!(!u.is_free(14, 16));
        assert_eq!(u.nth(7).map(|r| (r.0, r.1)), Some((5, 15)));
        assert_eq!(u.live_per_region(), [1, 0, 0]);

        let mut a = RangeShadow::new(Regions::Any);
        assert_eq!(a.insert(usize::MAX - 8, usize::MAX, ()), Ok(()));
        assert!(a.insert(usize::MAX - 1, usize::MAX, ()).is_err());
    }
}
