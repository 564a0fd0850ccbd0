//! `FlexTlsf` (rlsf's growable TLSF) against the shadow model: random allocate / reallocate /
//! free programs over a test source with every combination of rlsf's source capabilities
//! (in-place growth, contiguous region, dealloc, unaligned blocks, a memory limit), with
//! `FlexTlsf::check` (free lists, every pool, totals) after every step and the pools checked
//! against the source's live blocks; plus the scenarios: growing from nothing, giving every
//! pool back on drop, bad input (zero size, huge size, alignment beyond a page, a source that
//! runs dry), the sources we ship (`SliceSource`, `GlobalAllocAsFlexSource`,
//! `PageAllocatorSource` over the bitmap page allocator) and `CAlloc` on `SpinLock<FlexTlsf>`.
//! Runs under Miri (strict provenance) with smaller programs, except the two page-allocator
//! tests (page addresses are integers with exposed provenance).

mod support;

use core::alloc::Layout;
use core::cell::RefCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::rc::Rc;

use proptest::prelude::*;
use smpalloc::byte::{
    BitmapWord, CAlloc, FlexSource, FlexTlsf, GRANULARITY, GlobalAllocAsFlexSource,
    PageAllocatorSource, SliceSource,
};
use smpalloc::{BaseAllocator, BitmapPageAllocator, SpinLock, Tlsf};
use support::memory::{Fill, MemShadow as Shadow, Memory as Buffer};

const ARENA: usize = if cfg!(miri) { 32 * 1024 } else { 256 * 1024 };
/// The source's memory in the scenario tests.
const BIG: usize = 256 * 1024;
/// Operations per program at most (fewer under Miri).
const OPS: usize = if cfg!(miri) { 16 } else { 200 };

/// What the test source did, shared with the test after the source moved into the allocator.
#[derive(Debug, Default)]
struct Log {
    /// Live blocks `(start, len)`.
    live: Vec<(usize, usize)>,
    allocs: usize,
    grows: usize,
    deallocs: usize,
    refused: usize,
}

/// A source carving blocks from one buffer (bump), with switchable capabilities.
struct TestSource {
    buffer: Rc<Buffer>,
    log: Rc<RefCell<Log>>,
    /// Bytes of the buffer handed out so far.
    bump: usize,
    /// Bytes it may hand out in all.
    limit: usize,
    inplace: bool,
    contiguous: bool,
    dealloc: bool,
    /// Start blocks this many bytes past a granule (min_align 1).
    skew: usize,
}

impl TestSource {
    fn new(limit: usize, inplace: bool, contiguous: bool, dealloc: bool, skew: usize) -> Self {
        Self {
            buffer: Rc::new(Buffer::page_aligned(limit)),
            log: Rc::default(),
            bump: 0,
            limit,
            inplace: inplace || contiguous,
            contiguous,
            dealloc,
            skew: skew % GRANULARITY,
        }
    }
}

// SAFETY: blocks are disjoint ranges of the buffer, each handed out once.
unsafe impl FlexSource for TestSource {
    unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
        assert!(
            min_size > 0 && min_size % GRANULARITY == 0,
            "bad min_size {min_size}"
        );
        let mut log = self.log.borrow_mut();
        if self.contiguous && log.allocs > 0 {
            panic!("FlexTlsf called alloc on a contiguous source after its first block");
        }
        let start = self.bump.next_multiple_of(GRANULARITY) + self.skew;
        // Hand out a little more than asked, sometimes.
        let len = min_size + (log.allocs % 3) * 8;
        if start + len > self.limit {
            log.refused += 1;
            return None;
        }
        self.bump = start + len;
        log.allocs += 1;
        let block = self.buffer.slice(start, len);
        log.live.push((block.cast::<u8>().as_ptr().addr(), len));
        Some(block)
    }

    unsafe fn realloc_inplace_grow(
        &mut self,
        ptr: NonNull<[u8]>,
        min_new_len: usize,
    ) -> Option<usize> {
        assert!(
            self.inplace,
            "realloc_inplace_grow called though unsupported"
        );
        assert!(min_new_len >= ptr.len());
        let mut log = self.log.borrow_mut();
        let start = ptr.cast::<u8>().as_ptr().addr() - self.buffer.ptr().as_ptr().addr();
        let entry = log
            .live
            .iter_mut()
            .find(|b| b.0 == ptr.cast::<u8>().as_ptr().addr())
            .expect("grow of an unknown block");
        assert_eq!(entry.1, ptr.len(), "grow with a stale length");
        // Only the block at the bump end can grow.
        if start + ptr.len() != self.bump || start + min_new_len > self.limit {
            log.refused += 1;
            return None;
        }
        entry.1 = min_new_len;
        self.bump = start + min_new_len;
        log.grows += 1;
        Some(min_new_len)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<[u8]>) {
        assert!(self.dealloc, "dealloc called though unsupported");
        let mut log = self.log.borrow_mut();
        let key = (ptr.cast::<u8>().as_ptr().addr(), ptr.len());
        let i = log
            .live
            .iter()
            .position(|&b| b == key)
            .expect("dealloc of an unknown block or with a wrong length");
        log.live.swap_remove(i);
        log.deallocs += 1;
    }

    fn supports_dealloc(&self) -> bool {
        self.dealloc
    }

    fn supports_realloc_inplace_grow(&self) -> bool {
        self.inplace
    }

    fn is_contiguous_growable(&self) -> bool {
        self.contiguous
    }

    fn min_align(&self) -> usize {
        if self.skew == 0 { GRANULARITY } else { 1 }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u32, u8),
    Free(usize),
    Realloc(usize, u32, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), any::<u8>()).prop_map(|(s, a)| Op::Alloc(s, a)),
        4 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<u32>(), any::<u8>()).prop_map(|(i, s, a)| Op::Realloc(i, s, a)),
    ]
}

fn size_of_raw(raw: u32) -> usize {
    let r = raw as usize >> 4;
    match raw % 16 {
        0 => 0,
        1..=10 => r % 129,
        11..=14 => r % 4097,
        _ => r % (ARENA / 3),
    }
}

fn align_of_raw(raw: u8) -> usize {
    if raw < 180 {
        1 << (raw % 4)
    } else {
        1 << (raw % 13)
    }
}

type Flex<FL, SL, const FLLEN: usize, const SLLEN: usize> =
    FlexTlsf<TestSource, FL, SL, FLLEN, SLLEN>;

/// `check`, the pools against the source's live blocks and the model.
fn verify<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    tlsf: &Flex<FL, SL, FLLEN, SLLEN>,
    log: &Log,
    shadow: &mut Shadow,
) {
    register_pools(tlsf, log, shadow);
    let stats = tlsf.check().unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(stats.used_blocks, shadow.len(), "used blocks vs the model");
    let walked = tlsf.iter_blocks().filter(|b| b.is_occupied()).count();
    assert_eq!(
        walked,
        shadow.len(),
        "iter_blocks' used blocks vs the model"
    );
    shadow.verify_all();
}

/// The pools, checked inside the source's live blocks, into the model.
fn register_pools<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    tlsf: &Flex<FL, SL, FLLEN, SLLEN>,
    log: &Log,
    shadow: &mut Shadow,
) {
    let pools: Vec<_> = tlsf.pools().collect();
    assert_eq!(
        pools.len(),
        log.live.len(),
        "one pool per live source block"
    );
    for (i, pool) in pools.iter().rev().enumerate() {
        let start = pool.cast::<u8>().as_ptr().addr();
        let end = start + pool.len();
        assert!(
            log.live.iter().any(|&(s, l)| s <= start && end <= s + l),
            "pool {start:#x}..{end:#x} outside every source block"
        );
        shadow.set_pool(i, start, end);
    }
}

fn run<FL: BitmapWord, SL: BitmapWord, const FLLEN: usize, const SLLEN: usize>(
    source: TestSource,
    ops: &[Op],
) {
    let log = Rc::clone(&source.log);
    let dealloc = source.dealloc;
    let mut tlsf: Flex<FL, SL, FLLEN, SLLEN> = FlexTlsf::new(source);
    let mut shadow = Shadow::new(Fill::Whole);
    let max = Tlsf::<'static, FL, SL, FLLEN, SLLEN>::MAX_ALLOCATION_SIZE;
    for op in ops {
        match *op {
            Op::Alloc(s, a) => {
                let layout = Layout::from_size_align(size_of_raw(s), align_of_raw(a)).unwrap();
                let refused = log.borrow().refused;
                let before = tlsf.check().unwrap();
                match tlsf.allocate(layout) {
                    Some(ptr) => {
                        // Pools may have been added: register them before the model checks.
                        register_pools(&tlsf, &log.borrow(), &mut shadow);
                        shadow.allocated(ptr, layout);
                        // SAFETY: live.
                        let usable =
                            unsafe { Flex::<FL, SL, FLLEN, SLLEN>::allocation_usable_size(ptr) };
                        assert!(usable >= layout.size());
                    }
                    None => {
                        // Only for a size beyond the configuration or a source that ran dry.
                        let need =
                            (layout.size() + 2 * GRANULARITY - 1) / GRANULARITY * GRANULARITY;
                        let search = if layout.align() <= GRANULARITY {
                            need.max(2 * GRANULARITY)
                        } else {
                            need.max(2 * GRANULARITY) + layout.align() + GRANULARITY
                        };
                        let beyond = layout.size() > max
                            || search > Tlsf::<'static, FL, SL, FLLEN, SLLEN>::MAX_BLOCK_SIZE;
                        assert!(
                            beyond || log.borrow().refused > refused,
                            "{layout:?} refused though the source had room"
                        );
                        let after = tlsf.check().unwrap();
                        assert_eq!(after.used_blocks, before.used_blocks);
                    }
                }
            }
            Op::Free(k) => {
                if let Some(live) = shadow.nth(k) {
                    shadow.freeing(live.ptr);
                    // SAFETY: live.
                    unsafe { tlsf.deallocate(live.ptr, live.layout.align()) };
                }
            }
            Op::Realloc(k, s, a) => {
                if let Some(old) = shadow.nth(k) {
                    let old = shadow.freeing(old.ptr);
                    let new_layout =
                        Layout::from_size_align(size_of_raw(s), align_of_raw(a)).unwrap();
                    // SAFETY: live.
                    match unsafe { tlsf.reallocate(old.ptr, new_layout) } {
                        Some(new) => {
                            register_pools(&tlsf, &log.borrow(), &mut shadow);
                            shadow.reallocated(old, new, new_layout);
                        }
                        None => shadow.restore(old),
                    }
                }
            }
        }
        verify(&tlsf, &log.borrow(), &mut shadow);
    }
    // Free everything: every pool is one free block again (or several at MAX_BLOCK_SIZE).
    let lives: Vec<_> = shadow.lives().copied().collect();
    for live in lives {
        shadow.freeing(live.ptr);
        // SAFETY: live.
        unsafe { tlsf.deallocate(live.ptr, live.layout.align()) };
    }
    let stats = tlsf.check().unwrap();
    assert_eq!(stats.used_blocks, 0);
    drop(tlsf);
    let log = log.borrow();
    if dealloc {
        assert!(log.live.is_empty(), "pools not given back: {:?}", log.live);
        assert_eq!(log.deallocs, log.allocs);
    } else {
        assert_eq!(log.deallocs, 0);
    }
}

fn source() -> impl Strategy<Value = TestSource> {
    (
        4096usize..=ARENA,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..GRANULARITY,
    )
        .prop_map(|(limit, inplace, contiguous, dealloc, skew)| {
            TestSource::new(limit, inplace, contiguous, dealloc, skew)
        })
}

impl core::fmt::Debug for TestSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TestSource")
            .field("limit", &self.limit)
            .field("inplace", &self.inplace)
            .field("contiguous", &self.contiguous)
            .field("dealloc", &self.dealloc)
            .field("skew", &self.skew)
            .finish()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 128 },
        // Miri's isolation has no working directory to persist failures in.
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_programs_usize_64x32(src in source(), ops in proptest::collection::vec(op(), 1..OPS)) {
        run::<usize, u32, 28, 32>(src, &ops);
    }

    #[test]
    fn random_programs_small_u8(src in source(), ops in proptest::collection::vec(op(), 1..OPS)) {
        // The largest block is 8 KiB - 16: big requests fail, pools are cut into blocks.
        run::<u8, u8, 8, 4>(src, &ops);
    }

    #[test]
    fn random_programs_rlsf_default(src in source(), ops in proptest::collection::vec(op(), 1..OPS)) {
        run::<u16, u8, 14, 8>(src, &ops);
    }
}

type Small = FlexTlsf<TestSource, u32, u32, 20, 8>;

#[test]
fn grows_from_nothing_and_gives_everything_back() {
    let src = TestSource::new(BIG, false, false, true, 0);
    let log = Rc::clone(&src.log);
    let mut tlsf: Small = FlexTlsf::new(src);
    assert_eq!(tlsf.pools().count(), 0);
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
    let a = tlsf
        .allocate(Layout::from_size_align(100, 8).unwrap())
        .unwrap();
    assert_eq!(log.borrow().allocs, 1);
    // The pool is as large as that request needed (as rlsf's): the next one adds a pool.
    let b = tlsf.allocate(Layout::from_size_align(16, 8).unwrap());
    assert!(b.is_some());
    assert_eq!(log.borrow().allocs, 2);
    let big = tlsf
        .allocate(Layout::from_size_align(20_000, 8).unwrap())
        .unwrap();
    assert_eq!(
        log.borrow().allocs,
        3,
        "a request larger than the free space adds a pool"
    );
    assert_eq!(tlsf.pools().count(), 3);
    assert_eq!(tlsf.check().unwrap().used_blocks, 3);
    // SAFETY: live allocations.
    unsafe {
        tlsf.deallocate(a, 8);
        tlsf.deallocate(b.unwrap(), 8);
        tlsf.deallocate(big, 8);
    }
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
    drop(tlsf);
    assert!(log.borrow().live.is_empty());
    assert_eq!(log.borrow().deallocs, 3);
}

#[test]
fn in_place_growth_keeps_one_pool() {
    let src = TestSource::new(BIG, true, false, true, 3);
    let log = Rc::clone(&src.log);
    let mut tlsf: Small = FlexTlsf::new(src);
    let mut ptrs = Vec::new();
    for i in 0..50 {
        ptrs.push(
            tlsf.allocate(Layout::from_size_align(64 + i * 40, 16).unwrap())
                .unwrap(),
        );
        tlsf.check().unwrap();
    }
    assert_eq!(log.borrow().allocs, 1);
    assert!(log.borrow().grows > 0);
    assert_eq!(tlsf.pools().count(), 1);
    for p in ptrs {
        // SAFETY: live.
        unsafe { tlsf.deallocate(p, 16) };
    }
    let stats = tlsf.check().unwrap();
    assert_eq!(
        (stats.used_blocks, stats.free_blocks),
        (0, 1),
        "the grown pool is one block"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let src = TestSource::new(BIG, false, false, true, 0);
    let log = Rc::clone(&src.log);
    let mut tlsf: Small = FlexTlsf::new(src);
    // Beyond MAX_ALLOCATION_SIZE, and a size near usize::MAX (no overflow): no source call.
    let max = Tlsf::<'static, u32, u32, 20, 8>::MAX_ALLOCATION_SIZE;
    assert!(
        tlsf.allocate(Layout::from_size_align(max + 1, 8).unwrap())
            .is_none()
    );
    assert!(
        tlsf.allocate(Layout::from_size_align(isize::MAX as usize - 4096, 4096).unwrap())
            .is_none()
    );
    assert_eq!(log.borrow().allocs, 0);
    // Alignment beyond a page: served from a pool large enough for the gap.
    let l = Layout::from_size_align(100, 64 * 1024).unwrap();
    let p = tlsf.allocate(l).unwrap();
    assert_eq!(p.as_ptr().addr() % (64 * 1024), 0);
    // Zero size: a unique pointer that must be freed.
    let z1 = tlsf
        .allocate(Layout::from_size_align(0, 1).unwrap())
        .unwrap();
    let z2 = tlsf
        .allocate(Layout::from_size_align(0, 1).unwrap())
        .unwrap();
    assert_ne!(z1, z2);
    let before = tlsf.check().unwrap();
    // The source runs dry: `None`, nothing changed.
    assert!(
        tlsf.allocate(Layout::from_size_align(BIG, 8).unwrap())
            .is_none()
    );
    assert!(log.borrow().refused > 0);
    assert_eq!(tlsf.check().unwrap(), before);
    // A failed reallocation leaves the old block in place.
    // SAFETY: live.
    unsafe {
        assert!(
            tlsf.reallocate(z1, Layout::from_size_align(BIG, 8).unwrap())
                .is_none()
        );
        assert!(
            tlsf.reallocate(z1, Layout::from_size_align(max + 1, 8).unwrap())
                .is_none()
        );
        assert_eq!(tlsf.check().unwrap(), before);
        tlsf.deallocate(z1, 1);
        tlsf.deallocate(z2, 1);
        tlsf.deallocate(p, l.align());
    }
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
}

#[test]
fn aligned_request_beyond_the_largest_block_takes_nothing() {
    // u8/u8/8/4: the largest block is 8 KiB - 16; 4 KiB + alignment 8 KiB cannot fit one.
    let src = TestSource::new(BIG, false, false, false, 0);
    let log = Rc::clone(&src.log);
    let mut tlsf: FlexTlsf<TestSource, u8, u8, 8, 4> = FlexTlsf::new(src);
    assert!(
        tlsf.allocate(Layout::from_size_align(4096, 8192).unwrap())
            .is_none()
    );
    assert_eq!(log.borrow().allocs, 0);
}

#[test]
fn contiguous_source_is_never_asked_twice() {
    let src = TestSource::new(8192, true, true, false, 0);
    let log = Rc::clone(&src.log);
    let mut tlsf: Small = FlexTlsf::new(src);
    let mut n = 0;
    while tlsf
        .allocate(Layout::from_size_align(200, 8).unwrap())
        .is_some()
    {
        n += 1;
        tlsf.check().unwrap();
    }
    assert!(n > 10);
    // The TestSource panics on a second `alloc` of a contiguous source.
    assert_eq!(log.borrow().allocs, 1);
    assert_eq!(tlsf.pools().count(), 1);
}

#[test]
fn slice_source_grows_in_place_until_the_array_is_used() {
    static mut MEMORY: [MaybeUninit<u8>; 32 * 1024] = [MaybeUninit::uninit(); 32 * 1024];
    // SAFETY: this test is the only user of `MEMORY`.
    let memory = unsafe { &mut *core::ptr::addr_of_mut!(MEMORY) };
    let mut tlsf: FlexTlsf<SliceSource<'static>, u16, u8, 14, 8> =
        FlexTlsf::new(SliceSource::new(memory));
    let mut ptrs = Vec::new();
    while let Some(p) = tlsf.allocate(Layout::from_size_align(300, 8).unwrap()) {
        ptrs.push(p);
    }
    tlsf.check().unwrap();
    assert_eq!(tlsf.pools().count(), 1);
    let used = tlsf.source_ref().used();
    assert!(used <= tlsf.source_ref().capacity() && used > 32 * 1024 - 1024);
    assert!(
        ptrs.len() > 90,
        "{} allocations of 300 bytes in 32 KiB",
        ptrs.len()
    );
    for p in ptrs {
        // SAFETY: live.
        unsafe { tlsf.deallocate(p, 8) };
    }
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
}

#[test]
fn slice_source_too_small_refuses() {
    let mut memory = [MaybeUninit::<u8>::uninit(); 48];
    let mut tlsf: FlexTlsf<SliceSource<'_>, u16, u8, 14, 8> =
        FlexTlsf::new(SliceSource::new(&mut memory));
    assert!(
        tlsf.allocate(Layout::from_size_align(64, 8).unwrap())
            .is_none()
    );
    assert_eq!(tlsf.source_ref().used(), 0);
    assert_eq!(tlsf.check().unwrap().used_blocks, 0);
}

#[test]
fn global_alloc_source_frees_its_pools_on_drop() {
    use std::alloc::System;
    let mut tlsf: FlexTlsf<GlobalAllocAsFlexSource<System, 64>, usize, usize, 32, 16> =
        FlexTlsf::new(GlobalAllocAsFlexSource(System));
    assert_eq!(tlsf.source_ref().min_align(), 64);
    let mut v = Vec::new();
    for i in 0..200usize {
        let l = Layout::from_size_align(1 + i * 37 % 3000, 1 << (i % 7)).unwrap();
        let p = tlsf.allocate(l).unwrap();
        // SAFETY: `l.size()` bytes are ours.
        unsafe { p.as_ptr().write_bytes(i as u8, l.size()) };
        v.push((p, l));
        if i % 3 == 0 {
            let (p, l) = v.swap_remove(i % v.len());
            // SAFETY: live.
            unsafe { tlsf.deallocate(p, l.align()) };
        }
    }
    let stats = tlsf.check().unwrap();
    assert_eq!(stats.used_blocks, v.len());
    assert!(tlsf.pools().count() > 1);
    // Dropping with live allocations is allowed: the pools go back to `System` (Miri and
    // leak checkers see this).
}

#[test]
// Page addresses are integers: strict provenance (Miri) cannot turn them into pointers.
#[cfg_attr(miri, ignore)]
fn page_allocator_source_takes_pages_and_gives_them_back() {
    let buffer = Buffer::page_aligned(64 * 4096);
    let base = buffer.ptr().as_ptr().expose_provenance();
    let pages: BitmapPageAllocator<4096> = BitmapPageAllocator::new();
    pages.init(base, 64 * 4096);
    {
        // SAFETY: the page allocator hands out pages of `buffer` (exposed above), which
        // outlives the allocator.
        let source = unsafe { PageAllocatorSource::<_, 2>::new(&pages) };
        let mut tlsf: FlexTlsf<_, u32, u32, 24, 16> = FlexTlsf::new(source);
        let a = tlsf
            .allocate(Layout::from_size_align(10, 8).unwrap())
            .unwrap();
        assert_eq!(pages.used_pages(), 2, "MIN_PAGES pages for a small pool");
        let b = tlsf
            .allocate(Layout::from_size_align(5 * 4096, 8).unwrap())
            .unwrap();
        assert!(pages.used_pages() >= 8);
        // More than the page allocator has: `None`, nothing changed.
        let before = tlsf.check().unwrap();
        assert!(
            tlsf.allocate(Layout::from_size_align(100 * 4096, 8).unwrap())
                .is_none()
        );
        assert_eq!(tlsf.check().unwrap(), before);
        // SAFETY: live.
        unsafe {
            tlsf.deallocate(a, 8);
            tlsf.deallocate(b, 8);
        }
        assert_eq!(tlsf.check().unwrap().used_blocks, 0);
    }
    assert_eq!(
        pages.used_pages(),
        0,
        "every pool went back to the page layer"
    );
    pages.check().unwrap();
}

#[test]
// Page addresses are integers: strict provenance (Miri) cannot turn them into pointers.
#[cfg_attr(miri, ignore)]
fn owned_page_allocator_source() {
    let buffer = Buffer::page_aligned(16 * 4096);
    let base = buffer.ptr().as_ptr().expose_provenance();
    let mut pages: BitmapPageAllocator<4096> = BitmapPageAllocator::new();
    BaseAllocator::init(&mut pages, base, 16 * 4096);
    // SAFETY: as above.
    let source = unsafe { PageAllocatorSource::<_>::new(pages) };
    let mut tlsf: FlexTlsf<_, u32, u32, 24, 16> = FlexTlsf::new(source);
    let a = tlsf
        .allocate(Layout::from_size_align(3000, 64).unwrap())
        .unwrap();
    assert_eq!(tlsf.source_ref().pages().used_pages(), 1);
    // SAFETY: live.
    unsafe { tlsf.deallocate(a, 64) };
    drop(tlsf);
    drop(buffer);
}

#[test]
fn calloc_on_a_locked_flex_tlsf() {
    let src = TestSource::new(BIG, true, false, true, 0);
    let heap: SpinLock<Small> = SpinLock::new(FlexTlsf::new(src));
    let p = heap
        .allocate(Layout::from_size_align(40, 8).unwrap())
        .unwrap();
    // SAFETY: live blocks of `heap`, freed once.
    unsafe {
        assert!(heap.allocation_usable_size(p) >= 40);
        p.as_ptr().write_bytes(0x5a, 40);
        // A stricter alignment moves the block and keeps the contents.
        let q = heap
            .reallocate(p, Layout::from_size_align(4000, 4096).unwrap())
            .unwrap();
        assert_eq!(q.as_ptr().addr() % 4096, 0);
        assert!((0..40).all(|i| *q.as_ptr().add(i) == 0x5a));
        assert!(heap.allocation_usable_size(q) >= 4000);
        heap.deallocate(q);
    }
    assert_eq!(heap.lock().check().unwrap().used_blocks, 0);
}

#[test]
fn calloc_refuses_a_misaligned_pointer_and_changes_nothing() {
    let src = TestSource::new(BIG, false, false, true, 0);
    let heap: SpinLock<Small> = SpinLock::new(FlexTlsf::new(src));
    let p = heap
        .allocate(Layout::from_size_align(40, 8).unwrap())
        .unwrap();
    let before = heap.lock().check().unwrap();
    let bad = NonNull::new(p.as_ptr().wrapping_add(4)).unwrap();
    // SAFETY: the call panics before touching memory (that is what is tested).
    let r = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| unsafe {
        heap.deallocate(bad)
    }));
    assert!(r.is_err());
    // SAFETY: as above.
    let r = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| unsafe {
        heap.reallocate(bad, Layout::new::<u64>())
    }));
    assert!(r.is_err());
    assert!(!heap.is_locked(), "the panic happened before the lock");
    assert_eq!(heap.lock().check().unwrap(), before);
    // SAFETY: live.
    unsafe { heap.deallocate(p) };
}

#[test]
#[cfg(debug_assertions)]
fn calloc_double_free_panics_in_debug_builds() {
    let src = TestSource::new(BIG, false, false, true, 0);
    let heap: SpinLock<Small> = SpinLock::new(FlexTlsf::new(src));
    let p = heap
        .allocate(Layout::from_size_align(40, 8).unwrap())
        .unwrap();
    let _keep = heap
        .allocate(Layout::from_size_align(40, 8).unwrap())
        .unwrap();
    // SAFETY: live, freed once here.
    unsafe { heap.deallocate(p) };
    let before = heap.lock().check().unwrap();
    // SAFETY: the double free is refused by the debug header check before anything changes.
    let r = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| unsafe {
        heap.deallocate(p)
    }));
    assert!(r.is_err());
    assert_eq!(heap.lock().check().unwrap(), before);
}

#[test]
fn global_alloc_on_a_locked_flex_tlsf() {
    use core::alloc::GlobalAlloc;
    let src = TestSource::new(BIG, true, false, true, 0);
    let log = Rc::clone(&src.log);
    let heap: SpinLock<Small> = SpinLock::new(FlexTlsf::new(src));
    let l = Layout::from_size_align(48, 16).unwrap();
    // SAFETY: valid layouts; each block freed once with its current layout.
    unsafe {
        let p = heap.alloc(l);
        assert!(!p.is_null() && p.addr() % 16 == 0);
        p.write_bytes(7, 48);
        let q = heap.realloc(p, l, 5000);
        assert!(!q.is_null());
        assert!((0..48).all(|i| *q.add(i) == 7));
        assert!(
            heap.alloc(Layout::from_size_align(BIG, 8).unwrap())
                .is_null()
        );
        heap.dealloc(q, Layout::from_size_align(5000, 16).unwrap());
    }
    assert_eq!(heap.lock().check().unwrap().used_blocks, 0);
    drop(heap);
    assert!(log.borrow().live.is_empty());
}
