//! C++'s `operator new` and `operator delete` by their Itanium-mangled names (64-bit: `m` is
//! `std::size_t`). Throwing `new` cannot throw from here: on out of memory (or an aligned
//! `new` whose alignment is not a power of two) it writes a message and aborts (documented in
//! README, "Use it from C"); the `nothrow` forms return null. Every `delete` frees through the
//! page map (its size and alignment are not needed, and a pointer this library did not
//! allocate is ignored rather than trusted).

use core::ffi::c_void;

use super::{alloc, die, release};

/// `new`: a block or abort.
#[inline]
fn new_or_abort(size: usize, align: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        die(b"libsmpalloc: operator new: alignment not a power of two\n");
    }
    let p = alloc(size, align);
    if p.is_null() {
        die(b"libsmpalloc: operator new: out of memory\n");
    }
    p
}

/// `new(std::nothrow)`: a block or null.
#[inline]
fn new_or_null(size: usize, align: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return core::ptr::null_mut();
    }
    alloc(size, align)
}

/// `operator new(size_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _Znwm(size: usize) -> *mut c_void {
    new_or_abort(size, 1)
}

/// `operator new[](size_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _Znam(size: usize) -> *mut c_void {
    new_or_abort(size, 1)
}

/// `operator new(size_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, _: *const c_void) -> *mut c_void {
    new_or_null(size, 1)
}

/// `operator new[](size_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnamRKSt9nothrow_t(size: usize, _: *const c_void) -> *mut c_void {
    new_or_null(size, 1)
}

/// `operator new(size_t, std::align_val_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_or_abort(size, align)
}

/// `operator new[](size_t, std::align_val_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_or_abort(size, align)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _: *const c_void,
) -> *mut c_void {
    new_or_null(size, align)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _: *const c_void,
) -> *mut c_void {
    new_or_null(size, align)
}

/// `operator delete(void*)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPv(ptr: *mut c_void) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete(void*, size_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvm(ptr: *mut c_void, _size: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete(void*, const std::nothrow_t&)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvRKSt9nothrow_t(ptr: *mut c_void, _: *const c_void) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete(void*, std::align_val_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvSt11align_val_t(ptr: *mut c_void, _align: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete(void*, size_t, std::align_val_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvmSt11align_val_t(ptr: *mut c_void, _size: usize, _align: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvSt11align_val_tRKSt9nothrow_t(
    ptr: *mut c_void,
    _align: usize,
    _: *const c_void,
) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPv(ptr: *mut c_void) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*, size_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvm(ptr: *mut c_void, _size: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*, const std::nothrow_t&)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvRKSt9nothrow_t(ptr: *mut c_void, _: *const c_void) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*, std::align_val_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvSt11align_val_t(ptr: *mut c_void, _align: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*, size_t, std::align_val_t)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvmSt11align_val_t(ptr: *mut c_void, _size: usize, _align: usize) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}

/// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`: frees `ptr` (null: nothing).
///
/// # Safety
/// `ptr` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvSt11align_val_tRKSt9nothrow_t(
    ptr: *mut c_void,
    _align: usize,
    _: *const c_void,
) {
    // SAFETY: caller.
    unsafe { release(ptr) }
}
