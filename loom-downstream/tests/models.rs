//! Loom models a kernel author writes over smpalloc (the crate's documentation says why each
//! is built the way it is). Run:
//! `RUSTFLAGS="--cfg loom" cargo test --release -p smpalloc-loom-downstream`
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;
use smpalloc::page::{BitmapPageAllocator256M, BuddyPageAllocator};
use smpalloc::{PidAllocator, SmpHeap, percpu};

/// A loom model builder with room for the allocators' `check()` walks (loom's default stops an
/// execution at 1,000 branches) and, unless `LOOM_MAX_PREEMPTIONS` says otherwise, at most
/// 3 preemptions per execution (seconds instead of minutes for the heap).
fn builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder
}

/// Two threads take a PID each from a 64-PID allocator: the PIDs differ, and both come back.
#[test]
fn two_threads_take_distinct_pids() {
    builder().check(|| {
        // No `static` under loom (its atomics have no `const fn new`): build it in the model.
        let pids = Arc::new(PidAllocator::<1>::new());
        let take = |pids: Arc<PidAllocator<1>>| {
            thread::spawn(move || pids.allocate().expect("64 PIDs").into_raw())
        };
        let (a, b) = (take(pids.clone()), take(pids.clone()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a, b, "one PID handed out twice");
        assert_eq!(pids.used(), 2);
        pids.free(a).unwrap();
        pids.free(b).unwrap();
        assert_eq!(pids.used(), 0);
        pids.check().unwrap();
    });
}

/// Two threads take a page each from a 256 MiB bitmap page allocator (its bitmap is 9 KiB
/// under loom and fits the model's stack; the default 4 GiB one does not): the pages differ.
#[test]
fn two_threads_take_disjoint_pages() {
    type Pages = BitmapPageAllocator256M<4096>;
    builder().check(|| {
        let pages = Arc::new(Pages::new());
        // The bitmap allocator never touches the pages: any address range will do.
        pages.add_memory(0x8000_0000, 16 * 4096).unwrap();
        let take = |pages: Arc<Pages>| thread::spawn(move || pages.alloc_pages(1, 4096).unwrap());
        let (a, b) = (take(pages.clone()), take(pages.clone()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a, b, "one page handed out twice");
        assert_eq!(pages.used_pages(), 2);
        pages.try_dealloc_pages(a, 1).unwrap();
        pages.try_dealloc_pages(b, 1).unwrap();
        assert_eq!(pages.used_pages(), 0);
        pages.check().unwrap();
    });
}

/// The buddy behind the heap: 4 KiB pages, blocks up to 2^6 pages (the region's size), 2 CPUs.
type Buddy = BuddyPageAllocator<4096, 6, 2>;
/// A kernel's `kmalloc` with 2 CPUs. A kernel writes `SmpHeap<&'static Buddy, 2>` over a
/// static buddy; a model has no statics and loom's threads need `'static` data, so here the
/// heap owns its buddy (`&T` forwards every call to `T`: the same code runs).
type Heap = SmpHeap<Buddy, 2>;

const BLOCK: Layout = match Layout::from_size_align(48, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// Two CPUs allocate from the heap over a buddy and fill their blocks: the blocks do not
/// overlap and keep their contents; once both are freed the heap's `check()` is clean and,
/// after a drain and a reclaim, every page is back in the buddy.
#[test]
fn heap_over_buddy_on_two_cpus() {
    // The memory the buddy hands out (the heap writes its slab headers there), allocated ONCE,
    // outside `check`: every execution then sees the same addresses, as loom needs to replay
    // an execution (what the heap's page map does depends on the addresses).
    const REGION: usize = 256 * 1024;
    let layout = std::alloc::Layout::from_size_align(REGION, REGION).unwrap();
    // SAFETY: a non-zero size.
    let region = unsafe { std::alloc::alloc(layout) };
    assert!(!region.is_null());
    let base = region.expose_provenance();

    builder().check(move || {
        let pages = Buddy::with_window(base, REGION);
        pages.add_memory(base, REGION).unwrap();
        let heap = Arc::new(Heap::new(pages));
        let fill = |heap: Arc<Heap>, cpu: usize| {
            thread::spawn(move || {
                // A model thread plays CPU `cpu` (a kernel registers `percpu::set_cpu_id_source`).
                percpu::set_model_cpu(cpu);
                let block = heap.allocate(BLOCK).expect("the region has room");
                // SAFETY: a fresh block of `BLOCK.size()` bytes.
                unsafe { block.as_ptr().write_bytes(cpu as u8 + 1, BLOCK.size()) };
                block.as_ptr().expose_provenance()
            })
        };
        let (a, b) = (fill(heap.clone(), 0), fill(heap.clone(), 1));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(
            a + BLOCK.size() <= b || b + BLOCK.size() <= a,
            "blocks overlap"
        );
        percpu::set_model_cpu(0);
        for (addr, byte) in [(a, 1), (b, 2)] {
            let block = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr)).unwrap();
            // SAFETY: a live block of `BLOCK.size()` bytes, filled above, freed once here.
            unsafe {
                assert!((0..BLOCK.size()).all(|i| *block.as_ptr().add(i) == byte));
                heap.deallocate(block, BLOCK);
            }
        }
        heap.check().unwrap();
        heap.drain_cpu_caches();
        heap.reclaim();
        assert_eq!(heap.pages().used_pages(), 0, "pages kept after reclaim");
        heap.pages().check().unwrap();
    });
    // SAFETY: allocated above with `layout`; no execution runs any more.
    unsafe { std::alloc::dealloc(region, layout) };
}
