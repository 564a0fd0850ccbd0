//! The TLSF random program both `tlsf_props` (the shipped configurations) and `tlsf_configs`
//! (the smallest ones rlsf accepts) run: allocate / reallocate / free / grow-pool and stale
//! frees over 1..4 pools against the memory oracle, with `check`, `check_pool` and an
//! `iter_blocks` walk of every pool after every step.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::vec::Vec;

use proptest::prelude::*;
use smpalloc::AllocError;
use smpalloc::Tlsf;
use smpalloc::byte::{BitmapWord, GRANULARITY, PoolStats};

use super::memory::{Fill, MemShadow, Memory};

/// The smallest block: a header and two links (two granules).
const MIN_BLOCK: usize = 2 * GRANULARITY;

/// Cases per configuration: 200 (2 under Miri), or `TLSF_PROP_CASES` for a deep run
/// (`TLSF_PROP_CASES=20000 cargo test --release --test tlsf_props random` takes about a minute).
pub(crate) fn cases() -> u32 {
    if cfg!(miri) {
        return 2;
    }
    std::env::var("TLSF_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
pub(crate) const OPS: usize = if cfg!(miri) { 24 } else { 250 };

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Alloc(u32, u8),
    Free(usize),
    Realloc(usize, u32),
    Grow(usize),
    /// Free a pointer freed earlier (double / stale free): must be refused, nothing changed.
    BadFree(usize),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), any::<u8>()).prop_map(|(s, a)| Op::Alloc(s, a)),
        4 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(i, s)| Op::Realloc(i, s)),
        1 => any::<usize>().prop_map(Op::Grow),
        2 => any::<usize>().prop_map(Op::BadFree),
    ]
}

/// Mostly word alignment, sometimes up to 4096.
pub(crate) fn align_of_raw(raw: u8) -> usize {
    if raw < 160 {
        1 << (raw % 4)
    } else {
        1 << (raw % 13)
    }
}

/// The block a request of `size` bytes needs.
pub(crate) fn block_for(size: usize) -> usize {
    (size + 2 * GRANULARITY - 1) / GRANULARITY * GRANULARITY
}

struct Pool {
    start: usize,
    /// Bytes covered (as `insert_free_block_ptr` returns, grown by appends).
    covered: usize,
    /// Requested end, where an append would start.
    given_end: usize,
    room: usize,
    grown: bool,
    /// Bytes in blocks right after insertion/growth (all free then, and at the end again).
    capacity: usize,
}

/// The random program for one configuration: pools laid out by `layout` in a buffer of `buf`
/// bytes (lengths and growth room in bytes, or per mille of `buf` when `per_mille`), request
/// sizes drawn by `size_of`; `check`, a `check_pool` and an `iter_blocks` walk of every pool and
/// the memory oracle after every step; every failed allocation justified by the free blocks;
/// stale frees refused without a change.
pub(crate) fn run<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    layout: &[(usize, usize, usize)],
    ops: &[Op],
    buf: usize,
    per_mille: bool,
    size_of: &dyn Fn(u32) -> usize,
) {
    type T<'a, FL, SL, const FLLEN: usize, const SLLEN: usize> = Tlsf<'a, FL, SL, FLLEN, SLLEN>;
    let max = T::<FL, SL, FLLEN, SLLEN>::MAX_ALLOCATION_SIZE;
    let buffer = Memory::page_aligned(buf);
    let base = buffer.addr();
    let mut tlsf: T<'static, FL, SL, FLLEN, SLLEN> = Tlsf::new();
    let mut shadow = MemShadow::new(Fill::Whole);
    let mut pools: Vec<Pool> = Vec::new();
    let mut cursor = 0;
    for &(gap, len, room) in layout {
        let (len, room) = if per_mille {
            (len * buf / 1000, room * buf / 1000)
        } else {
            (len, room)
        };
        let offset = cursor + gap;
        if offset + len + room > buf {
            break;
        }
        cursor = offset + len + room + 1;
        let start = base + offset;
        let first = start.next_multiple_of(GRANULARITY);
        let end = (start + len) / GRANULARITY * GRANULARITY;
        // SAFETY: a fresh range of the buffer, disjoint from the other pools.
        let covered = unsafe { tlsf.insert_free_block_ptr(buffer.slice(offset, len)) };
        let fits = end >= first && end - first >= 3 * GRANULARITY;
        assert_eq!(
            covered.is_some(),
            fits,
            "pool {offset}+{len}: wrong acceptance"
        );
        let Some(covered) = covered else { continue };
        assert_eq!(covered.get(), end - start);
        shadow.set_pool(pools.len(), start, start + covered.get());
        pools.push(Pool {
            start,
            covered: covered.get(),
            given_end: start + len,
            room,
            grown: false,
            capacity: end - first - GRANULARITY,
        });
    }
    let slice_of = |p: &Pool| buffer.slice(p.start - base, p.covered);
    let verify = |tlsf: &T<'static, FL, SL, FLLEN, SLLEN>, shadow: &MemShadow, pools: &[Pool]| {
        let (free_blocks, free_bytes) = tlsf.check().unwrap_or_else(|e| panic!("check: {e}"));
        let live = shadow.live_per_pool();
        let mut total = PoolStats::default();
        for (i, p) in pools.iter().enumerate() {
            // SAFETY: the pool's exact covered range.
            let stats = unsafe { tlsf.check_pool(slice_of(p)) }
                .unwrap_or_else(|e| panic!("check_pool {i}: {e}"));
            assert_eq!(
                stats.used_bytes + stats.free_bytes + stats.overhead_bytes,
                p.covered,
                "pool {i}: used + free + overhead != pool size"
            );
            assert_eq!(
                stats.used_blocks, live[i],
                "pool {i}: used blocks != live allocations"
            );
            assert_eq!(
                stats.used_bytes + stats.free_bytes,
                p.capacity,
                "pool {i}: bytes lost"
            );
            total.free_blocks += stats.free_blocks;
            total.free_bytes += stats.free_bytes;
            // Every block is a valid size for this configuration.
            // SAFETY: as above.
            for b in unsafe { tlsf.iter_blocks(slice_of(p)) } {
                assert!(
                    (MIN_BLOCK..=T::<FL, SL, FLLEN, SLLEN>::MAX_BLOCK_SIZE).contains(&b.size()),
                    "pool {i}: a block of {} bytes",
                    b.size()
                );
            }
        }
        assert_eq!(
            (total.free_blocks, total.free_bytes),
            (free_blocks, free_bytes),
            "lists vs pools"
        );
        // Every live allocation lies inside a used block of its pool.
        for l in shadow.lives() {
            let addr = l.ptr.as_ptr().addr();
            let pool = &pools[shadow.pool_of(addr).unwrap()];
            // SAFETY: as above.
            let inside = unsafe { tlsf.iter_blocks(slice_of(pool)) }.any(|b| {
                // rlsf's accessors agree with the fields.
                assert_eq!((b.is_occupied(), b.size()), (b.used, b.size));
                assert_eq!(
                    (b.as_ptr().cast::<u8>(), b.as_ptr().len()),
                    (b.start, b.size)
                );
                let s = b.as_ptr().cast::<u8>().as_ptr().addr();
                b.is_occupied() && s < addr && addr + l.layout.size() <= s + b.size()
            });
            assert!(inside, "allocation at {addr:#x} is not inside a used block");
        }
        shadow.verify_all();
    };
    verify(&tlsf, &shadow, &pools);
    // Pointers freed since and not handed out again whose header the test has not written
    // since (`try_deallocate`'s contract): every free of one must be refused.
    let mut stale: Vec<NonNull<u8>> = Vec::new();
    let covered = |stale: &mut Vec<NonNull<u8>>, p: NonNull<u8>, size: usize| {
        let (s, e) = (p.as_ptr().addr(), p.as_ptr().addr() + size.max(1));
        stale.retain(|q| {
            let q = q.as_ptr().addr();
            q != s && (q <= s || q - GRANULARITY >= e)
        });
    };
    for op in ops {
        match *op {
            Op::Alloc(size, align) => {
                let layout = Layout::from_size_align(size_of(size), align_of_raw(align)).unwrap();
                match tlsf.allocate(layout) {
                    Some(ptr) => {
                        assert!(layout.size() <= max, "{layout:?} is over the maximum");
                        covered(&mut stale, ptr, layout.size());
                        shadow.allocated(ptr, layout);
                    }
                    None => {
                        // Good fit finds any block one class step above the search size, and
                        // the head check (rlsf #15) serves a lone fitting free block.
                        let need = block_for(layout.size()).max(MIN_BLOCK);
                        let search = if layout.align() <= GRANULARITY {
                            need
                        } else {
                            need + layout.align() + GRANULARITY
                        };
                        let mut free = Vec::new();
                        for p in &pools {
                            // SAFETY: as above.
                            free.extend(
                                unsafe { tlsf.iter_blocks(slice_of(p)) }
                                    .filter(|b| !b.is_occupied()),
                            );
                        }
                        for b in &free {
                            assert!(
                                b.size() < search + search / SLLEN + GRANULARITY,
                                "{layout:?} failed beside a free block of {}",
                                b.size()
                            );
                        }
                        if let [only] = free[..] {
                            assert!(
                                layout.align() > GRANULARITY || only.size() < need,
                                "{layout:?} failed beside the only free block, of {} (rlsf #15)",
                                only.size()
                            );
                        }
                    }
                }
            }
            Op::Free(k) => {
                if let Some(l) = shadow.nth(k) {
                    shadow.freeing(l.ptr);
                    // SAFETY: a live allocation, freed once.
                    unsafe { tlsf.deallocate(l.ptr, l.layout.align()) };
                    stale.push(l.ptr);
                }
            }
            Op::Realloc(k, size) => {
                if let Some(old) = shadow.nth(k) {
                    let new_layout =
                        Layout::from_size_align(size_of(size), old.layout.align()).unwrap();
                    shadow.freeing(old.ptr);
                    // SAFETY: a live allocation.
                    match unsafe { tlsf.reallocate(old.ptr, new_layout) } {
                        Some(new) => {
                            assert!(new_layout.size() <= max);
                            if new != old.ptr {
                                stale.push(old.ptr);
                            }
                            covered(&mut stale, new, new_layout.size());
                            shadow.reallocated(old, new, new_layout);
                        }
                        None => shadow.restore(old),
                    }
                }
            }
            Op::Grow(i) => {
                if pools.is_empty() {
                    continue;
                }
                let i = i % pools.len();
                let p = &mut pools[i];
                if p.grown || p.room == 0 {
                    continue;
                }
                p.grown = true;
                // SAFETY: the room after this pool is reserved for it and starts at its end.
                let added =
                    unsafe { tlsf.append_free_block_ptr(buffer.slice(p.given_end - base, p.room)) };
                let new_end = (p.given_end + p.room) / GRANULARITY * GRANULARITY;
                if added > 0 {
                    assert_eq!(added, new_end - (p.given_end / GRANULARITY * GRANULARITY));
                    p.covered = new_end - p.start;
                    p.capacity += added;
                    shadow.set_pool(i, p.start, new_end);
                }
            }
            Op::BadFree(k) => {
                if stale.is_empty() {
                    continue;
                }
                let q = stale[k % stale.len()];
                let before = tlsf.check().unwrap();
                // SAFETY: `q` was returned by this allocator and freed since; its header
                // bytes were not written by the test since (`covered`).
                let r = unsafe { tlsf.try_deallocate(q) };
                assert_eq!(
                    r,
                    Err(AllocError::NotAllocated),
                    "stale {q:p} was freed again"
                );
                assert_eq!(
                    tlsf.check().unwrap(),
                    before,
                    "a refused free changed the heap"
                );
            }
        }
        verify(&tlsf, &shadow, &pools);
    }
    // Free everything: every pool is whole again.
    while let Some(l) = shadow.nth(0) {
        shadow.freeing(l.ptr);
        // SAFETY: live, freed once.
        unsafe { tlsf.deallocate(l.ptr, l.layout.align()) };
    }
    verify(&tlsf, &shadow, &pools);
}
