//! smpalloc's SMP heap as the C library's allocator: `libsmpalloc.so` (for `LD_PRELOAD` or
//! `-lsmpalloc`) and `libsmpalloc.a`, over one static [`SmpHeap`] fed by `mmap`.
//!
//! Exports glibc's replacement-malloc set (`malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size`, `malloc_trim`) and C++'s `operator new`/`delete` (plain, array,
//! sized, aligned, nothrow) by their Itanium names, with glibc 2.36's C semantics (see each
//! function). No CPU id is looked up per operation: every thread gets its own cache of the
//! heap (docs/design/08-heap.md §"Thread caches (std)"), found with one thread-local load.
//!
//! Never allocating through itself where it must not (docs/design/08-heap.md §"Fork"):
//! - Rust code in this library allocates from the same static heap (`#[global_allocator]`),
//!   never through the exported `malloc`.
//! - A panic aborts without allocating: a hook installed by a constructor writes a fixed
//!   message with `write(2)` and calls `abort`.
//! - A thread's first allocation binds its cache; glibc's `pthread_setspecific` may `calloc`
//!   meanwhile, which the heap serves from its CPU slots instead of binding again (R1).
//! - Its thread-locals are the library's static TLS: loading it with `dlopen` is unsupported
//!   (a malloc must be in place before the first allocation anyway).
//!
//! Fork: `pthread_atfork` handlers take every lock of the heap before `fork` and release them
//! after, in the parent and in the child ([`SmpHeap::lock_for_fork`]).

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};

use smpalloc::heap::{MmapPages, SmpHeap};

pub mod cxx;

/// The heap behind every export, and Rust's global allocator in this library.
#[global_allocator]
static HEAP: SmpHeap<MmapPages> = SmpHeap::new(MmapPages::new());

/// glibc's `MALLOC_ALIGNMENT` on 64-bit targets: every block is aligned at least to this.
const MIN_ALIGN: usize = 16;

/// The page size (`valloc`, `pvalloc`).
const PAGE: usize = 4096;

/// Sets the calling thread's `errno`.
#[inline]
fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's `errno`, valid for writes.
    unsafe { *libc::__errno_location() = value };
}

/// The calling thread's `errno`.
#[inline]
fn errno() -> c_int {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// A block of `size` bytes (at least 1, so that every pointer is unique and freeable) aligned
/// to `align` (at least [`MIN_ALIGN`]); null with `errno = ENOMEM` when the heap refuses or
/// the size overflows a layout. `align` is a power of two.
#[inline(always)]
fn alloc(size: usize, align: usize) -> *mut c_void {
    let block = if align <= MIN_ALIGN {
        HEAP.allocate_16(size)
    } else {
        alloc_aligned(size, align)
    };
    match block {
        Some(p) => p.as_ptr().cast(),
        None => out_of_memory(),
    }
}

/// [`alloc`] for alignments above [`MIN_ALIGN`], out of line.
#[inline(never)]
fn alloc_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    let layout = Layout::from_size_align(size.max(1), align).ok()?;
    HEAP.allocate(layout)
}

/// Sets `errno = ENOMEM` and returns null.
#[cold]
#[inline(never)]
fn out_of_memory() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// Frees `ptr` (null: nothing). Pointers the heap does not know are ignored (release builds).
///
/// # Safety
/// `ptr` is null or a live block of this heap.
#[inline(always)]
unsafe fn release(ptr: *mut c_void) {
    // Null and the rest of page 0 (which `SmpHeap::free` ignores too) with one compare.
    if ptr.addr() < PAGE {
        return;
    }
    // SAFETY: not null (above); caller.
    unsafe { HEAP.free(NonNull::new_unchecked(ptr.cast::<u8>())) };
}

/// glibc 2.36's `memalign` alignment: at most `MIN_ALIGN` is plain malloc; above `SIZE_MAX / 2
/// + 1` is `EINVAL`; anything else is rounded up to a power of two.
fn memalign_align(align: usize) -> Option<usize> {
    if align <= MIN_ALIGN {
        return Some(MIN_ALIGN);
    }
    align.checked_next_power_of_two()
}

/// `malloc(size)`: `size` bytes aligned to 16; `malloc(0)` is a unique pointer (one byte
/// usable at least). Null with `errno = ENOMEM` when out of memory.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(size, MIN_ALIGN)
}

/// `free(ptr)`: null does nothing; any block of this library (from any export) is freed.
/// A pointer it did not allocate is ignored (its memory untouched).
///
/// # Safety
/// `ptr` is null or a live block of this library, not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `calloc(n, size)`: `n * size` zeroed bytes; null with `errno = ENOMEM` when the product
/// overflows or out of memory.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    let p = alloc(bytes, MIN_ALIGN);
    if !p.is_null() {
        // SAFETY: a fresh block of at least `bytes` bytes.
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
    }
    p
}

/// `realloc(ptr, size)`: `realloc(NULL, size)` is `malloc(size)`; `realloc(ptr, 0)` frees
/// `ptr` and returns null (glibc's behaviour, `errno` untouched); otherwise the block resized
/// (in place when it can), its contents kept up to the smaller size. Null with
/// `errno = ENOMEM` (the old block untouched) when out of memory or when `ptr` is no block of
/// this library.
///
/// # Safety
/// `ptr` is null or a live block of this library, not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(old) = NonNull::new(ptr.cast::<u8>()) else {
        return alloc(size, MIN_ALIGN);
    };
    if size == 0 {
        // SAFETY: caller.
        unsafe { HEAP.free(old) };
        return ptr::null_mut();
    }
    // SAFETY: caller: a live block of this heap.
    match unsafe { HEAP.reallocate_unsized(old, size, MIN_ALIGN) } {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`, or null with `errno = ENOMEM`
/// (the block untouched) when the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: caller.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(out, align, size)`: 0 and `*out` set, or `EINVAL` when `align` is not a
/// power of two multiple of `sizeof(void *)`, or `ENOMEM`; on error `*out` and `errno` are
/// untouched. Alignments above a page are honoured.
///
/// # Safety
/// `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = alloc(size, align);
    if p.is_null() {
        set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: caller.
    unsafe { out.write(p) };
    0
}

/// `memalign(align, size)` (glibc 2.36): `align` up to 16 is `malloc`; otherwise rounded up
/// to a power of two; null with `errno = EINVAL` when it cannot be (above `SIZE_MAX / 2 + 1`),
/// `ENOMEM` when out of memory.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match memalign_align(align) {
        Some(align) => alloc(size, align),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `aligned_alloc(align, size)`: glibc 2.36's, which is [`memalign`] (any size; an alignment
/// not a power of two is rounded up).
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    unsafe { memalign(align, size) }
}

/// `valloc(size)`: `memalign(4096, size)`.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc(size, PAGE)
}

/// `pvalloc(size)`: `size` rounded up to whole pages (0: one page), page-aligned; null with
/// `errno = ENOMEM` when the rounding overflows.
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE) {
        Some(bytes) => alloc(bytes, PAGE),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(ptr)`: the bytes usable at `ptr` (at least what was asked), 0 for null
/// or a pointer this library does not know.
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    match NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: caller.
        Some(p) => unsafe { HEAP.usable_size(p) }.unwrap_or(0),
        None => 0,
    }
}

/// `malloc_trim(pad)`: hands the calling thread's cache, exited threads' caches, empty slabs
/// and free TLSF pools back to the system; 1 when that released memory, else 0 (`pad` is
/// ignored).
///
/// # Safety
/// Callable from C at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let held = || {
        let s = HEAP.stats();
        s.slab_bytes + s.tlsf_pool_bytes + HEAP.map_bytes()
    };
    let before = held();
    HEAP.drain_cpu_caches();
    HEAP.reclaim();
    c_int::from(held() < before)
}

// ----- initialisation: fork handlers and the panic hook -------------------------------------

/// `pthread_atfork` prepare: every heap lock, taken in the order docs/design/08-heap.md §"Fork" gives.
extern "C" fn fork_prepare() {
    HEAP.lock_for_fork();
}

/// `pthread_atfork` parent and child: releases them (in the child, the forking thread is the
/// only one, and it took them).
extern "C" fn fork_release() {
    // SAFETY: `fork_prepare` ran on this thread (or on the thread this child was forked from)
    // before `fork`; glibc calls exactly one of parent/child after it.
    unsafe { HEAP.unlock_after_fork() };
}

/// Writes `message` to stderr and aborts, allocating nothing.
fn die(message: &[u8]) -> ! {
    // SAFETY: `message` is valid for reads of its length; `abort` never returns.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::abort()
    }
}

/// The library's constructor (`.init_array`): registers the fork handlers and a panic hook
/// that aborts without allocating (a panic must never call back into this malloc).
extern "C" fn init() {
    // A zero-sized closure: `Box` of it allocates nothing.
    std::panic::set_hook(Box::new(|_| {
        die(b"libsmpalloc: internal panic, aborting\n")
    }));
    // SAFETY: the handlers are `extern "C"` functions that live as long as the process (the
    // library is never unloaded: dlopen is unsupported).
    if unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release)) }
        != 0
    {
        die(b"libsmpalloc: pthread_atfork failed\n");
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
