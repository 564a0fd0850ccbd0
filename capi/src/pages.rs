//! TEMPORARY, DELETE AT MERGE: a minimal `mmap` page source, until the library's
//! `smpalloc::heap::MmapPages` (feature `mmap`, with its page cache and fork locks) is merged;
//! the lead replaces `TempMmapPages` with `MmapPages` in `lib.rs` and deletes this file.
//! Never `SystemPages` / `std::alloc::System`: that is this malloc again.

use core::ptr::{self, NonNull};

use smpalloc::heap::PageSource;

/// The page size the heap asks in multiples of.
const PAGE: usize = 4096;

/// Pages straight from `mmap` (over-map by the alignment, then trim), back with `munmap`.
pub(crate) struct TempMmapPages;

// SAFETY: each block is a fresh private anonymous mapping of `bytes` bytes aligned to `align`,
// used by no one else until `free_pages` unmaps exactly that range.
unsafe impl PageSource for TempMmapPages {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let extra = align.max(PAGE) - PAGE;
        let len = bytes.checked_add(extra)?;
        // SAFETY: a new anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base.cast::<u8>();
        let head = base.addr().next_multiple_of(align) - base.addr();
        let tail = extra - head;
        // SAFETY: both ranges are page-aligned parts of the mapping above that the block
        // does not use (`head + bytes + tail == len`).
        unsafe {
            if head != 0 {
                libc::munmap(base.cast(), head);
            }
            if tail != 0 {
                libc::munmap(base.add(head + bytes).cast(), tail);
            }
        }
        // SAFETY: `head < len`, inside the mapping.
        NonNull::new(unsafe { base.add(head) })
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        // SAFETY: caller: `alloc_pages(bytes, _)` mapped exactly these pages.
        unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) };
    }
}
