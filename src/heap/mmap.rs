//! [`MmapPages`]: the heap's page source in user space, straight from the kernel with `mmap`
//! (feature `mmap`, unix), with a bounded page cache so that a slab is not a system call.
//!
//! docs/design/08-heap.md §"The mmap page source" has the layout, the cache's invariants and its bound.

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use super::source::PageSource;
use crate::lock::SpinLock;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The page granule.
const PAGE: usize = 4096;
/// log2 of the largest cached span in pages: spans are `PAGE << order`, `order <= MAX_ORDER`.
const MAX_ORDER: usize = 9;
/// Orders of cached spans: 4 KiB .. 2 MiB.
const ORDERS: usize = MAX_ORDER + 1;
/// Bytes of a chunk: the unit mapped from the kernel for spans, aligned to its size.
const CHUNK: usize = PAGE << MAX_ORDER;
/// The cache keeps at most `CACHE_FLOOR + held / CACHE_SHARE` bytes of free spans; a span
/// freed beyond that goes back to the kernel at once.
const CACHE_FLOOR: usize = 4 * CHUNK;
/// See [`CACHE_FLOOR`].
const CACHE_SHARE: usize = 8;
/// At most this many cached spans go back to the kernel with one free above the bound.
const EVICT: usize = 4;
/// Slots of the kept-mapping cache (freed mappings of their own, reused by later ones).
const KEEP_SLOTS: usize = 32;
/// The kept mappings hold at most `held / CACHE_SHARE + KEEP_BLOCKS * recent` bytes, where
/// `recent` is the largest range kept lately (it decays by 1/[`KEEP_FADE`] with each range
/// kept): room for a few of the blocks the program frees now, whatever it freed long ago.
const KEEP_BLOCKS: usize = 8;
/// See [`KEEP_BLOCKS`].
const KEEP_FADE: usize = 64;
/// A kept mapping not reused while this many others were kept goes back to the kernel.
const KEEP_DECAY: usize = 64;
/// Huge blocks (page-aligned) above this many bytes are mappings of their own (below it,
/// spans: the heap's direct blocks of the TLSF route).
const HUGE_DIRECT: usize = 256 * 1024;

/// Where a request goes: a cached span of `PAGE << order` bytes, or a mapping of its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A power-of-two span from the chunks, aligned to its size.
    Span(usize),
    /// A mapping of its own: `bytes` (whole pages) aligned to `align`.
    Direct { bytes: usize, align: usize },
}

/// The route of `bytes` (already whole pages, non-zero) at `align` (a power of two, at least a
/// page). A pure function, so a free finds what its allocation took.
#[inline]
const fn kind(bytes: usize, align: usize) -> Kind {
    if bytes <= CHUNK && align <= CHUNK {
        let span = if bytes.next_power_of_two() > align {
            bytes.next_power_of_two()
        } else {
            align
        };
        Kind::Span((span / PAGE).trailing_zeros() as usize)
    } else {
        Kind::Direct { bytes, align }
    }
}

/// Checks the trait's request and rounds it: `bytes` a non-zero multiple of a page, `align` a
/// power of two (a page at least). `None` for anything else.
#[inline]
fn request(bytes: usize, align: usize) -> Option<Kind> {
    if bytes == 0 || bytes % PAGE != 0 || !align.is_power_of_two() {
        return None;
    }
    Some(kind(bytes, align.max(PAGE)))
}

/// The route of a huge block for `layout`: its size in whole pages; a mapping of its own
/// above 256 KiB at page alignment (resized by `mremap`, reused from the kept mappings), else
/// as [`kind`].
#[inline]
fn huge_kind(layout: Layout) -> Option<Kind> {
    if layout.size() == 0 {
        return None;
    }
    let bytes = layout.size().checked_next_multiple_of(PAGE)?;
    if bytes > HUGE_DIRECT && layout.align() <= PAGE {
        // An eighth of the size's power of two: at most 1/8 more address space, and a block
        // grown by `realloc` a little at a time is `mremap`ed once per eighth, not per page.
        let grain = bytes.checked_next_power_of_two()? / 8;
        let bytes = bytes.checked_next_multiple_of(grain)?;
        return Some(Kind::Direct { bytes, align: PAGE });
    }
    Some(kind(bytes, layout.align().max(PAGE)))
}

/// A free span's first word: the next free span of its order.
struct FreeSpan {
    next: Option<NonNull<FreeSpan>>,
}

/// The page cache: per order, a list of free spans linked through their first word; and the
/// kept mappings: freed page-aligned ranges of mappings of their own (slot `i` holds
/// `kept_len[i]` bytes at `kept_at[i]`, an empty slot `None` and 0).
struct Cache {
    heads: [Option<NonNull<FreeSpan>>; ORDERS],
    counts: [usize; ORDERS],
    kept_at: [Option<NonNull<u8>>; KEEP_SLOTS],
    kept_len: [usize; KEEP_SLOTS],
    /// When each slot was filled, in `keeps` (for the decay).
    kept_stamp: [usize; KEEP_SLOTS],
    /// Mappings kept so far (the decay's clock).
    keeps: usize,
    /// The largest range kept lately, fading (the kept bound, [`KEEP_BLOCKS`]).
    recent: usize,
}

// SAFETY: the lists hold spans this source owns (mapped, used by no one); they are reached
// only under the source's lock, from any thread.
unsafe impl Send for Cache {}

impl Cache {
    /// Pushes a free span of `order`.
    ///
    /// # Safety
    /// `span` is a mapped, writable span of `PAGE << order` bytes aligned to its size, owned by
    /// the source and used by no one.
    unsafe fn push(&mut self, span: NonNull<u8>, order: usize) {
        let node = span.cast::<FreeSpan>();
        // SAFETY: the span is ours and writable (caller); its first word is the link.
        unsafe {
            node.write(FreeSpan {
                next: self.heads[order],
            })
        };
        self.heads[order] = Some(node);
        self.counts[order] += 1;
    }

    /// Pops a free span of `order`.
    fn pop(&mut self, order: usize) -> Option<NonNull<u8>> {
        let node = self.heads[order]?;
        // SAFETY: a listed span is mapped and holds its link (I1).
        self.heads[order] = unsafe { node.as_ref().next };
        self.counts[order] -= 1;
        Some(node.cast())
    }

    /// Takes `bytes` of a kept mapping for a request of that size: the front of the smallest
    /// kept range that holds it (the rest stays kept), else (`grow`) the whole largest kept
    /// range, to be resized by the caller. `(start, length taken)`.
    fn take_kept(&mut self, bytes: usize, grow: bool) -> Option<(NonNull<u8>, usize)> {
        let mut best: Option<usize> = None;
        let mut largest: Option<usize> = None;
        for i in 0..KEEP_SLOTS {
            let len = self.kept_len[i];
            if len == 0 {
                continue;
            }
            if len >= bytes && best.is_none_or(|b| len < self.kept_len[b]) {
                best = Some(i);
            }
            if largest.is_none_or(|b| len > self.kept_len[b]) {
                largest = Some(i);
            }
        }
        if let Some(i) = best {
            let at = self.kept_at[i]?;
            let len = self.kept_len[i];
            if len > bytes {
                // SAFETY: `bytes < len`: inside the kept range.
                self.kept_at[i] = Some(unsafe { at.add(bytes) });
                self.kept_len[i] = len - bytes;
            } else {
                self.clear_kept(i);
            }
            return Some((at, bytes));
        }
        let i = largest.filter(|_| grow)?;
        let at = self.kept_at[i]?;
        let len = self.kept_len[i];
        self.clear_kept(i);
        Some((at, len))
    }

    /// Empties slot `i`.
    fn clear_kept(&mut self, i: usize) {
        self.kept_at[i] = None;
        self.kept_len[i] = 0;
        self.kept_stamp[i] = 0;
    }

    /// A span of `order`: from its list, else split from the smallest larger one (the halves
    /// not taken go to the lists below). `None` when every list from `order` up is empty.
    fn take(&mut self, order: usize) -> Option<NonNull<u8>> {
        let from = (order..ORDERS).find(|&o| self.heads[o].is_some())?;
        let span = self.pop(from)?;
        let mut o = from;
        while o > order {
            o -= 1;
            // SAFETY: the upper half of a span of order `o + 1` we own: mapped, aligned to
            // `PAGE << o`, used by no one.
            unsafe { self.push(span.add(PAGE << o), o) };
        }
        Some(span)
    }
}

/// Pages for the SMP heap from the kernel with `mmap` (feature `mmap`, unix): no `malloc`
/// anywhere, so it can sit under the C library's `malloc` itself (the `capi/` crate).
///
/// - **Spans** (requests of at most 2 MiB aligned to at most 2 MiB: the heap's slabs, map
///   nodes and smaller TLSF pools, and huge blocks that fit) are powers of two from 4 KiB to
///   2 MiB, aligned to their size, carved from 2 MiB chunks (each mapped once, aligned by
///   mapping more and trimming) and cached on free in one list per size: a slab is a list
///   pop under a lock, not a system call. A larger span is split when a size's list is empty.
/// - **Direct** mappings serve the rest (larger TLSF pools, and huge blocks above 256 KiB at
///   page alignment, in eighths of their power of two, or above 2 MiB): their pages, aligned
///   by over-mapping and trimming. Freed page-aligned ones are **kept** (up to 32 ranges,
///   coalesced) and reused by later ones: the front of the smallest kept range that holds a
///   request (no system call, its pages still resident), else the largest grown by `mremap`.
///   `realloc_huge` resizes them in place through the kept range after them, else with
///   `mremap` (Linux; moving only when the alignment is at most a page).
/// - **Memory goes back** to the kernel with `munmap`: everything cached and kept on
///   [`drain`] (`SmpHeap::reclaim`), and without reclaim whatever the cache's bound,
///   `8 MiB + held / 8`, does not take: a span freed above it is unmapped at once, with up to 4
///   cached spans, so a program that frees a lot never keeps unbounded RSS. The kept ranges
///   are bounded by `held / 8 + 8 *` the largest range kept lately, and a range not reused
///   while 64 others were kept goes back.
///
/// `const fn new()`, all zeros (a `static` lies in `.bss`), `Sync`. The cache's lock is the
/// crate's [`SpinLock`] (bounded spin, then yield) and is never held across a system call.
/// [`check`](Self::check) verifies the cache.
///
/// [`drain`]: PageSource::drain
///
/// ```no_run
/// use smpalloc::{MmapPages, SmpHeap};
/// #[global_allocator]
/// static HEAP: SmpHeap<MmapPages> = SmpHeap::new(MmapPages::new());
/// ```
pub struct MmapPages {
    cache: SpinLock<Cache>,
    /// Bytes handed out and not yet freed (spans at their span size, direct mappings).
    held: AtomicUsize,
    /// The most `held` ever was.
    peak: AtomicUsize,
    /// Bytes of the spans in the cache (written under the lock, read without it).
    cached: AtomicUsize,
    /// Bytes of the kept mappings (written under the lock, read without it).
    kept: AtomicUsize,
    /// Bytes a failed `munmap` left mapped (released with `madvise` instead): address space
    /// lost for good, not memory (the kernel's map count limit; docs/design/08-heap.md §"The mmap page source").
    lost: AtomicUsize,
}

/// A failed [`MmapPages::check`]: what the cache's walk found against its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// A listed span is not aligned to its size (`order`: its list).
    Misaligned {
        /// The list.
        order: usize,
        /// The span's address.
        addr: usize,
    },
    /// A list's length is not its count.
    Count {
        /// The list.
        order: usize,
        /// Its recorded count.
        recorded: usize,
        /// Spans found walking it.
        found: usize,
    },
    /// The cached bytes counter is not the sum of the lists.
    Cached {
        /// The counter.
        recorded: usize,
        /// The lists' sum.
        found: usize,
    },
    /// A kept mapping's slot is empty with a length, or holds a range not in whole pages.
    Kept {
        /// Its start (0: none).
        addr: usize,
        /// Its length.
        bytes: usize,
    },
    /// The kept bytes counter is not the sum of the kept ranges.
    KeptBytes {
        /// The counter.
        recorded: usize,
        /// The ranges' sum.
        found: usize,
    },
    /// Two listed spans or kept ranges overlap (or one is listed twice).
    Overlap {
        /// One span's address.
        a: usize,
        /// The other's.
        b: usize,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { order, addr } => {
                write!(f, "cached span {addr:#x} of order {order} is misaligned")
            }
            Self::Count {
                order,
                recorded,
                found,
            } => write!(f, "list {order} counts {recorded} spans, holds {found}"),
            Self::Cached { recorded, found } => {
                write!(f, "cached counter {recorded}, lists hold {found} bytes")
            }
            Self::Kept { addr, bytes } => {
                write!(
                    f,
                    "kept mapping slot {addr:#x} of {bytes} bytes is malformed"
                )
            }
            Self::KeptBytes { recorded, found } => {
                write!(f, "kept counter {recorded}, kept ranges hold {found} bytes")
            }
            Self::Overlap { a, b } => write!(f, "cached spans {a:#x} and {b:#x} overlap"),
        }
    }
}

impl core::error::Error for CheckError {}

impl MmapPages {
    crate::sync::loom_const_fn! {
        /// A source holding nothing (all zeros: a `static` lies in `.bss`).
        pub fn new() -> Self {
            Self {
                cache: SpinLock::new(Cache {
                    heads: [None; ORDERS],
                    counts: [0; ORDERS],
                    kept_at: [None; KEEP_SLOTS],
                    kept_len: [0; KEEP_SLOTS],
                    kept_stamp: [0; KEEP_SLOTS],
                    keeps: 0,
                    recent: 0,
                }),
                held: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                cached: AtomicUsize::new(0),
                kept: AtomicUsize::new(0),
                lost: AtomicUsize::new(0),
            }
        }
    }

    /// Bytes mapped and in use by the heap (spans at their power-of-two size).
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes of free spans in the cache (mapped, in use by no one).
    pub fn cached_bytes(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// Bytes of freed mappings of their own kept for reuse (mapped, in use by no one).
    pub fn kept_bytes(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes of address space a failed `munmap` left behind (their memory released with
    /// `madvise(MADV_DONTNEED)`); 0 unless the process reached the kernel's limit of mappings.
    pub fn lost_bytes(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }

    /// Verifies the cache under its lock: every listed span aligned to its size, each list as
    /// long as its count, the cached counter their sum, no two spans overlapping. O(n²) in the
    /// cached spans (a test tool; the cache is bounded).
    ///
    /// # Errors
    /// The first broken invariant found.
    pub fn check(&self) -> Result<(), CheckError> {
        let cache = self.cache.lock();
        let mut total = 0;
        for order in 0..ORDERS {
            let bytes = PAGE << order;
            let mut found = 0;
            let mut node = cache.heads[order];
            while let Some(span) = node {
                let addr = span.as_ptr().addr();
                if addr % bytes != 0 {
                    return Err(CheckError::Misaligned { order, addr });
                }
                overlaps(&cache, span, bytes)?;
                found += 1;
                // Bounded by the count: a cycle would otherwise loop forever.
                if found > cache.counts[order] {
                    break;
                }
                // SAFETY: a listed span holds its link (I1).
                node = unsafe { span.as_ref().next };
            }
            if found != cache.counts[order] {
                return Err(CheckError::Count {
                    order,
                    recorded: cache.counts[order],
                    found,
                });
            }
            total += found * bytes;
        }
        let recorded = self.cached.load(Ordering::Relaxed);
        if recorded != total {
            return Err(CheckError::Cached {
                recorded,
                found: total,
            });
        }
        let mut kept = 0;
        for i in 0..KEEP_SLOTS {
            let (at, bytes) = (cache.kept_at[i], cache.kept_len[i]);
            let Some(at) = at else {
                if bytes != 0 {
                    return Err(CheckError::Kept { addr: 0, bytes });
                }
                continue;
            };
            let addr = at.as_ptr().addr();
            if bytes == 0 || addr % PAGE != 0 || bytes % PAGE != 0 {
                return Err(CheckError::Kept { addr, bytes });
            }
            overlaps(&cache, at.cast(), bytes)?;
            kept += bytes;
        }
        let recorded = self.kept.load(Ordering::Relaxed);
        if recorded != kept {
            return Err(CheckError::KeptBytes {
                recorded,
                found: kept,
            });
        }
        Ok(())
    }

    /// Counts `bytes` more held.
    fn add_held(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }

    /// A span of `order`: from the cache, else from a fresh chunk (mapped without the lock).
    fn alloc_span(&self, order: usize) -> Option<NonNull<u8>> {
        let taken = {
            let mut cache = self.cache.lock();
            let span = cache.take(order);
            if span.is_some() {
                self.cached.fetch_sub(PAGE << order, Ordering::Relaxed);
            }
            span
        };
        let span = match taken {
            Some(span) => span,
            None => {
                let chunk = map_aligned(CHUNK, CHUNK)?;
                let mut cache = self.cache.lock();
                // SAFETY: a fresh chunk, aligned to its size, ours alone.
                unsafe { cache.push(chunk, MAX_ORDER) };
                self.cached.fetch_add(CHUNK, Ordering::Relaxed);
                let span = cache.take(order);
                if span.is_some() {
                    self.cached.fetch_sub(PAGE << order, Ordering::Relaxed);
                }
                span?
            }
        };
        self.add_held(PAGE << order);
        Some(span)
    }

    /// Frees a span of `order`: into the cache while it stays under its bound, else to the
    /// kernel, with up to [`EVICT`] cached spans (largest first) while the cache is above its
    /// bound (which falls as the heap frees), so the cache follows the bound down.
    ///
    /// # Safety
    /// `span` came from `alloc_span(order)` and is not used afterwards.
    unsafe fn free_span(&self, span: NonNull<u8>, order: usize) {
        let bytes = PAGE << order;
        let held = self.held.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        let limit = CACHE_FLOOR + held / CACHE_SHARE;
        let mut evicted: [Option<(NonNull<u8>, usize)>; EVICT] = [None; EVICT];
        {
            let mut cache = self.cache.lock();
            let cached = self.cached.load(Ordering::Relaxed);
            if cached + bytes <= limit {
                // SAFETY: the span is ours again (caller), mapped and aligned to its size.
                unsafe { cache.push(span, order) };
                self.cached.store(cached + bytes, Ordering::Relaxed);
                return;
            }
            let mut cached = cached;
            for slot in &mut evicted {
                if cached <= limit {
                    break;
                }
                let Some(o) = (0..ORDERS).rev().find(|&o| cache.heads[o].is_some()) else {
                    break;
                };
                *slot = cache.pop(o).map(|s| (s, o));
                cached -= PAGE << o;
            }
            self.cached.store(cached, Ordering::Relaxed);
        }
        // SAFETY: the span is ours (caller); it lies inside a chunk we mapped.
        unsafe { self.unmap(span, bytes) };
        for (span, o) in evicted.into_iter().flatten() {
            // SAFETY: out of the cache: ours, mapped, used by no one.
            unsafe { self.unmap(span, PAGE << o) };
        }
    }

    /// Gives `bytes` at `ptr` back to the kernel: `munmap`, or when that fails (the kernel's
    /// limit of mappings, as a hole splits one), `madvise(MADV_DONTNEED)` and the address
    /// space counted lost.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` is mapped by this source, page-aligned, and used by no one.
    unsafe fn unmap(&self, ptr: NonNull<u8>, bytes: usize) {
        // SAFETY: our mapping, used by no one (caller).
        if unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) } != 0 {
            // SAFETY: as above; discarding the contents of unused pages is harmless.
            unsafe { libc::madvise(ptr.as_ptr().cast(), bytes, libc::MADV_DONTNEED) };
            self.lost.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A mapping of its own: a kept range when one serves (page alignment), else a fresh one.
    fn alloc_direct(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let ptr = match self.reuse(bytes, align) {
            Some(ptr) => ptr,
            None => map_aligned(bytes, align)?,
        };
        self.add_held(bytes);
        Some(ptr)
    }

    /// `bytes` from the kept mappings (K1..K3 of docs/design/08-heap.md §"The mmap page source"): the front of the smallest
    /// kept range that holds them (no system call; the rest stays kept), else (Linux) the
    /// largest kept range grown by `mremap`, whose pages stay resident and only the growth
    /// faults in. `None` when nothing is kept, the alignment is above a page, or the resize
    /// fails (the range is unmapped then).
    fn reuse(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        if align > PAGE || self.kept.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let grow = cfg!(any(target_os = "linux", target_os = "android"));
        let (at, len) = {
            let mut cache = self.cache.lock();
            let taken = cache.take_kept(bytes, grow)?;
            self.kept.fetch_sub(taken.1, Ordering::Relaxed);
            taken
        };
        if len == bytes {
            return Some(at);
        }
        // SAFETY: out of the kept mappings: ours, mapped, used by no one, `len < bytes`.
        unsafe { self.grow_kept(at, len, bytes) }
    }

    /// Grows a range taken out of the kept mappings to `bytes` with `mremap` (moving it when
    /// the kernel must); on failure unmaps it and returns `None`.
    ///
    /// # Safety
    /// `at..at + len` was kept: ours, mapped, used by no one (it may lie over two kernel
    /// mappings: `mremap` then fails and changes nothing).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe fn grow_kept(&self, at: NonNull<u8>, len: usize, bytes: usize) -> Option<NonNull<u8>> {
        // SAFETY: our range (caller); `mremap` keeps its pages and either resizes or moves it,
        // or fails and leaves it as it was.
        let moved = unsafe { libc::mremap(at.as_ptr().cast(), len, bytes, libc::MREMAP_MAYMOVE) };
        if moved != libc::MAP_FAILED {
            return NonNull::new(moved.cast());
        }
        // Coalesced over two kernel mappings (`EFAULT`), or no room: the failed `mremap`
        // changed nothing; the range goes back to the kernel (kept again, it would be the
        // largest and fail the same way at the next growth), the request is mapped afresh.
        // SAFETY: still ours, mapped, used by no one.
        unsafe { self.unmap(at, len) };
        None
    }

    /// Without `mremap` a kept range is only taken whole or in part, never grown.
    ///
    /// # Safety
    /// As on Linux.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    unsafe fn grow_kept(&self, at: NonNull<u8>, len: usize, _: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract.
        unsafe { self.unmap(at, len) };
        None
    }

    /// Frees what `alloc_direct(bytes, align)` returned: kept for reuse when page-aligned
    /// (K2), else unmapped.
    ///
    /// # Safety
    /// As for `unmap`.
    unsafe fn free_direct(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        let held = self.held.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if align <= PAGE {
            // SAFETY: the caller's contract.
            unsafe { self.keep(ptr, bytes, held) };
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.unmap(ptr, bytes) };
    }

    /// Keeps a freed range of `bytes` for reuse (K2, K3), coalesced with the kept ranges it
    /// touches: first every kept range not reused while [`KEEP_DECAY`] others were kept goes
    /// back to the kernel, then the oldest ones while the kept bytes would pass
    /// `held / 8 + 8 * recent` ([`KEEP_BLOCKS`]) or no slot is free. A range larger than that
    /// bound by itself is unmapped at once. The unmapping is outside the lock.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` is ours, mapped, page-aligned, whole pages, used by no one.
    unsafe fn keep(&self, ptr: NonNull<u8>, bytes: usize, held: usize) {
        let mut out: [Option<(NonNull<u8>, usize)>; KEEP_SLOTS + 1] = [None; KEEP_SLOTS + 1];
        {
            let mut cache = self.cache.lock();
            let mut kept = self.kept.load(Ordering::Relaxed);
            cache.keeps = cache.keeps.wrapping_add(1);
            let now = cache.keeps;
            cache.recent = (cache.recent - cache.recent / KEEP_FADE).max(bytes);
            let limit =
                (held / CACHE_SHARE).saturating_add(cache.recent.saturating_mul(KEEP_BLOCKS));
            // Coalesce with the kept ranges just before and just after (K1: ranges are
            // disjoint, so at most one of each).
            let (mut ptr, mut bytes) = (ptr, bytes);
            for i in 0..KEEP_SLOTS {
                let Some(at) = cache.kept_at[i] else {
                    continue;
                };
                let len = cache.kept_len[i];
                if at.as_ptr().addr() + len == ptr.as_ptr().addr() {
                    ptr = at;
                } else if ptr.as_ptr().addr() + bytes != at.as_ptr().addr() {
                    continue;
                }
                bytes += len;
                kept -= len;
                cache.clear_kept(i);
            }
            if bytes > limit {
                // Above the bound by itself: all of it goes back.
                out[KEEP_SLOTS] = Some((ptr, bytes));
                self.kept.store(kept, Ordering::Relaxed);
                drop(cache);
                for (at, len) in out.into_iter().flatten() {
                    // SAFETY: ours (caller, or out of the kept mappings), used by no one.
                    unsafe { self.unmap(at, len) };
                }
                return;
            }
            let mut n = 0;
            let mut evict = |cache: &mut Cache, i: usize, kept: &mut usize| {
                out[n] = cache.kept_at[i].map(|at| (at, cache.kept_len[i]));
                n += 1;
                *kept -= cache.kept_len[i];
                cache.clear_kept(i);
            };
            for i in 0..KEEP_SLOTS {
                if cache.kept_len[i] != 0 && now.wrapping_sub(cache.kept_stamp[i]) > KEEP_DECAY {
                    evict(&mut cache, i, &mut kept);
                }
            }
            loop {
                let empty = (0..KEEP_SLOTS).find(|&i| cache.kept_len[i] == 0);
                if let Some(i) = empty.filter(|_| kept + bytes <= limit) {
                    cache.kept_at[i] = Some(ptr);
                    cache.kept_len[i] = bytes;
                    cache.kept_stamp[i] = now;
                    kept += bytes;
                    break;
                }
                // Over the bound or no slot: a range is kept (`bytes <= limit`, so this ends
                // with every slot empty at the latest).
                let oldest = (0..KEEP_SLOTS)
                    .filter(|&i| cache.kept_len[i] != 0)
                    .max_by_key(|&i| now.wrapping_sub(cache.kept_stamp[i]));
                let Some(i) = oldest else { break };
                evict(&mut cache, i, &mut kept);
            }
            self.kept.store(kept, Ordering::Relaxed);
        }
        for (at, len) in out.into_iter().flatten() {
            // SAFETY: out of the kept mappings: ours, mapped, used by no one.
            unsafe { self.unmap(at, len) };
        }
    }

    /// Allocates by route.
    fn alloc_kind(&self, kind: Kind) -> Option<NonNull<u8>> {
        match kind {
            Kind::Span(order) => self.alloc_span(order),
            Kind::Direct { bytes, align } => self.alloc_direct(bytes, align),
        }
    }

    /// Frees by route.
    ///
    /// # Safety
    /// `ptr` came from `alloc_kind(kind)` and is not used afterwards.
    unsafe fn free_kind(&self, ptr: NonNull<u8>, kind: Kind) {
        match kind {
            // SAFETY: the caller's contract.
            Kind::Span(order) => unsafe { self.free_span(ptr, order) },
            // SAFETY: the caller's contract.
            Kind::Direct { bytes, align } => unsafe { self.free_direct(ptr, bytes, align) },
        }
    }
}

/// Whether `span` (`bytes` long) overlaps a listed span or kept range other than itself.
fn overlaps(cache: &Cache, span: NonNull<FreeSpan>, bytes: usize) -> Result<(), CheckError> {
    let a = span.as_ptr().addr();
    for order in 0..ORDERS {
        let mut node = cache.heads[order];
        let mut seen = 0;
        while let Some(other) = node {
            let b = other.as_ptr().addr();
            if other != span && a < b + (PAGE << order) && b < a + bytes {
                return Err(CheckError::Overlap { a, b });
            }
            seen += 1;
            if seen > cache.counts[order] {
                break;
            }
            // SAFETY: a listed span holds its link (I1).
            node = unsafe { other.as_ref().next };
        }
    }
    for i in 0..KEEP_SLOTS {
        let Some(other) = cache.kept_at[i] else {
            continue;
        };
        let b = other.as_ptr().addr();
        if other != span.cast() && a < b + cache.kept_len[i] && b < a + bytes {
            return Err(CheckError::Overlap { a, b });
        }
    }
    Ok(())
}

impl Default for MmapPages {
    fn default() -> Self {
        Self::new()
    }
}

/// A dropped source unmaps its cache (blocks still handed out stay mapped: their owner may
/// still use them).
impl Drop for MmapPages {
    fn drop(&mut self) {
        self.drain();
    }
}

impl fmt::Debug for MmapPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmapPages")
            .field("held", &self.held_bytes())
            .field("cached", &self.cached_bytes())
            .field("kept", &self.kept_bytes())
            .field("peak", &self.peak_bytes())
            .finish_non_exhaustive()
    }
}

/// Maps `bytes` (whole pages) of fresh zeroed memory aligned to `align` (a power of two, at
/// least a page): when the alignment is above a page, `bytes + align - PAGE` is mapped and the
/// parts before and after the aligned range unmapped. `None` when the kernel refuses or the
/// sizes overflow.
fn map_aligned(bytes: usize, align: usize) -> Option<NonNull<u8>> {
    let extra = align.checked_sub(PAGE)?;
    let total = bytes.checked_add(extra)?;
    if total > isize::MAX as usize {
        return None;
    }
    // SAFETY: a new anonymous private mapping; no existing memory is touched.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let raw = raw.cast::<u8>();
    let head = raw.addr().next_multiple_of(align) - raw.addr();
    let tail = extra - head;
    // SAFETY: `head <= extra`, inside the mapping.
    let start = unsafe { raw.add(head) };
    if head > 0 {
        // SAFETY: the unaligned front of the mapping just made, used by no one. Trimming an
        // anonymous mapping cannot fail for lack of mappings: it makes none.
        unsafe { libc::munmap(raw.cast(), head) };
    }
    if tail > 0 {
        // SAFETY: the part after the aligned range, inside the mapping, used by no one.
        unsafe { libc::munmap(start.add(bytes).cast(), tail) };
    }
    NonNull::new(start)
}

// SAFETY: spans are carved from chunks this source mapped and hands out each once until it is
// freed (a span is in a list, in use, or unmapped, never two: I1..I3 of docs/design/08-heap.md §"The mmap page source");
// direct blocks are mappings of their own. Every block is aligned as asked (spans to their
// power-of-two size, at least the alignment; direct mappings trimmed to it).
unsafe impl PageSource for MmapPages {
    /// A span (requests up to 2 MiB aligned up to 2 MiB, rounded up to a power of two) or a
    /// mapping of its own. `None` for a size of 0 or not a multiple of 4 KiB, an alignment
    /// that is not a power of two, or when the kernel refuses (nothing changes then).
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        self.alloc_kind(request(bytes, align)?)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        let Some(kind) = request(bytes, align) else {
            debug_assert!(
                false,
                "MmapPages::free_pages: not a request alloc_pages serves"
            );
            return;
        };
        // SAFETY: taken with `alloc_pages(bytes, align)`, the same route (caller).
        unsafe { self.free_kind(ptr, kind) }
    }

    /// Unmaps every cached span and kept mapping (`SmpHeap::reclaim` calls this).
    fn drain(&self) {
        loop {
            let taken = {
                let mut cache = self.cache.lock();
                let found = (0..ORDERS).find_map(|o| Some((cache.pop(o)?, o)));
                if let Some((_, order)) = found {
                    self.cached.fetch_sub(PAGE << order, Ordering::Relaxed);
                }
                found
            };
            let Some((span, order)) = taken else { break };
            // SAFETY: out of the cache: ours, mapped, used by no one.
            unsafe { self.unmap(span, PAGE << order) };
        }
        loop {
            let taken = {
                let mut cache = self.cache.lock();
                let found = (0..KEEP_SLOTS).find(|&i| cache.kept_len[i] != 0);
                found.and_then(|i| {
                    let range = (cache.kept_at[i]?, cache.kept_len[i]);
                    cache.clear_kept(i);
                    self.kept.fetch_sub(range.1, Ordering::Relaxed);
                    Some(range)
                })
            };
            let Some((at, len)) = taken else { return };
            // SAFETY: out of the kept mappings: ours, mapped, used by no one.
            unsafe { self.unmap(at, len) };
        }
    }

    /// Takes the cache's lock (it stays taken until `unlock_after_fork`).
    fn lock_for_fork(&self) {
        self.cache.lock_held();
    }

    unsafe fn unlock_after_fork(&self) {
        // SAFETY: `lock_for_fork` took the lock with `lock_held` (caller: once after it).
        unsafe { self.cache.unlock_held() };
    }

    /// A mapping of its own for a page-aligned layout above 256 KiB (its pages rounded up to
    /// an eighth of their power of two, from the kept mappings when one serves), else as
    /// `alloc_pages` for the layout's size in whole pages. `None` for size 0, a size that
    /// overflows when rounded, or when the kernel refuses (nothing changes then).
    fn alloc_huge(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_kind(huge_kind(layout)?)
    }

    unsafe fn free_huge(&self, ptr: NonNull<u8>, layout: Layout) {
        let Some(kind) = huge_kind(layout) else {
            debug_assert!(false, "MmapPages::free_huge: size 0");
            return;
        };
        // SAFETY: taken with `alloc_huge(layout)` (or resized to it), the same route (caller).
        unsafe { self.free_kind(ptr, kind) }
    }

    /// The whole span (a power of two) or the whole (rounded) pages of a mapping of its own.
    fn huge_usable(&self, layout: Layout) -> usize {
        match huge_kind(layout) {
            Some(Kind::Span(order)) => PAGE << order,
            Some(Kind::Direct { bytes, .. }) => bytes,
            None => 0,
        }
    }

    /// In place when the route stays the same span size or rounded page count; between two
    /// page-aligned mappings of their own, in place through the kept ranges (shrinking keeps
    /// the tail; growing takes the front of the kept range right after the block), else
    /// `mremap` (Linux: moving it when the alignment is at most a page, else only in place).
    /// `None` otherwise, or when the kernel refuses (the block and counters untouched; the
    /// heap moves the block).
    unsafe fn realloc_huge(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let old = huge_kind(layout)?;
        let new = huge_kind(Layout::from_size_align(new_size, layout.align()).ok()?)?;
        if old == new {
            return Some(ptr);
        }
        match (old, new) {
            (Kind::Direct { bytes, align }, Kind::Direct { bytes: to, .. }) if align <= PAGE => {
                // SAFETY: our mapping of exactly `bytes` (caller).
                if let Some(ptr) = unsafe { self.resize_kept(ptr, bytes, to) } {
                    return Some(ptr);
                }
                // SAFETY: as above.
                unsafe { self.remap(ptr, bytes, to, true) }
            }
            // SAFETY: our mapping of exactly `bytes` (caller); in place only, so the
            // alignment stays.
            (Kind::Direct { bytes, .. }, Kind::Direct { bytes: to, .. }) => unsafe {
                self.remap(ptr, bytes, to, false)
            },
            _ => None,
        }
    }
}

impl MmapPages {
    /// Resizes a page-aligned mapping of its own in place through the kept mappings (K4):
    /// shrinking keeps the tail (no system call; it coalesces with a kept range after it),
    /// growing takes the front of the kept range that starts right after the block when it
    /// holds the growth. `None` when growing and no such range holds it.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` is a block of this source's, handed out as a mapping of its own.
    unsafe fn resize_kept(&self, ptr: NonNull<u8>, bytes: usize, to: usize) -> Option<NonNull<u8>> {
        if to < bytes {
            let held = self.held.fetch_sub(bytes - to, Ordering::Relaxed) - (bytes - to);
            // SAFETY: the block's tail (`to < bytes`), ours and no longer handed out.
            unsafe { self.keep(ptr.add(to), bytes - to, held) };
            return Some(ptr);
        }
        let need = to - bytes;
        let end = ptr.as_ptr().addr() + bytes;
        {
            let mut cache = self.cache.lock();
            let i = (0..KEEP_SLOTS).find(|&i| {
                cache.kept_at[i].is_some_and(|at| at.as_ptr().addr() == end)
                    && cache.kept_len[i] >= need
            })?;
            let at = cache.kept_at[i]?;
            if cache.kept_len[i] == need {
                cache.clear_kept(i);
            } else {
                // SAFETY: `need < kept_len[i]`: inside the kept range.
                cache.kept_at[i] = Some(unsafe { at.add(need) });
                cache.kept_len[i] -= need;
            }
            self.kept.fetch_sub(need, Ordering::Relaxed);
        }
        self.add_held(need);
        Some(ptr)
    }

    /// `mremap`s a mapping of its own from `bytes` to `to` (moving it if `moves`). `None`
    /// when the kernel refuses (the mapping unchanged), and always where there is no `mremap`.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` is a block of this source's, handed out as a mapping of its own.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        bytes: usize,
        to: usize,
        moves: bool,
    ) -> Option<NonNull<u8>> {
        let flags = if moves { libc::MREMAP_MAYMOVE } else { 0 };
        // SAFETY: our mapping of exactly `bytes` (caller); `mremap` keeps its contents and
        // either resizes it or leaves it untouched (`EFAULT` when the range lies over two
        // kernel mappings, as a block carved from coalesced kept ranges may).
        let moved = unsafe { libc::mremap(ptr.as_ptr().cast(), bytes, to, flags) };
        if moved == libc::MAP_FAILED {
            return None;
        }
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.add_held(to);
        NonNull::new(moved.cast())
    }

    /// No `mremap` here: the heap moves the block.
    ///
    /// # Safety
    /// As on Linux.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    unsafe fn remap(&self, _: NonNull<u8>, _: usize, _: usize, _: bool) -> Option<NonNull<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK, CheckError, Kind, MmapPages, PAGE, kind, request};
    use crate::heap::PageSource;
    use crate::sync::atomic::Ordering;

    /// `check` sees a broken count, counter, alignment and overlap (each planted, then undone).
    #[test]
    fn check_finds_broken_invariants() {
        let pages = MmapPages::new();
        let span = pages.alloc_pages(PAGE, PAGE).unwrap();
        // SAFETY: taken just above.
        unsafe { pages.free_pages(span, PAGE, PAGE) };
        pages.check().unwrap();
        pages.cached.fetch_add(PAGE, Ordering::Relaxed);
        assert!(matches!(pages.check(), Err(CheckError::Cached { .. })));
        pages.cached.fetch_sub(PAGE, Ordering::Relaxed);
        pages.cache.lock().counts[0] += 1;
        assert!(matches!(
            pages.check(),
            Err(CheckError::Count { order: 0, .. })
        ));
        pages.cache.lock().counts[0] -= 1;
        {
            // The 4 KiB span listed as a second 8 KiB one: misaligned or overlapping.
            let mut cache = pages.cache.lock();
            let head = cache.pop(0).unwrap();
            // SAFETY: a cached span of ours, listed under the wrong size for this check only.
            unsafe { cache.push(head, 1) };
        }
        assert!(matches!(
            pages.check(),
            Err(CheckError::Misaligned { order: 1, .. } | CheckError::Overlap { .. })
        ));
    }

    /// `check` sees a kept counter off and a malformed kept slot (each planted, then undone).
    #[test]
    fn check_finds_broken_kept_ranges() {
        let pages = MmapPages::new();
        let layout = core::alloc::Layout::from_size_align(3 * CHUNK, 8).unwrap();
        let block = pages.alloc_huge(layout).unwrap();
        // SAFETY: taken just above.
        unsafe { pages.free_huge(block, layout) };
        pages.check().unwrap();
        assert_eq!(pages.kept_bytes(), 3 * CHUNK);
        pages.kept.fetch_add(PAGE, Ordering::Relaxed);
        assert!(matches!(pages.check(), Err(CheckError::KeptBytes { .. })));
        pages.kept.fetch_sub(PAGE, Ordering::Relaxed);
        let slot = (0..super::KEEP_SLOTS)
            .find(|&i| pages.cache.lock().kept_len[i] != 0)
            .unwrap();
        pages.cache.lock().kept_len[slot] += 1;
        assert!(matches!(pages.check(), Err(CheckError::Kept { .. })));
        pages.cache.lock().kept_len[slot] -= 1;
        pages.check().unwrap();
    }

    #[test]
    fn routes() {
        assert_eq!(kind(PAGE, PAGE), Kind::Span(0));
        assert_eq!(kind(PAGE, 4 * PAGE), Kind::Span(2));
        assert_eq!(kind(3 * PAGE, PAGE), Kind::Span(2));
        assert_eq!(kind(CHUNK, CHUNK), Kind::Span(9));
        assert_eq!(
            kind(CHUNK + PAGE, PAGE),
            Kind::Direct {
                bytes: CHUNK + PAGE,
                align: PAGE
            }
        );
        assert_eq!(
            kind(PAGE, 2 * CHUNK),
            Kind::Direct {
                bytes: PAGE,
                align: 2 * CHUNK
            }
        );
        assert_eq!(request(0, PAGE), None);
        assert_eq!(request(100, PAGE), None);
        assert_eq!(request(PAGE, 3 * PAGE), None);
        assert_eq!(request(PAGE, 8), Some(Kind::Span(0)));
    }
}
