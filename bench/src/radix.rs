//! The PID-table contestants and workloads, shared by the showcase's radix section and
//! `benches/radix.rs`.
//!
//! Every contestant maps PIDs `1..262,144` to process-table indices and allocates PIDs
//! next-fit with wrap-around:
//! - ours: `smpalloc::radix::NexaPidTable` (lock-free bitmap + lock-free radix tree, on-demand
//!   node reclamation), the same table looked up without its reuse validation (to price the
//!   reclamation protection), and one with eager reclamation (to price that policy);
//! - `std::sync::RwLock<(bitmap, BTreeMap)>` (readers share the lock);
//! - `SpinLock<(bitmap, BTreeMap)>` and `SpinLock<(bitmap, hashbrown::HashMap)>`;
//! - `SpinLock<seed>`: the design NexaOS replaced, a bitmap plus a linear scan of a process
//!   array (every lookup walks the live processes).
//!
//! The bitmap of the locked peers is the seed's: 4,096 words, next-fit from a hint, first zero
//! bit of the first non-full word, wrapping (with its 4,096-PID limit fixed).

use core::hint::black_box;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::{Barrier, RwLock};
use std::time::Instant;

use smpalloc::SpinLock;
use smpalloc::radix::{NexaPidTable, NodePool, Reclaim};
use smpalloc_testkit::Rng;

/// Live processes held by every workload (32,768, as NexaOS sizes its table).
pub const LIVE: usize = 32_768;

/// A PID table under test.
pub trait PidMap: Sync {
    fn allocate(&self) -> Option<usize>;
    fn register(&self, pid: usize, value: usize);
    fn lookup(&self, pid: usize) -> Option<usize>;
    fn unregister(&self, pid: usize) -> Option<usize>;
    fn free(&self, pid: usize);
}

/// Ours: `Ours<true>` with the normal (validated) lookup, `Ours<false>` looked up without the
/// reuse validation (the branch is folded at compile time).
pub struct Ours<const VALIDATED: bool>(pub &'static NexaPidTable);

impl<const VALIDATED: bool> PidMap for Ours<VALIDATED> {
    #[inline]
    fn allocate(&self) -> Option<usize> {
        self.0.allocate_pid()
    }
    #[inline]
    fn register(&self, pid: usize, value: usize) {
        self.0.register_pid_mapping(pid, value).unwrap();
    }
    #[inline]
    fn lookup(&self, pid: usize) -> Option<usize> {
        if VALIDATED {
            self.0.lookup_pid(pid)
        } else {
            self.0.tree().get_unvalidated(pid)
        }
    }
    #[inline]
    fn unregister(&self, pid: usize) -> Option<usize> {
        self.0.unregister_pid_mapping(pid)
    }
    #[inline]
    fn free(&self, pid: usize) {
        self.0.free_pid(pid).unwrap();
    }
}

/// The seed's PID bitmap: 4,096 words, PID 0 reserved, next-fit by word from a hint.
pub struct SeedBitmap {
    words: Box<[u64; 4096]>,
    hint: usize,
}

impl SeedBitmap {
    fn new() -> Self {
        let mut words = Box::new([0u64; 4096]);
        words[0] = 1;
        SeedBitmap { words, hint: 1 }
    }

    fn allocate(&mut self) -> Option<usize> {
        let start = self.hint / 64;
        for i in 0..4096 {
            let w = (start + i) % 4096;
            let word = self.words[w];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as usize;
                self.words[w] |= 1 << bit;
                let pid = w * 64 + bit;
                self.hint = (pid + 1) % (4096 * 64);
                return Some(pid);
            }
        }
        None
    }

    fn free(&mut self, pid: usize) {
        self.words[pid / 64] &= !(1 << (pid % 64));
    }
}

/// A map the locked peers keep next to their bitmap.
pub trait Mapping: Send + Sync {
    fn new() -> Self;
    fn insert(&mut self, pid: usize, value: usize);
    fn get(&self, pid: usize) -> Option<usize>;
    fn remove(&mut self, pid: usize) -> Option<usize>;
}

impl Mapping for BTreeMap<usize, usize> {
    fn new() -> Self {
        BTreeMap::new()
    }
    fn insert(&mut self, pid: usize, value: usize) {
        BTreeMap::insert(self, pid, value);
    }
    fn get(&self, pid: usize) -> Option<usize> {
        BTreeMap::get(self, &pid).copied()
    }
    fn remove(&mut self, pid: usize) -> Option<usize> {
        BTreeMap::remove(self, &pid)
    }
}

impl Mapping for hashbrown::HashMap<usize, usize> {
    fn new() -> Self {
        hashbrown::HashMap::with_capacity(2 * LIVE)
    }
    fn insert(&mut self, pid: usize, value: usize) {
        hashbrown::HashMap::insert(self, pid, value);
    }
    fn get(&self, pid: usize) -> Option<usize> {
        hashbrown::HashMap::get(self, &pid).copied()
    }
    fn remove(&mut self, pid: usize) -> Option<usize> {
        hashbrown::HashMap::remove(self, &pid)
    }
}

/// The seed's process array: a linear scan finds a PID's entry (or a free slot).
pub struct ProcessArray(Vec<Option<(usize, usize)>>);

impl Mapping for ProcessArray {
    fn new() -> Self {
        ProcessArray(vec![None; LIVE + 64])
    }
    fn insert(&mut self, pid: usize, value: usize) {
        let slot = self
            .0
            .iter_mut()
            .find(|e| e.is_none())
            .expect("process array full");
        *slot = Some((pid, value));
    }
    fn get(&self, pid: usize) -> Option<usize> {
        self.0.iter().flatten().find(|e| e.0 == pid).map(|e| e.1)
    }
    fn remove(&mut self, pid: usize) -> Option<usize> {
        let slot = self.0.iter_mut().find(|e| e.is_some_and(|e| e.0 == pid))?;
        slot.take().map(|e| e.1)
    }
}

/// `SpinLock<(bitmap, M)>`.
pub struct Spin<M>(SpinLock<(SeedBitmap, M)>);
/// `RwLock<(bitmap, M)>`.
pub struct Rw<M>(RwLock<(SeedBitmap, M)>);

impl<M: Mapping> Default for Spin<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Mapping> Default for Rw<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Mapping> Spin<M> {
    pub fn new() -> Self {
        Spin(SpinLock::new((SeedBitmap::new(), M::new())))
    }
}

impl<M: Mapping> Rw<M> {
    pub fn new() -> Self {
        Rw(RwLock::new((SeedBitmap::new(), M::new())))
    }
}

impl<M: Mapping> PidMap for Spin<M> {
    fn allocate(&self) -> Option<usize> {
        self.0.lock().0.allocate()
    }
    fn register(&self, pid: usize, value: usize) {
        self.0.lock().1.insert(pid, value);
    }
    fn lookup(&self, pid: usize) -> Option<usize> {
        self.0.lock().1.get(pid)
    }
    fn unregister(&self, pid: usize) -> Option<usize> {
        self.0.lock().1.remove(pid)
    }
    fn free(&self, pid: usize) {
        let mut guard = self.0.lock();
        guard.1.remove(pid);
        guard.0.free(pid);
    }
}

impl<M: Mapping> PidMap for Rw<M> {
    fn allocate(&self) -> Option<usize> {
        self.0.write().unwrap().0.allocate()
    }
    fn register(&self, pid: usize, value: usize) {
        self.0.write().unwrap().1.insert(pid, value);
    }
    fn lookup(&self, pid: usize) -> Option<usize> {
        self.0.read().unwrap().1.get(pid)
    }
    fn unregister(&self, pid: usize) -> Option<usize> {
        self.0.write().unwrap().1.remove(pid)
    }
    fn free(&self, pid: usize) {
        let mut guard = self.0.write().unwrap();
        guard.1.remove(pid);
        guard.0.free(pid);
    }
}

/// The contestants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    OursBare,
    OursEager,
    RwBTree,
    SpinBTree,
    SpinHash,
    SpinSeed,
}

impl Kind {
    /// Lookup scenarios.
    pub const LOOKUP: [Kind; 6] = [
        Kind::Ours,
        Kind::OursBare,
        Kind::RwBTree,
        Kind::SpinBTree,
        Kind::SpinHash,
        Kind::SpinSeed,
    ];
    /// Lifecycle scenarios (the bare lookup only matters for lookups).
    pub const LIFECYCLE: [Kind; 6] = [
        Kind::Ours,
        Kind::OursEager,
        Kind::RwBTree,
        Kind::SpinBTree,
        Kind::SpinHash,
        Kind::SpinSeed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "smpalloc PidTable",
            Kind::OursBare => "smpalloc PidTable, bare get",
            Kind::OursEager => "smpalloc PidTable, eager",
            Kind::RwBTree => "RwLock<(bitmap, BTreeMap)>",
            Kind::SpinBTree => "SpinLock<(bitmap, BTreeMap)>",
            Kind::SpinHash => "SpinLock<(bitmap, HashMap)>",
            Kind::SpinSeed => "SpinLock<seed array scan>",
        }
    }

    /// A criterion-friendly id.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Ours => "smpalloc",
            Kind::OursBare => "smpalloc_bare_get",
            Kind::OursEager => "smpalloc_eager",
            Kind::RwBTree => "rwlock_btreemap",
            Kind::SpinBTree => "spinlock_btreemap",
            Kind::SpinHash => "spinlock_hashbrown",
            Kind::SpinSeed => "spinlock_seed_scan",
        }
    }

    pub fn is_peer(self) -> bool {
        !matches!(self, Kind::Ours | Kind::OursBare | Kind::OursEager)
    }

    /// The seed's linear scans take microseconds: it runs this fraction of the operations.
    pub fn ops(self, ops: u64) -> u64 {
        if self == Kind::SpinSeed {
            (ops / 200).max(50)
        } else {
            ops
        }
    }

    /// Runs `workload` on a fresh instance of this contestant (ours is one static table,
    /// left with no live process after every run).
    pub fn run(self, workload: Workload, ops: u64) -> Duration {
        static TABLE: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);
        static EAGER: NexaPidTable =
            NexaPidTable::with_options(NodePool::new(), 300, Reclaim::Eager);
        let ops = self.ops(ops);
        match self {
            Kind::Ours => run(&Ours::<true>(&TABLE), workload, ops),
            Kind::OursBare => run(&Ours::<false>(&TABLE), workload, ops),
            Kind::OursEager => run(&Ours::<true>(&EAGER), workload, ops),
            Kind::RwBTree => run(&Rw::<BTreeMap<usize, usize>>::new(), workload, ops),
            Kind::SpinBTree => run(&Spin::<BTreeMap<usize, usize>>::new(), workload, ops),
            Kind::SpinHash => run(
                &Spin::<hashbrown::HashMap<usize, usize>>::new(),
                workload,
                ops,
            ),
            Kind::SpinSeed => run(&Spin::<ProcessArray>::new(), workload, ops),
        }
    }
}

/// What a measurement does. `ops` counts lookups or lifecycles of the measured threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Lookups of random live PIDs by `readers` threads while `writers` threads create and
    /// exit processes (allocate, register, unregister, free) without pause.
    Lookup { readers: usize, writers: usize },
    /// Full lifecycles (allocate, register, lookup x4, unregister, free) by `threads` threads.
    Lifecycle { threads: usize },
}

/// One process lifecycle.
#[inline]
fn lifecycle<M: PidMap>(map: &M, value: usize) {
    let pid = map.allocate().expect("PIDs ran out");
    map.register(pid, value);
    for _ in 0..4 {
        black_box(map.lookup(black_box(pid)));
    }
    black_box(map.unregister(pid));
    map.free(pid);
}

/// Fills `map` with `LIVE` processes, runs `workload` for `ops` operations of the measured
/// threads, empties it again; returns the wall time of the measured phase (all measured
/// threads, start to last finish).
pub fn run<M: PidMap>(map: &M, workload: Workload, ops: u64) -> Duration {
    let live: Vec<usize> = (0..LIVE)
        .map(|i| {
            let pid = map.allocate().expect("PIDs ran out");
            map.register(pid, i);
            pid
        })
        .collect();
    let elapsed = match workload {
        Workload::Lookup { readers, writers } => {
            let barrier = Barrier::new(readers + writers + 1);
            let stop = AtomicBool::new(false);
            let per = ops / readers as u64;
            std::thread::scope(|s| {
                for w in 0..writers {
                    let (barrier, stop) = (&barrier, &stop);
                    s.spawn(move || {
                        barrier.wait();
                        let mut n = w;
                        while !stop.load(Ordering::Relaxed) {
                            lifecycle(map, n);
                            n += 1;
                        }
                    });
                }
                let handles: Vec<_> = (0..readers)
                    .map(|r| {
                        let (barrier, live) = (&barrier, &live);
                        s.spawn(move || {
                            let mut rng = Rng::new(0x5eed + r as u64);
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..per {
                                let pid = live[rng.below(LIVE)];
                                black_box(map.lookup(pid));
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                barrier.wait();
                let longest = handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap_or_default();
                stop.store(true, Ordering::Relaxed);
                longest
            })
        }
        Workload::Lifecycle { threads } => {
            let barrier = Barrier::new(threads);
            let per = ops / threads as u64;
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            for i in 0..per {
                                lifecycle(map, t << 32 | i as usize);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap_or_default()
            })
        }
    };
    for pid in live {
        map.free(pid);
    }
    elapsed
}
