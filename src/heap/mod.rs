//! The SMP heap: per-CPU slab magazines over the page layer, TLSF for odd and medium sizes,
//! huge blocks straight from the pages; usable as `#[global_allocator]` in a kernel (over the
//! page layer) or a std program (over [`SystemPages`]).
//!
//! - [`SmpHeap`]: the heap; [`Route`] says which layer serves a `Layout`.
//! - [`PageSource`]: where its memory comes from ([`BuddyPageAllocator`](crate::BuddyPageAllocator),
//!   [`BitmapPageAllocator`](crate::BitmapPageAllocator), [`SystemPages`] with `std`, or
//!   `MmapPages` with `mmap` on unix).
//! - Statistics per class ([`ClassStats`]), per CPU ([`CpuClassStats`]) and whole
//!   ([`HeapStats`]), readable while the heap runs; [`SmpHeap::check`] verifies every invariant.
//!
//! docs/design/08-heap.md has the protocol, its invariants and the loom models that check them.

mod cpu;
mod depot;
mod large;
mod magazine;
#[cfg(all(feature = "mmap", unix))]
pub mod mmap;
mod pagemap;
mod route;
mod smp;
mod source;
mod stats;
mod thread;

#[cfg(all(feature = "mmap", unix))]
pub use mmap::MmapPages;
pub use route::{HEAP_CLASSES, MAGAZINE, Route, depot_limit};
pub use smp::SmpHeap;
pub use source::PageSource;
#[cfg(feature = "std")]
pub use source::SystemPages;
pub use stats::{CheckError, ClassStats, CpuClassStats, HeapStats};
pub use thread::thread_cache_records;

/// The SMP heap over pages from the operating system: a std program's global allocator.
///
/// ```no_run
/// use smpalloc::heap::{StdHeap, SystemPages};
/// #[global_allocator]
/// static HEAP: StdHeap = StdHeap::new(SystemPages::new());
/// ```
#[cfg(feature = "std")]
pub type StdHeap = SmpHeap<SystemPages>;

crate::byte::global::heap_traits!([P: PageSource, const CPUS: usize] SmpHeap<P, CPUS>);
