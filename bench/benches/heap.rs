//! Criterion benchmarks of the SMP heap: `smpalloc::heap::StdHeap` and `TlsfHeap<2>` against
//! glibc (`std::alloc::System`), mimalloc, jemalloc (`tikv_jemallocator::Jemalloc`), snmalloc
//! (`snmalloc_rs::SnMalloc`), rlsf's `GlobalTlsf`, talc, buddy_system_allocator,
//! linked_list_allocator and axallocator's slab (and TLSF for the arceos set), on the same
//! seeded operations (contestants and workloads: `smpalloc_bench::heap`, shared
//! with the showcase, which also measures resident memory).
//!
//! Groups (time per operation; threaded groups divide the wall time by all threads' operations,
//! i.e. aggregate throughput, which on a 2-vCPU machine shows contention, not scaling):
//! - `heap_churn_1t`, `heap_churn_2t`: live set of 1,000 blocks of 8..=256 B per thread, each
//!   operation allocates a replacement for a random one, then frees that one;
//! - `heap_producer_consumer`: one thread allocates 16..=512 B blocks and hands them through a
//!   lock-free ring to another that frees them (per block); `heap_producer_consumer_4x`: four
//!   such pairs at once (8 threads, more than the CPUs on purpose);
//! - `heap_larson_2t`: a shared live set of atomic pointers; each operation allocates
//!   8..=1,024 B, swaps it into a random slot and frees the block taken out; `heap_larson_32t`:
//!   the same on 32 threads (more than the CPUs on purpose), without linked_list_allocator and
//!   buddy_system_allocator (their cost grows with the 32,000-block live set), the contestants
//!   behind one spin lock running a tenth of the operations (`Contestant::scaled_oversubscribed`);
//! - `heap_arceos_<workload>`: arceos' collection benchmarks through `allocator_api2::Allocator`
//!   (per run).

use core::alloc::GlobalAlloc;
use core::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use smpalloc_bench::bytes::Collections;
use smpalloc_bench::heap::{self as heap_contestants, Contestant, Visit, Workload};

/// A threaded workload: churn and larson on that many threads, producer/consumer on that many
/// pairs of threads.
#[derive(Clone, Copy)]
enum Threads {
    Churn(usize),
    ProducerConsumer(usize),
    Larson(usize),
}

impl Threads {
    fn threads(self) -> usize {
        match self {
            Threads::Churn(threads) | Threads::Larson(threads) => threads,
            Threads::ProducerConsumer(pairs) => 2 * pairs,
        }
    }

    /// The workload of `ops` operations in all.
    fn workload(self, ops: usize) -> Workload {
        match self {
            Threads::Churn(threads) => Workload::Churn {
                threads,
                ops: ops / threads,
            },
            Threads::ProducerConsumer(pairs) => Workload::ProducerConsumer {
                pairs,
                blocks: ops / pairs,
            },
            Threads::Larson(threads) => Workload::Larson {
                threads,
                ops: ops / threads,
            },
        }
    }
}

struct Arceos(Collections);

impl Visit for Arceos {
    type Out = Duration;
    fn visit<A: GlobalAlloc + Sync>(self, a: &A) -> Duration {
        heap_contestants::arceos(a, self.0)
    }
}

fn configure<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    group
}

/// Benchmarks `workload` on each of `contestants`, each running the operations `scale` gives
/// it (`Contestant::scaled`, or `scaled_oversubscribed` for more threads than CPUs).
fn threaded(
    c: &mut Criterion,
    name: &str,
    workload: Threads,
    contestants: &[Contestant],
    scale: fn(Contestant, usize) -> usize,
) {
    let mut group = configure(c, name);
    // At least 10,000 operations per run, and 1,000 per thread (threads start and stop around
    // each run); the time is scaled to the iterations criterion asked for.
    let min = 10_000.max(1_000 * workload.threads());
    for &contestant in contestants {
        group.bench_function(contestant.name(), |b| {
            b.iter_custom(|iters| {
                let ops = scale(contestant, (iters as usize).clamp(min, 1_000_000));
                let run = contestant.with(workload.workload(ops));
                Duration::from_secs_f64(run.ns_per_op() * iters as f64 / 1e9)
            });
        });
    }
    group.finish();
}

fn arceos(c: &mut Criterion) {
    for workload in Collections::ALL {
        let name = format!("heap_arceos_{}", workload.name().split(' ').next().unwrap());
        let mut group = configure(c, &name);
        for contestant in Contestant::ARCEOS {
            group.bench_function(contestant.name(), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| contestant.with(Arceos(workload))).sum());
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (all, scaled) = (&Contestant::THREADED, Contestant::scaled as fn(_, _) -> _);
    threaded(&mut c, "heap_churn_1t", Threads::Churn(1), all, scaled);
    threaded(&mut c, "heap_churn_2t", Threads::Churn(2), all, scaled);
    threaded(
        &mut c,
        "heap_producer_consumer",
        Threads::ProducerConsumer(1),
        all,
        scaled,
    );
    threaded(&mut c, "heap_larson_2t", Threads::Larson(2), all, scaled);
    // More threads than CPUs on purpose.
    threaded(
        &mut c,
        "heap_producer_consumer_4x",
        Threads::ProducerConsumer(4),
        all,
        scaled,
    );
    threaded(
        &mut c,
        "heap_larson_32t",
        Threads::Larson(32),
        &Contestant::OVERSUBSCRIBED,
        Contestant::scaled_oversubscribed,
    );
    arceos(&mut c);
    c.final_summary();
}
