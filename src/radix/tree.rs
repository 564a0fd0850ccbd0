//! [`RadixTree`]: a lock-free radix tree from integer keys to machine-word values.
//!
//! `LEVELS` levels of [`FANOUT`]-way nodes (64-way: 6 key bits a level) map keys
//! `0..FANOUT^LEVELS`: 3 levels give 2^18 keys, 4 levels 2^24 (Linux's `PID_MAX_LIMIT` is 2^22).
//! Inner slots hold child node indices, leaf slots hold values, both stored `+ 1` so that 0 is
//! "empty"; the value `usize::MAX` ([`RadixError::ReservedValue`]) cannot be stored.
//!
//! # Protocol (docs/design/04-radix-and-pid-table.md proves it; loom models in `loom-tests/radix.rs`)
//! - **Lookup** is wait-free: one `Acquire` load per level, no lock, no RMW, validated by the
//!   tree's *reuse epoch* (which every reclamation bumps before freeing nodes); if a
//!   reclamation ran meanwhile, one more walk inside a read section. At most two walks.
//! - **Updates** run inside a *read section* (a per-CPU reader count incremented on entry and
//!   decremented on exit), which no reclamation overtakes.
//! - **Counts**: each node counts its occupied slots plus in-flight insert *reservations*. An
//!   insert reserves (count + 1, refused once the node is `DEAD`) before it fills a slot. A
//!   node is *frozen* by CAS 0 -> `DEAD` (by whoever drops its count to 0 under
//!   [`Reclaim::Eager`], by the sweep of [`RadixTree::reclaim`] under [`Reclaim::OnDemand`]).
//!   A frozen node is empty forever.
//! - **Missing nodes**: an insert builds the whole missing chain privately (every node with
//!   count 1, the leaf with the insert's reservation) and publishes it with one CAS on the
//!   parent slot; the loser of a race returns its chain to the storage at once (never seen).
//! - **Reclamation**: a frozen node is unlinked from its parent by CAS (by the freezer, or by an
//!   insert that ran into it, so no one waits), the parent's count drops (which may freeze it in
//!   turn), and the node goes on a retired list. [`RadixTree::reclaim`] takes the list and frees
//!   it only when every per-CPU reader count is seen at 0 by an RMW, so no operation that could
//!   have reached those nodes is still running (a grace period). Eager removals call it; every
//!   tree calls it when its storage runs out.
//!
//! The root (node 0) is never frozen or freed.

use core::fmt;

use super::pool::{self, DEAD, FANOUT, NodeStorage, RADIX_BITS};
use crate::percpu::{PerCpu, current_cpu};
use crate::sync::atomic::{AtomicUsize, Ordering, fence};
use crate::sync::model::SIZES;
use crate::sync::{Backoff, loom_const_fn};

/// Per-CPU reader counters (CPU ids are reduced modulo this).
const READER_SLOTS: usize = SIZES.radix_reader_slots;

/// RMWs a reclamation spends on one busy reader counter before it gives up for this call.
const GRACE_POLLS: usize = SIZES.radix_grace_polls;

/// The deepest tree supported (keys must fit a `usize`).
pub const MAX_LEVELS: usize = (usize::BITS / RADIX_BITS) as usize;

/// Errors of [`RadixTree`] operations. Every operation that returns one changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RadixError {
    /// The key is not below [`RadixTree::CAPACITY`].
    KeyOutOfRange,
    /// The value is `usize::MAX`, the sentinel the tree reserves.
    ReservedValue,
    /// The key already holds this value (from [`insert`](RadixTree::insert)).
    Occupied(usize),
    /// The key held this value (or nothing), not the expected one (from
    /// [`compare_exchange`](RadixTree::compare_exchange) and
    /// [`remove_if`](RadixTree::remove_if)).
    Mismatch(Option<usize>),
    /// The node storage is exhausted (even after a reclamation attempt).
    NoNodes,
}

impl fmt::Display for RadixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyOutOfRange => f.write_str("key out of range"),
            Self::ReservedValue => f.write_str("usize::MAX is the reserved empty value"),
            Self::Occupied(v) => write!(f, "key already holds {v}"),
            Self::Mismatch(v) => write!(f, "key holds {v:?}, not the expected value"),
            Self::NoNodes => f.write_str("node storage exhausted"),
        }
    }
}

impl core::error::Error for RadixError {}

/// A broken invariant found by [`RadixTree::check`] (always a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// A reachable node's count differs from its occupied slots (or it is frozen).
    Count {
        /// The node.
        node: usize,
        /// Its count word.
        count: usize,
        /// Its occupied slots.
        occupied: usize,
    },
    /// A reachable non-root node of an [`Reclaim::Eager`] tree is empty (it should have been
    /// reclaimed).
    EmptyNode {
        /// The node.
        node: usize,
    },
    /// An inner slot names a node outside the storage or the root.
    BadChild {
        /// The parent node.
        node: usize,
    },
    /// Reachable + retired + free nodes do not add up to the nodes ever handed out, or the
    /// in-use counter disagrees.
    Conservation {
        /// Nodes reachable from the root (root included).
        reachable: usize,
        /// Nodes on the retired list.
        retired: usize,
        /// Nodes on the storage's free stack.
        free: usize,
        /// Nodes ever handed out by the storage (root included).
        fresh: usize,
        /// The storage's in-use counter.
        in_use: usize,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "radix tree invariant broken: {self:?}")
    }
}

impl core::error::Error for CheckError {}

/// What [`RadixTree::check`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Nodes reachable from the root (root included).
    pub nodes: usize,
    /// Values stored.
    pub values: usize,
    /// Nodes unlinked and waiting for a grace period.
    pub retired: usize,
    /// Reachable empty nodes other than the root (0 in an [`Reclaim::Eager`] tree at rest,
    /// and in any tree right after [`RadixTree::reclaim`] at rest).
    pub empty: usize,
}

/// When a [`RadixTree`] reclaims nodes that became empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reclaim {
    /// The operation that empties a node freezes and unlinks it at once, and removals try a
    /// grace period right away: memory follows the live keys closely, but a key that comes and
    /// goes alone in its leaf pays for a new leaf every time.
    Eager,
    /// Empty nodes stay linked (and are reused by the next insert under them) until
    /// [`RadixTree::reclaim`] sweeps them: explicitly, or when the storage runs out. The
    /// default of [`PidTable`](super::PidTable); docs/design/04-radix-and-pid-table.md has the figures.
    OnDemand,
}

/// Memory use of a tree (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadixStats {
    /// Nodes handed out by the storage and not freed (root and retired nodes included).
    pub nodes_in_use: usize,
    /// Nodes the storage holds.
    pub capacity: usize,
    /// `nodes_in_use * size_of::<Node>()`.
    pub bytes_in_use: usize,
    /// Bytes of the whole storage (`capacity * size_of::<Node>()`).
    pub bytes_reserved: usize,
}

/// A lock-free radix tree of `LEVELS` levels over the node storage `S`.
///
/// ```
/// use smpalloc::radix::{NodePool, RadixTree};
/// // 2^18 keys; a pool big enough for every key at once.
/// static TREE: RadixTree<3, NodePool<4161>> = RadixTree::new(NodePool::new());
/// TREE.insert(70_000, 7).unwrap();
/// assert_eq!(TREE.get(70_000), Some(7));
/// assert_eq!(TREE.remove(70_000), Some(7));
/// assert_eq!(TREE.stats().nodes_in_use, 1); // the empty leaf and inner node were reclaimed
/// ```
pub struct RadixTree<const LEVELS: usize, S: NodeStorage> {
    storage: S,
    /// Operations in progress per CPU slot (the read sections).
    readers: PerCpu<AtomicUsize, READER_SLOTS>,
    /// `index + 1` of the most recently retired node (0 = none); linked through `next`.
    retired: AtomicUsize,
    /// Incremented by every reclamation before it frees nodes: lookups walk without a read
    /// section and re-read it to see whether a node they may have read was reused.
    reuse: AtomicUsize,
    policy: Reclaim,
}

/// A read section: holds one per-CPU reader count up while the operation may touch nodes.
pub(super) struct Section<'a> {
    counter: &'a AtomicUsize,
}

impl Drop for Section<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: every node access of the section happens before a reclaimer's RMW that
        // reads this decrement (AcqRel), so before the nodes are reused.
        self.counter.fetch_sub(1, Ordering::Release);
    }
}

/// The nodes from the root down to the current level.
pub(super) type Path<const LEVELS: usize> = [usize; LEVELS];

impl<const LEVELS: usize, S: NodeStorage> RadixTree<LEVELS, S> {
    const VALID: () = assert!(
        LEVELS >= 1 && LEVELS <= MAX_LEVELS,
        "a RadixTree needs 1..=MAX_LEVELS levels"
    );

    /// Keys are `0..CAPACITY` (`FANOUT^LEVELS`).
    pub const CAPACITY: usize = {
        let () = Self::VALID;
        if LEVELS as u32 * RADIX_BITS >= usize::BITS {
            usize::MAX
        } else {
            1 << (LEVELS as u32 * RADIX_BITS)
        }
    };

    loom_const_fn! {
        /// An empty tree over `storage` (which must be unused: a fresh pool) that reclaims
        /// empty nodes at once ([`Reclaim::Eager`]).
        pub fn new(storage: S) -> Self {
            Self::with_reclaim(storage, Reclaim::Eager)
        }
    }

    loom_const_fn! {
        /// An empty tree over `storage` (a fresh pool) with the given reclamation policy.
        pub fn with_reclaim(storage: S, policy: Reclaim) -> Self {
            let () = Self::VALID;
            Self {
                storage,
                readers: readers(),
                retired: AtomicUsize::new(0),
                reuse: AtomicUsize::new(0),
                policy,
            }
        }
    }

    /// The tree's reclamation policy.
    pub fn reclaim_policy(&self) -> Reclaim {
        self.policy
    }

    /// The storage (for its capacity and in-use count).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    #[inline]
    fn node(&self, index: usize) -> &pool::Node {
        &self.storage.nodes()[index]
    }

    #[inline]
    fn slot_index(key: usize, level: usize) -> usize {
        (key >> (RADIX_BITS as usize * (LEVELS - 1 - level))) & (FANOUT - 1)
    }

    #[inline]
    pub(super) fn enter(&self) -> Section<'_> {
        let counter = self.readers.get(current_cpu());
        // Acquire: reads the latest value of this counter (an RMW); if a reclaimer's check
        // (AcqRel RMW) came before it, everything that reclaimer unlinked is visible to the
        // section, so the section cannot reach a node that reclaimer frees.
        counter.fetch_add(1, Ordering::Acquire);
        Section { counter }
    }

    /// The value stored under `key`; `None` if there is none or `key` is out of range.
    ///
    /// # Time Complexity
    /// Wait-free: `LEVELS` loads and two loads of the reuse epoch; after a concurrent
    /// reclamation, `LEVELS` more loads inside a read section (two RMWs on a per-CPU counter).
    #[inline]
    pub fn get(&self, key: usize) -> Option<usize> {
        if key >= Self::CAPACITY {
            return None;
        }
        // Optimistic walk, validated by the reuse epoch (docs/design/04-radix-and-pid-table.md §"Lookup (wait-free)"): Acquire so the walk
        // is not hoisted above this load.
        let epoch = self.reuse.load(Ordering::Acquire);
        let walked = self.walk(key);
        // Acquire fence: if any load of the walk read a write made to a node after its reuse,
        // the reclaimer's epoch increment happens-before the re-read below (the allocator
        // issues a Release fence after taking a node off the free stack).
        fence(Ordering::Acquire);
        if self.reuse.load(Ordering::Relaxed) == epoch {
            if let Some(found) = walked {
                return found;
            }
        }
        // A reclamation freed nodes during the walk (or the walk met a word that is no node
        // index, which only a reused node can show): walk again inside a read section, which
        // no reclamation can overtake. At most two walks: still wait-free.
        let _section = self.enter();
        self.walk(key).flatten()
    }

    /// One `Acquire` load per level: `Some(value or None)`, or `None` if a word on the way is
    /// not a node index (a node reused under an unprotected walk; never inside a section).
    #[inline]
    fn walk(&self, key: usize) -> Option<Option<usize>> {
        let nodes = self.storage.nodes();
        let mut node = 0;
        for level in 0..LEVELS {
            // Acquire: pairs with the Release CAS that published the child (its slots and
            // count were initialised before) or the value.
            let word = nodes.get(node)?.slots[Self::slot_index(key, level)].load(Ordering::Acquire);
            if word == 0 {
                return Some(None);
            }
            node = word - 1;
        }
        Some(Some(node))
    }

    /// [`get`](Self::get) without its reuse validation (and fallback), for measuring what
    /// the reclamation protection costs (benchmarks only). Memory-safe (nodes are never
    /// unmapped), but while another thread reclaims nodes it may read one that was reused and
    /// so return another key's value. Not part of the API.
    #[doc(hidden)]
    #[inline]
    pub fn get_unvalidated(&self, key: usize) -> Option<usize> {
        if key >= Self::CAPACITY {
            return None;
        }
        self.walk(key).flatten()
    }

    /// Whether `key` holds a value.
    #[inline]
    pub fn contains_key(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// Walks to the leaf of `key` without changing anything: the path, or `None` if a node
    /// on the way is missing.
    pub(super) fn find_leaf(&self, key: usize) -> Option<Path<LEVELS>> {
        let mut path = [0; LEVELS];
        for level in 0..LEVELS - 1 {
            let word =
                self.node(path[level]).slots[Self::slot_index(key, level)].load(Ordering::Acquire);
            if word == 0 {
                return None;
            }
            path[level + 1] = word - 1;
        }
        Some(path)
    }

    pub(super) fn leaf_slot(&self, path: &Path<LEVELS>, key: usize) -> &AtomicUsize {
        &self.node(path[LEVELS - 1]).slots[Self::slot_index(key, LEVELS - 1)]
    }

    /// Stores `value` under `key` if it is empty.
    ///
    /// # Errors
    /// Nothing changes on error:
    /// - [`RadixError::KeyOutOfRange`] if `key >= CAPACITY`;
    /// - [`RadixError::ReservedValue`] if `value == usize::MAX`;
    /// - [`RadixError::Occupied`] with the current value if `key` holds one;
    /// - [`RadixError::NoNodes`] if a missing node could not be allocated.
    ///
    /// # Time Complexity
    /// Lock-free: O(LEVELS) loads and a few CAS when uncontended.
    pub fn insert(&self, key: usize, value: usize) -> Result<(), RadixError> {
        self.validate(key, value)?;
        self.with_nodes(|| {
            let _section = self.enter();
            let path = self.reserve_leaf(key)?;
            // Release: publishes whatever the caller wrote before inserting (the value names
            // it); AcqRel so a failure reads the current value coherently.
            match self.leaf_slot(&path, key).compare_exchange(
                0,
                value + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Ok(()),
                Err(now) => {
                    self.release(&path, key, LEVELS - 1);
                    Err(RadixError::Occupied(now - 1))
                }
            }
        })
    }

    /// Stores `value` under `key`, returning the value it replaced (`None` if it was empty).
    ///
    /// # Errors
    /// As [`insert`](Self::insert), except that an occupied key is overwritten.
    ///
    /// # Time Complexity
    /// Lock-free: O(LEVELS) loads and a few CAS when uncontended.
    pub fn replace(&self, key: usize, value: usize) -> Result<Option<usize>, RadixError> {
        self.validate(key, value)?;
        let backoff = Backoff::new();
        loop {
            let replaced = {
                let _section = self.enter();
                self.find_leaf(key).and_then(|path| {
                    let slot = self.leaf_slot(&path, key);
                    let old = slot.load(Ordering::Acquire);
                    (old != 0
                        && slot
                            .compare_exchange(old, value + 1, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok())
                    .then(|| old - 1)
                })
            };
            if let Some(old) = replaced {
                return Ok(Some(old));
            }
            match self.insert(key, value) {
                Ok(()) => return Ok(None),
                Err(RadixError::Occupied(_)) => backoff.spin(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Replaces the value under `key` with `new` if it is `current`; returns `current`.
    ///
    /// # Errors
    /// Nothing changes on error:
    /// - [`RadixError::KeyOutOfRange`] if `key >= CAPACITY`;
    /// - [`RadixError::ReservedValue`] if `new == usize::MAX`;
    /// - [`RadixError::Mismatch`] with what the key holds (`None`: nothing) otherwise.
    ///
    /// # Time Complexity
    /// Lock-free: O(LEVELS) loads and one CAS.
    pub fn compare_exchange(
        &self,
        key: usize,
        current: usize,
        new: usize,
    ) -> Result<usize, RadixError> {
        self.validate(key, new)?;
        if current == usize::MAX {
            return Err(RadixError::Mismatch(self.get(key)));
        }
        let _section = self.enter();
        let Some(path) = self.find_leaf(key) else {
            return Err(RadixError::Mismatch(None));
        };
        match self.leaf_slot(&path, key).compare_exchange(
            current + 1,
            new + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(current),
            Err(now) => Err(RadixError::Mismatch(now.checked_sub(1))),
        }
    }

    /// Removes and returns the value under `key` (`None` if empty or out of range).
    ///
    /// # Time Complexity
    /// Lock-free: O(LEVELS) loads and one swap, plus node reclamation when a node empties.
    pub fn remove(&self, key: usize) -> Option<usize> {
        if key >= Self::CAPACITY {
            return None;
        }
        let old = {
            let _section = self.enter();
            let path = self.find_leaf(key)?;
            // AcqRel: Acquire takes over the value's payload from its inserter; Release orders
            // the emptying before the count drop below (and so before any reuse of the node).
            let old = self.leaf_slot(&path, key).swap(0, Ordering::AcqRel);
            if old == 0 {
                return None;
            }
            self.release(&path, key, LEVELS - 1);
            old - 1
        };
        self.reclaim_if_retired();
        Some(old)
    }

    /// Removes the value under `key` if it is `expected`.
    ///
    /// # Errors
    /// [`RadixError::Mismatch`] with what the key holds otherwise (nothing changes); a key out
    /// of range holds nothing.
    ///
    /// # Time Complexity
    /// Lock-free: O(LEVELS) loads and one CAS, plus node reclamation when a node empties.
    pub fn remove_if(&self, key: usize, expected: usize) -> Result<(), RadixError> {
        if key >= Self::CAPACITY {
            return Err(RadixError::Mismatch(None));
        }
        {
            let _section = self.enter();
            let Some(path) = self.find_leaf(key) else {
                return Err(RadixError::Mismatch(None));
            };
            let want = expected.wrapping_add(1);
            if want == 0 {
                return Err(RadixError::Mismatch(
                    self.leaf_slot(&path, key)
                        .load(Ordering::Acquire)
                        .checked_sub(1),
                ));
            }
            if let Err(now) = self.leaf_slot(&path, key).compare_exchange(
                want,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                return Err(RadixError::Mismatch(now.checked_sub(1)));
            }
            self.release(&path, key, LEVELS - 1);
        }
        self.reclaim_if_retired();
        Ok(())
    }

    fn validate(&self, key: usize, value: usize) -> Result<(), RadixError> {
        if key >= Self::CAPACITY {
            Err(RadixError::KeyOutOfRange)
        } else if value == usize::MAX {
            Err(RadixError::ReservedValue)
        } else {
            Ok(())
        }
    }

    /// Runs `op`; if it ran out of nodes, runs it again after a pause (a racing insert may
    /// be about to publish the node it needs, or to return its losing chain), then once more
    /// if a reclamation (outside any read section) freed some.
    fn with_nodes<T>(&self, op: impl Fn() -> Result<T, RadixError>) -> Result<T, RadixError> {
        match op() {
            Err(RadixError::NoNodes) => {
                Backoff::new().snooze();
                match op() {
                    Err(RadixError::NoNodes) if self.reclaim() > 0 => op(),
                    result => result,
                }
            }
            result => result,
        }
    }

    /// Walks to the leaf of `key`, creating missing nodes, and reserves one slot in the leaf
    /// (its count + 1). The caller must be in a read section and must fill a slot of the leaf
    /// or [`release`](Self::release) the reservation.
    #[inline]
    pub(super) fn reserve_leaf(&self, key: usize) -> Result<Path<LEVELS>, RadixError> {
        // Fast path: every node on the way exists and the leaf is live (the same loads and
        // reservation as the first pass of the general walk below).
        if let Some(path) = self.find_leaf(key) {
            if reserve(self.node(path[LEVELS - 1])) {
                return Ok(path);
            }
        }
        self.reserve_leaf_slow(key)
    }

    /// [`reserve_leaf`](Self::reserve_leaf) when a node is missing or the leaf is frozen:
    /// creates missing nodes and helps unlink frozen ones.
    pub(super) fn reserve_leaf_slow(&self, key: usize) -> Result<Path<LEVELS>, RadixError> {
        let backoff = Backoff::new();
        'restart: loop {
            let mut path = [0; LEVELS];
            let mut level = 0;
            while level < LEVELS - 1 {
                let slot = &self.node(path[level]).slots[Self::slot_index(key, level)];
                let word = slot.load(Ordering::Acquire);
                if word != 0 {
                    path[level + 1] = word - 1;
                    level += 1;
                    continue;
                }
                // Missing child: reserve a slot in this node, then publish a private chain.
                if !reserve(self.node(path[level])) {
                    self.unlink(&path, key, level);
                    backoff.spin();
                    continue 'restart;
                }
                let chain = match self.build_chain(key, level + 1) {
                    Some(chain) => chain,
                    None => {
                        self.release_out_of_line(&path, key, level);
                        // Out of nodes, but a racing insert may have installed this child
                        // meanwhile (its private chain is what used the last nodes): use it.
                        let now = slot.load(Ordering::Acquire);
                        if now == 0 {
                            return Err(RadixError::NoNodes);
                        }
                        path[level + 1] = now - 1;
                        level += 1;
                        continue;
                    }
                };
                // Release: the chain's slots and counts were written before; AcqRel so a
                // failure reads the winner's chain with Acquire.
                match slot.compare_exchange(0, chain + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        // Our chain carries the leaf reservation already.
                        let mut node = chain;
                        for (below, entry) in path.iter_mut().enumerate().skip(level + 1) {
                            *entry = node;
                            if below + 1 < LEVELS {
                                // Relaxed: our own writes (the chain is pinned by our
                                // reservation in its leaf, so no one unlinks it).
                                node = self.node(node).slots[Self::slot_index(key, below)]
                                    .load(Ordering::Relaxed)
                                    - 1;
                            }
                        }
                        return Ok(path);
                    }
                    Err(winner) => {
                        // Never published: back to the storage at once.
                        self.discard_chain(key, level + 1, chain);
                        self.release_out_of_line(&path, key, level);
                        path[level + 1] = winner - 1;
                        level += 1;
                    }
                }
            }
            if reserve(self.node(path[LEVELS - 1])) {
                return Ok(path);
            }
            // The leaf is frozen: help unlink it, then retry from the root.
            self.unlink(&path, key, LEVELS - 1);
            backoff.spin();
        }
    }

    /// Reserves a slot in the leaf of `path` (from [`find_leaf`](Self::find_leaf) in the
    /// caller's read section): `reserve_leaf`'s own last step after the same walk. `false` if
    /// the leaf is frozen (then [`reserve_leaf_slow`](Self::reserve_leaf_slow) helps unlink it
    /// and walks again).
    #[inline]
    pub(super) fn reserve_in(&self, path: &Path<LEVELS>) -> bool {
        reserve(self.node(path[LEVELS - 1]))
    }

    /// Allocates the nodes for levels `from..LEVELS` along `key`, each inner one pointing at
    /// the next with count 1, the leaf empty with count 1 (the caller's reservation). Returns
    /// the top node; `None` (nothing kept) if the storage ran out.
    fn build_chain(&self, key: usize, from: usize) -> Option<usize> {
        let mut below = 0; // `index + 1` of the node built one level down
        for level in (from..LEVELS).rev() {
            let Some(index) = pool::alloc(&self.storage) else {
                if below != 0 {
                    self.discard_chain(key, level + 1, below - 1);
                }
                return None;
            };
            let node = self.node(index);
            // Relaxed: the publishing CAS (Release) orders these before any reader.
            if below != 0 {
                node.slots[Self::slot_index(key, level)].store(below, Ordering::Relaxed);
            }
            node.count.store(1, Ordering::Relaxed);
            below = index + 1;
        }
        Some(below - 1)
    }

    /// Frees a chain built by [`build_chain`](Self::build_chain) that was never published.
    fn discard_chain(&self, key: usize, from: usize, top: usize) {
        let mut node = top;
        for level in from..LEVELS {
            let slot = &self.node(node).slots[Self::slot_index(key, level)];
            let child = slot.swap(0, Ordering::Relaxed);
            self.node(node).count.store(0, Ordering::Relaxed);
            pool::free(&self.storage, node);
            if level + 1 == LEVELS {
                break;
            }
            node = child - 1;
        }
    }

    /// Drops one slot (or reservation) from the count of `path[level]`; if that empties a
    /// non-root node, freezes it and unlinks it.
    #[inline]
    pub(super) fn release(&self, path: &Path<LEVELS>, key: usize, level: usize) {
        let node = self.node(path[level]);
        // AcqRel: Release orders our slot change before the drop (so before a freeze that
        // reads it, and any reuse of the node); Acquire so the freezer sees every slot emptied.
        let before = node.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before & !DEAD != 0, "count underflow");
        if before == 1 && level > 0 && self.policy == Reclaim::Eager {
            self.freeze_emptied(path, key, level);
        }
    }

    /// [`release`](Self::release) kept out of line, for the rare paths of
    /// [`reserve_leaf_slow`](Self::reserve_leaf_slow): inlined there, its eager half made
    /// the walk's common path spill registers (about 80 more instructions a call under
    /// [`Reclaim::Eager`], cachegrind).
    #[inline(never)]
    fn release_out_of_line(&self, path: &Path<LEVELS>, key: usize, level: usize) {
        self.release(path, key, level);
    }

    /// The eager half of [`release`](Self::release): freezes the node `path[level]` that the
    /// caller's drop emptied (if no reservation came in since) and unlinks it.
    #[inline(never)]
    fn freeze_emptied(&self, path: &Path<LEVELS>, key: usize, level: usize) {
        if self
            .node(path[level])
            .count
            .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.unlink(path, key, level);
        }
    }

    /// Unlinks the frozen node `path[level]` from its parent (if no one did yet) and retires
    /// it. Called by the freezer and by any insert that finds the node frozen.
    fn unlink(&self, path: &Path<LEVELS>, key: usize, level: usize) {
        if level == 0 {
            return; // the root is never frozen; a reservation there cannot fail
        }
        let slot = &self.node(path[level - 1]).slots[Self::slot_index(key, level - 1)];
        // AcqRel: Acquire the node's frozen state; Release the unlink to the reclaimer (through
        // the retired list) and to the parent's freezer (through its count). A failure means
        // another thread unlinked it (a frozen node is never linked again).
        if slot
            .compare_exchange(path[level] + 1, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.retire(path[level]);
            self.release(path, key, level - 1);
        }
    }

    /// Puts an unlinked node on the retired list.
    fn retire(&self, index: usize) {
        let node = self.node(index);
        let mut head = self.retired.load(Ordering::Relaxed);
        loop {
            node.next.store(head, Ordering::Relaxed);
            // Release: the unlink (and the node's emptiness) before the reclaimer's take.
            match self.retired.compare_exchange_weak(
                head,
                index + 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    #[inline]
    pub(super) fn reclaim_if_retired(&self) {
        if self.policy == Reclaim::Eager && self.retired.load(Ordering::Relaxed) != 0 {
            self.reclaim();
        }
    }

    /// Reclaims empty nodes: in a [`Reclaim::OnDemand`] tree it first sweeps the tree,
    /// freezing and unlinking every empty node (children before parents, so a parent that
    /// empties is taken too); then, in both policies, it frees the retired (unlinked) nodes if
    /// a grace period has passed: every per-CPU reader count is read as 0 by an RMW after the
    /// nodes were taken off the list. Otherwise it puts them back for a later call. Returns
    /// the number of nodes freed. Non-blocking and safe to call at any time from any thread;
    /// the tree calls it after removals (eager) and when it runs out of nodes.
    ///
    /// # Time Complexity
    /// O(reader slots + retired nodes), plus O(reachable nodes * FANOUT) for the sweep.
    pub fn reclaim(&self) -> usize {
        if self.policy == Reclaim::OnDemand {
            let _section = self.enter();
            let mut path = [0; LEVELS];
            self.sweep(&mut path, 0, 0);
        }
        self.free_retired()
    }

    /// Freezes and unlinks every empty node below `path[level]` (whose key prefix is
    /// `prefix`), then the node itself if it is empty and not the root. In a read section.
    fn sweep(&self, path: &mut Path<LEVELS>, level: usize, prefix: usize) {
        if level + 1 < LEVELS {
            for i in 0..FANOUT {
                let word = self.node(path[level]).slots[i].load(Ordering::Acquire);
                if word != 0 {
                    path[level + 1] = word - 1;
                    self.sweep(path, level + 1, prefix << RADIX_BITS | i);
                }
            }
        }
        let node = self.node(path[level]);
        // A key inside this node's range (for the slot indices of the levels above).
        let key = prefix << (RADIX_BITS as usize * (LEVELS - level));
        if level > 0
            && node.count.load(Ordering::Relaxed) == 0
            && node
                .count
                .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.unlink(path, key, level);
        }
    }

    /// The grace-period half of [`reclaim`](Self::reclaim).
    fn free_retired(&self) -> usize {
        // AcqRel: Acquire the retirements (and the unlinks before them).
        let batch = self.retired.swap(0, Ordering::AcqRel);
        if batch == 0 {
            return 0;
        }
        // Each counter must be read as 0 by one RMW after the batch was taken; not all at the
        // same moment (the proof in docs/design/04-radix-and-pid-table.md §"Reclamation" goes counter by counter), so a busy counter
        // is polled a few times: sections are short, and under constant updates from other
        // CPUs all counters are rarely 0 at once. AcqRel RMW (reads the latest count): Release
        // so a section that starts after it sees the unlinks; Acquire so every section that
        // ended before it happens-before the frees.
        let quiet = self.readers.iter().all(|counter| {
            let backoff = Backoff::new();
            for _ in 0..GRACE_POLLS {
                if counter.fetch_add(0, Ordering::AcqRel) == 0 {
                    return true;
                }
                backoff.spin();
            }
            false
        });
        if !quiet {
            self.put_back(batch);
            return 0;
        }
        // Before any node of the batch can be reused: a lookup that started before this and
        // reads a reused node's new contents sees the increment when it validates (Release:
        // ordered before the frees' pushes, and through them before the reuse).
        self.reuse.fetch_add(1, Ordering::Release);
        let mut freed = 0;
        let mut at = batch;
        while at != 0 {
            let next = self.node(at - 1).next.load(Ordering::Relaxed);
            self.node(at - 1).count.store(0, Ordering::Relaxed);
            pool::free(&self.storage, at - 1);
            freed += 1;
            at = next;
        }
        freed
    }

    /// Pushes a taken batch (a linked list from `batch`) back on the retired list.
    fn put_back(&self, batch: usize) {
        let mut tail = batch;
        loop {
            let next = self.node(tail - 1).next.load(Ordering::Relaxed);
            if next == 0 {
                break;
            }
            tail = next;
        }
        let mut head = self.retired.load(Ordering::Relaxed);
        loop {
            self.node(tail - 1).next.store(head, Ordering::Relaxed);
            match self.retired.compare_exchange_weak(
                head,
                batch,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Calls `f(key, value)` for every stored value in key order (a snapshot under
    /// concurrency: each value was present at some moment during the call).
    ///
    /// # Time Complexity
    /// O(reachable nodes * FANOUT).
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let _section = self.enter();
        self.visit(0, 0, 0, &mut f);
    }

    fn visit(&self, index: usize, level: usize, prefix: usize, f: &mut impl FnMut(usize, usize)) {
        for (i, slot) in self.node(index).slots.iter().enumerate() {
            let word = slot.load(Ordering::Acquire);
            if word == 0 {
                continue;
            }
            let key = prefix << RADIX_BITS | i;
            if level + 1 == LEVELS {
                f(key, word - 1);
            } else {
                self.visit(word - 1, level + 1, key, f);
            }
        }
    }

    /// Memory use: nodes in use (root and retired nodes included) and bytes.
    pub fn stats(&self) -> RadixStats {
        let nodes_in_use = self.storage.nodes_in_use();
        let capacity = self.storage.capacity();
        let size = core::mem::size_of::<pool::Node>();
        RadixStats {
            nodes_in_use,
            capacity,
            bytes_in_use: nodes_in_use * size,
            bytes_reserved: capacity * size,
        }
    }

    /// Checks every invariant; call it only while no operation runs (tests call it after
    /// every step). Reachable nodes have count = occupied slots and are never empty (the
    /// root excepted), and reachable + retired + free nodes = nodes ever handed out = the
    /// in-use counter + free nodes.
    ///
    /// # Errors
    /// The first broken invariant found.
    ///
    /// # Time Complexity
    /// O(reachable nodes * FANOUT + retired + free).
    pub fn check(&self) -> Result<Census, CheckError> {
        let mut census = Census {
            nodes: 0,
            values: 0,
            retired: 0,
            empty: 0,
        };
        self.check_node(0, 0, &mut census)?;
        let mut at = self.retired.load(Ordering::Acquire);
        while at != 0 && census.retired <= self.storage.capacity() {
            census.retired += 1;
            at = self.node(at - 1).next.load(Ordering::Relaxed);
        }
        let (free, fresh) = pool::census(&self.storage);
        let in_use = self.storage.nodes_in_use();
        if census.nodes + census.retired + free != fresh || in_use + free != fresh {
            return Err(CheckError::Conservation {
                reachable: census.nodes,
                retired: census.retired,
                free,
                fresh,
                in_use,
            });
        }
        Ok(census)
    }

    fn check_node(
        &self,
        index: usize,
        level: usize,
        census: &mut Census,
    ) -> Result<(), CheckError> {
        census.nodes += 1;
        let node = self.node(index);
        let count = node.count.load(Ordering::Acquire);
        let mut occupied = 0;
        for slot in &node.slots {
            let word = slot.load(Ordering::Acquire);
            if word == 0 {
                continue;
            }
            occupied += 1;
            if level + 1 == LEVELS {
                census.values += 1;
            } else {
                let child = word - 1;
                if child == 0 || child >= self.storage.capacity() {
                    return Err(CheckError::BadChild { node: index });
                }
                self.check_node(child, level + 1, census)?;
            }
        }
        if count != occupied {
            return Err(CheckError::Count {
                node: index,
                count,
                occupied,
            });
        }
        if occupied == 0 && index != 0 {
            if self.policy == Reclaim::Eager {
                return Err(CheckError::EmptyNode { node: index });
            }
            census.empty += 1;
        }
        Ok(())
    }
}

/// Reserves a slot in `node` (count + 1) unless it is frozen.
#[inline]
fn reserve(node: &pool::Node) -> bool {
    let mut count = node.count.load(Ordering::Relaxed);
    loop {
        if count & DEAD != 0 {
            return false;
        }
        // AcqRel: the count is a single RMW chain; freeze (CAS 0 -> DEAD) and reserve exclude
        // each other by it, and Acquire sees the node's state as of the last drop.
        match node.count.compare_exchange_weak(
            count,
            count + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now) => count = now,
        }
    }
}

#[cfg(not(loom))]
const fn readers() -> PerCpu<AtomicUsize, READER_SLOTS> {
    PerCpu::new([const { AtomicUsize::new(0) }; READER_SLOTS])
}

#[cfg(loom)]
fn readers() -> PerCpu<AtomicUsize, READER_SLOTS> {
    PerCpu::from_fn(|_| AtomicUsize::new(0))
}

impl<const LEVELS: usize, S: NodeStorage> fmt::Debug for RadixTree<LEVELS, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadixTree")
            .field("levels", &LEVELS)
            .field("stats", &self.stats())
            .finish()
    }
}
