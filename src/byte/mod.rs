//! Byte allocators.
//!
//! - [`tlsf`]: [`Tlsf`], the two-level segregated fit algorithm with rlsf's interface (`&mut
//!   self`, O(1) allocate, free and in-place reallocate).
//! - [`FlexTlsf`]: rlsf's `FlexTlsf`, a `Tlsf` that grows from a [`FlexSource`] (a static
//!   array, a `GlobalAlloc`, the page layer); [`CAlloc`], rlsf's C-style trait; [`GlobalTlsf`]
//!   / [`SmallGlobalTlsf`], rlsf's `#[global_allocator]` over `mmap` (unix, feature `mmap`).
//! - [`TlsfByteAllocator`]: arceos' `TlsfByteAllocator` API ([`ByteAllocator`]) over one `Tlsf`.
//! - [`TlsfHeap`]: several arenas, one `Tlsf` behind one [`SpinLock`] each, chosen by CPU; a
//!   `GlobalAlloc` (`#[global_allocator]` over a static pool) and an `Allocator`
//!   (`allocator-api2` on stable, `core`'s with `nightly`).
//!
//! - [`BuddyByteAllocator`]: arceos' buddy byte allocator API, binary buddy with O(1) merges.
//! - [`SlabByteAllocator`]: arceos' slab byte allocator API, 32 size classes of slabs carved
//!   from a `BuddyByteAllocator`, which also serves the large and strongly aligned requests.
//!
//! [`ByteAllocator`]: crate::ByteAllocator
//! [`SpinLock`]: crate::SpinLock

#[cfg(feature = "tlsf")]
mod arena;
#[cfg(feature = "buddy")]
pub mod buddy;
#[cfg(feature = "tlsf")]
pub mod flex;
#[cfg(feature = "tlsf")]
pub(crate) mod global;
#[cfg(feature = "tlsf")]
pub mod global_tlsf;
#[cfg(feature = "slab")]
pub mod slab;
#[cfg(feature = "tlsf")]
pub mod tlsf;
#[cfg(feature = "tlsf")]
mod tlsf_allocator;

#[cfg(feature = "tlsf")]
pub use arena::TlsfHeap;
#[cfg(feature = "tlsf")]
pub use flex::{
    FlexSource, FlexTlsf, GlobalAllocAsFlexSource, PageAllocatorSource, PageSupply, SliceSource,
};
#[cfg(feature = "tlsf")]
pub use global_tlsf::{CAlloc, GlobalTlsfOptions, SmallGlobalTlsfOptions};
#[cfg(all(feature = "tlsf", feature = "mmap", unix))]
pub use global_tlsf::{GlobalTlsf, MmapSource, SmallGlobalTlsf};
#[cfg(feature = "tlsf")]
pub use tlsf::{BitmapWord, BlockInfo, GRANULARITY, PoolStats, Tlsf};
#[cfg(feature = "tlsf")]
pub use tlsf_allocator::{DefaultTlsf, TlsfByteAllocator};

#[cfg(feature = "buddy")]
pub use buddy::{BuddyByteAllocator, MIN_BLOCK as BUDDY_MIN_BLOCK};
#[cfg(feature = "slab")]
pub use slab::SlabByteAllocator;

/// A non-null pointer aligned to `align` that owns no memory: what zero-size allocations get.
/// Freeing it is a no-op everywhere in this module.
#[cfg(any(feature = "tlsf", feature = "buddy"))]
#[inline]
pub(crate) fn dangling(align: usize) -> core::ptr::NonNull<u8> {
    // SAFETY: a `Layout`'s alignment is a non-zero power of two.
    unsafe { core::ptr::NonNull::new_unchecked(core::ptr::without_provenance_mut(align)) }
}
