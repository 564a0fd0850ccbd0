//! Size classes of the slab layer: 32 classes from 8 B to 4 KiB.
//!
//! - 8 to 64 B in steps of 8 (the 8-byte granule),
//! - then four classes per power of two (80, 96, 112, 128, 160, ..., 3584, 4096).
//!
//! Every class is a multiple of 8, and a request rounded up to the 8-byte granule wastes at most
//! 20% of its block (a quarter step over the class below: `(c - p - 8) / c < 1/5`); the test
//! `class_waste_is_bounded` checks every size. The class index is computed, not looked up:
//! O(1) with one `leading_zeros`.
//!
//! Each class carves slabs of `2^order` pages (4 KiB to 32 KiB), the smallest order whose tail
//! waste (slab bytes minus header minus whole objects) is at most 1/8 of the slab and that holds
//! at least 8 objects (so a magazine refill takes a few slabs, not 32).

/// Number of size classes.
pub const CLASSES: usize = 32;

/// The largest size (and alignment) the slab layer serves.
pub const MAX_SMALL: usize = 4096;

/// Bytes per slab page (slab sizes are `SLAB_PAGE << order`).
pub const SLAB_PAGE: usize = 4096;

/// Bytes reserved at the end of every slab for its header.
pub(crate) const HEADER_BYTES: usize = 128;

/// `index_of` for sizes up to 1 KiB, by 8-byte granule: one load on the hot path.
const GRANULE_CLASS: [u8; 129] = {
    let mut table = [0u8; 129];
    let mut granules = 1;
    while granules <= 128 {
        table[granules] = index_of_computed(granules * 8) as u8;
        granules += 1;
    }
    table
};

/// `class_align` by class: one load.
const CLASS_ALIGN: [u16; CLASSES] = {
    let mut table = [0u16; CLASSES];
    let mut i = 0;
    while i < CLASSES {
        let size = class_size(i);
        table[i] = (size & size.wrapping_neg()) as u16;
        i += 1;
    }
    table
};

/// The size class serving `size` bytes (1..=`MAX_SMALL`), ignoring alignment.
#[inline]
pub(crate) const fn index_of(size: usize) -> usize {
    if size <= 1024 {
        GRANULE_CLASS[size.div_ceil(8)] as usize
    } else {
        index_of_computed(size)
    }
}

/// `index_of` computed: 8-byte steps to 64, then a quarter of each power of two.
const fn index_of_computed(size: usize) -> usize {
    debug_assert!(size >= 1 && size <= MAX_SMALL);
    if size <= 64 {
        size.div_ceil(8) - 1
    } else {
        let s = size - 1;
        let bits = usize::BITS - 1 - s.leading_zeros(); // floor(log2(s)), 6..=11
        let quarter = (s >> (bits - 2)) & 3;
        8 + (bits as usize - 6) * 4 + quarter
    }
}

/// The block size of class `index`.
#[inline]
pub const fn class_size(index: usize) -> usize {
    if index < 8 {
        (index + 1) * 8
    } else {
        let k = index - 8;
        let bits = k / 4 + 6;
        (5 + k % 4) << (bits - 2)
    }
}

/// The alignment every block of class `index` has: the largest power of two dividing its size
/// (slabs are aligned to their own size, at least 4 KiB, and blocks sit at multiples of the
/// class size from the slab's start).
#[inline]
pub const fn class_align(index: usize) -> usize {
    CLASS_ALIGN[index] as usize
}

/// The class serving a request of `size` bytes aligned to `align`, or `None` when the slab
/// layer cannot: too large, or an alignment no class of a nearby size gives (those go to
/// TLSF). Walks at most two classes up for the alignment.
#[inline]
pub const fn class_for(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > MAX_SMALL || align > MAX_SMALL {
        return None;
    }
    let mut index = index_of(size);
    if align <= 8 {
        // Every class is a multiple of 8: the common case needs no alignment lookup.
        return Some(index);
    }
    let mut steps = 0;
    while class_align(index) < align {
        index += 1;
        steps += 1;
        if steps > 2 || index >= CLASSES {
            return None;
        }
    }
    Some(index)
}

/// log2 of the slab size of class `index` in `SLAB_PAGE`s: the smallest order (at most 3)
/// whose slab wastes at most an eighth and holds at least 8 objects.
const fn slab_order_computed(index: usize) -> usize {
    let size = class_size(index);
    let mut order = 0;
    while order < 3 {
        let bytes = SLAB_PAGE << order;
        let waste = (bytes - HEADER_BYTES) % size + HEADER_BYTES;
        if waste * 8 <= bytes && (bytes - HEADER_BYTES) / size >= 8 {
            break;
        }
        order += 1;
    }
    order
}

/// A class's slab geometry, computed once at compile time: the slab layer's and the heap's
/// `free` paths look these up instead of dividing at run time.
#[derive(Clone, Copy)]
struct Geometry {
    /// log2 of the slab size in `SLAB_PAGE`s.
    order: u8,
    /// Objects in one slab.
    objects: u16,
    /// `ceil(2^64 / size)` (`u64::MAX / size + 1`), for [`exact_index`].
    divisor: u64,
}

const GEOMETRY: [Geometry; CLASSES] = {
    let mut table = [Geometry {
        order: 0,
        objects: 0,
        divisor: 0,
    }; CLASSES];
    let mut index = 0;
    while index < CLASSES {
        let order = slab_order_computed(index);
        let size = class_size(index);
        let objects = ((SLAB_PAGE << order) - HEADER_BYTES) / size;
        assert!(objects <= u16::MAX as usize && (SLAB_PAGE << order) <= 1 << 16);
        table[index] = Geometry {
            order: order as u8,
            objects: objects as u16,
            divisor: u64::MAX / size as u64 + 1,
        };
        index += 1;
    }
    table
};

/// log2 of the slab size of class `index` in `SLAB_PAGE`s.
#[inline]
pub const fn slab_order(index: usize) -> usize {
    GEOMETRY[index].order as usize
}

/// Bytes in one slab of class `index`.
#[inline]
pub const fn slab_bytes(index: usize) -> usize {
    SLAB_PAGE << slab_order(index)
}

/// Objects in one slab of class `index`.
#[inline]
pub const fn objects_per_slab(index: usize) -> usize {
    GEOMETRY[index].objects as usize
}

/// `ceil(2^64 / class_size(index))`: `offset * divisor` (wrapping) is below `divisor` exactly
/// when the class size divides `offset`, for every offset below 2^32 (Lemire, Kaser and
/// Kurz, "Faster remainder by direct computation", 2019; slabs are at most 2^16 bytes).
#[inline]
pub(crate) const fn size_divisor(index: usize) -> u64 {
    GEOMETRY[index].divisor
}

/// `offset / class_size(index)` when the class size divides `offset` (an object's start),
/// else `None`: one multiplication and one high multiply, no division. `offset` is an
/// offset within a slab (below 2^16).
#[inline]
pub(crate) const fn exact_index(offset: usize, index: usize) -> Option<usize> {
    let divisor = size_divisor(index);
    let offset = offset as u64;
    if offset.wrapping_mul(divisor) >= divisor {
        return None;
    }
    Some(((offset as u128 * divisor as u128) >> 64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables and the divisibility test give the division's answers at every offset of
    /// every class's slab.
    #[test]
    fn geometry_is_the_division() {
        for index in 0..CLASSES {
            let size = class_size(index);
            assert_eq!(slab_order(index), slab_order_computed(index));
            assert_eq!(
                objects_per_slab(index),
                (slab_bytes(index) - HEADER_BYTES) / size
            );
            for offset in 0..slab_bytes(index) {
                let divided = (offset % size == 0).then_some(offset / size);
                assert_eq!(
                    exact_index(offset, index),
                    divided,
                    "class {index} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn classes_are_increasing_multiples_of_eight() {
        assert_eq!(class_size(0), 8);
        assert_eq!(class_size(CLASSES - 1), MAX_SMALL);
        for i in 1..CLASSES {
            assert!(class_size(i) > class_size(i - 1));
            assert_eq!(class_size(i) % 8, 0);
        }
    }

    #[test]
    fn tables_match_the_formulas() {
        for size in 1..=MAX_SMALL {
            assert_eq!(index_of(size), index_of_computed(size), "size {size}");
        }
        for i in 0..CLASSES {
            let size = class_size(i);
            assert_eq!(class_align(i), size & size.wrapping_neg());
        }
    }

    #[test]
    fn index_of_picks_the_smallest_fitting_class() {
        for size in 1..=MAX_SMALL {
            let i = index_of(size);
            assert!(class_size(i) >= size, "size {size}");
            assert!(i == 0 || class_size(i - 1) < size, "size {size}");
        }
    }

    #[test]
    fn class_waste_is_bounded() {
        // Waste of a request rounded to the 8-byte granule: at most 25% of the block (20% in fact).
        for size in (8..=MAX_SMALL).step_by(8) {
            let c = class_size(index_of(size));
            assert!((c - size) * 5 <= c, "size {size} in class {c}");
        }
    }

    #[test]
    fn class_for_honours_alignment() {
        for size in 1..=MAX_SMALL {
            for shift in 0..=12 {
                let align = 1 << shift;
                if let Some(i) = class_for(size, align) {
                    assert!(class_size(i) >= size && class_align(i) >= align);
                } else {
                    // Only alignments above the natural alignment of nearby classes go elsewhere.
                    assert!(align > 8, "size {size} align {align}");
                }
            }
        }
        // Rust types: size a multiple of align. Those always have a class.
        for shift in 0..=12 {
            let align = 1usize << shift;
            for size in (align..=MAX_SMALL).step_by(align) {
                assert!(
                    class_for(size, align).is_some(),
                    "size {size} align {align}"
                );
            }
        }
        assert_eq!(class_for(0, 1), None);
        assert_eq!(class_for(MAX_SMALL + 1, 1), None);
        assert_eq!(class_for(8, 8192), None);
    }

    #[test]
    fn slabs_waste_at_most_an_eighth() {
        for i in 0..CLASSES {
            let bytes = slab_bytes(i);
            let waste = bytes - objects_per_slab(i) * class_size(i);
            assert!(waste * 8 <= bytes || slab_order(i) == 3, "class {i}");
            assert!(objects_per_slab(i) >= 8 || slab_order(i) == 3, "class {i}");
            assert!(
                objects_per_slab(i) >= 1 && objects_per_slab(i) <= 512,
                "class {i}"
            );
        }
    }
}
