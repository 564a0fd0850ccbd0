//! Criterion benchmarks of the page layer: `smpalloc::BitmapPageAllocator<4096>` and
//! `smpalloc::BuddyPageAllocator<4096>` against axallocator 0.2's `BitmapPageAllocator`
//! (page-alloc-4g), `buddy_system_allocator` 0.13's `FrameAllocator` and bitmap-allocator
//! 0.4's `BitAlloc1M`, each managing 1,048,576 pages of 4 KiB with 50% used in a
//! seeded-random single-page pattern (`smpalloc_bench::pages`).
//!
//! Groups (one benchmark per allocator in each):
//! - `page_single`: allocate + free one page, one thread (and `std::alloc::System` allocating
//!   a 4 KiB page-aligned block, for scale);
//! - `page_run_8_aligned_8`: allocate + free 8 contiguous pages aligned to 8 pages;
//! - `page_threads_2`: two threads share the allocator (peers behind a `SpinLock`), each doing
//!   single-page pairs; the time is wall time per operation of both threads together
//!   (aggregate throughput), so on a 2-vCPU machine it shows contention.
//!
//! Run with `cargo bench -p smpalloc-bench --bench page`; the showcase prints the same
//! scenarios as side-by-side tables with their targets.

use core::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use smpalloc_bench::pages::{self as page_peers, Kind, Shared, Solo, Visit};

/// What one benchmark measures.
#[derive(Clone, Copy)]
enum Scenario {
    Pairs { count: usize, align: usize },
    Threads,
}

/// Registers one allocator's benchmark in `group`.
struct Bench<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    kind: Kind,
    scenario: Scenario,
}

impl Visit for Bench<'_, '_> {
    type Out = ();

    fn ours<A: Solo + Shared>(self, allocator: &mut A) {
        match self.scenario {
            Scenario::Pairs { count, align } => {
                self.group.bench_function(self.kind.id(), |b| {
                    b.iter(|| page_peers::pair(allocator, count, align));
                });
            }
            Scenario::Threads => {
                let shared = &*allocator;
                self.group.bench_function(self.kind.id(), |b| {
                    b.iter_custom(|iters| page_peers::time_threads(shared, 2, iters.max(2)));
                });
            }
        }
    }

    fn peer<A: Solo>(self, allocator: A) {
        let mut allocator = allocator;
        match self.scenario {
            Scenario::Pairs { count, align } => {
                self.group.bench_function(self.kind.id(), |b| {
                    b.iter(|| page_peers::pair(&mut allocator, count, align));
                });
            }
            Scenario::Threads => {
                let locked = smpalloc::SpinLock::new(allocator);
                self.group.bench_function(self.kind.id(), |b| {
                    b.iter_custom(|iters| page_peers::time_threads(&locked, 2, iters.max(2)));
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
    if let Scenario::Pairs { count: 1, .. } = scenario {
        group.bench_function("std_system", |b| {
            b.iter_custom(page_peers::time_system);
        });
    }
    group.finish();
}

// `criterion_group!` would define an undocumented `pub fn`; this is what it and
// `criterion_main!` expand to.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    group(
        &mut c,
        "page_single",
        Scenario::Pairs { count: 1, align: 1 },
    );
    group(
        &mut c,
        "page_run_8_aligned_8",
        Scenario::Pairs { count: 8, align: 8 },
    );
    group(&mut c, "page_threads_2", Scenario::Threads);
    c.final_summary();
}
