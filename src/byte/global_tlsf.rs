//! rlsf 0.2's C-style [`CAlloc`] trait and its ready-made `#[global_allocator]`s
//! [`GlobalTlsf`] / [`SmallGlobalTlsf`]: a [`FlexTlsf`] over memory mapped from the OS
//! (`mmap`, feature `mmap`, unix only, as rlsf offers them only where it has an OS source),
//! behind our [`SpinLock`].
//!
//! `CAlloc` is also implemented by `SpinLock<FlexTlsf<..>>`, so a `no_std` kernel or firmware
//! gets the same interface over any [`FlexSource`] (a static array, the page layer).

use core::alloc::Layout;
use core::ptr::NonNull;

use super::flex::{FlexSource, FlexTlsf};
use super::tlsf::{BitmapWord, GRANULARITY};
use crate::lock::SpinLock;

/// Allocation in the style of C's `malloc`/`free`/`realloc`/`malloc_usable_size` (rlsf's
/// `CAlloc`): freeing and resizing need no layout.
///
/// # Safety
/// Implementations hand out blocks valid for reads and writes of the layout's size, aligned to
/// its alignment and disjoint from every other live block, until they are freed.
pub unsafe trait CAlloc {
    /// Allocates a block for `layout`; `None` when out of memory (see the implementation's
    /// "Errors").
    fn allocate(&self, layout: Layout) -> Option<NonNull<u8>>;

    /// Frees the block at `ptr`.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate`/`reallocate` on `self` and not freed since. (Detected
    /// where cheap: a pointer not aligned to [`GRANULARITY`] panics in every build, and debug
    /// builds check the block header, panicking on a double free or a foreign pointer.)
    unsafe fn deallocate(&self, ptr: NonNull<u8>);

    /// Resizes the block at `ptr` to `new_layout` (in place when it can, else it moves and the
    /// contents up to the smaller size are kept); `None` leaves the old block untouched.
    ///
    /// # Safety
    /// As for [`deallocate`](CAlloc::deallocate).
    unsafe fn reallocate(&self, ptr: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>>;

    /// The bytes usable at `ptr`, at least the size it was allocated with.
    ///
    /// # Safety
    /// As for [`deallocate`](CAlloc::deallocate).
    unsafe fn allocation_usable_size(&self, ptr: NonNull<u8>) -> usize;
}

/// Panics on a pointer no allocation of ours can have (every payload is granule-aligned).
#[inline]
fn assert_block_aligned(ptr: NonNull<u8>) {
    assert!(
        ptr.as_ptr().addr() % GRANULARITY == 0,
        "CAlloc: {ptr:p} is not a block of this allocator (not granule-aligned)"
    );
}

// SAFETY: `FlexTlsf` hands out disjoint, valid blocks; the lock serialises every call.
unsafe impl<S, FL, SL, const FLLEN: usize, const SLLEN: usize> CAlloc
    for SpinLock<FlexTlsf<S, FL, SL, FLLEN, SLLEN>>
where
    S: FlexSource,
    FL: BitmapWord,
    SL: BitmapWord,
{
    /// [`FlexTlsf::allocate`] under the lock.
    fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.lock().allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>) {
        assert_block_aligned(ptr);
        // SAFETY: caller; our blocks need no alignment to be freed.
        unsafe { self.lock().deallocate(ptr, 1) }
    }

    unsafe fn reallocate(&self, ptr: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
        assert_block_aligned(ptr);
        // SAFETY: caller; `FlexTlsf::reallocate` accepts any new alignment.
        unsafe { self.lock().reallocate(ptr, new_layout) }
    }

    unsafe fn allocation_usable_size(&self, ptr: NonNull<u8>) -> usize {
        assert_block_aligned(ptr);
        // SAFETY: caller.
        unsafe { FlexTlsf::<S, FL, SL, FLLEN, SLLEN>::allocation_usable_size(ptr) }
    }
}

// SAFETY: `FlexTlsf` hands out disjoint, valid blocks aligned as asked; the lock serialises
// every call. (A `no_std` kernel's `#[global_allocator]`: `SpinLock::new(FlexTlsf::new(src))`
// is `const` for a `const` source such as `PageAllocatorSource::new(&PAGES)`.)
unsafe impl<S, FL, SL, const FLLEN: usize, const SLLEN: usize> core::alloc::GlobalAlloc
    for SpinLock<FlexTlsf<S, FL, SL, FLLEN, SLLEN>>
where
    S: FlexSource,
    FL: BitmapWord,
    SL: BitmapWord,
{
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.lock()
            .allocate(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `GlobalAlloc`'s contract: a live, non-null block of ours.
        unsafe {
            self.lock()
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc`'s contract: a live block allocated with `layout`, and
        // `new_size` with its alignment is a valid layout.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            self.lock()
                .reallocate(NonNull::new_unchecked(ptr), new_layout)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr)
        }
    }
}

/// The options of [`GlobalTlsf`] (rlsf's `GlobalTlsfOptions`, the same two constants).
pub trait GlobalTlsfOptions {
    /// Whether `GlobalAlloc::realloc` resizes in place when it can (otherwise it always
    /// allocates, copies and frees). Default `true`.
    const ENABLE_REALLOCATION: bool = true;

    /// Whether the OS source tries to map new memory right behind the last mapping so that
    /// the pool grows in place (fewer, larger pools). Default `true`.
    const COALESCE_POOLS: bool = true;
}

impl GlobalTlsfOptions for () {}

/// [`GlobalTlsfOptions`] with both options off (rlsf's choice for code size).
#[derive(Debug, Clone, Copy, Default)]
pub struct SmallGlobalTlsfOptions;

impl GlobalTlsfOptions for SmallGlobalTlsfOptions {
    const ENABLE_REALLOCATION: bool = false;
    const COALESCE_POOLS: bool = false;
}

#[cfg(all(feature = "mmap", unix))]
pub use self::os::{GlobalTlsf, MmapSource, SmallGlobalTlsf};

#[cfg(all(feature = "mmap", unix))]
mod os {
    use core::alloc::{GlobalAlloc, Layout};
    use core::fmt;
    use core::marker::PhantomData;
    use core::ptr::{self, NonNull};

    use super::{CAlloc, GlobalTlsfOptions, SmallGlobalTlsfOptions, assert_block_aligned};
    use crate::byte::flex::{FlexSource, FlexTlsf};
    use crate::byte::tlsf::{CheckError, PoolStats};
    use crate::lock::SpinLock;
    use crate::sync::loom_const_fn;

    /// The OS mapping granule of [`MmapSource`]: every mapping is a multiple of 64 KiB, so its
    /// end is page-aligned for any page size up to 64 KiB.
    const CHUNK: usize = 64 * 1024;

    /// Anonymous private `mmap` memory as a [`FlexSource`]: mappings of whole 64 KiB chunks;
    /// with `Options::COALESCE_POOLS`, growth first asks for the chunks right behind the
    /// newest mapping (`MAP_FIXED_NOREPLACE` on Linux, a plain hint elsewhere, refused unless
    /// the kernel placed it there), so the pool grows in place. `dealloc` unmaps.
    pub struct MmapSource<Options = ()>(PhantomData<fn() -> Options>);

    impl<Options> MmapSource<Options> {
        /// The source (maps nothing yet).
        pub const fn new() -> Self {
            Self(PhantomData)
        }
    }

    impl<Options> Default for MmapSource<Options> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<Options> fmt::Debug for MmapSource<Options> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MmapSource")
        }
    }

    /// Maps `len` bytes of fresh memory at `hint` (null: anywhere; else exactly there or
    /// nothing).
    fn map(hint: *mut u8, len: usize) -> Option<NonNull<u8>> {
        #[cfg(target_os = "linux")]
        let fixed = if hint.is_null() {
            0
        } else {
            libc::MAP_FIXED_NOREPLACE
        };
        #[cfg(not(target_os = "linux"))]
        let fixed = 0;
        // SAFETY: an anonymous private mapping touches no existing memory (no `MAP_FIXED`:
        // `MAP_FIXED_NOREPLACE` fails rather than replace a mapping).
        let got = unsafe {
            libc::mmap(
                hint.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON | fixed,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            return None;
        }
        let got = got.cast::<u8>();
        if !hint.is_null() && got != hint {
            // SAFETY: the mapping just made, elsewhere than asked: nobody uses it.
            unsafe { libc::munmap(got.cast(), len) };
            return None;
        }
        NonNull::new(got)
    }

    // SAFETY: blocks are fresh anonymous mappings (page-aligned, at least 4096), ours until
    // unmapped; an in-place growth maps exactly the range behind the block.
    unsafe impl<Options: GlobalTlsfOptions> FlexSource for MmapSource<Options> {
        unsafe fn alloc(&mut self, min_size: usize) -> Option<NonNull<[u8]>> {
            let len = min_size.checked_next_multiple_of(CHUNK)?;
            let ptr = map(ptr::null_mut(), len)?;
            Some(NonNull::slice_from_raw_parts(ptr, len))
        }

        unsafe fn realloc_inplace_grow(
            &mut self,
            block: NonNull<[u8]>,
            min_new_len: usize,
        ) -> Option<usize> {
            let extra = (min_new_len - block.len()).checked_next_multiple_of(CHUNK)?;
            let end = block.cast::<u8>().as_ptr().wrapping_add(block.len());
            map(end, extra)?;
            Some(block.len() + extra)
        }

        unsafe fn dealloc(&mut self, block: NonNull<[u8]>) {
            // SAFETY: our mappings (caller), possibly several adjacent ones: `munmap` takes a
            // range across mappings.
            unsafe { libc::munmap(block.cast::<u8>().as_ptr().cast(), block.len()) };
        }

        fn supports_dealloc(&self) -> bool {
            true
        }

        fn supports_realloc_inplace_grow(&self) -> bool {
            Options::COALESCE_POOLS
        }

        fn min_align(&self) -> usize {
            4096
        }
    }

    type Inner<Options> = FlexTlsf<
        MmapSource<Options>,
        usize,
        usize,
        { usize::BITS as usize },
        { usize::BITS as usize },
    >;

    /// rlsf's `GlobalTlsf`: a [`FlexTlsf`] over [`MmapSource`] behind a [`SpinLock`], ready
    /// to be the `#[global_allocator]` (unix, feature `mmap`; a `no_std` target builds its own
    /// from `SpinLock<FlexTlsf<..>>` and a [`FlexSource`]). Implements `GlobalAlloc` and
    /// [`CAlloc`].
    ///
    /// ```
    /// use smpalloc::byte::GlobalTlsf;
    /// static A: GlobalTlsf = GlobalTlsf::new(); // `#[global_allocator]` in a binary
    /// # use core::alloc::{GlobalAlloc, Layout};
    /// # let l = Layout::new::<u64>();
    /// // SAFETY: `l` is not zero-sized; `p` is freed once, with the layout it was allocated with.
    /// # unsafe { let p = A.alloc(l); assert!(!p.is_null()); A.dealloc(p, l) };
    /// ```
    ///
    /// Same as rlsf 0.2: `new` (`const`), `Default`, the `Options` parameter, `GlobalAlloc`
    /// and `CAlloc`. Differs: the lock is our `SpinLock` (bounded spinning, then yielding; the
    /// kernel's interrupt hooks when registered) instead of a pthread mutex; memory comes in
    /// 64 KiB chunks (rlsf: pages); mappings are unmapped when a non-`static` `GlobalTlsf` is
    /// dropped (rlsf keeps them); [`check`](GlobalTlsf::check) is ours. Like rlsf it takes no
    /// fork handler: a child forked while another thread held the lock deadlocks on its first
    /// allocation.
    ///
    /// # Errors
    /// Allocation returns null (`GlobalAlloc`) or `None` (`CAlloc`), changing nothing, when the
    /// OS refuses memory or the layout is beyond [`FlexTlsf`]'s limits (its "Errors").
    pub struct GlobalTlsf<Options: GlobalTlsfOptions = ()> {
        inner: SpinLock<Inner<Options>>,
    }

    /// [`GlobalTlsf`] with [`SmallGlobalTlsfOptions`] (rlsf's `SmallGlobalTlsf`).
    pub type SmallGlobalTlsf = GlobalTlsf<SmallGlobalTlsfOptions>;

    impl<Options: GlobalTlsfOptions> GlobalTlsf<Options> {
        loom_const_fn! {
            /// An empty allocator (maps nothing until the first allocation).
            pub fn new() -> Self {
                Self { inner: SpinLock::new(FlexTlsf::new(MmapSource::new())) }
            }
        }

        /// [`FlexTlsf::check`] under the lock: the free lists, every pool, the totals.
        pub fn check(&self) -> Result<PoolStats, CheckError> {
            self.inner.lock().check()
        }
    }

    impl<Options: GlobalTlsfOptions> Default for GlobalTlsf<Options> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<Options: GlobalTlsfOptions> fmt::Debug for GlobalTlsf<Options> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("GlobalTlsf").finish_non_exhaustive()
        }
    }

    // SAFETY: `FlexTlsf` hands out disjoint, valid blocks aligned as asked; the lock
    // serialises every call; nothing here allocates through the global allocator.
    unsafe impl<Options: GlobalTlsfOptions> GlobalAlloc for GlobalTlsf<Options> {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.inner
                .lock()
                .allocate(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `GlobalAlloc`'s contract: `ptr` is a live block of ours (non-null).
            unsafe {
                self.inner
                    .lock()
                    .deallocate(NonNull::new_unchecked(ptr), layout.align());
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `GlobalAlloc`'s contract: `ptr` is a live block of ours allocated with
            // `layout`, and `new_size` with `layout.align()` is a valid layout.
            unsafe {
                let ptr = NonNull::new_unchecked(ptr);
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let mut inner = self.inner.lock();
                if Options::ENABLE_REALLOCATION {
                    return inner
                        .reallocate(ptr, new_layout)
                        .map_or(ptr::null_mut(), NonNull::as_ptr);
                }
                let Some(new) = inner.allocate(new_layout) else {
                    return ptr::null_mut();
                };
                ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
                inner.deallocate(ptr, layout.align());
                new.as_ptr()
            }
        }
    }

    // SAFETY: as for `GlobalAlloc` above.
    unsafe impl<Options: GlobalTlsfOptions> CAlloc for GlobalTlsf<Options> {
        fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
            self.inner.allocate(layout)
        }

        unsafe fn deallocate(&self, ptr: NonNull<u8>) {
            // SAFETY: caller.
            unsafe { self.inner.deallocate(ptr) }
        }

        unsafe fn reallocate(&self, ptr: NonNull<u8>, new_layout: Layout) -> Option<NonNull<u8>> {
            // SAFETY: caller.
            unsafe { self.inner.reallocate(ptr, new_layout) }
        }

        unsafe fn allocation_usable_size(&self, ptr: NonNull<u8>) -> usize {
            assert_block_aligned(ptr);
            // SAFETY: caller.
            unsafe { Inner::<Options>::allocation_usable_size(ptr) }
        }
    }
}
