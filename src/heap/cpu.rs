//! The CPU layer: per CPU slot, per class, two magazines ([`Magazines`]) behind one `SpinLock`
//! per slot that is only ever taken with `try_lock`: the lock word is on the slot's own cache
//! line, so the common alloc (pop) and free (push) touch only this CPU's lines. A thread that
//! migrated, or shares a slot with another thread, and finds the slot busy tries the next
//! [`PROBES`] slots, then goes straight to the class layer for that one operation: it never
//! waits on, and never corrupts, another CPU's magazines.

use core::ptr::NonNull;

use arrayvec::ArrayVec;

use super::PageSource;
use super::depot::Depot;
use super::magazine::{CacheCounters, Magazines};
use super::route::{HEAP_CLASSES, MAGAZINE, PROBES};
use super::stats::CheckError;
use crate::lock::{SpinLock, SpinLockGuard};
use crate::percpu::{self, LocalBusy, PerCpu};

/// One CPU slot: its magazines, and their counters (readable without the lock).
pub(super) struct CpuSlot {
    caches: SpinLock<[Magazines; HEAP_CLASSES]>,
    pub(super) counters: [CacheCounters; HEAP_CLASSES],
}

impl CpuSlot {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            caches: SpinLock::new([const { Magazines::new() }; HEAP_CLASSES]),
            counters: [const { CacheCounters::new() }; HEAP_CLASSES],
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            caches: SpinLock::new([const { Magazines::new() }; HEAP_CLASSES]),
            counters: core::array::from_fn(|_| CacheCounters::new()),
        }
    }
}

/// A locked slot's magazines.
pub(super) type SlotGuard<'a> = SpinLockGuard<'a, [Magazines; HEAP_CLASSES]>;

/// `CPUS` slots of per-CPU magazines (ids reduced modulo `CPUS`).
pub(super) struct CpuCaches<const CPUS: usize> {
    slots: PerCpu<CpuSlot, CPUS>,
}

impl<const CPUS: usize> CpuCaches<CPUS> {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            slots: PerCpu::new([const { CpuSlot::new() }; CPUS]),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            slots: PerCpu::from_fn(|_| CpuSlot::new()),
        }
    }

    /// This CPU's slot, exclusively. Without pin hooks: locked with `try_lock`, and when it is
    /// busy (a migrated thread, or more threads than slots) the next [`PROBES`] slots in turn;
    /// `None` when all are busy. With pin hooks (`percpu::set_pin_hooks`): the CPU-local section
    /// of this CPU's slot (no atomic read-modify-write); `None` when it is busy (an interrupt
    /// handler interrupted it) or the CPU id is `CPUS` or more: no other slot is tried.
    #[inline(always)]
    pub(super) fn lock_current(&self) -> Option<(&CpuSlot, SlotGuard<'_>)> {
        match self.slots.lock_local(|slot| &slot.caches) {
            Ok(held) => Some(held),
            Err(LocalBusy::Shared(cpu)) => self.probe(cpu),
            Err(LocalBusy::Pinned) => None,
        }
    }

    #[cold]
    fn probe(&self, cpu: usize) -> Option<(&CpuSlot, SlotGuard<'_>)> {
        (1..=PROBES.min(CPUS - 1)).find_map(|k| {
            let slot = self.slots.get(cpu.wrapping_add(k));
            slot.caches.try_lock_unmasked().map(|caches| (slot, caches))
        })
    }

    /// Takes every slot's lock in index order and keeps them (docs/design/08-heap.md §"Fork"). With pin hooks
    /// none: a slot is its CPU's alone and is never locked from another.
    pub(super) fn lock_for_fork(&self) {
        if percpu::pinned_mode() {
            return;
        }
        for slot in self.slots.iter() {
            slot.caches.lock_held();
        }
    }

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took.
    ///
    /// # Safety
    /// The caller (or the forked child of it) holds them from `lock_for_fork`, and the pin
    /// mode has not changed since.
    pub(super) unsafe fn unlock_after_fork(&self) {
        if percpu::pinned_mode() {
            return;
        }
        for slot in self.slots.iter() {
            // SAFETY: caller: held since `lock_for_fork`.
            unsafe { slot.caches.unlock_held() };
        }
    }

    /// The slot of `cpu` (reduced modulo `CPUS`).
    pub(super) fn slot(&self, cpu: usize) -> &CpuSlot {
        self.slots.get(cpu)
    }

    /// Every slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = &CpuSlot> {
        self.slots.iter()
    }

    /// Returns every slot's magazines to the class layer (for each slot: its lock, then each
    /// class's lock). The CPUs keep working: one whose slot is being drained takes the direct
    /// path meanwhile. With pin hooks, only the calling CPU's slot (a slot is its CPU's alone;
    /// docs/design/02-percpu.md §"The CPU-local section (pinned mode)"): skipped when busy (called from a handler that interrupted it).
    pub(super) fn drain<P: PageSource>(&self, depot: &Depot, pages: &P) {
        if percpu::pinned_mode() {
            if let Ok((slot, mut caches)) = self.slots.lock_local(|slot| &slot.caches) {
                drain_slot(slot, &mut caches, depot, pages);
            }
            return;
        }
        for slot in self.slots.iter() {
            drain_slot(slot, &mut slot.caches.lock(), depot, pages);
        }
    }

    /// Returns every slot's magazines to the class layer, in any mode: `&mut self` proves no
    /// CPU is inside a slot (the heap's `Drop`).
    pub(super) fn drain_exclusive<P: PageSource>(&mut self, depot: &Depot, pages: &P) {
        for slot in self.slots.iter() {
            drain_slot(slot, &mut slot.caches.lock(), depot, pages);
        }
    }

    /// Locks the slots and checks what needs only the slots: previous magazines full or empty,
    /// each slot's counters equal to its magazines. The guards keep the magazines still for
    /// the class checks that follow. Without pin hooks: every slot, in index order. With pin
    /// hooks: the calling CPU's slot only (none when it is busy); the other CPUs' magazines
    /// are theirs alone, and the class checks see them only through their counters.
    pub(super) fn lock_and_check(&self) -> Result<ArrayVec<SlotGuard<'_>, CPUS>, CheckError> {
        let mut held: ArrayVec<(&CpuSlot, SlotGuard<'_>), CPUS> = ArrayVec::new();
        if percpu::pinned_mode() {
            if let Ok(own) = self.slots.lock_local(|slot| &slot.caches) {
                held.push(own);
            }
        } else {
            held.extend(self.slots.iter().map(|slot| (slot, slot.caches.lock())));
        }
        for (slot, caches) in &held {
            for (class, magazines) in caches.iter().enumerate() {
                let error = |what| CheckError::Magazine { class, what };
                let previous = magazines.previous.0.len();
                if previous != 0 && previous != MAGAZINE {
                    return Err(error("a previous magazine is neither full nor empty"));
                }
                if slot.counters[class].fill() != magazines.len() {
                    return Err(error("a slot's counters disagree with its magazines"));
                }
            }
        }
        Ok(held.into_iter().map(|(_, guard)| guard).collect())
    }
}

/// Returns one locked slot's magazines to the class layer.
fn drain_slot<P: PageSource>(slot: &CpuSlot, caches: &mut SlotGuard<'_>, depot: &Depot, pages: &P) {
    for (class, magazines) in caches.iter_mut().enumerate() {
        magazines.drain(&slot.counters[class], depot, class, pages);
    }
}

/// Every object the locked slots hold in `class`.
pub(super) fn cached<'a>(
    guards: &'a [SlotGuard<'_>],
    class: usize,
) -> impl Iterator<Item = &'a NonNull<u8>> {
    guards
        .iter()
        .flat_map(move |caches| caches[class].objects())
}
