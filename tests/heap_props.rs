//! `SmpHeap` against a shadow model: random allocate / free / reallocate sequences, each step on
//! an explicit CPU (the CPU-id source reads a thread-local the test sets), over real memory
//! from the system. After every step: no overlap, alignment, contents intact, `check()` (under
//! Miri after every third step and every drain or reclaim, see `run`). At
//! the end everything is freed, and after `drain_cpu_caches()` + `reclaim()` every slab, huge
//! block and TLSF pool is back with the page source: it holds nothing. A `Reclaim` step with no
//! live TLSF block returns every TLSF pool; with one, keeps at least one.

mod support;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

use proptest::prelude::*;
use smpalloc::heap::{HEAP_CLASSES, Route, SmpHeap, SystemPages};
use support::{RangeShadow, Regions};

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn cpu_source() -> usize {
    CPU.with(Cell::get)
}

const CPUS: usize = 4;
type Heap = SmpHeap<SystemPages, CPUS>;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        cpu: usize,
        size: usize,
        align_log: u32,
    },
    Free {
        cpu: usize,
        pick: usize,
    },
    Realloc {
        cpu: usize,
        pick: usize,
        size: usize,
    },
    /// `free(ptr)` without the layout.
    FreeUnsized {
        cpu: usize,
        pick: usize,
    },
    /// `usable_size(ptr)`: at least the size; then the bytes past the size up to it are
    /// written (they must be the block's own: no other block changes).
    Usable {
        pick: usize,
    },
    /// `reallocate_unsized(ptr, size, align)`.
    ReallocUnsized {
        cpu: usize,
        pick: usize,
        size: usize,
        align_log: u32,
    },
    Drain,
    Reclaim,
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..=256,
        3 => 257usize..=4096,
        1 => 4097usize..=40_000,
        1 => 200_000usize..=300_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..CPUS, size_strategy(), prop_oneof![4 => 0u32..=4, 1 => 5u32..=13])
            .prop_map(|(cpu, size, align_log)| Op::Alloc { cpu, size, align_log }),
        8 => (0..CPUS, any::<usize>()).prop_map(|(cpu, pick)| Op::Free { cpu, pick }),
        3 => (0..CPUS, any::<usize>(), size_strategy())
            .prop_map(|(cpu, pick, size)| Op::Realloc { cpu, pick, size }),
        4 => (0..CPUS, any::<usize>()).prop_map(|(cpu, pick)| Op::FreeUnsized { cpu, pick }),
        3 => any::<usize>().prop_map(|pick| Op::Usable { pick }),
        3 => (0..CPUS, any::<usize>(), size_strategy(), prop_oneof![4 => 0u32..=4, 1 => 5u32..=13])
            .prop_map(|(cpu, pick, size, align_log)| Op::ReallocUnsized { cpu, pick, size, align_log }),
        1 => Just(Op::Drain),
        1 => Just(Op::Reclaim),
    ]
}

struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u8,
}

/// The byte ranges of a block the test fills and checks: all of it, or under Miri (where every
/// byte costs) its first and last 256 bytes.
fn ranges(size: usize) -> [core::ops::Range<usize>; 2] {
    if cfg!(miri) && size > 512 {
        [0..256, size - 256..size]
    } else {
        [0..size, 0..0]
    }
}

fn fill(live: &Live) {
    for range in ranges(live.layout.size()) {
        // SAFETY: inside a live block of `layout.size()` bytes owned by the test.
        unsafe {
            live.ptr
                .as_ptr()
                .add(range.start)
                .write_bytes(live.tag, range.len())
        };
    }
}

fn intact(live: &Live) -> bool {
    ranges(live.layout.size()).into_iter().all(|range| {
        // SAFETY: as above.
        let bytes =
            unsafe { core::slice::from_raw_parts(live.ptr.as_ptr().add(range.start), range.len()) };
        bytes.iter().all(|&b| b == live.tag)
    })
}

/// Records `l` in the model of owned byte ranges: fails if it overlaps a live block.
fn own(owned: &mut RangeShadow<()>, l: &Live) -> Result<(), TestCaseError> {
    let start = l.ptr.as_ptr().addr();
    let r = owned.insert(start, start + l.layout.size(), ());
    prop_assert!(r.is_ok(), "{:?}: {}", l.layout, r.unwrap_err());
    Ok(())
}

/// Removes `l` from the model of owned byte ranges (before it is freed or moved).
fn disown(owned: &mut RangeShadow<()>, l: &Live) -> Result<(), TestCaseError> {
    let r = owned.remove(l.ptr.as_ptr().addr());
    prop_assert!(r.is_ok(), "{:?}: {}", l.layout, r.unwrap_err());
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let heap: Box<Heap> = Box::new(SmpHeap::new(SystemPages::new()));
    let mut live: Vec<Live> = Vec::new();
    // The live blocks' byte ranges: a block handed out over a live one fails at once.
    let mut owned = RangeShadow::new(Regions::Any);
    let mut tag = 0u8;
    for (step, op) in ops.into_iter().enumerate() {
        // Under Miri `check()` (with the statistics it returns) runs after every third step and
        // after every drain or reclaim: it walks every class's depot and the whole page map, so
        // after every step it was nine tenths of this binary's time. Natively: every step.
        let full_check = !cfg!(miri) || step % 3 == 2 || matches!(op, Op::Drain | Op::Reclaim);
        match op {
            Op::Alloc {
                cpu,
                size,
                align_log,
            } => {
                CPU.with(|c| c.set(cpu));
                let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                let ptr = heap.allocate(layout);
                prop_assert!(ptr.is_some(), "out of memory for {layout:?}");
                let ptr = ptr.unwrap();
                prop_assert_eq!(ptr.as_ptr().addr() % layout.align(), 0);
                tag = tag.wrapping_add(1);
                let l = Live { ptr, layout, tag };
                own(&mut owned, &l)?;
                fill(&l);
                live.push(l);
            }
            Op::Free { cpu, pick } if !live.is_empty() => {
                CPU.with(|c| c.set(cpu));
                let l = live.swap_remove(pick % live.len());
                prop_assert!(intact(&l), "contents of {:?} changed", l.layout);
                disown(&mut owned, &l)?;
                // SAFETY: allocated above with this layout, freed once.
                unsafe { heap.deallocate(l.ptr, l.layout) };
            }
            Op::Realloc { cpu, pick, size } if !live.is_empty() => {
                CPU.with(|c| c.set(cpu));
                let i = pick % live.len();
                prop_assert!(intact(&live[i]));
                let old = live[i].layout;
                // SAFETY: a live block of this heap with `old`.
                let new = unsafe { heap.reallocate(live[i].ptr, old, size) };
                prop_assert!(new.is_some());
                let new = new.unwrap();
                prop_assert_eq!(new.as_ptr().addr() % old.align(), 0);
                // The kept prefix (under Miri its first 256 bytes, which `fill` wrote).
                let kept = old.size().min(size);
                let kept = if cfg!(miri) { kept.min(256) } else { kept };
                // SAFETY: the kept prefix is initialised with the tag.
                let kept = unsafe { core::slice::from_raw_parts(new.as_ptr(), kept) };
                prop_assert!(
                    kept.iter().all(|&b| b == live[i].tag),
                    "realloc lost contents"
                );
                disown(&mut owned, &live[i])?;
                live[i].ptr = new;
                live[i].layout = Layout::from_size_align(size, old.align()).unwrap();
                own(&mut owned, &live[i])?;
                fill(&live[i]);
            }
            Op::FreeUnsized { cpu, pick } if !live.is_empty() => {
                CPU.with(|c| c.set(cpu));
                let l = live.swap_remove(pick % live.len());
                prop_assert!(intact(&l), "contents of {:?} changed", l.layout);
                disown(&mut owned, &l)?;
                // SAFETY: allocated above, freed once.
                unsafe { heap.free(l.ptr) };
            }
            Op::Usable { pick } if !live.is_empty() => {
                let l = &live[pick % live.len()];
                // SAFETY: a live block of this heap.
                let usable = unsafe { heap.usable_size(l.ptr) };
                prop_assert!(usable.is_some(), "no usable size for {:?}", l.layout);
                let usable = usable.unwrap();
                prop_assert!(usable >= l.layout.size(), "{} < {:?}", usable, l.layout);
                // Write the slack (under Miri its last 256 bytes): legal, and no other block
                // may change (checked by `intact` on every later step).
                let start = if cfg!(miri) {
                    l.layout.size().max(usable.saturating_sub(256))
                } else {
                    l.layout.size()
                };
                // SAFETY: `usable_size` bytes are the block's (the property under test).
                unsafe {
                    l.ptr.as_ptr().add(start).write_bytes(0xA5, usable - start);
                }
            }
            Op::ReallocUnsized {
                cpu,
                pick,
                size,
                align_log,
            } if !live.is_empty() => {
                CPU.with(|c| c.set(cpu));
                let i = pick % live.len();
                prop_assert!(intact(&live[i]));
                let old = live[i].layout;
                let align = 1usize << align_log;
                // SAFETY: a live block of this heap.
                let new = unsafe { heap.reallocate_unsized(live[i].ptr, size, align) };
                prop_assert!(new.is_some());
                let new = new.unwrap();
                prop_assert_eq!(new.as_ptr().addr() % align, 0);
                let kept = old.size().min(size);
                let kept = if cfg!(miri) { kept.min(256) } else { kept };
                // SAFETY: the kept prefix is initialised with the tag.
                let kept = unsafe { core::slice::from_raw_parts(new.as_ptr(), kept) };
                prop_assert!(
                    kept.iter().all(|&b| b == live[i].tag),
                    "unsized realloc lost contents"
                );
                disown(&mut owned, &live[i])?;
                live[i].ptr = new;
                live[i].layout = Layout::from_size_align(size, align).unwrap();
                own(&mut owned, &live[i])?;
                fill(&live[i]);
            }
            Op::Drain => heap.drain_cpu_caches(),
            Op::Reclaim => {
                heap.reclaim();
                let tlsf_live = live.iter().any(|l| Route::of(l.layout) == Route::Tlsf);
                let pools = heap.stats().tlsf_pool_bytes;
                prop_assert_eq!(
                    pools > 0,
                    tlsf_live,
                    "TLSF pools held after reclaim: {} bytes",
                    pools
                );
            }
            _ => {}
        }
        prop_assert_eq!(owned.len(), live.len());
        if !full_check {
            continue;
        }
        let stats = heap.check();
        prop_assert!(stats.is_ok(), "{:?}", stats);
        // Small objects allocated = what the model holds from the slab classes.
        let small: usize = live
            .iter()
            .filter_map(|l| match Route::of(l.layout) {
                Route::Small(c) => Some(heap.class_stats(c).unwrap().size),
                _ => None,
            })
            .sum();
        let stats = stats.unwrap();
        prop_assert_eq!(stats.small_bytes, small);
        // Everything held from the system is a slab, a TLSF pool, a huge block (which
        // `SystemPages` counts at its layout's size, at least a page) or a page-map node.
        let huge: usize = live
            .iter()
            .filter(|l| Route::of(l.layout) == Route::Huge)
            .map(|l| l.layout.size().max(4096))
            .sum();
        prop_assert_eq!(
            heap.pages().held_bytes(),
            stats.slab_bytes + stats.tlsf_pool_bytes + huge + heap.map_bytes()
        );
    }
    for l in live.drain(..) {
        prop_assert!(intact(&l));
        disown(&mut owned, &l)?;
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(l.ptr, l.layout) };
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    prop_assert_eq!(stats.slab_bytes, 0);
    prop_assert_eq!(stats.huge_bytes, 0);
    prop_assert_eq!(stats.parked_bytes, 0);
    for class in 0..HEAP_CLASSES {
        let c = heap.class_stats(class).unwrap();
        prop_assert_eq!((c.allocated, c.slabs, c.slab_inuse), (0, 0, 0));
    }
    // Nothing is held from the system, TLSF pools included.
    prop_assert_eq!(stats.tlsf_pool_bytes, 0);
    prop_assert_eq!(heap.pages().held_bytes(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        // Miri's isolation has no working directory for the regressions file.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            ProptestConfig::default().failure_persistence
        },
        ..ProptestConfig::default()
    })]

    #[test]
    fn heap_matches_shadow_model(ops in prop::collection::vec(op_strategy(), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(ops)?;
    }
}

/// Many objects of one class on one CPU, freed on another: magazines overflow into the depot,
/// the depot into the slabs, and slabs go back to the pages beyond the hysteresis.
#[test]
fn cross_cpu_frees_flow_back_to_the_pages() {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    let heap: Box<Heap> = Box::new(SmpHeap::new(SystemPages::new()));
    let layout = Layout::from_size_align(48, 16).unwrap();
    let n = if cfg!(miri) { 300 } else { 20_000 };
    CPU.with(|c| c.set(0));
    let blocks: Vec<_> = (0..n).map(|_| heap.allocate(layout).unwrap()).collect();
    let Route::Small(class) = Route::of(layout) else {
        panic!("48 B is a slab class")
    };
    assert_eq!(heap.class_stats(class).unwrap().allocated, n);
    assert_eq!(
        heap.cpu_stats(0, class).unwrap().net_allocations,
        n as isize
    );
    CPU.with(|c| c.set(1));
    for b in blocks {
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(b, layout) };
    }
    assert_eq!(
        heap.cpu_stats(1, class).unwrap().net_allocations,
        -(n as isize)
    );
    let stats = heap.class_stats(class).unwrap();
    assert_eq!(stats.allocated, 0);
    // Bounded parking: two magazines, the depot limit and two empty slabs.
    assert!(
        stats.parked_bytes <= (2 + smpalloc::heap::depot_limit(class)) * 32 * 48 + 2 * 4096 * 8
    );
    heap.check().unwrap();
    heap.drain_cpu_caches();
    heap.reclaim();
    assert_eq!(heap.stats().slab_bytes, 0);
    assert_eq!(heap.stats().tlsf_pool_bytes, 0);
    assert_eq!(heap.pages().held_bytes(), 0);
}

/// Dropping a heap returns everything it holds to its page source: magazines, depots and empty
/// slabs, and the TLSF pools it grew.
#[test]
fn drop_returns_every_page() {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    static PAGES: SystemPages = SystemPages::new();
    let pages = &PAGES;
    let heap: Box<SmpHeap<&'static SystemPages, CPUS>> = Box::new(SmpHeap::new(pages));
    let layouts = [
        Layout::from_size_align(24, 8).unwrap(),
        Layout::from_size_align(10_000, 8).unwrap(),
        Layout::from_size_align(300_000, 8).unwrap(),
    ];
    let blocks: Vec<_> = layouts
        .iter()
        .map(|&l| (heap.allocate(l).unwrap(), l))
        .collect();
    assert!(pages.held_bytes() > 300_000);
    for (p, l) in blocks {
        // SAFETY: allocated above, freed once.
        unsafe { heap.deallocate(p, l) };
    }
    assert!(
        heap.stats().tlsf_pool_bytes > 0,
        "the 10,000-byte block grew the TLSF arenas"
    );
    drop(heap);
    assert_eq!(pages.held_bytes(), 0);
}

/// Statistics of a class that does not exist are `None`, not a panic.
#[test]
fn statistics_of_an_unknown_class_are_none() {
    let heap: Box<Heap> = Box::new(SmpHeap::new(SystemPages::new()));
    assert!(heap.class_stats(HEAP_CLASSES).is_none());
    assert!(heap.cpu_stats(0, HEAP_CLASSES).is_none());
    assert!(heap.class_stats(HEAP_CLASSES - 1).is_some());
    assert!(
        heap.cpu_stats(CPUS + 1, 0).is_some(),
        "CPU ids are reduced modulo the slots"
    );
}
