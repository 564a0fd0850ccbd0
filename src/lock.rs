//! [`SpinLock`]: the crate's one fine-grained lock.
//!
//! A test-and-test-and-set spin lock: `lock` tries one `compare_exchange(false, true, Acquire)`;
//! while that fails it waits with plain loads (so waiters share the cache line instead of
//! bouncing it with writes) and retries the CAS only when the lock looks free. The wait is
//! `sync::Backoff::snooze`: a bounded spin, then a yield each round (the registered wait hook,
//! [`percpu::set_wait_hook`]; else `std::thread::yield_now` with `std`; else more spinning; a
//! loom yield under `cfg(loom)`), because threads may outnumber CPUs and a spinning waiter
//! would keep a preempted holder off its CPU. `unlock` is a `store(false, Release)`.
//!
//! Every later family (the buddy zone lock, TLSF arenas, per-CPU cache slots) uses this type; no
//! other module rolls its own lock.
//!
//! Interrupts: once a kernel registers its hooks ([`percpu::set_interrupt_hooks`]), `lock` and
//! `try_lock` hold interrupts off on this CPU from before the attempt until the guard has
//! released the lock (Linux's `spin_lock_irqsave`), so an interrupt handler may take any of
//! these locks. `try_lock_unmasked` leaves them as they are: the per-CPU fast paths use it for
//! locks a handler only ever `try_lock`s. Without hooks (std programs) nothing is called.
//!
//! Correctness (docs/design/01-sync-and-lock.md, "SpinLock"): mutual exclusion holds because only the CAS that reads
//! `false` enters, and the `Release` store of the previous holder synchronizes with that
//! `Acquire` CAS, so every write inside one critical section happens before the next. Covered by
//! the loom model `loom-tests/lock.rs`.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use crate::percpu;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Backoff, MutPtr, UnsafeCell, loom_const_fn};

/// A test-and-test-and-set spin lock with an RAII guard.
///
/// ```
/// use smpalloc::SpinLock;
/// static COUNTER: SpinLock<u64> = SpinLock::new(0);
/// *COUNTER.lock() += 1;
/// assert_eq!(*COUNTER.lock(), 1);
/// ```
pub struct SpinLock<T> {
    /// `true` while a guard exists. Written with `Acquire` CASes (lock) and `Release` stores
    /// (unlock); read with `Relaxed` loads while waiting.
    locked: AtomicBool,
    /// Accessed only through a live guard, which proves `locked` was acquired by this thread.
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `T` to one thread at a time, so sharing the lock only
// requires that `T` may move between threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: owning the lock owns the `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    loom_const_fn! {
        /// A new, unlocked lock around `value` (`const` outside loom, so it can be a `static`).
        pub fn new(value: T) -> Self {
            Self { locked: AtomicBool::new(false), data: UnsafeCell::new(value) }
        }
    }

    /// Acquires the lock, waiting until it is free. With interrupt hooks registered
    /// ([`percpu::set_interrupt_hooks`]), interrupts are off on this CPU from before the first
    /// attempt until the guard has released the lock.
    ///
    /// Waiting: a bounded spin (127 spin-loop hints), then one yield per further round while
    /// the lock stays held: the wait hook if a kernel registered one
    /// ([`percpu::set_wait_hook`], which may be called with interrupts masked), else
    /// `std::thread::yield_now` with `std`, else more spinning. So a holder that was preempted
    /// gets the CPU back even when threads outnumber CPUs.
    ///
    /// # Time Complexity
    /// O(1) uncontended (one CAS); unbounded under contention (the lock is not fair).
    #[inline]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let interrupts_on = percpu::interrupts_off();
        match self.try_lock_unmasked() {
            Some(mut guard) => {
                guard.interrupts_on = interrupts_on;
                guard
            }
            None => self.lock_contended(interrupts_on),
        }
    }

    /// [`lock`](Self::lock) after its first attempt failed: waits, then retries the CAS each
    /// time the lock looks free. Out of line, so the inlined fast path stays one CAS.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self, interrupts_on: Option<fn()>) -> SpinLockGuard<'_, T> {
        // One backoff for the whole wait: after a lost race for a just-freed lock the next
        // holder is running, so a long waiter goes on yielding instead of spinning again.
        let backoff = Backoff::new();
        loop {
            // The read-only wait is an optimization (waiters share the line instead of writing
            // it). Under loom a relaxed load may legally return the stale `true` forever, so
            // there each yield goes back to the CAS, which always reads the latest value.
            #[cfg(not(loom))]
            while self.locked.load(Ordering::Relaxed) {
                backoff.snooze();
            }
            #[cfg(loom)]
            backoff.snooze();
            if let Some(mut guard) = self.try_lock_unmasked() {
                guard.interrupts_on = interrupts_on;
                return guard;
            }
        }
    }

    /// Acquires the lock if it is free right now; never waits. With interrupt hooks registered,
    /// interrupts are off while the guard lives (as for [`lock`](Self::lock)).
    #[inline]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let interrupts_on = percpu::interrupts_off();
        let guard = self.try_lock_unmasked();
        match (guard, interrupts_on) {
            (Some(mut guard), on) => {
                guard.interrupts_on = on;
                Some(guard)
            }
            (None, Some(on)) => {
                on();
                None
            }
            (None, None) => None,
        }
    }

    /// [`try_lock`](Self::try_lock) that leaves interrupts as they are: for a lock that no
    /// interrupt handler ever waits for (a handler may `try_lock` it and go elsewhere when it
    /// is busy), such as a per-CPU cache slot. If a handler could wait for the lock, an
    /// interrupt arriving while this guard lives would deadlock its CPU.
    #[inline]
    pub fn try_lock_unmasked(&self) -> Option<SpinLockGuard<'_, T>> {
        // Acquire on success: the previous holder's `Release` unlock happens before our
        // critical section. A failed attempt orders nothing.
        match self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Some(SpinLockGuard {
                lock: self,
                data: ManuallyDrop::new(self.data.get_mut()),
                interrupts_on: None,
            }),
            Err(_) => None,
        }
    }

    /// The CPU-local section's entry ([`PerCpu::lock_local`](crate::percpu::PerCpu::lock_local)
    /// with pin hooks registered; docs/design/02-percpu.md §"The CPU-local section (pinned mode)"): the caller has pinned its CPU and owns this
    /// slot on it, so `locked` is a CPU-local busy flag, read and written with plain (`Relaxed`)
    /// loads and stores, never a read-modify-write. `None` when it is set: the caller
    /// interrupted code inside the same slot. The guard calls `unpin` after its unlocking store.
    ///
    /// Sound only under the protocol's rules: no other CPU ever touches this lock, and the
    /// caller stays pinned (no migration, no other task on this CPU) until the guard drops.
    #[inline(always)]
    pub(crate) fn try_lock_pinned(&self, unpin: fn()) -> Option<SpinLockGuard<'_, T>> {
        if self.locked.load(Ordering::Relaxed) {
            return None;
        }
        #[cfg(loom)]
        percpu::model_interrupt_point();
        self.locked.store(true, Ordering::Relaxed);
        // An interrupt runs to completion on this CPU before we resume, so program order is
        // all that is needed; keep the compiler from moving slot accesses above the store.
        crate::sync::atomic::compiler_fence(Ordering::SeqCst);
        Some(SpinLockGuard {
            lock: self,
            data: ManuallyDrop::new(self.data.get_mut()),
            interrupts_on: Some(unpin),
        })
    }

    /// Acquires the lock and keeps it with no guard, interrupts left as they are: for fork
    /// handlers, which take a lock before `fork` and release it after, in parent and child
    /// (`SmpHeap::lock_for_fork`). Released only by [`unlock_held`](Self::unlock_held).
    #[cfg_attr(not(feature = "heap"), allow(dead_code))]
    pub(crate) fn lock_held(&self) {
        let backoff = Backoff::new();
        loop {
            if let Some(guard) = self.try_lock_unmasked() {
                // The lock stays held until `unlock_held`; the guard has nothing else to drop.
                core::mem::forget(guard);
                return;
            }
            backoff.snooze();
        }
    }

    /// Releases a lock taken with [`lock_held`](Self::lock_held).
    ///
    /// # Safety
    /// The calling thread (or, in a forked child, the thread that forked) took the lock with
    /// `lock_held` and has not released it since; no guard of it exists.
    #[cfg_attr(not(feature = "heap"), allow(dead_code))]
    pub(crate) unsafe fn unlock_held(&self) {
        // Release: the critical section (the fork) happens before the next holder's.
        self.locked.store(false, Ordering::Release);
    }

    /// Whether some thread holds the lock at this instant (a racy snapshot, for diagnostics).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    /// Mutable access without locking: `&mut self` proves no guard exists. (Not available
    /// under loom, whose cells hand out only tracked pointers.)
    #[cfg(not(loom))]
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut_exclusive()
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("SpinLock").field("data", &&*guard).finish(),
            None => f
                .debug_struct("SpinLock")
                .field("data", &"<locked>")
                .finish(),
        }
    }
}

/// Access to the data of a locked [`SpinLock`]; unlocks when dropped.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// Dropped before the unlocking store, so loom sees this access end inside the lock.
    data: ManuallyDrop<MutPtr<T>>,
    /// The kernel's "interrupts back on" hook, called after the unlock (when the lock was
    /// taken with interrupts masked), or its "unpin" hook (a CPU-local section).
    interrupts_on: Option<fn()>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock, so no other thread
        // references the data; `&self` excludes this guard's `DerefMut`, so no `&mut` exists.
        unsafe { crate::sync::deref_shared(&self.data) }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` also excludes other borrows through this guard.
        unsafe { MutPtr::deref(&self.data) }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `data` is dropped exactly once, here, and never used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.data) };
        #[cfg(loom)]
        percpu::model_interrupt_point();
        self.lock.locked.store(false, Ordering::Release);
        if let Some(on) = self.interrupts_on {
            on();
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::SpinLock;
    use crate::sync::atomic::Ordering;
    use crate::sync::tests::{WAITS, watch_this_thread};

    /// How many times the holder yields while it waits for the waiter's first round past the
    /// spin bound before it gives up (a bound on a handshake, not a timing: the waiter needs
    /// 127 spin hints to get there).
    const HANDSHAKE_ROUNDS: usize = 10_000_000;

    /// Regression: with `std` and no wait hook, a thread waiting on a held lock yields after a
    /// bounded spin (a `snooze` that spins forever, as it once did, never gets there). The
    /// holder keeps the lock until the waiter has provably taken a round past the bound; on the
    /// old code the handshake runs out and the test fails.
    #[test]
    fn contended_lock_yields_after_bounded_spin() {
        let lock = SpinLock::new(0u32);
        let guard = lock.lock();
        let seen = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                watch_this_thread();
                *lock.lock() += 1;
            });
            let mut rounds = 0;
            while WAITS.load(Ordering::SeqCst) == 0 && rounds < HANDSHAKE_ROUNDS {
                rounds += 1;
                std::thread::yield_now();
            }
            let seen = WAITS.load(Ordering::SeqCst);
            // Released before any assertion, so a failure cannot leave the waiter stuck.
            drop(guard);
            waiter.join().unwrap();
            seen
        });
        assert!(seen > 0, "the waiter never yielded while the lock was held");
        assert_eq!(*lock.lock(), 1);
    }
}
