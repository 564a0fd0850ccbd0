//! Loom models of `TlsfHeap`'s arena protocols (docs/design/06-tlsf-and-arenas.md): two CPUs allocating in
//! their own arenas, a free on the CPU that does not own the block, borrowing from the other
//! arena when one is exhausted, a region added while another CPU allocates and frees, the
//! lazy start of a `with_pool` heap raced by two first users, and pools removed (their region
//! entries vacated and reused) while other CPUs free, look up and allocate. Tiny pools (one or
//! two blocks per arena). Empty unless built with `--cfg loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom LOOM_MAX_PREEMPTIONS=5 \
//!   cargo test --release --test loom_arena`
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;
use smpalloc::{AllocError, TlsfHeap, percpu};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Bytes of pool per region: room for two 48-byte blocks and the sentinel, not three.
const ARENA_POOL: usize = 128;
const BLOCK: Layout = match Layout::from_size_align(32, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// A heap of two arenas and the buffer behind it (declared after the heap, so it outlives it).
struct Fixture {
    heap: TlsfHeap<2>,
    buffer: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned by the fixture and reached only through the heap.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

impl Fixture {
    /// `pools` regions of `ARENA_POOL` bytes: region `i` goes to arena `i % 2`. With
    /// `lazy`, the first region is instead the heap's `with_pool` pool.
    fn new(pools: usize, lazy: bool) -> Arc<Self> {
        let len = 8 * ARENA_POOL;
        let layout = Layout::from_size_align(len, 64).unwrap();
        // SAFETY: non-zero size; freed in `drop`.
        let buffer = NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap();
        let heap = if lazy {
            // SAFETY: the first region of the buffer, used by the heap only.
            unsafe { TlsfHeap::with_pool(buffer.as_ptr(), ARENA_POOL) }
        } else {
            TlsfHeap::new()
        };
        let fixture = Self { heap, buffer, len };
        for i in usize::from(lazy)..pools {
            // SAFETY: disjoint regions of the buffer, each added once.
            unsafe { fixture.heap.add_pool(fixture.region(i)).unwrap() };
        }
        Arc::new(fixture)
    }

    fn region(&self, i: usize) -> NonNull<[u8]> {
        self.range(i, 1)
    }

    /// `n` region slots from slot `i`, as one range.
    fn range(&self, i: usize, n: usize) -> NonNull<[u8]> {
        assert!((i + n) * ARENA_POOL <= self.len);
        // SAFETY: inside the buffer (checked above).
        NonNull::slice_from_raw_parts(unsafe { self.buffer.add(i * ARENA_POOL) }, n * ARENA_POOL)
    }

    /// Which region a block lies in.
    fn region_of(&self, p: NonNull<u8>) -> usize {
        (p.as_ptr().addr() - self.buffer.as_ptr().addr()) / ARENA_POOL
    }

    /// Everything freed and every invariant (including "free blocks only in the owner's
    /// regions") holds.
    fn assert_drained(&self) {
        assert_eq!(
            self.heap.check().expect("heap invariants"),
            0,
            "bytes left in use"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the heap is no longer used.
        unsafe {
            std::alloc::dealloc(
                self.buffer.as_ptr(),
                Layout::from_size_align(self.len, 64).unwrap(),
            )
        };
    }
}

#[derive(Clone, Copy)]
struct Block(NonNull<u8>);
// SAFETY: a block handed to another thread, which owns it from then on.
unsafe impl Send for Block {}

fn write_and_check(p: NonNull<u8>, byte: u8) {
    // SAFETY: a live block of `BLOCK.size()` bytes owned by the caller.
    unsafe {
        p.as_ptr().write_bytes(byte, BLOCK.size());
        assert!(
            core::slice::from_raw_parts(p.as_ptr(), BLOCK.size())
                .iter()
                .all(|&b| b == byte)
        );
    }
}

/// Two CPUs allocate and free in their own arenas at the same time: both succeed, from their
/// own arena, and nothing is lost.
#[test]
fn two_cpus_allocate() {
    model(|| {
        let f = Fixture::new(2, false);
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let f = f.clone();
                thread::spawn(move || {
                    percpu::set_model_cpu(cpu);
                    let p = f.heap.allocate(BLOCK).expect("own arena has room");
                    assert_eq!(f.region_of(p), cpu, "served by another CPU's arena");
                    write_and_check(p, cpu as u8 + 1);
                    // SAFETY: live, freed once.
                    unsafe { f.heap.deallocate(p, BLOCK) };
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        f.assert_drained();
    });
}

/// CPU 1 frees a block of CPU 0's arena while CPU 0 allocates and frees there: the block goes
/// back to arena 0 (the check fails if arena 1 lists it).
#[test]
fn cross_arena_free() {
    model(|| {
        let f = Fixture::new(2, false);
        percpu::set_model_cpu(0);
        let b = Block(f.heap.allocate(BLOCK).unwrap());
        assert_eq!(f.region_of(b.0), 0);
        let remote = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(1);
                let b = b;
                // SAFETY: the block was handed to this thread to free, once.
                unsafe { f.heap.deallocate(b.0, BLOCK) };
            })
        };
        let q = f.heap.allocate(BLOCK).expect("arena 0 has a second block");
        write_and_check(q, 7);
        // SAFETY: live, freed once.
        unsafe { f.heap.deallocate(q, BLOCK) };
        remote.join().unwrap();
        f.assert_drained();
    });
}

/// CPU 0's arena holds two blocks; CPU 0 takes three, so the third is borrowed from arena 1
/// while CPU 1 takes one there. Every request is served in every interleaving.
#[test]
fn borrow_under_exhaustion() {
    model(|| {
        let f = Fixture::new(2, false);
        let other = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(1);
                Block(f.heap.allocate(BLOCK).expect("arena 1 has room for two"))
            })
        };
        percpu::set_model_cpu(0);
        let mine: Vec<Block> = (0..3)
            .map(|_| Block(f.heap.allocate(BLOCK).expect("borrowed from arena 1")))
            .collect();
        let theirs = other.join().unwrap();
        let mut regions: Vec<usize> = mine.iter().map(|b| f.region_of(b.0)).collect();
        regions.sort_unstable();
        assert_eq!(regions, [0, 0, 1], "the third block is borrowed");
        assert_eq!(f.region_of(theirs.0), 1);
        assert!(f.heap.allocate(BLOCK).is_none(), "both arenas are full");
        for b in mine.into_iter().chain([theirs]) {
            // SAFETY: live, freed once.
            unsafe { f.heap.deallocate(b.0, BLOCK) };
        }
        f.assert_drained();
    });
}

/// A region is added (to arena 1) while CPU 1 allocates and frees with arena 0 full: a block
/// carved from the new region is always found in the region table when freed.
#[test]
fn region_published_before_its_memory() {
    model(|| {
        let f = Fixture::new(1, false);
        percpu::set_model_cpu(0);
        let full: Vec<NonNull<u8>> = (0..2).map(|_| f.heap.allocate(BLOCK).unwrap()).collect();
        let user = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(1);
                // Nothing until the region lands; then a block of it.
                if let Some(p) = f.heap.allocate(BLOCK) {
                    assert_eq!(f.region_of(p), 1);
                    // SAFETY: live, freed once.
                    unsafe { f.heap.deallocate(p, BLOCK) };
                }
            })
        };
        // SAFETY: the second region, added once.
        unsafe { f.heap.add_pool(f.region(1)).unwrap() };
        user.join().unwrap();
        for p in full {
            // SAFETY: live, freed once.
            unsafe { f.heap.deallocate(p, BLOCK) };
        }
        f.assert_drained();
    });
}

/// Two first users race to start a `with_pool` heap: exactly one carves the pool, the other
/// waits for it, and both are served distinct blocks.
#[test]
fn lazy_start_once() {
    model(|| {
        let f = Fixture::new(1, true);
        let other = {
            let f = f.clone();
            thread::spawn(move || Block(f.heap.allocate(BLOCK).expect("started by someone")))
        };
        let mine = f.heap.allocate(BLOCK).expect("started by someone");
        let theirs = other.join().unwrap();
        assert_ne!(mine, theirs.0, "one block handed out twice");
        for p in [mine, theirs.0] {
            // SAFETY: live, freed once.
            unsafe { f.heap.deallocate(p, BLOCK) };
        }
        f.assert_drained();
    });
}

/// CPU 0 removes region 0 (arena 0's, wholly free) while CPU 1 frees a block of region 1 (its
/// lookup scans the entry being vacated first) and allocates and frees again in arena 1. The
/// free lands in arena 1, the removal succeeds, and nothing is served from region 0 after.
#[test]
fn removal_races_free_in_another_region() {
    model(|| {
        let f = Fixture::new(2, false);
        percpu::set_model_cpu(1);
        let b = Block(f.heap.allocate(BLOCK).unwrap());
        assert_eq!(f.region_of(b.0), 1);
        let remover = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(0);
                f.heap.remove_pool(f.region(0)).expect("region 0 is free");
            })
        };
        // SAFETY: live, freed once.
        unsafe { f.heap.deallocate(b.0, BLOCK) };
        let q = f.heap.allocate(BLOCK).expect("arena 1 has room");
        assert_eq!(f.region_of(q), 1);
        // SAFETY: live, freed once.
        unsafe { f.heap.deallocate(q, BLOCK) };
        remover.join().unwrap();
        f.assert_drained();
        assert_eq!(
            f.heap.remove_pool(f.region(0)),
            Err(AllocError::InvalidParam),
            "removed once"
        );
        percpu::set_model_cpu(0);
        let p = f.heap.allocate(BLOCK).expect("borrowed from arena 1");
        assert_eq!(f.region_of(p), 1, "served from a removed region");
        // SAFETY: live, freed once.
        unsafe { f.heap.deallocate(p, BLOCK) };
    });
}

/// Entry 0 (region 0, arena 0) is vacated and reused for a longer region (slots 2-3, arena 0
/// again) while CPU 1 frees a block of region 1 (entry 1, arena 1). A torn read of entry 0
/// (region 0's start with the new length) would cover the block and name arena 0: the free
/// must still go to arena 1 (`check` fails if arena 0 lists it), in every interleaving.
#[test]
fn reuse_races_lookup() {
    model(|| {
        let f = Fixture::new(0, false);
        // SAFETY: (each) a part of the buffer, added once while it is the heap's.
        unsafe {
            f.heap.add_pool(f.region(0)).unwrap(); // entry 0, arena 0
            f.heap.add_pool(f.region(1)).unwrap(); // entry 1, arena 1
            f.heap.add_pool(f.region(5)).unwrap(); // entry 2, arena 0
        }
        percpu::set_model_cpu(1);
        let b = Block(f.heap.allocate(BLOCK).unwrap());
        assert_eq!(f.region_of(b.0), 1);
        let freer = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(1);
                let b = b;
                // SAFETY: the block was handed to this thread to free, once.
                unsafe { f.heap.deallocate(b.0, BLOCK) };
            })
        };
        percpu::set_model_cpu(0);
        f.heap.remove_pool(f.region(0)).expect("region 0 is free");
        // SAFETY: slots 2-3, never added before.
        unsafe { f.heap.add_pool(f.range(2, 2)).unwrap() };
        freer.join().unwrap();
        f.assert_drained();
    });
}

/// CPU 1 allocates and frees in arena 0 (region 0) while CPU 0 removes region 0: the removal
/// either sees the block and is refused, or takes the region first and the allocation is
/// served elsewhere (borrowed from arena 1). After a successful removal the memory is the
/// caller's: CPU 0 overwrites it, and the other thread's block stays intact.
#[test]
fn removal_races_allocation_in_its_arena() {
    model(|| {
        let f = Fixture::new(2, false);
        let user = {
            let f = f.clone();
            thread::spawn(move || {
                percpu::set_model_cpu(0);
                let p = f.heap.allocate(BLOCK).expect("one arena has room");
                // SAFETY: a live block of `BLOCK.size()` bytes owned by this thread.
                unsafe { p.as_ptr().write_bytes(9, BLOCK.size()) };
                // Let the removal (and its overwrite) run between the write and the check.
                thread::yield_now();
                write_and_check(p, 9);
                // SAFETY: live, freed once.
                unsafe { f.heap.deallocate(p, BLOCK) };
            })
        };
        percpu::set_model_cpu(1);
        let removed = f.heap.remove_pool(f.region(0));
        if removed.is_ok() {
            let r = f.region(0);
            // SAFETY: removed: the heap no longer uses this memory.
            unsafe { r.cast::<u8>().as_ptr().write_bytes(0xee, r.len()) };
        } else {
            assert_eq!(removed, Err(AllocError::MemoryOverlap));
        }
        user.join().unwrap();
        f.assert_drained();
        if removed.is_err() {
            f.heap.remove_pool(f.region(0)).expect("free now");
        }
        f.assert_drained();
    });
}
