//! Fuzz target `heap`: `SmpHeap` over a `BuddyPageAllocator` that owns real memory, against a
//! shadow list of live blocks.
//!
//! Every route is reachable (size 0, the slab classes, TLSF sizes and odd alignments, huge
//! blocks, alignments up to 64 KiB), on a simulated CPU the input switches between (so frees
//! cross CPUs). Each block is filled with its own tag and checked when it is freed or resized
//! (an overlap or a stray write shows up there), checked to be aligned and disjoint from every
//! live block, and `check()` runs after every step (the page map against the slabs and
//! blocks too) with the statistics' conservation
//! (`small_bytes` equals the class sizes of the live small blocks). `drain_cpu_caches` and
//! `reclaim` run when the input asks. Blocks are also freed, sized (their slack written) and
//! resized without their layout (`free`, `usable_size`, `reallocate_unsized`, issue 15),
//! interleaved with the sized calls. At the end everything is freed, the heap reclaimed and
//! dropped, and every page must be back with the buddy.
//!
//! The input picks the buddy's largest block: 4 MiB (`MAX_ORDER` 10: huge blocks, pools that
//! double), or 128 KiB (`MAX_ORDER` 5: a TLSF-route request too large for a 128 KiB pool, and
//! every one once 16 pools are held, is a *direct block* from the pages, docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks"; huge
//! blocks fail there).
#![no_main]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smpalloc::BuddyPageAllocator;
use smpalloc::heap::{Route, SmpHeap};

const MAX_OPS: usize = 256;
type Pages<const ORDER: usize> = BuddyPageAllocator<4096, ORDER, 4>;
type Heap<const ORDER: usize> = SmpHeap<&'static Pages<ORDER>, 4>;
/// The buddy's memory: 8 MiB, aligned to its largest block (4 MiB).
const POOL: usize = 8 << 20;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Zero,
    Small(u8),
    Medium(u16),
    Large(u16),
    /// Just below the buddy's largest block (at most `HUGE`): with 128 KiB blocks, a TLSF-route
    /// request whose pool (request plus TLSF's overhead, rounded to a power of two) would
    /// exceed the largest block, so it is a direct block.
    Edge(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Alloc {
        size: Size,
        align_log: u8,
    },
    Free {
        idx: u8,
    },
    Realloc {
        idx: u8,
        size: Size,
    },
    /// `free(ptr)` without the layout (docs/design/08-heap.md §"Frees without a layout: the page map").
    FreeUnsized {
        idx: u8,
    },
    /// `usable_size(ptr)`: at least the size; the slack up to it is written with the tag.
    Usable {
        idx: u8,
    },
    /// `reallocate_unsized(ptr, size, align)`.
    ReallocUnsized {
        idx: u8,
        size: Size,
        align_log: u8,
    },
    Cpu(u8),
    Drain,
    Reclaim,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// A buddy whose largest block is 128 KiB instead of 4 MiB (direct blocks reachable).
    small_blocks: bool,
    ops: Vec<Op>,
}

static CPU: AtomicUsize = AtomicUsize::new(0);

fn cpu_source() -> usize {
    CPU.load(Ordering::Relaxed)
}

/// The bytes of `s` over a buddy whose largest block is `max_block` bytes.
fn size_of(s: Size, max_block: usize) -> usize {
    match s {
        Size::Zero => 0,
        Size::Small(x) => 1 + x as usize * 4, // up to ~1 KiB: the slab classes
        Size::Medium(x) => 1 + x as usize % 200_000, // TLSF
        Size::Large(x) => 200_000 + (x as usize) * 4, // up to ~460 KiB: TLSF top, huge
        Size::Edge(x) => max_block.min(256 << 10) - x as usize % 256,
    }
}

/// A fresh buddy over the process's one pool (allocated once; every input returns all of it).
fn pages<const ORDER: usize>() -> Box<Pages<ORDER>> {
    static POOL_START: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let start = *POOL_START.get_or_init(|| {
        let layout = Layout::from_size_align(POOL, 4 << 20).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null());
        p.expose_provenance()
    });
    let pages = Box::new(Pages::with_window(start, POOL));
    pages.add_memory(start, POOL).unwrap();
    pages
}

#[derive(Clone, Copy)]
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u8,
}

/// Checks the block's fill: every byte of the first and last 4 KiB, and every 64th byte in
/// between (a block overlapping it would have rewritten a whole range).
fn verify(b: &Live) {
    // SAFETY: a live block of `b.layout.size()` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(b.ptr.as_ptr(), b.layout.size()) };
    let n = bytes.len();
    let probe = |i: usize| bytes[i] != b.tag;
    let bad = if n <= 8192 {
        (0..n).find(|&i| probe(i))
    } else {
        (0..4096)
            .chain((4096..n - 4096).step_by(64))
            .chain(n - 4096..n)
            .find(|&i| probe(i))
    };
    if let Some(i) = bad {
        panic!(
            "block {:p}+{} ({:?}) lost its fill at +{i} (overlap or stray write)",
            b.ptr,
            b.layout.size(),
            Route::of(b.layout)
        );
    }
}

fn small_bytes<const ORDER: usize>(heap: &Heap<ORDER>, live: &[Live]) -> usize {
    live.iter()
        .map(|b| match Route::of(b.layout) {
            Route::Small(c) => heap.class_stats(c).unwrap().size,
            _ => 0,
        })
        .sum()
}

fn admit(live: &mut Vec<Live>, p: NonNull<u8>, layout: Layout, tag: &mut u8) {
    let a = p.as_ptr().addr();
    assert_eq!(a % layout.align(), 0, "misaligned block for {layout:?}");
    if layout.size() == 0 {
        return; // dangling: nothing to track
    }
    for b in live.iter() {
        let s = b.ptr.as_ptr().addr();
        assert!(
            a + layout.size() <= s || s + b.layout.size() <= a,
            "{layout:?} at {a:#x} overlaps a live block at {s:#x}+{}",
            b.layout.size()
        );
    }
    *tag = tag.wrapping_add(1);
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { p.as_ptr().write_bytes(*tag, layout.size()) };
    live.push(Live {
        ptr: p,
        layout,
        tag: *tag,
    });
}

fuzz_target!(|input: Input| {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.store(0, Ordering::Relaxed);
    if input.small_blocks {
        run::<5>(&input.ops);
    } else {
        run::<10>(&input.ops);
    }
});

fn run<const ORDER: usize>(ops: &[Op]) {
    let max_block: usize = 4096 << ORDER;
    let owner = pages::<ORDER>();
    // SAFETY: `owner` outlives every use of this reference: the heap is dropped before it.
    let pages: &'static Pages<ORDER> = unsafe { &*core::ptr::from_ref::<Pages<ORDER>>(&*owner) };
    let total = pages.total_pages();
    let heap: Box<Heap<ORDER>> = Box::new(SmpHeap::new(pages));
    let mut live: Vec<Live> = Vec::new();
    let mut tag = 0u8;
    for op in ops.iter().take(MAX_OPS) {
        match *op {
            Op::Alloc { size, align_log } => {
                let layout =
                    Layout::from_size_align(size_of(size, max_block), 1 << (align_log % 17))
                        .unwrap();
                if let Some(p) = heap.allocate(layout) {
                    admit(&mut live, p, layout, &mut tag);
                }
            }
            Op::Free { idx } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(idx as usize % live.len());
                verify(&b);
                // SAFETY: allocated by this heap with `b.layout`, freed once.
                unsafe { heap.deallocate(b.ptr, b.layout) };
            }
            Op::Realloc { idx, size } => {
                if live.is_empty() {
                    continue;
                }
                let i = idx as usize % live.len();
                let b = live[i];
                verify(&b);
                let new_size = size_of(size, max_block);
                // SAFETY: allocated by this heap with `b.layout`, not freed.
                let Some(q) = (unsafe { heap.reallocate(b.ptr, b.layout, new_size) }) else {
                    verify(&b); // refused: untouched
                    continue;
                };
                live.swap_remove(i);
                let keep = b.layout.size().min(new_size);
                // SAFETY: the new block holds at least `keep` bytes.
                let kept = unsafe { core::slice::from_raw_parts(q.as_ptr(), keep) };
                assert!(
                    kept.iter().all(|&x| x == b.tag),
                    "realloc lost the contents"
                );
                let layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                admit(&mut live, q, layout, &mut tag);
            }
            Op::FreeUnsized { idx } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(idx as usize % live.len());
                verify(&b);
                // SAFETY: allocated by this heap, freed once.
                unsafe { heap.free(b.ptr) };
            }
            Op::Usable { idx } => {
                if live.is_empty() {
                    continue;
                }
                let b = live[idx as usize % live.len()];
                // SAFETY: a live block of this heap.
                let usable = unsafe { heap.usable_size(b.ptr) }.expect("a live block's size");
                assert!(
                    usable >= b.layout.size(),
                    "usable {usable} < {:?}",
                    b.layout
                );
                let slack = usable - b.layout.size();
                // SAFETY: `usable` bytes are the block's (the property under test: a block it
                // overlapped would lose its fill).
                unsafe {
                    b.ptr
                        .as_ptr()
                        .add(b.layout.size())
                        .write_bytes(b.tag, slack)
                };
            }
            Op::ReallocUnsized {
                idx,
                size,
                align_log,
            } => {
                if live.is_empty() {
                    continue;
                }
                let i = idx as usize % live.len();
                let b = live[i];
                verify(&b);
                let new_size = size_of(size, max_block);
                let align = 1usize << (align_log % 17);
                // SAFETY: a live block of this heap.
                let Some(q) = (unsafe { heap.reallocate_unsized(b.ptr, new_size, align) }) else {
                    verify(&b); // refused: untouched
                    continue;
                };
                live.swap_remove(i);
                let keep = b.layout.size().min(new_size);
                // SAFETY: the new block holds at least `keep` bytes.
                let kept = unsafe { core::slice::from_raw_parts(q.as_ptr(), keep) };
                assert!(
                    kept.iter().all(|&x| x == b.tag),
                    "unsized realloc lost the contents"
                );
                let layout = Layout::from_size_align(new_size, align).unwrap();
                admit(&mut live, q, layout, &mut tag);
            }
            Op::Cpu(c) => CPU.store(c as usize % 5, Ordering::Relaxed),
            Op::Drain => heap.drain_cpu_caches(),
            Op::Reclaim => heap.reclaim(),
        }
        let stats = heap.check().expect("SmpHeap::check");
        assert_eq!(stats, heap.stats(), "check() and stats() disagree");
        assert_eq!(stats.small_bytes, small_bytes(&heap, &live), "small_bytes");
        pages.check().expect("BuddyPageAllocator::check");
        // Conservation: the heap holds no more pages than the buddy has handed out.
        let held = stats.slab_bytes
            + stats.tlsf_pool_bytes
            + stats.tlsf_direct_bytes
            + stats.huge_bytes
            + heap.map_bytes();
        assert!(
            held <= pages.used_pages() * 4096,
            "heap holds {held} > pages used"
        );
    }
    // Free everything: every page must come back.
    for b in live.drain(..) {
        verify(&b);
        // SAFETY: as above.
        unsafe { heap.deallocate(b.ptr, b.layout) };
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().expect("SmpHeap::check");
    assert_eq!(stats.small_bytes, 0);
    assert_eq!(stats.huge_bytes, 0, "huge bytes left");
    assert_eq!(stats.tlsf_direct_bytes, 0, "direct blocks left");
    drop(heap);
    pages.drain_cpu_caches();
    pages.check().expect("BuddyPageAllocator::check");
    assert_eq!(pages.used_pages(), 0, "pages leaked by the heap");
    assert_eq!(pages.available_pages(), total);
    drop(owner);
}
