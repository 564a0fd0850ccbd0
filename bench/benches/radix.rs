//! Criterion benchmarks of the PID table: `smpalloc::radix::NexaPidTable` against
//! `RwLock<(bitmap, BTreeMap)>`, `SpinLock<(bitmap, BTreeMap)>`,
//! `SpinLock<(bitmap, hashbrown::HashMap)>` and `SpinLock<seed array scan>` (the design NexaOS
//! replaced), all holding 32,768 live processes.
//!
//! Groups (one benchmark per contestant in each; times are per operation of the measured
//! threads together, so threaded groups show contention on a 2-vCPU machine):
//! - `lookup_1t`: lookups of random live PIDs;
//! - `lookup_2r1w`: 2 threads look up while 1 thread creates and exits processes;
//! - `lifecycle_1t` / `lifecycle_2t`: allocate, register, lookup x4, unregister, free.
//!
//! Run with `cargo bench -p smpalloc-bench --bench radix`; the showcase prints the same scenarios.

use core::time::Duration;

use criterion::Criterion;

use smpalloc_bench::radix::{Kind, Workload};

fn group(c: &mut Criterion, name: &str, kinds: &[Kind], workload: Workload) {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    for &kind in kinds {
        group.bench_function(kind.id(), |b| {
            b.iter_custom(|iters| {
                // `run` measures `kind.ops(iters)` operations; scale to `iters`.
                let ops = kind.ops(iters.max(1000));
                let elapsed = kind.run(workload, iters.max(1000));
                elapsed.mul_f64(iters as f64 / ops as f64)
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let lookup = &Kind::LOOKUP[..];
    let lifecycle = &Kind::LIFECYCLE[..];
    group(
        &mut c,
        "lookup_1t",
        lookup,
        Workload::Lookup {
            readers: 1,
            writers: 0,
        },
    );
    group(
        &mut c,
        "lookup_2r1w",
        lookup,
        Workload::Lookup {
            readers: 2,
            writers: 1,
        },
    );
    group(
        &mut c,
        "lifecycle_1t",
        lifecycle,
        Workload::Lifecycle { threads: 1 },
    );
    group(
        &mut c,
        "lifecycle_2t",
        lifecycle,
        Workload::Lifecycle { threads: 2 },
    );
    c.final_summary();
}
