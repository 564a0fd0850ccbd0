//! One size class's slabs: `SlabCache`, single-threaded (`&mut self`). The SMP heap keeps
//! one per class behind the class lock; [`SlabByteAllocator`](super::SlabByteAllocator) owns
//! them directly.
//!
//! A slab is `slab_bytes(class)` bytes aligned to its own size, so the slab of an object is
//! found by masking its address. The slab's last `HEADER_BYTES` hold its `Header`: a magic word
//! (the slab's address xor a constant, so a stray pointer is recognised), the class, the list it
//! is on, how many objects were ever carved (objects are carved lazily, so a fresh slab costs
//! no writes), how many are in use, an intrusive free list of returned objects, and a bitmap of
//! the objects in use (a double free is refused in O(1)).
//!
//! Slabs are on one of three lists: *partial* (some objects free, some in use), *empty* (none
//! in use; kept up to `keep_empty` as hysteresis, so a class that empties and refills does
//! not go back to the page layer each time) and *full* (on no list; found again through the
//! header when one of its objects is freed).

use core::fmt;
use core::ptr::{self, NonNull};

use super::class::{CLASSES, HEADER_BYTES, class_size, exact_index, objects_per_slab, slab_bytes};

const MAGIC: usize = 0x51ab_c0de_5eed_f00d_u64 as usize;

/// Where a slab is.
const PARTIAL: u8 = 1;
const EMPTY: u8 = 2;
const FULL: u8 = 3;

/// The header at the end of every slab.
#[repr(C)]
struct Header {
    /// `MAGIC ^ slab address`.
    magic: usize,
    /// Returned objects, linked through their first word.
    free: *mut u8,
    next: *mut Header,
    prev: *mut Header,
    /// Objects carved from the slab so far (lazily, lowest first).
    carved: u16,
    /// Objects handed out.
    inuse: u16,
    class: u8,
    list: u8,
    /// Bit `i`: object `i` is handed out.
    used: [u64; 8],
}

const _: () = assert!(size_of::<Header>() <= HEADER_BYTES);
const _: () = assert!(HEADER_BYTES % align_of::<Header>() == 0);

/// Why `SlabCache::free` refused a pointer. Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlabError {
    /// The pointer is not in a slab of this class (bad magic or class), or not at an object
    /// boundary, or past the objects carved so far.
    Foreign,
    /// The object is not in use: a double free.
    NotAllocated,
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlabError::Foreign => "pointer is not an object of this slab cache",
            SlabError::NotAllocated => "object is not allocated (double free)",
        })
    }
}

/// A violated invariant found by `SlabCache::check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckError(pub &'static str);

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for CheckError {}

/// Counts of one slab cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabCounts {
    /// Slabs held (partial, empty and full).
    pub slabs: usize,
    /// Empty slabs kept for reuse.
    pub empty_slabs: usize,
    /// Objects handed out of the slabs (to callers or magazines).
    pub inuse: usize,
}

/// The slabs of one size class.
pub(crate) struct SlabCache {
    class: u8,
    partial: *mut Header,
    empty: *mut Header,
    counts: SlabCounts,
    /// Empty slabs kept before one goes back to the page layer.
    keep_empty: usize,
}

// SAFETY: the cache owns its slabs; the raw pointers are only followed by its owner (`&mut`).
unsafe impl Send for SlabCache {}

impl SlabCache {
    /// An empty cache for `class` that keeps up to `keep_empty` empty slabs.
    pub(crate) const fn new(class: usize, keep_empty: usize) -> Self {
        assert!(class < CLASSES);
        Self {
            class: class as u8,
            partial: ptr::null_mut(),
            empty: ptr::null_mut(),
            counts: SlabCounts {
                slabs: 0,
                empty_slabs: 0,
                inuse: 0,
            },
            keep_empty,
        }
    }

    /// A cache whose class is not set yet: all zeros, so a heap of them lies in `.bss`.
    /// [`configure`](Self::configure) sets the class before any other call.
    #[cfg_attr(not(feature = "heap"), allow(dead_code))] // the SMP heap's depot
    pub(crate) const fn unconfigured() -> Self {
        Self::new(0, 0)
    }

    /// Sets the class and the empty-slab hysteresis of a cache that holds no slab (an
    /// [`unconfigured`](Self::unconfigured) one); a no-op when they are already these.
    #[cfg_attr(not(feature = "heap"), allow(dead_code))]
    #[inline]
    pub(crate) fn configure(&mut self, class: usize, keep_empty: usize) {
        if self.class as usize != class || self.keep_empty != keep_empty {
            assert!(class < CLASSES && self.counts.slabs == 0);
            self.class = class as u8;
            self.keep_empty = keep_empty;
        }
    }

    /// The class of this cache.
    pub(crate) const fn class(&self) -> usize {
        self.class as usize
    }

    /// Current counts.
    pub(crate) const fn counts(&self) -> SlabCounts {
        self.counts
    }

    fn size(&self) -> usize {
        class_size(self.class as usize)
    }

    fn slab_bytes(&self) -> usize {
        slab_bytes(self.class as usize)
    }

    fn per_slab(&self) -> usize {
        objects_per_slab(self.class as usize)
    }

    /// The header of the slab starting at `slab`.
    fn header_of(&self, slab: *mut u8) -> *mut Header {
        slab.wrapping_add(self.slab_bytes() - HEADER_BYTES).cast()
    }

    /// The slab start of header `h`.
    fn slab_of(&self, h: *mut Header) -> *mut u8 {
        h.cast::<u8>()
            .wrapping_sub(self.slab_bytes() - HEADER_BYTES)
    }

    /// Allocates one object. `get(bytes, align)` is called for a new slab when no slab has a
    /// free object; `None` from it gives `None` here, with nothing changed.
    ///
    /// # Safety
    /// A pointer `get` returns is valid for reads and writes of `bytes` bytes, aligned to
    /// `align`, and owned by this cache until handed back through `release`/`take_empty`.
    pub(crate) unsafe fn alloc(
        &mut self,
        get: impl FnOnce(usize, usize) -> Option<NonNull<u8>>,
    ) -> Option<NonNull<u8>> {
        let mut h = self.partial;
        if h.is_null() {
            h = self.empty;
            if h.is_null() {
                let bytes = self.slab_bytes();
                let slab = get(bytes, bytes)?;
                // SAFETY: `get`'s contract; the header lies inside the new slab.
                h = unsafe { self.init_slab(slab.as_ptr()) };
            } else {
                // SAFETY: `h` heads the empty list, a live header of ours.
                unsafe { self.unlink(h) };
                self.counts.empty_slabs -= 1;
                // SAFETY: as above, now on no list.
                unsafe { self.push(h, PARTIAL) };
            }
        }
        // SAFETY: `h` heads the partial list: a live header with a free or uncarved object.
        let object = unsafe { self.take_object(h) };
        self.counts.inuse += 1;
        Some(object)
    }

    /// Writes a fresh header into `slab` and puts it on the partial list.
    ///
    /// # Safety
    /// `slab` is a new slab of this class, owned by the cache.
    unsafe fn init_slab(&mut self, slab: *mut u8) -> *mut Header {
        // Freed objects arrive with the caller's provenance, which may cover the object only
        // (a `Box` retags it to its own size): `locate` reaches the header, and the magazines
        // re-issue objects, through the slab's exposed provenance instead.
        let _ = slab.expose_provenance();
        let h = self.header_of(slab);
        // SAFETY: the header lies inside the slab (caller), aligned (slab alignment ≥ 4 KiB,
        // header offset a multiple of its alignment).
        unsafe {
            h.write(Header {
                magic: MAGIC ^ slab.addr(),
                free: ptr::null_mut(),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                carved: 0,
                inuse: 0,
                class: self.class,
                list: 0,
                used: [0; 8],
            });
            self.push(h, PARTIAL);
        }
        self.counts.slabs += 1;
        h
    }

    /// Takes an object of the partial slab `h`, moving it to the full list when it runs out.
    ///
    /// # Safety
    /// `h` is a live header of ours on the partial list.
    unsafe fn take_object(&mut self, h: *mut Header) -> NonNull<u8> {
        let size = self.size();
        let per_slab = self.per_slab();
        let slab = self.slab_of(h);
        // SAFETY: caller: a live header, owned by us (`&mut self`). The borrow ends before
        // `unlink` writes through `h`.
        let header = unsafe { &mut *h };
        let object = if header.free.is_null() {
            debug_assert!((header.carved as usize) < per_slab);
            let object = slab.wrapping_add(header.carved as usize * size);
            header.carved += 1;
            object
        } else {
            let object = header.free;
            // SAFETY: free objects hold the next link in their first word (aligned: classes
            // are multiples of 8).
            header.free = unsafe { object.cast::<*mut u8>().read() };
            object
        };
        let index = (object.addr() - slab.addr()) / size;
        header.used[index / 64] |= 1 << (index % 64);
        header.inuse += 1;
        if header.inuse as usize == per_slab {
            // SAFETY: on the partial list (caller); `header` is not used after this.
            unsafe {
                self.unlink(h);
                (*h).list = FULL;
            }
        }
        // SAFETY: inside a non-null slab.
        unsafe { NonNull::new_unchecked(object) }
    }

    /// Validates `ptr` as an in-use object of this cache; returns its header and index.
    ///
    /// # Safety
    /// The slab-sized, slab-aligned block containing `ptr` is readable (it is, for any object
    /// of any `SlabCache` of the same class).
    unsafe fn locate(&self, ptr: NonNull<u8>) -> Result<(*mut Header, usize), SlabError> {
        let bytes = self.slab_bytes();
        // The slab's provenance, exposed by `init_slab` (see there).
        let slab = ptr::with_exposed_provenance_mut::<u8>(ptr.as_ptr().addr() & !(bytes - 1));
        let h = self.header_of(slab);
        // SAFETY: readable (caller); fields are plain integers and pointers.
        let header = unsafe { &*h };
        if header.magic != MAGIC ^ slab.addr() || header.class != self.class {
            return Err(SlabError::Foreign);
        }
        let offset = ptr.as_ptr().addr() - slab.addr();
        // No division: the class's geometry table (`exact_index`).
        let Some(index) = exact_index(offset, self.class as usize) else {
            return Err(SlabError::Foreign);
        };
        if index >= header.carved as usize {
            return Err(SlabError::Foreign);
        }
        if header.used[index / 64] & (1 << (index % 64)) == 0 {
            return Err(SlabError::NotAllocated);
        }
        Ok((h, index))
    }

    /// Frees an object. Returns a slab that should go back to the page layer (the cache
    /// already holds `keep_empty` empty slabs), which the caller releases outside any lock.
    ///
    /// # Errors
    /// [`SlabError`] when `ptr` is not an in-use object of this cache; nothing changes.
    ///
    /// # Safety
    /// The slab-sized, slab-aligned block containing `ptr` is readable memory (true for every
    /// pointer this cache, or another cache of the same heap, handed out).
    pub(crate) unsafe fn free(
        &mut self,
        ptr: NonNull<u8>,
    ) -> Result<Option<NonNull<u8>>, SlabError> {
        // SAFETY: caller.
        let (h, index) = unsafe { self.locate(ptr)? };
        // The header is reached through `h` in short borrows only: `push`/`unlink` write
        // through `h` too, so no `&mut Header` may live across them.
        let (was_full, now_empty) = {
            // SAFETY: a live header of ours (validated above), `&mut self`.
            let header = unsafe { &mut *h };
            header.used[index / 64] &= !(1 << (index % 64));
            // SAFETY: the object is ours and no longer in use; aligned to 8.
            unsafe { ptr.as_ptr().cast::<*mut u8>().write(header.free) };
            header.free = ptr.as_ptr();
            header.inuse -= 1;
            (header.list == FULL, header.inuse == 0)
        };
        self.counts.inuse -= 1;
        if was_full {
            // SAFETY: on no list.
            unsafe { self.push(h, PARTIAL) };
        }
        if now_empty {
            // SAFETY: on the partial list.
            unsafe { self.unlink(h) };
            if self.counts.empty_slabs >= self.keep_empty {
                self.counts.slabs -= 1;
                // A stale pointer into a released slab must not pass `locate`.
                // SAFETY: a live header of ours, on no list.
                unsafe { (*h).magic = 0 };
                // SAFETY: a slab of ours, now on no list and with no object in use.
                return Ok(Some(unsafe { NonNull::new_unchecked(self.slab_of(h)) }));
            }
            // SAFETY: on no list.
            unsafe { self.push(h, EMPTY) };
            self.counts.empty_slabs += 1;
        }
        Ok(None)
    }

    /// Takes one empty slab off the cache, for the caller to return to the page layer
    /// (`reclaim`). Its bytes are `slab_bytes(class)`.
    pub(crate) fn take_empty(&mut self) -> Option<NonNull<u8>> {
        let h = NonNull::new(self.empty)?;
        // SAFETY: heads the empty list.
        unsafe { self.unlink(h.as_ptr()) };
        self.counts.empty_slabs -= 1;
        self.counts.slabs -= 1;
        // SAFETY: a live header of ours; a stale pointer into the slab must not pass `locate`.
        unsafe { (*h.as_ptr()).magic = 0 };
        NonNull::new(self.slab_of(h.as_ptr()))
    }

    /// Whether `ptr` is an in-use object of this cache (the heap's debug check for foreign
    /// pointers).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    pub(crate) unsafe fn owns(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: caller.
        unsafe { self.locate(ptr) }.is_ok()
    }

    /// Pushes `h` on the front of list `list`.
    ///
    /// # Safety
    /// `h` is a live header of ours on no list.
    unsafe fn push(&mut self, h: *mut Header, list: u8) {
        let head = if list == PARTIAL {
            &mut self.partial
        } else {
            &mut self.empty
        };
        // SAFETY: caller; `*head` is null or a live header of ours.
        unsafe {
            (*h).list = list;
            (*h).prev = ptr::null_mut();
            (*h).next = *head;
            if let Some(next) = (*head).as_mut() {
                next.prev = h;
            }
        }
        *head = h;
    }

    /// Unlinks `h` from its list.
    ///
    /// # Safety
    /// `h` is a live header of ours on the partial or empty list.
    unsafe fn unlink(&mut self, h: *mut Header) {
        // SAFETY: caller; neighbours are live headers of the same list.
        unsafe {
            let (prev, next) = ((*h).prev, (*h).next);
            if let Some(next) = next.as_mut() {
                next.prev = prev;
            }
            if let Some(prev) = prev.as_mut() {
                prev.next = next;
            } else if (*h).list == PARTIAL {
                self.partial = next;
            } else {
                self.empty = next;
            }
            (*h).list = 0;
            (*h).next = ptr::null_mut();
            (*h).prev = ptr::null_mut();
        }
    }

    /// Checks the lists and every listed slab: magic, class, links, the in-use bitmap against
    /// `inuse`, the free list (inside the carved objects, not in use, no repeats), counts
    /// against the slabs found (full slabs are not listed: their number is what remains).
    pub(crate) fn check(&self) -> Result<SlabCounts, CheckError> {
        let per_slab = self.per_slab();
        let mut listed = 0;
        let mut listed_inuse = 0;
        let mut empty = 0;
        for (head, list) in [(self.partial, PARTIAL), (self.empty, EMPTY)] {
            let mut prev = ptr::null_mut();
            let mut h = head;
            while !h.is_null() {
                // SAFETY: listed headers are live headers of ours.
                let header = unsafe { &*h };
                let slab = self.slab_of(h);
                if header.magic != MAGIC ^ slab.addr() || header.class != self.class {
                    return Err(CheckError("listed slab has a bad header"));
                }
                if header.list != list || header.prev != prev {
                    return Err(CheckError("slab list links are inconsistent"));
                }
                let inuse = header.inuse as usize;
                let bits: u32 = header.used.iter().map(|w| w.count_ones()).sum();
                if bits as usize != inuse || header.carved as usize > per_slab {
                    return Err(CheckError("slab in-use bitmap disagrees with its count"));
                }
                match list {
                    PARTIAL if inuse == 0 || inuse == per_slab => {
                        return Err(CheckError("partial slab is empty or full"));
                    }
                    EMPTY if inuse != 0 => return Err(CheckError("empty slab has objects")),
                    _ => {}
                }
                // The free list: carved, not in use, distinct, and exactly carved - inuse long.
                let mut seen = [0u64; 8];
                let mut free = 0;
                let mut object = header.free;
                while !object.is_null() {
                    let offset = object.addr().wrapping_sub(slab.addr());
                    let index = offset / self.size();
                    if offset % self.size() != 0 || index >= header.carved as usize {
                        return Err(CheckError("free list leaves the carved objects"));
                    }
                    let bit = 1 << (index % 64);
                    if header.used[index / 64] & bit != 0 || seen[index / 64] & bit != 0 {
                        return Err(CheckError("free list holds an in-use or repeated object"));
                    }
                    seen[index / 64] |= bit;
                    free += 1;
                    // SAFETY: a free object of this slab; its first word is the link.
                    object = unsafe { object.cast::<*mut u8>().read() };
                }
                if free + inuse != header.carved as usize {
                    return Err(CheckError("carved objects are neither free nor in use"));
                }
                listed += 1;
                listed_inuse += inuse;
                if list == EMPTY {
                    empty += 1;
                }
                prev = h;
                h = header.next;
            }
        }
        if empty != self.counts.empty_slabs || listed > self.counts.slabs {
            return Err(CheckError("slab counts disagree with the lists"));
        }
        let full = self.counts.slabs - listed;
        if listed_inuse + full * per_slab != self.counts.inuse {
            return Err(CheckError("in-use count disagrees with the slabs"));
        }
        Ok(self.counts)
    }
}

impl fmt::Debug for SlabCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabCache")
            .field("class", &self.class)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}
