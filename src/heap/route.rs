//! Routing: which layer serves a `Layout` ([`Route`], a pure function, so a free goes where its
//! allocation came from without looking anything up), and the heap's size constants.

use core::alloc::Layout;

use crate::byte::slab::class::{CLASSES, MAX_SMALL, class_for, class_size};
use crate::sync::model::{SIZES, Sizes};

/// Alignment of [`class_16`]'s requests (C's `malloc`: glibc's `MALLOC_ALIGNMENT`).
pub(super) const ALIGN_16: usize = 16;

/// `CLASS_16[(size + 15) / 16]`: the heap class of `Layout(max(size, 1), 16)` for sizes up to
/// `MAX_SMALL`, or `NOT_SMALL` (every class aligned to 16 or more is a multiple of 16, so all
/// sizes of one 16-byte granule share a class; the unit test checks each size).
const CLASS_16: [u8; MAX_SMALL / ALIGN_16 + 1] = {
    let mut table = [NOT_SMALL; MAX_SMALL / ALIGN_16 + 1];
    let mut granules = 0;
    while granules < table.len() {
        let size = if granules == 0 {
            1
        } else {
            granules * ALIGN_16
        };
        if let Some(class) = class_for(size, ALIGN_16) {
            if class < HEAP_CLASSES {
                table[granules] = class as u8;
            }
        }
        granules += 1;
    }
    table
};

/// A [`CLASS_16`] entry for a size the slabs do not serve.
const NOT_SMALL: u8 = u8::MAX;

/// The slab class of `Layout(max(size, 1), 16)` when [`Route::of`] gives `Small` for it (C's
/// `malloc` with one table load instead of the layout's routing); `None` otherwise.
#[inline(always)]
pub(super) const fn class_16(size: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    let class = CLASS_16[size.div_ceil(ALIGN_16)];
    if class == NOT_SMALL {
        None
    } else {
        Some(class as usize)
    }
}

/// Objects per magazine: each CPU slot and thread cache keeps up to two magazines per class, so
/// with [`depot_limit`] this bounds the memory the heap parks in caches (2 under loom, so
/// models reach every exchange quickly). 30, not 32: a thread cache's class (two magazines of
/// 8 + 30 * 8 bytes and 16 bytes of counters) is then 512 bytes, and the fast path finds it
/// with a shift instead of a multiplication.
pub const MAGAZINE: usize = SIZES.magazine;

/// The most full magazines a class's depot holds (its actual limit shrinks with the class size,
/// see [`depot_limit`]).
pub(crate) const DEPOT: usize = SIZES.depot;

/// Classes the heap serves from slabs, all 32 (the first 4 under loom: 8..32 B; larger sizes go
/// to TLSF there): the bound of the class index of [`Route::Small`] and of
/// [`SmpHeap::class_stats`](super::SmpHeap::class_stats).
pub const HEAP_CLASSES: usize = SIZES.heap_classes;
const _: () = assert!(Sizes::SHIPPED.heap_classes == CLASSES && HEAP_CLASSES <= CLASSES);

/// Other slots a thread tries when its own is busy, before the class lock.
pub(crate) const PROBES: usize = 2;

/// Requests above this many bytes (256 KiB) skip TLSF and go to the page source
/// ([`Route::Huge`]).
pub(crate) const HUGE: usize = 256 * 1024;

/// Full magazines the depot of `class` may hold: about 256 KiB of objects, 1 to the depot's 16
/// slots (1 under loom).
pub const fn depot_limit(class: usize) -> usize {
    let bytes = MAGAZINE * class_size(class);
    let limit = (256 * 1024) / bytes;
    if limit < 1 {
        1
    } else if limit > DEPOT {
        DEPOT
    } else {
        limit
    }
}

/// Where a layout is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Size 0: a dangling aligned pointer, nothing allocated.
    Zero,
    /// A slab class (index).
    Small(usize),
    /// The TLSF arenas: sizes above the slab classes up to 256 KiB, and odd alignments.
    Tlsf,
    /// Straight from the page source ([`PageSource::alloc_huge`](super::PageSource::alloc_huge)):
    /// sizes above 256 KiB.
    Huge,
}

impl Route {
    /// The route of `layout` (a pure function: frees and reallocs recompute it).
    #[inline(always)]
    pub const fn of(layout: Layout) -> Route {
        let size = layout.size();
        if size == 0 {
            return Route::Zero;
        }
        if let Some(class) = class_for(size, layout.align()) {
            if class < HEAP_CLASSES {
                return Route::Small(class);
            }
        }
        if size <= HUGE && layout.align() <= MAX_SMALL {
            Route::Tlsf
        } else {
            Route::Huge
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `class_16` is `Route::of(Layout(max(size, 1), 16))` for every size up to past the slabs.
    #[test]
    fn class_16_is_the_route() {
        for size in 0..=MAX_SMALL + 64 {
            let layout = Layout::from_size_align(size.max(1), ALIGN_16).unwrap();
            let want = match Route::of(layout) {
                Route::Small(class) => Some(class),
                _ => None,
            };
            assert_eq!(class_16(size), want, "size {size}");
        }
        assert_eq!(class_16(usize::MAX), None);
    }
}
