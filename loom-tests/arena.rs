//! Loom models of `TlsfHeap`'s arena protocols (DESIGN.md section 12): two CPUs allocating in
//! their own arenas, a free on the CPU that does not own the block, borrowing from the other
//! arena when one is exhausted, a region added while another CPU allocates and frees, and the
//! lazy start of a `with_pool` heap raced by two first users. Tiny pools (one or two blocks
//! per arena). Empty unless built with `--cfg loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom LOOM_MAX_PREEMPTIONS=5 \
//!   cargo test --release --test loom_arena`
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;
use smpalloc::{TlsfHeap, percpu};

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
        let len = 4 * ARENA_POOL;
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
        // SAFETY: `i < 4`, inside the buffer.
        NonNull::slice_from_raw_parts(unsafe { self.buffer.add(i * ARENA_POOL) }, ARENA_POOL)
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
