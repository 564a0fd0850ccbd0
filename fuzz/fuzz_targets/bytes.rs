//! Fuzz target `bytes`: the byte allocators (`Tlsf`, `TlsfByteAllocator`, `TlsfHeap`,
//! `BuddyByteAllocator`, `SlabByteAllocator`, and `FlexTlsf` over a contiguous `SliceSource`,
//! over a `GlobalAllocAsFlexSource` and over `MmapSource`, `GlobalTlsf`'s source) against a
//! shadow model.
//!
//! Each input picks one allocator and runs up to `MAX_OPS` operations on it: allocate (the
//! block is filled with its own tag byte, checked to lie in a pool and to overlap no live
//! block), free (the tag checked first), reallocate (the kept prefix checked), add and remove
//! pools, and *bad* frees through the safe APIs (stale, double, interior, foreign, misaligned,
//! wild, wrong layout) that must return an error and change nothing (counters, `check()`,
//! every live block's fill). Unsafe APIs only get inputs their `# Safety` sections allow:
//! valid frees, plus stale/double pointers the allocator handed out before for
//! `Tlsf::try_deallocate`. `check()` runs after every step; at the end everything is freed
//! and the allocator must be whole again (all bytes free, every `TlsfHeap` pool removable).
#![no_main]

use core::alloc::Layout;
use core::ptr::NonNull;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smpalloc::byte::slab::class::{class_for, class_size};
use smpalloc::byte::{
    DefaultTlsf, FlexSource, FlexTlsf, GlobalAllocAsFlexSource, MmapSource, PoolStats, SliceSource,
};
use smpalloc::{
    AllocError, BaseAllocator, BuddyByteAllocator, ByteAllocator, SlabByteAllocator,
    TlsfByteAllocator, TlsfHeap,
};

/// Operations per input at most.
const MAX_OPS: usize = 256;
/// Pools: `SLOTS` slots of `SLOT` bytes in one buffer, plus a foreign buffer of no allocator.
const SLOT: usize = 64 * 1024;
const SLOTS: usize = 4;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Family {
    Tlsf,
    TlsfByte,
    TlsfHeap,
    Buddy,
    Slab,
    /// `FlexTlsf` growing in place over slots 1.. of the buffer (`SliceSource`).
    FlexSlice,
    /// `FlexTlsf` taking a new pool from `System` for every growth, freed on drop.
    FlexAlloc,
    /// `FlexTlsf` over `MmapSource`, `GlobalTlsf`'s allocator: 64 KiB chunks from `mmap`,
    /// grown in place behind the newest mapping where the kernel allows, unmapped on drop.
    FlexMmap,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Bad {
    /// A pointer freed before (the model knows it is not live now).
    Stale,
    /// A live block freed, then freed again at once.
    Double,
    /// Inside a live block (not its start).
    Interior,
    /// In a buffer no allocator owns.
    Foreign,
    /// Anywhere in the pools (not a live block's start).
    InPool,
    /// Any address at all (never dereferenced by the test).
    Wild,
    /// A live block with another layout.
    WrongLayout,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Alloc {
        size: u16,
        big: bool,
        align_log: u8,
    },
    Free {
        idx: u8,
    },
    Realloc {
        idx: u8,
        size: u16,
        big: bool,
    },
    BadFree {
        kind: Bad,
        idx: u8,
        off: u32,
    },
    AddPool {
        slot: u8,
        off: u16,
        len: u16,
        whole: bool,
    },
    RemovePool {
        slot: u8,
    },
    Reclaim,
}

#[derive(Arbitrary, Debug)]
struct Input {
    family: Family,
    ops: Vec<Op>,
}

/// A live block of the model.
#[derive(Debug, Clone, Copy)]
struct Live {
    addr: usize,
    layout: Layout,
    tag: u8,
    /// What the allocator's `used` counter charges for it.
    charge: usize,
}

/// `FlexTlsf` whatever its source (the unsafe API: no bad frees are given to it).
trait Flex {
    fn allocate(&mut self, l: Layout) -> Option<NonNull<u8>>;
    /// # Safety
    /// `p` is live.
    unsafe fn deallocate(&mut self, p: NonNull<u8>, align: usize);
    /// # Safety
    /// `p` is live, allocated with `l.align()`.
    unsafe fn reallocate(&mut self, p: NonNull<u8>, l: Layout) -> Option<NonNull<u8>>;
    fn check(&self) -> PoolStats;
    fn pools(&self) -> Vec<(usize, usize)>;
}

impl<S: FlexSource> Flex for FlexTlsf<S, u32, u32, 28, 32> {
    fn allocate(&mut self, l: Layout) -> Option<NonNull<u8>> {
        FlexTlsf::allocate(self, l)
    }
    unsafe fn deallocate(&mut self, p: NonNull<u8>, align: usize) {
        // SAFETY: caller.
        unsafe { FlexTlsf::deallocate(self, p, align) }
    }
    unsafe fn reallocate(&mut self, p: NonNull<u8>, l: Layout) -> Option<NonNull<u8>> {
        // SAFETY: caller.
        unsafe { FlexTlsf::reallocate(self, p, l) }
    }
    fn check(&self) -> PoolStats {
        FlexTlsf::check(self).expect("FlexTlsf::check")
    }
    fn pools(&self) -> Vec<(usize, usize)> {
        FlexTlsf::pools(self)
            .map(|p| (p.cast::<u8>().as_ptr().addr(), p.len()))
            .collect()
    }
}

/// The allocator under test, behind one interface.
enum Subject {
    Flex(Box<dyn Flex>),
    Tlsf(Box<DefaultTlsf>),
    TlsfByte(Box<TlsfByteAllocator>),
    TlsfHeap(Box<TlsfHeap<2>>),
    Buddy(Box<BuddyByteAllocator>),
    Slab(Box<SlabByteAllocator>),
}

/// The pools a test run owns.
struct Memory {
    buf: Vec<u128>,
    foreign: Vec<u128>,
}

impl Memory {
    fn new() -> Self {
        Memory {
            buf: vec![0; SLOT * SLOTS / 16],
            foreign: vec![0; 4096 / 16],
        }
    }
    fn base(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr().cast()
    }
    fn foreign(&mut self) -> *mut u8 {
        self.foreign.as_mut_ptr().cast()
    }
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn size_of_op(size: u16, big: bool) -> usize {
    if big {
        size as usize % 20_000
    } else {
        size as usize % 300
    }
}

/// The buddy's block size for a layout (`max(size, align, 16)` rounded up to a power of two).
fn buddy_block(l: Layout) -> usize {
    l.size().max(l.align()).max(16).next_power_of_two()
}

/// The slab allocator's charge and "kind" (`Ok(class)` or `Err(buddy block)`) for a layout.
fn slab_kind(l: Layout) -> Result<usize, usize> {
    class_for(l.size(), l.align()).ok_or(buddy_block(l))
}

/// TLSF block bytes of a live allocation.
fn tlsf_charge(p: NonNull<u8>) -> usize {
    // SAFETY: `p` is a live allocation of a `Tlsf` (callers pass fresh results only).
    unsafe { DefaultTlsf::usable_size(p) + 16 }
}

struct Run {
    subject: Subject,
    mem: Memory,
    live: Vec<Live>,
    /// Freed blocks (address, layout), most recent last, at most 64.
    freed: Vec<(usize, Layout)>,
    /// Slots added as pools (`TlsfHeap`: `(start, len)` of each region).
    regions: Vec<(usize, usize)>,
    next_tag: u8,
    /// Raw `Tlsf`: the bytes in blocks of all pools (free + used).
    managed: usize,
}

impl Run {
    fn used_model(&self) -> usize {
        self.live.iter().map(|b| b.charge).sum()
    }

    /// Adds pool slot `slot` (or part of it); returns the result.
    fn add_pool(&mut self, slot: usize, off: usize, len: usize) -> Option<Result<(), AllocError>> {
        let start_ptr = self.mem.base().wrapping_add(slot * SLOT + off);
        let start = start_ptr as usize;
        let end = start + len;
        // An empty range overlaps nothing (its error is `InvalidParam` or, for a range strictly
        // inside a region, `MemoryOverlap`: both are accepted below).
        let overlaps = len > 0 && self.regions.iter().any(|&(s, l)| start < s + l && s < end);
        let region = NonNull::slice_from_raw_parts(NonNull::new(start_ptr).unwrap(), len);
        let result = match &mut self.subject {
            Subject::Flex(_) => return None, // it takes its pools from its source
            Subject::Tlsf(t) => {
                if overlaps {
                    return None; // `insert_free_block_ptr` requires disjoint pools.
                }
                let before = t.check().unwrap().1;
                // SAFETY: the range is inside `buf`, which outlives the allocator, and overlaps
                // no other pool of it.
                let got = unsafe { t.insert_free_block_ptr(region) };
                let after = t.check().unwrap().1;
                let aligned = (start.next_multiple_of(16), end & !15);
                let expect_ok = aligned.1 > aligned.0 && aligned.1 - aligned.0 >= 48;
                assert_eq!(
                    got.is_some(),
                    expect_ok,
                    "Tlsf::insert_free_block_ptr({len})"
                );
                if let Some(covered) = got {
                    assert!(covered.get() <= len);
                    self.managed += after - before;
                } else {
                    assert_eq!(before, after);
                }
                got.map(|_| ()).ok_or(AllocError::InvalidParam)
            }
            Subject::TlsfByte(t) => {
                let r = t.add_memory(start_ptr.expose_provenance(), len);
                if overlaps {
                    assert_eq!(r, Err(AllocError::MemoryOverlap));
                } else if len == 0 {
                    assert_eq!(r, Err(AllocError::InvalidParam));
                }
                r
            }
            Subject::TlsfHeap(h) => {
                // SAFETY: the range is inside `buf`, which outlives the heap.
                let r = unsafe { h.add_pool(region) };
                let expect = if len == 0 && r == Err(AllocError::MemoryOverlap) {
                    r
                } else if overlaps {
                    Err(AllocError::MemoryOverlap)
                } else if self.regions.len() >= 16 && r != Ok(()) {
                    // The region table holds 16 today; a fix of issue 14 (defect 3) may lift
                    // that limit, so success is accepted too.
                    Err(AllocError::NoMemory)
                } else if len & !15 < 64 {
                    Err(AllocError::InvalidParam)
                } else {
                    Ok(())
                };
                assert_eq!(r, expect, "TlsfHeap::add_pool({start:#x}, {len})");
                r
            }
            Subject::Buddy(b) => {
                // SAFETY: as above.
                let r = unsafe { b.add_region(region) };
                if overlaps {
                    assert_eq!(r, Err(AllocError::MemoryOverlap));
                }
                r
            }
            Subject::Slab(s) => {
                // SAFETY: as above.
                let r = unsafe { s.add_region(region) };
                if overlaps {
                    assert_eq!(r, Err(AllocError::MemoryOverlap));
                }
                r
            }
        };
        if result.is_ok() {
            self.regions.push((start, len));
        } else {
            assert!(
                result == Err(AllocError::InvalidParam)
                    || result == Err(AllocError::MemoryOverlap)
                    || result == Err(AllocError::NoMemory),
                "add_memory: {result:?}"
            );
        }
        Some(result)
    }

    fn alloc(&mut self, l: Layout) {
        let got = match &mut self.subject {
            Subject::Flex(f) => f.allocate(l),
            Subject::Tlsf(t) => t.allocate(l),
            Subject::TlsfByte(t) => t.alloc(l).ok(),
            Subject::TlsfHeap(h) => h.allocate(l),
            Subject::Buddy(b) => b.alloc(l).ok(),
            Subject::Slab(s) => s.alloc(l).ok(),
        };
        let Some(p) = got else { return };
        let addr = p.as_ptr().addr();
        assert_eq!(addr % l.align(), 0, "misaligned block for {l:?}");
        let owns_memory =
            l.size() > 0 || matches!(self.subject, Subject::Tlsf(_) | Subject::Flex(_));
        if !owns_memory {
            return; // a dangling pointer: freeing it is a no-op, nothing to track
        }
        let charge = match &self.subject {
            Subject::Tlsf(_) | Subject::TlsfByte(_) | Subject::TlsfHeap(_) | Subject::Flex(_) => {
                tlsf_charge(p)
            }
            Subject::Buddy(_) => buddy_block(l),
            Subject::Slab(_) => match slab_kind(l) {
                Ok(class) => class_size(class),
                Err(block) => block,
            },
        };
        self.admit(p, l, charge);
    }

    /// Checks a new block (inside a pool, disjoint from every live block), fills it and
    /// records it.
    fn admit(&mut self, p: NonNull<u8>, l: Layout, charge: usize) {
        if let Subject::Flex(f) = &self.subject {
            // Its pools are whatever it took from its source so far.
            self.regions = f.pools();
        }
        let addr = p.as_ptr().addr();
        let end = addr + l.size();
        // (Adjacent regions may be one pool: `TlsfByteAllocator` grows a pool in place.)
        let mut pos = addr;
        while let Some(&(s, len)) = self
            .regions
            .iter()
            .find(|&&(s, len)| s <= pos && pos < s + len)
        {
            pos = s + len;
            if pos >= end {
                break;
            }
        }
        assert!(
            pos >= end.max(addr + 1),
            "block {addr:#x}+{} outside every pool",
            l.size()
        );
        for b in &self.live {
            let b_end = b.addr + b.layout.size().max(1);
            assert!(
                end.max(addr + 1) <= b.addr || b_end <= addr,
                "block {addr:#x}+{} overlaps live {:#x}+{}",
                l.size(),
                b.addr,
                b.layout.size()
            );
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        // SAFETY: a fresh block of `l.size()` bytes.
        unsafe { p.as_ptr().write_bytes(tag, l.size()) };
        if matches!(self.subject, Subject::Tlsf(_)) {
            // `Tlsf::try_deallocate` may only be given a stale pointer whose header bytes the
            // caller has not written since (its `# Safety`): forget those the fill covered.
            self.freed.retain(|&(a, _)| end <= a - 16 || a <= addr);
        }
        self.live.push(Live {
            addr,
            layout: l,
            tag,
            charge,
        });
    }

    fn verify(b: &Live) {
        // SAFETY: a live block of `b.layout.size()` bytes, with the pools' provenance.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                core::ptr::with_exposed_provenance::<u8>(b.addr),
                b.layout.size(),
            )
        };
        if let Some(i) = bytes.iter().position(|&x| x != b.tag) {
            panic!(
                "block {:#x}+{} lost its fill at +{i}: {:#x} != {:#x} (overlap or stray write)",
                b.addr,
                b.layout.size(),
                bytes[i],
                b.tag
            );
        }
    }

    fn ptr(addr: usize) -> NonNull<u8> {
        NonNull::new(core::ptr::with_exposed_provenance_mut(addr)).unwrap()
    }

    fn free(&mut self, idx: usize) {
        let b = self.live.swap_remove(idx);
        Self::verify(&b);
        let p = Self::ptr(b.addr);
        match &mut self.subject {
            // SAFETY: a live allocation of this allocator, freed once.
            Subject::Tlsf(t) => unsafe { t.deallocate(p, b.layout.align()) },
            // SAFETY: as above.
            Subject::Flex(f) => unsafe { f.deallocate(p, b.layout.align()) },
            Subject::TlsfByte(t) => t.dealloc(p, b.layout),
            // SAFETY: as above.
            Subject::TlsfHeap(h) => unsafe { h.deallocate(p, b.layout) },
            Subject::Buddy(a) => a.dealloc(p, b.layout),
            Subject::Slab(s) => s.dealloc(p, b.layout),
        }
        self.forget(b.addr, b.layout);
    }

    fn forget(&mut self, addr: usize, l: Layout) {
        if self.freed.len() == 64 {
            self.freed.remove(0);
        }
        self.freed.push((addr, l));
    }

    fn realloc(&mut self, idx: usize, new_size: usize) {
        let b = self.live[idx];
        Self::verify(&b);
        let p = Self::ptr(b.addr);
        let new_layout = layout(new_size, b.layout.align());
        let got = match &mut self.subject {
            // SAFETY: a live allocation of this allocator; same alignment.
            Subject::Tlsf(t) => unsafe { t.reallocate(p, new_layout) },
            // SAFETY: as above.
            Subject::Flex(f) => unsafe { f.reallocate(p, new_layout) },
            // SAFETY: a live allocation of this heap with `b.layout`.
            Subject::TlsfHeap(h) => unsafe { h.reallocate(p, b.layout, new_size) },
            _ => return,
        };
        let Some(q) = got else {
            Self::verify(&b); // refused: the old block is untouched
            return;
        };
        self.live.swap_remove(idx);
        let keep = b.layout.size().min(new_size);
        // SAFETY: the new block holds at least `keep` bytes.
        let kept = unsafe { core::slice::from_raw_parts(q.as_ptr(), keep) };
        assert!(
            kept.iter().all(|&x| x == b.tag),
            "realloc lost the contents"
        );
        if q.as_ptr().addr() != b.addr {
            self.forget(b.addr, b.layout);
        }
        let zero_heap = new_size == 0 && matches!(self.subject, Subject::TlsfHeap(_));
        if zero_heap {
            return; // a dangling pointer now
        }
        self.admit(q, new_layout, tlsf_charge(q));
    }

    /// The observable state a bad free must not change.
    fn snapshot(&self) -> (usize, usize, usize, usize) {
        match &self.subject {
            Subject::Flex(f) => {
                let s = f.check();
                (s.used_bytes, s.free_bytes, s.free_blocks, s.used_blocks)
            }
            Subject::Tlsf(t) => {
                let (blocks, bytes) = t.check().expect("Tlsf::check");
                (blocks, bytes, 0, 0)
            }
            Subject::TlsfByte(t) => (t.used_bytes(), t.available_bytes(), t.total_bytes(), 0),
            Subject::TlsfHeap(h) => (h.check().expect("TlsfHeap::check"), 0, 0, 0),
            Subject::Buddy(b) => (
                b.used_bytes(),
                b.available_bytes(),
                b.total_bytes(),
                b.free_blocks(),
            ),
            Subject::Slab(s) => (
                s.used_bytes(),
                s.available_bytes(),
                s.total_bytes(),
                s.overhead_bytes(),
            ),
        }
    }

    fn check(&self) {
        let used = self.used_model();
        match &self.subject {
            Subject::Flex(f) => {
                let s = f.check();
                assert_eq!(s.used_bytes, used, "FlexTlsf used bytes");
                assert_eq!(s.used_blocks, self.live.len(), "FlexTlsf used blocks");
            }
            Subject::Tlsf(t) => {
                let (_, free) = t.check().expect("Tlsf::check");
                assert_eq!(free + used, self.managed, "Tlsf: free + used != managed");
            }
            Subject::TlsfByte(t) => {
                t.check().expect("TlsfByteAllocator::check");
                assert_eq!(t.used_bytes(), used, "TlsfByteAllocator::used_bytes");
            }
            Subject::TlsfHeap(h) => {
                assert_eq!(h.check().expect("TlsfHeap::check"), used, "TlsfHeap used");
            }
            Subject::Buddy(b) => {
                b.check().expect("BuddyByteAllocator::check");
                assert_eq!(b.used_bytes(), used, "BuddyByteAllocator::used_bytes");
                assert_eq!(b.used_bytes() + b.available_bytes(), b.total_bytes());
            }
            Subject::Slab(s) => {
                s.check().expect("SlabByteAllocator::check");
                assert_eq!(s.used_bytes(), used, "SlabByteAllocator::used_bytes");
            }
        }
    }

    /// A bad free: must be refused and change nothing.
    fn bad_free(&mut self, kind: Bad, idx: u8, off: u32) {
        if matches!(self.subject, Subject::Flex(_)) {
            return; // `FlexTlsf` has only the unsafe free
        }
        let is_tlsf_raw = matches!(self.subject, Subject::Tlsf(_));
        let (addr, l) = match kind {
            Bad::Stale => {
                let Some(&(a, l)) = self.freed.get(idx as usize % self.freed.len().max(1)) else {
                    return;
                };
                (a, l)
            }
            Bad::Double => {
                if self.live.is_empty() {
                    return;
                }
                let i = idx as usize % self.live.len();
                let b = self.live[i];
                self.free(i);
                (b.addr, b.layout)
            }
            Bad::Interior | Bad::WrongLayout => {
                if self.live.is_empty() {
                    return;
                }
                let b = self.live[idx as usize % self.live.len()];
                if let Bad::Interior = kind {
                    let span = b.layout.size().max(1);
                    let d = 1 + off as usize % span;
                    (b.addr + d, b.layout)
                } else {
                    let l = layout(
                        (off as usize >> 4) % 5000 + 1,
                        1 << ((off as usize & 15) % 14),
                    );
                    let same = match &self.subject {
                        Subject::Buddy(_) => buddy_block(l) == buddy_block(b.layout),
                        Subject::Slab(_) => slab_kind(l) == slab_kind(b.layout),
                        _ => return, // TLSF frees ignore the layout: no wrong one
                    };
                    if same {
                        return; // an equivalent layout: that free is valid
                    }
                    (b.addr, l)
                }
            }
            Bad::Foreign => {
                let a = self.mem.foreign().expose_provenance() + (off as usize % 4096);
                (a, layout(16, 1))
            }
            Bad::InPool => {
                let a = self.mem.base().expose_provenance() + (off as usize % (SLOT * SLOTS));
                (a, layout(1 + (off as usize >> 20), 1))
            }
            Bad::Wild => {
                let a = (off as usize).rotate_left(idx as u32 % 64).max(1);
                (a, layout(8, 1))
            }
        };
        if self.live.iter().any(|b| b.addr == addr) {
            return; // a live block's start: not a bad free
        }
        if is_tlsf_raw && !matches!(kind, Bad::Stale | Bad::Double) {
            return; // `Tlsf::try_deallocate` only allows pointers it handed out before
        }
        if l.size() == 0 {
            return;
        }
        let before = self.snapshot();
        let p = Self::ptr(addr);
        let r = match &mut self.subject {
            // SAFETY: `p` was handed out by this allocator before (stale or double), which
            // `try_deallocate`'s contract allows; it must be refused.
            Subject::Tlsf(t) => unsafe { t.try_deallocate(p) },
            Subject::TlsfByte(t) => t.try_dealloc(p, l),
            Subject::TlsfHeap(_) | Subject::Flex(_) => return, // no safe free: it is unsafe
            Subject::Buddy(b) => {
                assert!(!b.is_allocated(p, l), "Buddy::is_allocated({kind:?})");
                b.try_dealloc(p, l)
            }
            Subject::Slab(s) => {
                assert!(!s.is_allocated(p, l), "Slab::is_allocated({kind:?})");
                s.try_dealloc(p, l)
            }
        };
        assert_eq!(
            r,
            Err(AllocError::NotAllocated),
            "bad free {kind:?} of {addr:#x} ({l:?}) was accepted"
        );
        assert_eq!(
            self.snapshot(),
            before,
            "a refused free ({kind:?}) changed the heap"
        );
        self.check();
        for b in &self.live {
            Self::verify(b);
        }
    }

    fn remove_pool(&mut self, slot: u8) {
        let Subject::TlsfHeap(h) = &self.subject else {
            return;
        };
        let Some(&(start, len)) = self.regions.get(slot as usize % self.regions.len().max(1))
        else {
            return;
        };
        let busy = self
            .live
            .iter()
            .any(|b| start <= b.addr && b.addr < start + len);
        let region = NonNull::slice_from_raw_parts(Self::ptr(start), len);
        let r = h.remove_pool(region);
        if busy {
            assert_eq!(
                r,
                Err(AllocError::MemoryOverlap),
                "remove_pool of a busy pool"
            );
        } else {
            assert_eq!(r, Ok(()), "remove_pool of a free pool");
            self.regions.retain(|&(s, _)| s != start);
        }
        // A range that is no region.
        let odd = NonNull::slice_from_raw_parts(Self::ptr(start + 16), len);
        assert_eq!(h.remove_pool(odd), Err(AllocError::InvalidParam));
    }
}

fuzz_target!(|input: Input| {
    let mut mem = Memory::new();
    let subject = match input.family {
        Family::Tlsf => Subject::Tlsf(Box::new(DefaultTlsf::new())),
        Family::TlsfByte => Subject::TlsfByte(Box::new(TlsfByteAllocator::new())),
        Family::TlsfHeap => Subject::TlsfHeap(Box::new(TlsfHeap::new())),
        Family::Buddy => Subject::Buddy(Box::new(BuddyByteAllocator::new())),
        Family::Slab => Subject::Slab(Box::new(SlabByteAllocator::new())),
        Family::FlexSlice => {
            // SAFETY: slots 1.. of `mem`'s buffer, which outlives the subject (dropped first,
            // `Run`'s field order) and which nothing else touches in this family.
            let slots = unsafe {
                core::slice::from_raw_parts_mut(
                    mem.base().add(SLOT).cast::<core::mem::MaybeUninit<u8>>(),
                    (SLOTS - 1) * SLOT,
                )
            };
            Subject::Flex(Box::new(FlexTlsf::<_, u32, u32, 28, 32>::new(
                SliceSource::new(slots),
            )))
        }
        Family::FlexAlloc => Subject::Flex(Box::new(FlexTlsf::<_, u32, u32, 28, 32>::new(
            GlobalAllocAsFlexSource::<_, 16>(std::alloc::System),
        ))),
        Family::FlexMmap => Subject::Flex(Box::new(FlexTlsf::<_, u32, u32, 28, 32>::new(
            MmapSource::<()>::new(),
        ))),
    };
    let mut run = Run {
        subject,
        mem,
        live: Vec::new(),
        freed: Vec::new(),
        regions: Vec::new(),
        next_tag: 1,
        managed: 0,
    };
    // Every run starts with slot 0 as a pool (`FlexTlsf` takes its own on demand).
    if let Some(first) = run.add_pool(0, 0, SLOT) {
        first.expect("the first pool");
    }
    run.check();
    for op in input.ops.iter().take(MAX_OPS) {
        match *op {
            Op::Alloc {
                size,
                big,
                align_log,
            } => run.alloc(layout(size_of_op(size, big), 1 << (align_log % 14))),
            Op::Free { idx } => {
                if !run.live.is_empty() {
                    run.free(idx as usize % run.live.len());
                }
            }
            Op::Realloc { idx, size, big } => {
                if !run.live.is_empty() {
                    run.realloc(idx as usize % run.live.len(), size_of_op(size, big));
                }
            }
            Op::BadFree { kind, idx, off } => run.bad_free(kind, idx, off),
            Op::AddPool {
                slot,
                off,
                len,
                whole,
            } => {
                let slot = 1 + slot as usize % (SLOTS - 1);
                let (off, len) = if whole {
                    (0, SLOT)
                } else {
                    let off = off as usize % SLOT;
                    (off, len as usize % (SLOT - off + 1))
                };
                run.add_pool(slot, off, len);
            }
            Op::RemovePool { slot } => run.remove_pool(slot),
            Op::Reclaim => {
                if let Subject::Slab(s) = &mut run.subject {
                    s.reclaim();
                }
            }
        }
        run.check();
    }
    // Free everything: the allocator must be whole again.
    while !run.live.is_empty() {
        run.free(run.live.len() - 1);
        run.check();
    }
    match &mut run.subject {
        Subject::Flex(f) => assert_eq!(f.check().used_blocks, 0),
        Subject::Tlsf(t) => {
            let (_, free) = t.check().unwrap();
            assert_eq!(free, run.managed);
        }
        Subject::TlsfByte(t) => assert_eq!(t.used_bytes(), 0),
        Subject::TlsfHeap(_) => {
            while !run.regions.is_empty() {
                run.remove_pool(0);
            }
        }
        Subject::Buddy(b) => assert_eq!(b.used_bytes(), 0),
        Subject::Slab(s) => {
            s.reclaim();
            s.check().unwrap();
            assert_eq!(s.used_bytes(), 0);
            assert_eq!(s.overhead_bytes(), 0, "reclaim left slabs behind");
        }
    }
});
