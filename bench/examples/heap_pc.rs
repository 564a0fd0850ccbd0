//! A small reproduction of the showcase's producer/consumer heap row, for profiling the depot
//! exchange (`perf record`, `valgrind --tool=callgrind`) and quick A/B timings:
//!
//! ```text
//! cargo run --release -p smpalloc-bench --example heap_pc -- [ours|system|mimalloc|jemalloc ...]
//!     [--rounds N] [--blocks N] [--pairs N] [--cpu-slots]
//! ```
//!
//! Contestants are named by their keys in [`Contestant::key`] (default: ours, system,
//! mimalloc). `--cpu-slots` registers `sched_getcpu` as the CPU-id source, so `StdHeap` uses
//! its per-CPU slots instead of thread caches (the kernel's path, and the one a C preload shim
//! measured).
//!
//! In each of `pairs` pairs (default 1), one thread allocates `blocks` blocks of 16..=512 B and
//! hands them through a lock-free single-producer single-consumer ring (256 slots, no
//! allocation of its own) to the other, which frees them (`Workload::ProducerConsumer`, the
//! showcase's workload; 4 pairs is its oversubscribed row). Prints ns per block for each
//! contestant and round (alternating), then the medians and ours/peer ratios.

use smpalloc_bench::heap::{Contestant, Workload};

fn main() {
    let mut contestants = Vec::new();
    let (mut rounds, mut blocks, mut pairs) = (5, 1_000_000, 1);
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> usize {
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = number(args.next(), "--rounds"),
            "--blocks" => blocks = number(args.next(), "--blocks"),
            "--pairs" => pairs = number(args.next(), "--pairs"),
            "--cpu-slots" => smpalloc::percpu::set_cpu_id_source(|| {
                // SAFETY: `sched_getcpu` has no preconditions.
                let cpu = unsafe { libc::sched_getcpu() };
                cpu.max(0) as usize
            }),
            key => contestants.push(
                Contestant::from_key(key).unwrap_or_else(|| panic!("unknown contestant {key}")),
            ),
        }
    }
    if contestants.is_empty() {
        contestants = vec![Contestant::Ours, Contestant::System, Contestant::Mimalloc];
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); contestants.len()];
    for round in 0..rounds {
        for (i, c) in contestants.iter().enumerate() {
            let run = c.with(Workload::ProducerConsumer { pairs, blocks });
            let ns = run.elapsed.as_nanos() as f64 / (blocks * pairs) as f64;
            println!("round {round} {:>9}: {ns:6.1} ns/block", c.key());
            times[i].push(ns);
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    for (c, median) in contestants.iter().zip(&medians) {
        println!("median {:>9}: {median:6.1} ns/block", c.key());
    }
    if let Some(ours) = contestants.iter().position(|&c| c == Contestant::Ours) {
        for (c, median) in contestants.iter().zip(&medians) {
            if *c != Contestant::Ours {
                println!("ours / {}: {:.2}x", c.key(), medians[ours] / median);
            }
        }
    }
}
