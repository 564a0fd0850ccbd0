//! Loom models of `PidTable`'s bitmap-vs-mapping protocol (docs/design/04-radix-and-pid-table.md, `table.rs`). Empty
//! unless built with `--cfg loom`: one bitmap word (PIDs 1..=63) over a 6-level 2-way tree.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test --release --test loom_pidtable`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smpalloc::percpu::set_model_cpu;
use smpalloc::radix::{NodePool, PidError, PidTable};

/// 63 PIDs; room for the root plus two competing 5-node chains.
type Table = PidTable<1, 6, NodePool<11>, 0>;

/// A table with PID 5 allocated and its neighbour PID 4 (same leaf) mapped, so the racing
/// operations walk an existing path (node creation and reclamation have their own models in
/// `loom_radix`; here they would only multiply the interleavings).
fn table_with_pid_5() -> Arc<Table> {
    let table = Arc::new(Table::new(NodePool::new()));
    table.allocate_specific_pid(4).unwrap();
    table.register_pid_mapping(4, 40).unwrap();
    table.allocate_specific_pid(5).unwrap();
    table
}

/// Runs `f` on a second thread (CPU 1) against a clone of `table`; the caller is CPU 0.
fn spawn_on_cpu1<T: Send + 'static>(
    table: &Arc<Table>,
    f: impl FnOnce(&Table) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let other = table.clone();
    set_model_cpu(0);
    thread::spawn(move || {
        set_model_cpu(1);
        f(&other)
    })
}

/// After the race: reclaims, checks the table's invariant and that no node leaked.
fn assert_settled(table: &Table) {
    table.tree().reclaim();
    table.check().unwrap();
    assert_eq!(table.get_pid_stats().nodes_in_use, 6, "nodes leaked");
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// `free_pid` racing `register_pid_mapping` on the same PID: either the register came first
/// (it succeeds and the free returns its value) or it fails with `NotAllocated`; either way no
/// mapping outlives the PID and no node leaks.
#[test]
fn free_pid_races_register() {
    model(|| {
        let table = table_with_pid_5();
        let t = spawn_on_cpu1(&table, |other| other.register_pid_mapping(5, 50));
        let freed = table.free_pid(5);
        let registered = t.join().unwrap();
        assert!(registered == Ok(()) || registered == Err(PidError::NotAllocated));
        assert_eq!(freed.is_ok_and(|v| v == Some(50)), registered.is_ok());
        assert!(freed.is_ok());
        assert!(!table.is_pid_allocated(5));
        assert_eq!(table.lookup_pid(5), None, "a mapping outlived its PID");
        assert_settled(&table);
    });
}

/// Two frees of the same mapped PID: exactly one succeeds and returns the mapping.
#[test]
fn double_free_races() {
    model(|| {
        let table = table_with_pid_5();
        table.register_pid_mapping(5, 50).unwrap();
        let t = spawn_on_cpu1(&table, |other| other.free_pid(5));
        let mine = table.free_pid(5);
        let theirs = t.join().unwrap();
        let mut results = [mine, theirs];
        results.sort_by_key(|r| r.is_err());
        assert_eq!(results, [Ok(Some(50)), Err(PidError::NotAllocated)]);
        assert_eq!(table.lookup_pid(5), None);
        assert_settled(&table);
    });
}

/// The old owner's free racing a new owner that takes the same PID number as soon as its bit
/// clears (`allocate_specific_pid`) and registers it: the free never removes the new owner's
/// mapping (it tombstones before clearing the bit), and the new register waits out the
/// tombstone instead of failing.
#[test]
fn free_races_reallocation() {
    model(|| {
        let table = table_with_pid_5();
        table.register_pid_mapping(5, 50).unwrap();
        let t = spawn_on_cpu1(&table, |other| {
            while other.allocate_specific_pid(5).is_err() {
                thread::yield_now();
            }
            other.register_pid_mapping(5, 60)
        });
        assert_eq!(table.free_pid(5), Ok(Some(50)));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert!(table.is_pid_allocated(5));
        assert_eq!(table.lookup_pid(5), Some(60));
        table.tree().reclaim();
        table.check().unwrap();
    });
}

/// `unregister_pid_mapping` racing `free_pid` on the same mapped PID: exactly one of them
/// takes the value, and no mapping outlives the PID.
#[test]
fn unregister_races_free() {
    model(|| {
        let table = table_with_pid_5();
        table.register_pid_mapping(5, 50).unwrap();
        let t = spawn_on_cpu1(&table, |other| other.unregister_pid_mapping(5));
        let freed = table.free_pid(5);
        let unregistered = t.join().unwrap();
        match (freed, unregistered) {
            (Ok(Some(50)), None) | (Ok(None), Some(50)) => {}
            other => panic!("the value was lost or taken twice: {other:?}"),
        }
        assert!(!table.is_pid_allocated(5));
        assert_eq!(table.lookup_pid(5), None, "a mapping outlived its PID");
        assert_settled(&table);
    });
}

/// `update_pid_mapping` racing `free_pid`: the update either lands before the free (which
/// returns the new value) or finds no mapping; never a mapping left on a freed PID.
#[test]
fn update_races_free() {
    model(|| {
        let table = table_with_pid_5();
        table.register_pid_mapping(5, 50).unwrap();
        let t = spawn_on_cpu1(&table, |other| other.update_pid_mapping(5, 60));
        let freed = table.free_pid(5);
        let updated = t.join().unwrap();
        match (freed, updated) {
            (Ok(Some(60)), Ok(50)) | (Ok(Some(50)), Err(PidError::NotMapped)) => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
        assert!(!table.is_pid_allocated(5));
        assert_eq!(table.lookup_pid(5), None, "a mapping outlived its PID");
        assert_settled(&table);
    });
}

/// `free_pid` of a PID with no mapping, whose leaf is empty, racing a sweep (`reclaim`) that
/// freezes and unlinks that leaf: the free's tombstone goes into a live leaf (reserving in the
/// leaf it walked to, or, once that leaf is frozen, helping unlink it and building a new one),
/// never into the frozen one; the free succeeds with no mapping and every node comes back.
#[test]
fn free_of_an_unmapped_pid_races_a_sweep() {
    model(|| {
        let table = Arc::new(Table::new(NodePool::new()));
        table.allocate_specific_pid(5).unwrap();
        // An empty leaf on 5's path (on-demand reclamation keeps it linked).
        table.register_pid_mapping(5, 50).unwrap();
        assert_eq!(table.unregister_pid_mapping(5), Some(50));
        let t = spawn_on_cpu1(&table, |other| other.tree().reclaim());
        assert_eq!(table.free_pid(5), Ok(None));
        t.join().unwrap();
        assert!(!table.is_pid_allocated(5));
        assert_eq!(table.lookup_pid(5), None);
        table.tree().reclaim();
        table.check().unwrap();
        assert_eq!(table.get_pid_stats().nodes_in_use, 1, "nodes leaked");
    });
}
