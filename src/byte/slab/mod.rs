//! The slab layer: size classes ([`class`]) and one class's slabs (`SlabCache`), shared by the
//! SMP heap (one cache per class behind the class lock) and [`SlabByteAllocator`] (arceos'
//! API, single-threaded).

pub mod cache;
pub mod class;

pub(crate) use cache::SlabCache;
pub use cache::{SlabCounts, SlabError};

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use self::class::{CLASSES, class_for, class_size, objects_per_slab, slab_bytes};
use super::buddy::{self, BuddyByteAllocator};
use super::dangling;
use crate::traits::{AllocError, AllocResult, BaseAllocator, ByteAllocator};

/// Empty slabs each class keeps before one goes back to the buddy allocator.
const KEEP_EMPTY: usize = 1;

/// A violated invariant found by [`SlabByteAllocator::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// A size class's cache is inconsistent.
    Cache {
        /// The class index.
        class: usize,
        /// What is wrong.
        error: cache::CheckError,
    },
    /// The buddy allocator under the slabs is inconsistent.
    Buddy(buddy::CheckError),
    /// The statistics disagree with the slabs and blocks.
    Counters(&'static str),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cache { class, error } => write!(f, "slab class {class}: {error}"),
            Self::Buddy(e) => write!(f, "buddy: {e}"),
            Self::Counters(s) => f.write_str(s),
        }
    }
}

impl core::error::Error for CheckError {}

/// A slab byte allocator with arceos' `SlabByteAllocator` interface ([`BaseAllocator`] +
/// [`ByteAllocator`]), single-threaded (`&mut self`; a kernel wraps it in a lock).
///
/// A [`BuddyByteAllocator`] owns all memory. Requests a size class serves (sizes up to 4 KiB,
/// alignments up to the class's natural alignment: see [`class::class_for`]) come from one of
/// 32 slab caches, whose slabs (4 to 32 KiB, aligned to their size) are blocks of the buddy
/// allocator; everything else (larger sizes, larger alignments, including alignments above
/// 4096) goes to the buddy allocator directly, with its real alignment. Empty slabs go back to
/// the buddy allocator once a class holds more than one.
///
/// Differences from arceos' (`ax_slab_allocator` inside), all fixes: alignments above 4096 are
/// honoured (arceos serves them from 4 KiB-aligned blocks); the statistics count each byte
/// once (arceos adds the slabs to the buddy heap they were carved from); empty slabs are
/// returned; bad input is refused as by [`BuddyByteAllocator`] (`try_dealloc` says
/// `NotAllocated`; a pointer is checked to lie in a live slab of the layout's class before its
/// header is read); zero-size layouts get a dangling aligned pointer; any region size and
/// alignment (arceos asserts 4 KiB alignment and 32 KiB multiples).
///
/// Statistics: `total_bytes` is the buddy allocator's (the regions' block bytes);
/// `used_bytes` is the class size of each live slab object plus the block size of each live
/// direct allocation; `available_bytes` is the free buddy bytes plus the free object bytes of
/// the slabs held. Slab headers and tail waste ([`overhead_bytes`](Self::overhead_bytes))
/// are neither: `used + available + overhead = total`.
///
/// ```
/// use smpalloc::{BaseAllocator, ByteAllocator, SlabByteAllocator};
/// use core::alloc::Layout;
/// let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
/// let mut slab = SlabByteAllocator::new();
/// slab.init(pool.as_mut_ptr() as usize, pool.len());
/// let small = Layout::from_size_align(24, 8).unwrap();
/// let page = Layout::from_size_align(64, 8192).unwrap(); // arceos: only 4096-aligned
/// let (a, b) = (slab.alloc(small).unwrap(), slab.alloc(page).unwrap());
/// assert_eq!(b.as_ptr() as usize % 8192, 0);
/// assert_eq!(slab.used_bytes(), 24 + 8192);
/// slab.dealloc(a, small);
/// slab.dealloc(b, page);
/// assert_eq!(slab.used_bytes(), 0);
/// ```
pub struct SlabByteAllocator {
    buddy: BuddyByteAllocator,
    caches: [SlabCache; CLASSES],
}

/// `[SlabCache::new(0, k), ..., SlabCache::new(CLASSES - 1, k)]` in a `const fn`.
macro_rules! caches {
    ($($i:literal)*) => {
        [$(SlabCache::new($i, KEEP_EMPTY)),*]
    };
}

impl SlabByteAllocator {
    /// An allocator with no memory; add some with `init` or `add_memory`.
    pub const fn new() -> Self {
        Self {
            buddy: BuddyByteAllocator::new(),
            caches: caches!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31),
        }
    }

    /// Adds the memory `region`, keeping the pointer's provenance (see
    /// [`BuddyByteAllocator::add_region`], whose errors it returns).
    ///
    /// # Safety
    /// As for [`BuddyByteAllocator::add_region`].
    pub unsafe fn add_region(&mut self, region: NonNull<[u8]>) -> AllocResult {
        // SAFETY: caller.
        unsafe { self.buddy.add_region(region) }
    }

    /// The buddy allocator holding all memory (slabs are its internal blocks).
    pub fn buddy(&self) -> &BuddyByteAllocator {
        &self.buddy
    }

    /// The counts of size class `class` (`< class::CLASSES`).
    pub fn class_counts(&self, class: usize) -> SlabCounts {
        self.caches[class].counts()
    }

    /// Frees `pos` like [`dealloc`](ByteAllocator::dealloc), but reports what it refused:
    /// `Err(NotAllocated)` when `pos` is not a live allocation of this layout (outside every
    /// region, not in a live slab of the layout's class, not at an object boundary, a double
    /// free, or not a live direct block of the layout's block size). Nothing changes then.
    /// Zero-size layouts: `Ok`, nothing done.
    ///
    /// # Time Complexity
    /// O(regions) plus, when a slab empties or for a direct block, O(orders).
    pub fn try_dealloc(&mut self, pos: NonNull<u8>, layout: Layout) -> AllocResult {
        if layout.size() == 0 {
            return Ok(());
        }
        let Some(class) = class_for(layout.size(), layout.align()) else {
            return self.buddy.try_dealloc(pos, layout);
        };
        let bytes = slab_bytes(class);
        if !self
            .buddy
            .is_internal(pos.as_ptr().addr() & !(bytes - 1), bytes)
        {
            return Err(AllocError::NotAllocated);
        }
        // SAFETY: the slab-sized, slab-aligned block containing `pos` is a live internal block
        // of the buddy allocator (checked above), so readable memory of ours.
        match unsafe { self.caches[class].free(pos) } {
            Ok(None) => Ok(()),
            Ok(Some(slab)) => {
                let released = self.buddy.free_internal(slab, bytes);
                debug_assert!(released.is_ok(), "a released slab is an internal block");
                Ok(())
            }
            Err(_) => Err(AllocError::NotAllocated),
        }
    }

    /// Whether `pos` is a live allocation of `layout` (what [`try_dealloc`](Self::try_dealloc)
    /// would accept): a kernel's debug check for foreign pointers. Zero-size layouts: `false`.
    ///
    /// # Time Complexity
    /// O(regions).
    pub fn is_allocated(&self, pos: NonNull<u8>, layout: Layout) -> bool {
        if layout.size() == 0 {
            return false;
        }
        let addr = pos.as_ptr().addr();
        let Some(class) = class_for(layout.size(), layout.align()) else {
            return self.buddy.is_allocated(pos, layout);
        };
        let bytes = slab_bytes(class);
        // SAFETY: checked first: the slab-sized block containing `pos` is a live internal
        // block, readable memory of ours.
        self.buddy.is_internal(addr & !(bytes - 1), bytes)
            && unsafe { self.caches[class].owns(pos) }
    }

    /// Hands every empty slab the caches keep back to the buddy allocator; returns the bytes
    /// returned.
    ///
    /// # Time Complexity
    /// O(empty slabs × (regions + orders)).
    pub fn reclaim(&mut self) -> usize {
        let mut bytes = 0;
        for (class, cache) in self.caches.iter_mut().enumerate() {
            while let Some(slab) = cache.take_empty() {
                let released = self.buddy.free_internal(slab, slab_bytes(class));
                debug_assert!(released.is_ok(), "an empty slab is an internal block");
                bytes += slab_bytes(class);
            }
        }
        bytes
    }

    /// Bytes of the slabs held that no object can use: headers and tail waste.
    pub fn overhead_bytes(&self) -> usize {
        (0..CLASSES)
            .map(|c| {
                let slabs = self.caches[c].counts().slabs;
                slabs * (slab_bytes(c) - objects_per_slab(c) * class_size(c))
            })
            .sum()
    }

    /// Checks every cache (the slab layer's own `SlabCache::check`), the buddy allocator
    /// ([`BuddyByteAllocator::check`]), and the statistics: the slabs' bytes are exactly the
    /// buddy's internal blocks, and `used + available + overhead = total`.
    ///
    /// # Time Complexity
    /// O(slabs × objects per slab + the buddy check).
    pub fn check(&self) -> Result<(), CheckError> {
        let mut slab_total = 0;
        for (class, cache) in self.caches.iter().enumerate() {
            if cache.class() != class {
                return Err(CheckError::Counters("a cache serves another class"));
            }
            let counts = cache
                .check()
                .map_err(|error| CheckError::Cache { class, error })?;
            slab_total += counts.slabs * slab_bytes(class);
        }
        self.buddy.check().map_err(CheckError::Buddy)?;
        if slab_total != self.buddy.internal_bytes() {
            return Err(CheckError::Counters(
                "slab bytes disagree with the buddy's internal blocks",
            ));
        }
        if self.used_bytes() + self.available_bytes() + self.overhead_bytes() != self.total_bytes()
        {
            return Err(CheckError::Counters(
                "used + available + overhead is not total",
            ));
        }
        Ok(())
    }
}

impl Default for SlabByteAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SlabByteAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabByteAllocator")
            .field("total", &self.total_bytes())
            .field("used", &self.used_bytes())
            .field("buddy", &self.buddy)
            .finish_non_exhaustive()
    }
}

impl BaseAllocator for SlabByteAllocator {
    /// Adds the first region. Panics (with the reason) when `add_memory` would refuse it.
    fn init(&mut self, start: usize, size: usize) {
        if let Err(e) = self.add_memory(start, size) {
            panic!("SlabByteAllocator::init({start:#x}, {size:#x}): {e}");
        }
    }

    /// Adds `[start, start + size)`; errors as [`BuddyByteAllocator`]'s `add_memory`
    /// (`InvalidParam`, `MemoryOverlap`), nothing changed then.
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult {
        self.buddy.add_memory(start, size)
    }
}

impl ByteAllocator for SlabByteAllocator {
    /// Allocates `layout` from its size class's slabs, or directly from the buddy allocator
    /// when no class serves it; `Err(NoMemory)` when neither can. Zero-size layouts get a
    /// dangling, aligned pointer.
    ///
    /// # Time Complexity
    /// O(1) from a slab with a free object; O(regions + orders) for a new slab or a direct
    /// block.
    fn alloc(&mut self, layout: Layout) -> AllocResult<NonNull<u8>> {
        if layout.size() == 0 {
            return Ok(dangling(layout.align()));
        }
        let Some(class) = class_for(layout.size(), layout.align()) else {
            return self.buddy.alloc(layout);
        };
        let buddy = &mut self.buddy;
        // SAFETY: `alloc_internal(bytes)` returns a live block of `bytes` bytes aligned to
        // `bytes` (≥ the requested alignment, which is the slab size) that the buddy allocator
        // lends to this cache until `free_internal`.
        unsafe {
            self.caches[class].alloc(|bytes, align| {
                debug_assert_eq!(bytes, align);
                buddy.alloc_internal(bytes)
            })
        }
        .ok_or(AllocError::NoMemory)
    }

    /// Frees `pos`. Zero-size layouts are ignored. A pointer that is not a live allocation
    /// of this layout (see [`try_dealloc`](SlabByteAllocator::try_dealloc)) changes nothing:
    /// it panics in debug builds (`debug_assert!`) and is ignored in release builds.
    fn dealloc(&mut self, pos: NonNull<u8>, layout: Layout) {
        let result = self.try_dealloc(pos, layout);
        debug_assert!(
            result.is_ok(),
            "SlabByteAllocator::dealloc: not a live allocation of this layout (double free?)"
        );
    }

    fn total_bytes(&self) -> usize {
        self.buddy.total_bytes()
    }

    fn used_bytes(&self) -> usize {
        let objects: usize = (0..CLASSES)
            .map(|c| self.caches[c].counts().inuse * class_size(c))
            .sum();
        objects + self.buddy.used_bytes() - self.buddy.internal_bytes()
    }

    fn available_bytes(&self) -> usize {
        let free_objects: usize = (0..CLASSES)
            .map(|c| {
                let counts = self.caches[c].counts();
                (counts.slabs * objects_per_slab(c) - counts.inuse) * class_size(c)
            })
            .sum();
        self.buddy.available_bytes() + free_objects
    }
}
