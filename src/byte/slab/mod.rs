//! The slab layer: size classes ([`class`]) and one class's slabs (`SlabCache`), shared by the
//! SMP heap (one cache per class behind the class lock) and `SlabByteAllocator` (arceos'
//! API, single-threaded).

#[allow(
    dead_code,
    reason = "issue 7 in progress: the heap and SlabByteAllocator use it"
)]
mod cache;
pub mod class;

#[cfg_attr(
    not(feature = "heap"),
    allow(unused_imports, reason = "until SlabByteAllocator lands")
)]
pub(crate) use cache::SlabCache;
pub use cache::{SlabCheckError, SlabCounts, SlabError};

// Issue 7, helper A: `SlabByteAllocator` (seed 001 API) goes here.
