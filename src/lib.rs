//! # smpalloc
//!
//! Lock-free concurrent allocators for SMP kernels and multithreaded programs, `no_std` first.
//!
//! | family | types | feature | status |
//! |---|---|---|---|
//! | IDs | [`AtomicBitmap`](bitmap::AtomicBitmap), [`PidAllocator`], [`Pid`] | `id` | built |
//! | PID table | [`RadixTree`], [`PidTable`], NexaOS [`compat`](radix::compat) | `radix` | built |
//! | pages | [`BitmapPageAllocator`], [`BuddyPageAllocator`] with per-CPU page caches | `page` | built |
//! | bytes | `Tlsf` (rlsf API), `TlsfByteAllocator`, `TlsfHeap` (per-CPU arenas, `GlobalAlloc`) | `tlsf` | built |
//! | bytes | `SlabByteAllocator`, `BuddyByteAllocator` (arceos API) | `slab`, `buddy` | built |
//! | SMP heap | [`SmpHeap`]: per-CPU magazines over slabs from the page layer, TLSF for the rest; `GlobalAlloc` | `heap` | built |
//!
//! The foundation every family uses: [`SpinLock`] (the one lock), [`percpu`] (the CPU-id
//! source and cache-padded per-CPU slots) and [`traits`] (arceos' allocator traits, so a kernel
//! switches by changing an import). All atomics go through one private `sync` module, which
//! becomes loom's under `--cfg loom`; every concurrent protocol has a loom model in
//! `loom-tests/`, and DESIGN.md proves each one.
//!
//! Constructors are `const fn`, so allocators can live in `static`s:
//!
//! ```
//! use smpalloc::PidAllocator;
//! static PIDS: PidAllocator<64> = PidAllocator::with_reserved(1); // PIDs 1..4096
//! let init = PIDS.allocate_specific(1).unwrap();
//! let next = PIDS.allocate().unwrap();
//! assert_eq!((*init, *next), (1, 2));
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

#[cfg(any(feature = "std", loom))]
extern crate std;

#[cfg(feature = "alloc")]
extern crate alloc;

mod sync;

pub mod lock;
pub mod percpu;
pub mod traits;

#[cfg(feature = "id")]
pub mod bitmap;
#[cfg(feature = "id")]
pub mod id;

pub use lock::{SpinLock, SpinLockGuard};
pub use traits::{
    AllocError, AllocResult, BaseAllocator, ByteAllocator, IdAllocator, PageAllocator,
};

#[cfg(feature = "id")]
pub use id::{Pid, PidAllocator, Policy};

// The lock-free PID radix tree and `PidTable`.
#[cfg(feature = "radix")]
pub mod radix;
#[cfg(feature = "radix")]
pub use radix::{NodePool, PidTable, RadixTree};

// The page layer (bitmap and buddy page allocators, per-CPU page caches).
#[cfg(feature = "page")]
pub mod page;
#[cfg(feature = "page")]
pub use page::{BitmapPageAllocator, BuddyPageAllocator};

// The byte allocators (TLSF, slab, buddy).
#[cfg(any(feature = "tlsf", feature = "slab", feature = "buddy"))]
pub mod byte;
#[cfg(feature = "buddy")]
pub use byte::BuddyByteAllocator;
#[cfg(feature = "slab")]
pub use byte::SlabByteAllocator;
#[cfg(feature = "tlsf")]
pub use byte::{CAlloc, FlexSource, FlexTlsf, GlobalAllocAsFlexSource};
#[cfg(all(feature = "tlsf", feature = "mmap", unix))]
pub use byte::{GlobalTlsf, SmallGlobalTlsf};
#[cfg(feature = "tlsf")]
pub use byte::{Tlsf, TlsfByteAllocator, TlsfHeap};

// The SMP heap.
#[cfg(feature = "heap")]
pub mod heap;
#[cfg(all(feature = "heap", feature = "mmap", unix))]
pub use heap::MmapPages;
#[cfg(feature = "heap")]
pub use heap::SmpHeap;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
