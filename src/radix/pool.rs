//! Node storage for [`RadixTree`](super::RadixTree): a fixed array of nodes ([`NodePool`], no
//! heap, `const`-constructible) or one heap allocation sized at run time ([`HeapNodePool`],
//! feature `alloc`).
//!
//! Nodes are named by their index in the array, so a tree slot holds `index + 1` (0 = empty)
//! and no pointer ever crosses an atomic word. Node 0 is the tree's root and is never freed.
//!
//! # Allocation
//! Never-used nodes are handed out by a bump counter (`bumped`); freed nodes go on a Treiber
//! stack threaded through each node's `next` word. The stack head packs a 32-bit tag with the
//! top index, and every pop and push bumps the tag, so a pop that read `next` of a node that was
//! popped and pushed back meanwhile fails its CAS (no ABA). The `next` word is an atomic, so a
//! stale read of it is only a wrong guess that the tag check rejects. A node only reaches this
//! stack after its tree's grace period (see `tree.rs`), so no reader can still be inside it.

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::loom_const_fn;
use crate::sync::model::SIZES;

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

/// Bits of key consumed per tree level: 6 (64-way nodes); 1 (2-way) under loom so models stay
/// small.
pub const RADIX_BITS: u32 = SIZES.radix_bits;

/// Children (or values) per node: `1 << RADIX_BITS`.
pub const FANOUT: usize = 1 << RADIX_BITS;

/// The number of nodes a tree of `levels` levels needs when every key is present:
/// `1 + FANOUT + ... + FANOUT^(levels - 1)`; 4,161 for the 3-level, 2^18-key tree.
pub const fn full_tree_nodes(levels: usize) -> usize {
    let mut total = 0;
    let mut width = 1;
    let mut level = 0;
    while level < levels {
        total += width;
        width *= FANOUT;
        level += 1;
    }
    total
}

/// One tree node: `FANOUT` slots plus its live-slot count and a link word.
///
/// - `slots[i]`: in an inner node, `child index + 1`; in a leaf, `value + 1`; 0 means empty.
/// - `count`: occupied slots plus in-flight insert reservations, or a frozen tag (top bit).
/// - `next`: the free-stack or retired-list link (meaningful only while the node is on one).
///
/// An all-zero node is an empty, live node: pools are zero-initialised (`.bss` in a kernel).
pub struct Node {
    pub(crate) slots: [AtomicUsize; FANOUT],
    pub(crate) count: AtomicUsize,
    pub(crate) next: AtomicUsize,
}

/// The `count` tag of a frozen node: no insert may reserve in it again.
pub(crate) const DEAD: usize = 1 << (usize::BITS - 1);

impl Node {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                slots: crate::sync::atomic::usize_array(0),
                count: AtomicUsize::new(0),
                next: AtomicUsize::new(0),
            }
        }
    }
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The bookkeeping every storage shares: free stack, bump counter, nodes in use.
#[derive(Debug)]
pub(crate) struct FreeList {
    /// `tag << 32 | (index + 1)` of the top free node; index part 0 = empty stack.
    head: AtomicU64,
    /// Nodes `1..=bumped` have been handed out at least once (node 0, the root, is in use from
    /// the start). Counted without the root, like `in_use`, so that a new storage is all zeros
    /// and a `static` pool lands in `.bss`, not in the kernel image.
    bumped: AtomicUsize,
    /// Nodes handed out and not freed, root excluded.
    in_use: AtomicUsize,
}

const INDEX_MASK: u64 = (1 << 32) - 1;

impl FreeList {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                head: AtomicU64::new(0),
                bumped: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
            }
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Where a [`RadixTree`](super::RadixTree) keeps its nodes: [`NodePool`] or [`HeapNodePool`].
/// Sealed: the tree relies on the storage's free-stack protocol.
pub trait NodeStorage: sealed::Sealed + Sync {
    /// All nodes; node 0 is the root.
    #[doc(hidden)]
    fn nodes(&self) -> &[Node];
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn free_list(&self) -> &FreeList;

    /// The number of nodes this storage holds (root included).
    fn capacity(&self) -> usize {
        self.nodes().len()
    }

    /// Nodes handed out and not yet freed (root included).
    fn nodes_in_use(&self) -> usize {
        self.free_list().in_use.load(Ordering::Relaxed) + 1
    }
}

/// Takes a node (never the root). `None` when every node is in use.
pub(crate) fn alloc<S: NodeStorage + ?Sized>(storage: &S) -> Option<usize> {
    let list = storage.free_list();
    let nodes = storage.nodes();
    // Acquire: the `next` word and the emptied slots of the top node were written before the
    // push that published it (Release).
    let mut head = list.head.load(Ordering::Acquire);
    loop {
        let top = (head & INDEX_MASK) as usize;
        if top == 0 {
            break;
        }
        let next = nodes[top - 1].next.load(Ordering::Relaxed) as u64;
        let tag = (head >> 32).wrapping_add(1);
        match list.head.compare_exchange_weak(
            head,
            tag << 32 | next,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // Release fence: every write the caller makes to the reused node comes after
                // it, so an optimistic lookup that reads such a write (and then issues its
                // Acquire fence) also sees the reclaimer's epoch increment (tree.rs `get`).
                fence(Ordering::Release);
                list.in_use.fetch_add(1, Ordering::Relaxed);
                return Some(top - 1);
            }
            Err(now) => head = now,
        }
    }
    let mut bumped = list.bumped.load(Ordering::Relaxed);
    loop {
        let fresh = bumped + 1;
        if fresh >= nodes.len() {
            return None;
        }
        // Relaxed: a never-used node is all zeros since construction.
        match list
            .bumped
            .compare_exchange_weak(bumped, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                list.in_use.fetch_add(1, Ordering::Relaxed);
                return Some(fresh);
            }
            Err(now) => bumped = now,
        }
    }
}

/// Returns node `index` (all slots empty) to the storage.
pub(crate) fn free<S: NodeStorage + ?Sized>(storage: &S, index: usize) {
    debug_assert!(index != 0, "the root is never freed");
    let list = storage.free_list();
    let node = &storage.nodes()[index];
    let mut head = list.head.load(Ordering::Relaxed);
    loop {
        node.next
            .store((head & INDEX_MASK) as usize, Ordering::Relaxed);
        let tag = (head >> 32).wrapping_add(1);
        // Release: publishes `next` and the node's emptied slots to the next pop (Acquire).
        match list.head.compare_exchange_weak(
            head,
            tag << 32 | (index as u64 + 1),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                list.in_use.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Err(now) => head = now,
        }
    }
}

/// The free-stack length and the number of nodes ever handed out, root included (quiescent
/// use only, for `check`).
pub(crate) fn census<S: NodeStorage + ?Sized>(storage: &S) -> (usize, usize) {
    let list = storage.free_list();
    let nodes = storage.nodes();
    let mut free = 0;
    let mut at = (list.head.load(Ordering::Acquire) & INDEX_MASK) as usize;
    while at != 0 && free <= nodes.len() {
        free += 1;
        at = nodes[at - 1].next.load(Ordering::Relaxed);
    }
    (free, list.bumped.load(Ordering::Relaxed) + 1)
}

/// `N` nodes in one array: no heap, `const`-constructible, zero-initialised (so a `static`
/// pool lands in `.bss`). A full 3-level tree needs [`full_tree_nodes`]`(3)` = 4,161 nodes
/// (`FULL_TREE_3` below), 2.2 MB with 64-bit words.
pub struct NodePool<const N: usize> {
    nodes: [Node; N],
    list: FreeList,
}

impl<const N: usize> NodePool<N> {
    const VALID: () = assert!(
        N >= 1 && (N as u64) < INDEX_MASK,
        "a NodePool needs 1..2^32-1 nodes (node 0 is the root)"
    );

    /// An empty pool (only the root in use).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::VALID;
        Self {
            nodes: [const { Node::new() }; N],
            list: FreeList::new(),
        }
    }

    /// An empty pool (only the root in use).
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::VALID;
        Self {
            nodes: core::array::from_fn(|_| Node::new()),
            list: FreeList::new(),
        }
    }
}

impl<const N: usize> Default for NodePool<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for NodePool<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NodePool")
            .field("capacity", &N)
            .field("in_use", &self.nodes_in_use())
            .finish()
    }
}

impl<const N: usize> sealed::Sealed for NodePool<N> {}

impl<const N: usize> NodeStorage for NodePool<N> {
    #[inline]
    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[allow(private_interfaces)]
    fn free_list(&self) -> &FreeList {
        &self.list
    }
}

impl<S: NodeStorage + ?Sized> sealed::Sealed for &S {}

/// A storage lent by reference, so that a tree or [`PidTable`](crate::PidTable) (whose own
/// fields are not all zero) can live in `.data` while its large pool, a separate `static`
/// [`NodePool`], stays in `.bss`. A pool must serve one tree only: node 0 is every tree's root.
impl<S: NodeStorage + ?Sized> NodeStorage for &S {
    #[inline]
    fn nodes(&self) -> &[Node] {
        (**self).nodes()
    }

    #[allow(private_interfaces)]
    fn free_list(&self) -> &FreeList {
        (**self).free_list()
    }
}

/// A node array allocated once on the heap with a capacity chosen at run time (feature
/// `alloc`): for 4-level trees, whose full size (266,305 nodes, 140 MB) no kernel reserves.
/// It does not grow; dropping it frees every node at once.
#[cfg(feature = "alloc")]
pub struct HeapNodePool {
    nodes: Box<[Node]>,
    list: FreeList,
}

#[cfg(feature = "alloc")]
impl HeapNodePool {
    /// A pool of `capacity` nodes (root included).
    ///
    /// # Panics
    /// If `capacity` is 0 or not below 2^32 - 1.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity >= 1 && (capacity as u64) < INDEX_MASK,
            "a HeapNodePool needs 1..2^32-1 nodes"
        );
        Self {
            nodes: (0..capacity).map(|_| Node::new()).collect(),
            list: FreeList::new(),
        }
    }
}

#[cfg(feature = "alloc")]
impl core::fmt::Debug for HeapNodePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HeapNodePool")
            .field("capacity", &self.nodes.len())
            .field("in_use", &self.nodes_in_use())
            .finish()
    }
}

#[cfg(feature = "alloc")]
impl sealed::Sealed for HeapNodePool {}

#[cfg(feature = "alloc")]
impl NodeStorage for HeapNodePool {
    #[inline]
    fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    #[allow(private_interfaces)]
    fn free_list(&self) -> &FreeList {
        &self.list
    }
}
