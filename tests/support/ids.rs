//! [`IdShadow`](super::IdShadow)'s view of smpalloc's ID allocators, and the mapping from raw
//! proptest values to IDs of interest.

use core::fmt::Debug;

use smpalloc::PidAllocator;
use smpalloc::bitmap::AtomicBitmap;

use super::IdShadow;

/// What the oracle reads from an allocator under test.
pub(crate) trait IdObserver {
    /// Whether the allocator reports `id` as allocated.
    fn is_owned(&self, id: usize) -> bool;
    /// The allocator's count of allocated IDs (in the model's domain).
    fn used_count(&self) -> usize;
    /// The allocator's own invariant check.
    fn invariants(&self) -> Result<(), String>;
    /// Every allocated ID of the model's domain, in increasing order.
    fn allocated_ids(&self) -> Vec<usize>;
}

/// The comparisons of an [`IdShadow`] with the allocator it shadows.
pub(crate) trait ShadowCheck {
    /// Compares the allocator with the model after one step: `contains` for the touched IDs
    /// (and their neighbours), the used count, and the allocator's invariant check.
    fn verify(&self, alloc: &impl IdObserver, touched: &[usize], context: &dyn Debug);
    /// [`verify`](Self::verify) plus a comparison of every allocated ID.
    fn verify_full(&self, alloc: &impl IdObserver, context: &dyn Debug);
}

impl ShadowCheck for IdShadow {
    #[track_caller]
    fn verify(&self, alloc: &impl IdObserver, touched: &[usize], context: &dyn Debug) {
        for &id in touched {
            for probe in [id.wrapping_sub(1), id, id.wrapping_add(1)] {
                assert_eq!(
                    alloc.is_owned(probe),
                    self.contains(probe),
                    "contains({probe}) disagrees with the model after {context:?}"
                );
            }
        }
        assert_eq!(
            alloc.used_count(),
            self.len(),
            "used count after {context:?}"
        );
        if let Err(e) = alloc.invariants() {
            panic!("check() failed after {context:?}: {e}");
        }
    }

    #[track_caller]
    fn verify_full(&self, alloc: &impl IdObserver, context: &dyn Debug) {
        self.verify(alloc, &[], context);
        let actual = alloc.allocated_ids();
        if actual.len() != self.len() || !actual.iter().all(|&id| self.contains(id)) {
            let extra: Vec<_> = actual
                .iter()
                .filter(|&&id| !self.contains(id))
                .take(8)
                .collect();
            panic!(
                "allocated IDs differ from the model after {context:?}: {} vs {} owned; \
                 allocated but not owned: {extra:?}",
                actual.len(),
                self.len()
            );
        }
    }
}

impl<const W: usize, const S: usize> IdObserver for AtomicBitmap<W, S> {
    fn is_owned(&self, id: usize) -> bool {
        self.contains(id)
    }
    fn used_count(&self) -> usize {
        self.count_allocated()
    }
    fn invariants(&self) -> Result<(), String> {
        self.check().map_err(|e| format!("{e:?}"))
    }
    fn allocated_ids(&self) -> Vec<usize> {
        self.iter_allocated().collect()
    }
}

impl<const O: usize, const S: usize> IdObserver for PidAllocator<O, S> {
    fn is_owned(&self, id: usize) -> bool {
        self.contains(id)
    }
    fn used_count(&self) -> usize {
        self.used()
    }
    fn invariants(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }
    fn allocated_ids(&self) -> Vec<usize> {
        let (lo, hi) = (self.reserved(), self.reserved() + self.size());
        self.bitmap()
            .iter_allocated()
            .filter(|&id| lo <= id && id < hi)
            .collect()
    }
}

/// A raw proptest value that [`pick`] maps to an ID (or count, cursor, floor) of interest for a
/// given capacity: low IDs, the end of the ID space, leaf and summary word boundaries, the
/// whole range, just past the end, and extreme values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pos(pub(crate) u8, pub(crate) u32);

/// Maps `p` onto `0..` for an ID space of `capacity` IDs.
pub(crate) fn pick(capacity: usize, p: Pos) -> usize {
    let bits = usize::BITS as usize;
    let r = p.1 as usize;
    match p.0 % 10 {
        // Low IDs (slightly past a tiny capacity too).
        0..=2 => r % (capacity.min(320) + 8),
        // The last IDs, and a few past the end.
        3 => capacity.saturating_sub(160) + r % 200,
        // Around the span of one level-1 summary word (BITS leaf words).
        4 => (bits * bits).min(capacity).saturating_sub(100) + r % 200,
        // Around a leaf word boundary.
        5 => (((r >> 2) % (capacity / bits + 1)) * bits + (r & 3)).saturating_sub(2),
        // Anywhere.
        6 => r % capacity,
        // Out of range.
        7 => capacity + r % 1000,
        // Extreme.
        8 => usize::MAX - r % 4,
        _ => 0,
    }
}
