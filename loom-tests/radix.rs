//! Loom models of `RadixTree`'s protocols (docs/design/04-radix-and-pid-table.md). Empty unless built with
//! `--cfg loom`, where nodes are 2-way so a few keys cover every path.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test --release --test loom_radix`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use smpalloc::percpu::set_model_cpu;
use smpalloc::radix::{NodePool, NodeStorage, RadixError, RadixTree, Reclaim};

/// Cells written by one thread before it publishes their index in the tree.
struct Payload([UnsafeCell<usize>; 2]);

// SAFETY: the cells are shared only so that loom can check that each read is ordered after
// the write that the tree published; loom reports any unordered access as a failure.
unsafe impl Sync for Payload {}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Runs `f` on a second model thread that reports CPU 1 (the caller is CPU 0).
fn spawn_on_cpu1<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    set_model_cpu(0);
    thread::spawn(move || {
        set_model_cpu(1);
        f()
    })
}

/// Two inserts race to create the same missing inner node and leaf (keys 0 and 1 share the
/// whole path of a 3-level tree): one chain survives, both values are in it, and the loser's
/// chain went back to the pool (no leak).
#[test]
fn racing_inserts_share_one_new_path() {
    model(|| {
        let tree = Arc::new(RadixTree::<3, NodePool<5>>::new(NodePool::new()));
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.insert(1, 11));
        let mine = tree.insert(0, 10);
        let theirs = t.join().unwrap();
        assert_eq!((mine, theirs), (Ok(()), Ok(())));
        assert_eq!((tree.get(0), tree.get(1)), (Some(10), Some(11)));
        let census = tree.check().unwrap();
        assert_eq!((census.nodes, census.values), (3, 2));
        assert_eq!(tree.storage().nodes_in_use(), 3, "the losing chain leaked");
    });
}

/// A lookup that sees an inserted value also sees everything its inserter wrote before the
/// insert (the value names a payload): publication is Release/Acquire, through a new chain
/// and through an existing leaf.
#[test]
fn insert_publishes_to_lookup() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<3>>::new(NodePool::new()));
        tree.insert(1, 1).unwrap(); // the leaf of key 0 exists; key 2's does not
        let payload = Arc::new(Payload([UnsafeCell::new(0), UnsafeCell::new(0)]));
        let (t_tree, t_payload) = (tree.clone(), payload.clone());
        let t = spawn_on_cpu1(move || {
            // SAFETY: only this thread writes, before publishing the index (loom checks it).
            t_payload.0[0].with_mut(|p| unsafe { *p = 42 });
            // SAFETY: as above.
            t_payload.0[1].with_mut(|p| unsafe { *p = 43 });
            t_tree.insert(0, 0).unwrap();
            t_tree.insert(2, 1).unwrap();
        });
        for key in [2, 0] {
            if let Some(index) = tree.get(key) {
                // SAFETY: loom reports it if this read is not ordered after the write.
                let seen = payload.0[index].with(|p| unsafe { *p });
                assert_eq!(seen, 42 + index);
            }
        }
        t.join().unwrap();
        tree.check().unwrap();
    });
}

/// A lookup racing the removal of the only key in its leaf (which freezes, unlinks, retires
/// and reclaims the leaf) sees the value or nothing, and the tree ends with the root alone.
#[test]
fn remove_races_lookup() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<2>>::new(NodePool::new()));
        tree.insert(0, 10).unwrap();
        let other = tree.clone();
        let t = spawn_on_cpu1(move || (other.get(0), other.get(1)));
        assert_eq!(tree.remove(0), Some(10));
        let (zero, one) = t.join().unwrap();
        assert!(zero == Some(10) || zero.is_none());
        assert_eq!(one, None);
        tree.reclaim();
        let census = tree.check().unwrap();
        assert_eq!((census.nodes, census.values, census.retired), (1, 0, 0));
        assert_eq!(tree.storage().nodes_in_use(), 1);
    });
}

/// Reclamation racing a lookup: the removed leaf is freed and at once reused for another key
/// (the pool has one spare node), while a lookup may still be walking into it. The grace
/// period must keep the lookup from ever returning the other key's value.
#[test]
fn reclamation_never_frees_under_a_lookup() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<2>>::new(NodePool::new()));
        tree.insert(0, 10).unwrap();
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.get(0));
        assert_eq!(tree.remove(0), Some(10));
        // Key 2 sits at the same slot of another leaf: reusing key 0's leaf for it under the
        // lookup would show 30 for key 0.
        let reused = tree.insert(2, 30);
        assert!(reused == Ok(()) || reused == Err(RadixError::NoNodes));
        let seen = t.join().unwrap();
        assert!(
            seen == Some(10) || seen.is_none(),
            "lookup read a reused node: {seen:?}"
        );
        tree.reclaim();
        tree.check().unwrap();
    });
}

/// Reclamation racing an insert into the leaf being frozen: the insert either reserved first
/// (the leaf stays) or meets the frozen leaf, helps unlink it and builds a new one. Either way
/// its value is there afterwards and no node leaks.
#[test]
fn reclamation_races_insert() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<3>>::new(NodePool::new()));
        tree.insert(0, 10).unwrap();
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.insert(1, 11));
        assert_eq!(tree.remove(0), Some(10));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!((tree.get(0), tree.get(1)), (None, Some(11)));
        tree.reclaim();
        let census = tree.check().unwrap();
        assert_eq!((census.nodes, census.values, census.retired), (2, 1, 0));
        assert_eq!(tree.storage().nodes_in_use(), 2, "a node leaked");
    });
}

/// The on-demand sweep (`Reclaim::OnDemand`: freeze, unlink and retire every empty node in
/// `reclaim`) racing a lookup, with the freed leaf reused at once for another key.
#[test]
fn sweep_never_frees_under_a_lookup() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<2>>::with_reclaim(
            NodePool::new(),
            Reclaim::OnDemand,
        ));
        tree.insert(0, 10).unwrap();
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.get(0));
        assert_eq!(tree.remove(0), Some(10));
        tree.reclaim();
        let reused = tree.insert(2, 30);
        assert!(reused == Ok(()) || reused == Err(RadixError::NoNodes));
        let seen = t.join().unwrap();
        assert!(
            seen == Some(10) || seen.is_none(),
            "lookup read a reused node: {seen:?}"
        );
        tree.reclaim();
        let census = tree.check().unwrap();
        assert_eq!(census.empty, 0);
    });
}

/// The on-demand sweep racing an insert into the leaf it freezes: the insert reserves first
/// or helps unlink the frozen leaf and builds a new one; its value survives, nothing leaks.
#[test]
fn sweep_races_insert() {
    model(|| {
        let tree = Arc::new(RadixTree::<2, NodePool<3>>::with_reclaim(
            NodePool::new(),
            Reclaim::OnDemand,
        ));
        tree.insert(0, 10).unwrap();
        assert_eq!(tree.remove(0), Some(10)); // the leaf stays, empty
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.insert(1, 11));
        tree.reclaim();
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!((tree.get(0), tree.get(1)), (None, Some(11)));
        tree.reclaim();
        let census = tree.check().unwrap();
        assert_eq!(
            (census.nodes, census.values, census.retired, census.empty),
            (2, 1, 0, 0)
        );
        assert_eq!(tree.storage().nodes_in_use(), 2, "a node leaked");
    });
}

/// A lookup racing the removal of a whole 3-level path (eager: leaf and inner node freed) and
/// the reuse of both nodes for another key: the value or nothing, never the other key's.
/// (The free stack hands the nodes back in their old roles here, so the bounds check for an
/// inner node reused as a leaf is argued in docs/design/04-radix-and-pid-table.md §"Lookup (wait-free)", not reached by this model.)
#[test]
fn reused_path_never_misleads_a_lookup() {
    model(|| {
        let tree = Arc::new(RadixTree::<3, NodePool<3>>::new(NodePool::new()));
        tree.insert(0, 10).unwrap();
        let other = tree.clone();
        let t = spawn_on_cpu1(move || other.get(0));
        assert_eq!(tree.remove(0), Some(10)); // frees both nodes of the path (eager)
        // Key 4 takes the other half of the root; its value is no valid node index.
        let reused = tree.insert(4, 1000);
        assert!(reused == Ok(()) || reused == Err(RadixError::NoNodes));
        let seen = t.join().unwrap();
        assert!(
            seen == Some(10) || seen.is_none(),
            "lookup read a reused node: {seen:?}"
        );
        tree.reclaim();
        tree.check().unwrap();
    });
}
