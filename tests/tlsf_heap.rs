//! `TlsfHeap`: threads allocating and freeing each other's blocks (an ownership table checks
//! that no block is handed out twice), borrowing from other arenas when one is exhausted,
//! reallocation, bad input, pools removed and their region entries reused (also while other
//! threads free), and (feature `allocator-api2`) collections living in the heap.
//! Runs under Miri with fewer rounds.

mod support;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;
use std::sync::{Mutex, mpsc};
use std::thread;

use smpalloc::{AllocError, TlsfHeap};
use support::Rng;
use support::memory::Memory;

const ROUNDS: usize = if cfg!(miri) { 60 } else { 20_000 };

/// Who owns which byte range: a block handed out twice overlaps an entry.
#[derive(Default)]
struct Ownership(Mutex<BTreeMap<usize, (usize, usize)>>);

impl Ownership {
    fn take(&self, ptr: NonNull<u8>, size: usize, owner: usize) {
        let addr = ptr.as_ptr().addr();
        let mut map = self.0.lock().unwrap();
        if let Some((&s, &(len, other))) = map.range(..addr + size).next_back() {
            assert!(
                s + len <= addr,
                "block {addr:#x}+{size} overlaps {s:#x}+{len} of thread {other}"
            );
        }
        map.insert(addr, (size, owner));
    }

    fn give_back(&self, ptr: NonNull<u8>) {
        assert!(
            self.0
                .lock()
                .unwrap()
                .remove(&ptr.as_ptr().addr())
                .is_some(),
            "unknown block"
        );
    }
}

fn fill(ptr: NonNull<u8>, size: usize, byte: u8) {
    // SAFETY: the block is live and at least `size` bytes.
    unsafe { ptr.as_ptr().write_bytes(byte, size) };
}

fn intact(ptr: NonNull<u8>, size: usize, byte: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { core::slice::from_raw_parts(ptr.as_ptr(), size) }
        .iter()
        .all(|&b| b == byte)
}

#[derive(Clone, Copy)]
struct Sent(NonNull<u8>, Layout, u8);
// SAFETY: a block pointer handed to another thread to free; the block is owned by the message.
unsafe impl Send for Sent {}

/// Four threads allocate, keep, free their own blocks and free blocks other threads send
/// them (cross-arena frees); at the end every byte is back.
#[test]
fn threads_allocate_and_free_each_others_blocks() {
    const THREADS: usize = 4;
    let buffer = Memory::page_aligned(if cfg!(miri) { 64 * 1024 } else { 4 << 20 });
    let heap: TlsfHeap<4> = TlsfHeap::new();
    // SAFETY: the buffer outlives the heap's use and is used by nothing else.
    unsafe { heap.add_pool(buffer.slice(0, buffer.len())).unwrap() };
    heap.check().unwrap();
    let owners = Ownership::default();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Sent>()).unzip();
    thread::scope(|s| {
        let mut handles = Vec::new();
        for (t, rx) in receivers.into_iter().enumerate() {
            let (heap, owners, senders) = (&heap, &owners, senders.clone());
            handles.push(s.spawn(move || {
                let mut rng = Rng::new(t as u64 * 7919 + 1);
                let mut mine: Vec<Sent> = Vec::new();
                for round in 0..ROUNDS {
                    let size = match rng.below(20) {
                        0 => 1 + rng.below(8192),
                        1..=5 => 129 + rng.below(900),
                        _ => 1 + rng.below(128),
                    };
                    let shifts = if rng.below(10) == 0 { 13 } else { 4 };
                    let align = 1 << rng.below(shifts);
                    let layout = Layout::from_size_align(size, align).unwrap();
                    if let Some(p) = heap.allocate(layout) {
                        assert_eq!(p.as_ptr().addr() % align, 0);
                        owners.take(p, size, t);
                        let byte = (round % 251) as u8 + 1;
                        fill(p, size, byte);
                        mine.push(Sent(p, layout, byte));
                    }
                    while let Ok(Sent(p, layout, byte)) = rx.try_recv() {
                        assert!(
                            intact(p, layout.size(), byte),
                            "a sent block was overwritten"
                        );
                        owners.give_back(p);
                        // SAFETY: live, sent to us to free once.
                        unsafe { heap.deallocate(p, layout) };
                    }
                    if mine.len() > 64 || (rng.below(3) == 0 && !mine.is_empty()) {
                        let victim = mine.swap_remove(rng.below(mine.len()));
                        if rng.below(2) == 0 {
                            senders[rng.below(THREADS)].send(victim).unwrap();
                        } else {
                            assert!(intact(victim.0, victim.1.size(), victim.2));
                            owners.give_back(victim.0);
                            // SAFETY: live, freed once.
                            unsafe { heap.deallocate(victim.0, victim.1) };
                        }
                    }
                }
                for Sent(p, layout, byte) in mine {
                    assert!(intact(p, layout.size(), byte));
                    owners.give_back(p);
                    // SAFETY: live, freed once.
                    unsafe { heap.deallocate(p, layout) };
                }
                // Whatever is still in flight to us is drained by the main thread below.
                rx
            }));
        }
        let receivers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for rx in receivers {
            while let Ok(Sent(p, layout, byte)) = rx.try_recv() {
                assert!(intact(p, layout.size(), byte));
                owners.give_back(p);
                // SAFETY: live, sent to be freed once.
                unsafe { heap.deallocate(p, layout) };
            }
        }
    });
    drop(senders);
    heap.check().unwrap();
    assert_eq!(owners.0.lock().unwrap().len(), 0, "blocks left in flight");
    assert_eq!(heap.check().unwrap(), 0, "bytes still marked used");
}

/// When this CPU's arena is exhausted, the other arenas serve it; every region ends up used.
#[test]
fn exhausted_arena_borrows_from_the_others() {
    let buffer = Memory::page_aligned(16 * 1024);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    // Two small pools: each goes whole to one arena (0, then 1).
    // SAFETY: disjoint halves of the buffer.
    unsafe {
        heap.add_pool(buffer.slice(0, 8 * 1024)).unwrap();
        heap.add_pool(buffer.slice(8 * 1024, 8 * 1024)).unwrap();
    }
    let layout = Layout::from_size_align(200, 8).unwrap();
    let mut got = Vec::new();
    while let Some(p) = heap.allocate(layout) {
        got.push(p);
    }
    let base = buffer.ptr().as_ptr().addr();
    let in_first = got
        .iter()
        .filter(|p| p.as_ptr().addr() < base + 8 * 1024)
        .count();
    assert!(
        in_first > 30 && got.len() - in_first > 30,
        "one arena was not used: {in_first} of {}",
        got.len()
    );
    heap.check().unwrap();
    for p in got {
        // SAFETY: live, freed once.
        unsafe { heap.deallocate(p, layout) };
    }
    assert_eq!(heap.check().unwrap(), 0);
}

/// Reallocation keeps contents, grows in place under the owner's lock when it can, and moves
/// to another arena when the owner is full.
#[test]
fn reallocate_keeps_contents_across_arenas() {
    let buffer = Memory::page_aligned(8 * 1024);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    // SAFETY: disjoint halves.
    unsafe {
        heap.add_pool(buffer.slice(0, 4096)).unwrap();
        heap.add_pool(buffer.slice(4096, 4096)).unwrap();
    }
    let layout = Layout::from_size_align(100, 16).unwrap();
    let p = heap.allocate(layout).unwrap();
    fill(p, 100, 9);
    // SAFETY: `p` is live with `layout`; each result replaces it.
    unsafe {
        let q = heap.reallocate(p, layout, 300).unwrap();
        assert_eq!(q, p, "the rest of the pool follows: grow in place");
        assert!(intact(q, 100, 9));
        // Too big for one 4 KiB pool: refused, the block stays.
        assert!(
            heap.reallocate(q, Layout::from_size_align(300, 16).unwrap(), 5000)
                .is_none()
        );
        assert!(intact(q, 100, 9));
        // Fill the owner's pool so the next growth must move to the other arena.
        let owner_half = q.as_ptr().addr() < buffer.ptr().as_ptr().addr() + 4096;
        let filler = heap
            .allocate(Layout::from_size_align(3000, 16).unwrap())
            .unwrap();
        let r = heap
            .reallocate(q, Layout::from_size_align(300, 16).unwrap(), 2000)
            .unwrap();
        assert!(intact(r, 100, 9));
        let r_half = r.as_ptr().addr() < buffer.ptr().as_ptr().addr() + 4096;
        assert_ne!(
            owner_half, r_half,
            "the block should have moved to the other arena"
        );
        heap.check().unwrap();
        heap.deallocate(r, Layout::from_size_align(2000, 16).unwrap());
        heap.deallocate(filler, Layout::from_size_align(3000, 16).unwrap());
    }
    assert_eq!(heap.check().unwrap(), 0);
}

/// Bad input: a clear error, and the heap is unchanged.
#[test]
fn bad_input_is_refused() {
    let buffer = Memory::page_aligned(17 * 4096);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    assert!(
        heap.allocate(Layout::new::<u64>()).is_none(),
        "an empty heap allocated"
    );
    // SAFETY: (every call) ranges of the buffer, each used by the heap only once.
    unsafe {
        assert_eq!(
            heap.add_pool(buffer.slice(0, 40)),
            Err(AllocError::InvalidParam)
        );
        heap.add_pool(buffer.slice(0, 4096)).unwrap();
        assert_eq!(
            heap.add_pool(buffer.slice(2048, 4096)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            heap.add_pool(buffer.slice(0, 4096)),
            Err(AllocError::MemoryOverlap)
        );
        for i in 1..16 {
            heap.add_pool(buffer.slice(i * 4096, 4096)).unwrap();
        }
        assert_eq!(
            heap.add_pool(buffer.slice(16 * 4096 - 1, 2)),
            Err(AllocError::MemoryOverlap)
        );
        assert_eq!(
            heap.add_pool(buffer.slice(16 * 4096, 4096)),
            Err(AllocError::NoMemory)
        );
    }
    // (Integer addresses are outside Miri's strict provenance.)
    #[cfg(not(miri))]
    assert_eq!(heap.add_memory(0, 4096), Err(AllocError::InvalidParam));
    let used = heap.check().unwrap();
    for layout in [
        Layout::from_size_align(1 << 20, 8).unwrap(),
        Layout::from_size_align(8, 1 << 16).unwrap(),
        Layout::from_size_align(isize::MAX as usize - 64, 1).unwrap(),
    ] {
        assert!(heap.allocate(layout).is_none(), "{layout:?} cannot fit");
    }
    assert_eq!(
        heap.check().unwrap(),
        used,
        "failed allocations changed the heap"
    );
    for align in [1, 8, 64, 4096] {
        let zst = Layout::from_size_align(0, align).unwrap();
        let p = heap.allocate(zst).unwrap();
        assert_eq!(
            p.as_ptr().addr(),
            align,
            "zero-size: the dangling pointer of its alignment"
        );
        // SAFETY: a zero-size allocation; freeing it is a no-op.
        unsafe { heap.deallocate(p, zst) };
    }
    // A pointer outside every region is ignored.
    let mut outside = [0u64; 4];
    // SAFETY: not a block of the heap; the heap must not touch it.
    unsafe {
        heap.deallocate(
            NonNull::from(&mut outside).cast(),
            Layout::new::<[u64; 4]>(),
        )
    };
    assert_eq!(outside, [0; 4]);
    assert_eq!(heap.check().unwrap(), used, "bad frees changed the heap");
}

/// A double free through the heap panics in debug builds.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "double free")]
fn double_free_panics_in_debug() {
    let buffer = Memory::page_aligned(4096);
    let heap: TlsfHeap<1> = TlsfHeap::new();
    // SAFETY: the buffer, once.
    unsafe { heap.add_pool(buffer.slice(0, 4096)).unwrap() };
    let layout = Layout::new::<u64>();
    let a = heap.allocate(layout).unwrap();
    let _b = heap.allocate(layout).unwrap();
    // SAFETY: deliberately freed twice; the second is caught before any write.
    unsafe {
        heap.deallocate(a, layout);
        heap.deallocate(a, layout);
    }
}

/// A free through the heap of a pointer inside a region that is not granule-aligned, or lies
/// in the region's first granule, is caught (debug builds) before its "header" is read.
#[test]
#[cfg(debug_assertions)]
fn misplaced_frees_panic_in_debug() {
    let buffer = Memory::page_aligned(4096);
    let heap: TlsfHeap<1> = TlsfHeap::new();
    let pool = buffer.slice(0, 4096);
    // SAFETY: the buffer, once.
    unsafe { heap.add_pool(pool).unwrap() };
    let layout = Layout::new::<u64>();
    let a = heap.allocate(layout).unwrap();
    let used = heap.check().unwrap();
    // SAFETY: inside the live block `a`.
    let misaligned = unsafe { a.add(1) };
    // The pool's first byte: its "header" would lie before the pool.
    let first = pool.cast::<u8>();
    for bad in [misaligned, first] {
        let freed = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            // SAFETY: deliberately not an allocation; refused before any write.
            unsafe { heap.deallocate(bad, layout) }
        }));
        let message = freed.unwrap_err();
        let message = message.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(message.contains("not an allocation"), "{message}");
    }
    assert_eq!(
        heap.check().unwrap(),
        used,
        "misplaced frees changed the heap"
    );
    // SAFETY: `a` is live.
    unsafe { heap.deallocate(a, layout) };
}

/// A pool large enough to split, added when the region table has room for only one entry,
/// goes whole to one arena instead of being refused.
#[test]
fn large_pool_into_a_nearly_full_table_is_not_split() {
    const SMALL: usize = 4096;
    const LARGE: usize = 2 * 64 * 1024;
    let buffer = Memory::page_aligned(15 * SMALL + LARGE);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    for i in 0..15 {
        // SAFETY: disjoint parts of the buffer, each once.
        unsafe { heap.add_pool(buffer.slice(i * SMALL, SMALL)).unwrap() };
    }
    // SAFETY: the rest of the buffer, once.
    unsafe { heap.add_pool(buffer.slice(15 * SMALL, LARGE)).unwrap() };
    let layout = Layout::from_size_align(LARGE / 2, 8).unwrap();
    let p = heap.allocate(layout).expect("the large pool is one block");
    // SAFETY: `p` is live.
    unsafe { heap.deallocate(p, layout) };
    assert_eq!(heap.check().unwrap(), 0);
}

/// A heap over a static pool starts lazily, from several threads at once.
#[test]
fn static_pool_starts_once_under_contention() {
    const LEN: usize = 64 * 1024;
    static mut POOL: [u8; LEN] = [0; LEN];
    // SAFETY: `POOL` is used by this heap only.
    static HEAP: TlsfHeap<2> = unsafe { TlsfHeap::with_pool((&raw mut POOL).cast(), LEN) };
    let layout = Layout::from_size_align(48, 8).unwrap();
    let blocks: Vec<Sent> = thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    Sent(
                        HEAP.allocate(layout).expect("the pool was carved"),
                        layout,
                        0,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<usize> = blocks.iter().map(|b| b.0.as_ptr().addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "two threads got the same block");
    HEAP.check().unwrap();
    for Sent(p, layout, _) in blocks {
        // SAFETY: live, freed once.
        unsafe { HEAP.deallocate(p, layout) };
    }
    assert_eq!(HEAP.check().unwrap(), 0);
}

#[cfg(feature = "allocator-api2")]
mod collections {
    use super::*;
    use allocator_api2::vec::Vec as ApiVec;

    /// `Vec` and hashbrown's `HashMap` live in the heap through `allocator_api2::Allocator`.
    #[test]
    fn vec_and_hash_map_live_in_the_heap() {
        let buffer = Memory::page_aligned(if cfg!(miri) { 64 * 1024 } else { 1 << 20 });
        let heap: TlsfHeap<2> = TlsfHeap::new();
        // SAFETY: the buffer outlives the collections (dropped first).
        unsafe { heap.add_pool(buffer.slice(0, buffer.len())).unwrap() };
        let n = if cfg!(miri) { 300 } else { 20_000 };
        {
            let mut v: ApiVec<u32, &TlsfHeap<2>> = ApiVec::new_in(&heap);
            for i in 0..n {
                v.push(i);
            }
            assert!(v.iter().copied().eq(0..n));
            v.truncate(10);
            v.shrink_to_fit();
            assert_eq!(&v[..], &(0..10).collect::<Vec<_>>()[..]);
            let mut m = hashbrown::HashMap::new_in(&heap);
            for i in 0..n / 4 {
                m.insert(i, ApiVec::<u8, _>::with_capacity_in(i as usize % 40, &heap));
            }
            for i in (0..n / 4).step_by(3) {
                m.remove(&i);
            }
            assert_eq!(m.len(), (n / 4 - (n / 4).div_ceil(3)) as usize);
            heap.check().unwrap();
            let zst: ApiVec<(), _> = ApiVec::with_capacity_in(5, &heap);
            drop(zst);
        }
        assert_eq!(heap.check().unwrap(), 0, "the collections leaked");
    }
}

/// `remove_pool` takes back a whole region with nothing allocated in it, refuses anything else
/// (heap unchanged), and the memory it returned can be added again.
#[test]
fn remove_pool_takes_back_only_a_free_whole_region() {
    const POOL: usize = 4096;
    let buffer = Memory::page_aligned(4 * POOL + 256 * 1024);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    // SAFETY: disjoint parts of the buffer, each added once while it is the heap's.
    unsafe {
        heap.add_pool(buffer.slice(0, POOL)).unwrap();
        heap.add_pool(buffer.slice(POOL, POOL)).unwrap();
    }
    for not_a_region in [
        buffer.slice(2 * POOL, POOL),
        buffer.slice(0, POOL / 2),
        buffer.slice(0, 2 * POOL),
        buffer.slice(16, POOL - 16),
    ] {
        assert_eq!(
            heap.remove_pool(not_a_region),
            Err(AllocError::InvalidParam)
        );
    }
    let layout = Layout::from_size_align(64, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    fill(p, 64, 0x11);
    let in_first = p.as_ptr().addr() - buffer.ptr().as_ptr().addr() < POOL;
    let (own, other) = if in_first { (0, POOL) } else { (POOL, 0) };
    let used = heap.check().unwrap();
    assert_eq!(
        heap.remove_pool(buffer.slice(own, POOL)),
        Err(AllocError::MemoryOverlap),
        "a pool with a live block"
    );
    assert_eq!(
        heap.check().unwrap(),
        used,
        "a refused removal changed the heap"
    );
    heap.remove_pool(buffer.slice(other, POOL)).unwrap();
    assert_eq!(heap.check().unwrap(), used);
    assert_eq!(
        heap.remove_pool(buffer.slice(other, POOL)),
        Err(AllocError::InvalidParam),
        "removed twice"
    );
    // Everything now comes from the pool that stayed, until it is full.
    let mut more = Vec::new();
    while let Some(q) = heap.allocate(layout) {
        let offset = q.as_ptr().addr() - buffer.ptr().as_ptr().addr();
        assert!(
            (own..own + POOL).contains(&offset),
            "served from a removed pool"
        );
        more.push(q);
    }
    assert!(more.len() > 10);
    for q in more {
        // SAFETY: live, freed once.
        unsafe { heap.deallocate(q, layout) };
    }
    assert!(intact(p, 64, 0x11));
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(p, layout) };
    heap.remove_pool(buffer.slice(own, POOL)).unwrap();
    assert!(heap.allocate(layout).is_none(), "an empty heap allocated");
    assert_eq!(heap.check().unwrap(), 0);
    // The memory is the caller's again: overwrite it, then give it back as one pool.
    // SAFETY: both pools were removed; nothing else uses the buffer.
    unsafe { buffer.ptr().as_ptr().write_bytes(0xee, 2 * POOL) };
    // SAFETY: the first two pages of the buffer, the heap's from now on.
    unsafe { heap.add_pool(buffer.slice(0, 2 * POOL)).unwrap() };
    let big = Layout::from_size_align(POOL + 1000, 8).unwrap();
    let q = heap.allocate(big).expect("the merged range is one block");
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(q, big) };
    // A pool split across the arenas is several regions: not removable as one.
    // SAFETY: the rest of the buffer, once.
    unsafe { heap.add_pool(buffer.slice(4 * POOL, 256 * 1024)).unwrap() };
    assert_eq!(
        heap.remove_pool(buffer.slice(4 * POOL, 256 * 1024)),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(heap.check().unwrap(), 0);
}

/// The 16 region entries are reused: with the table full, 100 cycles of removing a pool and
/// adding another (at another address and length) keep working; the heap serves from the new
/// pools and never from removed ones.
#[test]
fn region_entries_are_reused_beyond_sixteen() {
    const SLOT: usize = 4096;
    let buffer = Memory::page_aligned(48 * SLOT);
    let base = buffer.ptr().as_ptr().addr();
    let heap: TlsfHeap<4> = TlsfHeap::new();
    // Region k lives at slot 3k (one page) or 3k + 1 (two pages), alternating.
    let range = |k: usize, moved: bool| {
        if moved {
            buffer.slice((3 * k + 1) * SLOT, 2 * SLOT)
        } else {
            buffer.slice(3 * k * SLOT, SLOT)
        }
    };
    let mut moved = [false; 16];
    for k in 0..16 {
        // SAFETY: disjoint parts of the buffer, each the heap's while added.
        unsafe { heap.add_pool(range(k, false)).unwrap() };
    }
    // SAFETY: a part of the buffer no region uses (and refused: the table is full).
    let refused = unsafe { heap.add_pool(buffer.slice(47 * SLOT, SLOT)) };
    assert_eq!(refused, Err(AllocError::NoMemory));
    let layout = Layout::from_size_align(100, 8).unwrap();
    let cycles = if cfg!(miri) { 20 } else { 100 };
    for cycle in 0..cycles {
        let k = (cycle * 7) % 16;
        heap.remove_pool(range(k, moved[k])).unwrap();
        moved[k] = !moved[k];
        // SAFETY: the other range of region k, free since its removal (or never added).
        unsafe { heap.add_pool(range(k, moved[k])).unwrap() };
        let blocks: Vec<_> = (0..8).map(|_| heap.allocate(layout).unwrap()).collect();
        for &p in &blocks {
            let slot = (p.as_ptr().addr() - base) / SLOT;
            let region = slot / 3;
            let current = (slot % 3 != 0) == moved[region];
            assert!(current, "cycle {cycle}: a block of a removed pool");
        }
        assert_eq!(heap.check().unwrap(), blocks.len() * 128);
        for p in blocks {
            // SAFETY: live, freed once.
            unsafe { heap.deallocate(p, layout) };
        }
        assert_eq!(heap.check().unwrap(), 0);
    }
}

/// Frees and lookups stay right while pools come and go: two threads allocate, free their own
/// blocks and each other's (ownership table), while a third adds and removes spare pools
/// (reusing region entries, at changing addresses and lengths). Every removal the third thread
/// makes succeeds only for a pool nobody holds a block of; at the end all are removed.
#[test]
fn frees_stay_right_while_pools_come_and_go() {
    const BASE: usize = 64 * 1024;
    const SPARE: usize = 8 * 1024;
    let buffer = Memory::page_aligned(2 * BASE + 6 * SPARE);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    // SAFETY: the first two parts of the buffer, the heap's for good.
    unsafe {
        heap.add_pool(buffer.slice(0, BASE)).unwrap();
        heap.add_pool(buffer.slice(BASE, BASE)).unwrap();
    }
    // Spare pool k: at `2 * BASE + k * SPARE`, one or (odd k) just under one spare long.
    let spares = Ranges(
        (0..6)
            .map(|k| buffer.slice(2 * BASE + k * SPARE, SPARE - (k % 2) * 512))
            .collect(),
    );
    let owners = Ownership::default();
    let rounds = ROUNDS / 4;
    let (to_0, from_1) = mpsc::channel::<Sent>();
    let (to_1, from_0) = mpsc::channel::<Sent>();
    let done = core::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let workers: Vec<_> = [(to_1, from_1), (to_0, from_0)]
            .into_iter()
            .enumerate()
            .map(|(t, (send, recv))| {
                let (heap, owners) = (&heap, &owners);
                s.spawn(move || {
                    let mut rng = Rng::new(t as u64 + 7);
                    let mut mine: Vec<Sent> = Vec::new();
                    for i in 0..rounds {
                        let size = 16 + rng.below(1500);
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        if let Some(p) = heap.allocate(layout) {
                            owners.take(p, size, t);
                            let tag = (i % 250) as u8 + 1;
                            fill(p, size, tag);
                            mine.push(Sent(p, layout, tag));
                        }
                        if mine.len() > 40 || (i % 3 == 0 && !mine.is_empty()) {
                            let b = mine.swap_remove(rng.below(mine.len()));
                            if i % 2 == 0 {
                                send.send(b).unwrap();
                            } else {
                                release(heap, owners, b);
                            }
                        }
                        while let Ok(b) = recv.try_recv() {
                            release(heap, owners, b);
                        }
                    }
                    for b in mine {
                        release(heap, owners, b);
                    }
                    drop(send);
                    // The other thread's last blocks, until it hangs up.
                    while let Ok(b) = recv.recv() {
                        release(heap, owners, b);
                    }
                })
            })
            .collect();
        let (heap, done, spares) = (&heap, &done, &spares);
        let spare = |k: usize| spares.0[k];
        s.spawn(move || {
            let mut present = [false; 6];
            let mut k = 0;
            while !done.load(core::sync::atomic::Ordering::Acquire) {
                k = (k + 1) % 6;
                if present[k] {
                    present[k] = heap.remove_pool(spare(k)).is_err();
                } else {
                    // SAFETY: spare `k` is not in the heap (never added, or removed since).
                    unsafe { heap.add_pool(spare(k)).unwrap() };
                    present[k] = true;
                }
                thread::yield_now();
            }
            for (k, present) in present.into_iter().enumerate() {
                if present {
                    // Both workers are done: every spare is free again.
                    heap.remove_pool(spare(k)).unwrap();
                }
            }
        });
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, core::sync::atomic::Ordering::Release);
    });
    assert!(owners.0.lock().unwrap().is_empty());
    assert_eq!(heap.check().unwrap(), 0);
}

/// Frees a block owned by the caller after checking its contents.
fn release(heap: &TlsfHeap<2>, owners: &Ownership, Sent(p, layout, tag): Sent) {
    assert!(
        intact(p, layout.size(), tag),
        "contents changed while owned"
    );
    owners.give_back(p);
    // SAFETY: live, owned by the caller, freed once.
    unsafe { heap.deallocate(p, layout) };
}

/// Pool ranges shared with a thread that adds and removes them.
struct Ranges(Vec<NonNull<[u8]>>);
// SAFETY: plain ranges of a test buffer; the memory is reached only through the heap.
unsafe impl Sync for Ranges {}

/// A stale free of a block whose pool was removed is not found in the region table: ignored
/// (in every build), and the memory, the caller's again, is not touched.
#[test]
fn stale_free_into_a_removed_pool_is_ignored() {
    const POOL: usize = 4096;
    let buffer = Memory::page_aligned(2 * POOL);
    let heap: TlsfHeap<2> = TlsfHeap::new();
    // SAFETY: disjoint parts of the buffer, each the heap's while added.
    unsafe {
        heap.add_pool(buffer.slice(0, POOL)).unwrap();
        heap.add_pool(buffer.slice(POOL, POOL)).unwrap();
    }
    let layout = Layout::from_size_align(64, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    // SAFETY: live, freed once (the second free below is the stale one under test).
    unsafe { heap.deallocate(p, layout) };
    let offset = p.as_ptr().addr() - buffer.ptr().as_ptr().addr();
    let pool = offset / POOL * POOL;
    heap.remove_pool(buffer.slice(pool, POOL)).unwrap();
    // SAFETY: removed: the memory is ours again.
    unsafe { buffer.ptr().as_ptr().add(pool).write_bytes(0x77, POOL) };
    // SAFETY: deliberately stale (the contract is broken); the heap must ignore it.
    unsafe { heap.deallocate(p, layout) };
    // SAFETY: the removed pool, overwritten above and not used by the heap.
    let bytes = unsafe { core::slice::from_raw_parts(buffer.ptr().as_ptr().add(pool), POOL) };
    assert!(
        bytes.iter().all(|&b| b == 0x77),
        "the heap wrote to a removed pool"
    );
    assert_eq!(heap.check().unwrap(), 0);
    let q = heap.allocate(layout).expect("the other pool serves");
    assert_ne!(q.as_ptr().addr() / POOL, p.as_ptr().addr() / POOL);
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(q, layout) };
}
