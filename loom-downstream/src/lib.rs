//! # Model-check your code with smpalloc inside
//!
//! Kernel authors run [loom](https://docs.rs/loom) over their own crates with
//! `RUSTFLAGS="--cfg loom"`. smpalloc takes the same `cfg`: every atomic, lock and per-CPU
//! slot of the library becomes loom's, so loom explores smpalloc's interleavings together
//! with yours. This crate (not published) holds the models a kernel author would write, run
//! by CI; copy its `tests/models.rs` as a start:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test --release -p smpalloc-loom-downstream
//! ```
//!
//! In your `Cargo.toml`, depend on loom 0.7 (the version smpalloc uses, so both share one
//! scheduler) under `[target.'cfg(loom)'.dependencies]`, and switch your own atomics with
//! `#[cfg(loom)] use loom::sync::atomic::...` / `#[cfg(not(loom))] use core::sync::atomic::...`.
//!
//! What a model must do differently from a kernel:
//!
//! - **No statics.** loom's atomics have no `const fn new`, so under `cfg(loom)` the
//!   constructors are plain functions: build each allocator inside the model closure and share
//!   it with [`Arc`](https://docs.rs/loom/latest/loom/sync/struct.Arc.html). loom's threads
//!   need `'static` data, so a heap over a page allocator owns it in a model
//!   (`SmpHeap<BuddyPageAllocator<..>, 2>`) where a kernel borrows a static one
//!   (`SmpHeap<&'static BuddyPageAllocator<..>, 2>`); `&T` forwards every call to `T`.
//! - **Small capacities.** A model's closure runs on a 32 KiB coroutine stack. Under loom a
//!   `BitmapPageAllocator256M` is 9 KiB and fits; the default `BitmapPageAllocator` (4 GiB,
//!   about 140 KiB under loom) overflows it ("coroutine in thread ... has overflowed its
//!   stack"). Use `BitmapPageAllocator256M` or `PidAllocator<1>`..`<64>`, or run the model's
//!   body on a `loom::thread::Builder::new().stack_size(n)` thread (loom 0.7 hands `n` to its
//!   coroutine library, which counts machine words: `1 << 17` is 1 MiB, enough for the 4 GiB
//!   bitmap; the 64 GiB and 1 TiB ones do not belong in a model). Under loom the library
//!   shrinks its own per-CPU and cache sizes (heap magazines of 2 objects, page caches of
//!   4 pages), so the interleavings stay few.
//! - **The same memory in every execution.** loom replays an execution by its schedule; if
//!   what your code or the heap does depends on addresses (the heap's page map builds and
//!   walks nodes as a block's address says), memory placed differently in each execution can
//!   make loom stop with "Is the model fully deterministic?". Allocate the region a page
//!   allocator hands out once, outside `loom::model` / `Builder::check`, and pass its address
//!   in (`heap_over_buddy_on_two_cpus` does); the bitmap and buddy page allocators never touch
//!   their pages, so over them any fixed address range will do.
//! - **Budgets.** `check()` walks a whole structure, more than loom's default 1,000 branches
//!   per execution: raise `Builder::max_branches`. Bound preemptions (`LOOM_MAX_PREEMPTIONS`
//!   or `Builder::preemption_bound`; 3 here): the heap model takes about a second at 3 and
//!   minutes unbounded.
//! - **CPUs.** A model thread is a CPU once it calls `smpalloc::percpu::set_model_cpu(i)`
//!   (there only under `cfg(loom)`); a thread that does not is a std thread with its own heap
//!   cache.
#![no_std]
