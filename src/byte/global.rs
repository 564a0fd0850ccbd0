//! [`TlsfHeap`] as a `GlobalAlloc` and as an `Allocator` (`allocator-api2` on stable, `core`'s
//! with the `nightly` feature).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use super::TlsfHeap;

// SAFETY: `allocate` returns blocks that are exclusively owned until freed, aligned and sized as
// the layout asks (the `Tlsf` contract); `deallocate`/`reallocate` receive only pointers this
// heap returned (the `GlobalAlloc` caller contract); nothing unwinds.
unsafe impl<const ARENAS: usize> GlobalAlloc for TlsfHeap<ARENAS> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: the caller passes a block of this heap with its layout.
            unsafe { self.deallocate(ptr, layout) };
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(ptr) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        // SAFETY: the caller passes a block of this heap with its layout.
        unsafe { self.reallocate(ptr, layout, new_size) }.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

/// `Allocator` for [`TlsfHeap`], written once for both trait paths.
#[allow(unused_macros, reason = "used only when an Allocator feature is on")]
macro_rules! allocator_impl {
    ($alloc:path, $error:path) => {
        // SAFETY: blocks stay valid until deallocated (or the heap is dropped, which the
        // borrow of `&self` prevents while a collection uses it); `grow`/`shrink` keep the
        // contents and alignment; zero-size layouts get dangling aligned pointers that are
        // never dereferenced or freed into an arena.
        unsafe impl<const ARENAS: usize> $alloc for TlsfHeap<ARENAS> {
            #[inline]
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                let ptr = TlsfHeap::allocate(self, layout).ok_or($error)?;
                Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: the `Allocator` caller contract.
                unsafe { TlsfHeap::deallocate(self, ptr, layout) }
            }

            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: the `Allocator` caller contract.
                unsafe { resize(self, ptr, old, new) }.ok_or($error)
            }

            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: the `Allocator` caller contract.
                unsafe { resize(self, ptr, old, new) }.ok_or($error)
            }
        }
    };
}

/// `grow`/`shrink`: in place when the alignment is unchanged, else allocate, copy, free.
///
/// # Safety
/// `ptr` is a live block of `heap` allocated with `old`.
#[allow(dead_code, reason = "used only when an Allocator feature is on")]
unsafe fn resize<const ARENAS: usize>(
    heap: &TlsfHeap<ARENAS>,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Option<NonNull<[u8]>> {
    let moved = if old.align() == new.align() {
        // SAFETY: caller.
        unsafe { heap.reallocate(ptr, old, new.size())? }
    } else {
        let moved = heap.allocate(new)?;
        // SAFETY: caller; both blocks are live and hold at least the copied length.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), old.size().min(new.size()));
            heap.deallocate(ptr, old);
        }
        moved
    };
    Some(NonNull::slice_from_raw_parts(moved, new.size()))
}

#[cfg(feature = "allocator-api2")]
allocator_impl!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

#[cfg(feature = "nightly")]
allocator_impl!(core::alloc::Allocator, core::alloc::AllocError);
