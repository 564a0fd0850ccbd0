//! The showcase section for the SMP heap: `smpalloc::heap::StdHeap` and `TlsfHeap`
//! against glibc, mimalloc, jemalloc, snmalloc and the locked `no_std` peers, including rows
//! with more threads than CPUs on purpose (contestants and workloads:
//! [`crate::heap`], shared with `benches/heap.rs`), plus the resident memory of each churn
//! run, measured in a child process per allocator (`--rss-probe`).

use crate::heap as contestants;

use core::time::Duration;
use std::process::{Command, ExitCode};

use contestants::{Contestant, LIVE, Visit, Workload};

use super::{Options, Table, markdown, rotate};
use crate::bytes::Collections;

/// Operations per thread of the churn runs.
const CHURN_OPS: u64 = 1_000_000;
/// Operations per thread of the larson runs.
const LARSON_OPS: u64 = 600_000;
/// Blocks of the producer/consumer run (1,000,000).
const BLOCKS: u64 = 1_000_000;
/// Threads of the larson run that oversubscribes the CPUs on purpose.
const OVER_THREADS: usize = 32;
/// Operations per thread of that run (fewer than [`LARSON_OPS`]: there are 32 threads).
const OVER_LARSON_OPS: u64 = 40_000;
/// Producer/consumer pairs of the oversubscribed run (8 threads).
const OVER_PAIRS: usize = 4;
/// Blocks per pair of that run.
const OVER_BLOCKS: u64 = 125_000;

struct Arceos(Collections);

impl Visit for Arceos {
    type Out = Duration;
    fn visit<A: core::alloc::GlobalAlloc + Sync>(self, a: &A) -> Duration {
        contestants::arceos(a, self.0)
    }
}

/// Runs `workload` on every contestant of `kinds` for `rounds` rounds; a table of ns per
/// operation (aggregate over the threads).
fn threaded(kinds: &[Contestant], rounds: usize, workload: Workload, table: Table) -> Table {
    threaded_by(kinds, rounds, |c| workload.for_contestant(c), table)
}

/// [`threaded`] with the workload each contestant runs given by `workload_of`.
fn threaded_by(
    kinds: &[Contestant],
    rounds: usize,
    workload_of: impl Fn(Contestant) -> Workload,
    table: Table,
) -> Table {
    let mut table = table.throughput();
    let results = rotate(kinds, rounds, |c| c.with(workload_of(c)).ns_per_op());
    for (c, m) in kinds.iter().zip(results) {
        table.row(c.name(), !c.ours(), m);
    }
    table
}

/// `ours / peer` time ratios of our heap against `peers` in `table`, as text, with whether each
/// is at most `max`.
fn ratios(table: &Table, peers: impl Iterator<Item = Contestant>, max: f64) -> (String, bool) {
    let ours = table.ns(Contestant::Ours.name()).unwrap();
    let mut met = true;
    let text: Vec<String> = peers
        .filter_map(|p| table.ns(p.name()).map(|ns| (p, ours / ns)))
        .map(|(p, ratio)| {
            met &= ratio <= max;
            format!("{} {ratio:.2}x", super::short(p.name()))
        })
        .collect();
    (text.join(", "), met)
}

/// Our heap against the general-purpose peers: `StdHeap vs mimalloc 1.20x, jemalloc ...`.
fn general_ratios(table: &Table) -> String {
    let (text, _) = ratios(table, Contestant::GENERAL.into_iter(), f64::MAX);
    format!("StdHeap vs {text}")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Prints the heap section.
pub(crate) fn section(options: &Options) {
    out!("SMP heap");
    out!("--------");
    out!("ours (*): smpalloc::heap::StdHeap (thread caches of magazines over per-class depots");
    out!("  and slabs, over SystemPages; one static, as #[global_allocator] would be);");
    out!("  TlsfHeap<2> (TLSF arenas behind spin locks).");
    out!("peers from the OS: std::alloc::System (glibc malloc), mimalloc 0.1, jemalloc 5.3");
    out!("  (tikv-jemallocator 0.7), snmalloc (snmalloc-rs 0.7), rlsf GlobalTlsf (one pthread");
    out!("  mutex, mmap'd pools). Locked no_std peers over one 128 MiB pool (the");
    out!("  same buffer for each, a fresh allocator per run): talc 4 in smpalloc::SpinLock,");
    out!("  buddy_system_allocator LockedHeap<32>, linked_list_allocator LockedHeap,");
    out!("  axallocator SlabByteAllocator (and TLSF for the arceos set) in smpalloc::SpinLock.");
    out!("Every contestant runs the same seeded operations; linked_list_allocator runs a tenth");
    out!("  of them (it scans its free list) and its ns/op is per operation all the same.");
    out!();
    let rounds = options.rounds();
    let churn_ops = options.ops(CHURN_OPS) as usize;
    let larson_ops = options.ops(LARSON_OPS) as usize;
    let kinds = Contestant::THREADED;
    let contention = "On this machine the threads share the CPUs (see the header): threaded rows \
                      show contention, not scaling.";

    for &threads in &options.threads {
        let workload = Workload::Churn {
            threads,
            ops: churn_ops,
        };
        let title = format!(
            "small-object churn, {threads} thread(s): live set of 1,000 blocks of 8..256 B per \
             thread, each op allocates a replacement for a random one, then frees that one (ns per op, aggregate)"
        );
        let table = Table::new(title)
            .reference(Contestant::Mimalloc.name())
            .target("at most mimalloc's time", 1.0);
        let mut table = threaded(&kinds, rounds, workload, table);
        table.note(general_ratios(&table));
        if threads == 1 {
            let peers = [Contestant::Jemalloc, Contestant::Snmalloc];
            let (text, met) = ratios(&table, peers.into_iter(), 1.0);
            table.note(format!(
                "target: also at most jemalloc's and snmalloc's time: StdHeap vs {text} ({})",
                verdict(met)
            ));
        }
        if threads > 1 {
            let (text, met) = ratios(
                &table,
                kinds.into_iter().filter(|c| c.locked_peer()),
                1.0 / 3.0,
            );
            table.note(format!(
                "target: aggregate >= 3x every locked no_std peer (time <= 0.33x): {text} ({})",
                verdict(met)
            ));
            table.note(contention);
        }
        table.print();
    }

    let blocks = options.ops(BLOCKS) as usize;
    let mut table = threaded(
        &kinds,
        rounds,
        Workload::ProducerConsumer { pairs: 1, blocks },
        Table::new(format!(
            "producer/consumer: thread 1 allocates {blocks} blocks of 16..512 B, hands them \
             through a 256-entry lock-free ring, thread 2 frees them (ns per block)"
        ))
        .reference(Contestant::Mimalloc.name())
        .target("at most mimalloc's time", 1.0),
    );
    table.note(general_ratios(&table));
    table.note(contention);
    table.print();

    for &threads in &options.threads {
        let mut table = threaded(
            &kinds,
            rounds,
            Workload::Larson {
                threads,
                ops: larson_ops,
            },
            Table::new(format!(
                "larson-style server churn, {threads} thread(s): shared live set of {} atomic \
                 slots; each op allocates 8..1,024 B, swaps it into a random slot and frees \
                 the block it took out (ns per op, aggregate)",
                1_000 * threads
            ))
            .reference(Contestant::System.name())
            .target("ahead of glibc", 1.0),
        );
        table.note(general_ratios(&table));
        if threads > 1 {
            let peers = kinds.into_iter().filter(|c| !c.ours());
            let (text, met) = ratios(&table, peers, 1.0);
            table.note(format!(
                "target: the fastest of all: StdHeap vs {text} ({})",
                verdict(met)
            ));
            table.note(contention);
        }
        table.print();
    }

    oversubscribed(options, rounds, contention);

    out!("arceos' collection benchmarks through allocator_api2::Allocator (the same adapter");
    out!("  for every contestant; hash_map_50K stands in for btree_map_50K as in the bytes");
    out!("  section). The pool peers and TlsfHeap work in the pre-touched 128 MiB pool; StdHeap,");
    out!("  glibc, mimalloc, jemalloc and snmalloc take fresh memory from the OS and pay its");
    out!("  page faults.");
    let arceos = Contestant::ARCEOS;
    for workload in Collections::ALL {
        let mut table = Table::new(format!("{} (ns per run)", workload.name()))
            .reference(Contestant::AxSlab.name())
            .target("at most axallocator's slab", 1.0);
        let results = rotate(&arceos, rounds, |c| {
            c.with(Arceos(workload)).as_secs_f64() * 1e9
        });
        for (c, m) in arceos.iter().zip(results) {
            table.row(c.name(), !c.ours(), m);
        }
        let (text, met) = ratios(&table, [Contestant::AxTlsf].into_iter(), 1.0);
        table.note(format!(
            "target: at most axallocator's TLSF: StdHeap vs {text} ({})",
            verdict(met)
        ));
        table.print();
    }

    memory(options, churn_ops, larson_ops);
}

/// The rows that oversubscribe the CPUs on purpose: larson-style churn on
/// [`OVER_THREADS`] threads and [`OVER_PAIRS`] producer/consumer pairs, on every heap peer.
fn oversubscribed(options: &Options, rounds: usize, contention: &str) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let over = |threads: usize| {
        format!(
            "{threads} threads on {cpus} CPU(s) oversubscribe them on purpose: a thread holding \
             a lock can be preempted while the others wait for it."
        )
    };
    let ops = options.ops(OVER_LARSON_OPS) as usize;
    let kinds = Contestant::OVERSUBSCRIBED;
    let mut table = threaded_by(
        &kinds,
        rounds,
        |c| Workload::Larson {
            threads: OVER_THREADS,
            ops: c.scaled_oversubscribed(ops),
        },
        Table::new(format!(
            "larson-style server churn, {OVER_THREADS} threads (oversubscribed): shared live \
             set of {} atomic slots; {ops} ops per thread, each allocates 8..1,024 B, swaps it \
             into a random slot and frees the block it took out (ns per op, aggregate)",
            LIVE * OVER_THREADS
        ))
        .reference(Contestant::Mimalloc.name())
        .target("at most mimalloc's time", 1.0),
    );
    table.note(general_ratios(&table));
    table.note(over(OVER_THREADS));
    table.note(contention);
    table.note(format!(
        "Behind one spin lock ({}), a contestant runs a tenth of the ops (a preempted lock \
         holder costs it microseconds per op); its ns/op is per op all the same.",
        kinds
            .iter()
            .filter(|c| c.spins())
            .map(|c| super::short(super::short_ours(c.name())))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    table.note(format!(
        "Left out, their cost grows with the {}-block live set, not with the threads: \
         linked_list_alloc (a free-list scan, about 0.1 ms per op) and buddy_system_alloc \
         (its frees search a linked free list for the buddy: freeing the live set after a run \
         takes it seconds).",
        LIVE * OVER_THREADS
    ));
    table.print();

    let blocks = options.ops(OVER_BLOCKS) as usize;
    let kinds = Contestant::THREADED;
    let mut table = threaded(
        &kinds,
        rounds,
        Workload::ProducerConsumer {
            pairs: OVER_PAIRS,
            blocks,
        },
        Table::new(format!(
            "producer/consumer, {OVER_PAIRS} pairs ({} threads, oversubscribed): in each pair \
             one thread allocates {blocks} blocks of 16..512 B and hands them through its own \
             256-entry lock-free ring to the other, which frees them (ns per block, aggregate)",
            2 * OVER_PAIRS
        ))
        .reference(Contestant::Mimalloc.name())
        .target("at most mimalloc's time", 1.0),
    );
    table.note(general_ratios(&table));
    table.note(over(2 * OVER_PAIRS));
    table.note(contention);
    table.print();
}

/// The memory table: one child process per allocator and churn run.
fn memory(options: &Options, churn_ops: usize, larson_ops: usize) {
    let threads = options.threads.iter().copied().max().unwrap_or(1);
    let mut workloads = vec![Workload::Churn {
        threads: 1,
        ops: churn_ops,
    }];
    if threads > 1 {
        workloads.push(Workload::Churn {
            threads,
            ops: churn_ops,
        });
    }
    workloads.push(Workload::Larson {
        threads,
        ops: larson_ops,
    });
    out!(
        "memory: peak resident bytes / peak live requested bytes of the churn runs (one child \
         process per cell, VmHWM after the run minus VmHWM before it)"
    );
    markdown::preformatted(true);
    let mut head = format!("  {:<27}", "allocator");
    for w in &workloads {
        head += &format!(" {:>18}", w.key().rsplit_once(':').unwrap().0);
    }
    out!("{head}");
    let Ok(exe) = std::env::current_exe() else {
        out!("  n/a (current_exe unavailable)");
        markdown::preformatted(false);
        return;
    };
    let mut pages_line = format!("  {:<27}", "  StdHeap SystemPages peak");
    let mut live_line = format!("  {:<27}", "  (live requested peak)");
    // Peak RSS over live bytes, per contestant and workload, for the target line.
    let mut measured: Vec<(Contestant, Vec<Option<f64>>)> = Vec::new();
    for (i, c) in Contestant::PROBED.into_iter().enumerate() {
        let mut ratios = Vec::new();
        let mut line = format!(
            "  {:<27}",
            format!("{}{}", if c.ours() { "* " } else { "  " }, c.name())
        );
        for w in &workloads {
            let out = Command::new(&exe)
                .args(["--rss-probe", c.key(), &w.key()])
                .output();
            let probe = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| Probe::parse(&String::from_utf8_lossy(&o.stdout)));
            let ratio = probe
                .as_ref()
                .and_then(|p| Some(p.rss? as f64 / p.live as f64));
            ratios.push(ratio);
            let cell = match (&probe, ratio) {
                (Some(_), Some(ratio)) => format!("{ratio:.2}x"),
                (Some(_), None) => "n/a".to_owned(),
                (None, _) => "failed".to_owned(),
            };
            line += &format!(" {cell:>18}");
            if let Some(p) = &probe {
                if c == Contestant::Ours {
                    let cell = p.pages.map_or("n/a".to_owned(), |pages| {
                        format!("{:.2}x", pages as f64 / p.live as f64)
                    });
                    pages_line += &format!(" {cell:>18}");
                }
                if i == 0 {
                    live_line += &format!(" {:>15} KiB", p.live / 1024);
                }
            }
        }
        out!("{line}");
        measured.push((c, ratios));
    }
    out!("{pages_line}");
    out!("{live_line}");
    out!(
        "  (RSS includes each allocator's metadata and the probe's own thread stacks, the same \
         for all; the live sets are small, so fixed costs weigh heavily)"
    );
    let of = |who: Contestant| measured.iter().find(|(c, _)| *c == who).map(|(_, r)| r);
    if let (Some(ours), Some(jemalloc)) = (of(Contestant::Ours), of(Contestant::Jemalloc)) {
        let pairs: Vec<(f64, f64)> = ours
            .iter()
            .zip(jemalloc)
            .filter_map(|(o, j)| Some(((*o)?, (*j)?)))
            .collect();
        let met = !pairs.is_empty() && pairs.iter().all(|(o, j)| o <= j);
        let text: Vec<String> = pairs
            .iter()
            .map(|(o, j)| format!("{o:.2}x vs {j:.2}x"))
            .collect();
        out!(
            "  target: peak RSS / live at most jemalloc's: StdHeap {} ({})",
            text.join(", "),
            verdict(met)
        );
    }
    markdown::preformatted(false);
    out!();
}

/// What a probe printed: `rss=<bytes|n/a> live=<bytes> pages=<bytes|n/a>`.
struct Probe {
    rss: Option<usize>,
    live: usize,
    pages: Option<usize>,
}

impl Probe {
    fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        Some(Probe {
            rss: field("rss")?.parse().ok(),
            live: field("live")?.parse().ok().filter(|&l| l > 0)?,
            pages: field("pages")?.parse().ok(),
        })
    }
}

/// VmHWM (peak resident set) of this process in bytes, if /proc says.
fn vm_hwm() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `showcase --rss-probe <allocator> <workload>`: runs that allocator's workload alone in this
/// process and prints the growth of the peak resident set during it, the peak live requested
/// bytes and, for our heap, the peak bytes its page source took from the OS.
pub(crate) fn rss_probe(args: &[String]) -> ExitCode {
    let (Some(c), Some(w)) = (
        args.first().and_then(|k| Contestant::from_key(k)),
        args.get(1).and_then(|k| Workload::from_key(k)),
    ) else {
        eprintln!("showcase: --rss-probe <allocator> <workload:threads:ops>");
        return ExitCode::from(2);
    };
    let before = vm_hwm();
    let run = c.with(w);
    let after = vm_hwm();
    let rss = match (before, after) {
        (Some(b), Some(a)) => (a - b).to_string(),
        _ => "n/a".to_owned(),
    };
    let pages = if c == Contestant::Ours {
        contestants::ours_peak_bytes().to_string()
    } else {
        "n/a".to_owned()
    };
    println!("rss={rss} live={} pages={pages}", run.peak_live);
    ExitCode::SUCCESS
}
