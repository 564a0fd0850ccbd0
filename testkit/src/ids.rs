//! The shadow oracle for IDs: which IDs of a domain the test owns, and what each ID
//! allocator policy should hand out next.
//!
//! The model is an ordered set of owned IDs. It is stored as maximal runs (`start -> end` in a
//! `BTreeMap`) rather than one `BTreeSet<usize>` entry per ID, so that a bitmap with a
//! 262,144-ID allocated prefix costs one entry and "lowest free ID at or above x" is one
//! `O(log n)` lookup; observably it is exactly a `BTreeSet<usize>` of owned IDs (`contains`,
//! `len`, `ids`).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// `value` rounded up to a multiple of `align` (a power of two); `None` on overflow.
fn align_up(value: usize, align: usize) -> Option<usize> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// The shadow model: which IDs of the domain `start..end` the test owns.
///
/// IDs outside the domain are never owned by the test (for a `PidAllocator` they are the
/// reserved and unmanaged IDs, which the allocator itself holds).
#[derive(Debug, Clone)]
pub struct IdShadow {
    /// Maximal runs of owned IDs: `start -> end` (exclusive); disjoint and never adjacent.
    runs: BTreeMap<usize, usize>,
    /// The number of owned IDs.
    len: usize,
    /// The domain: the IDs the allocator may hand out.
    start: usize,
    end: usize,
}

impl IdShadow {
    /// An empty model over the domain `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        assert!(start <= end);
        Self {
            runs: BTreeMap::new(),
            len: 0,
            start,
            end,
        }
    }

    /// A model over `start..end` that owns `start..prefix_end` (clamped to the domain).
    pub fn with_prefix(start: usize, end: usize, prefix_end: usize) -> Self {
        let mut model = Self::new(start, end);
        let prefix_end = prefix_end.min(end);
        if prefix_end > start {
            model.take_range(start, prefix_end);
        }
        model
    }

    /// The domain `(start, end)`.
    pub fn domain(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Replaces the domain and forgets every owned ID (what `BaseAllocator::init` does).
    pub fn reset(&mut self, start: usize, end: usize) {
        *self = Self::new(start, end);
    }

    /// Grows the domain to `start..end` (a superset of the old one); owned IDs stay owned.
    pub fn grow(&mut self, start: usize, end: usize) {
        assert!(
            start <= self.start && end >= self.end,
            "the domain only grows"
        );
        self.start = start;
        self.end = end;
    }

    /// The number of owned IDs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no ID is owned.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is in the domain.
    pub fn in_domain(&self, id: usize) -> bool {
        self.start <= id && id < self.end
    }

    /// The run `(start, end)` of owned IDs containing `id`.
    pub fn run_at(&self, id: usize) -> Option<(usize, usize)> {
        self.runs
            .range(..=id)
            .next_back()
            .filter(|&(_, &e)| id < e)
            .map(|(&s, &e)| (s, e))
    }

    /// Whether the test owns `id`.
    pub fn contains(&self, id: usize) -> bool {
        self.run_at(id).is_some()
    }

    /// Whether every ID of `a..b` is owned (`a < b`).
    pub fn all_owned(&self, a: usize, b: usize) -> bool {
        assert!(a < b);
        self.run_at(a).is_some_and(|(_, e)| e >= b)
    }

    /// The highest owned ID in `a..b` (`a < b`).
    pub fn highest_owned_in(&self, a: usize, b: usize) -> Option<usize> {
        assert!(a < b);
        let (_, &e) = self.runs.range(..b).next_back()?;
        (e > a).then(|| e.min(b) - 1)
    }

    /// The `k`-th owned ID in increasing order (`k < len`).
    pub fn nth(&self, k: usize) -> Option<usize> {
        let mut k = k;
        for (&s, &e) in &self.runs {
            if k < e - s {
                return Some(s + k);
            }
            k -= e - s;
        }
        None
    }

    /// Every owned ID, in increasing order.
    pub fn ids(&self) -> Vec<usize> {
        self.runs.iter().flat_map(|(&s, &e)| s..e).collect()
    }

    /// The lowest free ID of the domain at or above `from`.
    pub fn lowest_free_from(&self, from: usize) -> Option<usize> {
        let mut id = from.max(self.start);
        if let Some((_, e)) = self.run_at(id) {
            id = e; // runs are maximal: `e` is free or the end of the domain
        }
        (id < self.end).then_some(id)
    }

    /// Next-fit from `cursor` over an ID space of `capacity`: the first free ID at or after
    /// `max(cursor, floor)`, else (wrapping) the first at or after `floor`. Returns the ID and
    /// the cursor afterwards (one past the ID, or `floor` when that is the capacity).
    pub fn next_fit(&self, cursor: usize, floor: usize, capacity: usize) -> (Option<usize>, usize) {
        let start = cursor.max(floor);
        let found = self.lowest_free_from(start).or_else(|| {
            if start > floor {
                self.lowest_free_from(floor)
            } else {
                None
            }
        });
        match found {
            Some(id) => (Some(id), if id + 1 < capacity { id + 1 } else { floor }),
            None => (None, cursor),
        }
    }

    /// First fit of `count` contiguous free IDs of the domain starting at a multiple of
    /// `align` (a power of two) at or above `floor`.
    pub fn first_fit_range(&self, count: usize, align: usize, floor: usize) -> Option<usize> {
        assert!(count > 0 && align.is_power_of_two());
        let mut s = align_up(floor.max(self.start), align)?;
        loop {
            let e = s.checked_add(count)?;
            if e > self.end {
                return None;
            }
            match self.highest_owned_in(s, e) {
                // Every aligned start in (s, t] also covers `t`.
                Some(t) => s = align_up(t + 1, align)?,
                None => return Some(s),
            }
        }
    }

    /// Records that the test now owns `id`; panics if it already did (a duplicate) or if `id`
    /// is outside the domain (a reserved or unmanaged ID was handed out).
    #[track_caller]
    pub fn take(&mut self, id: usize) {
        self.take_range(id, id + 1);
    }

    /// Records that the test now owns `a..b` (`a < b`); panics as [`take`](Self::take).
    #[track_caller]
    pub fn take_range(&mut self, a: usize, b: usize) {
        assert!(a < b, "empty range {a}..{b}");
        assert!(
            self.start <= a && b <= self.end,
            "IDs {a}..{b} handed out, outside the domain {}..{}",
            self.start,
            self.end
        );
        assert!(
            self.highest_owned_in(a, b).is_none(),
            "duplicate: {a}..{b} handed out while {} is owned",
            self.highest_owned_in(a, b).unwrap_or_default()
        );
        let (mut s, mut e) = (a, b);
        if let Some((&ps, &pe)) = self.runs.range(..a).next_back() {
            if pe == a {
                self.runs.remove(&ps);
                s = ps;
            }
        }
        if let Some(ne) = self.runs.remove(&b) {
            e = ne;
        }
        self.runs.insert(s, e);
        self.len += b - a;
    }

    /// Records that `id` was freed; panics if it was not owned.
    #[track_caller]
    pub fn release(&mut self, id: usize) {
        self.release_range(id, id + 1);
    }

    /// Records that `a..b` (`a < b`) was freed; panics unless all of it was owned.
    #[track_caller]
    pub fn release_range(&mut self, a: usize, b: usize) {
        let (s, e) = self
            .run_at(a)
            .filter(|&(_, e)| e >= b)
            .unwrap_or_else(|| panic!("model: releasing {a}..{b}, not all owned"));
        self.runs.remove(&s);
        if s < a {
            self.runs.insert(s, a);
        }
        if b < e {
            self.runs.insert(b, e);
        }
        self.len -= b - a;
    }
}

#[cfg(test)]
mod tests {
    use super::IdShadow;

    #[test]
    fn runs_merge_and_policies_find_what_a_set_would() {
        let mut m = IdShadow::with_prefix(10, 100, 20);
        assert_eq!((m.len(), m.run_at(15)), (10, Some((10, 20))));
        m.take_range(22, 30);
        m.take(20);
        assert_eq!(m.lowest_free_from(0), Some(21));
        m.take(21); // 10..30 is one run now
        assert_eq!((m.run_at(29), m.len()), (Some((10, 30)), 20));
        assert_eq!(m.highest_owned_in(0, 100), Some(29));
        assert_eq!(m.nth(19), Some(29));
        // Next fit from a cursor past the free IDs wraps to the floor.
        assert_eq!(m.next_fit(99, 10, 100), (Some(99), 10));
        // First fit of 8 IDs aligned to 8 at or above 12: 32 (10..30 taken).
        assert_eq!(m.first_fit_range(8, 8, 12), Some(32));
        assert_eq!(m.first_fit_range(80, 1, 0), None);
        m.release_range(12, 28);
        assert_eq!(m.ids(), [10, 11, 28, 29]);
        m.grow(0, 200);
        assert!(m.in_domain(150) && m.contains(28));
    }

    #[test]
    #[should_panic(expected = "duplicate")]
    fn a_duplicate_panics() {
        let mut m = IdShadow::new(0, 64);
        m.take_range(3, 9);
        m.take(8);
    }

    #[test]
    #[should_panic(expected = "outside the domain")]
    fn an_id_outside_the_domain_panics() {
        IdShadow::new(1, 64).take(0);
    }

    #[test]
    #[should_panic(expected = "not all owned")]
    fn a_free_of_a_free_id_panics() {
        let mut m = IdShadow::new(0, 64);
        m.take(5);
        m.release_range(5, 7);
    }
}
