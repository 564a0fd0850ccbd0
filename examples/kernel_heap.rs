//! A kernel's heap: `SmpHeap` over a `BuddyPageAllocator` that owns a static region, with the
//! CPU id from the kernel (here two threads play two harts).
//!
//! ```text
//! cargo run --example kernel_heap
//! ```
//!
//! Nothing here needs `std` but the two threads that stand in for CPUs and the printing: a
//! kernel does the same at boot with its own RAM range, its own `read_cpu_id` (`tp`, `gs`,
//! `TPIDR_EL1`) and `#[global_allocator]` on a `static` heap (its RAM address is a constant
//! there, so the buddy allocator can be a `static` too; see the README's kernel quick start).

use core::alloc::Layout;
use core::cell::{Cell, UnsafeCell};
use core::ptr::NonNull;

use smpalloc::page::PageMeta;
use smpalloc::{BuddyPageAllocator, SmpHeap, percpu};

/// Harts of this "machine".
const CPUS: usize = 2;
/// 4 KiB pages, blocks of up to 2^10 pages (4 MiB), one page cache per hart.
type Pages = BuddyPageAllocator<4096, 10, CPUS>;
/// The region's size: one largest block.
const RAM: usize = 4 << 20;

/// The kernel's free RAM: 4 MiB in `.bss`, aligned to the buddy's largest block.
#[repr(C, align(4194304))]
struct Ram(UnsafeCell<[u8; RAM]>);
// SAFETY: the memory is handed to the buddy allocator once and only ever reached through the
// pointers it and the heap hand out.
unsafe impl Sync for Ram {}
static FREE_RAM: Ram = Ram(UnsafeCell::new([0; RAM]));

/// One metadata entry per page of the region, zeroed (`.bss` too).
static META: [PageMeta; RAM / 4096] = [const { PageMeta::new() }; RAM / 4096];

std::thread_local! {
    /// This thread's hart id (a kernel reads a register instead).
    static HART: Cell<usize> = const { Cell::new(0) };
}

fn read_cpu_id() -> usize {
    HART.with(Cell::get)
}

fn main() {
    // Boot: the CPU id source and count first, then the memory.
    percpu::set_cpu_count(CPUS);
    percpu::set_cpu_id_source(read_cpu_id);
    let start = FREE_RAM.0.get().expose_provenance();
    let pages = Pages::with_metadata(start, &META);
    pages
        .add_memory(start, RAM)
        .expect("the region is page-aligned and free");
    let heap: SmpHeap<&Pages, CPUS> = SmpHeap::new(&pages);

    // Each hart allocates small objects; hart 1 frees what hart 0 made (a cross-CPU free).
    let small = Layout::from_size_align(48, 8).unwrap();
    let from_hart0: Vec<usize> = std::thread::scope(|s| {
        let heap = &heap;
        s.spawn(move || {
            HART.with(|h| h.set(0));
            (0..1000)
                // Addresses, not pointers, cross to the other thread (as a kernel's lists do).
                .map(|_| {
                    heap.allocate(small)
                        .expect("4 MiB is enough")
                        .as_ptr()
                        .expose_provenance()
                })
                .collect()
        })
        .join()
        .unwrap()
    });
    std::thread::scope(|s| {
        let heap = &heap;
        s.spawn(move || {
            HART.with(|h| h.set(1));
            for addr in from_hart0 {
                let block = NonNull::new(core::ptr::with_exposed_provenance_mut(addr)).unwrap();
                // SAFETY: allocated above with `small`, freed once.
                unsafe { heap.deallocate(block, small) };
            }
        });
    });

    // A large block (the TLSF route) and its free.
    let big = Layout::from_size_align(100_000, 64).unwrap();
    let block = heap.allocate(big).expect("a large block");
    // SAFETY: allocated above with `big`, freed once.
    unsafe { heap.deallocate(block, big) };

    // Every structure is consistent; give cached memory back and count the pages.
    heap.check().expect("heap invariants");
    heap.drain_cpu_caches();
    heap.reclaim();
    pages.drain_cpu_caches();
    pages.check().expect("buddy invariants");
    println!(
        "pages in use after freeing everything: {} of {}",
        pages.used_pages(),
        pages.total_pages()
    );
}
