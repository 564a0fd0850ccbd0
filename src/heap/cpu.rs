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
use super::stats::HeapCheckError;
use crate::lock::{SpinLock, SpinLockGuard};
use crate::percpu::{self, PerCpu};

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

    /// This CPU's slot, locked with `try_lock`; when it is busy (a migrated thread, or more
    /// threads than slots) the next [`PROBES`] slots in turn; `None` when all are busy.
    #[inline(always)]
    pub(super) fn lock_current(&self) -> Option<(&CpuSlot, SlotGuard<'_>)> {
        let cpu = percpu::current_cpu();
        let slot = self.slots.get(cpu);
        match slot.caches.try_lock_unmasked() {
            Some(caches) => Some((slot, caches)),
            None => self.probe(cpu),
        }
    }

    #[cold]
    fn probe(&self, cpu: usize) -> Option<(&CpuSlot, SlotGuard<'_>)> {
        (1..=PROBES.min(CPUS - 1)).find_map(|k| {
            let slot = self.slots.get(cpu.wrapping_add(k));
            slot.caches.try_lock_unmasked().map(|caches| (slot, caches))
        })
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
    /// path meanwhile.
    pub(super) fn drain<P: PageSource>(&self, depot: &Depot, pages: &P) {
        for slot in self.slots.iter() {
            let mut caches = slot.caches.lock();
            for (class, magazines) in caches.iter_mut().enumerate() {
                magazines.drain(&slot.counters[class], depot, class, pages);
            }
        }
    }

    /// Locks every slot (in index order) and checks what needs only the slots: previous
    /// magazines full or empty, each slot's counters equal to its magazines. The guards keep
    /// the magazines still for the class checks that follow.
    pub(super) fn lock_and_check(&self) -> Result<ArrayVec<SlotGuard<'_>, CPUS>, HeapCheckError> {
        let guards: ArrayVec<_, CPUS> = self.slots.iter().map(|slot| slot.caches.lock()).collect();
        for (caches, slot) in guards.iter().zip(self.slots.iter()) {
            for (class, magazines) in caches.iter().enumerate() {
                let error = |what| HeapCheckError::Magazine { class, what };
                let previous = magazines.previous.0.len();
                if previous != 0 && previous != MAGAZINE {
                    return Err(error("a previous magazine is neither full nor empty"));
                }
                if slot.counters[class].fill() != magazines.len() {
                    return Err(error("a slot's counters disagree with its magazines"));
                }
            }
        }
        Ok(guards)
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
