//! The showcase section of the PID table: `smpalloc::radix::NexaPidTable` against
//! `RwLock<BTreeMap>`, `SpinLock<HashMap>`, `SpinLock<BTreeMap>` and the seed's design, all
//! with 32,768 live processes. Contestants and workloads: [`crate::radix`] (shared with
//! `benches/radix.rs`).

use crate::radix as workloads;

use workloads::{Kind, Workload};

use super::{Measured, Table};

/// Runs `kinds` on `workload` for `rounds` rounds in a rotating order; ns per operation.
fn interleaved(kinds: &[Kind], rounds: usize, workload: Workload, ops: u64) -> Vec<Measured> {
    let mut samples = vec![Vec::with_capacity(rounds); kinds.len()];
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            let elapsed = kinds[i].run(workload, ops);
            samples[i].push(elapsed.as_secs_f64() * 1e9 / kinds[i].ops(ops) as f64);
        }
    }
    samples.iter().map(|s| Measured::from_samples(s)).collect()
}

/// Prints the PID-table tables.
pub(crate) fn section(options: &super::Options) {
    out!("PID table: 262,143 PIDs, 32,768 live processes");
    out!("-----------------------------------------------");
    out!("ours (*): smpalloc::radix::NexaPidTable (lock-free AtomicBitmap next-fit + lock-free");
    out!("  3-level 64-way radix tree over a static 4,289-node pool); 'bare get' is the same");
    out!("  walk without its reuse-epoch check (what the reclamation protection costs); 'eager'");
    out!("  reclaims a leaf as soon as it empties (PidTable's default reclaims on demand).");
    out!("peers: std RwLock<(bitmap, BTreeMap)>, smpalloc::SpinLock<(bitmap, BTreeMap)>,");
    out!("  SpinLock<(bitmap, hashbrown::HashMap)>, and SpinLock<seed array scan> (NexaOS's");
    out!("  previous design: bitmap + linear scan of a process array; it runs 1/200 of the");
    out!("  operations). The peers' bitmap is the seed's next-fit word scan.");
    out!();
    let rounds = options.rounds();
    let scenarios = [
        (
            Workload::Lookup {
                readers: 1,
                writers: 0,
            },
            options.ops(2_000_000),
            &Kind::LOOKUP[..],
            Table::new("radix_lookup_1t: lookups of random live PIDs, one thread")
                .reference(Kind::RwBTree.name()),
        ),
        (
            Workload::Lookup {
                readers: 2,
                writers: 1,
            },
            options.ops(2_000_000),
            &Kind::LOOKUP[..],
            Table::new(
                "radix_lookup_2r1w: 2 threads look up random live PIDs while 1 thread creates and \
                 exits processes; ns/op = readers' wall time / all lookups",
            )
            .throughput()
            .reference(Kind::RwBTree.name())
            .target("lookups at least 5x faster than RwLock<BTreeMap>", 0.2),
        ),
        (
            Workload::Lifecycle { threads: 1 },
            options.ops(500_000),
            &Kind::LIFECYCLE[..],
            Table::new(
                "radix_lifecycle_1t: allocate, register, lookup x4, unregister, free; one thread",
            )
            .reference(Kind::SpinBTree.name())
            .target(
                "at least 3x faster than SpinLock<(bitmap, BTreeMap)>",
                1.0 / 3.0,
            )
            .goal(Kind::Ours.name(), Kind::SpinHash.name(), 1.0),
        ),
        (
            Workload::Lifecycle { threads: 2 },
            options.ops(500_000),
            &Kind::LIFECYCLE[..],
            Table::new(
                "radix_lifecycle_2t: the same lifecycle on 2 threads; ns/op = wall time / all \
                 lifecycles",
            )
            .throughput()
            .reference(Kind::SpinBTree.name())
            .target(
                "at least 3x faster than SpinLock<(bitmap, BTreeMap)>",
                1.0 / 3.0,
            )
            .goal(Kind::Ours.name(), Kind::SpinHash.name(), 0.5),
        ),
    ];
    for (workload, ops, kinds, mut table) in scenarios {
        let measured = interleaved(kinds, rounds, workload, ops);
        for (kind, m) in kinds.iter().zip(measured) {
            table.row(kind.name(), kind.is_peer(), m);
        }
        if matches!(
            workload,
            Workload::Lookup { writers: 1.., .. } | Workload::Lifecycle { threads: 2.. }
        ) {
            table.note(
                "Threads share the machine's CPUs: on 2 vCPUs this shows contention, not scaling.",
            );
        }
        table.print();
    }
}
