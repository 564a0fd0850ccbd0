//! Where the SMP heap's memory comes from: a [`PageSource`].
//!
//! - In a kernel, the page layer: [`BuddyPageAllocator`] (slabs are naturally aligned buddy
//!   blocks; single pages come through its per-CPU page caches) or [`BitmapPageAllocator`].
//!   Addresses are the kernel's direct-mapped addresses.
//! - In a std program, [`SystemPages`]: page-aligned blocks from the operating system through
//!   `std::alloc::System`, with a count of the bytes held.
//! - In user space without `malloc` (feature `mmap`, unix), [`MmapPages`](super::MmapPages):
//!   spans from `mmap`ed chunks with a bounded page cache, huge blocks mapped of their own.
//!
//! A reference to a source is a source too, so one page allocator in a `static` can feed the
//! heap and the rest of the kernel.

use core::alloc::Layout;
use core::ptr::NonNull;

#[cfg(feature = "std")]
use core::alloc::GlobalAlloc;

#[cfg(feature = "std")]
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::{BitmapPageAllocator, BuddyPageAllocator};

/// A source of page-granular, aligned memory for the SMP heap.
///
/// # Safety
/// `alloc_pages` returns memory valid for reads and writes of `bytes` bytes, aligned to
/// `align`, not used by anyone else until it is passed back to `free_pages` with the same
/// `bytes` and `align`.
pub unsafe trait PageSource: Sync {
    /// Allocates `bytes` (a non-zero multiple of 4096) aligned to `align` (a power of two,
    /// at least 4096). `None` when out of memory.
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>>;

    /// Frees what `alloc_pages(bytes, align)` returned.
    ///
    /// # Safety
    /// `ptr` came from `alloc_pages(bytes, align)` on this source and is not used afterwards.
    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize);

    /// Hands memory parked in the source's own caches back (the buddy's per-CPU page lists).
    fn drain(&self) {}

    /// Takes every lock of the source and keeps it until
    /// [`unlock_after_fork`](Self::unlock_after_fork) (the heap's fork handler,
    /// [`SmpHeap::lock_for_fork`](super::SmpHeap::lock_for_fork)). The default: no locks.
    fn lock_for_fork(&self) {}

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took (in the parent after `fork`,
    /// and in the child, whose only thread is the one that forked).
    ///
    /// # Safety
    /// The calling thread (or the forked child of it) called `lock_for_fork` and has not
    /// called this since.
    unsafe fn unlock_after_fork(&self) {}

    /// Allocates a huge block for `layout`: the heap's blocks above 256 KiB or aligned above
    /// 4 KiB, and its *direct blocks* (TLSF-route requests served from whole pages when the
    /// arenas cannot grow, docs/design/08-heap.md §"Drain, reclaim, growth and direct blocks"). The default takes whole pages aligned to at least
    /// 4 KiB.
    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_pages(huge_bytes(layout.size()), layout.align().max(PAGE))
    }

    /// Frees a block from [`alloc_huge`](Self::alloc_huge).
    ///
    /// # Safety
    /// `ptr` came from `alloc_huge(layout)` (or `realloc_huge` to `layout.size()`) on this
    /// source and is not used afterwards.
    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the default `alloc_huge` took exactly these pages (caller).
        unsafe { self.free_pages(ptr, huge_bytes(layout.size()), layout.align().max(PAGE)) }
    }

    /// The bytes the caller may use in a block from [`alloc_huge`](Self::alloc_huge)`(layout)`
    /// (the heap's `usable_size` of huge and direct blocks). The default: whole 4 KiB pages, as
    /// the default `alloc_huge` takes them. A source that overrides `alloc_huge` overrides this
    /// too when its blocks are not whole pages.
    fn huge_usable(&self, layout: Layout) -> usize {
        huge_bytes(layout.size())
    }

    /// Resizes a huge block to `new_size` bytes, keeping its alignment and contents: `Some`
    /// with the (possibly moved) block, or `None` when this source cannot, leaving the block
    /// untouched (the heap then allocates, copies and frees). The default keeps the block when
    /// its page count does not change.
    ///
    /// # Safety
    /// As for [`free_huge`](Self::free_huge); `new_size` is non-zero and forms a `Layout` with
    /// `layout.align()`.
    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        (huge_bytes(layout.size()) == huge_bytes(new_size)).then_some(ptr)
    }
}

/// The page granule of the heap's requests.
const PAGE: usize = 4096;

/// Bytes of the default huge block for `size` bytes: whole 4 KiB pages.
#[inline]
pub(crate) const fn huge_bytes(size: usize) -> usize {
    size.next_multiple_of(PAGE)
}

// SAFETY: forwards to `T`, which upholds the contract.
unsafe impl<T: PageSource + ?Sized> PageSource for &T {
    #[inline]
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        (**self).alloc_pages(bytes, align)
    }

    #[inline]
    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).free_pages(ptr, bytes, align) }
    }

    fn drain(&self) {
        (**self).drain();
    }

    fn lock_for_fork(&self) {
        (**self).lock_for_fork();
    }

    unsafe fn unlock_after_fork(&self) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).unlock_after_fork() }
    }

    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        (**self).alloc_huge(layout)
    }

    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).free_huge(ptr, layout) }
    }

    fn huge_usable(&self, layout: Layout) -> usize {
        (**self).huge_usable(layout)
    }

    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { (**self).realloc_huge(ptr, layout, new_size) }
    }
}

/// The kernel's address for a page number's address (direct map: the address is the pointer).
/// Never `None` for the page allocators' addresses: neither ever manages the page at address 0
/// (docs/design/05-pages.md §"BitmapPageAllocator"), so every page they hand out is a non-null pointer and none is lost here.
#[inline]
fn address(addr: usize) -> Option<NonNull<u8>> {
    debug_assert_ne!(addr, 0, "a page allocator handed out address 0");
    NonNull::new(core::ptr::with_exposed_provenance_mut(addr))
}

// SAFETY: the buddy hands out each page once until it is freed; it never touches the memory
// (its metadata is outside the pages), and the kernel gave it memory it may use. It never
// manages the page at address 0, so a region starting there loses that page, not a leak.
unsafe impl<const PAGE_SIZE: usize, const MAX_ORDER: usize, const CPUS: usize> PageSource
    for BuddyPageAllocator<PAGE_SIZE, MAX_ORDER, CPUS>
{
    #[inline]
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        let addr = if pages == 1 && align <= PAGE_SIZE {
            self.alloc_order(0).ok()?
        } else {
            BuddyPageAllocator::alloc_pages(self, pages, align.max(PAGE_SIZE)).ok()?
        };
        address(addr)
    }

    #[inline]
    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        let freed =
            self.try_dealloc_pages(ptr.as_ptr().expose_provenance(), bytes.div_ceil(PAGE_SIZE));
        debug_assert!(freed.is_ok(), "PageSource::free_pages: not an allocation");
    }

    fn drain(&self) {
        self.drain_cpu_caches();
    }
}

// SAFETY: as for the buddy: the bitmap hands out each page once until freed and never touches
// the memory.
unsafe impl<const PAGE_SIZE: usize, const WORDS: usize, const SUMMARY: usize, B> PageSource
    for BitmapPageAllocator<PAGE_SIZE, WORDS, SUMMARY, B>
where
    B: core::borrow::Borrow<crate::bitmap::AtomicBitmap<WORDS, SUMMARY>> + Sync,
{
    #[inline]
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let addr =
            BitmapPageAllocator::alloc_pages(self, bytes.div_ceil(PAGE_SIZE), align.max(PAGE_SIZE))
                .ok()?;
        address(addr)
    }

    #[inline]
    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        let freed =
            self.try_dealloc_pages(ptr.as_ptr().expose_provenance(), bytes.div_ceil(PAGE_SIZE));
        debug_assert!(freed.is_ok(), "PageSource::free_pages: not an allocation");
    }
}

/// Pages from the operating system through `std::alloc::System` (glibc's `aligned_alloc`,
/// which maps large blocks straight from the kernel), for the heap as a std program's
/// `#[global_allocator]`. Counts the bytes it holds.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct SystemPages {
    held: AtomicUsize,
    peak: AtomicUsize,
}

#[cfg(feature = "std")]
impl SystemPages {
    crate::sync::loom_const_fn! {
        /// A source holding nothing yet.
        pub fn new() -> Self {
            Self {
                held: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }
        }
    }

    /// Bytes currently taken from the system.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more held (statistics only: `Relaxed`).
    fn add_held(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }
}

#[cfg(feature = "std")]
impl Default for SystemPages {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `System` returns fresh blocks of the layout asked for, each until it is freed with
// the same layout (which `free_pages` rebuilds from the same `bytes` and `align`).
#[cfg(feature = "std")]
unsafe impl PageSource for SystemPages {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        self.alloc_huge(Layout::from_size_align(bytes, align).ok()?)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: `alloc_pages` built this layout from the same arguments (caller).
        unsafe { self.free_huge(ptr, Layout::from_size_align_unchecked(bytes, align)) }
    }

    /// Huge blocks are the system allocator's own (glibc maps them straight from the kernel).
    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: `layout.size()` is non-zero (the heap routes size 0 elsewhere).
        let ptr = NonNull::new(unsafe { std::alloc::System.alloc(layout) })?;
        self.add_held(layout.size());
        Some(ptr)
    }

    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: allocated by `System` with `layout` (caller).
        unsafe { std::alloc::System.dealloc(ptr.as_ptr(), layout) };
        self.held.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    /// The layout's size: `System` promises no more (a glibc chunk may share its last page).
    fn huge_usable(&self, layout: Layout) -> usize {
        layout.size()
    }

    /// `System.realloc`: glibc moves a mapped block with `mremap`, without copying.
    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: allocated by `System` with `layout`; `new_size` is valid (caller).
        let moved =
            NonNull::new(unsafe { std::alloc::System.realloc(ptr.as_ptr(), layout, new_size) })?;
        self.held.fetch_sub(layout.size(), Ordering::Relaxed);
        self.add_held(new_size);
        Some(moved)
    }
}
