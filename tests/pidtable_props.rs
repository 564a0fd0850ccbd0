//! Model-based property tests of `PidTable` at 3 levels (2^18 PIDs), 4 levels (2^19 PIDs in
//! a 2^24-key tree; the bitmap is kept small for the test stack) and a 127-PID table that
//! wraps and runs full within one case: random allocate / allocate_specific / free /
//! register / update / lookup / unregister on PIDs biased to the edges (0, 1, 63, 64, 4095,
//! 4096, max, max + 1) and to live PIDs, compared with a model (allocated set, next-fit
//! cursor with wrap floor, `BTreeMap` mapping) and followed by `check()` after every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use smpalloc::bitmap::summary_words;
use smpalloc::radix::{HeapNodePool, MAX_PID_VALUE, NodePool, NodeStorage, PidError, PidTable};

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    AllocateSpecific(Pid),
    Free(Pid),
    Register(Pid, usize),
    Update(Pid, usize),
    Lookup(Pid),
    Unregister(Pid),
}

/// A PID: an edge value, or the n-th live PID of the model.
#[derive(Debug, Clone, Copy)]
enum Pid {
    Edge(usize),
    Live(usize),
}

fn pid() -> impl Strategy<Value = Pid> {
    prop_oneof![
        2 => (0..10usize).prop_map(Pid::Edge),
        5 => any::<usize>().prop_map(Pid::Live),
    ]
}

fn value() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..100usize, 1 => Just(MAX_PID_VALUE), 1 => Just(MAX_PID_VALUE + 1)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Allocate),
        1 => pid().prop_map(Op::AllocateSpecific),
        3 => pid().prop_map(Op::Free),
        4 => (pid(), value()).prop_map(|(p, v)| Op::Register(p, v)),
        2 => (pid(), value()).prop_map(|(p, v)| Op::Update(p, v)),
        3 => pid().prop_map(Op::Lookup),
        2 => pid().prop_map(Op::Unregister),
    ]
}

struct Model {
    max: usize,
    reserved: usize,
    past_reserved: bool,
    cursor: usize,
    allocated: BTreeSet<usize>,
    map: BTreeMap<usize, usize>,
}

impl Model {
    fn resolve(&self, pid: Pid) -> usize {
        let max = self.max;
        match pid {
            Pid::Edge(i) => [0, 1, 63, 64, 4095, 4096, max, max + 1, max + 64, usize::MAX][i],
            Pid::Live(n) if self.allocated.is_empty() => n % (max + 2),
            Pid::Live(n) => *self.allocated.iter().nth(n % self.allocated.len()).unwrap(),
        }
    }

    fn valid(&self, pid: usize) -> Result<(), PidError> {
        if pid == 0 {
            Err(PidError::Reserved)
        } else if pid > self.max {
            Err(PidError::OutOfRange)
        } else {
            Ok(())
        }
    }

    fn first_free(&self, from: usize) -> Option<usize> {
        (from..=self.max).find(|p| !self.allocated.contains(p))
    }

    fn allocate(&mut self) -> Option<usize> {
        let floor = if self.past_reserved { self.reserved } else { 1 };
        let pos = self.cursor.max(floor);
        let pid = match self.first_free(pos) {
            Some(p) => p,
            None if pos > floor => self.first_free(floor)?,
            None => return None,
        };
        self.cursor = if pid == self.max { floor } else { pid + 1 };
        if pid >= self.reserved {
            self.past_reserved = true;
        }
        self.allocated.insert(pid);
        Some(pid)
    }
}

fn run<const W: usize, const L: usize, S: NodeStorage, const SUM: usize>(
    table: &PidTable<W, L, S, SUM>,
    reserved: usize,
    ops: &[Op],
) {
    let max = PidTable::<W, L, S, SUM>::MAX_PID;
    let mut m = Model {
        max,
        reserved,
        past_reserved: reserved == 1,
        cursor: 1,
        allocated: BTreeSet::new(),
        map: BTreeMap::new(),
    };
    let start_nodes = table.get_pid_stats().nodes_in_use;
    for op in ops {
        match *op {
            Op::Allocate => assert_eq!(table.allocate_pid(), m.allocate(), "{op:?}"),
            Op::AllocateSpecific(p) => {
                let p = m.resolve(p);
                let want = m.valid(p).and_then(|()| {
                    if m.allocated.insert(p) {
                        Ok(())
                    } else {
                        Err(PidError::AlreadyAllocated)
                    }
                });
                assert_eq!(table.allocate_specific_pid(p), want, "{op:?} {p}");
            }
            Op::Free(p) => {
                let p = m.resolve(p);
                let want = m.valid(p).and_then(|()| {
                    if m.allocated.remove(&p) {
                        Ok(m.map.remove(&p))
                    } else {
                        Err(PidError::NotAllocated)
                    }
                });
                assert_eq!(table.free_pid(p), want, "{op:?} {p}");
            }
            Op::Register(p, v) => {
                let p = m.resolve(p);
                let want = m.valid(p).and_then(|()| {
                    if v > MAX_PID_VALUE {
                        Err(PidError::ReservedValue)
                    } else if !m.allocated.contains(&p) {
                        Err(PidError::NotAllocated)
                    } else if let Some(&old) = m.map.get(&p) {
                        Err(PidError::AlreadyMapped(old))
                    } else {
                        m.map.insert(p, v);
                        Ok(())
                    }
                });
                assert_eq!(table.register_pid_mapping(p, v), want, "{op:?} {p}");
            }
            Op::Update(p, v) => {
                let p = m.resolve(p);
                let want = m.valid(p).and_then(|()| {
                    if v > MAX_PID_VALUE {
                        Err(PidError::ReservedValue)
                    } else {
                        m.map.insert(p, v).ok_or(PidError::NotMapped)
                    }
                });
                if want.is_err() {
                    // The model must not have gained a mapping from the failed update.
                    if let Err(PidError::NotMapped) = want {
                        m.map.remove(&p);
                    }
                }
                assert_eq!(table.update_pid_mapping(p, v), want, "{op:?} {p}");
            }
            Op::Lookup(p) => {
                let p = m.resolve(p);
                assert_eq!(table.lookup_pid(p), m.map.get(&p).copied(), "{op:?} {p}");
                assert_eq!(table.is_pid_allocated(p), m.allocated.contains(&p), "{p}");
            }
            Op::Unregister(p) => {
                let p = m.resolve(p);
                let want = if m.valid(p).is_ok() {
                    m.map.remove(&p)
                } else {
                    None
                };
                assert_eq!(table.unregister_pid_mapping(p), want, "{op:?} {p}");
            }
        }
        table
            .check()
            .unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        assert_eq!(table.allocated_pid_count(), m.allocated.len());
        let stats = table.get_pid_stats();
        assert_eq!(stats.allocated, m.allocated.len());
        let mut seen = Vec::new();
        table.for_each_mapping(|p, v| seen.push((p, v)));
        assert_eq!(
            seen,
            m.map.iter().map(|(&p, &v)| (p, v)).collect::<Vec<_>>()
        );
        assert_eq!(table.tree().check().unwrap().values, m.map.len());
    }
    for p in m.allocated.clone() {
        assert_eq!(table.free_pid(p), Ok(m.map.remove(&p)));
    }
    table.check().unwrap();
    assert_eq!(table.allocated_pid_count(), 0);
    table.reclaim();
    assert_eq!(table.get_pid_stats().nodes_in_use, start_nodes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 128 }))]

    #[test]
    fn three_levels_match_model(ops in proptest::collection::vec(op(), 1..100)) {
        let table = PidTable::<4096, 3, _>::new(HeapNodePool::new(4161));
        run(&table, 1, &ops);
    }

    #[test]
    fn three_levels_reserved_match_model(ops in proptest::collection::vec(op(), 1..100)) {
        let table = PidTable::<4096, 3, _>::with_reserved(HeapNodePool::new(4161), 300);
        run(&table, 300, &ops);
    }

    #[test]
    fn tiny_table_wraps_and_fills(ops in proptest::collection::vec(op(), 1..400)) {
        let table = PidTable::<2, 2, NodePool<3>>::with_reserved(NodePool::new(), 10);
        run(&table, 10, &ops);
    }

    #[test]
    fn four_levels_match_model(ops in proptest::collection::vec(op(), 1..60)) {
        let table = PidTable::<8192, 4, _, { summary_words(8192) }>::new(HeapNodePool::new(1024));
        run(&table, 1, &ops);
    }
}
