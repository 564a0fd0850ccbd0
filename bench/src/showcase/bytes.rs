//! The showcase section for the bytes family: `smpalloc::Tlsf`, `TlsfByteAllocator` and
//! `TlsfHeap` against rlsf, talc, buddy_system_allocator, linked_list_allocator, axallocator's
//! TLSF and `std::alloc::System` (contestants and workloads: [`crate::bytes`], shared with
//! `benches/tlsf.rs`); then the arceos set for the slab and buddy byte allocators.

use crate::bytes as contestants;
use contestants::{Bytes, Collections, Kind, Locked, Rlsf, Visit};
use smpalloc::TlsfHeap;

use super::{Measured, Options, Table, markdown, rotate};

/// ns per churn step.
struct Churn {
    ops: usize,
}

impl Visit for Churn {
    type Out = f64;
    fn visit<B: Bytes>(self, _kind: Kind) -> f64 {
        contestants::time_churn::<B>(self.ops).as_secs_f64() * 1e9 / self.ops as f64
    }
}

struct Efficiency;

impl Visit for Efficiency {
    type Out = f64;
    fn visit<B: Bytes>(self, _kind: Kind) -> f64 {
        contestants::efficiency::<B>()
    }
}

struct Latency {
    ops: usize,
}

impl Visit for Latency {
    type Out = Vec<u32>;
    fn visit<B: Bytes>(self, _kind: Kind) -> Vec<u32> {
        contestants::latencies::<B>(self.ops)
    }
}

struct CollectionsRun(Collections);

impl Visit for CollectionsRun {
    type Out = f64;
    fn visit<B: Bytes>(self, kind: Kind) -> f64 {
        let elapsed = if kind == Kind::System {
            contestants::time_collections_global(self.0)
        } else {
            contestants::time_collections::<B>(self.0)
        };
        elapsed.as_secs_f64() * 1e9
    }
}

/// Prints this family's tables.
pub(crate) fn section(options: &Options) {
    out!("Bytes: TLSF and the arena heap");
    out!("-------------------------------");
    out!("ours (*): smpalloc::Tlsf<u32, u32, 28, 32> (the algorithm, &mut self),");
    out!("  TlsfByteAllocator (arceos' API over it), TlsfHeap<2> (two arenas behind SpinLocks).");
    out!("peers: rlsf 0.2 Tlsf<u32, u32, 28, 32>; talc 4 Talc<ErrOnOom>; buddy_system_allocator");
    out!("  0.13 Heap<32>; linked_list_allocator 0.10 Heap; axallocator 0.2 TlsfByteAllocator");
    out!("  (rlsf inside); std::alloc::System (ignores the pool).");
    out!(
        "Mix: 70% 8..128 B, 25% 129 B..4 KiB, 5% 4..64 KiB, align 8; one seeded step sequence for"
    );
    out!("  all: each step frees the block of a random slot of 8,192, or allocates into it.");
    out!();
    let rounds = options.rounds();

    // Single thread, time per step.
    let mut table = Table::new("churn on a 64 MiB pool, one thread (ns per allocate or free)")
        .reference("rlsf 0.2")
        .target("single thread at most rlsf's time per operation", 1.0)
        .goal(Kind::OursByte.name(), Kind::Rlsf.name(), 1.1)
        .goal(Kind::OursHeap.name(), Kind::Rlsf.name(), 1.1);
    let ops = options.ops(200_000) as usize;
    let results = rotate(&Kind::ALL, rounds, |kind| {
        // The list-scanning peers take microseconds per step: fewer steps for them.
        let ops = if matches!(kind, Kind::LinkedList) {
            ops / 10
        } else {
            ops
        };
        kind.with(Churn { ops })
    });
    for (kind, m) in Kind::ALL.iter().zip(&results) {
        table.row(kind.name(), !kind.ours(), *m);
    }
    let talc = table.ns("talc 4").unwrap();
    let ours = table.ns("smpalloc Tlsf").unwrap();
    table.note(format!(
        "target: faster than talc: Tlsf {:.2}x talc's time ({})",
        ours / talc,
        if ours < talc { "met" } else { "MISSED" }
    ));
    table.print();

    // Latency distribution.
    let latency_ops = options.ops(1_000_000) as usize;
    out!(
        "latency of single steps on the 64 MiB pool, {latency_ops} steps each (ns, Instant::now around each)"
    );
    markdown::preformatted(true);
    out!(
        "  {:<27} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "allocator",
        "p50",
        "p99",
        "p99.9",
        "p99.99",
        "max"
    );
    let mut p9999 = Vec::new();
    for kind in [Kind::OursTlsf, Kind::OursHeap, Kind::Rlsf, Kind::Talc] {
        let lat = kind.with(Latency { ops: latency_ops });
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        p9999.push((kind, q(0.9999), *lat.last().unwrap()));
        out!(
            "  {:<27} {:>8} {:>8} {:>8} {:>9} {:>8}",
            format!("{}{}", if kind.ours() { "* " } else { "  " }, kind.name()),
            q(0.5),
            q(0.99),
            q(0.999),
            q(0.9999),
            lat.last().unwrap()
        );
    }
    let rlsf = p9999.iter().find(|(k, ..)| *k == Kind::Rlsf).unwrap();
    out!(
        "  Tlsf vs rlsf: p99.99 {:.2}x, max {:.2}x (the max includes timer interrupts and page faults)",
        p9999[0].1 as f64 / rlsf.1 as f64,
        p9999[0].2 as f64 / rlsf.2 as f64
    );
    markdown::preformatted(false);
    out!();

    // Heap efficiency.
    out!("heap efficiency: live requested bytes / 16 MiB pool at the first failed allocation");
    out!("  (3 allocations to 1 random free, the same mix and seed for all)");
    markdown::preformatted(true);
    let eff: Vec<(Kind, f64)> = Kind::ALL
        .into_iter()
        .filter(|&k| k != Kind::System)
        .map(|k| (k, k.with(Efficiency)))
        .collect();
    let of = |kind: Kind| eff.iter().find(|(k, _)| *k == kind).unwrap().1;
    for (kind, e) in &eff {
        out!(
            "  {:<27} {:>6.1}%",
            format!("{}{}", if kind.ours() { "* " } else { "  " }, kind.name()),
            e * 100.0
        );
    }
    let (tlsf, rlsf, talc) = (of(Kind::OursTlsf), of(Kind::Rlsf), of(Kind::Talc));
    out!(
        "  target: at least rlsf's and talc's: Tlsf {:.1}% vs rlsf {:.1}%, talc {:.1}% ({})",
        tlsf * 100.0,
        rlsf * 100.0,
        talc * 100.0,
        if tlsf >= rlsf && tlsf >= talc {
            "met"
        } else {
            "MISSED"
        }
    );
    markdown::preformatted(false);
    out!();

    // Two threads.
    let thread_ops = options.ops(200_000) as usize;
    let mut table =
        Table::new("churn with 2 threads sharing one allocator (64 MiB pool; aggregate)")
            .throughput()
            .reference("SpinLock<rlsf::Tlsf>")
            .target(
                "2 threads on the arena heap >= 3x SpinLock<rlsf>'s throughput",
                1.0 / 3.0,
            )
            .goal("smpalloc TlsfHeap<2>", "SpinLock<rlsf::Tlsf>", 0.5);
    let names = ["smpalloc TlsfHeap<2>", "SpinLock<rlsf::Tlsf>", "std System"];
    let mut samples = vec![Vec::new(); 3];
    for round in 0..rounds {
        for k in 0..3 {
            let i = (k + round) % 3;
            let elapsed = match i {
                0 => {
                    let heap: Box<TlsfHeap<2>> = Box::default();
                    // SAFETY: the pool is used by this heap only, until it is dropped.
                    unsafe { heap.add_pool(contestants::pool(contestants::POOL)).unwrap() };
                    contestants::time_threads(&*heap, 2, thread_ops)
                }
                1 => {
                    // SAFETY: as above.
                    let rlsf =
                        unsafe { Locked::<Rlsf>::over(contestants::pool(contestants::POOL)) };
                    contestants::time_threads(&rlsf, 2, thread_ops)
                }
                _ => contestants::time_threads(&contestants::System, 2, thread_ops),
            };
            samples[i].push(elapsed.as_secs_f64() * 1e9 / (2 * thread_ops) as f64);
        }
    }
    for (i, name) in names.iter().enumerate() {
        table.row(name, i != 0, Measured::from_samples(&samples[i]));
    }
    table.note("On 2 vCPUs shared with other work the threads contend rather than scale.");
    table.print();

    // The arceos benchmark set.
    out!("arceos' collection benchmarks through allocator_api2::Allocator on a 128 MiB pool");
    out!("  (arceos' BTreeMap case needs nightly `btreemap_alloc`; a hashbrown map with the same");
    out!("  random insert/remove pattern and Vec<u8> keys in the allocator stands in for it)");
    let kinds = [Kind::OursByte, Kind::OursHeap, Kind::AxTlsf, Kind::System];
    for workload in Collections::ALL {
        let mut table = Table::new(format!("{} (ns per run)", workload.name()))
            .reference("axallocator 0.2 TLSF")
            .target("at most axallocator's TLSF", 1.0);
        let results = rotate(&kinds, rounds, |kind| kind.with(CollectionsRun(workload)));
        for (kind, m) in kinds.iter().zip(&results) {
            table.row(kind.name(), !kind.ours(), *m);
        }
        table.print();
    }
    buddy_slab(options);
}

/// The arceos set for `BuddyByteAllocator` and `SlabByteAllocator` against
/// axallocator's buddy and slab allocators and `System`.
fn buddy_slab(options: &Options) {
    out!("Bytes: slab and buddy");
    out!("---------------------");
    out!("ours (*): BuddyByteAllocator (binary buddy, O(1) merges), SlabByteAllocator (32");
    out!("  classes of slabs carved from our buddy); peers: axallocator 0.2 BuddyByteAllocator");
    out!("  (buddy_system_allocator 0.10: scans a free list per merge), SlabByteAllocator");
    out!("  (ax_slab_allocator 0.4: 7 classes over that buddy), std System. Same workloads and");
    out!("  128 MiB pool as the TLSF section's arceos set.");
    let rounds = options.rounds();
    let kinds = Kind::BUDDY_SLAB;
    for workload in Collections::ALL {
        let mut table = Table::new(format!("{} (ns per run)", workload.name()))
            .reference("axallocator 0.2 buddy")
            .target("BuddyByteAllocator at most axallocator's buddy", 1.0);
        let results = rotate(&kinds, rounds, |kind| kind.with(CollectionsRun(workload)));
        for (kind, m) in kinds.iter().zip(&results) {
            table.row(kind.name(), !kind.ours(), *m);
        }
        let slab = table.ns("smpalloc SlabByteAllocator").unwrap();
        let ax_slab = table.ns("axallocator 0.2 slab").unwrap();
        table.note(format!(
            "SlabByteAllocator / axallocator's slab: {:.2}x ({})",
            slab / ax_slab,
            if slab <= ax_slab {
                "at most: met"
            } else {
                "slower"
            }
        ));
        table.print();
    }
}
