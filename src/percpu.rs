//! Where "this CPU" comes from, and per-CPU storage.
//!
//! A kernel tells the crate, once at boot and before any allocator is used concurrently, how
//! many CPUs it has ([`set_cpu_count`]) and how to read the current CPU's id
//! ([`set_cpu_id_source`], a plain `fn() -> usize` that typically reads `tp`, `gs:` or
//! `TPIDR_EL1`). Without a source:
//! - with the `std` feature, each thread gets a slot number the first time it asks, handed out
//!   round-robin, so threads spread over slots the way CPUs would;
//! - in `no_std`, every caller is CPU 0.
//!
//! The id is a *hint*: a thread may migrate between reading it and using the slot. Nothing in the
//! crate relies on the id for exclusion. Structures that need exclusive per-CPU state (page
//! caches, magazines) guard each slot with its own `SpinLock` taken by `try_lock`; structures
//! that only want locality (the ID allocator's hint cursors) need nothing more.
//!
//! [`PerCpu<T, N>`] is `N` cache-padded slots (crossbeam-utils' `CachePadded`, 128 bytes on
//! x86_64 and aarch64), indexed by `current_cpu() % N`, so a slot per CPU never shares a cache
//! line with its neighbour.

use core::fmt;
use core::mem::{ManuallyDrop, MaybeUninit};

use crossbeam_utils::CachePadded;

use crate::sync::atomic::Ordering;
use crate::sync::atomic::boot::{AtomicPtr, AtomicUsize as BootUsize};

/// The CPU-id function a kernel registered, or null.
static CPU_ID_SOURCE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The CPU count a kernel registered; 0 means "not set".
static CPU_COUNT: BootUsize = BootUsize::new(0);

/// Registers the function that returns the current CPU's id. Call it once at boot, before
/// other CPUs use any allocator; calling it again replaces the source (for tests).
///
/// The function must be cheap (it runs on every per-CPU access), must not allocate, and may
/// return any `usize`: ids are reduced modulo each [`PerCpu`]'s slot count.
pub fn set_cpu_id_source(source: fn() -> usize) {
    CPU_ID_SOURCE.store(source as *mut (), Ordering::Release);
}

/// Registers how many CPUs the system has (the default for [`cpu_count`] is 1 in `no_std`,
/// and the machine's available parallelism with `std`).
pub fn set_cpu_count(count: usize) {
    CPU_COUNT.store(count.max(1), Ordering::Release);
}

/// The kernel's "interrupts off" hook (a `fn()`), or null.
static INTERRUPTS_OFF: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The kernel's "interrupts back on" hook (a `fn()`), or null.
static INTERRUPTS_ON: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers how the crate's locks mask interrupts on the current CPU, so that an interrupt
/// handler may allocate and free (heap, pages, IDs) without deadlocking against the code it
/// interrupted. Call it once at boot, before other CPUs run and before interrupts are enabled.
///
/// Every [`SpinLock::lock`](crate::SpinLock::lock) and
/// [`try_lock`](crate::SpinLock::try_lock) calls `off` before it tries the lock, and the guard
/// calls `on` after it has released it (a failed `try_lock` calls `on` at once). The hooks
/// must nest the way xv6's `push_off`/`pop_off` do: a per-CPU depth counter, interrupts
/// disabled by the first `off` and restored to their earlier state when the depth returns to
/// 0, because guards may be dropped in any order. Both must be cheap and must not allocate or
/// take a crate lock.
///
/// The per-CPU fast paths (heap magazines, page caches) use
/// [`try_lock_unmasked`](crate::SpinLock::try_lock_unmasked) and pay nothing: an interrupt
/// handler that finds such a slot busy never waits for it (DESIGN.md section 3).
pub fn set_interrupt_hooks(off: fn(), on: fn()) {
    // `on` first: a lock that sees the new `off` (Acquire) also sees the `on` to pair it with.
    INTERRUPTS_ON.store(on as *mut (), Ordering::Release);
    INTERRUPTS_OFF.store(off as *mut (), Ordering::Release);
}

/// Runs the kernel's "interrupts off" hook, if any, and returns the hook that undoes it.
#[inline]
pub(crate) fn interrupts_off() -> Option<fn()> {
    let off = INTERRUPTS_OFF.load(Ordering::Acquire);
    if off.is_null() {
        return None;
    }
    // Function and data pointers have the same size on every target the crate supports.
    // SAFETY: only `set_interrupt_hooks` stores non-null values here: `fn()`s cast to `*mut ()`,
    // `on` before `off`; the Acquire load of `off` above makes that `on` visible (non-null).
    let (off, on) = unsafe {
        (
            core::mem::transmute::<*mut (), fn()>(off),
            core::mem::transmute::<*mut (), fn()>(INTERRUPTS_ON.load(Ordering::Acquire)),
        )
    };
    off();
    Some(on)
}

/// The kernel's wait hook (a `fn()`), or null.
static WAIT_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers what a thread does while it waits for another thread past a bounded spin, in
/// place of `std::thread::yield_now` (with `std`) or more spinning (in `no_std`). Call it once
/// at boot, like [`set_interrupt_hooks`]; calling it again replaces the hook.
///
/// Who waits: [`SpinLock::lock`](crate::SpinLock::lock) on a lock another thread holds, a
/// `TlsfHeap` whose lazy start another thread is running, and a `PidTable` mapping whose free
/// another thread is finishing. Each spins
/// 127 spin-loop hints (a few microseconds), then calls `hook` once per further round and
/// re-checks what it waits for after each call, until the wait ends. Uncontended operations
/// and the lock-free structures' CAS retries never call it.
///
/// The contract:
/// - `hook` is a *hint*: it may return at once or after any time, and must return on its own.
///   Nothing wakes it (an unlock is one store and sends no notification), so it must not
///   block until woken: yield to the scheduler, or pause a little.
/// - It may run with interrupts masked by the crate's interrupt-off hook (`lock` masks them
///   before its first attempt, [`set_interrupt_hooks`]), in an interrupt handler, and while
///   the waiter holds other crate locks. A task switch there is a kernel bug (and the holder
///   may be the very task this CPU interrupted), so the hook must check the kernel's own
///   state (its interrupt-off depth, preemption count) and then only pause: a spin hint, or
///   `wfe` only where a periodic event stream wakes it (an unlock sends no event). A
///   scheduler yield is for waits with interrupts on and no lock held.
/// - It must be cheap, must not allocate from the crate's allocators, and must not take a
///   crate lock (the lock it would need may be the one being waited for).
pub fn set_wait_hook(hook: fn()) {
    WAIT_HOOK.store(hook as *mut (), Ordering::Release);
}

/// The registered wait hook, if any (read on every round past the spin bound, never on a fast
/// path).
#[inline]
#[cfg_attr(loom, allow(dead_code))] // loom's backoff yields to the model scheduler instead
pub(crate) fn wait_hook() -> Option<fn()> {
    let hook = WAIT_HOOK.load(Ordering::Acquire);
    if hook.is_null() {
        return None;
    }
    // SAFETY: only `set_wait_hook` stores non-null values here, `fn()`s cast to `*mut ()`, and
    // function and data pointers have the same size on every target the crate supports.
    Some(unsafe { core::mem::transmute::<*mut (), fn()>(hook) })
}

/// The number of CPUs the system was configured with (see [`set_cpu_count`]).
pub fn cpu_count() -> usize {
    match CPU_COUNT.load(Ordering::Acquire) {
        0 => default_cpu_count(),
        n => n,
    }
}

#[cfg(feature = "std")]
fn default_cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(not(feature = "std"))]
fn default_cpu_count() -> usize {
    1
}

/// The id of the CPU (or, with `std` and no registered source, the thread slot) running the
/// caller. A hint: the caller may be moved to another CPU right after reading it.
#[inline]
pub fn current_cpu() -> usize {
    let source = CPU_ID_SOURCE.load(Ordering::Acquire);
    if source.is_null() {
        return fallback_cpu();
    }
    // SAFETY: the only non-null values ever stored are `fn() -> usize` pointers cast to
    // `*mut ()` by `set_cpu_id_source`, and function pointers and data pointers have the same
    // size on every target the crate supports.
    let source: fn() -> usize = unsafe { core::mem::transmute::<*mut (), fn() -> usize>(source) };
    source()
}

#[cfg(all(feature = "std", not(loom)))]
#[inline]
fn fallback_cpu() -> usize {
    use core::cell::Cell;
    static NEXT_SLOT: BootUsize = BootUsize::new(0);
    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        let mut id = slot.get();
        if id == usize::MAX {
            id = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            slot.set(id);
        }
        id
    })
}

#[cfg(loom)]
fn fallback_cpu() -> usize {
    MODEL_CPU.with(|cpu| cpu.get().unwrap_or(0))
}

#[cfg(loom)]
loom::thread_local! {
    static MODEL_CPU: core::cell::Cell<Option<usize>> = core::cell::Cell::new(None);
}

/// Under loom: makes the calling model thread report `cpu` from [`current_cpu`] (models run
/// their threads on one OS thread, so std's thread slots cannot tell them apart). A model
/// thread that never calls it is a std thread with no CPU-id source: the heap gives it a
/// thread cache.
#[cfg(loom)]
pub fn set_model_cpu(cpu: usize) {
    MODEL_CPU.with(|c| c.set(Some(cpu)));
}

/// Whether the caller runs on a CPU the crate knows: a CPU-id source is registered (a kernel,
/// or a program that reads its CPU id). When not, "this CPU" is only a thread slot, and the
/// std heap gives each thread its own cache instead (DESIGN.md 13.11).
#[cfg(not(loom))]
#[cfg_attr(not(all(feature = "std", feature = "heap", unix)), allow(dead_code))]
pub(crate) fn has_cpu_source() -> bool {
    !CPU_ID_SOURCE.load(Ordering::Relaxed).is_null()
}

/// Under loom: whether the model thread called [`set_model_cpu`].
#[cfg(loom)]
pub(crate) fn has_cpu_source() -> bool {
    MODEL_CPU.with(|cpu| cpu.get().is_some())
}

#[cfg(all(not(feature = "std"), not(loom)))]
fn fallback_cpu() -> usize {
    0
}

/// `N` cache-padded slots of `T`, one per CPU (ids are reduced modulo `N`).
///
/// ```
/// use smpalloc::{SpinLock, percpu::PerCpu};
/// // One counter per CPU, each behind its own lock on its own cache line.
/// static HITS: PerCpu<SpinLock<u64>, 4> = PerCpu::new([const { SpinLock::new(0) }; 4]);
/// *HITS.current().lock() += 1;
/// assert_eq!(HITS.iter().map(|hits| *hits.lock()).sum::<u64>(), 1);
/// ```
pub struct PerCpu<T, const N: usize> {
    slots: [CachePadded<T>; N],
}

impl<T, const N: usize> PerCpu<T, N> {
    const VALID: () = assert!(N > 0, "PerCpu needs at least one slot");

    /// Wraps one value per slot.
    pub const fn new(values: [T; N]) -> Self {
        let () = Self::VALID;
        /// Reinterprets the filled array (a `const`-compatible `array_assume_init`).
        union Filled<T, const N: usize> {
            partial: ManuallyDrop<[MaybeUninit<CachePadded<T>>; N]>,
            whole: ManuallyDrop<[CachePadded<T>; N]>,
        }
        let values = ManuallyDrop::new(values);
        // `ManuallyDrop` is `repr(transparent)`: this points at `values[0]`.
        let first = (&raw const values).cast::<T>();
        let mut slots = [const { MaybeUninit::uninit() }; N];
        let mut i = 0;
        while i < N {
            // SAFETY: `first.add(i)` is element `i < N` of `values`; each element is read exactly
            // once and `values` is never dropped, so no value is duplicated.
            let value = unsafe { first.add(i).read() };
            slots[i] = MaybeUninit::new(CachePadded::new(value));
            i += 1;
        }
        let filled = Filled {
            partial: ManuallyDrop::new(slots),
        };
        // SAFETY: all N slots were initialized above, and `MaybeUninit<X>` has the layout of
        // `X`, so both union fields describe the same bytes.
        let slots = ManuallyDrop::into_inner(unsafe { filled.whole });
        Self { slots }
    }

    /// Builds each slot from its index.
    pub fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        let () = Self::VALID;
        Self {
            slots: core::array::from_fn(|i| CachePadded::new(f(i))),
        }
    }

    /// The calling CPU's slot.
    #[inline]
    pub fn current(&self) -> &T {
        self.get(current_cpu())
    }

    /// The slot of `cpu` (reduced modulo `N`).
    #[inline]
    pub fn get(&self, cpu: usize) -> &T {
        &self.slots[cpu % N]
    }

    /// The index of the calling CPU's slot.
    #[inline]
    pub fn current_index(&self) -> usize {
        current_cpu() % N
    }

    /// All slots, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &**slot)
    }

    /// The number of slots, `N`.
    pub const fn len(&self) -> usize {
        N
    }

    /// Always `false`: a `PerCpu` has at least one slot.
    pub const fn is_empty(&self) -> bool {
        false
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for PerCpu<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
