//! Lock-free concurrent allocators for SMP kernels and multithreaded programs: IDs, PIDs,
//! pages, bytes and a per-CPU heap. `no_std` first; constructors are `const fn`, so allocators
//! live in `static`s; every concurrent protocol is checked by a [loom](https://docs.rs/loom)
//! model; the APIs of the crates it replaces (arceos' allocator traits, `pid_allocator`, rlsf)
//! keep working.
//!
//! # Which allocator for which job
//!
//! | job | type | feature |
//! |---|---|---|
//! | PIDs, file descriptors, small integer IDs | [`PidAllocator`] (over [`bitmap::AtomicBitmap`]) | `id` |
//! | PIDs with a PID -> process-table map, wait-free lookups | [`radix::NexaPidTable`], [`PidTable`] over a [`RadixTree`] | `radix` |
//! | physical pages, lock-free, one bit each | [`BitmapPageAllocator`] (arceos' lowest-free order: [`LowestFreeBitmapPageAllocator`]) | `page` |
//! | physical pages in power-of-two blocks, per-CPU page caches | [`BuddyPageAllocator`] | `page` |
//! | bytes in a pool you own, O(1), rlsf's API | [`Tlsf`]; growing from a source: [`FlexTlsf`]; a `#[global_allocator]`: [`GlobalTlsf`]; locked with per-CPU arenas: [`TlsfHeap`] | `tlsf` |
//! | arceos' byte allocators | [`TlsfByteAllocator`], [`SlabByteAllocator`], [`BuddyByteAllocator`] | `tlsf`, `slab`, `buddy` |
//! | `kmalloc` or a `#[global_allocator]` | [`SmpHeap`] over a [`heap::PageSource`]; [`heap::StdHeap`] in std programs | `heap` |
//!
//! Underneath: [`SpinLock`] (the crate's one lock), [`percpu`] (the CPU-id source, interrupt
//! and pin hooks, per-CPU slots) and [`traits`] (arceos' [`BaseAllocator`],
//! [`ByteAllocator`], [`PageAllocator`], [`IdAllocator`], so a kernel switches by an import).
//!
//! # Quick start
//!
//! A kernel keeps its allocators in `static`s (their zeroed metadata lands in `.bss`),
//! registers its CPU-id source and hands them memory:
//!
//! ```no_run
//! use smpalloc::page::{BuddyPageAllocator, PageMeta};
//! use smpalloc::{PidAllocator, SmpHeap, percpu};
//!
//! static META: [PageMeta; 1 << 16] = [const { PageMeta::new() }; 1 << 16]; // 256 MiB
//! static PAGES: BuddyPageAllocator<4096> = BuddyPageAllocator::with_metadata(0x8000_0000, &META);
//! #[global_allocator]
//! static HEAP: SmpHeap<&BuddyPageAllocator<4096>, 4> = SmpHeap::new(&PAGES);
//! static PIDS: PidAllocator<64> = PidAllocator::with_reserved(1); // PIDs 1..4096
//!
//! fn boot(cpu_id: fn() -> usize, free_start: usize, free_end: usize) {
//!     percpu::set_cpu_id_source(cpu_id);
//!     percpu::set_cpu_count(4);
//!     PAGES.add_memory(free_start, free_end - free_start).unwrap();
//!     let init = PIDS.allocate().unwrap().into_raw(); // PID 1, kept (no drop)
//!     assert_eq!(init, 1); // and `alloc` works from here on every CPU
//! }
//! # let _ = boot;
//! ```
//!
//! A std program: `#[global_allocator] static HEAP: StdHeap = StdHeap::new(SystemPages::new());`
//! ([`heap::StdHeap`], [`heap::SystemPages`]; or `SmpHeap<MmapPages>` for pages straight from
//! `mmap`). Every structure has a `check()` that verifies its invariants while it runs.
//!
//! # Features
//!
//! On by default: the families `id`, `radix`, `page`, `tlsf`, `buddy`, `slab`, `heap`, and
//! `std` (thread-slot CPU ids, yielding lock waits, the heap's thread caches,
//! [`heap::SystemPages`]), `alloc` (heap-allocated radix nodes and page metadata), `mmap`
//! (`MmapPages`, unix). Off: `initial-exec-tls` (the C library's inline thread-local),
//! `allocator-api2` (the heaps as `allocator_api2::alloc::Allocator`, stable) and `nightly`
//! (`core::alloc::Allocator`). A kernel depends with `default-features = false` and the
//! families it uses.
//!
//! # Design, verification, benchmarks
//!
//! The repository's `docs/design/` has one file per layer (sync and lock, per-CPU, bitmap and
//! IDs, radix and PID table, pages, TLSF and arenas, slab and buddy bytes, heap, C library,
//! kernel): its protocols, memory orderings, the loom model that covers each, bad-input tables
//! and tests. `BENCHMARKS.md` has the figures of one showcase run against the peer crates.
//! The README shows how to model-check your own code with smpalloc inside (`--cfg loom`).
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
pub use page::{BitmapPageAllocator, BuddyPageAllocator, LowestFreeBitmapPageAllocator};

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
