//! Multithreaded stress of `PidTable`: threads create and exit "processes" (allocate a PID,
//! next-fit or a random specific one, register, look up four times, update, unregister or
//! not, free) while also looking up random PIDs. Every value encodes its PID and owner, so any
//! lookup that returns a value of another PID (a stale or reused node) fails; an owner's own
//! lookups must return exactly what it stored. A small node pool and scattered PIDs make
//! leaves appear, empty, get reclaimed and reused all the time. When every process has
//! exited, the table checks clean and the node count is back at its start.

mod support;

use std::sync::Barrier;
use std::thread;

use smpalloc::radix::{HeapNodePool, PidError, PidTable};
use support::Rng;

const THREADS: usize = 3;
const ROUNDS: usize = if cfg!(miri) { 20 } else { 20_000 };

fn value(pid: usize, thread: usize, seq: usize) -> usize {
    pid << 24 | thread << 16 | (seq & 0xffff)
}

#[test]
fn processes_come_and_go() {
    type Table = PidTable<4096, 3, HeapNodePool>;
    // Enough nodes for the live processes' paths, few enough that nodes are reused.
    let table = Table::new(HeapNodePool::new(400));
    let start = table.get_pid_stats().nodes_in_use;
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (table, barrier) = (&table, &barrier);
            s.spawn(move || {
                let mut rng = Rng::new(0x9e37_79b9 + t as u64 * 7919);
                let mut live: Vec<(usize, usize)> = Vec::new();
                barrier.wait();
                for seq in 0..ROUNDS {
                    // Create.
                    let pid = if rng.chance(50) {
                        table.allocate_pid().expect("PIDs ran out")
                    } else {
                        let want = rng.range(1, Table::MAX_PID);
                        match table.allocate_specific_pid(want) {
                            Ok(()) => want,
                            Err(PidError::AlreadyAllocated) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    let v = value(pid, t, seq);
                    match table.register_pid_mapping(pid, v) {
                        Ok(()) => {}
                        Err(PidError::NoNodes) => {
                            table.free_pid(pid).unwrap();
                            continue;
                        }
                        Err(e) => panic!("register {pid}: {e}"),
                    }
                    for _ in 0..4 {
                        assert_eq!(table.lookup_pid(pid), Some(v), "own lookup of {pid}");
                    }
                    live.push((pid, v));
                    // Look at someone else's PID: any value must be that PID's.
                    let other = rng.range(1, Table::MAX_PID);
                    if let Some(seen) = table.lookup_pid(other) {
                        assert_eq!(seen >> 24, other, "lookup of {other} returned {seen:#x}");
                    }
                    // Exit some.
                    while live.len() > 8 || (!live.is_empty() && rng.below(3) == 0) {
                        let (pid, v) = live.swap_remove(rng.below(live.len()));
                        assert_eq!(table.lookup_pid(pid), Some(v));
                        match rng.below(3) {
                            0 => {
                                let v2 = value(pid, t, seq + 1);
                                assert_eq!(table.update_pid_mapping(pid, v2), Ok(v));
                                assert_eq!(table.free_pid(pid), Ok(Some(v2)));
                            }
                            1 => {
                                assert_eq!(table.unregister_pid_mapping(pid), Some(v));
                                assert_eq!(table.free_pid(pid), Ok(None));
                            }
                            _ => assert_eq!(table.free_pid(pid), Ok(Some(v))),
                        }
                    }
                }
                for (pid, v) in live {
                    assert_eq!(table.free_pid(pid), Ok(Some(v)));
                }
            });
        }
    });
    table.tree().reclaim();
    table.check().unwrap();
    assert_eq!(table.allocated_pid_count(), 0);
    assert_eq!(table.get_pid_stats().nodes_in_use, start, "nodes leaked");
}

/// Two threads run full lifecycles without pause (so one of them is almost always inside a
/// read section) on the full-size table, eager and on-demand: registration must never run
/// out of nodes. (Regression: a grace check that needed every reader counter at 0 at once
/// almost never passed, retired nodes piled up and the eager table ran out.)
#[test]
fn full_size_table_never_runs_out_of_nodes() {
    use smpalloc::radix::{NexaPidTable, NodePool, Reclaim};
    static EAGER: NexaPidTable = NexaPidTable::with_options(NodePool::new(), 300, Reclaim::Eager);
    static ON_DEMAND: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);
    let rounds = if cfg!(miri) { 10 } else { 30_000 };
    for table in [&EAGER, &ON_DEMAND] {
        let live: Vec<usize> = (0..4096)
            .map(|i| {
                let pid = table.allocate_pid().unwrap();
                table.register_pid_mapping(pid, i).unwrap();
                pid
            })
            .collect();
        thread::scope(|s| {
            for t in 0..2 {
                s.spawn(move || {
                    for i in 0..rounds {
                        let pid = table.allocate_pid().expect("PIDs ran out");
                        let v = value(pid, t, i);
                        table.register_pid_mapping(pid, v).expect("register");
                        assert_eq!(table.lookup_pid(pid), Some(v));
                        assert_eq!(table.unregister_pid_mapping(pid), Some(v));
                        assert_eq!(table.free_pid(pid), Ok(None));
                    }
                });
            }
        });
        for pid in live {
            table.free_pid(pid).unwrap();
        }
        table.reclaim();
        table.check().unwrap();
        assert_eq!(table.get_pid_stats().nodes_in_use, 1);
    }
}
