//! riscv64 machine support: the entry code, per-hart stacks, traps, SBI calls, the UART
//! console, the timer and the SiFive test device that ends the QEMU run.

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering, compiler_fence};

use smpalloc::SpinLock;

/// Harts the kernel can run (more are parked by the entry code).
pub const MAX_CPUS: usize = 8;
/// Bytes of each hart's kernel stack.
const STACK_BYTES: usize = 256 * 1024;
/// Bytes of each hart's trap stack (the trap handler only prints and exits).
const TRAP_STACK_BYTES: usize = 16 * 1024;

/// 0 until a hart wins the boot lottery. In `.data`, not `.bss`: the winner zeroes `.bss`
/// while late harts may still be reading this word.
#[unsafe(link_section = ".data.boot")]
static BOOT_LOTTERY: AtomicU32 = AtomicU32::new(0);
/// Set (Release) by the boot hart once `.bss` is zeroed and the allocators are ready; other
/// harts wait for it (Acquire) before touching anything in Rust.
#[unsafe(link_section = ".data.boot")]
pub static BOOT_READY: AtomicU32 = AtomicU32::new(0);
/// The next CPU index to hand to a secondary hart (the boot hart is CPU 0).
#[unsafe(link_section = ".data.boot")]
static NEXT_CPU: AtomicU32 = AtomicU32::new(1);

// Entry. OpenSBI enters one hart (any hart: with multi-threaded TCG it is often not hart 0) at
// `_start` with a0 = hartid, a1 = device tree. Should a firmware enter several, the lottery
// makes exactly one the boot hart; the others take the secondary path. Harts started through
// SBI HSM enter at `secondary_entry` with a0 = hartid. Every hart gets a CPU index in `tp`
// (the boot hart 0, the others 1, 2, ... in arrival order), a stack indexed by it, and a trap
// vector; the CPU index is what `cpu_id` gives smpalloc's `percpu`.
global_asm!(
    r#"
    .option arch, +a, +m, +f, +d
    .section .text.entry
    .globl _start
_start:
    la t0, {lottery}
    li t1, 1
    amoswap.w.aqrl t1, t1, (t0)
    bnez t1, secondary_entry
    li tp, 0
    li t0, 1 << 13
    csrs sstatus, t0
    la sp, __kernel_stacks
    li t0, {stack_bytes}
    add sp, sp, t0
    la t0, trap_entry
    csrw stvec, t0
    call {boot}
1:  wfi
    j 1b

    .globl secondary_entry
secondary_entry:
    la t0, {ready}
2:  lw t1, 0(t0)
    beqz t1, 2b
    fence r, rw
    la t0, {next_cpu}
    li t1, 1
    amoadd.w.aqrl t2, t1, (t0)
    li t1, {max_cpus}
    bgeu t2, t1, 4f
    mv tp, t2
    li t1, 1 << 13
    csrs sstatus, t1
    addi t2, t2, 1
    li t1, {stack_bytes}
    mul t2, t2, t1
    la sp, __kernel_stacks
    add sp, sp, t2
    la t0, trap_entry
    csrw stvec, t0
    call {secondary}
4:  wfi
    j 4b

    # Traps. An interrupt saves the caller-saved registers (integer and floating point: the
    # handler is Rust code) on the interrupted stack, calls the handler and returns with
    # `sret`. An exception is a bug: switch to this hart's trap stack and report it.
    .align 2
trap_entry:
    addi sp, sp, -{frame}
    sd ra, 0(sp)
    sd t0, 8(sp)
    sd t1, 16(sp)
    sd t2, 24(sp)
    sd t3, 32(sp)
    sd t4, 40(sp)
    sd t5, 48(sp)
    sd t6, 56(sp)
    sd a0, 64(sp)
    sd a1, 72(sp)
    sd a2, 80(sp)
    sd a3, 88(sp)
    sd a4, 96(sp)
    sd a5, 104(sp)
    sd a6, 112(sp)
    sd a7, 120(sp)
    fsd ft0, 128(sp)
    fsd ft1, 136(sp)
    fsd ft2, 144(sp)
    fsd ft3, 152(sp)
    fsd ft4, 160(sp)
    fsd ft5, 168(sp)
    fsd ft6, 176(sp)
    fsd ft7, 184(sp)
    fsd ft8, 192(sp)
    fsd ft9, 200(sp)
    fsd ft10, 208(sp)
    fsd ft11, 216(sp)
    fsd fa0, 224(sp)
    fsd fa1, 232(sp)
    fsd fa2, 240(sp)
    fsd fa3, 248(sp)
    fsd fa4, 256(sp)
    fsd fa5, 264(sp)
    fsd fa6, 272(sp)
    fsd fa7, 280(sp)
    frcsr t0
    sd t0, 288(sp)
    csrr t0, scause
    bgez t0, 6f
    call {interrupt}
    ld t0, 288(sp)
    fscsr t0
    fld ft0, 128(sp)
    fld ft1, 136(sp)
    fld ft2, 144(sp)
    fld ft3, 152(sp)
    fld ft4, 160(sp)
    fld ft5, 168(sp)
    fld ft6, 176(sp)
    fld ft7, 184(sp)
    fld ft8, 192(sp)
    fld ft9, 200(sp)
    fld ft10, 208(sp)
    fld ft11, 216(sp)
    fld fa0, 224(sp)
    fld fa1, 232(sp)
    fld fa2, 240(sp)
    fld fa3, 248(sp)
    fld fa4, 256(sp)
    fld fa5, 264(sp)
    fld fa6, 272(sp)
    fld fa7, 280(sp)
    ld ra, 0(sp)
    ld t1, 16(sp)
    ld t2, 24(sp)
    ld t3, 32(sp)
    ld t4, 40(sp)
    ld t5, 48(sp)
    ld t6, 56(sp)
    ld a0, 64(sp)
    ld a1, 72(sp)
    ld a2, 80(sp)
    ld a3, 88(sp)
    ld a4, 96(sp)
    ld a5, 104(sp)
    ld a6, 112(sp)
    ld a7, 120(sp)
    ld t0, 8(sp)
    addi sp, sp, {frame}
    sret
6:  la sp, __trap_stacks
    addi t0, tp, 1
    li t1, {trap_stack_bytes}
    mul t0, t0, t1
    add sp, sp, t0
    call {trap}
5:  j 5b

    .section .bss.stack
    .align 12
__kernel_stacks:
    .space {stack_bytes} * {max_cpus}
__trap_stacks:
    .space {trap_stack_bytes} * ({max_cpus} + 1)
    "#,
    lottery = sym BOOT_LOTTERY,
    ready = sym BOOT_READY,
    next_cpu = sym NEXT_CPU,
    boot = sym crate::kernel_boot,
    secondary = sym crate::kernel_secondary,
    trap = sym kernel_trap,
    interrupt = sym crate::storm::interrupt,
    frame = const 304,
    stack_bytes = const STACK_BYTES,
    trap_stack_bytes = const TRAP_STACK_BYTES,
    max_cpus = const MAX_CPUS,
);

unsafe extern "C" {
    static __bss_start: u8;
    static __bss_end: u8;
    static __kernel_end: u8;
}

/// Zeroes `.bss`. Only the boot hart calls it, first thing, before any other hart may run
/// Rust code (they wait for [`BOOT_READY`]).
pub fn zero_bss() {
    // SAFETY: `__bss_start..__bss_end` is the linker's `.bss` range; no Rust code has run on
    // any hart yet except this function's caller, whose stack is in `.stack` (outside the
    // range), so nothing reads or holds a reference into the bytes being zeroed.
    unsafe {
        let start = &raw const __bss_start as *mut u8;
        let end = &raw const __bss_end as *mut u8;
        core::ptr::write_bytes(start, 0, end as usize - start as usize);
    }
}

/// The first byte after the kernel image and its `.bss`.
pub fn kernel_end() -> usize {
    &raw const __kernel_end as usize
}

/// The CPU index of the running hart, kept in `tp` by the entry code (the kernel has no
/// thread-local storage, so nothing else writes `tp`). This is smpalloc's CPU-id source.
#[inline(always)]
pub fn cpu_id() -> usize {
    let id: usize;
    // SAFETY: reads a register; no memory access.
    unsafe { asm!("mv {}, tp", out(reg) id, options(nomem, nostack, preserves_flags)) };
    id
}

/// The `time` CSR (ticks at the device tree's `timebase-frequency`).
#[inline]
pub fn ticks() -> u64 {
    let t: u64;
    // SAFETY: reads the `time` CSR, which OpenSBI makes readable (or emulates) in S-mode.
    unsafe { asm!("csrr {}, time", out(reg) t, options(nomem, nostack)) };
    t
}

/// `sstatus.SIE`: supervisor interrupts enabled.
const SIE: usize = 1 << 1;
/// `sie.STIE`: supervisor timer interrupt enabled.
const STIE: usize = 1 << 5;

/// Per-CPU nesting of [`interrupts_off`], and whether interrupts were on at the outermost call
/// (xv6's `noff` and `intena`). Touched only by their own hart with interrupts off.
static OFF_DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static WERE_ON: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// smpalloc's "interrupts off" hook: disables supervisor interrupts on this hart and counts.
pub fn interrupts_off() {
    let before: usize;
    // SAFETY: clears `sstatus.SIE` and reads the old value; no memory access.
    unsafe { asm!("csrrc {}, sstatus, {}", out(reg) before, in(reg) SIE, options(nomem, nostack)) };
    let cpu = cpu_id();
    if OFF_DEPTH[cpu].load(Ordering::Relaxed) == 0 {
        WERE_ON[cpu].store(before & SIE != 0, Ordering::Relaxed);
    }
    // A load and a store, not an atomic add: only this hart touches its depth, with
    // interrupts off (this is the pin hook on every allocation: no atomic read-modify-write).
    let depth = OFF_DEPTH[cpu].load(Ordering::Relaxed);
    OFF_DEPTH[cpu].store(depth + 1, Ordering::Relaxed);
}

/// smpalloc's "interrupts back on" hook: undoes one [`interrupts_off`], enabling interrupts
/// again when the outermost one is undone and they were on before it.
pub fn interrupts_on() {
    let cpu = cpu_id();
    let depth = OFF_DEPTH[cpu].load(Ordering::Relaxed);
    if depth == 0 {
        fail(format_args!("interrupts_on without interrupts_off"));
    }
    OFF_DEPTH[cpu].store(depth - 1, Ordering::Relaxed);
    if depth == 1 && WERE_ON[cpu].load(Ordering::Relaxed) {
        // SAFETY: sets `sstatus.SIE`; no memory access.
        unsafe { asm!("csrs sstatus, {}", in(reg) SIE, options(nomem, nostack)) };
    }
}

/// Per-hart pin depth (Linux's preempt count). Touched only by its own hart: by its code and
/// by interrupt handlers, which run to completion and leave it as they found it.
static PIN_DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// smpalloc's "pin" hook. This kernel never preempts or migrates a hart's code (only interrupt
/// handlers run in between, to completion), so pinning has nothing to switch off: it counts, as
/// Linux's `preempt_disable` does, for the interrupt handler's statistics and for `unpin`'s
/// balance check. A compiler fence keeps the section's accesses after it.
#[cfg_attr(
    feature = "trylock",
    allow(dead_code, reason = "not registered in this build")
)]
pub fn pin() {
    let depth = &PIN_DEPTH[cpu_id()];
    depth.store(depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// smpalloc's "unpin" hook: undoes one [`pin`].
#[cfg_attr(
    feature = "trylock",
    allow(dead_code, reason = "not registered in this build")
)]
pub fn unpin() {
    compiler_fence(Ordering::SeqCst);
    let depth = &PIN_DEPTH[cpu_id()];
    let d = depth.load(Ordering::Relaxed);
    if d == 0 {
        fail(format_args!("unpin without pin"));
    }
    depth.store(d - 1, Ordering::Relaxed);
}

/// Whether this hart's interrupted code is inside a pinned section (for the timer handler).
pub fn pinned_here() -> bool {
    PIN_DEPTH[cpu_id()].load(Ordering::Relaxed) > 0
}

/// `scause` of a supervisor timer interrupt.
pub const TIMER_INTERRUPT: usize = (1 << 63) | 5;

/// The cause of the trap being handled.
pub fn scause() -> usize {
    let cause: usize;
    // SAFETY: reads `scause`.
    unsafe { asm!("csrr {}, scause", out(reg) cause, options(nomem, nostack)) };
    cause
}

/// Starts this hart's timer interrupts, the first `delay` ticks from now.
pub fn start_timer(delay: u64) {
    sbi::set_timer(ticks() + delay);
    // SAFETY: enables the timer interrupt source, then interrupts; the trap vector is set.
    unsafe {
        asm!("csrs sie, {}", in(reg) STIE, options(nomem, nostack));
        asm!("csrs sstatus, {}", in(reg) SIE, options(nomem, nostack));
    }
}

/// Stops this hart's timer interrupts (and masks interrupts).
pub fn stop_timer() {
    // SAFETY: disables interrupts, then the timer interrupt source.
    unsafe {
        asm!("csrc sstatus, {}", in(reg) SIE, options(nomem, nostack));
        asm!("csrc sie, {}", in(reg) STIE, options(nomem, nostack));
    }
    sbi::set_timer(u64::MAX);
}

/// Waits for an interrupt (none are enabled: used only to park a hart for good).
pub fn park() -> ! {
    loop {
        // SAFETY: `wfi` has no memory effects.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// SBI calls (the Supervisor Binary Interface that OpenSBI implements).
pub mod sbi {
    use core::arch::asm;

    /// The Hart State Management extension ("HSM").
    const HSM: usize = 0x48_534d;
    /// `SBI_SUCCESS`.
    pub const SUCCESS: isize = 0;
    /// `SBI_ERR_ALREADY_AVAILABLE`: the hart is already running.
    pub const ALREADY_AVAILABLE: isize = -6;

    fn call(ext: usize, fid: usize, a0: usize, a1: usize, a2: usize) -> (isize, usize) {
        let (error, value): (isize, usize);
        // SAFETY: an `ecall` into the firmware with the SBI calling convention; the firmware
        // preserves every register but a0 and a1 and touches no memory of ours.
        unsafe {
            asm!(
                "ecall",
                inlateout("a0") a0 => error,
                inlateout("a1") a1 => value,
                in("a2") a2,
                in("a6") fid,
                in("a7") ext,
                options(nostack),
            );
        }
        (error, value)
    }

    /// The Timer extension ("TIME").
    const TIME: usize = 0x5449_4d45;

    /// `sbi_set_timer`: the next timer interrupt at `time` (clears the pending one).
    pub fn set_timer(time: u64) {
        call(TIME, 0, time as usize, 0, 0);
    }

    /// `sbi_hart_start`: starts stopped hart `hartid` at physical address `start` with
    /// `a0 = hartid`, `a1 = opaque`, paging off. Returns the SBI error code.
    pub fn hart_start(hartid: usize, start: usize, opaque: usize) -> isize {
        call(HSM, 0, hartid, start, opaque).0
    }
}

/// The 16550 UART of QEMU's virt machine.
const UART: usize = 0x1000_0000;
/// Serialises lines from different harts.
static CONSOLE: SpinLock<()> = SpinLock::new(());

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            let base = UART as *mut u8;
            // SAFETY: the UART's registers on QEMU's virt machine: the line status register
            // (offset 5, bit 5 = transmitter empty) and the transmit register (offset 0).
            unsafe {
                while base.add(5).read_volatile() & 0x20 == 0 {}
                base.write_volatile(byte);
            }
        }
        Ok(())
    }
}

/// Prints to the console, one whole call at a time.
pub fn print(args: fmt::Arguments) {
    let _line = CONSOLE.lock();
    let _ = Uart.write_fmt(args);
}

/// Prints without waiting long for the console lock: a hart that panicked while printing must
/// still get its message out.
fn print_urgent(args: fmt::Arguments) {
    let mut guard = None;
    for _ in 0..1_000_000 {
        guard = CONSOLE.try_lock();
        if guard.is_some() {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
    drop(guard);
}

#[macro_export]
macro_rules! println {
    () => { $crate::arch::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::arch::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// The SiFive test device: a write ends QEMU with the given status.
const TEST_DEVICE: usize = 0x10_0000;
/// Set by the first hart to decide the outcome, so a second failure does not interleave.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Ends the QEMU run: status 0 on success, `code` (nonzero) otherwise.
pub fn exit(success: bool, code: u16) -> ! {
    if !EXITING.swap(true, Ordering::AcqRel) {
        let value = if success {
            0x5555
        } else {
            (u32::from(code.max(1)) << 16) | 0x3333
        };
        // SAFETY: the test device's register on QEMU's virt machine; the write ends the run.
        unsafe { (TEST_DEVICE as *mut u32).write_volatile(value) };
    }
    park()
}

/// Reports a failure and ends the run with a failing status.
pub fn fail(args: fmt::Arguments) -> ! {
    print_urgent(format_args!("FAIL on cpu {}: {}\n", cpu_id(), args));
    exit(false, 1)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail(format_args!("panic: {info}"))
}

/// Any trap is a bug here (no interrupts are enabled, nothing faults by design): print what
/// happened and fail.
extern "C" fn kernel_trap() -> ! {
    let (scause, sepc, stval): (usize, usize, usize);
    // SAFETY: reads three CSRs.
    unsafe {
        asm!("csrr {}, scause", out(reg) scause, options(nomem, nostack));
        asm!("csrr {}, sepc", out(reg) sepc, options(nomem, nostack));
        asm!("csrr {}, stval", out(reg) stval, options(nomem, nostack));
    }
    fail(format_args!(
        "trap: scause={scause:#x} sepc={sepc:#x} stval={stval:#x}"
    ))
}
