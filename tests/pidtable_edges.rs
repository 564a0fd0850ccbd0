//! `PidTable` edge cases: exhaustion, wrap-around with and without a reserved low range,
//! next-fit (no immediate reuse), bad input (every error changes nothing), node reclamation.

use smpalloc::radix::{HeapNodePool, MAX_PID_VALUE, NexaPidTable, NodePool, PidError, PidTable};

/// 127 PIDs over a 2-level tree with a pool for every PID.
type Tiny = PidTable<2, 2, NodePool<3>>;

#[test]
fn exhaustion_returns_none_never_a_duplicate() {
    let table = Tiny::new(NodePool::new());
    let mut seen = std::collections::BTreeSet::new();
    while let Some(pid) = table.allocate_pid() {
        assert!(seen.insert(pid), "PID {pid} handed out twice");
        table.register_pid_mapping(pid, pid * 2).unwrap();
    }
    assert_eq!(seen.len(), Tiny::MAX_PID);
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(table.allocate_pid(), None);
    assert_eq!(table.allocate_pid(), None);
    assert_eq!(table.allocated_pid_count(), 127);
    table.check().unwrap();
    assert_eq!(table.free_pid(5), Ok(Some(10)));
    assert_eq!(table.allocate_pid(), Some(5), "the only free PID");
    assert_eq!(table.allocate_pid(), None);
    table.check().unwrap();
}

#[test]
fn next_fit_does_not_reuse_at_once_and_wraps() {
    let table = Tiny::new(NodePool::new());
    assert_eq!(table.allocate_pid(), Some(1));
    assert_eq!(table.allocate_pid(), Some(2));
    table.free_pid(1).unwrap();
    assert_eq!(
        table.allocate_pid(),
        Some(3),
        "PID 1 must not be reused at once"
    );
    for pid in 4..=127 {
        assert_eq!(table.allocate_pid(), Some(pid));
    }
    assert_eq!(
        table.allocate_pid(),
        Some(1),
        "wraps to the lowest free PID"
    );
    table.check().unwrap();
}

#[test]
fn reserved_range_is_skipped_after_wrap() {
    let table = Tiny::with_reserved(NodePool::new(), 10);
    for pid in 1..=127 {
        assert_eq!(table.allocate_pid(), Some(pid), "the first lap starts at 1");
    }
    table.free_pid(3).unwrap();
    table.free_pid(50).unwrap();
    assert_eq!(table.allocate_pid(), Some(50));
    assert_eq!(
        table.allocate_pid(),
        None,
        "PID 3 is below the reserved floor"
    );
    table.allocate_specific_pid(3).unwrap();
    assert_eq!(table.allocated_pid_count(), 127);
    table.check().unwrap();
}

#[test]
fn bad_input_changes_nothing() {
    let table = Tiny::new(NodePool::new());
    let pid = table.allocate_pid().unwrap();
    table.register_pid_mapping(pid, 7).unwrap();
    let max = Tiny::MAX_PID;
    let before = (table.allocated_pid_count(), table.get_pid_stats());

    assert_eq!(table.allocate_specific_pid(0), Err(PidError::Reserved));
    assert_eq!(
        table.allocate_specific_pid(max + 1),
        Err(PidError::OutOfRange)
    );
    assert_eq!(
        table.allocate_specific_pid(pid),
        Err(PidError::AlreadyAllocated)
    );
    assert_eq!(table.free_pid(0), Err(PidError::Reserved));
    assert_eq!(table.free_pid(max + 1), Err(PidError::OutOfRange));
    assert_eq!(table.free_pid(pid + 1), Err(PidError::NotAllocated));
    assert_eq!(table.register_pid_mapping(0, 1), Err(PidError::Reserved));
    assert_eq!(
        table.register_pid_mapping(max + 1, 1),
        Err(PidError::OutOfRange)
    );
    assert_eq!(
        table.register_pid_mapping(pid + 1, 1),
        Err(PidError::NotAllocated)
    );
    assert_eq!(
        table.register_pid_mapping(pid, 1),
        Err(PidError::AlreadyMapped(7))
    );
    assert_eq!(
        table.register_pid_mapping(pid, MAX_PID_VALUE + 1),
        Err(PidError::ReservedValue)
    );
    assert_eq!(
        table.register_pid_mapping(pid, usize::MAX),
        Err(PidError::ReservedValue)
    );
    assert_eq!(
        table.update_pid_mapping(pid, usize::MAX),
        Err(PidError::ReservedValue)
    );
    assert_eq!(
        table.update_pid_mapping(pid + 1, 1),
        Err(PidError::NotMapped)
    );
    assert_eq!(table.update_pid_mapping(0, 1), Err(PidError::Reserved));
    assert_eq!(table.unregister_pid_mapping(0), None);
    assert_eq!(table.unregister_pid_mapping(max + 1), None);
    assert_eq!(table.lookup_pid(0), None);
    assert_eq!(table.lookup_pid(max + 1), None);
    assert_eq!(table.lookup_pid(usize::MAX), None);
    assert!(!table.is_pid_allocated(0));
    assert!(!table.is_pid_allocated(max + 1));

    assert_eq!((table.allocated_pid_count(), table.get_pid_stats()), before);
    assert_eq!(table.lookup_pid(pid), Some(7));
    table.check().unwrap();

    // Double free: the second one is an error and changes nothing.
    assert_eq!(table.free_pid(pid), Ok(Some(7)));
    assert_eq!(table.free_pid(pid), Err(PidError::NotAllocated));
    assert_eq!(
        table.register_pid_mapping(pid, 1),
        Err(PidError::NotAllocated)
    );
    assert_eq!(table.allocated_pid_count(), 0);
    table.check().unwrap();
}

#[test]
fn update_and_unregister() {
    let table = Tiny::new(NodePool::new());
    let pid = table.allocate_pid().unwrap();
    table.register_pid_mapping(pid, 1).unwrap();
    assert_eq!(table.update_pid_mapping(pid, 2), Ok(1));
    assert_eq!(table.lookup_pid(pid), Some(2));
    assert_eq!(table.unregister_pid_mapping(pid), Some(2));
    assert_eq!(table.unregister_pid_mapping(pid), None);
    assert!(table.is_pid_allocated(pid), "unregister keeps the PID");
    assert_eq!(table.free_pid(pid), Ok(None));
    table.check().unwrap();
}

#[test]
fn empty_nodes_are_reclaimed() {
    let table = PidTable::<4096, 3, _>::new(HeapNodePool::new(64));
    let start = table.get_pid_stats().nodes_in_use;
    assert_eq!(start, 1);
    for pid in [70_000, 70_001, 200_000] {
        table.allocate_specific_pid(pid).unwrap();
        table.register_pid_mapping(pid, pid).unwrap();
    }
    assert_eq!(table.get_pid_stats().nodes_in_use, 5);
    for pid in [70_000, 70_001, 200_000] {
        assert_eq!(table.free_pid(pid), Ok(Some(pid)));
        table.check().unwrap();
    }
    table.reclaim();
    table.check().unwrap();
    assert_eq!(table.get_pid_stats().nodes_in_use, start);
}

/// Issue 14, defect 6: `tree()` used to hand out the `RadixTree` itself, so safe code could
/// `insert(pid, usize::MAX - 1)` (the table's tombstone) and wedge `register_pid_mapping` and
/// leak the PID in `free_pid`. The view is read-only (the `compile_fail` doctest on
/// `PidTable::tree` is the regression test that the write no longer compiles); what it reads
/// agrees with the table.
#[test]
fn tree_view_reads_what_the_table_maps() {
    let table = Tiny::new(NodePool::new());
    let a = table.allocate_pid().unwrap();
    let b = table.allocate_pid().unwrap();
    table.register_pid_mapping(a, MAX_PID_VALUE).unwrap();
    table.register_pid_mapping(b, 7).unwrap();
    let view = table.tree();
    assert_eq!(view.get(a), Some(MAX_PID_VALUE));
    assert_eq!(view.get(b), Some(7));
    assert!(view.contains_key(b));
    assert_eq!(view.get(b + 1), None);
    assert!(!view.contains_key(0));
    let mut seen = Vec::new();
    view.for_each(|pid, value| seen.push((pid, value)));
    assert_eq!(seen, [(a, MAX_PID_VALUE), (b, 7)]);
    assert_eq!(view.check().unwrap().values, 2);
    assert_eq!(
        view.stats().nodes_in_use,
        table.get_pid_stats().nodes_in_use
    );
    assert_eq!(table.free_pid(a), Ok(Some(MAX_PID_VALUE)));
    assert_eq!(table.free_pid(b), Ok(Some(7)));
    assert_eq!(table.tree().get(b), None);
    table.tree().reclaim();
    table.check().unwrap();
    assert_eq!(table.get_pid_stats().nodes_in_use, 1);
}

#[test]
fn a_static_table_is_const() {
    static TABLE: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);
    assert_eq!(NexaPidTable::MAX_PID, (1 << 18) - 1);
    let pid = TABLE.allocate_pid().unwrap();
    TABLE.register_pid_mapping(pid, 3).unwrap();
    assert_eq!(TABLE.lookup_pid(pid), Some(3));
    TABLE.free_pid(pid).unwrap();
    TABLE.check().unwrap();
}

/// A kernel's table: the large node pool is its own all-zero `static` (in `.bss`) and the
/// table, whose fields are not all zero, borrows it (found by the riscv kernel in `kernel/`,
/// where an embedded pool put 2.3 MB into the kernel image).
#[test]
fn a_static_table_over_a_borrowed_zeroed_pool() {
    const BYTES: usize = size_of::<NodePool<3>>();
    // SAFETY: a `NodePool` is atomics of 64 bits only (no padding, every byte initialised).
    let bytes: [u8; BYTES] = unsafe { core::mem::transmute(NodePool::<3>::new()) };
    assert_eq!(
        bytes, [0; BYTES],
        "a new pool must be all zeros to land in .bss"
    );

    static NODES: NodePool<3> = NodePool::new();
    static TABLE: PidTable<2, 2, &NodePool<3>> = PidTable::with_reserved(&NODES, 1);
    let stats = TABLE.get_pid_stats();
    assert_eq!(
        (stats.allocated, stats.nodes_in_use),
        (0, 1),
        "only the root"
    );
    let pids: Vec<usize> = (0..100).map(|_| TABLE.allocate_pid().unwrap()).collect();
    for &pid in &pids {
        TABLE.register_pid_mapping(pid, pid + 7).unwrap();
    }
    assert_eq!(
        TABLE.get_pid_stats().nodes_in_use,
        3,
        "root and both leaves"
    );
    assert_eq!(TABLE.lookup_pid(99), Some(106));
    TABLE.check().unwrap();
    for &pid in &pids {
        assert_eq!(TABLE.free_pid(pid), Ok(Some(pid + 7)));
    }
    TABLE.reclaim();
    assert_eq!(TABLE.get_pid_stats().nodes_in_use, 1);
    TABLE.check().unwrap();
}
