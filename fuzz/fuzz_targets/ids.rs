//! Fuzz target `ids`: `AtomicBitmap`, `PidAllocator` (each `Policy`, its `IdAllocator`
//! impl), `RadixTree` and `PidTable` against shadow models (a bit set, a map).
//!
//! Every result is predicted from the documented contract (errors included: "every operation
//! that returns one changed nothing"), and `check()` runs after every step. `PidTable::tree()`
//! is exercised only as a caller could use it to corrupt the table: a value stored through it
//! (if the view allows it at all) must leave the table consistent and usable.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smpalloc::bitmap::{AtomicBitmap, BitmapError, summary_words};
use smpalloc::radix::{
    MAX_PID_VALUE, NodePool, PidError, PidTable, RadixError, RadixTree, Reclaim,
};
use smpalloc::{AllocError, BaseAllocator, IdAllocator, PidAllocator, Policy};
use smpalloc_testkit::IdShadow;

const MAX_OPS: usize = 256;
const WORDS: usize = 2;
const CAP: usize = WORDS * 64;
type Bits = AtomicBitmap<WORDS, { summary_words(WORDS) }>;
type Pids = PidAllocator<WORDS, { summary_words(WORDS) }>;
type Tree = RadixTree<2, NodePool<6>>;
type Table = PidTable<WORDS, 2, NodePool<4>, { summary_words(WORDS) }>;

#[derive(Arbitrary, Debug)]
enum Input {
    Bitmap(Vec<BitOp>),
    Pids {
        policy: u8,
        reserved: u8,
        ops: Vec<PidOp>,
    },
    Tree {
        eager: bool,
        ops: Vec<TreeOp>,
    },
    Table {
        reserved: u8,
        eager: bool,
        ops: Vec<TableOp>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum BitOp {
    Lowest { floor: u8 },
    Specific { id: u8 },
    Contiguous { count: u8, align: u8, floor: u8 },
    Range { start: u8, count: u8 },
    Free { id: u8 },
    FreeRange { start: u8, count: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PidOp {
    Allocate,
    Handle,
    Specific { id: u8 },
    Free { id: u8 },
    AllocId { count: u8, align: u8 },
    DeallocId { start: u8, count: u8 },
    Fixed { id: u8 },
    Init { start: u8, size: u8 },
    AddMemory { start: u8, size: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TreeOp {
    Insert {
        key: u16,
        value: Value,
    },
    Replace {
        key: u16,
        value: Value,
    },
    Cas {
        key: u16,
        current: Value,
        new: Value,
    },
    Remove {
        key: u16,
    },
    RemoveIf {
        key: u16,
        expected: Value,
    },
    Get {
        key: u16,
    },
    Reclaim,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TableOp {
    Allocate,
    Specific {
        pid: u8,
    },
    Free {
        pid: u8,
    },
    Register {
        pid: u8,
        value: Value,
    },
    Update {
        pid: u8,
        value: Value,
    },
    Lookup {
        pid: u8,
    },
    Unregister {
        pid: u8,
    },
    /// Reads through the read-only `PidTable::tree()` view (it has no way to write: issue 14,
    /// defect 6 planted the table's tombstone through it).
    TreeRead {
        pid: u8,
    },
    Reclaim,
}

/// Values: small ones (collide), and the reserved top of the range.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Small(u8),
    Top(u8),
}

impl Value {
    fn get(self) -> usize {
        match self {
            Value::Small(v) => v as usize % 8,
            Value::Top(d) => usize::MAX - (d as usize % 4),
        }
    }
}

fn id(x: u8) -> usize {
    x as usize % (CAP + 8)
}

fn count(x: u8) -> usize {
    x as usize % 70
}

fn run_bitmap(ops: &[BitOp]) {
    let bits = Box::new(Bits::new());
    // The IDs taken, over the whole bitmap.
    let mut m = IdShadow::new(0, CAP);
    for op in ops.iter().take(MAX_OPS) {
        match *op {
            BitOp::Lowest { floor } => {
                let floor = id(floor);
                let got = bits.alloc_lowest_from(floor);
                assert_eq!(got, m.lowest_free_from(floor), "alloc_lowest_from({floor})");
                if let Some(i) = got {
                    m.take(i);
                }
            }
            BitOp::Specific { id: i } => {
                let i = id(i);
                let expect = if i >= CAP {
                    Err(BitmapError::OutOfRange)
                } else if m.contains(i) {
                    Err(BitmapError::AlreadyAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(bits.alloc_specific(i), expect, "alloc_specific({i})");
                if expect.is_ok() {
                    m.take(i);
                }
            }
            BitOp::Contiguous {
                count: n,
                align,
                floor,
            } => {
                let (n, floor) = (count(n), id(floor));
                let align = if align % 8 == 7 { 3 } else { 1 << (align % 8) };
                let got = bits.alloc_contiguous(n, align, floor);
                let expect = if n == 0 || !align.is_power_of_two() {
                    Err(BitmapError::InvalidArgument)
                } else {
                    Ok(m.first_fit_range(n, align, floor))
                };
                assert_eq!(got, expect, "alloc_contiguous({n}, {align}, {floor})");
                if let Ok(Some(s)) = got {
                    m.take_range(s, s + n);
                }
            }
            BitOp::Range { start, count: n } => {
                let (s, n) = (id(start), count(n));
                let expect = if n == 0 {
                    Err(BitmapError::InvalidArgument)
                } else if s + n > CAP {
                    Err(BitmapError::OutOfRange)
                } else if m.highest_owned_in(s, s + n).is_some() {
                    Err(BitmapError::AlreadyAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(bits.alloc_range(s, n), expect, "alloc_range({s}, {n})");
                if expect.is_ok() {
                    m.take_range(s, s + n);
                }
            }
            BitOp::Free { id: i } => {
                let i = id(i);
                let expect = if i >= CAP {
                    Err(BitmapError::OutOfRange)
                } else if !m.contains(i) {
                    Err(BitmapError::NotAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(bits.free(i), expect, "free({i})");
                if expect.is_ok() {
                    m.release(i);
                }
            }
            BitOp::FreeRange { start, count: n } => {
                let (s, n) = (id(start), count(n));
                let expect = if n == 0 {
                    Err(BitmapError::InvalidArgument)
                } else if s + n > CAP {
                    Err(BitmapError::OutOfRange)
                } else if !m.all_owned(s, s + n) {
                    Err(BitmapError::NotAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(bits.free_range(s, n), expect, "free_range({s}, {n})");
                if expect.is_ok() {
                    m.release_range(s, s + n);
                }
            }
        }
        bits.check().expect("AtomicBitmap::check");
        assert_eq!(bits.count_allocated(), m.len());
        for i in 0..CAP {
            assert_eq!(bits.contains(i), m.contains(i), "contains({i})");
        }
    }
}

fn run_pids(policy: u8, reserved: u8, ops: &[PidOp]) {
    let policy = [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree][policy as usize % 3];
    let reserved = reserved as usize % 8;
    let mut pids = Box::new(Pids::with_reserved(reserved).with_policy(policy));
    let (mut lo, mut hi) = (reserved, CAP);
    // The IDs taken; its domain is the managed range `lo..hi`.
    let mut m = IdShadow::new(lo, hi);
    for op in ops.iter().take(MAX_OPS) {
        let managed = |i: usize, lo: usize, hi: usize| {
            if i < lo {
                Err(BitmapError::Reserved)
            } else if i >= hi {
                Err(BitmapError::OutOfRange)
            } else {
                Ok(())
            }
        };
        match *op {
            PidOp::Allocate => {
                let got = pids.allocate_raw();
                match got {
                    Some(i) => {
                        assert!(lo <= i && i < hi && !m.contains(i), "allocate_raw: {i}");
                        if policy == Policy::LowestFree {
                            assert_eq!(Some(i), m.lowest_free_from(lo));
                        }
                        m.take(i);
                    }
                    None => assert_eq!(m.lowest_free_from(lo), None, "allocate_raw: None"),
                }
            }
            PidOp::Handle => {
                let before = pids.used();
                if let Some(pid) = pids.allocate() {
                    assert!(!m.contains(*pid) && pids.contains(*pid));
                    let n = *pid;
                    drop(pid);
                    assert!(!pids.contains(n));
                }
                assert_eq!(pids.used(), before);
            }
            PidOp::Specific { id: i } | PidOp::Fixed { id: i } => {
                let i = id(i);
                let expect = managed(i, lo, hi).and_then(|()| {
                    if m.contains(i) {
                        Err(BitmapError::AlreadyAllocated)
                    } else {
                        Ok(())
                    }
                });
                if let PidOp::Fixed { .. } = op {
                    let got = pids.alloc_fixed_id(i);
                    assert_eq!(got, expect.map_err(AllocError::from), "alloc_fixed_id({i})");
                } else {
                    assert_eq!(
                        pids.allocate_specific_raw(i),
                        expect,
                        "allocate_specific({i})"
                    );
                }
                if expect.is_ok() {
                    m.take(i);
                }
            }
            PidOp::Free { id: i } => {
                let i = id(i);
                let expect = managed(i, lo, hi).and_then(|()| {
                    if m.contains(i) {
                        Ok(())
                    } else {
                        Err(BitmapError::NotAllocated)
                    }
                });
                assert_eq!(pids.free(i), expect, "free({i})");
                if expect.is_ok() {
                    m.release(i);
                }
            }
            PidOp::AllocId { count: n, align } => {
                let n = count(n);
                let align = if align % 8 == 7 { 6 } else { 1 << (align % 8) };
                let got = pids.alloc_id(n, align);
                if n == 0 || !align.is_power_of_two() {
                    assert_eq!(got, Err(AllocError::InvalidParam));
                    continue;
                }
                // IDs outside `lo..hi` are held in the bitmap: the search stays in the domain.
                let expect = m.first_fit_range(n, align, lo);
                assert_eq!(got.ok(), expect, "alloc_id({n}, {align})");
                if let Ok(s) = got {
                    m.take_range(s, s + n);
                }
            }
            PidOp::DeallocId { start, count: n } => {
                let (s, n) = (id(start), count(n));
                let expect = if s < lo || s + n > hi || n == 0 {
                    Err(AllocError::InvalidParam)
                } else if !m.all_owned(s, s + n) {
                    Err(AllocError::NotAllocated)
                } else {
                    Ok(())
                };
                assert_eq!(pids.dealloc_id(s, n), expect, "dealloc_id({s}, {n})");
                if expect.is_ok() {
                    m.release_range(s, s + n);
                }
            }
            PidOp::Init { start, size } => {
                let (s, z) = (id(start), size as usize);
                BaseAllocator::init(&mut *pids, s, z);
                lo = s.min(CAP);
                hi = lo.saturating_add(z).min(CAP);
                m.reset(lo, hi);
            }
            PidOp::AddMemory { start, size } => {
                let (s, z) = (id(start), size as usize % 40);
                let e = s + z;
                let got = BaseAllocator::add_memory(&mut *pids, s, z);
                let expect = if z == 0 || e > CAP {
                    Err(AllocError::InvalidParam)
                } else if lo == hi && s <= lo && e >= hi {
                    Ok((s, e))
                } else if s < hi && e > lo {
                    Err(AllocError::MemoryOverlap)
                } else if e == lo {
                    Ok((s, hi))
                } else if s == hi {
                    Ok((lo, e))
                } else {
                    Err(AllocError::InvalidParam)
                };
                assert_eq!(
                    got,
                    expect.map(|_| ()),
                    "add_memory({s}, {z}) on {lo}..{hi}"
                );
                if let Ok((a, b)) = expect {
                    (lo, hi) = (a, b);
                    m.grow(lo, hi);
                }
            }
        }
        pids.check().expect("PidAllocator::check");
        assert_eq!(pids.used(), m.len(), "used");
        assert_eq!(pids.size(), hi - lo, "size");
        assert_eq!(IdAllocator::available(&*pids), hi - lo - m.len());
        for i in 0..CAP + 2 {
            assert_eq!(pids.contains(i), m.contains(i), "contains({i})");
            assert_eq!(IdAllocator::is_allocated(&*pids, i), m.contains(i));
        }
    }
}

fn key(k: u16) -> usize {
    if k & 0x8000 != 0 {
        (k as usize) << 4 // may pass the capacity (4096 keys)
    } else {
        k as usize % 200
    }
}

fn run_tree(eager: bool, ops: &[TreeOp]) {
    let policy = if eager {
        Reclaim::Eager
    } else {
        Reclaim::OnDemand
    };
    let tree = Box::new(Tree::with_reclaim(NodePool::new(), policy));
    let mut m: BTreeMap<usize, usize> = BTreeMap::new();
    let cap = Tree::CAPACITY;
    for op in ops.iter().take(MAX_OPS) {
        match *op {
            TreeOp::Insert { key: k, value } | TreeOp::Replace { key: k, value } => {
                let (k, v) = (key(k), value.get());
                let replace = matches!(op, TreeOp::Replace { .. });
                let got = if replace {
                    tree.replace(k, v)
                } else {
                    tree.insert(k, v).map(|()| None)
                };
                let expect = if k >= cap {
                    Err(RadixError::KeyOutOfRange)
                } else if v == usize::MAX {
                    Err(RadixError::ReservedValue)
                } else if let (false, Some(&old)) = (replace, m.get(&k)) {
                    Err(RadixError::Occupied(old))
                } else {
                    Ok(m.get(&k).copied())
                };
                if got == Err(RadixError::NoNodes) {
                    // The pool is tiny: refused, nothing changed (the key was empty).
                    assert!(expect.is_ok() && !m.contains_key(&k), "NoNodes for {k}");
                } else if v == usize::MAX - 1
                    && expect.is_ok()
                    && got == Err(RadixError::ReservedValue)
                {
                    // The PID table's tombstone: a tree may refuse it too (issue 14, defect 6).
                } else {
                    assert_eq!(got, expect, "insert/replace({k}, {v:#x})");
                    if got.is_ok() {
                        m.insert(k, v);
                    }
                }
            }
            TreeOp::Cas {
                key: k,
                current,
                new,
            } => {
                let (k, c, n) = (key(k), current.get(), new.get());
                let got = tree.compare_exchange(k, c, n);
                let expect = if k >= cap {
                    Err(RadixError::KeyOutOfRange)
                } else if n == usize::MAX
                    || (n == usize::MAX - 1 && got == Err(RadixError::ReservedValue))
                {
                    // (`usize::MAX - 1`, the table's tombstone: a tree may refuse it too.)
                    Err(RadixError::ReservedValue)
                } else if m.get(&k) != Some(&c) {
                    Err(RadixError::Mismatch(m.get(&k).copied()))
                } else {
                    Ok(c)
                };
                assert_eq!(got, expect, "compare_exchange({k}, {c:#x}, {n:#x})");
                if got.is_ok() {
                    m.insert(k, n);
                }
            }
            TreeOp::Remove { key: k } => {
                let k = key(k);
                assert_eq!(tree.remove(k), m.remove(&k), "remove({k})");
            }
            TreeOp::RemoveIf { key: k, expected } => {
                let (k, e) = (key(k), expected.get());
                let got = tree.remove_if(k, e);
                if m.get(&k) == Some(&e) {
                    assert_eq!(got, Ok(()), "remove_if({k})");
                    m.remove(&k);
                } else {
                    assert_eq!(got, Err(RadixError::Mismatch(m.get(&k).copied())));
                }
            }
            TreeOp::Get { key: k } => {
                let k = key(k);
                assert_eq!(tree.get(k), m.get(&k).copied(), "get({k})");
                assert_eq!(tree.contains_key(k), m.contains_key(&k));
            }
            TreeOp::Reclaim => {
                tree.reclaim();
                let census = tree.check().expect("RadixTree::check");
                assert_eq!(census.empty, 0, "reclaim left empty nodes");
            }
        }
        let census = tree.check().expect("RadixTree::check");
        assert_eq!(census.values, m.len(), "census values");
        let mut seen = BTreeMap::new();
        tree.for_each(|k, v| {
            seen.insert(k, v);
        });
        assert_eq!(seen, m, "for_each");
    }
}

fn run_table(reserved: u8, eager: bool, ops: &[TableOp]) {
    // `with_options` panics (documented) for 0: reserved is 1..=8.
    let floor = 1 + reserved as usize % 8;
    let policy = if eager {
        Reclaim::Eager
    } else {
        Reclaim::OnDemand
    };
    let table = Box::new(Table::with_options(NodePool::new(), floor, policy));
    let max = Table::MAX_PID;
    let mut pids: BTreeSet<usize> = BTreeSet::new();
    let mut map: BTreeMap<usize, usize> = BTreeMap::new();
    let pid = |p: u8| p as usize % (max + 4);
    let valid = |p: usize| {
        if p == 0 {
            Err(PidError::Reserved)
        } else if p > max {
            Err(PidError::OutOfRange)
        } else {
            Ok(())
        }
    };
    for op in ops.iter().take(MAX_OPS) {
        match *op {
            TableOp::Allocate => match table.allocate_pid() {
                Some(p) => {
                    assert!(
                        p >= 1 && p <= max && !pids.contains(&p),
                        "allocate_pid: {p}"
                    );
                    pids.insert(p);
                }
                None => {
                    // The floor is 1, or the reserved range's end once the cursor wrapped.
                    assert!(
                        (floor..=max).all(|p| pids.contains(&p)),
                        "allocate_pid: None"
                    );
                }
            },
            TableOp::Specific { pid: p } => {
                let p = pid(p);
                let expect = valid(p).and_then(|()| {
                    if pids.contains(&p) {
                        Err(PidError::AlreadyAllocated)
                    } else {
                        Ok(())
                    }
                });
                assert_eq!(
                    table.allocate_specific_pid(p),
                    expect,
                    "allocate_specific_pid({p})"
                );
                if expect.is_ok() {
                    pids.insert(p);
                }
            }
            TableOp::Free { pid: p } => {
                let p = pid(p);
                let expect = valid(p).and_then(|()| {
                    if pids.contains(&p) {
                        Ok(map.get(&p).copied())
                    } else {
                        Err(PidError::NotAllocated)
                    }
                });
                assert_eq!(table.free_pid(p), expect, "free_pid({p})");
                if expect.is_ok() {
                    pids.remove(&p);
                    map.remove(&p);
                }
            }
            TableOp::Register { pid: p, value } => {
                let (p, v) = (pid(p), value.get());
                let got = table.register_pid_mapping(p, v);
                let expect = valid(p).and_then(|()| {
                    if v > MAX_PID_VALUE {
                        Err(PidError::ReservedValue)
                    } else if !pids.contains(&p) {
                        Err(PidError::NotAllocated)
                    } else if let Some(&old) = map.get(&p) {
                        Err(PidError::AlreadyMapped(old))
                    } else {
                        Ok(())
                    }
                });
                if got == Err(PidError::NoNodes) {
                    assert!(expect.is_ok(), "NoNodes for {p}");
                } else {
                    assert_eq!(got, expect, "register_pid_mapping({p}, {v:#x})");
                    if got.is_ok() {
                        map.insert(p, v);
                    }
                }
            }
            TableOp::Update { pid: p, value } => {
                let (p, v) = (pid(p), value.get());
                let expect = valid(p).and_then(|()| {
                    if v > MAX_PID_VALUE {
                        Err(PidError::ReservedValue)
                    } else {
                        map.get(&p).copied().ok_or(PidError::NotMapped)
                    }
                });
                assert_eq!(
                    table.update_pid_mapping(p, v),
                    expect,
                    "update_pid_mapping({p}, {v:#x})"
                );
                if expect.is_ok() {
                    map.insert(p, v);
                }
            }
            TableOp::Lookup { pid: p } => {
                let p = pid(p);
                assert_eq!(table.lookup_pid(p), map.get(&p).copied(), "lookup_pid({p})");
                assert_eq!(table.is_pid_allocated(p), pids.contains(&p));
            }
            TableOp::Unregister { pid: p } => {
                let p = pid(p);
                assert_eq!(
                    table.unregister_pid_mapping(p),
                    map.remove(&p),
                    "unregister({p})"
                );
            }
            TableOp::TreeRead { pid: p } => {
                let p = pid(p);
                let view = table.tree();
                assert_eq!(view.get(p), map.get(&p).copied(), "tree().get({p})");
                assert_eq!(
                    view.contains_key(p),
                    map.contains_key(&p),
                    "tree().contains_key({p})"
                );
                let mut seen = 0;
                view.for_each(|k, v| {
                    assert_eq!(map.get(&k), Some(&v), "tree().for_each saw {k} -> {v}");
                    seen += 1;
                });
                assert_eq!(seen, map.len(), "tree().for_each count");
            }
            TableOp::Reclaim => {
                table.reclaim();
            }
        }
        table.check().expect("PidTable::check");
        assert_eq!(
            table.allocated_pid_count(),
            pids.len(),
            "allocated_pid_count"
        );
        let mut seen = BTreeMap::new();
        table.for_each_mapping(|k, v| {
            seen.insert(k, v);
        });
        assert_eq!(seen, map, "for_each_mapping");
    }
    // Everything must still be freeable, returning the mappings.
    for p in pids.clone() {
        assert_eq!(
            table.free_pid(p),
            Ok(map.get(&p).copied()),
            "final free_pid({p})"
        );
    }
    table.check().expect("PidTable::check");
    assert_eq!(table.allocated_pid_count(), 0);
}

fuzz_target!(|input: Input| {
    match &input {
        Input::Bitmap(ops) => run_bitmap(ops),
        Input::Pids {
            policy,
            reserved,
            ops,
        } => run_pids(*policy, *reserved, ops),
        Input::Tree { eager, ops } => run_tree(*eager, ops),
        Input::Table {
            reserved,
            eager,
            ops,
        } => run_table(*reserved, *eager, ops),
    }
});
