//! Byte allocators.
//!
//! - [`tlsf`]: [`Tlsf`], the two-level segregated fit algorithm with rlsf's interface (`&mut
//!   self`, O(1) allocate, free and in-place reallocate).
//! - [`TlsfByteAllocator`]: arceos' `TlsfByteAllocator` API ([`ByteAllocator`]) over one `Tlsf`.
//! - [`TlsfHeap`]: several arenas, one `Tlsf` behind one [`SpinLock`] each, chosen by CPU; a
//!   `GlobalAlloc` (`#[global_allocator]` over a static pool) and an `Allocator`
//!   (`allocator-api2` on stable, `core`'s with `nightly`).
//!
//! Slab and buddy byte allocators (issue 7) will sit beside these.
//!
//! [`ByteAllocator`]: crate::ByteAllocator
//! [`SpinLock`]: crate::SpinLock

#[cfg(feature = "tlsf")]
mod arena;
#[cfg(feature = "buddy")]
mod buddy;
#[cfg(feature = "tlsf")]
pub(crate) mod global;
#[cfg(feature = "slab")]
pub mod slab;
#[cfg(feature = "tlsf")]
pub mod tlsf;
#[cfg(feature = "tlsf")]
mod tlsf_allocator;

#[cfg(feature = "tlsf")]
pub use arena::TlsfHeap;
#[cfg(feature = "tlsf")]
pub use tlsf::{BitmapWord, BlockInfo, CheckError, GRANULARITY, PoolStats, Tlsf};
#[cfg(feature = "tlsf")]
pub use tlsf_allocator::{DefaultTlsf, TlsfByteAllocator};

/// A non-null pointer aligned to `align` that owns no memory: what zero-size allocations get.
/// Freeing it is a no-op everywhere in this module.
#[cfg(feature = "tlsf")]
#[inline]
pub(crate) fn dangling(align: usize) -> core::ptr::NonNull<u8> {
    // SAFETY: a `Layout`'s alignment is a non-zero power of two.
    unsafe { core::ptr::NonNull::new_unchecked(core::ptr::without_provenance_mut(align)) }
}
