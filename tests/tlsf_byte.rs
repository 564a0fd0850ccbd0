//! `TlsfByteAllocator` through arceos' traits: the seed's example, the byte counters
//! (`used + available` equals the bytes in blocks after every step, and the allocator's own
//! `check` agrees), region errors, growth in place, zero-size layouts and refused frees.

mod tlsf_shadow;

use core::alloc::Layout;
use core::ptr::NonNull;

use smpalloc::byte::GRANULARITY;
use smpalloc::{AllocError, BaseAllocator, ByteAllocator, TlsfByteAllocator};
use tlsf_shadow::{Rng, Shadow};

/// A leaked, 4096-aligned buffer (arceos hands the allocator plain addresses).
fn region(len: usize) -> usize {
    let layout = Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: non-zero size; leaked on purpose (the allocator keeps it).
    unsafe { std::alloc::alloc(layout) }.expose_provenance()
}

/// Seed 001's TLSF example, on a real buffer instead of address 0x100000.
#[test]
fn arceos_readme_example() {
    let start = region(1024 * 1024);
    let mut allocator = TlsfByteAllocator::new();
    allocator.init(start, 1024 * 1024); // init(start_addr, size)
    let layout = Layout::from_size_align(1024, 16).unwrap();
    let ptr = allocator.alloc(layout).expect("分配失败");
    // SAFETY: 1024 bytes were just allocated.
    unsafe { ptr.as_ptr().cast::<u32>().write(0xdead_beef) };
    allocator.dealloc(ptr, layout);
    assert_eq!(allocator.used_bytes(), 0);
    assert_eq!(allocator.total_bytes(), 1024 * 1024);
    allocator.check().unwrap();
}

/// Random alloc/free against the shadow model; counters and `check` after every step.
#[test]
fn counters_track_every_step() {
    let len = 256 * 1024 + 13;
    let start = region(len + 64) + 5;
    let mut a = TlsfByteAllocator::new();
    a.init(start, len);
    let mut shadow = Shadow::new();
    shadow.set_pool(0, start, start + len);
    let capacity = a.available_bytes();
    assert!(capacity > len - 4 * GRANULARITY && capacity < len);
    let mut rng = Rng::new(42);
    for _ in 0..5000 {
        if rng.below(3) != 0 || shadow.is_empty() {
            let size = if rng.below(10) == 0 {
                rng.below(20_000)
            } else {
                rng.below(200)
            };
            let layout = Layout::from_size_align(size, 1 << rng.below(8)).unwrap();
            match a.alloc(layout) {
                Ok(p) => shadow.allocated(p, layout),
                Err(e) => assert_eq!(e, AllocError::NoMemory),
            }
        } else {
            let l = shadow.nth(rng.below(shadow.len())).unwrap();
            shadow.freeing(l.ptr);
            a.dealloc(l.ptr, l.layout);
        }
        a.check().unwrap();
        assert_eq!(a.used_bytes() + a.available_bytes(), capacity);
        assert!(a.used_bytes() >= shadow.lives().map(|l| l.layout.size()).sum::<usize>());
    }
    while let Some(l) = shadow.nth(0) {
        shadow.freeing(l.ptr);
        a.dealloc(l.ptr, l.layout);
    }
    assert_eq!((a.used_bytes(), a.available_bytes()), (0, capacity));
}

/// Region errors change nothing; a region right after another grows that pool.
#[test]
fn add_memory_errors_and_growth() {
    let start = region(64 * 1024);
    let mut a = TlsfByteAllocator::new();
    assert_eq!(a.add_memory(start, 0), Err(AllocError::InvalidParam));
    assert_eq!(a.add_memory(start, 40), Err(AllocError::InvalidParam));
    assert_eq!(
        a.add_memory(usize::MAX - 10, 100),
        Err(AllocError::InvalidParam)
    );
    assert_eq!(a.add_memory(0, 4096), Err(AllocError::InvalidParam));
    assert_eq!(
        (a.total_bytes(), a.available_bytes()),
        (0, 0),
        "errors changed the allocator"
    );
    a.add_memory(start, 1000).unwrap();
    assert_eq!(
        a.add_memory(start + 500, 1000),
        Err(AllocError::MemoryOverlap)
    );
    assert_eq!(a.add_memory(start - 10, 11), Err(AllocError::MemoryOverlap));
    let big = Layout::from_size_align(3000, 8).unwrap();
    assert_eq!(a.alloc(big), Err(AllocError::NoMemory));
    // Right after the first region: grows it in place, so 3000 bytes fit in one block.
    a.add_memory(start + 1000, 3000).unwrap();
    let p = a.alloc(big).expect("the grown pool serves it");
    a.check().unwrap();
    a.dealloc(p, big);
    // Fifteen more separate regions fill the table; the next is refused.
    for i in 1..16 {
        a.add_memory(start + i * 4096, 1024).unwrap();
    }
    assert_eq!(
        a.add_memory(start + 16 * 4096 - 1024, 1024),
        Err(AllocError::NoMemory)
    );
    assert_eq!(a.total_bytes(), 4000 + 15 * 1024);
    a.check().unwrap();
}

/// Zero-size layouts and refused frees.
#[test]
fn zero_size_and_refused_frees() {
    let start = region(8192);
    let mut a = TlsfByteAllocator::new();
    a.init(start, 8192);
    let before = a.available_bytes();
    for align in [1, 16, 4096] {
        let zst = Layout::from_size_align(0, align).unwrap();
        let p = a.alloc(zst).unwrap();
        assert_eq!(p.as_ptr().addr(), align);
        a.dealloc(p, zst);
    }
    assert_eq!(a.available_bytes(), before);
    let layout = Layout::new::<[u64; 8]>();
    let p = a.alloc(layout).unwrap();
    let _q = a.alloc(layout).unwrap();
    let used = a.used_bytes();
    let mut outside = [0u64; 8];
    let outside = NonNull::from(&mut outside).cast::<u8>();
    assert_eq!(
        a.try_dealloc(outside, layout),
        Err(AllocError::NotAllocated)
    );
    a.dealloc(outside, layout); // ignored
    // SAFETY: inside the live block `p`, so inside the region.
    let inner = unsafe { p.add(GRANULARITY) };
    assert_eq!(a.try_dealloc(inner, layout), Err(AllocError::NotAllocated));
    a.try_dealloc(p, layout).unwrap();
    assert_eq!(
        a.try_dealloc(p, layout),
        Err(AllocError::NotAllocated),
        "double free"
    );
    assert!(a.used_bytes() < used);
    a.check().unwrap();
}

/// `init` with an unusable region panics with the reason.
#[test]
#[should_panic(expected = "invalid parameter")]
fn init_with_a_tiny_region_panics() {
    let start = region(64);
    TlsfByteAllocator::new().init(start, 20);
}

/// A free of a pointer inside a live block whose data looks like a used header with a huge
/// size is refused, not an overflowing bounds check.
#[test]
fn refused_free_of_a_forged_huge_header() {
    let start = region(8192);
    let mut a = TlsfByteAllocator::new();
    a.init(start, 8192);
    let layout = Layout::new::<[u64; 8]>();
    let p = a.alloc(layout).unwrap();
    let used = a.used_bytes();
    // SAFETY: `p` holds 64 bytes; the forged header is the first two words at `p + 16`.
    let forged = unsafe {
        let h = p.add(GRANULARITY).cast::<usize>();
        h.write(usize::MAX - 2); // size `usize::MAX - 3`, flags `USED`
        h.add(1).write(0);
        p.add(2 * GRANULARITY)
    };
    assert_eq!(a.try_dealloc(forged, layout), Err(AllocError::NotAllocated));
    assert_eq!(a.used_bytes(), used);
    a.dealloc(p, layout);
    a.check().unwrap();
}
