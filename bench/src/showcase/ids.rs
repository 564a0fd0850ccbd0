//! The showcase section for IDs: `smpalloc::PidAllocator<4096>` with each policy against the
//! peers of [`crate::ids`].

use crate::ids::{self, Fill, Ids, Kind, Visit};

use super::{Grid, Measured, Options, Table};

/// How one measurement drives an allocator.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Allocate+drop pairs with the allocator prepared in this state.
    Pairs(Fill),
    /// Threads sharing the allocator, each with its own ring of 16 handles.
    Ring { threads: usize },
}

/// One measurement on a fresh allocator.
struct Measure {
    workload: Workload,
    ops: u64,
}

/// What one [`Measure`] found.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ns_per_op: f64,
    /// CPUs busy with the run (see `ids::RingRun`); 1 for one thread, NaN if unknown.
    cpus: f64,
}

impl Visit for Measure {
    type Out = Sample;

    fn visit<A: Ids>(self, allocator: &A) -> Sample {
        let (elapsed, cpus) = match self.workload {
            Workload::Pairs(fill) => {
                let held = ids::prepare(allocator, fill);
                ids::time_pairs(allocator, self.ops / 10); // warm-up, same state
                let elapsed = ids::time_pairs(allocator, self.ops);
                drop(held);
                (elapsed, 1.0)
            }
            Workload::Ring { threads } => {
                let run = ids::time_ring(allocator, threads, self.ops);
                (run.elapsed, run.cpus.unwrap_or(f64::NAN))
            }
        };
        Sample {
            ns_per_op: elapsed.as_secs_f64() * 1e9 / self.ops as f64,
            cpus,
        }
    }
}

/// Runs `workload` on each of `kinds` for `rounds` rounds (rotating the order every round);
/// returns each kind's summary and median CPUs busy, in `kinds` order.
fn interleaved(
    kinds: &[Kind],
    rounds: usize,
    workload: Workload,
    ops: u64,
) -> Vec<(Measured, f64)> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(rounds); kinds.len()];
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            samples[i].push(kinds[i].with(Measure { workload, ops }));
        }
    }
    samples
        .iter()
        .map(|s| {
            let ns: Vec<f64> = s.iter().map(|sample| sample.ns_per_op).collect();
            let cpus: Vec<f64> = s.iter().map(|sample| sample.cpus).collect();
            (
                Measured::from_samples(&ns),
                Measured::from_samples(&cpus).median,
            )
        })
        .collect()
}

/// The ID allocators: `smpalloc::PidAllocator<4096>` (262,144 IDs) against the peers.
pub(crate) fn section(options: &Options) {
    out!("IDs: 262,144 IDs per allocator");
    out!("------------------------------");
    out!("ours (*): smpalloc::PidAllocator<4096> with Policy::NextFit (the default),");
    out!("  Policy::LowestFree and Policy::PerCpuNextFit.");
    out!("peers: pid_allocator 0.1.6 PidAllocator<4096> (one spin mutex in an Arc, linear scan);");
    out!("  index-set 0.2 AtomicBitSet<4096>::set_next_free_bit (lock-free, rotating word scan);");
    out!("  bitmap-allocator 0.2 BitAlloc1M (16-ary segment tree, only 0..262,144 free; there");
    out!("  is no 256K type) in smpalloc::SpinLock;");
    out!("  SpinLock<[u64; 4096]> lowest-free linear word scan (the textbook baseline).");
    out!("An operation is allocate + drop of one handle; handles free their ID on drop.");
    out!();

    let rounds = options.rounds();
    let pid = Kind::PidAllocator.name();
    let scenarios = [
        (
            Workload::Pairs(Fill::Empty),
            options.ops(400_000),
            Table::new("alloc_drop_empty: allocate + drop, nothing else held")
                .target("at most 0.5x pid_allocator's time", 0.5)
                .goal(Kind::PerCpuNextFit.name(), Kind::IndexSet.name(), 1.0)
                .goal(Kind::LowestFree.name(), Kind::IndexSet.name(), 1.0)
                .goal(Kind::NextFit.name(), Kind::IndexSet.name(), 1.2),
        ),
        (
            Workload::Pairs(Fill::Dense),
            options.ops(50_000),
            Table::new("dense_90: allocate + drop with IDs 0..235,930 held (a 90% prefix)")
                .target("at least 10x faster than pid_allocator", 0.1),
        ),
        (
            Workload::Pairs(Fill::Holes),
            options.ops(400_000),
            Table::new("holes_90: allocate + drop with all held but a seeded-random 10%")
                .target("no slower than pid_allocator", 1.0)
                .goal(Kind::PerCpuNextFit.name(), Kind::IndexSet.name(), 1.0)
                .goal(Kind::LowestFree.name(), Kind::IndexSet.name(), 1.0)
                .goal(Kind::NextFit.name(), Kind::IndexSet.name(), 1.2),
        ),
        (
            Workload::Ring { threads: 2 },
            options.ops(2_000_000),
            Table::new(
                "threads_2_ring16: 2 threads share one allocator, each allocating into its own \
                 ring of 16 handles (dropping the oldest); ns/op = wall time / all operations",
            )
            .throughput()
            .extra_column("CPUs")
            .target("aggregate throughput at least 4x pid_allocator's", 0.25),
        ),
    ];
    for (workload, ops, table) in scenarios {
        let mut table = table.reference(pid);
        let measured = interleaved(&Kind::ALL, rounds, workload, ops);
        let mut serialized = false;
        for (kind, (m, cpus)) in Kind::ALL.iter().zip(measured) {
            match workload {
                Workload::Pairs(_) => table.row(kind.name(), kind.is_peer(), m),
                Workload::Ring { threads } => {
                    serialized |= cpus < 0.9 * threads as f64;
                    table.row_with(kind.name(), kind.is_peer(), m, format!("{cpus:.2}"));
                }
            }
        }
        if let Workload::Ring { .. } = workload {
            table.note("CPUs: the threads' CPU time / wall time (median): 2.00 = both threads ran");
            table.note("side by side throughout; near 1 = they took turns on one CPU.");
            if serialized {
                table.note(
                    "WARNING: some rows ran on fewer CPUs than threads (another process was \
                     busy): those figures understate contention.",
                );
            }
        }
        table.print();
    }

    let ops = options.ops(2_000_000);
    let mut grid = Grid {
        title: format!(
            "ring16 scaling: N threads share one allocator, each with its own ring of 16 handles; \
             {ops} operations split over the threads, {} rounds",
            rounds.min(3)
        ),
        columns: options.threads.clone(),
        reference: pid,
        rows: Kind::SCALING
            .iter()
            .map(|kind| (kind.name(), Vec::new()))
            .collect(),
    };
    for &threads in &options.threads {
        let measured = interleaved(
            &Kind::SCALING,
            rounds.min(3),
            Workload::Ring { threads },
            ops,
        );
        for (row, m) in grid.rows.iter_mut().zip(measured) {
            row.1.push(m);
        }
    }
    grid.print();
}
