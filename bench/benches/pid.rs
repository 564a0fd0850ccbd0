//! Criterion benchmarks of ID allocation: `smpalloc::PidAllocator<4096>` (262,144 IDs) under
//! each policy against `pid_allocator`, `index-set`, `bitmap-allocator` and a
//! `SpinLock<[u64; 4096]>` linear scan, all sized for 262,144 IDs.
//!
//! Groups (one benchmark per allocator in each):
//! - `alloc_drop_empty`: allocate + drop one ID, nothing else held;
//! - `dense_90`: the same with IDs `0..235,930` held (a dense 90% prefix);
//! - `holes_90`: the same with all IDs held but a seeded-random 10%;
//! - `threads_2_ring16`: two threads share the allocator, each allocating into its own ring of
//!   16 handles and dropping the oldest; the time is wall time per operation of both threads
//!   together (aggregate throughput), so on a 2-vCPU machine it shows contention.
//!
//! Run with `cargo bench -p smpalloc-bench --bench pid`; the showcase prints the same scenarios as
//! side-by-side tables.

use core::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use smpalloc_bench::ids::{self, Fill, Ids, Kind, Visit};

/// What one benchmark measures.
#[derive(Clone, Copy)]
enum Scenario {
    /// Allocate+drop pairs with the allocator in this state.
    Pairs(Fill),
    /// The two-thread ring workload.
    Ring,
}

/// Registers one allocator's benchmark in `group`.
struct Bench<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    kind: Kind,
    scenario: Scenario,
}

impl Visit for Bench<'_, '_> {
    type Out = ();

    fn visit<A: Ids>(self, allocator: &A) {
        match self.scenario {
            Scenario::Pairs(fill) => {
                let held = ids::prepare(allocator, fill);
                self.group
                    .bench_function(self.kind.id(), |b| b.iter(|| ids::alloc_drop(allocator)));
                drop(held);
            }
            Scenario::Ring => {
                self.group.bench_function(self.kind.id(), |b| {
                    b.iter_custom(|iters| ids::time_ring(allocator, 2, iters).elapsed);
                });
            }
        }
    }
}

fn group(c: &mut Criterion, name: &str, scenario: Scenario) {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for kind in Kind::ALL {
        kind.with(Bench {
            group: &mut group,
            kind,
            scenario,
        });
    }
    group.finish();
}

fn alloc_drop_empty(c: &mut Criterion) {
    group(c, "alloc_drop_empty", Scenario::Pairs(Fill::Empty));
}

fn dense_90(c: &mut Criterion) {
    group(c, "dense_90", Scenario::Pairs(Fill::Dense));
}

fn holes_90(c: &mut Criterion) {
    group(c, "holes_90", Scenario::Pairs(Fill::Holes));
}

fn threads_2_ring16(c: &mut Criterion) {
    group(c, "threads_2_ring16", Scenario::Ring);
}

// `criterion_group!` would define an undocumented `pub fn`; this is what it and
// `criterion_main!` expand to.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    alloc_drop_empty(&mut c);
    dense_90(&mut c);
    holes_90(&mut c);
    threads_2_ring16(&mut c);
    c.final_summary();
}
