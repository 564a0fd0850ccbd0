//! The public API of each family in a few lines, as a user writes it: these were the README's
//! examples (run as doctests) before the README was cut to its quick starts; they keep every
//! assertion those examples made. The README's own examples still run as doctests.

use core::alloc::Layout;
use core::mem::MaybeUninit;

use smpalloc::heap::{StdHeap, SystemPages};
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator, PageMeta};
use smpalloc::radix::{NexaPidTable, PidError};
use smpalloc::{
    AllocError, BaseAllocator, BuddyByteAllocator, ByteAllocator, PidAllocator, Policy,
    SlabByteAllocator, Tlsf, TlsfHeap,
};

/// The crate page's example before it became the kernel quick start: a static allocator of
/// PIDs 1..4096, PID 1 taken by number, the next one by next-fit.
#[test]
fn const_static_pid_allocator() {
    static PIDS: PidAllocator<64> = PidAllocator::with_reserved(1); // PIDs 1..4096
    let init = PIDS.allocate_specific(1).unwrap();
    let next = PIDS.allocate().unwrap();
    assert_eq!((*init, *next), (1, 2));
}

/// The ID family: a static `PidAllocator` with PID 0 reserved (next-fit order, a freed PID not
/// reused at once) and a lowest-free allocator for file descriptors.
#[test]
fn ids_next_fit_reserved_and_lowest_free() {
    // A kernel's PID space: 262,144 PIDs, PID 0 reserved, Unix order. No heap, no lock.
    static PIDS: PidAllocator<4096> = PidAllocator::with_reserved(1);

    let init = PIDS.allocate_specific(1).unwrap(); // init gets PID 1
    let shell = PIDS.allocate().unwrap(); // next-fit: PID 2
    assert_eq!((*init, *shell), (1, 2));
    drop(shell); // recycled, but not handed out again at once
    assert_eq!(*PIDS.allocate().unwrap(), 3);

    // File descriptors want the lowest free number instead.
    let fds = PidAllocator::<1>::new().with_policy(Policy::LowestFree);
    let (a, b) = (fds.allocate().unwrap(), fds.allocate().unwrap());
    drop(a);
    assert_eq!(*fds.allocate().unwrap(), 0);
    drop(b);
}

/// The PID table: allocate, register, look up, free; a freed PID refuses a mapping and a PID
/// above the maximum does not alias a low one.
#[test]
fn pid_table_lifecycle_and_no_aliasing() {
    // 2^18 PIDs, PID 0 reserved, wraps to 300 like Linux. No heap, no lock.
    static PIDS: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);

    PIDS.allocate_specific_pid(1).unwrap(); // init
    let pid = PIDS.allocate_pid().unwrap(); // next-fit: 2
    PIDS.register_pid_mapping(pid, 17).unwrap(); // process-table slot 17
    assert_eq!(PIDS.lookup_pid(pid), Some(17));
    assert_eq!(PIDS.free_pid(pid), Ok(Some(17))); // frees the PID and its mapping
    assert_eq!(
        PIDS.register_pid_mapping(pid, 3),
        Err(PidError::NotAllocated)
    );
    assert_eq!(PIDS.lookup_pid(pid + (1 << 18)), None); // no aliasing above MAX_PID
}

/// The page family: arceos' bitmap example unchanged, and a static buddy over static metadata
/// (per-CPU cache, `alloc_order`, a free of the wrong size refused).
#[test]
fn pages_arceos_example_and_static_buddy() {
    // arceos' example, unchanged but for the crate name (its `init` takes `&mut self`).
    #[allow(unused_mut)]
    let mut allocator = BitmapPageAllocator::<4096>::new();
    allocator.init(0x200000, 2 * 1024 * 1024 * 1024);
    let page_addr = allocator.alloc_pages(10, 4096).expect("pages");
    allocator.dealloc_pages(page_addr, 10);

    // A kernel's buddy allocator in a static, metadata in a static too (no heap needed).
    static META: [PageMeta; 1024] = [const { PageMeta::new() }; 1024];
    static PAGES: BuddyPageAllocator<4096> = BuddyPageAllocator::with_metadata(0x4000_0000, &META);
    PAGES.add_memory(0x4000_0000, 4 << 20).unwrap();
    let page = PAGES.alloc_pages(1, 4096).unwrap(); // from this CPU's cache
    let block = PAGES.alloc_order(3).unwrap(); // 8 pages, 32 KiB aligned: a slab refill
    assert_eq!(block % (8 * 4096), 0);
    assert_eq!(
        PAGES.try_dealloc_pages(page, 2),
        Err(smpalloc::AllocError::NotAllocated)
    );
    PAGES.try_dealloc_pages(page, 1).unwrap();
    PAGES.free_order(block, 3).unwrap();
    assert_eq!(PAGES.used_pages(), 0);
}

/// TLSF: the algorithm over a local pool (alignment honoured), and a `TlsfHeap` over a static
/// pool whose `check()` finds no byte in use afterwards.
#[test]
fn tlsf_alone_and_static_tlsf_heap() {
    // The algorithm: rlsf's interface, &mut self, no locks.
    let mut pool = [MaybeUninit::uninit(); 4096];
    let mut tlsf: Tlsf<'_, u16, u16, 12, 16> = Tlsf::new();
    tlsf.insert_free_block(&mut pool);
    let p = tlsf
        .allocate(Layout::from_size_align(100, 64).unwrap())
        .unwrap();
    assert_eq!(p.as_ptr() as usize % 64, 0);
    // SAFETY: allocated above from this `Tlsf` with alignment 64, freed once.
    unsafe { tlsf.deallocate(p, 64) };

    // A kernel heap over a static pool; put `#[global_allocator]` on such a static to make it
    // the program's allocator (tests/tlsf_global.rs does).
    static mut POOL: [MaybeUninit<u8>; 1 << 20] = [MaybeUninit::uninit(); 1 << 20];
    // SAFETY: `POOL` is used by nothing but this heap.
    static HEAP: TlsfHeap<4> = unsafe { TlsfHeap::with_pool((&raw mut POOL).cast(), 1 << 20) };
    let layout = Layout::new::<[u64; 8]>();
    let block = HEAP.allocate(layout).unwrap();
    // SAFETY: allocated above with `layout`, freed once.
    unsafe { HEAP.deallocate(block, layout) };
    assert_eq!(HEAP.check(), Ok(0)); // invariants hold, no bytes in use
}

/// `BuddyByteAllocator`: whole power-of-two blocks, a double free refused, `check()` clean.
#[test]
fn buddy_bytes_whole_blocks_and_refused_double_free() {
    let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let mut buddy = BuddyByteAllocator::new();
    buddy.init(pool.as_mut_ptr() as usize, pool.len());
    let layout = Layout::from_size_align(600, 8).unwrap();
    let block = buddy.alloc(layout).unwrap();
    assert_eq!(buddy.used_bytes(), 1024); // whole power-of-two blocks
    buddy.dealloc(block, layout);
    assert_eq!(
        buddy.try_dealloc(block, layout),
        Err(AllocError::NotAllocated)
    );
    assert_eq!(buddy.available_bytes(), buddy.total_bytes());
    buddy.check().unwrap();
}

/// `SlabByteAllocator`: a 40-byte class object and a 16 KiB-aligned buddy block, both counted;
/// `reclaim` hands the empty slab back.
#[test]
fn slab_bytes_class_aligned_block_and_reclaim() {
    let pool = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let mut slab = SlabByteAllocator::new();
    slab.init(pool.as_mut_ptr() as usize, pool.len());
    let object = Layout::from_size_align(40, 8).unwrap(); // the 40-byte class
    let aligned = Layout::from_size_align(256, 16384).unwrap(); // a buddy block, 16 KiB-aligned
    let (a, b) = (slab.alloc(object).unwrap(), slab.alloc(aligned).unwrap());
    assert_eq!(b.as_ptr() as usize % 16384, 0);
    assert_eq!(slab.used_bytes(), 40 + 16384);
    slab.dealloc(a, object);
    slab.dealloc(b, aligned);
    slab.reclaim(); // hand the kept empty slab back to the buddy allocator
    assert_eq!(slab.available_bytes(), slab.total_bytes());
    slab.check().unwrap();
}

/// The std heap (`StdHeap` over `SystemPages`): a sized allocate/deallocate, then the unsized
/// calls C needs (`usable_size`, `reallocate_unsized`, `free`).
#[test]
fn std_heap_sized_and_unsized_calls() {
    // In a real program: #[global_allocator]
    static HEAP: StdHeap = StdHeap::new(SystemPages::new());

    let layout = core::alloc::Layout::new::<[u64; 8]>();
    let block = HEAP.allocate(layout).unwrap();
    // SAFETY: allocated above with `layout`, freed once.
    unsafe { HEAP.deallocate(block, layout) };
    assert_eq!(HEAP.stats().small_bytes, 0);

    // Without the layout (C's free / malloc_usable_size / realloc):
    let block = HEAP.allocate(layout).unwrap();
    // SAFETY: `block` is live; each call takes the previous result, freed once at the end.
    unsafe {
        assert_eq!(HEAP.usable_size(block), Some(64));
        let bigger = HEAP.reallocate_unsized(block, 1000, 16).unwrap();
        HEAP.free(bigger);
    }
}
