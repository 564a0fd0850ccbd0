//! The one place that names atomics, `UnsafeCell`, spin hints and thread yields.
//!
//! Every concurrent structure in the crate reaches its primitives through this module, so that
//! `RUSTFLAGS="--cfg loom"` swaps all of them for [loom]'s model-checked versions at once:
//!
//! | item | normal build | `cfg(loom)` |
//! |---|---|---|
//! | `atomic::*` | `portable_atomic` (core atomics where the target has them, fallbacks elsewhere) | `loom::sync::atomic` |
//! | [`UnsafeCell`] | a `core::cell::UnsafeCell` with loom's `with`/`with_mut`/`get_mut` API | `loom::cell::UnsafeCell` |
//! | `Backoff::spin` (CAS retry loops) | exponential spin hints, never yields | `loom::thread::yield_now` on every step |
//! | [`thread_locals!`] (std only) | `std::thread_local!` | `loom::thread_local!` |
//! | `Backoff::snooze` (waits on another thread) | bounded spin, then the `percpu` wait hook, else `std::thread::yield_now` (`std`), else spin hints | `loom::thread::yield_now` on every step |
//!
//! Loom's atomics are not `const`-constructible, so every constructor in the crate that must be a
//! `const fn` (for `static` allocators) is declared with [`loom_const_fn!`], which drops the
//! `const` under `cfg(loom)`; models build fresh instances instead of statics. The capacities a
//! model shrinks (magazines, node fanouts, per-CPU slots) come from one table, [`model::Sizes`].
//!
//! [loom]: https://docs.rs/loom

pub(crate) mod model;

pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
    #[cfg(not(loom))]
    pub(crate) use portable_atomic::{AtomicBool, AtomicUsize};

    // Wider and pointer atomics, each used by one family (AtomicU64 and fence: radix nodes;
    // AtomicU32: page metadata; AtomicPtr: TLSF arenas); unused when that family is not built.
    #[cfg(loom)]
    #[allow(unused_imports)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, fence};
    #[cfg(not(loom))]
    #[allow(unused_imports)]
    pub(crate) use portable_atomic::{AtomicPtr, AtomicU32, AtomicU64, fence};

    pub(crate) use core::sync::atomic::Ordering;

    /// A compiler-only fence (no instruction): orders a CPU's plain accesses against an
    /// interrupt on the same CPU (the pinned sections, docs/design/02-percpu.md §"The CPU-local section (pinned mode)"). Loom has no model of
    /// it and needs none: its threads never share a CPU.
    #[allow(unused_imports)]
    pub(crate) use core::sync::atomic::compiler_fence;

    /// Boot-time cells that no modeled protocol touches: every registration of `percpu` (the
    /// CPU-id source, the CPU count, the interrupt, pin and wait hooks, the interrupt point of
    /// the tests) and a few process-wide counters (std thread slots, heap ids, the thread
    /// caches' pthread key and record counts). They are plain core/portable atomics even
    /// under loom, because they must be `static`s and outlive a model's executions; none of
    /// them orders other memory that a model checks.
    pub(crate) mod boot {
        pub(crate) use portable_atomic::{AtomicPtr, AtomicUsize};
    }

    /// An array of `N` atomics holding `value`; `const` outside loom.
    #[cfg(not(loom))]
    #[cfg_attr(not(feature = "id"), allow(dead_code))] // the bitmap's; unused in a TLSF-only build
    pub(crate) const fn usize_array<const N: usize>(value: usize) -> [AtomicUsize; N] {
        let mut words = [const { AtomicUsize::new(0) }; N];
        let mut i = 0;
        while i < N {
            words[i] = AtomicUsize::new(value);
            i += 1;
        }
        words
    }

    /// An array of `N` atomics holding `value`; loom atomics cannot be built in `const`.
    #[cfg(loom)]
    #[cfg_attr(not(feature = "id"), allow(dead_code))]
    pub(crate) fn usize_array<const N: usize>(value: usize) -> [AtomicUsize; N] {
        core::array::from_fn(|_| AtomicUsize::new(value))
    }
}

/// Declares a constructor that is a `const fn` in normal builds and a plain `fn` under loom.
macro_rules! loom_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$meta])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$meta])* $vis fn $($rest)*
    };
}
pub(crate) use loom_const_fn;

/// Declares thread-local statics: `std::thread_local!` in a normal build (a `const { .. }`
/// initialiser stays `const`, so the access needs no lazy-init check), `loom::thread_local!`
/// under loom (a model's threads share one OS thread, so only loom's thread-locals tell them
/// apart; the `const` is dropped, loom has none). Normal builds need `std`.
#[cfg(all(feature = "std", not(loom)))]
macro_rules! thread_locals {
    ($($(#[$attr:meta])* static $name:ident: $t:ty = const $init:block;)+) => {
        std::thread_local! { $($(#[$attr])* static $name: $t = const $init;)+ }
    };
    ($($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;)+) => {
        std::thread_local! { $($(#[$attr])* static $name: $t = $init;)+ }
    };
}
/// Declares thread-local statics (see the non-loom definition).
#[cfg(loom)]
macro_rules! thread_locals {
    ($($(#[$attr:meta])* static $name:ident: $t:ty = const $init:block;)+) => {
        loom::thread_local! { $($(#[$attr])* static $name: $t = $init;)+ }
    };
    ($($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;)+) => {
        loom::thread_local! { $($(#[$attr])* static $name: $t = $init;)+ }
    };
}
#[cfg(any(feature = "std", loom))]
pub(crate) use thread_locals;

/// Spin-hint rounds before [`Backoff::snooze`] stops spinning and starts to yield: rounds
/// `0..=SPIN_LIMIT` issue `1, 2, 4, .., 2^SPIN_LIMIT` hints (127 in all, a few microseconds),
/// every later round yields (or calls the wait hook). [`Backoff::spin`] stays at
/// `2^SPIN_LIMIT` hints a round and never yields.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 6;

/// Exponential backoff, the crate's own (no crossbeam type): `spin` for CAS retry loops, which
/// never wait for another thread, and `snooze` for waits on another thread's progress (a held
/// lock, a lazy start, a free in flight), which spin a bounded time and then yield. Under loom
/// every step is a `loom::thread::yield_now` (a spin would never let loom schedule the thread
/// being waited for).
///
/// Creating one is free (a counter in a register); keep it off fast paths anyway, created only
/// once a first attempt has failed.
pub(crate) struct Backoff {
    /// Rounds so far, saturating at `SPIN_LIMIT + 1` ("past the spin bound").
    #[cfg(not(loom))]
    step: core::cell::Cell<u32>,
}

impl Backoff {
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            step: core::cell::Cell::new(0),
        }
    }

    /// Backs off after a failed CAS on a contended word: `1, 2, 4, ..` spin hints, capped at
    /// `2^SPIN_LIMIT`; never yields (the retry does not wait for any one thread).
    #[inline]
    #[cfg_attr(not(feature = "id"), allow(dead_code))] // CAS loops live in the id/page families
    pub(crate) fn spin(&self) {
        #[cfg(not(loom))]
        {
            let step = self.step.get();
            spin_hints(1 << step.min(SPIN_LIMIT));
            if step <= SPIN_LIMIT {
                self.step.set(step + 1);
            }
        }
        #[cfg(loom)]
        loom::thread::yield_now();
    }

    /// Backs off while waiting for another thread to make progress: the first `SPIN_LIMIT + 1`
    /// rounds spin (`1, 2, 4, .., 2^SPIN_LIMIT` hints), every later round gives the CPU away
    /// once, so that a waited-for thread that was preempted (threads may outnumber CPUs) can
    /// run: the kernel's wait hook if one is registered ([`crate::percpu::set_wait_hook`]),
    /// else `std::thread::yield_now` with `std`, else `2^SPIN_LIMIT` more spin hints.
    #[inline]
    pub(crate) fn snooze(&self) {
        #[cfg(not(loom))]
        {
            let step = self.step.get();
            if step <= SPIN_LIMIT {
                spin_hints(1 << step);
                self.step.set(step + 1);
            } else {
                wait_once();
            }
        }
        #[cfg(loom)]
        loom::thread::yield_now();
    }
}

/// `count` spin-loop hints (`pause` on x86, `yield`/`isb` on Arm).
#[cfg(not(loom))]
#[inline]
fn spin_hints(count: u32) {
    for _ in 0..count {
        core::hint::spin_loop();
    }
}

/// One round of waiting past the spin bound: the registered wait hook, else a thread yield
/// (`std`; `sched_yield` in a `no_std` build with `mmap` on unix), else a spin round (`no_std`
/// without a hook).
#[cfg(not(loom))]
#[cold]
fn wait_once() {
    #[cfg(all(test, feature = "std"))]
    tests::count_wait();
    if let Some(hook) = crate::percpu::wait_hook() {
        hook();
        return;
    }
    #[cfg(feature = "std")]
    std::thread::yield_now();
    // A `no_std` build for user space (the C library over `MmapPages`): the kernel's yield.
    #[cfg(all(not(feature = "std"), feature = "mmap", unix))]
    // SAFETY: `sched_yield` has no preconditions.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(not(any(feature = "std", all(feature = "mmap", unix))))]
    spin_hints(1 << SPIN_LIMIT);
}

#[cfg(all(test, feature = "std", not(loom)))]
pub(crate) mod tests {
    use core::cell::Cell;

    use super::atomic::{AtomicUsize, Ordering};

    crate::sync::thread_locals! {
        /// Whether this thread's waits past the spin bound are counted in [`WAITS`].
        static WATCHED: Cell<bool> = const { Cell::new(false) };
    }
    /// Rounds past the spin bound taken by watched threads.
    pub(crate) static WAITS: AtomicUsize = AtomicUsize::new(0);

    /// Counts this thread's waits past the spin bound from now on.
    pub(crate) fn watch_this_thread() {
        WATCHED.with(|watched| watched.set(true));
    }

    pub(super) fn count_wait() {
        if WATCHED.with(Cell::get) {
            WAITS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::{MutPtr, UnsafeCell};

#[cfg(not(loom))]
pub(crate) use self::cell::{MutPtr, UnsafeCell};

/// A shared reference through a tracked mutable pointer, without creating a `&mut` first (so
/// two shared borrows of, say, one lock guard may coexist, as Stacked Borrows requires).
///
/// # Safety
/// No mutable reference to the cell's contents may exist while the returned reference lives
/// (for the crate's `SpinLock`, the guard is borrowed shared, so its `DerefMut` cannot run).
#[inline]
pub(crate) unsafe fn deref_shared<T>(ptr: &MutPtr<T>) -> &T {
    #[cfg(loom)]
    // SAFETY: the pointer comes from a live loom cell whose access `ptr` tracks; no `&mut`
    // exists, by the caller's contract.
    let shared = ptr.with(|raw| unsafe { &*raw });
    #[cfg(not(loom))]
    // SAFETY: the pointer comes from a live `UnsafeCell`; no `&mut` exists, by the caller's
    // contract.
    let shared = unsafe { &*ptr.0 };
    shared
}

#[cfg(not(loom))]
mod cell {
    /// `core::cell::UnsafeCell` with the access API of `loom::cell::UnsafeCell`, so code written
    /// once is checked by loom for unsynchronized access.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// A tracked mutable pointer to the contents (loom checks aliasing while it lives).
        #[inline]
        pub(crate) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }

        /// Safe access through `&mut self` (no tracking needed: the borrow is exclusive).
        pub(crate) fn get_mut_exclusive(&mut self) -> &mut T {
            self.0.get_mut()
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }

    /// Mirrors `loom::cell::MutPtr`.
    #[derive(Debug)]
    pub(crate) struct MutPtr<T>(pub(super) *mut T);

    impl<T> MutPtr<T> {
        /// # Safety
        /// The caller must guarantee exclusive access to the cell's contents for as long as the
        /// returned reference lives (for the crate's `SpinLock`, holding the lock).
        #[inline]
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the pointer comes from a live `UnsafeCell`; exclusivity is the caller's
            // contract above.
            unsafe { &mut *self.0 }
        }
    }
}
