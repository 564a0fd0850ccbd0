//! The allocator traits of arceos' allocator crate (published as `axallocator` 0.2.0), with the
//! same names, methods and signatures, so a kernel written against that crate switches to
//! smpalloc by changing one import.
//!
//! These traits take `&mut self`, as arceos' do (the caller provides the locking). smpalloc's
//! types are concurrent: each also offers the same operations as inherent `&self` methods, and
//! the trait methods below delegate to those, so a kernel may keep its outer lock while it
//! migrates and then drop it.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

/// The error type of allocation and deallocation.
///
/// The four variants of arceos' `AllocError`, in its order; smpalloc's types document which
/// variant each bad input produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocError {
    /// An argument is invalid: a zero count, an alignment that is not a power of two, an ID or
    /// address outside the allocator's range, a reserved ID.
    InvalidParam,
    /// A region or ID overlaps one that is already managed or allocated.
    MemoryOverlap,
    /// Not enough free memory or IDs to satisfy the request.
    NoMemory,
    /// The memory or ID being freed is not allocated.
    NotAllocated,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidParam => "invalid parameter",
            Self::MemoryOverlap => "overlaps memory or IDs already in use",
            Self::NoMemory => "out of memory",
            Self::NotAllocated => "not allocated",
        })
    }
}

impl core::error::Error for AllocError {}

/// The result of an allocator operation.
pub type AllocResult<T = ()> = Result<T, AllocError>;

/// The operations every allocator has: taking its initial region and more regions.
pub trait BaseAllocator {
    /// Initializes the allocator with the region `[start, start + size)`.
    fn init(&mut self, start: usize, size: usize);

    /// Adds the region `[start, start + size)` to the allocator.
    fn add_memory(&mut self, start: usize, size: usize) -> AllocResult;
}

/// A byte-granularity allocator.
pub trait ByteAllocator: BaseAllocator {
    /// Allocates memory for `layout`.
    fn alloc(&mut self, layout: Layout) -> AllocResult<NonNull<u8>>;

    /// Frees memory at `pos` that was allocated with `layout`.
    fn dealloc(&mut self, pos: NonNull<u8>, layout: Layout);

    /// The number of bytes the allocator manages.
    fn total_bytes(&self) -> usize;

    /// The number of bytes allocated.
    fn used_bytes(&self) -> usize;

    /// The number of bytes still available.
    fn available_bytes(&self) -> usize;
}

/// A page-granularity allocator.
pub trait PageAllocator: BaseAllocator {
    /// The size of a page in bytes.
    const PAGE_SIZE: usize;

    /// Allocates `num_pages` contiguous pages whose start is aligned to `align_pow2` bytes (a
    /// power of two and a multiple of `PAGE_SIZE`); returns the start address.
    fn alloc_pages(&mut self, num_pages: usize, align_pow2: usize) -> AllocResult<usize>;

    /// Frees `num_pages` contiguous pages starting at `pos`.
    fn dealloc_pages(&mut self, pos: usize, num_pages: usize);

    /// Allocates `num_pages` contiguous pages starting exactly at `base`.
    fn alloc_pages_at(
        &mut self,
        base: usize,
        num_pages: usize,
        align_pow2: usize,
    ) -> AllocResult<usize>;

    /// The number of pages the allocator manages.
    fn total_pages(&self) -> usize;

    /// The number of pages allocated.
    fn used_pages(&self) -> usize;

    /// The number of pages still available.
    fn available_pages(&self) -> usize;
}

/// An allocator of unique integer IDs.
pub trait IdAllocator: BaseAllocator {
    /// Allocates `count` contiguous IDs whose first ID is a multiple of `align_pow2` (a power of
    /// two); returns the first ID.
    fn alloc_id(&mut self, count: usize, align_pow2: usize) -> AllocResult<usize>;

    /// Frees `count` contiguous IDs starting at `start_id`.
    fn dealloc_id(&mut self, start_id: usize, count: usize);

    /// Whether `id` is allocated.
    fn is_allocated(&self, id: usize) -> bool;

    /// Allocates exactly `id`.
    fn alloc_fixed_id(&mut self, id: usize) -> AllocResult;

    /// The number of IDs the allocator manages.
    fn size(&self) -> usize;

    /// The number of IDs allocated.
    fn used(&self) -> usize;

    /// The number of IDs still available.
    fn available(&self) -> usize;
}
