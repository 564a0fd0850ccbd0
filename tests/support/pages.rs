//! The page allocators under test through one `&self` adapter trait ([`Pages`]), so a test
//! body is written once, shared by threads, and run over both allocators and any
//! configuration (with `support::suite!`).

use core::alloc::Layout;
use core::borrow::Borrow;

use smpalloc::AllocResult;
use smpalloc::bitmap::AtomicBitmap;
use smpalloc::page::{BitmapPageAllocator, BuddyPageAllocator};

/// A concurrent page allocator as the tests drive it: addresses and counts of pages, every
/// call through `&self`.
pub(crate) trait Pages: Sync {
    /// Whether allocation never fails while an aligned free run exists (first fit over pages,
    /// the bitmap), as opposed to needing a free naturally aligned power-of-two block (buddy).
    const FIRST_FIT: bool;
    /// Whether a free must name exactly one allocation (the buddy); the bitmap frees pages.
    const EXACT_FREE: bool;
    /// `alloc_pages(count, align)`.
    fn alloc(&self, count: usize, align: usize) -> AllocResult<usize>;
    /// `alloc_pages_at(addr, count, align)`.
    fn alloc_at(&self, addr: usize, count: usize, align: usize) -> AllocResult<usize>;
    /// `try_dealloc_pages(addr, count)`.
    fn free(&self, addr: usize, count: usize) -> AllocResult;
    /// `add_memory(start, size)`.
    fn add(&self, start: usize, size: usize) -> AllocResult;
    /// `used_pages()`.
    fn used(&self) -> usize;
    /// `available_pages()`.
    fn available(&self) -> usize;
    /// `total_pages()`.
    fn total(&self) -> usize;
    /// `is_allocated(addr)`.
    fn owned(&self, addr: usize) -> bool;
    /// The allocator's `check()`, its error as text.
    fn invariants(&self) -> Result<(), String>;
    /// Returns cached pages to the shared pool (the buddy's CPU caches); nothing otherwise.
    fn drain(&self) {}
}

/// The calls both allocators spell alike.
macro_rules! impl_pages {
    (
        [$($generics:tt)*] $ty:ty $(where [$($bounds:tt)*])?,
        first_fit: $first_fit:expr, exact_free: $exact:expr $(, drain: $drain:ident)?
    ) => {
        impl<$($generics)*> Pages for $ty $(where $($bounds)*)? {
            const FIRST_FIT: bool = $first_fit;
            const EXACT_FREE: bool = $exact;
            fn alloc(&self, count: usize, align: usize) -> AllocResult<usize> {
                self.alloc_pages(count, align)
            }
            fn alloc_at(&self, addr: usize, count: usize, align: usize) -> AllocResult<usize> {
                self.alloc_pages_at(addr, count, align)
            }
            fn free(&self, addr: usize, count: usize) -> AllocResult {
                self.try_dealloc_pages(addr, count)
            }
            fn add(&self, start: usize, size: usize) -> AllocResult {
                self.add_memory(start, size)
            }
            fn used(&self) -> usize {
                self.used_pages()
            }
            fn available(&self) -> usize {
                self.available_pages()
            }
            fn total(&self) -> usize {
                self.total_pages()
            }
            fn owned(&self, addr: usize) -> bool {
                self.is_allocated(addr)
            }
            fn invariants(&self) -> Result<(), String> {
                self.check().map_err(|e| e.to_string())
            }
            $(fn drain(&self) {
                self.$drain();
            })?
        }
    };
}

impl_pages!(
    [const P: usize, const W: usize, const S: usize, B] BitmapPageAllocator<P, W, S, B>
        where [B: Borrow<AtomicBitmap<W, S>> + Sync],
    first_fit: true, exact_free: false
);
impl_pages!(
    [const P: usize, const O: usize, const C: usize] BuddyPageAllocator<P, O, C>,
    first_fit: false, exact_free: true, drain: drain_cpu_caches
);

/// A `BuddyPageAllocator` over `bytes` of fresh memory aligned to its largest block, every
/// page added; both leaked (a heap over it writes its headers there and keeps using them).
pub(crate) fn leaked_buddy<const P: usize, const O: usize, const C: usize>(
    bytes: usize,
) -> &'static BuddyPageAllocator<P, O, C> {
    let layout = Layout::from_size_align(bytes, P << O).unwrap();
    // SAFETY: non-zero size; never freed (the allocator and its users keep the memory).
    let pool = unsafe { std::alloc::alloc(layout) };
    assert!(!pool.is_null());
    let start = pool.expose_provenance();
    let pages = Box::leak(Box::new(BuddyPageAllocator::with_window(start, bytes)));
    pages.add_memory(start, bytes).unwrap();
    pages
}
