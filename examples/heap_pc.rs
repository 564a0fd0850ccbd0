//! A small reproduction of the showcase's producer/consumer heap row, for profiling the depot
//! exchange (`perf record`, `valgrind --tool=callgrind`) and quick A/B timings:
//!
//! ```text
//! cargo run --release --example heap_pc -- [ours|glibc|mimalloc ...] [--rounds N] [--blocks N] [--pairs N]
//!     [--cpu-slots]
//! ```
//!
//! `--cpu-slots` registers `sched_getcpu` as the CPU-id source, so `StdHeap` uses its per-CPU
//! slots instead of thread caches (the kernel's path, and the one a C preload shim measured).
//!
//! In each of `pairs` pairs (default 1), one thread allocates `blocks` blocks of 16..=512 B and
//! hands them through a lock-free single-producer single-consumer ring (256 slots, no
//! allocation of its own) to the other, which frees them (the same workload as
//! `examples/common/heap_contestants.rs`'s `producer_consumer`; 4 pairs is the issue's
//! oversubscribed row). Prints ns per block for each contestant and round (alternating), then
//! the medians and ours/peer ratios.

use core::alloc::{GlobalAlloc, Layout};
use core::hint::black_box;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Barrier;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use smpalloc::heap::{StdHeap, SystemPages};

static OURS: StdHeap = StdHeap::new(SystemPages::new());
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Ring {
    slots: Box<[AtomicUsize]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    const CAPACITY: usize = 256;

    fn wait(spins: &mut u32) {
        *spins += 1;
        if *spins < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    fn push(&self, value: usize) {
        let tail = self.tail.load(Ordering::Relaxed);
        let mut spins = 0;
        while tail - self.head.load(Ordering::Acquire) == Self::CAPACITY {
            Self::wait(&mut spins);
        }
        self.slots[tail % Self::CAPACITY].store(value, Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
    }

    fn pop(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let mut spins = 0;
        while self.tail.load(Ordering::Acquire) == head {
            Self::wait(&mut spins);
        }
        let value = self.slots[head % Self::CAPACITY].load(Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
        value
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn run<A: GlobalAlloc + Sync>(a: &A, blocks: usize, pairs: usize) -> Duration {
    let rings: Vec<Ring> = (0..pairs)
        .map(|_| Ring {
            slots: (0..Ring::CAPACITY).map(|_| AtomicUsize::new(0)).collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        })
        .collect();
    let barrier = Barrier::new(2 * pairs + 1);
    std::thread::scope(|s| {
        for t in 0..2 * pairs {
            let (ring, barrier) = (&rings[t / 2], &barrier);
            s.spawn(move || {
                let mut rng = Rng(0x5eed_4ea9 ^ 0x9c ^ (t as u64 / 2) << 8);
                barrier.wait();
                for _ in 0..blocks {
                    let size = 16 + rng.below(497) as usize;
                    if t % 2 == 0 {
                        // SAFETY: non-zero size.
                        let ptr = unsafe { a.alloc(layout(size)) };
                        assert!(!ptr.is_null());
                        // SAFETY: at least one byte.
                        unsafe { ptr.write(size as u8) };
                        ring.push(ptr.expose_provenance());
                    } else {
                        let ptr = core::ptr::with_exposed_provenance_mut::<u8>(ring.pop());
                        // SAFETY: allocated by the pair's producer with this layout, freed once.
                        unsafe {
                            black_box(ptr.read());
                            a.dealloc(ptr, layout(size));
                        }
                    }
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn main() {
    let mut names = Vec::new();
    let (mut rounds, mut blocks, mut pairs) = (5, 1_000_000, 1);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--blocks" => blocks = args.next().unwrap().parse().unwrap(),
            "--pairs" => pairs = args.next().unwrap().parse().unwrap(),
            "--cpu-slots" => smpalloc::percpu::set_cpu_id_source(|| {
                // SAFETY: `sched_getcpu` has no preconditions.
                let cpu = unsafe { libc::sched_getcpu() };
                cpu.max(0) as usize
            }),
            name => names.push(name.to_owned()),
        }
    }
    if names.is_empty() {
        names = vec!["ours".into(), "glibc".into(), "mimalloc".into()];
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            let elapsed = match name.as_str() {
                "ours" => run(&OURS, blocks, pairs),
                "glibc" => run(&std::alloc::System, blocks, pairs),
                "mimalloc" => run(&MIMALLOC, blocks, pairs),
                other => panic!("unknown contestant {other}"),
            };
            let ns = elapsed.as_nanos() as f64 / (blocks * pairs) as f64;
            println!("round {round} {name:>9}: {ns:6.1} ns/block");
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
    for (name, median) in names.iter().zip(&medians) {
        println!("median {name:>9}: {median:6.1} ns/block");
    }
    if let Some(ours) = names.iter().position(|n| n == "ours") {
        for (name, median) in names.iter().zip(&medians) {
            if name != "ours" {
                println!("ours / {name}: {:.2}x", medians[ours] / median);
            }
        }
    }
}
