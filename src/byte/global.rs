//! `GlobalAlloc` and `Allocator` (`allocator-api2` on stable, `core`'s with the `nightly`
//! feature) for the heaps, written once: [`TlsfHeap`] here, the SMP heap in `heap`. Each heap
//! has inherent `allocate(Layout) -> Option<NonNull<u8>>`, `unsafe deallocate(ptr, layout)` and
//! `unsafe reallocate(ptr, layout, new_size) -> Option<NonNull<u8>>`; the traits forward to them.

use super::TlsfHeap;

/// Implements `GlobalAlloc` and the `Allocator` traits for a heap type with the inherent
/// `allocate`/`deallocate`/`reallocate` methods: `heap_traits!([generics] Type)`.
macro_rules! heap_traits {
    ([$($generics:tt)*] $heap:ty) => {
        // SAFETY: `allocate` returns blocks that are exclusively owned until freed, aligned and
        // sized as the layout asks; `deallocate`/`reallocate` receive only pointers this heap
        // returned (the `GlobalAlloc` caller contract); nothing unwinds.
        unsafe impl<$($generics)*> core::alloc::GlobalAlloc for $heap {
            #[inline]
            unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
                self.allocate(layout)
                    .map_or(core::ptr::null_mut(), core::ptr::NonNull::as_ptr)
            }

            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
                if let Some(ptr) = core::ptr::NonNull::new(ptr) {
                    // SAFETY: the caller passes a block of this heap with its layout.
                    unsafe { self.deallocate(ptr, layout) };
                }
            }

            #[inline]
            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                let Some(ptr) = core::ptr::NonNull::new(ptr) else {
                    return core::ptr::null_mut();
                };
                // SAFETY: the caller passes a block of this heap with its layout.
                unsafe { self.reallocate(ptr, layout, new_size) }
                    .map_or(core::ptr::null_mut(), core::ptr::NonNull::as_ptr)
            }
        }

        #[cfg(feature = "allocator-api2")]
        $crate::byte::global::allocator_impl!(
            [$($generics)*] $heap,
            allocator_api2::alloc::Allocator,
            allocator_api2::alloc::AllocError
        );

        #[cfg(feature = "nightly")]
        $crate::byte::global::allocator_impl!(
            [$($generics)*] $heap,
            core::alloc::Allocator,
            core::alloc::AllocError
        );
    };
}

/// One `Allocator` implementation (for one trait path).
#[allow(unused_macros, reason = "used only when an Allocator feature is on")]
macro_rules! allocator_impl {
    ([$($generics:tt)*] $heap:ty, $alloc:path, $error:path) => {
        // SAFETY: blocks stay valid until deallocated (or the heap is dropped, which the borrow
        // of `&self` prevents while a collection uses it); `grow`/`shrink` keep the contents and
        // alignment; zero-size layouts get dangling aligned pointers that are never
        // dereferenced or freed into the heap.
        unsafe impl<$($generics)*> $alloc for $heap {
            #[inline]
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $error> {
                let ptr = <$heap>::allocate(self, layout).ok_or($error)?;
                Ok(core::ptr::NonNull::slice_from_raw_parts(ptr, layout.size()))
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                // SAFETY: the `Allocator` caller contract.
                unsafe { <$heap>::deallocate(self, ptr, layout) }
            }

            unsafe fn grow(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $error> {
                // SAFETY: the `Allocator` caller contract.
                unsafe { $crate::byte::global::resize!(self, $heap, ptr, old, new) }.ok_or($error)
            }

            unsafe fn shrink(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $error> {
                // SAFETY: the `Allocator` caller contract.
                unsafe { $crate::byte::global::resize!(self, $heap, ptr, old, new) }.ok_or($error)
            }
        }
    };
}

/// `grow`/`shrink`: `reallocate` when the alignment is unchanged, else allocate, copy, free.
/// An `unsafe` expression: `ptr` must be a live block of the heap allocated with `old`.
#[allow(unused_macros, reason = "used only when an Allocator feature is on")]
macro_rules! resize {
    ($self:ident, $heap:ty, $ptr:ident, $old:ident, $new:ident) => {
        (|| {
            let moved = if $old.align() == $new.align() {
                <$heap>::reallocate($self, $ptr, $old, $new.size())?
            } else {
                let moved = <$heap>::allocate($self, $new)?;
                core::ptr::copy_nonoverlapping(
                    $ptr.as_ptr(),
                    moved.as_ptr(),
                    $old.size().min($new.size()),
                );
                <$heap>::deallocate($self, $ptr, $old);
                moved
            };
            Some(core::ptr::NonNull::slice_from_raw_parts(moved, $new.size()))
        })()
    };
}

#[allow(
    unused_imports,
    reason = "used by the SMP heap only with the `heap` feature"
)]
pub(crate) use heap_traits;
#[allow(unused_imports, reason = "used only when an Allocator feature is on")]
pub(crate) use {allocator_impl, resize};

heap_traits!([const ARENAS: usize] TlsfHeap<ARENAS>);
