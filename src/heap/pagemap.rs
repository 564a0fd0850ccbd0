//! The page map: a radix tree from a page's address to what owns the page (a slab of class
//! `c`, or the first page of a huge or direct block with its layout), so that `free`,
//! `usable_size` and `reallocate_unsized` find a block's route from its address alone
//! (docs/design/08-heap.md §"Frees without a layout: the page map", P1-P5).
//!
//! - Addresses: 48-bit virtual addresses, lower half or canonical upper half (x86-64 kernels,
//!   riscv64 Sv39/Sv48 direct maps): the key is bits 12..48; bits 47..64 must all be equal and
//!   the same for every page of one map (the first entry fixes which half).
//! - Levels: 4 of 9 bits without `std` (kernels) and under Miri, 3 of 12 bits with `std`
//!   (user space, where C's `free` walks the map on every call: one dependent load fewer),
//!   9 of 4 bits under loom; the root is inline (4 KiB, or 32 KiB with `std`; all zero when
//!   empty: `.bss`), the other nodes are 4 KiB (32 KiB) from the page source, never from the
//!   heap itself.
//! - Lookups are lock-free: one `Acquire` load per level and a `Relaxed` load of the entry.
//!   Writers (entries written and cleared, nodes installed, empty nodes pruned by `reclaim`)
//!   hold the map's lock; a node is initialised before its `Release` publication.
//! - Only the heap's cold paths write it: slab creation and release, huge and direct block
//!   allocation, free and resize.

use core::alloc::Layout;
use core::mem::size_of;
use core::ptr::{self, NonNull};

use arrayvec::ArrayVec;

use super::PageSource;
use crate::lock::SpinLock;
use crate::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use crate::sync::model::SIZES;

/// Page granule of the map.
pub(super) const PAGE: usize = 4096;
const PAGE_SHIFT: u32 = 12;
/// Virtual-address bits the map covers.
pub(super) const VA_BITS: u32 = 48;
/// Bits of the key (a page number).
const KEY_BITS: u32 = VA_BITS - PAGE_SHIFT;
/// Index bits per level: with `std` three levels of 12 bits, 32 KiB nodes; without (kernels)
/// and under Miri four levels of 9 bits, 4 KiB nodes; under loom 4 bits (`sync::model` says
/// why).
const BITS: u32 = SIZES.pagemap_bits;
/// Slots per node.
const FAN: usize = 1 << BITS;
/// Levels, the root included.
const LEVELS: usize = (KEY_BITS / BITS) as usize;
const _: () = assert!(KEY_BITS % BITS == 0 && LEVELS >= 2);

/// Bytes the page source gives per node (one page in normal builds).
pub(super) const NODE_BYTES: usize = {
    let inner = size_of::<Inner>();
    let leaf = size_of::<Leaf>();
    let bytes = if inner > leaf { inner } else { leaf };
    bytes.next_multiple_of(PAGE)
};

/// An inner node: pointers to the next level's nodes (null: none).
#[repr(C)]
struct Inner {
    slots: [AtomicPtr<u8>; FAN],
}

/// A leaf: one entry per page (0: no owner).
#[repr(C)]
struct Leaf {
    slots: [AtomicU64; FAN],
}

/// What owns a page. Encoded in one `u64`: kind in bits 0..2; a slab's class in bits 2..8; a
/// block's offset in its first page in bits 2..14, its alignment's log2 in bits 14..20, its
/// size (the layout given to the page source) in bits 20..64. (Classes fit 5 bits: 32.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A page of a slab of this class.
    Slab(usize),
    /// The first page of a huge block (route `Huge`) allocated with this layout.
    Huge(Layout),
    /// The first page of a direct block (route `Tlsf`, from the page source) with this layout.
    Direct(Layout),
}

const KIND_SLAB: u64 = 1;
const KIND_HUGE: u64 = 2;
const KIND_DIRECT: u64 = 3;
/// Block sizes the map can record: below 16 TiB (44 bits).
pub(super) const MAX_BLOCK: usize = if usize::BITS > 44 {
    (1 << 44) - 1
} else {
    usize::MAX
};

impl Owner {
    /// The entry for this owner, for a block starting at `addr` (the offset in its page).
    fn encode(self, addr: usize) -> u64 {
        match self {
            Owner::Slab(class) => KIND_SLAB | (class as u64) << 2,
            Owner::Huge(layout) | Owner::Direct(layout) => {
                let kind = if matches!(self, Owner::Huge(_)) {
                    KIND_HUGE
                } else {
                    KIND_DIRECT
                };
                kind | ((addr % PAGE) as u64) << 2
                    | u64::from(layout.align().trailing_zeros()) << 14
                    | (layout.size() as u64) << 20
            }
        }
    }

    /// The owner of `entry` (non-zero) as seen from `addr`: `None` when `addr` is not the
    /// start of the block whose first page this is.
    fn decode(entry: u64, addr: usize) -> Option<Owner> {
        match entry & 3 {
            KIND_SLAB => Some(Owner::Slab(((entry >> 2) & 0x1f) as usize)),
            kind => {
                if (entry >> 2) & (PAGE as u64 - 1) != (addr % PAGE) as u64 {
                    return None;
                }
                let align = 1usize.checked_shl(((entry >> 14) & 0x3f) as u32)?;
                let size = usize::try_from(entry >> 20).ok()?;
                let layout = Layout::from_size_align(size, align).ok()?;
                Some(if kind == KIND_HUGE {
                    Owner::Huge(layout)
                } else {
                    Owner::Direct(layout)
                })
            }
        }
    }
}

/// Why an entry could not be written (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MapError {
    /// The page source gave no page for a node.
    NoMemory,
    /// The address is not canonical, or lies in the other half than this map's pages, or the
    /// block is 16 TiB or more.
    Unmappable,
}

/// Spare nodes kept for a block that a page source moves (`reserve`), so recording its new
/// address cannot fail after the move.
type Spare = ArrayVec<NonNull<u8>, LEVELS>;

/// Per owner kind, what `tally` found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// Slab pages per class.
    pub(super) slab_pages: [usize; 32],
    /// Huge blocks and their bytes (`huge_bytes` of each size).
    pub(super) huge: (usize, usize),
    /// Direct blocks and their bytes.
    pub(super) direct: (usize, usize),
}

/// The page map (see the module documentation).
pub(super) struct PageMap {
    root: [AtomicPtr<u8>; FAN],
    /// 0 before the first entry; then `(address >> 47) + 1` of this map's pages (1: lower
    /// half; `0x2_0000`: upper half).
    half: AtomicUsize,
    /// Nodes held (statistics and `check`).
    nodes: AtomicUsize,
    /// Writers' lock; holds the spare nodes.
    writers: SpinLock<Spare>,
}

// SAFETY: the nodes are page-source memory owned by the map; every shared access is atomic,
// and writers hold `writers`.
unsafe impl Send for PageMap {}
// SAFETY: as above.
unsafe impl Sync for PageMap {}

impl PageMap {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            root: [const { AtomicPtr::new(ptr::null_mut()) }; FAN],
            half: AtomicUsize::new(0),
            nodes: AtomicUsize::new(0),
            writers: SpinLock::new(ArrayVec::new_const()),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            root: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            half: AtomicUsize::new(0),
            nodes: AtomicUsize::new(0),
            writers: SpinLock::new(ArrayVec::new_const()),
        }
    }

    /// Takes the writers' lock and keeps it (docs/design/08-heap.md §"Fork"); readers take no lock.
    pub(super) fn lock_for_fork(&self) {
        self.writers.lock_held();
    }

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took.
    ///
    /// # Safety
    /// The caller (or the forked child of it) holds it from `lock_for_fork`.
    pub(super) unsafe fn unlock_after_fork(&self) {
        // SAFETY: caller: held since `lock_for_fork`.
        unsafe { self.writers.unlock_held() };
    }

    /// Bytes of nodes taken from the page source (the inline root not counted).
    pub(super) fn node_bytes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed) * NODE_BYTES
    }

    /// The page number of `addr` when it lies in this map's half (`half`: its `half` word).
    #[inline(always)]
    fn key(addr: usize, half: usize) -> Option<u64> {
        let top = (addr as u64) >> 47;
        if top + 1 != half as u64 {
            return None;
        }
        Some(((addr as u64) >> PAGE_SHIFT) & ((1 << KEY_BITS) - 1))
    }

    #[inline(always)]
    fn index(key: u64, level: usize) -> usize {
        ((key >> ((LEVELS - 1 - level) as u32 * BITS)) as usize) & (FAN - 1)
    }

    /// The owner of the page holding `addr`, as seen from `addr` (a huge or direct block's
    /// entry answers only for its start address). Lock-free: one `Acquire` load per level.
    ///
    /// P2 (docs/design/08-heap.md §"Frees without a layout: the page map"): exact for the address of a live block of this heap; for any other
    /// address, `None` or the owner of that page, except while `reclaim` prunes nodes (P4).
    #[inline]
    pub(super) fn get(&self, addr: usize) -> Option<Owner> {
        Owner::decode(self.entry(addr)?, addr)
    }

    /// The class of the slab holding `addr`, or `Err` with the page's raw entry (`None`: no
    /// owner) for [`owner_of`](Self::owner_of): C's `free` decodes only a slab entry inline.
    /// Lookups as for [`get`](Self::get) (P2).
    #[inline(always)]
    pub(super) fn slab_class(&self, addr: usize) -> Result<usize, Option<u64>> {
        match self.entry(addr) {
            Some(entry) if entry & 3 == KIND_SLAB => Ok(((entry >> 2) & 0x1f) as usize),
            other => Err(other),
        }
    }

    /// The owner of a raw entry `slab_class` returned, as [`get`](Self::get) would give it.
    pub(super) fn owner_of(entry: Option<u64>, addr: usize) -> Option<Owner> {
        Owner::decode(entry?, addr)
    }

    /// The raw entry of the page holding `addr`; `None` when empty or in no node.
    #[inline(always)]
    fn entry(&self, addr: usize) -> Option<u64> {
        let key = Self::key(addr, self.half.load(Ordering::Relaxed))?;
        let mut slot = &self.root[Self::index(key, 0)];
        for level in 1..LEVELS - 1 {
            let node = slot.load(Ordering::Acquire);
            if node.is_null() {
                return None;
            }
            // SAFETY: P1: a published node is an initialised `Inner` (Acquire pairs with the
            // installer's Release), alive until `prune` (P4: not for a live block's path).
            let inner = unsafe { &*node.cast::<Inner>() };
            slot = &inner.slots[Self::index(key, level)];
        }
        let node = slot.load(Ordering::Acquire);
        if node.is_null() {
            return None;
        }
        // SAFETY: as above; the last level's nodes are leaves.
        let leaf = unsafe { &*node.cast::<Leaf>() };
        let entry = leaf.slots[Self::index(key, LEVELS - 1)].load(Ordering::Relaxed);
        (entry != 0).then_some(entry)
    }

    /// The leaf slot of `key`, installing missing nodes (from `spare`, else the page source).
    /// The caller holds `writers` (`spare` is its guard's data).
    fn slot_for<'a, P: PageSource>(
        &'a self,
        key: u64,
        spare: &mut Spare,
        pages: &P,
    ) -> Result<&'a AtomicU64, MapError> {
        let mut slot = &self.root[Self::index(key, 0)];
        for level in 1..LEVELS {
            let mut node = slot.load(Ordering::Relaxed);
            if node.is_null() {
                node = self.new_node(level == LEVELS - 1, spare, pages)?;
                // P1: initialised above; Release publishes the initialisation to lock-free
                // lookups (their Acquire load). Writers are serialised by `writers`.
                slot.store(node, Ordering::Release);
            }
            if level == LEVELS - 1 {
                // SAFETY: a leaf of ours, live while we hold `writers`.
                let leaf = unsafe { &*node.cast::<Leaf>() };
                return Ok(&leaf.slots[Self::index(key, level)]);
            }
            // SAFETY: an inner node of ours, live while we hold `writers`.
            let inner = unsafe { &*node.cast::<Inner>() };
            slot = &inner.slots[Self::index(key, level)];
        }
        unreachable!("LEVELS >= 2")
    }

    /// The leaf slot of `key` if its path exists (no installation). The caller holds
    /// `writers`.
    fn existing_slot(&self, key: u64) -> Option<&AtomicU64> {
        let mut slot = &self.root[Self::index(key, 0)];
        for level in 1..LEVELS {
            let node = slot.load(Ordering::Relaxed);
            if node.is_null() {
                return None;
            }
            if level == LEVELS - 1 {
                // SAFETY: a leaf of ours, live while the caller holds `writers`.
                let leaf = unsafe { &*node.cast::<Leaf>() };
                return Some(&leaf.slots[Self::index(key, level)]);
            }
            // SAFETY: an inner node of ours, as above.
            let inner = unsafe { &*node.cast::<Inner>() };
            slot = &inner.slots[Self::index(key, level)];
        }
        None
    }

    /// A fresh node with every slot empty.
    fn new_node<P: PageSource>(
        &self,
        leaf: bool,
        spare: &mut Spare,
        pages: &P,
    ) -> Result<*mut u8, MapError> {
        let raw = match spare.pop() {
            Some(raw) => raw,
            None => {
                let raw = pages
                    .alloc_pages(NODE_BYTES, PAGE)
                    .ok_or(MapError::NoMemory)?;
                self.nodes.fetch_add(1, Ordering::Relaxed);
                raw
            }
        };
        let raw = raw.as_ptr();
        // SAFETY: `raw` is `NODE_BYTES` of page-source memory owned by the map, aligned to a
        // page, large enough for either node type; every slot is written before publication.
        unsafe {
            if leaf {
                let slots = raw.cast::<AtomicU64>();
                for i in 0..FAN {
                    slots.add(i).write(AtomicU64::new(0));
                }
            } else {
                let slots = raw.cast::<AtomicPtr<u8>>();
                for i in 0..FAN {
                    slots.add(i).write(AtomicPtr::new(ptr::null_mut()));
                }
            }
        }
        Ok(raw)
    }

    /// Fixes this map's half on its first entry; `Err` for an address in the other half or
    /// not canonical. The caller holds `writers`.
    fn claim_half(&self, addr: usize) -> Result<usize, MapError> {
        let top = (addr as u64) >> 47;
        if top != 0 && top != (1 << (64 - 47)) - 1 {
            return Err(MapError::Unmappable);
        }
        let want = (top + 1) as usize;
        match self.half.load(Ordering::Relaxed) {
            0 => {
                // Relaxed: a lookup that needs it (a live block's) is ordered after this store
                // by the block's hand-out (P2).
                self.half.store(want, Ordering::Relaxed);
                Ok(want)
            }
            half if half == want => Ok(half),
            _ => Err(MapError::Unmappable),
        }
    }

    /// Records `class` for every page of the slab `[slab, slab + bytes)`, before any of its
    /// objects is handed out (P2). `Err`: nothing recorded (nodes installed stay).
    pub(super) fn insert_slab<P: PageSource>(
        &self,
        slab: NonNull<u8>,
        bytes: usize,
        class: usize,
        pages: &P,
    ) -> Result<(), MapError> {
        let start = slab.as_ptr().addr();
        let mut spare = self.writers.lock();
        let half = self.claim_half(start)?;
        let entry = Owner::Slab(class).encode(start);
        let mut page = start;
        while page < start + bytes {
            let key = Self::key(page, half).ok_or(MapError::Unmappable)?;
            match self.slot_for(key, &mut spare, pages) {
                Ok(slot) => slot.store(entry, Ordering::Relaxed),
                Err(error) => {
                    // Undo the pages recorded so far: all or nothing.
                    let mut undo = start;
                    while undo < page {
                        if let Some(slot) =
                            Self::key(undo, half).and_then(|k| self.existing_slot(k))
                        {
                            slot.store(0, Ordering::Relaxed);
                        }
                        undo += PAGE;
                    }
                    return Err(error);
                }
            }
            page += PAGE;
        }
        Ok(())
    }

    /// Clears the entries of every page of the slabs in `slabs` (each `bytes` long), before
    /// they go back to the page source (P3).
    pub(super) fn remove_slabs(&self, slabs: &[NonNull<u8>], bytes: usize) {
        if slabs.is_empty() {
            return;
        }
        let _writers = self.writers.lock();
        let half = self.half.load(Ordering::Relaxed);
        for slab in slabs {
            let start = slab.as_ptr().addr();
            let mut page = start;
            while page < start + bytes {
                let slot = Self::key(page, half).and_then(|k| self.existing_slot(k));
                debug_assert!(
                    slot.is_some(),
                    "PageMap: a released slab was never recorded"
                );
                if let Some(slot) = slot {
                    slot.store(0, Ordering::Relaxed);
                }
                page += PAGE;
            }
        }
    }

    /// Records a huge or direct block starting at `ptr` (its first page only), before it is
    /// handed out. `run` is called with the lock held once the entry is written (the caller's
    /// statistics, so `check` sees them consistent). `Err`: nothing recorded.
    pub(super) fn insert_block<P: PageSource>(
        &self,
        ptr: NonNull<u8>,
        owner: Owner,
        pages: &P,
        run: impl FnOnce(),
    ) -> Result<(), MapError> {
        let addr = ptr.as_ptr().addr();
        let mut spare = self.writers.lock();
        let half = self.claim_half(addr)?;
        let key = Self::key(addr, half).ok_or(MapError::Unmappable)?;
        let slot = self.slot_for(key, &mut spare, pages)?;
        debug_assert_eq!(
            slot.load(Ordering::Relaxed),
            0,
            "PageMap: page already owned"
        );
        slot.store(owner.encode(addr), Ordering::Relaxed);
        run();
        Ok(())
    }

    /// Clears the entry of the huge or direct block starting at `ptr` if it is one of `kind`'s
    /// (`Huge` or `Direct`, the layout ignored), returning its owner; `None`, nothing changed,
    /// otherwise (a foreign pointer, a block freed already, an interior pointer). `run` is
    /// called with the lock held after the entry is cleared.
    pub(super) fn remove_block(
        &self,
        ptr: NonNull<u8>,
        direct: bool,
        run: impl FnOnce(Layout),
    ) -> Option<Layout> {
        let addr = ptr.as_ptr().addr();
        let _writers = self.writers.lock();
        let key = Self::key(addr, self.half.load(Ordering::Relaxed))?;
        let slot = self.existing_slot(key)?;
        let entry = slot.load(Ordering::Relaxed);
        if entry == 0 {
            return None;
        }
        let layout = match Owner::decode(entry, addr)? {
            Owner::Huge(layout) if !direct => layout,
            Owner::Direct(layout) if direct => layout,
            _ => return None,
        };
        slot.store(0, Ordering::Relaxed);
        run(layout);
        Some(layout)
    }

    /// Makes sure `LEVELS - 1` spare nodes are held, so that recording a block at any address
    /// needs no allocation (`move_block` after a page source moved a block). `Err`: the page
    /// source gave none; nothing changed but spares kept.
    pub(super) fn reserve<P: PageSource>(&self, pages: &P) -> Result<(), MapError> {
        let mut spare = self.writers.lock();
        while spare.len() < LEVELS - 1 {
            let raw = pages
                .alloc_pages(NODE_BYTES, PAGE)
                .ok_or(MapError::NoMemory)?;
            self.nodes.fetch_add(1, Ordering::Relaxed);
            spare.push(raw);
        }
        Ok(())
    }

    /// Moves the record of the block at `from` (of kind `owner`'s) to `to` with `owner`'s
    /// layout; after [`reserve`](Self::reserve) it cannot run out of nodes. `run` is called
    /// with the lock held after the move. `Err` only for an unmappable `to` (then nothing is
    /// recorded for either).
    pub(super) fn move_block<P: PageSource>(
        &self,
        from: NonNull<u8>,
        to: NonNull<u8>,
        owner: Owner,
        pages: &P,
        run: impl FnOnce(),
    ) -> Result<(), MapError> {
        let mut spare = self.writers.lock();
        let half = self.half.load(Ordering::Relaxed);
        if let Some(slot) =
            Self::key(from.as_ptr().addr(), half).and_then(|k| self.existing_slot(k))
        {
            slot.store(0, Ordering::Relaxed);
        }
        let addr = to.as_ptr().addr();
        let half = self.claim_half(addr)?;
        let key = Self::key(addr, half).ok_or(MapError::Unmappable)?;
        let slot = self.slot_for(key, &mut spare, pages)?;
        slot.store(owner.encode(addr), Ordering::Relaxed);
        run();
        Ok(())
    }

    /// Returns every node that holds no entry (and the spare nodes) to the page source
    /// (`reclaim`). P4: a node is unlinked before it is freed, under `writers`; a lookup for a
    /// live block never reaches an empty node, but a lookup of a bad pointer running at the
    /// same time may (documented on `SmpHeap::free`).
    pub(super) fn prune<P: PageSource>(&self, pages: &P) {
        let mut spare = self.writers.lock();
        for raw in spare.drain(..) {
            // SAFETY: a spare node, taken with `alloc_pages(NODE_BYTES, PAGE)`, in no tree.
            unsafe { pages.free_pages(raw, NODE_BYTES, PAGE) };
            self.nodes.fetch_sub(1, Ordering::Relaxed);
        }
        for slot in &self.root {
            // SAFETY: under `writers`; the root's children are nodes of level 1.
            unsafe { self.prune_slot(slot, 1, pages, false) };
        }
    }

    /// Frees every node whatever it holds (the heap is being dropped: no lookup can run).
    pub(super) fn free_all<P: PageSource>(&mut self, pages: &P) {
        let mut spare = self.writers.lock();
        for raw in spare.drain(..) {
            // SAFETY: a spare node, in no tree.
            unsafe { pages.free_pages(raw, NODE_BYTES, PAGE) };
            self.nodes.fetch_sub(1, Ordering::Relaxed);
        }
        drop(spare);
        for slot in &self.root {
            // SAFETY: `&mut self`: no lookup or writer runs.
            unsafe { self.prune_slot(slot, 1, pages, true) };
        }
    }

    /// Prunes the subtree of `slot` (a node of `level`, or null); returns whether `slot` is
    /// now null. `all`: free it whatever it holds.
    ///
    /// # Safety
    /// The caller holds `writers` (or `&mut self`).
    unsafe fn prune_slot<P: PageSource>(
        &self,
        slot: &AtomicPtr<u8>,
        level: usize,
        pages: &P,
        all: bool,
    ) -> bool {
        let node = slot.load(Ordering::Relaxed);
        if node.is_null() {
            return true;
        }
        let empty = if level == LEVELS - 1 {
            // SAFETY: a leaf of ours (caller holds `writers`).
            let leaf = unsafe { &*node.cast::<Leaf>() };
            all || leaf.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0)
        } else {
            // SAFETY: an inner node of ours.
            let inner = unsafe { &*node.cast::<Inner>() };
            let mut empty = true;
            for child in &inner.slots {
                // SAFETY: caller; children are nodes of the next level.
                empty &= unsafe { self.prune_slot(child, level + 1, pages, all) };
            }
            empty
        };
        if empty {
            // P4: unlinked first, then freed.
            slot.store(ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: taken with `alloc_pages(NODE_BYTES, PAGE)`; unlinked above, and no
            // writer holds it (caller).
            unsafe { pages.free_pages(NonNull::new_unchecked(node), NODE_BYTES, PAGE) };
            self.nodes.fetch_sub(1, Ordering::Relaxed);
        }
        empty
    }

    /// Walks every entry under the lock: counts per kind, and checks that each slab's pages
    /// all map to its class (`slab_bytes(class)` bytes, aligned to that), that no entry lies
    /// in a TLSF region (`is_pool`), that the node count is the tree's, and `verify` (run
    /// under the lock, so counters updated under it agree).
    pub(super) fn tally(
        &self,
        slab_bytes: &dyn Fn(usize) -> usize,
        huge_bytes: &dyn Fn(usize) -> usize,
        is_pool: &dyn Fn(usize) -> bool,
        verify: &dyn Fn(&Tally) -> Result<(), &'static str>,
    ) -> Result<Tally, &'static str> {
        let spare = self.writers.lock();
        let half = self.half.load(Ordering::Relaxed);
        let mut walk = Walk {
            map: self,
            half,
            tally: Tally::default(),
            nodes: 0,
            slab_bytes,
            huge_bytes,
            is_pool,
        };
        for (i, slot) in self.root.iter().enumerate() {
            walk.node(slot.load(Ordering::Relaxed), 1, i as u64)?;
        }
        if walk.nodes + spare.len() != self.nodes.load(Ordering::Relaxed) {
            return Err("the node count disagrees with the tree");
        }
        verify(&walk.tally)?;
        Ok(walk.tally)
    }
}

/// `tally`'s walk (under `writers`).
struct Walk<'a> {
    map: &'a PageMap,
    half: usize,
    tally: Tally,
    nodes: usize,
    slab_bytes: &'a dyn Fn(usize) -> usize,
    huge_bytes: &'a dyn Fn(usize) -> usize,
    is_pool: &'a dyn Fn(usize) -> bool,
}

impl Walk<'_> {
    fn node(&mut self, node: *mut u8, level: usize, prefix: u64) -> Result<(), &'static str> {
        if node.is_null() {
            return Ok(());
        }
        self.nodes += 1;
        if level < LEVELS - 1 {
            // SAFETY: an inner node of the map (the caller holds `writers`).
            let inner = unsafe { &*node.cast::<Inner>() };
            for (i, slot) in inner.slots.iter().enumerate() {
                self.node(
                    slot.load(Ordering::Relaxed),
                    level + 1,
                    prefix << BITS | i as u64,
                )?;
            }
            return Ok(());
        }
        // SAFETY: a leaf of the map.
        let leaf = unsafe { &*node.cast::<Leaf>() };
        for (i, slot) in leaf.slots.iter().enumerate() {
            let entry = slot.load(Ordering::Relaxed);
            if entry != 0 {
                self.entry(prefix << BITS | i as u64, entry)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, key: u64, entry: u64) -> Result<(), &'static str> {
        let mut addr = (key << PAGE_SHIFT) as usize;
        if self.half > 1 {
            addr |= !((1usize << (VA_BITS - 1)) - 1);
        }
        if (self.is_pool)(addr) {
            return Err("a page of a TLSF pool has an owner");
        }
        let start = addr + ((entry >> 2) & (PAGE as u64 - 1)) as usize;
        match Owner::decode(entry, start) {
            Some(Owner::Slab(class)) => {
                let bytes = (self.slab_bytes)(class);
                if class >= self.tally.slab_pages.len() || bytes == 0 {
                    return Err("a slab entry names no class of the heap");
                }
                let slab = addr & !(bytes - 1);
                for page in (slab..slab + bytes).step_by(PAGE) {
                    let same = PageMap::key(page, self.half)
                        .and_then(|k| self.map.existing_slot(k))
                        .is_some_and(|s| s.load(Ordering::Relaxed) == entry);
                    if !same {
                        return Err("a slab's pages do not all map to its class");
                    }
                }
                self.tally.slab_pages[class] += 1;
            }
            Some(Owner::Huge(layout)) => {
                self.tally.huge.0 += 1;
                self.tally.huge.1 += (self.huge_bytes)(layout.size());
            }
            Some(Owner::Direct(layout)) => {
                self.tally.direct.0 += 1;
                self.tally.direct.1 += (self.huge_bytes)(layout.size());
            }
            None => return Err("an entry does not decode"),
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::*;
    use crate::heap::SystemPages;

    fn at(addr: usize) -> NonNull<u8> {
        NonNull::new(ptr::without_provenance_mut(addr)).unwrap()
    }

    /// Kernel addresses: the canonical upper half (x86-64's direct map at
    /// `0xffff_8880_0000_0000`, riscv64 Sv39's at `0xffff_ffc0_0000_0000`) maps like the lower
    /// half; the other half and non-canonical addresses are refused (and never found). The
    /// entries' pages are not touched, so no memory needs to be there.
    #[test]
    fn upper_half_addresses_map_and_the_other_half_is_refused() {
        for base in [0xffff_8880_0000_0000usize, 0xffff_ffc0_8020_0000] {
            let pages = SystemPages::new();
            let map = PageMap::new();
            map.insert_slab(at(base), 8192, 3, &pages).unwrap();
            let huge = Layout::from_size_align(300_000, 8).unwrap();
            map.insert_block(at(base + (1 << 30) + 16), Owner::Huge(huge), &pages, || {})
                .unwrap();
            assert_eq!(map.get(base + 4100), Some(Owner::Slab(3)));
            assert_eq!(map.get(base + (1 << 30) + 16), Some(Owner::Huge(huge)));
            // Interior of the block's first page, and the same low bits in the lower half.
            assert_eq!(map.get(base + (1 << 30) + 32), None);
            assert_eq!(map.get(base & ((1 << 47) - 1)), None);
            assert_eq!(
                map.insert_slab(at(0x8000_0000), 4096, 0, &pages),
                Err(MapError::Unmappable)
            );
            assert_eq!(map.get(0x0001_8880_0000_0000), None, "non-canonical");
            assert_eq!(
                map.insert_slab(at(0x0001_8880_0000_0000), 4096, 0, &pages),
                Err(MapError::Unmappable)
            );
            map.remove_slabs(&[at(base)], 8192);
            assert!(
                map.remove_block(at(base + (1 << 30) + 16), false, |_| {})
                    .is_some()
            );
            assert_eq!(map.get(base), None);
            assert!(map.node_bytes() > 0);
            map.prune(&pages);
            assert_eq!((map.node_bytes(), pages.held_bytes()), (0, 0));
        }
    }

    /// `tally` (under `check`) refuses a slab recorded on part of its pages, an entry in a
    /// TLSF region, and counters that disagree.
    #[test]
    fn tally_finds_inconsistencies() {
        let pages = SystemPages::new();
        let map = PageMap::new();
        let base = 0x7f00_0000_0000usize;
        map.insert_slab(at(base), PAGE, 5, &pages).unwrap();
        let ok = |_: &Tally| Ok(());
        assert!(map.tally(&|_| PAGE, &|n| n, &|_| false, &ok).is_ok());
        assert_eq!(
            map.tally(&|_| 2 * PAGE, &|n| n, &|_| false, &ok),
            Err("a slab's pages do not all map to its class")
        );
        assert_eq!(
            map.tally(&|_| PAGE, &|n| n, &|a| a == base, &ok),
            Err("a page of a TLSF pool has an owner")
        );
        let no = |_: &Tally| Err("counters");
        assert_eq!(
            map.tally(&|_| PAGE, &|n| n, &|_| false, &no),
            Err("counters")
        );
        map.remove_slabs(&[at(base)], PAGE);
        map.prune(&pages);
        assert_eq!(pages.held_bytes(), 0);
    }

    /// The memory cost: 1 GiB of 4 KiB slabs recorded takes one leaf per `FAN` pages and one
    /// inner node per level above: 2 MiB of leaves (0.2 %) plus 8 KiB (9 bits: 512 leaves, two
    /// inner nodes) or 32 KiB (12 bits, with `std`: 64 leaves, one inner node).
    #[test]
    fn node_bytes_per_gib() {
        let pages = SystemPages::new();
        let map = PageMap::new();
        let base = 0x7f00_0000_0000usize;
        for k in 0..(1 << 30) / PAGE {
            map.insert_slab(at(base + k * PAGE), PAGE, 0, &pages)
                .unwrap();
        }
        let nodes = (1 << 18) / FAN + LEVELS - 2;
        assert_eq!(map.node_bytes(), nodes * NODE_BYTES);
        assert_eq!(nodes * NODE_BYTES - (2 << 20), (LEVELS - 2) * NODE_BYTES);
        let tally = map
            .tally(&|_| PAGE, &|n| n, &|_| false, &|_| Ok(()))
            .unwrap();
        assert_eq!(tally.slab_pages[0], 1 << 18);
        map.prune(&pages); // entries stay: nothing to prune
        assert_eq!(map.node_bytes(), nodes * NODE_BYTES);
        let mut map = map;
        map.free_all(&pages);
        assert_eq!(pages.held_bytes(), 0);
    }
}
