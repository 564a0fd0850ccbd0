//! Criterion benchmarks of the TLSF family: `smpalloc::Tlsf`, `TlsfByteAllocator` and
//! `TlsfHeap` against rlsf 0.2, talc 4, buddy_system_allocator 0.13, linked_list_allocator
//! 0.10, axallocator 0.2's TLSF and `std::alloc::System`, on one seeded operation sequence
//! (contestants and workloads: `smpalloc_bench::bytes`, shared with the showcase).
//!
//! Groups:
//! - `tlsf_churn_64MiB`: one thread, steady-state churn on a 64 MiB pool (70% 8..128 B, 25%
//!   129 B..4 KiB, 5% 4..64 KiB; each step frees a random slot's block or allocates into it);
//!   time per step;
//! - `tlsf_threads_2`: two threads churning on one shared allocator (`TlsfHeap<2>`, rlsf behind
//!   one `SpinLock`, System); wall time per step of both together (aggregate throughput; on a
//!   2-vCPU machine it shows contention);
//! - `tlsf_arceos_<workload>`: arceos' collection benchmarks through
//!   `allocator_api2::Allocator` on a 128 MiB pool.
//!
//! Worst-case latency and heap efficiency are measured by the showcase, not here.

use core::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use smpalloc::TlsfHeap;
use smpalloc_bench::bytes::{self as contestants, Bytes, Collections, Kind, Locked, Rlsf, Visit};

struct Churn<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
}

impl Visit for Churn<'_, '_> {
    type Out = ();
    fn visit<B: Bytes>(self, kind: Kind) {
        self.group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                let ops = (iters as usize).clamp(1, 2_000_000);
                let elapsed = contestants::time_churn::<B>(ops);
                elapsed.mul_f64(iters as f64 / ops as f64)
            });
        });
    }
}

struct Arceos<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    workload: Collections,
}

impl Visit for Arceos<'_, '_> {
    type Out = ();
    fn visit<B: Bytes>(self, kind: Kind) {
        let workload = self.workload;
        self.group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        if kind == Kind::System {
                            contestants::time_collections_global(workload)
                        } else {
                            contestants::time_collections::<B>(workload)
                        }
                    })
                    .sum()
            });
        });
    }
}

fn configure<'c>(c: &'c mut Criterion, name: &str, samples: usize) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(samples);
    group
}

fn churn(c: &mut Criterion) {
    let mut group = configure(c, "tlsf_churn_64MiB", 10);
    for kind in Kind::ALL {
        // linked_list_allocator scans its free list: microseconds per step; benched all the
        // same, with criterion's iteration count.
        kind.with(Churn { group: &mut group });
    }
    group.finish();
}

fn threads(c: &mut Criterion) {
    let mut group = configure(c, "tlsf_threads_2", 10);
    group.bench_function("smpalloc TlsfHeap<2>", |b| {
        b.iter_custom(|iters| {
            let ops = (iters as usize / 2).clamp(1, 1_000_000);
            let heap: Box<TlsfHeap<2>> = Box::default();
            // SAFETY: the pool is used by this heap only, until it is dropped.
            unsafe { heap.add_pool(contestants::pool(contestants::POOL)).unwrap() };
            contestants::time_threads(&*heap, 2, ops).mul_f64(iters as f64 / (2 * ops) as f64)
        });
    });
    group.bench_function("SpinLock<rlsf::Tlsf>", |b| {
        b.iter_custom(|iters| {
            let ops = (iters as usize / 2).clamp(1, 1_000_000);
            // SAFETY: as above.
            let rlsf = unsafe { Locked::<Rlsf>::over(contestants::pool(contestants::POOL)) };
            contestants::time_threads(&rlsf, 2, ops).mul_f64(iters as f64 / (2 * ops) as f64)
        });
    });
    group.bench_function("std System", |b| {
        b.iter_custom(|iters| {
            let ops = (iters as usize / 2).clamp(1, 1_000_000);
            contestants::time_threads(&contestants::System, 2, ops)
                .mul_f64(iters as f64 / (2 * ops) as f64)
        });
    });
    group.finish();
}

fn arceos(c: &mut Criterion) {
    for workload in Collections::ALL {
        let name = format!("tlsf_arceos_{}", workload.name().split(' ').next().unwrap());
        let mut group = configure(c, &name, 10);
        let buddy_slab = Kind::BUDDY_SLAB.into_iter().filter(|&k| k != Kind::System);
        for kind in [Kind::OursByte, Kind::OursHeap, Kind::AxTlsf, Kind::System]
            .into_iter()
            .chain(buddy_slab)
        {
            kind.with(Arceos {
                group: &mut group,
                workload,
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    churn(&mut c);
    threads(&mut c);
    arceos(&mut c);
    c.final_summary();
}
