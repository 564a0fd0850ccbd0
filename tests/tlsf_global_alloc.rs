//! `GlobalTlsf` (rlsf's ready-made global allocator over `mmap`) as this test binary's
//! `#[global_allocator]`: everything the harness and std allocate comes from it. Threads run
//! std collections (`Vec`, `String`, `BTreeMap`, `HashMap`, over-aligned boxes), pass boxes to
//! each other to drop, and grow vectors by `realloc`; the allocator's `check` holds afterwards.
//! Also: `CAlloc` on it (free and resize without the layout, usable size, bad pointers),
//! refusals that change nothing, and `SmallGlobalTlsf` as a local (dropped, unmapped) value.
#![cfg(all(unix, not(miri)))]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use smpalloc::byte::{CAlloc, GlobalTlsf, SmallGlobalTlsf};
use smpalloc_testkit::Rng;

#[global_allocator]
static A: GlobalTlsf = GlobalTlsf::new();

#[repr(align(4096))]
struct Page([u8; 4096]);

#[repr(align(64))]
struct Line(u64);

#[test]
fn threads_and_collections() {
    let (tx, rx) = mpsc::channel::<Box<[u64]>>();
    let handles: Vec<_> = (0..6u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(t);
                let mut map = HashMap::new();
                let mut tree = BTreeMap::new();
                let mut strings = Vec::new();
                for i in 0..3000u64 {
                    map.insert(i, vec![i; rng.below(40)]);
                    tree.insert(rng.next_u64() % 500, format!("{t}-{i}"));
                    if rng.chance(30) {
                        map.remove(&(i / 2));
                    }
                    let mut s = String::new();
                    for _ in 0..rng.below(20) {
                        s.push_str("grow by realloc ");
                    }
                    strings.push(s);
                    if strings.len() > 100 {
                        strings.swap_remove(rng.below(100));
                    }
                    if i % 50 == 0 {
                        let page = Box::new(Page([t as u8; 4096]));
                        assert_eq!((&*page as *const Page).addr() % 4096, 0);
                        let line = Box::new(Line(i));
                        assert_eq!((&*line as *const Line).addr() % 64, 0);
                        assert_eq!(line.0, i);
                        assert_eq!(page.0[4095], t as u8);
                        tx.send(vec![i; 64].into_boxed_slice()).unwrap();
                    }
                }
                // Contents survived all that.
                for (k, v) in &map {
                    assert!(v.iter().all(|x| x == k));
                }
                map.len() + tree.len()
            })
        })
        .collect();
    drop(tx);
    // Frees on this thread of blocks allocated on the others.
    let mut received = 0;
    for b in rx {
        assert!(b.iter().all(|&x| x == b[0]));
        received += 1;
    }
    for h in handles {
        assert!(h.join().unwrap() > 0);
    }
    assert_eq!(received, 6 * 60);
    let stats = A.check().unwrap();
    assert!(stats.used_blocks > 0, "the harness's own blocks are live");
}

#[test]
fn large_and_over_aligned() {
    let v = vec![7u8; 10 << 20];
    assert!(v.iter().all(|&b| b == 7));
    let l = Layout::from_size_align(100, 1 << 20).unwrap();
    // SAFETY: a valid layout; freed below with it.
    unsafe {
        let p = A.alloc(l);
        assert!(!p.is_null());
        assert_eq!(p.addr() % (1 << 20), 0);
        p.write_bytes(1, 100);
        A.dealloc(p, l);
    }
    drop(v);
    A.check().unwrap();
}

#[test]
fn refusals_return_null_and_change_nothing() {
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    // SAFETY: a valid, non-zero layout.
    assert!(unsafe { A.alloc(huge) }.is_null());
    assert!(CAlloc::allocate(&A, huge).is_none());
    let over = Layout::from_size_align(1 << 40, 1 << 40).unwrap();
    // SAFETY: as above.
    assert!(unsafe { A.alloc(over) }.is_null());
    A.check().unwrap();
}

#[test]
fn calloc_without_layouts() {
    let p = CAlloc::allocate(&A, Layout::from_size_align(24, 8).unwrap()).unwrap();
    // SAFETY: live blocks of `A`, each freed once.
    unsafe {
        assert!(A.allocation_usable_size(p) >= 24);
        p.as_ptr().write_bytes(0x33, 24);
        let q = CAlloc::reallocate(&A, p, Layout::from_size_align(50_000, 256).unwrap()).unwrap();
        assert_eq!(q.as_ptr().addr() % 256, 0);
        assert!((0..24).all(|i| *q.as_ptr().add(i) == 0x33));
        assert!(A.allocation_usable_size(q) >= 50_000);
        let r = CAlloc::reallocate(&A, q, Layout::from_size_align(8, 1).unwrap()).unwrap();
        assert!((0..8).all(|i| *r.as_ptr().add(i) == 0x33));
        CAlloc::deallocate(&A, r);
        // Zero size: a unique block that must be freed.
        let z = CAlloc::allocate(&A, Layout::from_size_align(0, 1).unwrap()).unwrap();
        CAlloc::deallocate(&A, z);
    }
    A.check().unwrap();
}

#[test]
fn calloc_misaligned_pointer_panics_before_anything() {
    let p = CAlloc::allocate(&A, Layout::from_size_align(64, 16).unwrap()).unwrap();
    let bad = NonNull::new(p.as_ptr().wrapping_add(1)).unwrap();
    // SAFETY: refused before any memory is touched (what is tested).
    let r = std::panic::catch_unwind(|| unsafe { CAlloc::deallocate(&A, bad) });
    assert!(r.is_err());
    // SAFETY: as above.
    let r = std::panic::catch_unwind(|| unsafe { A.allocation_usable_size(bad) });
    assert!(r.is_err());
    A.check().unwrap();
    // SAFETY: live.
    unsafe { CAlloc::deallocate(&A, p) };
}

#[test]
fn small_global_tlsf_as_a_local_value() {
    let small = SmallGlobalTlsf::new();
    let mut blocks = Vec::new();
    let mut rng = Rng::new(99);
    for i in 0..2000usize {
        let l = Layout::from_size_align(1 + rng.below(3000), 1 << rng.below(8)).unwrap();
        // SAFETY: valid, non-zero layouts; each block freed once with its layout.
        unsafe {
            let p = small.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(i as u8, l.size());
            blocks.push((p, l, i as u8));
            if rng.chance(40) {
                let k = rng.below(blocks.len());
                let (p, l, fill) = blocks.swap_remove(k);
                assert!(*p == fill && *p.add(l.size() - 1) == fill);
                // Realloc without in-place growth (SmallGlobalTlsf): alloc, copy, free.
                let new_size = 1 + rng.below(5000);
                let q = small.realloc(p, l, new_size);
                assert!(!q.is_null());
                let keep = l.size().min(new_size);
                assert!(*q == fill && *q.add(keep - 1) == fill);
                let nl = Layout::from_size_align(new_size, l.align()).unwrap();
                q.write_bytes(fill, new_size);
                blocks.push((q, nl, fill));
            }
        }
        if i % 100 == 0 {
            small.check().unwrap();
        }
    }
    let stats = small.check().unwrap();
    assert_eq!(stats.used_blocks, blocks.len());
    for (p, l, fill) in blocks {
        // SAFETY: live.
        unsafe {
            assert!(*p == fill);
            small.dealloc(p, l);
        }
    }
    assert_eq!(small.check().unwrap().used_blocks, 0);
    // Dropping unmaps every chunk.
}

#[test]
fn global_tlsf_realloc_in_place() {
    let g: GlobalTlsf = GlobalTlsf::default();
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layouts; the block is freed once with its last layout.
    unsafe {
        let p = g.alloc(l);
        p.write_bytes(9, 100);
        // The block is followed by the pool's free rest: grows in place.
        let q = g.realloc(p, l, 1000);
        assert_eq!(p, q);
        assert!((0..100).all(|i| *q.add(i) == 9));
        g.dealloc(q, Layout::from_size_align(1000, 8).unwrap());
    }
    assert_eq!(g.check().unwrap().used_blocks, 0);
}

#[test]
fn mmap_source_grows_over_many_chunks() {
    use smpalloc::byte::{FlexTlsf, MmapSource};
    let mut tlsf: FlexTlsf<MmapSource, usize, usize, 64, 64> = FlexTlsf::new(MmapSource::new());
    let l = Layout::from_size_align(20_000, 16).unwrap();
    let mut ptrs = Vec::new();
    for i in 0..200u8 {
        let p = tlsf.allocate(l).unwrap();
        // SAFETY: `l.size()` bytes are ours.
        unsafe { p.as_ptr().write_bytes(i, l.size()) };
        ptrs.push(p);
    }
    let stats = tlsf.check().unwrap();
    assert_eq!(stats.used_blocks, 200);
    // Chunks are 64 KiB: at most one pool per three 20 000-byte blocks (fewer when the kernel
    // places a chunk right behind the previous one and the pool grows in place).
    assert!(tlsf.pools().count() <= 200 / 3 + 1);
    for (i, p) in ptrs.into_iter().enumerate() {
        // SAFETY: live.
        unsafe {
            assert_eq!(*p.as_ptr().add(19_999), i as u8);
            tlsf.deallocate(p, 16);
        }
    }
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
}
