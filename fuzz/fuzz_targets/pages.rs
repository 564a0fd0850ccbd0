//! Fuzz target `pages`: `BitmapPageAllocator`, `LowestFreeBitmapPageAllocator` and
//! `BuddyPageAllocator` against a shadow model of their regions and allocated pages.
//!
//! Both allocators manage addresses only (nothing is ever written into the pages), so regions
//! are arbitrary address ranges: overlapping, tiny, unaligned, near address 0 and near
//! `usize::MAX`. Every call's result is predicted from the documentation: `add_memory`'s
//! errors, `alloc_pages` (aligned, inside regions, disjoint from everything allocated;
//! `NoMemory` only when the model has no such run / block), `alloc_pages_at`,
//! `try_dealloc_pages` of arbitrary `(base, count)` ranges (buddy: exactly one allocation or
//! `NotAllocated`; bitmap: any range of allocated pages, since a bitmap keeps no allocation
//! boundaries), `is_allocated`, `used_pages`/`total_pages`, and `check()` after every step.
//! The lowest-free bitmap must also hand out exactly the lowest fitting run, every time.
//! At the end everything is freed and every page must be available again.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smpalloc::AllocError;
use smpalloc::bitmap::summary_words;
use smpalloc::page::{
    BitmapPageAllocator, BuddyPageAllocator, LowestFreeBitmapPageAllocator, MAX_REGIONS,
};

const MAX_OPS: usize = 256;
const PAGE: usize = 4096;
/// Bitmap words of the bitmap allocator: a window of 256 pages.
const WORDS: usize = 4;
const CAPACITY: usize = WORDS * 64;
const MAX_ORDER: usize = 4;
type Bitmap = BitmapPageAllocator<PAGE, WORDS, { summary_words(WORDS) }>;
type Lowest = LowestFreeBitmapPageAllocator<PAGE, WORDS, { summary_words(WORDS) }>;
type Buddy = BuddyPageAllocator<PAGE, MAX_ORDER, 2>;

/// Where regions and windows lie: address 0, an ordinary address, just below `usize::MAX`.
const BASES: [usize; 3] = [
    0,
    0x8000_0000,
    (usize::MAX - (4 << 20)) & !((PAGE << 8) - 1),
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// `BASES[base] + page * PAGE + byte` (the byte offset makes it unaligned).
    Near { base: u8, page: u16, byte: u16 },
    /// A live allocation's start plus `delta` pages.
    Alloc { idx: u8, delta: i8 },
    /// Anything.
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    AddMemory {
        at: Addr,
        pages: u16,
        tail: u16,
    },
    Alloc {
        count: u8,
        align_log: u8,
    },
    AllocAt {
        at: Addr,
        count: u8,
        align_log: u8,
    },
    AllocOrder {
        order: u8,
    },
    /// `try_dealloc_pages(at, count)` (count 0 means: the count of the allocation at `at`).
    Free {
        at: Addr,
        count: u8,
    },
    /// `dealloc_pages` of a whole allocation (the non-reporting form).
    FreeExact {
        idx: u8,
    },
    FreeOrder {
        idx: u8,
    },
    IsAllocated {
        at: Addr,
    },
    Drain,
    Cpu(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: next-fit bitmap, 1: lowest-free bitmap, otherwise the buddy.
    family: u8,
    /// Buddy: the window's base (`BASES`) and the caches' watermarks.
    window: u8,
    high: u8,
    batch: u8,
    ops: Vec<Op>,
}

static CPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn cpu_source() -> usize {
    CPU.load(std::sync::atomic::Ordering::Relaxed)
}

/// The shadow state: regions as page ranges, allocations as `first page -> count`.
#[derive(Default)]
struct Model {
    regions: Vec<(usize, usize)>,
    allocs: BTreeMap<usize, usize>,
    pages: BTreeSet<usize>,
    /// Bitmap: page number of bit 0 (set by the first region).
    base: Option<usize>,
}

impl Model {
    fn covered(&self, first: usize, end: usize) -> bool {
        (first..end).all(|p| self.regions.iter().any(|&(s, e)| s <= p && p < e))
    }
    fn overlaps(&self, first: usize, end: usize) -> bool {
        self.regions.iter().any(|&(s, e)| first < e && s < end)
    }
    fn total(&self) -> usize {
        self.regions.iter().map(|&(s, e)| e - s).sum()
    }
    fn any_allocated(&self, first: usize, end: usize) -> bool {
        self.pages.range(first..end).next().is_some()
    }
    fn all_allocated(&self, first: usize, end: usize) -> bool {
        self.pages.range(first..end).count() == end - first
    }
    fn take(&mut self, first: usize, count: usize) {
        for p in first..first + count {
            assert!(self.pages.insert(p), "page {p:#x} handed out twice");
        }
        self.allocs.insert(first, count);
    }
    fn resolve(&self, at: Addr) -> usize {
        match at {
            Addr::Near { base, page, byte } => {
                let b = BASES[base as usize % BASES.len()];
                let byte = if byte.is_multiple_of(4) {
                    0
                } else {
                    byte as usize % PAGE
                };
                b.wrapping_add((page as usize % 1024) * PAGE + byte)
            }
            Addr::Alloc { idx, delta } => {
                let Some((&first, _)) = self
                    .allocs
                    .iter()
                    .nth(idx as usize % self.allocs.len().max(1))
                else {
                    return PAGE;
                };
                first
                    .wrapping_add_signed(delta as isize % 4)
                    .wrapping_mul(PAGE)
            }
            Addr::Raw(a) => a as usize,
        }
    }
    fn nth_alloc(&self, idx: u8) -> Option<(usize, usize)> {
        let n = self.allocs.len();
        (n > 0).then(|| {
            let (&f, &c) = self.allocs.iter().nth(idx as usize % n).unwrap();
            (f, c)
        })
    }
}

/// `[first, end)` pages of a region, as the allocators compute it.
fn region_pages(start: usize, size: usize) -> Result<(usize, usize), AllocError> {
    let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
    // The page at address 0 is never managed (issue 14, defect 7): a region holding it
    // starts at the next page.
    let (first, last) = (start.div_ceil(PAGE).max(1), end / PAGE);
    if first >= last {
        return Err(AllocError::InvalidParam);
    }
    Ok((first, last))
}

fn align_of(log: u8) -> usize {
    match log % 16 {
        14 => 3 * PAGE, // not a power of two
        15 => PAGE / 2, // below a page
        k => PAGE << (k % 9),
    }
}

fn count_of(c: u8) -> usize {
    if c.is_multiple_of(16) {
        0
    } else {
        c as usize % 40
    }
}

enum Subject {
    Bitmap(Box<Bitmap>),
    Lowest(Box<Lowest>),
    Buddy(Box<Buddy>, usize, usize),
}

/// `$body` with `$a` bound to whichever allocator `$subject` holds (their APIs are the same).
macro_rules! each {
    ($subject:expr, $a:ident => $body:expr) => {
        match $subject {
            Subject::Bitmap($a) => $body,
            Subject::Lowest($a) => $body,
            Subject::Buddy($a, ..) => $body,
        }
    };
}

impl Subject {
    fn add_memory(&self, s: usize, z: usize) -> Result<(), AllocError> {
        each!(self, b => b.add_memory(s, z))
    }
    fn alloc_pages(&self, n: usize, a: usize) -> Result<usize, AllocError> {
        each!(self, b => b.alloc_pages(n, a))
    }
    fn alloc_pages_at(&self, at: usize, n: usize, a: usize) -> Result<usize, AllocError> {
        each!(self, b => b.alloc_pages_at(at, n, a))
    }
    fn try_dealloc(&self, at: usize, n: usize) -> Result<(), AllocError> {
        each!(self, b => b.try_dealloc_pages(at, n))
    }
    fn dealloc(&self, at: usize, n: usize) {
        each!(self, b => b.dealloc_pages(at, n))
    }
    fn is_allocated(&self, at: usize) -> bool {
        each!(self, b => b.is_allocated(at))
    }
    fn check(&self, m: &Model) {
        let (used, total, avail) = each!(self, b => {
            b.check().expect("check");
            (b.used_pages(), b.total_pages(), b.available_pages())
        });
        assert_eq!(used, m.pages.len(), "used_pages");
        assert_eq!(total, m.total(), "total_pages");
        assert_eq!(avail, total - used, "available_pages");
    }
    /// Whether the model says `alloc_pages(n, align)` must succeed.
    fn must_fit(&self, m: &Model, n: usize, align: usize) -> bool {
        match self {
            Subject::Bitmap(..) | Subject::Lowest(..) => lowest_fit(m, n, align).is_some(),
            Subject::Buddy(..) => {
                let align = align / PAGE;
                // A naturally aligned free block of the order, inside one region.
                let order = n
                    .next_power_of_two()
                    .trailing_zeros()
                    .max(align.trailing_zeros());
                if order as usize > MAX_ORDER {
                    return false;
                }
                let size = 1usize << order;
                m.regions.iter().any(|&(s, e)| {
                    let mut p = s.next_multiple_of(size);
                    while p + size <= e {
                        if !m.any_allocated(p, p + size) {
                            return true;
                        }
                        p += size;
                    }
                    false
                })
            }
        }
    }
}

/// The lowest first page of `n` free pages at an address aligned to `align` in a bitmap's
/// window, if any.
fn lowest_fit(m: &Model, n: usize, align: usize) -> Option<usize> {
    let align = align / PAGE;
    let base = m.base?;
    let mut p = base.next_multiple_of(align);
    while p + n <= base + CAPACITY {
        if m.covered(p, p + n) && !m.any_allocated(p, p + n) {
            return Some(p);
        }
        p += align;
    }
    None
}

fuzz_target!(|input: Input| {
    smpalloc::percpu::set_cpu_id_source(cpu_source);
    CPU.store(0, std::sync::atomic::Ordering::Relaxed);
    let mut m = Model::default();
    let subject = if input.family >= 2 {
        let start = BASES[input.window as usize % BASES.len()];
        let size = 256 * PAGE;
        let buddy = Buddy::with_window(start, size)
            .with_watermarks(input.high as usize % 8 + 1, input.batch as usize % 8 + 1);
        let block = PAGE << MAX_ORDER;
        let (first, last) = (
            start / block * block,
            (start + size).div_ceil(block) * block,
        );
        Subject::Buddy(Box::new(buddy), first / PAGE, (last - first) / PAGE)
    } else if input.family == 1 {
        Subject::Lowest(Box::new(Lowest::new()))
    } else {
        Subject::Bitmap(Box::new(Bitmap::new()))
    };
    for op in input.ops.iter().take(MAX_OPS) {
        match *op {
            Op::AddMemory { at, pages, tail } => {
                let start = m.resolve(at);
                let size = (pages as usize % 300) * PAGE
                    + if tail.is_multiple_of(2) {
                        0
                    } else {
                        tail as usize
                    };
                let got = subject.add_memory(start, size);
                let expect = region_pages(start, size).and_then(|(first, end)| {
                    if m.overlaps(first, end) {
                        return Err(AllocError::MemoryOverlap);
                    }
                    match &subject {
                        Subject::Bitmap(_) | Subject::Lowest(_) => {
                            if m.regions.len() == MAX_REGIONS {
                                return Err(AllocError::NoMemory);
                            }
                            let base = m.base.unwrap_or(first);
                            if first < base || end - base > CAPACITY {
                                return Err(AllocError::InvalidParam);
                            }
                        }
                        Subject::Buddy(_, wbase, wlen) => {
                            if first < *wbase || end - wbase > *wlen {
                                return Err(AllocError::InvalidParam);
                            }
                            if m.regions.len() == MAX_REGIONS {
                                return Err(AllocError::NoMemory);
                            }
                        }
                    }
                    Ok((first, end))
                });
                assert_eq!(got, expect.map(|_| ()), "add_memory({start:#x}, {size:#x})");
                if let Ok((first, end)) = expect {
                    m.regions.push((first, end));
                    m.base.get_or_insert(first);
                }
            }
            Op::Alloc { count, align_log } => {
                let (n, align) = (count_of(count), align_of(align_log));
                let fits = n > 0
                    && align.is_power_of_two()
                    && align >= PAGE
                    && subject.must_fit(&m, n, align);
                match subject.alloc_pages(n, align) {
                    Ok(addr) => {
                        assert!(n > 0 && align.is_power_of_two() && align >= PAGE);
                        assert_eq!(addr % align, 0, "alloc_pages({n}, {align:#x}) misaligned");
                        let first = addr / PAGE;
                        assert!(
                            m.covered(first, first + n),
                            "alloc_pages outside the regions"
                        );
                        if let Subject::Lowest(..) = subject {
                            assert_eq!(
                                Some(first),
                                lowest_fit(&m, n, align),
                                "alloc_pages({n}, {align:#x}) not the lowest fit"
                            );
                        }
                        m.take(first, n);
                    }
                    Err(e) => {
                        if n == 0 || !align.is_power_of_two() || align < PAGE {
                            assert_eq!(e, AllocError::InvalidParam);
                        } else {
                            assert_eq!(e, AllocError::NoMemory);
                            assert!(!fits, "alloc_pages({n}, {align:#x}): NoMemory with room");
                        }
                    }
                }
            }
            Op::AllocAt {
                at,
                count,
                align_log,
            } => {
                let (base, n, align) = (m.resolve(at), count_of(count), align_of(align_log));
                let got = subject.alloc_pages_at(base, n, align);
                let expect = if !align.is_power_of_two()
                    || align < PAGE
                    || n == 0
                    || !base.is_multiple_of(align)
                {
                    Err(AllocError::InvalidParam)
                } else {
                    let first = base / PAGE;
                    let in_window = match &subject {
                        Subject::Bitmap(_) | Subject::Lowest(_) => true,
                        Subject::Buddy(_, wb, wl) => first >= *wb && first - wb + n <= *wl,
                    };
                    if first.checked_add(n).is_none() || !in_window || !m.covered(first, first + n)
                    {
                        Err(AllocError::InvalidParam)
                    } else if m.any_allocated(first, first + n) {
                        Err(AllocError::MemoryOverlap)
                    } else {
                        Ok(base)
                    }
                };
                assert_eq!(got, expect, "alloc_pages_at({base:#x}, {n}, {align:#x})");
                if got.is_ok() {
                    m.take(base / PAGE, n);
                }
            }
            Op::AllocOrder { order } => {
                let Subject::Buddy(b, ..) = &subject else {
                    continue;
                };
                let k = order as usize % (MAX_ORDER + 2);
                let fits = k <= MAX_ORDER && subject.must_fit(&m, 1 << k, PAGE << k);
                match b.alloc_order(k) {
                    Ok(addr) => {
                        assert_eq!(addr % (PAGE << k), 0);
                        assert!(m.covered(addr / PAGE, addr / PAGE + (1 << k)));
                        m.take(addr / PAGE, 1 << k);
                    }
                    Err(e) => {
                        assert_eq!(e, AllocError::NoMemory);
                        assert!(!fits, "alloc_order({k}): NoMemory with room");
                    }
                }
            }
            Op::Free { at, count } => {
                let pos = m.resolve(at);
                let n = if count == 0 {
                    m.allocs.get(&(pos / PAGE)).copied().unwrap_or(1)
                } else {
                    count_of(count)
                };
                let got = subject.try_dealloc(pos, n);
                let first = pos / PAGE;
                let expect = if n == 0 || !pos.is_multiple_of(PAGE) {
                    Err(AllocError::InvalidParam)
                } else {
                    let in_window = match &subject {
                        Subject::Bitmap(_) | Subject::Lowest(_) => true,
                        Subject::Buddy(_, wb, wl) => {
                            first >= *wb && (first - wb).checked_add(n).is_some_and(|e| e <= *wl)
                        }
                    };
                    if first.checked_add(n).is_none() || !in_window || !m.covered(first, first + n)
                    {
                        Err(AllocError::InvalidParam)
                    } else {
                        let ok = match &subject {
                            // A bitmap sees pages only: any range of allocated pages.
                            Subject::Bitmap(_) | Subject::Lowest(_) => {
                                m.all_allocated(first, first + n)
                            }
                            // The buddy: exactly one allocation.
                            Subject::Buddy(..) => m.allocs.get(&first) == Some(&n),
                        };
                        if ok {
                            Ok(())
                        } else {
                            Err(AllocError::NotAllocated)
                        }
                    }
                };
                assert_eq!(got, expect, "try_dealloc_pages({pos:#x}, {n})");
                if got.is_ok() {
                    release(&mut m, first, n);
                }
            }
            Op::FreeExact { idx } => {
                let Some((first, n)) = m.nth_alloc(idx) else {
                    continue;
                };
                subject.dealloc(first * PAGE, n);
                release(&mut m, first, n);
            }
            Op::FreeOrder { idx } => {
                let Subject::Buddy(b, ..) = &subject else {
                    continue;
                };
                let Some((first, n)) = m.nth_alloc(idx) else {
                    continue;
                };
                let k = n.trailing_zeros() as usize;
                let got = b.free_order(first * PAGE, k);
                if n.is_power_of_two() {
                    assert_eq!(got, Ok(()), "free_order of a whole block");
                    release(&mut m, first, n);
                } else {
                    assert_eq!(got, Err(AllocError::NotAllocated), "free_order of part");
                }
            }
            Op::IsAllocated { at } => {
                let a = m.resolve(at);
                let expect = a.is_multiple_of(PAGE) && m.pages.contains(&(a / PAGE));
                assert_eq!(subject.is_allocated(a), expect, "is_allocated({a:#x})");
            }
            Op::Drain => {
                if let Subject::Buddy(b, ..) = &subject {
                    b.drain_cpu_caches();
                }
            }
            Op::Cpu(c) => CPU.store(c as usize % 3, std::sync::atomic::Ordering::Relaxed),
        }
        subject.check(&m);
    }
    // Free everything: every page must come back.
    while let Some((&first, &n)) = m.allocs.iter().next() {
        assert_eq!(subject.try_dealloc(first * PAGE, n), Ok(()), "final free");
        release(&mut m, first, n);
    }
    subject.check(&m);
    if let Subject::Buddy(b, ..) = &subject {
        b.drain_cpu_caches();
        assert_eq!(b.cached_pages(), 0);
    }
    subject.check(&m);
});

/// Frees `[first, first + n)` in the model (the bitmap may free parts of allocations).
fn release(m: &mut Model, first: usize, n: usize) {
    for p in first..first + n {
        assert!(m.pages.remove(&p));
    }
    // Allocation records: drop those wholly freed, trim the rest to their allocated pages.
    let touched: Vec<(usize, usize)> = m
        .allocs
        .range(..first + n)
        .filter(|&(&f, &c)| f + c > first)
        .map(|(&f, &c)| (f, c))
        .collect();
    for (f, c) in touched {
        m.allocs.remove(&f);
        let mut p = f;
        while p < f + c {
            if m.pages.contains(&p) {
                let start = p;
                while p < f + c && m.pages.contains(&p) {
                    p += 1;
                }
                m.allocs.insert(start, p - start);
            } else {
                p += 1;
            }
        }
    }
}
