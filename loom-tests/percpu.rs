//! Loom model of the CPU-local section (`PerCpu::lock_local` with pin hooks; docs/design/02-percpu.md §"The CPU-local section (pinned mode)"):
//! an "interrupt" on the same CPU never enters a slot its task is inside, never waits, and a
//! task on another CPU is unaffected. Empty unless built with `--cfg loom`.
//!
//! Loom runs model threads concurrently, so the model builds the CPU: a token per CPU that a
//! task holds while pinned and gives up only at the library's interrupt points
//! (`percpu::model_interrupt_point`), where the handler thread, on the same CPU id, may take
//! it, run to completion, and give it back.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_percpu`
#![cfg(loom)]

use core::cell::Cell;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use smpalloc::SpinLock;
use smpalloc::percpu::{self, LocalBusy, PerCpu};

loom::lazy_static! {
    /// One token per model CPU: held by whoever runs on it (a pinned task, or a handler).
    static ref TOKENS: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
}

loom::thread_local! {
    /// This model thread's CPU.
    static CPU: Cell<usize> = Cell::new(0);
    /// Pin depth (the token is held while it is above 0).
    static DEPTH: Cell<usize> = Cell::new(0);
    /// This thread is an interrupt handler (it holds the token throughout; no nesting).
    static HANDLER: Cell<bool> = Cell::new(false);
}

fn take_token() {
    let token = &TOKENS[CPU.with(Cell::get)];
    while token
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        thread::yield_now();
    }
}

fn give_token() {
    TOKENS[CPU.with(Cell::get)].store(false, Ordering::Release);
}

fn pin() {
    let depth = DEPTH.with(Cell::get);
    if depth == 0 {
        take_token();
    }
    DEPTH.with(|d| d.set(depth + 1));
}

fn unpin() {
    let depth = DEPTH
        .with(Cell::get)
        .checked_sub(1)
        .expect("unpin without pin");
    DEPTH.with(|d| d.set(depth));
    if depth == 0 {
        give_token();
    }
}

/// An interrupt may arrive here: a pinned task lets the handler have the CPU, then resumes.
fn interrupt_point() {
    if DEPTH.with(Cell::get) > 0 && !HANDLER.with(Cell::get) {
        give_token();
        thread::yield_now();
        take_token();
    }
}

fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
    percpu::set_model_cpu(cpu);
}

/// A slot's contents: a count updated in two steps, with an interrupt point between.
type Slots = PerCpu<SpinLock<usize>, 2>;

/// One CPU-local section: read, interrupt point, write. `true` when it entered.
fn section(slots: &Slots) -> bool {
    match slots.lock_local(|slot| slot) {
        Ok((_, mut count)) => {
            let seen = *count;
            interrupt_point();
            *count = seen + 1;
            true
        }
        Err(busy) => {
            assert_eq!(busy, LocalBusy::Pinned, "pinned mode never reports Shared");
            false
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    // SAFETY: every slot below is reached only through `lock_local` on its own model CPU
    // (the token makes "pinned" true), and each model CPU has a unique id below 2.
    unsafe { percpu::set_pin_hooks(pin, unpin) };
    percpu::set_model_interrupt_point(interrupt_point);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A task on CPU 0 runs a section; an interrupt handler on CPU 0 runs one at any interrupt
/// point (or before or after); a task on CPU 1 runs one. Every entered section's update lands
/// exactly once, the task always enters (the handler ran to completion before it resumed or
/// entered), and the flags end clear.
#[test]
fn interrupt_sees_busy_and_takes_the_slow_path() {
    model(|| {
        let slots: Arc<Slots> = Arc::new(PerCpu::from_fn(|_| SpinLock::new(0)));
        let handler = {
            let slots = slots.clone();
            thread::spawn(move || {
                on_cpu(0);
                HANDLER.with(|h| h.set(true));
                // The interrupt: the CPU is the handler's until it returns.
                take_token();
                DEPTH.with(|d| d.set(1));
                let entered = section(&slots);
                DEPTH.with(|d| d.set(0));
                give_token();
                entered
            })
        };
        let other = {
            let slots = slots.clone();
            thread::spawn(move || {
                on_cpu(1);
                assert!(section(&slots), "CPU 1's slot is never busy");
            })
        };
        on_cpu(0);
        assert!(section(&slots), "a task's own slot is free when it pins");
        let handler_entered = handler.join().unwrap();
        other.join().unwrap();
        let expected = 1 + usize::from(handler_entered);
        // Quiescent: read both slots through their own CPUs' sections.
        let (_, count) = slots.lock_local(|slot| slot).expect("CPU 0's slot is free");
        assert_eq!(*count, expected, "a section's update was lost");
        drop(count);
        on_cpu(1);
        let (_, count) = slots.lock_local(|slot| slot).expect("CPU 1's slot is free");
        assert_eq!(*count, 1);
        drop(count);
        assert!(
            slots.iter().all(|slot| !slot.is_locked()),
            "a busy flag left set"
        );
    });
}

/// A handler that finds the slot busy returns at once (the model would deadlock if it
/// waited: the task cannot resume while the handler holds the CPU); nested sections on one
/// CPU (a section that reaches the same slot again) are refused too.
#[test]
fn nested_entry_is_refused() {
    model(|| {
        let slots: Arc<Slots> = Arc::new(PerCpu::from_fn(|_| SpinLock::new(0)));
        on_cpu(0);
        let (_, mut count) = slots.lock_local(|slot| slot).expect("free");
        assert_eq!(
            slots.lock_local(|slot| slot).err(),
            Some(LocalBusy::Pinned),
            "re-entry must see busy"
        );
        *count += 1;
        drop(count);
        assert_eq!(DEPTH.with(Cell::get), 0, "pins and unpins balance");
        assert!(!slots.get(0).is_locked());
    });
}
