//! Model-based property tests of `RadixTree` at 3 and 4 levels: random operations (insert,
//! replace, remove, remove_if, compare_exchange, get, reclaim) on keys biased to the edges
//! (0, 1, 63, 64, 4095, 4096, max, max + 1, past the end) and to a few shared leaves, each
//! compared with a `BTreeMap` and followed by `check()` (counts equal occupied slots, no
//! reachable empty node, node conservation) and a census against the model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use smpalloc::radix::{
    FANOUT, HeapNodePool, NodePool, NodeStorage, RadixError, RadixTree, Reclaim, full_tree_nodes,
};

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, usize),
    Replace(usize, usize),
    Remove(usize),
    RemoveIf(usize, usize),
    CompareExchange(usize, usize, usize),
    Get(usize),
    Reclaim,
}

/// A key biased to the edges of a tree with `capacity` keys.
fn key(capacity: usize) -> impl Strategy<Value = usize> {
    let edges = vec![
        0,
        1,
        63,
        64,
        4095,
        4096,
        capacity - 1,
        capacity,
        capacity + 1,
        usize::MAX,
    ];
    prop_oneof![
        4 => proptest::sample::select(edges),
        3 => 0..200usize,
        2 => (0..8usize).prop_map(move |i| capacity - 1 - i * (capacity / 9)),
        2 => 0..capacity,
    ]
}

fn value() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0..5usize,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX - 1),
    ]
}

fn op(capacity: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (key(capacity), value()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => (key(capacity), value()).prop_map(|(k, v)| Op::Replace(k, v)),
        4 => key(capacity).prop_map(Op::Remove),
        2 => (key(capacity), value()).prop_map(|(k, v)| Op::RemoveIf(k, v)),
        2 => (key(capacity), value(), value()).prop_map(|(k, c, n)| Op::CompareExchange(k, c, n)),
        2 => key(capacity).prop_map(Op::Get),
        1 => Just(Op::Reclaim),
    ]
}

/// Nodes a tree of `levels` levels needs for exactly the keys of `model` (root included).
fn nodes_for(levels: usize, model: &BTreeMap<usize, usize>) -> usize {
    let mut prefixes = std::collections::BTreeSet::new();
    for &k in model.keys() {
        for level in 1..levels {
            let shift = FANOUT.trailing_zeros() as usize * (levels - level);
            prefixes.insert((level, k >> shift));
        }
    }
    1 + prefixes.len()
}

fn run<const L: usize, S: NodeStorage>(tree: &RadixTree<L, S>, ops: &[Op]) {
    let cap = RadixTree::<L, S>::CAPACITY;
    let mut model = BTreeMap::new();
    let start = tree.stats().nodes_in_use;
    assert_eq!(start, 1);
    for op in ops {
        let in_range = |k: usize| k < cap;
        match *op {
            Op::Insert(k, v) => {
                let got = tree.insert(k, v);
                let want = if !in_range(k) {
                    Err(RadixError::KeyOutOfRange)
                } else if v == usize::MAX {
                    Err(RadixError::ReservedValue)
                } else if let Some(&old) = model.get(&k) {
                    Err(RadixError::Occupied(old))
                } else {
                    model.insert(k, v);
                    Ok(())
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Replace(k, v) => {
                let got = tree.replace(k, v);
                let want = if !in_range(k) {
                    Err(RadixError::KeyOutOfRange)
                } else if v == usize::MAX {
                    Err(RadixError::ReservedValue)
                } else {
                    Ok(model.insert(k, v))
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Remove(k) => assert_eq!(tree.remove(k), model.remove(&k), "{op:?}"),
            Op::RemoveIf(k, v) => {
                let got = tree.remove_if(k, v);
                let want = match model.get(&k) {
                    Some(&old) if old == v => {
                        model.remove(&k);
                        Ok(())
                    }
                    other => Err(RadixError::Mismatch(other.copied())),
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::CompareExchange(k, c, n) => {
                let got = tree.compare_exchange(k, c, n);
                let want = if !in_range(k) {
                    Err(RadixError::KeyOutOfRange)
                } else if n == usize::MAX {
                    Err(RadixError::ReservedValue)
                } else {
                    match model.get(&k) {
                        Some(&old) if old == c => {
                            model.insert(k, n);
                            Ok(c)
                        }
                        other => Err(RadixError::Mismatch(other.copied())),
                    }
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Get(k) => assert_eq!(tree.get(k), model.get(&k).copied(), "{op:?}"),
            Op::Reclaim => {
                tree.reclaim();
            }
        }
        // Single-threaded, reclamation never waits: an eager tree (after every removal) and an
        // on-demand tree (after `reclaim`) hold exactly the nodes the model's keys need, none
        // empty; between sweeps an on-demand tree may keep empty nodes.
        let census = tree.check().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        assert_eq!(census.values, model.len());
        assert_eq!(census.retired, 0);
        let needed = nodes_for(L, &model);
        if tree.reclaim_policy() == Reclaim::Eager || matches!(op, Op::Reclaim) {
            assert_eq!((census.nodes, census.empty), (needed, 0), "after {op:?}");
        } else {
            assert!(census.nodes >= needed, "after {op:?}");
        }
        assert_eq!(tree.stats().nodes_in_use, census.nodes);
        let mut seen = Vec::new();
        tree.for_each(|k, v| seen.push((k, v)));
        assert_eq!(
            seen,
            model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>()
        );
    }
    for (&k, &v) in &model {
        assert_eq!(tree.get(k), Some(v));
        assert_eq!(tree.remove(k), Some(v));
    }
    tree.reclaim();
    let census = tree.check().unwrap();
    assert_eq!((census.nodes, census.values), (1, 0));
    assert_eq!(tree.stats().nodes_in_use, start);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn three_levels_match_btreemap(ops in proptest::collection::vec(op(1 << 18), 1..120)) {
        let tree = RadixTree::<3, _>::new(HeapNodePool::new(full_tree_nodes(3)));
        run(&tree, &ops);
    }

    #[test]
    fn four_levels_match_btreemap(ops in proptest::collection::vec(op(1 << 24), 1..120)) {
        let tree = RadixTree::<4, _>::new(HeapNodePool::new(2048));
        run(&tree, &ops);
    }

    #[test]
    fn on_demand_three_levels_match_btreemap(ops in proptest::collection::vec(op(1 << 18), 1..120)) {
        let tree = RadixTree::<3, _>::with_reclaim(HeapNodePool::new(full_tree_nodes(3)), Reclaim::OnDemand);
        run(&tree, &ops);
    }

    #[test]
    fn on_demand_four_levels_match_btreemap(ops in proptest::collection::vec(op(1 << 24), 1..120)) {
        let tree = RadixTree::<4, _>::with_reclaim(HeapNodePool::new(2048), Reclaim::OnDemand);
        run(&tree, &ops);
    }

    #[test]
    fn on_demand_small_pool_reclaims_when_full(ops in proptest::collection::vec(op(1 << 12), 1..120)) {
        // Too few nodes for every key: inserts that run out sweep and retry.
        let tree = RadixTree::<2, NodePool<9>>::with_reclaim(NodePool::new(), Reclaim::OnDemand);
        run_small(&tree, &ops);
    }

    #[test]
    fn fixed_pool_matches_btreemap(ops in proptest::collection::vec(op(1 << 12), 1..120)) {
        let tree = RadixTree::<2, NodePool<{ full_tree_nodes(2) }>>::new(NodePool::new());
        run(&tree, &ops);
    }
}

/// A tree whose pool may run out: `NoNodes` is allowed only when the model's keys (after a
/// sweep) would need more nodes than the pool has, and then changes nothing.
fn run_small<const L: usize, S: NodeStorage>(tree: &RadixTree<L, S>, ops: &[Op]) {
    let mut model = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Insert(k, v) | Op::Replace(k, v)
                if k < RadixTree::<L, S>::CAPACITY && v != usize::MAX =>
            {
                let result = match op {
                    Op::Insert(..) => tree.insert(k, v).map(|()| None),
                    _ => tree.replace(k, v),
                };
                match result {
                    Err(RadixError::NoNodes) => {
                        let mut with = model.clone();
                        with.insert(k, v);
                        assert!(nodes_for(L, &with) > tree.storage().capacity(), "{op:?}");
                    }
                    Err(RadixError::Occupied(old)) => assert_eq!(model.get(&k), Some(&old)),
                    Ok(old) => {
                        assert_eq!(old, model.insert(k, v), "{op:?}");
                    }
                    Err(e) => panic!("{op:?}: {e}"),
                }
            }
            Op::Remove(k) => assert_eq!(tree.remove(k), model.remove(&k)),
            Op::Get(k) => assert_eq!(tree.get(k), model.get(&k).copied()),
            Op::Reclaim => {
                tree.reclaim();
            }
            _ => {}
        }
        let census = tree.check().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        assert_eq!(census.values, model.len());
    }
}

#[test]
fn capacities() {
    assert_eq!(RadixTree::<3, NodePool<1>>::CAPACITY, 1 << 18);
    assert_eq!(RadixTree::<4, HeapNodePool>::CAPACITY, 1 << 24);
    assert_eq!(full_tree_nodes(3), 4161);
    assert_eq!(full_tree_nodes(4), 266_305);
}

#[test]
fn full_tree_fits_the_full_pool() {
    let tree = RadixTree::<2, NodePool<{ full_tree_nodes(2) }>>::new(NodePool::new());
    for k in 0..(1 << 12) {
        tree.insert(k, k).unwrap();
    }
    assert_eq!(tree.stats().nodes_in_use, full_tree_nodes(2));
    assert_eq!(tree.check().unwrap().values, 1 << 12);
    for k in 0..(1 << 12) {
        assert_eq!(tree.remove(k), Some(k));
    }
    assert_eq!(tree.stats().nodes_in_use, 1);
    tree.check().unwrap();
}

#[test]
fn pool_exhaustion_is_an_error_that_changes_nothing() {
    // Root + 2 nodes: one path of a 3-level tree.
    let tree = RadixTree::<3, NodePool<3>>::new(NodePool::new());
    tree.insert(5, 50).unwrap();
    assert_eq!(tree.insert(1 << 17, 1), Err(RadixError::NoNodes));
    assert_eq!(tree.insert(64, 1), Err(RadixError::NoNodes));
    assert_eq!(tree.get(1 << 17), None);
    let census = tree.check().unwrap();
    assert_eq!((census.nodes, census.values), (3, 1));
    // After the path empties, its nodes are reused.
    assert_eq!(tree.remove(5), Some(50));
    tree.insert(1 << 17, 1).unwrap();
    assert_eq!(tree.get(1 << 17), Some(1));
    tree.check().unwrap();
}

#[test]
fn bad_input_changes_nothing() {
    let tree = RadixTree::<3, NodePool<8>>::new(NodePool::new());
    tree.insert(7, 70).unwrap();
    let cap = 1 << 18;
    assert_eq!(tree.insert(cap, 1), Err(RadixError::KeyOutOfRange));
    assert_eq!(tree.insert(8, usize::MAX), Err(RadixError::ReservedValue));
    assert_eq!(tree.replace(7, usize::MAX), Err(RadixError::ReservedValue));
    assert_eq!(
        tree.compare_exchange(7, 70, usize::MAX),
        Err(RadixError::ReservedValue)
    );
    assert_eq!(
        tree.compare_exchange(7, usize::MAX, 1),
        Err(RadixError::Mismatch(Some(70)))
    );
    assert_eq!(
        tree.compare_exchange(8, usize::MAX, 1),
        Err(RadixError::Mismatch(None))
    );
    assert_eq!(
        tree.remove_if(7, usize::MAX),
        Err(RadixError::Mismatch(Some(70)))
    );
    assert_eq!(tree.insert(7, 1), Err(RadixError::Occupied(70)));
    assert_eq!(tree.get(cap), None);
    assert_eq!(
        tree.get(cap + 1 + 7),
        None,
        "keys past the end must not alias"
    );
    assert_eq!(tree.remove(cap + 7), None);
    assert_eq!(tree.get(7), Some(70));
    assert_eq!(tree.check().unwrap().values, 1);
}

#[test]
fn stats_report_bytes() {
    let tree = RadixTree::<3, HeapNodePool>::new(HeapNodePool::new(16));
    tree.insert(1, 1).unwrap();
    let stats = tree.stats();
    assert_eq!(stats.nodes_in_use, 3);
    assert_eq!(stats.capacity, 16);
    assert_eq!(
        stats.bytes_in_use,
        3 * core::mem::size_of::<smpalloc::radix::Node>()
    );
    assert_eq!(
        stats.bytes_reserved,
        16 * core::mem::size_of::<smpalloc::radix::Node>()
    );
}
