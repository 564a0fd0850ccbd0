//! smpalloc's benchmarks, as one library shared by the showcase (`examples/showcase.rs` at the
//! repository root, which writes BENCHMARKS.md) and the criterion benches of this crate
//! (`benches/`). Not published.
//!
//! One module per family, each holding that family's contestants (smpalloc's allocators and
//! the peers, behind one small trait per family) and its workloads (seeded operation
//! sequences, the same for every contestant):
//!
//! - [`ids`]: ID allocators (`PidAllocator` against `pid_allocator`, `index-set`, rcore's
//!   `bitmap-allocator` and a locked linear scan);
//! - [`radix`]: PID tables (`NexaPidTable` against locked maps and the seed's design);
//! - [`pages`]: page allocators (bitmap and buddy against axallocator, `buddy_system_allocator`
//!   and `bitmap-allocator`);
//! - [`bytes`]: byte allocators (TLSF, slab and buddy against rlsf, talc,
//!   `buddy_system_allocator`, `linked_list_allocator`, axallocator and `System`);
//! - [`heap`]: the SMP heap (`StdHeap`, `TlsfHeap` against glibc, mimalloc, jemalloc, snmalloc
//!   and the locked `no_std` peers).
//!
//! [`showcase`] prints every family's tables side by side (and, with `--markdown`, writes them
//! to a file).
//!
//! Every random choice comes from [`smpalloc_testkit::Rng`], seeded per workload.

pub mod bytes;
pub mod heap;
pub mod ids;
pub mod pages;
pub mod radix;
pub mod showcase;
