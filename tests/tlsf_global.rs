//! `TlsfHeap` as this test binary's `#[global_allocator]`, over a static pool: everything the
//! test harness and std allocate comes from it. Several threads run real std collections
//! (`Vec`, `String`, `BTreeMap`, `HashMap`, `Box` of over-aligned types) and pass boxes to
//! each other to drop (cross-arena frees); the heap's invariants hold afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use smpalloc::TlsfHeap;

const POOL_LEN: usize = 64 << 20;
static mut POOL: [u8; POOL_LEN] = [0; POOL_LEN];

// SAFETY: `POOL` is used by nothing but this heap.
#[global_allocator]
static HEAP: TlsfHeap<4> = unsafe { TlsfHeap::with_pool((&raw mut POOL).cast(), POOL_LEN) };

fn in_pool<T: ?Sized>(value: &T) -> bool {
    let addr = (value as *const T).cast::<u8>().addr();
    let base = (&raw const POOL).cast::<u8>().addr();
    base <= addr && addr < base + POOL_LEN
}

#[repr(align(4096))]
struct Page([u8; 4096]);

#[repr(align(64))]
struct Line(u64);

#[test]
fn std_collections_on_several_threads() {
    const THREADS: usize = 4;
    let (tx, rx) = mpsc::channel::<Box<[u64]>>();
    thread::scope(|s| {
        for t in 0..THREADS {
            let tx = tx.clone();
            s.spawn(move || {
                let mut v: Vec<u64> = Vec::new();
                let mut words = String::new();
                let mut tree = BTreeMap::new();
                let mut map = HashMap::new();
                for i in 0..50_000u64 {
                    v.push(i * t as u64);
                    if i % 7 == 0 {
                        words.push_str(&i.to_string());
                    }
                    tree.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
                    if i % 3 == 0 {
                        map.insert(format!("key{i}"), vec![i as u8; (i % 300) as usize]);
                    }
                    if i % 5 == 0 {
                        map.remove(&format!("key{}", i / 2));
                        tree.pop_first();
                    }
                    if i % 1000 == 0 {
                        tx.send(vec![i; 1 + (i as usize % 3000)].into_boxed_slice())
                            .unwrap();
                    }
                }
                assert!(
                    in_pool(&v[..]) && in_pool(words.as_str()),
                    "std did not use the heap"
                );
                assert_eq!(
                    v.iter().sum::<u64>(),
                    (0..50_000u64).sum::<u64>() * t as u64
                );
                assert!(
                    map.values()
                        .all(|bytes| bytes.iter().all(|&b| b == bytes[0]))
                );
                let pages: Vec<Box<Page>> =
                    (0..20).map(|_| Box::new(Page([t as u8; 4096]))).collect();
                assert!(
                    pages
                        .iter()
                        .all(|p| (&**p as *const Page).addr() % 4096 == 0 && p.0[4095] == t as u8)
                );
                let lines: Vec<Box<Line>> = (0..1000).map(|i| Box::new(Line(i))).collect();
                assert!(lines.iter().all(|l| (&**l as *const Line).addr() % 64 == 0));
                assert_eq!(lines.iter().map(|l| l.0).sum::<u64>(), 999 * 1000 / 2);
            });
        }
        drop(tx);
        // Boxes allocated on other threads (other arenas) are dropped here.
        let mut received = 0;
        for boxed in rx {
            assert!(in_pool(&boxed[..]));
            assert!(boxed.iter().all(|&x| x == boxed[0]));
            received += 1;
        }
        assert_eq!(received, THREADS * 50);
    });
    HEAP.check().expect("heap invariants after the threads");
}

#[test]
fn zero_size_and_reallocation_through_std() {
    let empty: Vec<u8> = Vec::with_capacity(0);
    drop(empty);
    let boxed_unit = Box::new(());
    drop(boxed_unit);
    let mut s = String::from("x");
    for _ in 0..16 {
        s = s.repeat(2); // reallocations, in place and moving
    }
    assert_eq!(s.len(), 1 << 16);
    assert!(in_pool(s.as_str()));
    s.truncate(3);
    s.shrink_to_fit();
    assert_eq!(s, "xxx");
    HEAP.check().unwrap();
}
