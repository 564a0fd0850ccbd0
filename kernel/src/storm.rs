//! The process storm: every hart forks and exits "processes" as fast as it can, each holding a
//! PID, a process-table slot, a kernel stack from the buddy allocator, a page-table page from
//! the bitmap allocator and a few heap objects; harts look up each other's PIDs and exit each
//! other's processes. Ownership tables catch any PID, slot or page handed out twice, fill
//! patterns catch overlapping memory, and at the end every count must be back where it began.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use smpalloc::SpinLock;
use smpalloc::heap::HeapStats;
use smpalloc_testkit::Rng;

use crate::arch::{self, MAX_CPUS};
use crate::{BITMAP, BUDDY, HEAP, Machine, PAGE, PIDS, RAM_BASE, SLOTS, WINDOW_PAGES, println};

/// Storm iterations per hart.
const ITERATIONS: u64 = 100_000;
/// A hart keeps between `LIVE_MIN` and `LIVE_MAX` live processes.
const LIVE_MIN: usize = 16;
const LIVE_MAX: usize = 64;
/// Kernel stacks are `2^KSTACK_ORDER` pages.
const KSTACK_ORDER: usize = 2;
/// One exit in `CROSS_EXIT` is handed to another hart.
const CROSS_EXIT: usize = 4;
/// Processes a mailbox may hold.
const MAILBOX_MAX: usize = 32;
/// One fork in `BIG` also allocates a TLSF-sized buffer (8-32 KiB).
const BIG: usize = 16;

/// Timer ticks between interrupts on each hart (200 µs at QEMU's 10 MHz).
const TIMER_INTERVAL: u64 = 2_000;

/// The owner recorded for pages taken by interrupt handlers (above every PID).
const INTERRUPT_OWNER: usize = 1 << 20;

/// PID -> 1 + the CPU that forked it (0 = free).
static PID_OWNER: [AtomicU8; 1 << 18] = [const { AtomicU8::new(0) }; 1 << 18];
/// Process-table slot -> PID (0 = free).
static SLOT_PID: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];
/// RAM page -> PID of the process it belongs to (0 = free).
static PAGE_OWNER: [AtomicU32; WINDOW_PAGES] = [const { AtomicU32::new(0) }; WINDOW_PAGES];

/// Processes handed from one hart to another to exit there.
#[allow(
    clippy::vec_box,
    reason = "the box is the process's heap object, freed on the reaping hart"
)]
static MAILBOX: [SpinLock<Vec<Box<Process>>>; MAX_CPUS] =
    [const { SpinLock::new(Vec::new()) }; MAX_CPUS];
/// The PID each hart forked last (what the others "wait" on).
static LAST_PID: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

static HARTS: AtomicUsize = AtomicUsize::new(0);
static TIMEBASE: AtomicU64 = AtomicU64::new(0);
static ONLINE: AtomicUsize = AtomicUsize::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static FINISHED: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Timer interrupts that arrived inside a pinned section, per hart.
static INSIDE_SECTION: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Timer interrupts taken by each hart.
static INTERRUPTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The object each hart's interrupt handler keeps until its next interrupt.
static PARKED: [AtomicPtr<Parked>; MAX_CPUS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];

/// A heap object allocated in one interrupt and freed in the next.
struct Parked {
    cpu: usize,
    words: Vec<u64>,
}

/// The timer interrupt handler (called by the trap vector with interrupts off): allocates and
/// frees heap objects and a page while the code it interrupted may be anywhere in the same
/// allocators, holding their per-CPU slots. smpalloc's locks mask interrupts
/// (`percpu::set_interrupt_hooks`), so it never waits for a lock its own hart holds.
pub extern "C" fn interrupt() {
    let cause = arch::scause();
    if cause != arch::TIMER_INTERRUPT {
        arch::fail(format_args!("unexpected interrupt, scause={cause:#x}"));
    }
    arch::sbi::set_timer(arch::ticks() + TIMER_INTERVAL);
    let cpu = arch::cpu_id();
    if arch::pinned_here() {
        // The interrupted code is inside a CPU-local section: the handler's allocations on
        // that structure take the slow path (a plain store: only this hart counts here).
        let inside = &INSIDE_SECTION[cpu];
        inside.store(inside.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    let n = INTERRUPTS[cpu].fetch_add(1, Ordering::Relaxed) + 1;
    let fresh = Box::new(Parked {
        cpu,
        words: vec![n; 1 + n as usize % 100],
    });
    let old = PARKED[cpu].swap(Box::into_raw(fresh), Ordering::Relaxed);
    if !old.is_null() {
        // SAFETY: every non-null pointer in `PARKED[cpu]` came from `Box::into_raw` above, and
        // only this hart (its handler, or its storm loop with interrupts off) takes it out.
        let old = unsafe { Box::from_raw(old) };
        if old.cpu != cpu || old.words.iter().any(|&w| w != n - 1) {
            arch::fail(format_args!(
                "the interrupt handler's object was overwritten"
            ));
        }
    }
    let page = BUDDY
        .alloc_order(0)
        .unwrap_or_else(|e| arch::fail(format_args!("page in an interrupt: {e:?}")));
    claim_pages(page, 1, INTERRUPT_OWNER);
    release_pages(page, 1, INTERRUPT_OWNER);
    if let Err(e) = BUDDY.free_order(page, 0) {
        arch::fail(format_args!("free a page in an interrupt: {e:?}"));
    }
}

/// What each hart did, published when it is done.
struct Published {
    forks: AtomicU64,
    exits: AtomicU64,
    cross_exits: AtomicU64,
    waits: AtomicU64,
    allocator_calls: AtomicU64,
    ticks: AtomicU64,
}

static PUBLISHED: [Published; MAX_CPUS] = [const {
    Published {
        forks: AtomicU64::new(0),
        exits: AtomicU64::new(0),
        cross_exits: AtomicU64::new(0),
        waits: AtomicU64::new(0),
        allocator_calls: AtomicU64::new(0),
        ticks: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// A process: what a fork allocates and an exit frees.
struct Process {
    pid: usize,
    slot: usize,
    /// `2^KSTACK_ORDER` pages from the buddy allocator.
    kstack: usize,
    /// One page from the bitmap allocator.
    page_table: usize,
    /// One page from the buddy allocator's per-CPU page lists.
    trap_frame: usize,
    name: String,
    files: Vec<u32>,
    buffer: Option<Vec<u64>>,
}

#[derive(Default)]
struct Counters {
    forks: u64,
    exits: u64,
    cross_exits: u64,
    waits: u64,
    allocator_calls: u64,
}

/// Called by the boot hart before it lets the others in.
pub fn prepare(machine: &Machine) {
    TIMEBASE.store(machine.timebase, Ordering::Relaxed);
}

fn page_owner(addr: usize) -> &'static AtomicU32 {
    &PAGE_OWNER[(addr - RAM_BASE) / PAGE]
}

/// Marks `pages` pages at `addr` as `pid`'s, failing if any is someone's already, and writes
/// the PID into the first and last word of each page.
fn claim_pages(addr: usize, pages: usize, pid: usize) {
    for page in (addr..addr + pages * PAGE).step_by(PAGE) {
        if let Err(owner) =
            page_owner(page).compare_exchange(0, pid as u32, Ordering::AcqRel, Ordering::Acquire)
        {
            arch::fail(format_args!(
                "page {page:#x} handed to PID {pid} while PID {owner} holds it"
            ));
        }
        let words = page as *mut u64;
        // SAFETY: the page allocator just gave this page to us (the ownership table proves no
        // other process holds it); it is RAM, identity-mapped (paging is off).
        unsafe {
            words.write_volatile(pid as u64);
            words.add(PAGE / 8 - 1).write_volatile(!(pid as u64));
        }
    }
}

/// Checks and releases what [`claim_pages`] marked.
fn release_pages(addr: usize, pages: usize, pid: usize) {
    for page in (addr..addr + pages * PAGE).step_by(PAGE) {
        let words = page as *const u64;
        // SAFETY: the page is still ours (its owner entry says `pid` until the exchange below).
        let (first, last) = unsafe {
            (
                words.read_volatile(),
                words.add(PAGE / 8 - 1).read_volatile(),
            )
        };
        if first != pid as u64 || last != !(pid as u64) {
            arch::fail(format_args!("page {page:#x} of PID {pid} was overwritten"));
        }
        if let Err(owner) =
            page_owner(page).compare_exchange(pid as u32, 0, Ordering::AcqRel, Ordering::Acquire)
        {
            arch::fail(format_args!(
                "page {page:#x} of PID {pid} is owned by {owner}"
            ));
        }
    }
}

fn fork(cpu: usize, rng: &mut Rng, counters: &mut Counters) -> Box<Process> {
    let Some(pid) = PIDS.allocate_pid() else {
        arch::fail(format_args!("PID space exhausted"))
    };
    if let Err(owner) =
        PID_OWNER[pid].compare_exchange(0, cpu as u8 + 1, Ordering::AcqRel, Ordering::Acquire)
    {
        arch::fail(format_args!(
            "PID {pid} handed out twice (cpu {} holds it)",
            owner - 1
        ));
    }
    let Some(slot) = SLOTS.allocate_raw() else {
        arch::fail(format_args!("process table full"))
    };
    if let Err(holder) =
        SLOT_PID[slot].compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
    {
        arch::fail(format_args!(
            "slot {slot} handed to PID {pid} while PID {holder} holds it"
        ));
    }
    let kstack = BUDDY
        .alloc_order(KSTACK_ORDER)
        .unwrap_or_else(|e| arch::fail(format_args!("kernel stack: {e:?}")));
    claim_pages(kstack, 1 << KSTACK_ORDER, pid);
    let page_table = BITMAP
        .alloc_pages(1, PAGE)
        .unwrap_or_else(|e| arch::fail(format_args!("page-table page: {e:?}")));
    claim_pages(page_table, 1, pid);
    let trap_frame = BUDDY
        .alloc_order(0)
        .unwrap_or_else(|e| arch::fail(format_args!("trap-frame page: {e:?}")));
    claim_pages(trap_frame, 1, pid);
    let files = vec![pid as u32; rng.below(24)];
    let buffer = (rng.below(BIG) == 0).then(|| vec![pid as u64; 1024 << rng.below(3)]);
    counters.allocator_calls += 7 + u64::from(!files.is_empty()) + u64::from(buffer.is_some());
    let process = Box::new(Process {
        pid,
        slot,
        kstack,
        page_table,
        trap_frame,
        name: format!("proc-{pid}"),
        files,
        buffer,
    });
    if let Err(e) = PIDS.register_pid_mapping(pid, slot) {
        arch::fail(format_args!("register PID {pid}: {e:?}"));
    }
    LAST_PID[cpu].store(pid, Ordering::Relaxed);
    counters.forks += 1;
    process
}

fn exit(process: Box<Process>, counters: &mut Counters) {
    let Process {
        pid,
        slot,
        kstack,
        page_table,
        trap_frame,
        ref name,
        ref files,
        ref buffer,
    } = *process;
    let named = name
        .strip_prefix("proc-")
        .and_then(|n| n.parse::<usize>().ok());
    let filled = files.iter().all(|&f| f == pid as u32)
        && buffer
            .as_ref()
            .is_none_or(|b| b.iter().all(|&w| w == pid as u64));
    if named != Some(pid) || !filled {
        arch::fail(format_args!("heap objects of PID {pid} were overwritten"));
    }
    match PIDS.unregister_pid_mapping(pid) {
        Some(s) if s == slot => {}
        other => arch::fail(format_args!(
            "PID {pid} mapped to {other:?}, not slot {slot}"
        )),
    }
    if SLOT_PID[slot]
        .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        arch::fail(format_args!("slot {slot} lost PID {pid}"));
    }
    if let Err(e) = SLOTS.free(slot) {
        arch::fail(format_args!("free slot {slot}: {e:?}"));
    }
    release_pages(kstack, 1 << KSTACK_ORDER, pid);
    if let Err(e) = BUDDY.free_order(kstack, KSTACK_ORDER) {
        arch::fail(format_args!("free kernel stack {kstack:#x}: {e:?}"));
    }
    release_pages(page_table, 1, pid);
    if let Err(e) = BITMAP.try_dealloc_pages(page_table, 1) {
        arch::fail(format_args!("free page-table page {page_table:#x}: {e:?}"));
    }
    release_pages(trap_frame, 1, pid);
    if let Err(e) = BUDDY.free_order(trap_frame, 0) {
        arch::fail(format_args!("free trap-frame page {trap_frame:#x}: {e:?}"));
    }
    if PID_OWNER[pid].swap(0, Ordering::AcqRel) == 0 {
        arch::fail(format_args!("PID {pid} exited twice"));
    }
    if let Err(e) = PIDS.free_pid(pid) {
        arch::fail(format_args!("free PID {pid}: {e:?}"));
    }
    counters.allocator_calls += 7 + u64::from(!files.is_empty()) + u64::from(buffer.is_some());
    counters.exits += 1;
    drop(process);
}

/// One hart's share of the storm.
fn storm(cpu: usize) {
    let harts = HARTS.load(Ordering::Relaxed);
    let mut rng =
        Rng::new(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let mut counters = Counters::default();
    let mut live: BTreeMap<usize, Box<Process>> = BTreeMap::new();
    let start = arch::ticks();
    arch::start_timer(TIMER_INTERVAL);
    for i in 0..ITERATIONS {
        let grow = match live.len() {
            n if n < LIVE_MIN => true,
            n if n >= LIVE_MAX => false,
            _ => rng.below(2) == 0,
        };
        if grow {
            let process = fork(cpu, &mut rng, &mut counters);
            live.insert(process.pid, process);
        } else {
            let from = rng.below(1 << 18);
            let pid = *live
                .range(from..)
                .next()
                .or_else(|| live.iter().next())
                .unwrap()
                .0;
            let process = live.remove(&pid).unwrap();
            let mut process = Some(process);
            if harts > 1 && rng.below(CROSS_EXIT) == 0 {
                // A hart QEMU has not scheduled for a while must not collect the whole
                // process table in its mailbox: a full mailbox is passed over.
                let to = (cpu + 1 + rng.below(harts - 1)) % harts;
                let mut mailbox = MAILBOX[to].lock();
                if mailbox.len() < MAILBOX_MAX {
                    mailbox.extend(process.take());
                }
            }
            if let Some(process) = process {
                exit(process, &mut counters);
            }
        }
        if i % 4 == 0 {
            wait(cpu, harts, &mut rng, &live, &mut counters);
        }
        if i % 16 == 0 {
            reap(cpu, &mut counters);
        }
    }
    arch::stop_timer();
    let parked = PARKED[cpu].swap(ptr::null_mut(), Ordering::Relaxed);
    if !parked.is_null() {
        // SAFETY: from `Box::into_raw` in `interrupt`; this hart's interrupts are stopped, so
        // its handler no longer uses the cell.
        drop(unsafe { Box::from_raw(parked) });
    }
    for (_, process) in core::mem::take(&mut live) {
        exit(process, &mut counters);
    }
    // No hart hands over a process once it has finished its loop: when all have, one last
    // look at the mailbox empties it for good.
    FINISHED.fetch_add(1, Ordering::AcqRel);
    while FINISHED.load(Ordering::Acquire) < harts {
        core::hint::spin_loop();
    }
    reap(cpu, &mut counters);
    // Pinned, a hart's caches are its own (docs/design/02-percpu.md §"The CPU-local section (pinned mode)"): each hart returns its magazines
    // and parked pages itself, as Linux runs `drain_all_pages` on each CPU.
    HEAP.drain_cpu_caches();
    BUDDY.drain_cpu_caches();
    let published = &PUBLISHED[cpu];
    published
        .ticks
        .store(arch::ticks() - start, Ordering::Relaxed);
    published.forks.store(counters.forks, Ordering::Relaxed);
    published.exits.store(counters.exits, Ordering::Relaxed);
    published
        .cross_exits
        .store(counters.cross_exits, Ordering::Relaxed);
    published.waits.store(counters.waits, Ordering::Relaxed);
    published
        .allocator_calls
        .store(counters.allocator_calls, Ordering::Relaxed);
    DONE.fetch_add(1, Ordering::Release);
}

/// "wait": looks up a PID another hart forked recently (it may have exited since: then it is
/// unmapped, or mapped to a valid slot if reused), and one of this hart's own live processes
/// (which must map to its slot).
fn wait(
    cpu: usize,
    harts: usize,
    rng: &mut Rng,
    live: &BTreeMap<usize, Box<Process>>,
    counters: &mut Counters,
) {
    let other = (cpu + rng.below(harts)) % harts;
    let pid = LAST_PID[other].load(Ordering::Relaxed);
    if pid != 0
        && let Some(slot) = PIDS.lookup_pid(pid)
        && slot >= SLOT_PID.len()
    {
        arch::fail(format_args!(
            "PID {pid} maps to slot {slot}, out of the table"
        ));
    }
    if let Some((&pid, process)) = live.range(rng.below(1 << 18)..).next()
        && PIDS.lookup_pid(pid) != Some(process.slot)
    {
        arch::fail(format_args!(
            "live PID {pid} does not map to its slot {}",
            process.slot
        ));
    }
    counters.waits += 1;
}

/// Exits the processes other harts handed to this one (memory allocated there, freed here).
fn reap(cpu: usize, counters: &mut Counters) {
    let handed = core::mem::take(&mut *MAILBOX[cpu].lock());
    for process in handed {
        counters.cross_exits += 1;
        exit(process, counters);
    }
}

/// Secondary harts: join the storm, then park.
pub fn secondary_hart() -> ! {
    let cpu = arch::cpu_id();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    storm(cpu);
    arch::park()
}

/// Everything the storm must leave as it found it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Counts {
    pids: usize,
    slots: usize,
    buddy_free: usize,
    bitmap_free: usize,
    heap: HeapStats,
    radix_nodes: usize,
}

/// Drains every cache (CPU magazines, depots, page caches, retired radix nodes) and reads the
/// counts; only with every hart idle.
fn quiesce() -> Counts {
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    BUDDY.drain_cpu_caches();
    PIDS.reclaim();
    Counts {
        pids: PIDS.allocated_pid_count(),
        slots: SLOTS.used(),
        buddy_free: BUDDY.available_pages(),
        bitmap_free: BITMAP.available_pages(),
        heap: HEAP.stats(),
        radix_nodes: PIDS.get_pid_stats().nodes_in_use,
    }
}

fn check_all() {
    if let Err(e) = HEAP.check() {
        arch::fail(format_args!("heap check: {e:?}"));
    }
    if let Err(e) = BUDDY.check() {
        arch::fail(format_args!("buddy check: {e:?}"));
    }
    if let Err(e) = BITMAP.check() {
        arch::fail(format_args!("bitmap check: {e:?}"));
    }
    if let Err(e) = PIDS.check() {
        arch::fail(format_args!("PID table check: {e:?}"));
    }
    if let Err(e) = SLOTS.check() {
        arch::fail(format_args!("slot allocator check: {e}"));
    }
}

/// The boot hart: waits for `harts` harts (itself included), runs its share, then checks.
pub fn boot_hart(harts: usize) -> ! {
    HARTS.store(harts, Ordering::Relaxed);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    while ONLINE.load(Ordering::Acquire) < harts {
        core::hint::spin_loop();
    }
    check_all();
    let before = quiesce();
    println!("storm: {harts} harts, {ITERATIONS} iterations each");
    GO.store(true, Ordering::Release);
    storm(0);
    while DONE.load(Ordering::Acquire) < harts {
        core::hint::spin_loop();
    }
    check_all();
    let after = quiesce();
    check_all();
    report(harts, &before, &after)
}

fn report(harts: usize, before: &Counts, after: &Counts) -> ! {
    let timebase = TIMEBASE.load(Ordering::Relaxed).max(1);
    let mut total = Counters::default();
    let mut slowest = 0;
    for p in &PUBLISHED[..harts] {
        total.forks += p.forks.load(Ordering::Relaxed);
        total.exits += p.exits.load(Ordering::Relaxed);
        total.cross_exits += p.cross_exits.load(Ordering::Relaxed);
        total.waits += p.waits.load(Ordering::Relaxed);
        total.allocator_calls += p.allocator_calls.load(Ordering::Relaxed);
        slowest = slowest.max(p.ticks.load(Ordering::Relaxed));
    }
    let ms = slowest * 1000 / timebase;
    let ops = total.forks + total.exits + total.waits;
    let per_hart = ops * timebase / slowest.max(1) / harts as u64;
    let leftovers = PID_OWNER
        .iter()
        .filter(|o| o.load(Ordering::Relaxed) != 0)
        .count()
        + SLOT_PID
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
        + PAGE_OWNER
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) != 0)
            .count();
    let mode = if smpalloc::percpu::pinned_mode() {
        "pinned"
    } else {
        "try_lock"
    };
    println!(
        "storm: {harts} harts, {} forks, {} exits ({} on another hart), {} waits, {} allocator calls in {ms} ms (QEMU TCG): {per_hart} ops/s per hart ({mode} per-CPU caches)",
        total.forks, total.exits, total.cross_exits, total.waits, total.allocator_calls,
    );
    arch::print(format_args!("ops/s per hart:"));
    for (cpu, p) in PUBLISHED[..harts].iter().enumerate() {
        let ops = p.forks.load(Ordering::Relaxed)
            + p.exits.load(Ordering::Relaxed)
            + p.waits.load(Ordering::Relaxed);
        let rate = ops * timebase / p.ticks.load(Ordering::Relaxed).max(1);
        arch::print(format_args!(" cpu{cpu} {rate}"));
    }
    println!(" (QEMU TCG, {harts} harts on the host's cores)");
    arch::print(format_args!("timer interrupts that allocated:"));
    for (cpu, n) in INTERRUPTS[..harts].iter().enumerate() {
        arch::print(format_args!(" cpu{cpu} {}", n.load(Ordering::Relaxed)));
    }
    println!();
    arch::print(format_args!(
        "timer interrupts inside a pinned section (slow path there):"
    ));
    for (cpu, n) in INSIDE_SECTION[..harts].iter().enumerate() {
        arch::print(format_args!(" cpu{cpu} {}", n.load(Ordering::Relaxed)));
    }
    println!();
    println!(
        "counts before/after: PIDs {}/{}, slots {}/{}, buddy free pages {}/{}, bitmap free pages {}/{}, heap small bytes {}/{}, slab bytes {}/{}, huge bytes {}/{}, TLSF pool bytes {}/{}, radix nodes {}/{}",
        before.pids,
        after.pids,
        before.slots,
        after.slots,
        before.buddy_free,
        after.buddy_free,
        before.bitmap_free,
        after.bitmap_free,
        before.heap.small_bytes,
        after.heap.small_bytes,
        before.heap.slab_bytes,
        after.heap.slab_bytes,
        before.heap.huge_bytes,
        after.heap.huge_bytes,
        before.heap.tlsf_pool_bytes,
        after.heap.tlsf_pool_bytes,
        before.radix_nodes,
        after.radix_nodes,
    );
    if total.forks != total.exits || leftovers != 0 {
        arch::fail(format_args!(
            "{} forks but {} exits; {leftovers} owners left",
            total.forks, total.exits
        ));
    }
    if before != after {
        arch::fail(format_args!("counts changed: {before:?} -> {after:?}"));
    }
    println!("PASS");
    arch::exit(true, 0)
}
