//! [`PidTable`]: PID allocation ([`AtomicBitmap`], strict next-fit) plus the PID -> value
//! mapping ([`RadixTree`]), lock-free, in one value that can live in a `static`.
//!
//! # Bitmap and mapping under concurrency (docs/design/04-radix-and-pid-table.md; loom `free_pid_races_register`)
//! The bitmap says who owns a PID; the mapping may only exist for an allocated PID. The two are
//! separate words, so their updates are ordered by a protocol rather than a lock:
//!
//! - [`free_pid`](PidTable::free_pid) first replaces the mapping (or its absence) with a
//!   *tombstone*, then clears the bit, then removes the tombstone. While the tombstone is
//!   there no register, update or second free can touch the PID's mapping.
//! - [`register_pid_mapping`](PidTable::register_pid_mapping) checks the bit, inserts, then
//!   re-checks the bit; if the PID was freed in between it removes its own value again (only
//!   if still its own) and fails with [`PidError::NotAllocated`]; if the free already took the
//!   value, the register came first and succeeds. Meeting a tombstone, it waits for that free
//!   to finish (two more steps) and starts over.
//!
//! So once both calls return, either the register came first (it returned `Ok` and the free
//! returned its value) or it failed and the free returned no value; a mapping never outlives
//! its PID's bit. (A lookup racing a failing register may see its value for that moment.)
//! A caller that uses a PID after freeing it while someone else re-allocates the same number
//! cannot be told apart from the new owner (the same holds for every ID allocator); next-fit
//! makes that window a full lap of the PID space.

use core::fmt;

use super::pool::NodeStorage;
use super::tree::{self, Census, RadixStats, RadixTree, Reclaim};
use crate::bitmap::{
    self as bitmap, AtomicBitmap, BITS, BitmapError, CyclicCursor, DEFAULT_SUMMARY_WORDS,
};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Backoff, loom_const_fn};

/// The mapping value a free in progress puts in place of the PID's mapping.
const TOMBSTONE: usize = usize::MAX - 1;
/// The tombstone as the tree stores it (values are stored `+ 1`).
const TOMB_WORD: usize = TOMBSTONE + 1;

/// The largest value a [`PidTable`] maps a PID to (`usize::MAX - 2`: two values are reserved,
/// the tree's empty sentinel and the table's tombstone).
pub const MAX_PID_VALUE: usize = usize::MAX - 2;

/// Errors of [`PidTable`] operations. Every operation that returns one changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PidError {
    /// PID 0, reserved for the kernel.
    Reserved,
    /// The PID is above [`PidTable::MAX_PID`].
    OutOfRange,
    /// The PID is not allocated (or is being freed).
    NotAllocated,
    /// The PID is already allocated.
    AlreadyAllocated,
    /// The PID already maps to this value.
    AlreadyMapped(usize),
    /// The PID has no mapping.
    NotMapped,
    /// The value is above [`MAX_PID_VALUE`].
    ReservedValue,
    /// The tree's node storage is exhausted.
    NoNodes,
}

impl fmt::Display for PidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserved => f.write_str("PID 0 is reserved"),
            Self::OutOfRange => f.write_str("PID above the maximum"),
            Self::NotAllocated => f.write_str("PID not allocated"),
            Self::AlreadyAllocated => f.write_str("PID already allocated"),
            Self::AlreadyMapped(v) => write!(f, "PID already maps to {v}"),
            Self::NotMapped => f.write_str("PID has no mapping"),
            Self::ReservedValue => f.write_str("value above MAX_PID_VALUE"),
            Self::NoNodes => f.write_str("radix node storage exhausted"),
        }
    }
}

impl core::error::Error for PidError {}

/// A broken invariant found by [`PidTable::check`] (always a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// The bitmap's own invariant.
    Bitmap(bitmap::CheckError),
    /// The tree's own invariant.
    Tree(tree::CheckError),
    /// PID 0 is not marked allocated (reserved).
    PidZero,
    /// A PID maps to a value but is not allocated (or holds a tombstone at rest).
    StaleMapping {
        /// The PID.
        pid: usize,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PID table invariant broken: {self:?}")
    }
}

impl core::error::Error for CheckError {}

/// A snapshot of a table's use ([`PidTable::get_pid_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStats {
    /// Allocated PIDs (PID 0 not counted).
    pub allocated: usize,
    /// Radix nodes in use (root and nodes awaiting reclamation included).
    pub nodes_in_use: usize,
    /// Bytes of those nodes.
    pub node_bytes: usize,
}

/// PIDs `1..=MAX_PID` with a PID -> value map: the NexaOS PID system, lock-free.
///
/// `WORDS` bitmap words give `WORDS * usize::BITS` PID numbers (PID 0 reserved); the tree of
/// `LEVELS` levels over storage `S` must cover them. [`NexaPidTable`] is the seed's geometry
/// (2^18 PIDs, 3 levels, a pool for the full tree).
///
/// ```
/// use smpalloc::radix::NexaPidTable;
/// static PIDS: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);
/// let init = 1;
/// PIDS.allocate_specific_pid(init).unwrap();
/// let shell = PIDS.allocate_pid().unwrap();
/// assert_eq!(shell, 2);
/// PIDS.register_pid_mapping(shell, 5).unwrap(); // process-table slot 5
/// assert_eq!(PIDS.lookup_pid(shell), Some(5));
/// assert_eq!(PIDS.free_pid(shell), Ok(Some(5))); // also removes the mapping
/// assert_eq!(PIDS.lookup_pid(shell), None);
/// assert_eq!(PIDS.allocate_pid(), Some(3)); // next-fit: 2 is not reused at once
/// ```
pub struct PidTable<
    const WORDS: usize,
    const LEVELS: usize,
    S: NodeStorage,
    const SUMMARY: usize = DEFAULT_SUMMARY_WORDS,
> {
    pids: AtomicBitmap<WORDS, SUMMARY>,
    cursor: CyclicCursor,
    map: RadixTree<LEVELS, S>,
    /// The allocation floor once the cursor has passed it (Linux's `RESERVED_PIDS`); 1 = none.
    reserved_after_wrap: usize,
    /// Whether a PID at or above `reserved_after_wrap` was handed out (then wraps go there).
    past_reserved: AtomicBool,
}

/// Nodes of [`NexaPidTable`]'s pool: the full 3-level tree (4,161) plus 2 per CPU for up to
/// 64 CPUs racing to create the same missing nodes (each holds a private chain of at most 2
/// until its CAS loses): 4,289 nodes, 2.3 MB.
pub const NEXA_POOL_NODES: usize = super::full_tree_nodes(3) + 2 * 64;

/// The seed's geometry: PIDs `1..=262_143` (4,096 words), a 3-level tree and a node pool for
/// the full tree plus racing inserts ([`NEXA_POOL_NODES`]), so registration never runs out of
/// nodes.
#[cfg(not(loom))]
pub type NexaPidTable = PidTable<4096, 3, super::NodePool<NEXA_POOL_NODES>>;

#[cfg(not(loom))]
impl NexaPidTable {
    /// A `static`-ready table with its own pool (see [`PidTable::with_reserved`]).
    pub const fn with_reserved_after_wrap(reserved: usize) -> Self {
        Self::with_reserved(super::NodePool::new(), reserved)
    }
}

impl<const WORDS: usize, const LEVELS: usize, S: NodeStorage, const SUMMARY: usize>
    PidTable<WORDS, LEVELS, S, SUMMARY>
{
    /// The largest PID: `WORDS * usize::BITS - 1`.
    pub const MAX_PID: usize = {
        assert!(
            WORDS * BITS <= RadixTree::<LEVELS, S>::CAPACITY,
            "the tree must cover every PID of the bitmap"
        );
        WORDS * BITS - 1
    };

    loom_const_fn! {
        /// An empty table over `storage` (a fresh node pool): allocation starts at PID 1 and
        /// wraps to 1.
        pub fn new(storage: S) -> Self {
            Self::with_reserved(storage, 1)
        }
    }

    loom_const_fn! {
        /// An empty table whose allocation wraps to `reserved` instead of 1 once it has handed
        /// out a PID at or above it (Linux keeps PIDs below 300 for early daemons:
        /// `with_reserved(storage, 300)`). [`allocate_specific_pid`](Self::allocate_specific_pid)
        /// can still take any PID.
        ///
        /// # Panics
        /// If `reserved` is 0 or above `MAX_PID` (at compile time for a `static`).
        pub fn with_reserved(storage: S, reserved: usize) -> Self {
            Self::with_options(storage, reserved, Reclaim::OnDemand)
        }
    }

    loom_const_fn! {
        /// [`with_reserved`](Self::with_reserved) with the tree's reclamation policy chosen:
        /// the other constructors use [`Reclaim::OnDemand`] (empty leaves stay for the next
        /// PIDs until the pool runs out or [`reclaim`](Self::reclaim) is called), which made
        /// a process lifecycle 3-5x cheaper than [`Reclaim::Eager`] in the showcase (docs/design/04-radix-and-pid-table.md
        /// §"Reclamation").
        ///
        /// # Panics
        /// If `reserved` is 0 or above `MAX_PID` (at compile time for a `static`).
        pub fn with_options(storage: S, reserved: usize, policy: Reclaim) -> Self {
            assert!(reserved >= 1 && reserved <= Self::MAX_PID, "reserved must be in 1..=MAX_PID");
            Self {
                pids: AtomicBitmap::with_prefix_allocated(1),
                cursor: CyclicCursor::new(1),
                map: RadixTree::with_reclaim(storage, policy),
                reserved_after_wrap: reserved,
                past_reserved: AtomicBool::new(reserved == 1),
            }
        }
    }

    /// A read-only view of the tree holding the mapping (its statistics, invariant check,
    /// lookups and node reclamation).
    ///
    /// The view offers no way to write the tree: a mapping written behind the table's back
    /// could plant the value a free in progress uses as its tombstone (wedging
    /// [`register_pid_mapping`](Self::register_pid_mapping) and leaking the PID in
    /// [`free_pid`](Self::free_pid)), or map a PID that is not allocated. Change mappings
    /// through the table's own methods.
    ///
    /// ```compile_fail
    /// use smpalloc::radix::NexaPidTable;
    /// let table = NexaPidTable::with_reserved_after_wrap(1);
    /// let pid = table.allocate_pid().unwrap();
    /// // No `insert` on the view: the tombstone cannot be planted from safe code.
    /// table.tree().insert(pid, usize::MAX - 1).unwrap();
    /// ```
    pub fn tree(&self) -> TreeView<'_, LEVELS, S> {
        TreeView { map: &self.map }
    }

    fn valid_pid(pid: usize) -> Result<(), PidError> {
        if pid == 0 {
            Err(PidError::Reserved)
        } else if pid > Self::MAX_PID {
            Err(PidError::OutOfRange)
        } else {
            Ok(())
        }
    }

    /// Allocates the next free PID after the last one handed out, wrapping to the floor (1, or
    /// the reserved range's end): a freed PID is not reused before the cursor has gone once
    /// round. `None` when every PID is taken: never a duplicate.
    ///
    /// # Time Complexity
    /// Lock-free: O(bitmap levels) word reads, one CAS on the cursor and one on the word.
    #[inline]
    pub fn allocate_pid(&self) -> Option<usize> {
        // Relaxed: a policy flag; the PID's ownership is ordered by the bitmap.
        let past = self.past_reserved.load(Ordering::Relaxed);
        let floor = if past { self.reserved_after_wrap } else { 1 };
        let pid = self.pids.alloc_cyclic(&self.cursor, floor)?;
        if !past && pid >= self.reserved_after_wrap {
            self.past_reserved.store(true, Ordering::Relaxed);
        }
        Some(pid)
    }

    /// Allocates `pid` itself (init and friends).
    ///
    /// # Errors
    /// Nothing changes on error: [`PidError::Reserved`] for 0, [`PidError::OutOfRange`] above
    /// `MAX_PID`, [`PidError::AlreadyAllocated`] if taken.
    ///
    /// # Time Complexity
    /// One CAS when uncontended.
    pub fn allocate_specific_pid(&self, pid: usize) -> Result<(), PidError> {
        Self::valid_pid(pid)?;
        self.pids.alloc_specific(pid).map_err(|e| match e {
            BitmapError::AlreadyAllocated => PidError::AlreadyAllocated,
            _ => PidError::OutOfRange,
        })
    }

    /// Frees `pid` and removes its mapping; returns the mapping it had.
    ///
    /// # Errors
    /// Nothing changes on error: [`PidError::Reserved`], [`PidError::OutOfRange`],
    /// [`PidError::NotAllocated`] (a double free, or a free of this PID already in progress).
    ///
    /// # Time Complexity
    /// Lock-free: one tree walk, two CAS on the PID's slot (plus a reservation in its leaf if
    /// it had no mapping), one bitmap RMW and a store.
    pub fn free_pid(&self, pid: usize) -> Result<Option<usize>, PidError> {
        Self::valid_pid(pid)?;
        if !self.pids.contains(pid) {
            return Err(PidError::NotAllocated);
        }
        let result = self.free_in_section(pid);
        self.map.reclaim_if_retired();
        result
    }

    fn free_in_section(&self, pid: usize) -> Result<Option<usize>, PidError> {
        let _section = self.map.enter();
        // 1. Tombstone the mapping (or its absence). Acquire takes over the old value's
        // payload; no Release is needed: what a racing register must see is ordered by step 3.
        // (Straight-line code with the path kept in registers: no `Option<Path>` built and
        // read back through memory on the hot path.)
        loop {
            if let Some(path) = self.map.find_leaf(pid) {
                let slot = self.map.leaf_slot(&path, pid);
                let current = slot.load(Ordering::Acquire);
                if current == TOMB_WORD {
                    return Err(PidError::NotAllocated); // another free of it is in progress
                }
                if current != 0 {
                    if slot
                        .compare_exchange(current, TOMB_WORD, Ordering::Acquire, Ordering::Acquire)
                        .is_ok()
                    {
                        return self.free_tombstoned(pid, Some(&path), Some(current - 1));
                    }
                    continue;
                }
                // The slot is empty: reserve a slot for the tombstone in the leaf just walked
                // to (`reserve_leaf`'s own last step after the same walk).
                if self.map.reserve_in(&path) {
                    if self.tombstone_reserved(&path, pid) {
                        return self.free_tombstoned(pid, Some(&path), None);
                    }
                    continue;
                }
            }
            // No leaf (or a frozen one): create it or help unlink it.
            match self.map.reserve_leaf_slow(pid) {
                Ok(path) => {
                    if self.tombstone_reserved(&path, pid) {
                        return self.free_tombstoned(pid, Some(&path), None);
                    }
                }
                // No node for the tombstone: there is no leaf for this PID, so no mapping; a
                // register racing this free finds the bit clear afterwards and undoes.
                Err(_) => return self.free_tombstoned(pid, None, None),
            }
        }
    }

    /// Step 1 of a free on an empty slot whose leaf `path` the caller has reserved: CAS the
    /// slot `0 -> TOMB`; if a register filled it first, drops the reservation (the caller
    /// starts over and takes that value).
    #[inline]
    fn tombstone_reserved(&self, path: &tree::Path<LEVELS>, pid: usize) -> bool {
        let slot = self.map.leaf_slot(path, pid);
        if slot
            .compare_exchange(0, TOMB_WORD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return true;
        }
        self.map.release(path, pid, LEVELS - 1);
        false
    }

    /// Steps 2 and 3 of a free whose tombstone is in `path`'s leaf (`None`: no leaf could be
    /// had, so no mapping exists), in place of the mapping `old`.
    #[inline]
    fn free_tombstoned(
        &self,
        pid: usize,
        path: Option<&tree::Path<LEVELS>>,
        old: Option<usize>,
    ) -> Result<Option<usize>, PidError> {
        // 2. Clear the bit; 3. remove the tombstone. Step 3's Release is what makes a
        // register that later fills the slot (reading step 3's 0) see step 2 in its re-check.
        let cleared = self.pids.free(pid).is_ok();
        if let Some(path) = path {
            let slot = self.map.leaf_slot(path, pid);
            // A racing double free completed between our check and the tombstone: restore.
            let restore = match old {
                Some(value) if !cleared => value + 1,
                _ => 0,
            };
            // A plain store, not a CAS: nothing but this call ever replaces its tombstone
            // (register, update, unregister and a second free all back off from `TOMB`, and
            // the leaf holds our reservation, so no sweep frees it), so the slot still holds
            // `TOMB` here (docs/design/04-radix-and-pid-table.md, "PidTable: bitmap and mapping").
            debug_assert_eq!(
                slot.load(Ordering::Relaxed),
                TOMB_WORD,
                "only this call replaces its tombstone"
            );
            slot.store(restore, Ordering::Release);
            if restore == 0 {
                self.map.release(path, pid, LEVELS - 1);
            }
        }
        if cleared {
            Ok(old)
        } else {
            Err(PidError::NotAllocated)
        }
    }

    /// Maps the allocated `pid` to `value` (a process-table index, a pointer).
    ///
    /// # Errors
    /// Nothing changes on error: [`PidError::Reserved`], [`PidError::OutOfRange`],
    /// [`PidError::ReservedValue`] (`value > MAX_PID_VALUE`), [`PidError::NotAllocated`],
    /// [`PidError::AlreadyMapped`] with the current value, [`PidError::NoNodes`].
    ///
    /// # Time Complexity
    /// Lock-free: one tree walk, two CAS and two bit loads (waits only for a free of the same
    /// PID that has already removed the mapping to finish).
    pub fn register_pid_mapping(&self, pid: usize, value: usize) -> Result<(), PidError> {
        Self::valid_pid(pid)?;
        if value > MAX_PID_VALUE {
            return Err(PidError::ReservedValue);
        }
        let backoff = Backoff::new();
        // Out of nodes: retry once after a pause (a racing insert may be about to publish the
        // leaf or return its losing chain), then once after a reclamation that freed some.
        let mut out_of_nodes = 0;
        loop {
            match self.register_in_section(pid, value) {
                Err(PidError::AlreadyMapped(TOMBSTONE)) => backoff.snooze(),
                Err(PidError::NoNodes) if out_of_nodes == 0 => {
                    out_of_nodes = 1;
                    backoff.snooze();
                }
                Err(PidError::NoNodes) if out_of_nodes == 1 && self.map.reclaim() > 0 => {
                    out_of_nodes = 2;
                }
                result => return result,
            }
        }
    }

    fn register_in_section(&self, pid: usize, value: usize) -> Result<(), PidError> {
        if !self.pids.contains(pid) {
            return Err(PidError::NotAllocated);
        }
        let _section = self.map.enter();
        let path = self.map.reserve_leaf(pid).map_err(|_| PidError::NoNodes)?;
        let slot = self.map.leaf_slot(&path, pid);
        // AcqRel: Release publishes what the caller wrote before registering; the CAS also
        // orders the insert before the re-check below against a free's tombstone (docs/design/04-radix-and-pid-table.md, "PidTable: bitmap and mapping").
        if let Err(now) = slot.compare_exchange(0, value + 1, Ordering::AcqRel, Ordering::Acquire) {
            self.map.release(&path, pid, LEVELS - 1);
            return Err(PidError::AlreadyMapped(now - 1));
        }
        // Re-check: a free that cleared the bit after our first check may have missed our
        // insert (its tombstone went in before it). If our value is still there, take it back
        // and fail; if the free took it (and returned it), we came first and succeeded.
        if self.pids.contains(pid) {
            return Ok(());
        }
        match slot.compare_exchange(value + 1, 0, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                self.map.release(&path, pid, LEVELS - 1);
                Err(PidError::NotAllocated)
            }
            Err(_) => Ok(()),
        }
    }

    /// Changes `pid`'s mapping to `value`; returns the old one.
    ///
    /// # Errors
    /// Nothing changes on error: [`PidError::Reserved`], [`PidError::OutOfRange`],
    /// [`PidError::ReservedValue`], [`PidError::NotMapped`].
    ///
    /// # Time Complexity
    /// Lock-free: one tree walk and one CAS when uncontended.
    pub fn update_pid_mapping(&self, pid: usize, value: usize) -> Result<usize, PidError> {
        Self::valid_pid(pid)?;
        if value > MAX_PID_VALUE {
            return Err(PidError::ReservedValue);
        }
        let _section = self.map.enter();
        let path = self.map.find_leaf(pid).ok_or(PidError::NotMapped)?;
        let slot = self.map.leaf_slot(&path, pid);
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if current == 0 || current == TOMB_WORD {
                return Err(PidError::NotMapped);
            }
            match slot.compare_exchange(current, value + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(current - 1),
                Err(now) => current = now,
            }
        }
    }

    /// The value `pid` maps to; `None` for no mapping, PID 0 or a PID above `MAX_PID`.
    ///
    /// # Time Complexity
    /// Wait-free: one load per tree level.
    #[inline]
    pub fn lookup_pid(&self, pid: usize) -> Option<usize> {
        if pid > Self::MAX_PID {
            return None;
        }
        self.map.get(pid).filter(|&value| value != TOMBSTONE)
    }

    /// Removes `pid`'s mapping and returns it (the PID stays allocated); `None` if it had none
    /// (or the PID is invalid).
    ///
    /// # Time Complexity
    /// Lock-free: one tree walk and one CAS when uncontended.
    pub fn unregister_pid_mapping(&self, pid: usize) -> Option<usize> {
        Self::valid_pid(pid).ok()?;
        let old = {
            let _section = self.map.enter();
            let path = self.map.find_leaf(pid)?;
            let slot = self.map.leaf_slot(&path, pid);
            let mut current = slot.load(Ordering::Acquire);
            loop {
                if current == 0 || current == TOMB_WORD {
                    return None;
                }
                // AcqRel: Acquire the value's payload; Release the emptying before the count
                // drop (as the tree's own removals).
                match slot.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
            self.map.release(&path, pid, LEVELS - 1);
            current - 1
        };
        self.map.reclaim_if_retired();
        Some(old)
    }

    /// Whether `pid` is allocated (PID 0, reserved, reports `false`).
    #[inline]
    pub fn is_pid_allocated(&self, pid: usize) -> bool {
        pid != 0 && self.pids.contains(pid)
    }

    /// The number of allocated PIDs (PID 0 not counted). A snapshot under concurrency.
    ///
    /// # Time Complexity
    /// O(WORDS) loads.
    pub fn allocated_pid_count(&self) -> usize {
        self.pids.count_allocated() - 1
    }

    /// Frees the tree's empty nodes (after a grace period); returns how many were freed.
    /// See [`RadixTree::reclaim`].
    pub fn reclaim(&self) -> usize {
        self.map.reclaim()
    }

    /// Allocated PIDs and the tree's memory use.
    pub fn get_pid_stats(&self) -> PidStats {
        let tree = self.map.stats();
        PidStats {
            allocated: self.allocated_pid_count(),
            nodes_in_use: tree.nodes_in_use,
            node_bytes: tree.bytes_in_use,
        }
    }

    /// Calls `f(pid, value)` for every mapping (a snapshot under concurrency).
    pub fn for_each_mapping(&self, mut f: impl FnMut(usize, usize)) {
        self.map.for_each(|pid, value| {
            if value != TOMBSTONE {
                f(pid, value);
            }
        });
    }

    /// Checks the bitmap's and the tree's invariants and that every mapping's PID is allocated
    /// (no tombstone at rest); call it while no operation runs.
    ///
    /// # Errors
    /// The first broken invariant found.
    pub fn check(&self) -> Result<(), CheckError> {
        self.pids.check().map_err(CheckError::Bitmap)?;
        self.map.check().map_err(CheckError::Tree)?;
        if !self.pids.contains(0) {
            return Err(CheckError::PidZero);
        }
        let mut stale = None;
        self.map.for_each(|pid, value| {
            if stale.is_none() && (value == TOMBSTONE || pid == 0 || !self.pids.contains(pid)) {
                stale = Some(pid);
            }
        });
        match stale {
            Some(pid) => Err(CheckError::StaleMapping { pid }),
            None => Ok(()),
        }
    }
}

/// A read-only view of a [`PidTable`]'s tree ([`PidTable::tree`]): what the tree says about
/// itself, and the mappings as the table reports them (a free in progress shows as no mapping,
/// as in [`PidTable::lookup_pid`]). It has no method that writes a mapping.
pub struct TreeView<'a, const LEVELS: usize, S: NodeStorage> {
    map: &'a RadixTree<LEVELS, S>,
}

impl<const LEVELS: usize, S: NodeStorage> TreeView<'_, LEVELS, S> {
    /// The value `key` maps to ([`RadixTree::get`]); `None` while a free of it is in progress.
    #[inline]
    pub fn get(&self, key: usize) -> Option<usize> {
        self.map.get(key).filter(|&value| value != TOMBSTONE)
    }

    /// [`RadixTree::get_unvalidated`] (benchmarks only; not part of the API).
    #[doc(hidden)]
    #[inline]
    pub fn get_unvalidated(&self, key: usize) -> Option<usize> {
        self.map
            .get_unvalidated(key)
            .filter(|&value| value != TOMBSTONE)
    }

    /// Whether `key` has a mapping (see [`get`](Self::get)).
    #[inline]
    pub fn contains_key(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// Calls `f(key, value)` for every mapping in key order ([`RadixTree::for_each`]).
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        self.map.for_each(|key, value| {
            if value != TOMBSTONE {
                f(key, value);
            }
        });
    }

    /// The tree's memory use ([`RadixTree::stats`]).
    pub fn stats(&self) -> RadixStats {
        self.map.stats()
    }

    /// The tree's reclamation policy.
    pub fn reclaim_policy(&self) -> Reclaim {
        self.map.reclaim_policy()
    }

    /// The tree's node storage.
    pub fn storage(&self) -> &S {
        self.map.storage()
    }

    /// Frees the tree's empty nodes ([`RadixTree::reclaim`]; the same as
    /// [`PidTable::reclaim`]): no mapping changes.
    pub fn reclaim(&self) -> usize {
        self.map.reclaim()
    }

    /// The tree's own invariants ([`RadixTree::check`]); the table's are
    /// [`PidTable::check`].
    ///
    /// # Errors
    /// The first broken invariant found.
    pub fn check(&self) -> Result<Census, tree::CheckError> {
        self.map.check()
    }
}

impl<const LEVELS: usize, S: NodeStorage> fmt::Debug for TreeView<'_, LEVELS, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeView")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<const WORDS: usize, const LEVELS: usize, S: NodeStorage, const SUMMARY: usize> fmt::Debug
    for PidTable<WORDS, LEVELS, S, SUMMARY>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidTable")
            .field("max_pid", &Self::MAX_PID)
            .field("stats", &self.get_pid_stats())
            .finish()
    }
}
