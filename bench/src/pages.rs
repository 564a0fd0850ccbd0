//! The page-allocator contestants and workloads, shared by the showcase's pages section and
//! `benches/page.rs`.
//!
//! Every allocator manages 1,048,576 pages of 4 KiB (4 GiB at 1 GiB) and is prepared the same
//! way: every page allocated one by one, then a seeded-random half freed again, so 50% of the
//! pages are used in a random single-page pattern.
//!
//! - ours: `smpalloc::BitmapPageAllocator<4096>` (lock-free) and
//!   `smpalloc::BuddyPageAllocator<4096>` (per-CPU caches in front of a zone lock);
//! - peers: axallocator 0.2 `BitmapPageAllocator<4096>` (feature page-alloc-4g: a
//!   `BitAlloc1M` segment tree), `buddy_system_allocator` 0.13 `FrameAllocator` (a `BTreeSet`
//!   per order), `bitmap-allocator` 0.4 `BitAlloc1M`; single-threaded they run without a lock,
//!   threaded each sits behind a `smpalloc::SpinLock`.

use core::alloc::Layout;
use core::hint::black_box;
use core::time::Duration;
use std::sync::Barrier;
use std::time::Instant;

use bitmap_allocator_04::BitAlloc;
use smpalloc::SpinLock;
use smpalloc_testkit::Rng;

/// Page size of every contestant.
pub const PAGE: usize = 4096;
/// Pages managed by every contestant.
pub const PAGES: usize = 1 << 20;
/// First address (1 GiB, so axallocator's 1 GiB-aligned base wastes nothing).
pub const BASE: usize = 1 << 30;
/// The seed of the random 50% pattern.
pub const SEED: u64 = 0x9a9e_5eed;

/// An allocator driven by one thread (`&mut`, no lock).
pub trait Solo: Send {
    /// `count` pages aligned to `align` pages; the address.
    fn alloc(&mut self, count: usize, align: usize) -> Option<usize>;
    /// Frees what `alloc` returned.
    fn free(&mut self, addr: usize, count: usize);
}

/// An allocator shared by threads.
pub trait Shared: Sync {
    /// As [`Solo::alloc`].
    fn alloc(&self, count: usize, align: usize) -> Option<usize>;
    /// As [`Solo::free`].
    fn free(&self, addr: usize, count: usize);
}

type OurBitmap = smpalloc::BitmapPageAllocator<PAGE>;
type OurBuddy = smpalloc::BuddyPageAllocator<PAGE>;
type AxBitmap = axallocator::BitmapPageAllocator<PAGE>;
type BuddyFrames = buddy_system_allocator::FrameAllocator<33>;
type BitAlloc1M = bitmap_allocator_04::BitAlloc1M;

macro_rules! ours {
    ($t:ty) => {
        impl Shared for $t {
            #[inline]
            fn alloc(&self, count: usize, align: usize) -> Option<usize> {
                self.alloc_pages(count, align * PAGE).ok()
            }
            #[inline]
            fn free(&self, addr: usize, count: usize) {
                self.dealloc_pages(addr, count);
            }
        }
        impl Solo for $t {
            #[inline]
            fn alloc(&mut self, count: usize, align: usize) -> Option<usize> {
                self.alloc_pages(count, align * PAGE).ok()
            }
            #[inline]
            fn free(&mut self, addr: usize, count: usize) {
                self.dealloc_pages(addr, count);
            }
        }
    };
}
ours!(OurBitmap);
ours!(OurBuddy);

impl Solo for AxBitmap {
    #[inline]
    fn alloc(&mut self, count: usize, align: usize) -> Option<usize> {
        axallocator::PageAllocator::alloc_pages(self, count, align * PAGE).ok()
    }
    #[inline]
    fn free(&mut self, addr: usize, count: usize) {
        axallocator::PageAllocator::dealloc_pages(self, addr, count);
    }
}

impl Solo for BuddyFrames {
    #[inline]
    fn alloc(&mut self, count: usize, align: usize) -> Option<usize> {
        let layout = Layout::from_size_align(count, align).ok()?;
        self.alloc_aligned(layout).map(|frame| frame * PAGE)
    }
    #[inline]
    fn free(&mut self, addr: usize, count: usize) {
        // `alloc_aligned` rounds up to max(count.next_power_of_two(), align); with the
        // power-of-two counts used here that is `count` itself.
        self.dealloc(addr / PAGE, count);
    }
}

impl Solo for BitAlloc1M {
    #[inline]
    fn alloc(&mut self, count: usize, align: usize) -> Option<usize> {
        let key = if count == 1 && align == 1 {
            BitAlloc::alloc(self)
        } else {
            self.alloc_contiguous(None, count, align.trailing_zeros() as usize)
        };
        key.map(|key| BASE + key * PAGE)
    }
    #[inline]
    fn free(&mut self, addr: usize, count: usize) {
        let key = (addr - BASE) / PAGE;
        if count == 1 {
            BitAlloc::dealloc(self, key);
        } else {
            self.dealloc_contiguous(key, count);
        }
    }
}

impl<T: Solo> Shared for SpinLock<T> {
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<usize> {
        self.lock().alloc(count, align)
    }
    #[inline]
    fn free(&self, addr: usize, count: usize) {
        self.lock().free(addr, count);
    }
}

/// The contestants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bitmap,
    Buddy,
    AxBitmap,
    BuddySystem,
    BitAlloc,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Bitmap,
        Kind::Buddy,
        Kind::AxBitmap,
        Kind::BuddySystem,
        Kind::BitAlloc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bitmap => "smpalloc BitmapPageAllocator",
            Kind::Buddy => "smpalloc BuddyPageAllocator",
            Kind::AxBitmap => "axallocator 0.2 Bitmap",
            Kind::BuddySystem => "buddy_system_allocator 0.13",
            Kind::BitAlloc => "bitmap-allocator 0.4 BitAlloc1M",
        }
    }

    /// A short identifier (criterion benchmark ids).
    pub fn id(self) -> &'static str {
        match self {
            Kind::Bitmap => "smpalloc_bitmap",
            Kind::Buddy => "smpalloc_buddy",
            Kind::AxBitmap => "axallocator_bitmap",
            Kind::BuddySystem => "buddy_system_allocator",
            Kind::BitAlloc => "bitmap_allocator_04",
        }
    }

    pub fn is_peer(self) -> bool {
        !matches!(self, Kind::Bitmap | Kind::Buddy)
    }

    /// Whether it is a bitmap (the bitmap targets compare bitmaps).
    pub fn is_bitmap(self) -> bool {
        matches!(self, Kind::Bitmap | Kind::AxBitmap | Kind::BitAlloc)
    }

    /// Builds the contestant, prepared (50% used), and hands it to `visit`: ours as they
    /// are, peers without a lock (`solo`) or behind a `SpinLock` (threaded).
    pub fn with<V: Visit>(self, visit: V) -> V::Out {
        match self {
            Kind::Bitmap => {
                let mut a = Box::new(OurBitmap::new());
                a.init(BASE, PAGES * PAGE);
                prepare(&mut *a);
                visit.ours(&mut *a)
            }
            Kind::Buddy => {
                let mut a = Box::new(OurBuddy::new());
                a.init(BASE, PAGES * PAGE);
                prepare(&mut *a);
                visit.ours(&mut *a)
            }
            Kind::AxBitmap => {
                let mut a = Box::new(AxBitmap::new());
                axallocator::BaseAllocator::init(&mut *a, BASE, PAGES * PAGE);
                prepare(&mut *a);
                visit.peer(*a)
            }
            Kind::BuddySystem => {
                let mut a = Box::new(BuddyFrames::new());
                a.add_frame(BASE / PAGE, BASE / PAGE + PAGES);
                prepare(&mut *a);
                visit.peer(*a)
            }
            Kind::BitAlloc => {
                let mut a: Box<BitAlloc1M> = Box::new(BitAlloc1M::DEFAULT);
                a.insert(0..PAGES);
                prepare(&mut *a);
                visit.peer(*a)
            }
        }
    }
}

/// What to do with a prepared contestant.
pub trait Visit {
    type Out;
    /// Ours: usable alone and shared without a lock.
    fn ours<A: Solo + Shared>(self, allocator: &mut A) -> Self::Out;
    /// A peer, by value: alone as it is, shared behind a `SpinLock`.
    fn peer<A: Solo>(self, allocator: A) -> Self::Out;
}

/// Allocates every page one by one, then frees a seeded-random half.
pub fn prepare(allocator: &mut impl Solo) {
    let mut pages: Vec<usize> = (0..PAGES)
        .map(|_| allocator.alloc(1, 1).expect("a free page while preparing"))
        .collect();
    Rng::new(SEED).shuffle(&mut pages);
    for &page in &pages[..PAGES / 2] {
        allocator.free(page, 1);
    }
}

/// One allocation of `count` pages aligned to `align` pages and its free.
#[inline]
pub fn pair(allocator: &mut impl Solo, count: usize, align: usize) {
    let addr = allocator.alloc(count, align).expect("pages");
    allocator.free(black_box(addr), count);
}

/// `ops` pairs on one thread.
pub fn time_pairs(allocator: &mut impl Solo, count: usize, align: usize, ops: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..ops {
        pair(allocator, count, align);
    }
    start.elapsed()
}

/// `threads` threads share the allocator, each doing `ops / threads` single-page pairs;
/// returns the wall time of all of them (aggregate throughput = ops / time).
pub fn time_threads(allocator: &impl Shared, threads: usize, ops: u64) -> Duration {
    let per_thread = ops / threads as u64;
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    let addr = allocator.alloc(1, 1).expect("a page");
                    allocator.free(black_box(addr), 1);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

/// `std::alloc::System` allocating one 4 KiB page-aligned block and freeing it, `ops` times
/// (the same thing at the byte level).
pub fn time_system(ops: u64) -> Duration {
    use core::alloc::GlobalAlloc;
    use std::alloc::System;
    let layout = Layout::from_size_align(PAGE, PAGE).unwrap();
    let start = Instant::now();
    for _ in 0..ops {
        // SAFETY: a non-zero-size layout; the block is freed with the same layout.
        unsafe {
            let ptr = System.alloc(layout);
            assert!(!ptr.is_null());
            System.dealloc(black_box(ptr), layout);
        }
    }
    start.elapsed()
}
