//! Loom models of the SMP heap's page map (docs/design/08-heap.md §"Frees without a layout: the page map", P1-P5): a lookup racing the
//! installation of the nodes for a new slab; `reclaim` pruning empty nodes racing a slab
//! creation that needs them; a huge block freed without its layout on one CPU while the other
//! creates a slab recorded in the same leaf. Empty unless built with `--cfg loom`.
//!
//! The heap runs over a page source with fixed addresses (`fixed.rs`: first fit in a region), so a
//! model knows where the first slab will lie and can look it up before it exists. Under loom
//! the map has nine levels of 16 slots. Each model ends with `check()` (the map against the
//! slabs and blocks) and, after drain + reclaim, every page back with the source (map nodes
//! included).
//!
//! Mutations caught (each run once, then reverted): publishing a node with a `Relaxed` store
//! (`lookup_races_node_installation`: loom reports the lookup's load of a slot whose
//! initialisation does not happen before it); pruning without the writers' lock
//! (`prune_races_slab_creation`: the new slab's entry is written into a node being freed,
//! and its object's lookup misses).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_pagemap`
#![cfg(loom)]

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;
use smpalloc::heap::SmpHeap;
use smpalloc::percpu::set_model_cpu;

#[path = "fixed.rs"]
mod fixed;
use fixed::{Fixed, model};

type Heap = SmpHeap<Fixed, 1>;

const SMALL: Layout = match Layout::from_size_align(8, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// A huge-route block of one page (alignment above 4 KiB).
const HUGE: Layout = match Layout::from_size_align(8, 8192) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr().expose_provenance()
}

fn ptr(addr: usize) -> NonNull<u8> {
    NonNull::new(core::ptr::with_exposed_provenance_mut(addr)).unwrap()
}

/// Frees `live` without layouts, checks, drains, reclaims: nothing held, map nodes included.
fn finish(heap: &Heap, live: Vec<usize>) {
    heap.check().unwrap();
    for a in live {
        // SAFETY: each model frees each block once.
        unsafe { heap.free(ptr(a)) };
    }
    heap.drain_cpu_caches();
    heap.reclaim();
    let stats = heap.check().unwrap();
    assert_eq!((stats.slab_bytes, stats.huge_bytes), (0, 0));
    assert_eq!(heap.map_bytes(), 0);
    assert_eq!(heap.pages().held_bytes(), 0);
}

/// P1, P2: CPU 0 allocates the first small object (its slab is the region's first page; the
/// map's nodes are installed for it) while CPU 1 looks that address up: it finds nothing or
/// the slab's class, never a node's uninitialised slot. Afterwards the lookup is exact.
#[test]
fn lookup_races_node_installation() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        let first = heap.pages().base;
        let looker = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                // SAFETY: a foreign pointer while the slab does not exist yet: documented to
                // answer `None` (no reclaim runs).
                unsafe { heap.usable_size(ptr(first)) }
            })
        };
        set_model_cpu(0);
        let p = heap.allocate(SMALL).unwrap();
        assert_eq!(
            addr(p) & !4095,
            first,
            "the first slab is the region's first page"
        );
        let seen = looker.join().unwrap();
        assert!(seen.is_none() || seen == Some(8), "{seen:?}");
        // SAFETY: live.
        assert_eq!(unsafe { heap.usable_size(p) }, Some(8));
        finish(&heap, vec![addr(p)]);
    });
}

/// P4: the map holds empty nodes (a slab created and released); CPU 0 reclaims (pruning
/// them) while CPU 1 allocates, creating a slab whose entries need those nodes. The writers'
/// lock orders the two: the entry is never written into a node being freed.
#[test]
fn prune_races_slab_creation() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(0);
        let p = heap.allocate(SMALL).unwrap();
        // SAFETY: live, freed once.
        unsafe { heap.free(p) };
        heap.drain_cpu_caches(); // the slab empties and goes back: its entries cleared
        assert!(heap.map_bytes() > 0, "empty nodes stay until reclaim");
        let pruner = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(0);
                heap.reclaim();
            })
        };
        set_model_cpu(0);
        let q = heap.allocate(SMALL).unwrap();
        pruner.join().unwrap();
        // SAFETY: `q` is live (allocated above, not freed yet).
        let usable = unsafe { heap.usable_size(q) };
        assert_eq!(usable, Some(8), "the new slab is recorded");
        finish(&heap, vec![addr(q)]);
    });
}

/// P2, P3: a huge block allocated on CPU 0 is freed without its layout on CPU 1 while CPU 0
/// creates a slab (both entries in one leaf, written under the writers' lock). The block's
/// pages go back with its recorded layout; the slab stays recorded.
#[test]
fn huge_free_races_slab_creation() {
    model(|base| {
        let heap = Arc::new(Heap::new(Fixed::new(base)));
        set_model_cpu(0);
        let h = addr(heap.allocate(HUGE).unwrap());
        let freer = {
            let heap = heap.clone();
            thread::spawn(move || {
                set_model_cpu(1);
                // SAFETY: the live huge block, freed once.
                unsafe { heap.free(ptr(h)) };
            })
        };
        let p = heap.allocate(SMALL).unwrap();
        freer.join().unwrap();
        // SAFETY: freed: the map no longer knows it, unless the new slab took its page.
        let stale = unsafe { heap.usable_size(ptr(h)) };
        let reused = addr(p) & !4095 == h;
        assert_eq!(
            stale,
            reused.then_some(8),
            "the freed block's entry was cleared"
        );
        // SAFETY: live.
        assert_eq!(unsafe { heap.usable_size(p) }, Some(8));
        assert_eq!(heap.stats().huge_bytes, 0);
        finish(&heap, vec![addr(p)]);
    });
}
