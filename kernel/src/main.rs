//! A small riscv64 SMP kernel that runs on smpalloc: it boots on QEMU's `virt` machine under
//! OpenSBI, starts every hart, hands its RAM to smpalloc's page allocators, makes the SMP heap
//! its global allocator, and runs a process storm on all harts at once (see `storm.rs`).
//!
//! Build and boot from this directory: `cargo run --release` (the runner in
//! `.cargo/config.toml` starts QEMU with 4 harts).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod arch;
mod storm;

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use smpalloc::heap::{PageSource, SmpHeap};
use smpalloc::page::{BitmapPageAllocator256M, BuddyPageAllocator, PageMeta};
use smpalloc::radix::{NEXA_POOL_NODES, NodePool, PidTable};
use smpalloc::{PidAllocator, Policy, percpu};

use arch::{MAX_CPUS, sbi};

/// Bytes per page.
pub const PAGE: usize = 4096;
/// Where RAM starts on QEMU's virt machine, and where the buddy allocator's window starts.
pub const RAM_BASE: usize = 0x8000_0000;
/// The RAM the buddy window can describe: 1 GiB (3 MiB of page metadata, in `.bss`).
pub const WINDOW_PAGES: usize = (1 << 30) / PAGE;
/// Bytes at the end of RAM given to the bitmap page allocator instead of the buddy.
const BITMAP_BYTES: usize = 16 << 20;

/// The buddy allocator's per-page metadata: a `static`, so the allocator needs no heap.
static BUDDY_META: [PageMeta; WINDOW_PAGES] = [const { PageMeta::new() }; WINDOW_PAGES];
/// Physical pages: the buddy zone with a page cache per CPU.
pub type Buddy = BuddyPageAllocator<PAGE, 10, MAX_CPUS>;
pub static BUDDY: Buddy = Buddy::with_metadata(RAM_BASE, &BUDDY_META);
/// A second page allocator over its own region (page-table pages in the storm).
pub static BITMAP: BitmapPageAllocator256M<PAGE> = BitmapPageAllocator256M::new();
/// The kernel heap: per-CPU magazines over slabs from the buddy allocator, TLSF above 4 KiB.
/// Over [`BuddyPages`], a zero-sized handle, the heap is all zeros and lies in `.bss` (a
/// `&BUDDY` field would put its 300 KiB in `.data`).
#[global_allocator]
pub static HEAP: SmpHeap<BuddyPages, MAX_CPUS> = SmpHeap::new(BuddyPages);

/// [`BUDDY`] as the heap's page source, named by a zero-sized type.
pub struct BuddyPages;

// SAFETY: forwards every call to `BUDDY`, a page source.
unsafe impl PageSource for BuddyPages {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        PageSource::alloc_pages(&&BUDDY, bytes, align)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { PageSource::free_pages(&&BUDDY, ptr, bytes, align) }
    }

    fn drain(&self) {
        PageSource::drain(&&BUDDY);
    }

    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        PageSource::alloc_huge(&&BUDDY, layout)
    }

    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { PageSource::free_huge(&&BUDDY, ptr, layout) }
    }

    fn huge_usable(&self, layout: Layout) -> usize {
        PageSource::huge_usable(&&BUDDY, layout)
    }

    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { PageSource::realloc_huge(&&BUDDY, ptr, layout, new_size) }
    }
}
/// The PID map's radix nodes: a separate all-zero `static`, so its 2.3 MB lands in `.bss`.
static PID_NODES: NodePool<NEXA_POOL_NODES> = NodePool::new();
/// PIDs and the PID -> process-table-slot map (Linux's order: PIDs below 300 are not reused
/// after the first wrap).
pub static PIDS: PidTable<4096, 3, &NodePool<NEXA_POOL_NODES>> =
    PidTable::with_reserved(&PID_NODES, 300);
/// Process-table slots (1,024).
pub static SLOTS: PidAllocator<16> = PidAllocator::new().with_policy(Policy::PerCpuNextFit);

/// What the device tree says about the machine.
pub struct Machine {
    /// Hart ids, in device-tree order (at most [`MAX_CPUS`]).
    pub harts: [usize; MAX_CPUS],
    pub hart_count: usize,
    /// RAM `[start, end)` (the first memory region).
    pub ram: (usize, usize),
    /// `time` CSR ticks per second.
    pub timebase: u64,
}

impl Machine {
    fn from_device_tree(dtb: usize) -> Machine {
        // SAFETY: OpenSBI passes the device tree's address in a1; the blob stays intact until
        // the memory holding it is handed to the allocators, after this function returns.
        let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
            .unwrap_or_else(|e| arch::fail(format_args!("bad device tree: {e:?}")));
        let mut harts = [0; MAX_CPUS];
        let mut hart_count = 0;
        let mut timebase = 10_000_000;
        for cpu in fdt.cpus() {
            timebase = cpu.timebase_frequency() as u64;
            if hart_count < MAX_CPUS {
                harts[hart_count] = cpu.ids().first();
                hart_count += 1;
            }
        }
        let region = fdt
            .memory()
            .regions()
            .next()
            .unwrap_or_else(|| arch::fail(format_args!("no memory in the device tree")));
        let start = region.starting_address as usize;
        let size = region.size.unwrap_or(0);
        Machine {
            harts,
            hart_count,
            ram: (start, start + size),
            timebase,
        }
    }
}

/// The boot hart, on its stack, with `.bss` not yet zeroed.
extern "C" fn kernel_boot(hartid: usize, dtb: usize) -> ! {
    arch::zero_bss();
    let machine = Machine::from_device_tree(dtb);

    // 1. CPU ids: `tp` holds this hart's CPU index (the entry code set it); smpalloc's
    //    per-CPU caches and magazines read it through this function.
    percpu::set_cpu_id_source(arch::cpu_id);
    percpu::set_cpu_count(machine.hart_count);
    // Interrupts: smpalloc's locks mask them through these hooks (nesting per hart), so the
    // timer interrupt handler may allocate.
    percpu::set_interrupt_hooks(arch::interrupts_off, arch::interrupts_on);
    // Pinning: with these hooks the heap's magazines and the buddy's page caches are CPU-local
    // sections (no atomic read-modify-write; docs/design/02-percpu.md §"The CPU-local section (pinned mode)"). This kernel never preempts, so a
    // pin only counts (Linux's preempt count); a timer interrupt that lands inside a section
    // finds it busy and takes the slow path. The `trylock` build keeps the `try_lock` path.
    #[cfg(not(feature = "trylock"))]
    // SAFETY: no hart's code is ever preempted or migrated (only interrupt handlers run in
    // between, to completion), so between `pin` and `unpin` no other task runs on the hart;
    // `arch::cpu_id` returns the hart's unique index, below the heap's and buddy's slot counts
    // (`MAX_CPUS`); nothing here locks their slots directly. Registered before other harts run.
    unsafe {
        percpu::set_pin_hooks(arch::pin, arch::unpin)
    };
    // 2. Memory: RAM after the kernel image to the buddy allocator, the last 16 MiB to the
    //    bitmap allocator. The device tree is not read after this point.
    let start = arch::kernel_end().next_multiple_of(PAGE);
    let end = machine.ram.1.min(RAM_BASE + WINDOW_PAGES * PAGE);
    let split = end - BITMAP_BYTES;
    if let Err(e) = BUDDY.add_memory(start, split - start) {
        arch::fail(format_args!("buddy add_memory: {e:?}"));
    }
    if let Err(e) = BITMAP.add_memory(split, BITMAP_BYTES) {
        arch::fail(format_args!("bitmap add_memory: {e:?}"));
    }
    // 3. The heap is `HEAP`, a `static` over `BUDDY`: nothing to call. `alloc` works from here.

    println!(
        "smpalloc kernel: boot hart {hartid}, {} harts, RAM {:#x}..{:#x}; buddy {} pages, bitmap {} pages",
        machine.hart_count,
        machine.ram.0,
        machine.ram.1,
        BUDDY.available_pages(),
        BITMAP.available_pages(),
    );

    // Let the other harts in: they wait for this flag in the entry code, then take CPU
    // indices 1, 2, ... Release: they must see `.bss` zeroed and the allocators set up.
    storm::prepare(&machine);
    arch::BOOT_READY.store(1, Ordering::Release);
    unsafe extern "C" {
        fn secondary_entry();
    }
    let mut started = 1;
    for &hart in &machine.harts[..machine.hart_count] {
        if hart == hartid {
            continue;
        }
        match sbi::hart_start(hart, secondary_entry as *const () as usize, 0) {
            sbi::SUCCESS | sbi::ALREADY_AVAILABLE => started += 1,
            error => println!("hart {hart} did not start (SBI error {error})"),
        }
    }
    storm::boot_hart(started)
}

/// A secondary hart, on its stack, with CPU index `tp`.
extern "C" fn kernel_secondary(_hartid: usize) -> ! {
    storm::secondary_hart()
}
