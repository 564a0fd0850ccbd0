//! `MmapPages` alone: the alignment of every kind of request the heap makes, no two live
//! blocks overlapping, reuse from the page cache, its bound, `drain` giving memory back to the
//! kernel (seen with `mincore`: an unmapped range is `ENOMEM`), huge blocks resized with
//! `mremap` keeping their contents, bad input, the fork hooks, and threads sharing one source.
//! `check()` after every step.
//!
//! Every test takes `SERIAL`: `drain` and the bound are observed through the address space,
//! which another test's mappings would disturb.
#![cfg(all(feature = "mmap", unix, not(miri)))]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use smpalloc::MmapPages;
use smpalloc::heap::PageSource;

const PAGE: usize = 4096;
const CHUNK: usize = 2 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether every page of `ptr..ptr + bytes` is mapped (`mincore` answers `ENOMEM` for a range
/// with an unmapped page), and how many of them are resident.
fn residency(ptr: NonNull<u8>, bytes: usize) -> Option<usize> {
    let mut vec = vec![0u8; bytes.div_ceil(PAGE)];
    // SAFETY: `mincore` only reads the page tables; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(ptr.as_ptr().cast(), bytes, vec.as_mut_ptr().cast()) };
    if rc != 0 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOMEM)
        );
        return None;
    }
    Some(vec.iter().filter(|&&b| b & 1 != 0).count())
}

/// Writes a pattern over the block and reads it back.
fn touch(ptr: NonNull<u8>, bytes: usize, seed: u8) {
    // SAFETY: the block is ours and `bytes` long.
    let block = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), bytes) };
    for (i, b) in block.iter_mut().enumerate().step_by(512) {
        *b = seed.wrapping_add(i as u8);
    }
    block[bytes - 1] = seed;
    for (i, b) in block.iter().enumerate().step_by(512) {
        assert_eq!(*b, seed.wrapping_add(i as u8));
    }
}

#[test]
fn every_request_is_aligned_and_none_overlap() {
    let _serial = serial();
    let pages = MmapPages::new();
    // (bytes, align): slabs (aligned to their size), map nodes, TLSF pools (page aligned, up
    // to beyond a chunk), odd sizes, alignments above the size and above a chunk.
    let mut requests = Vec::new();
    for order in 0..4 {
        for _ in 0..40 {
            requests.push((PAGE << order, PAGE << order));
        }
    }
    for _ in 0..40 {
        requests.push((PAGE, PAGE));
    }
    for shift in 0..6 {
        requests.push(((256 * 1024) << shift, PAGE));
    }
    for &(bytes, align) in &[
        (3 * PAGE, PAGE),
        (5 * PAGE, 8 * PAGE),
        (PAGE, 64 * PAGE),
        (PAGE, CHUNK),
        (CHUNK, CHUNK),
        (PAGE, 2 * CHUNK),
        (CHUNK + PAGE, 4 * CHUNK),
        (7 * PAGE, 1),
    ] {
        requests.push((bytes, align));
    }
    let mut live = Vec::new();
    for (i, &(bytes, align)) in requests.iter().enumerate() {
        let ptr = pages.alloc_pages(bytes, align).expect("mapped");
        assert_eq!(
            ptr.as_ptr().addr() % align.max(PAGE),
            0,
            "{bytes} at {align}"
        );
        touch(ptr, bytes, i as u8);
        live.push((ptr.as_ptr().addr(), bytes, align, ptr));
    }
    pages.check().unwrap();
    let mut sorted: Vec<_> = live.iter().map(|&(a, b, ..)| (a, b)).collect();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
    assert!(pages.held_bytes() >= sorted.iter().map(|&(_, b)| b).sum::<usize>());
    assert_eq!(pages.peak_bytes(), pages.held_bytes());
    for (_, bytes, align, ptr) in live {
        // SAFETY: taken with `alloc_pages(bytes, align)` above.
        unsafe { pages.free_pages(ptr, bytes, align) };
        pages.check().unwrap();
    }
    assert_eq!(pages.held_bytes(), 0);
    pages.drain();
    assert_eq!(pages.cached_bytes(), 0);
    pages.check().unwrap();
}

#[test]
fn a_freed_span_is_reused_from_the_cache() {
    let _serial = serial();
    let pages = MmapPages::new();
    let a = pages.alloc_pages(2 * PAGE, 2 * PAGE).unwrap();
    // The rest of the chunk is cached, split into halves.
    assert_eq!(pages.cached_bytes(), CHUNK - 2 * PAGE);
    assert_eq!(pages.held_bytes(), 2 * PAGE);
    // SAFETY: taken just above.
    unsafe { pages.free_pages(a, 2 * PAGE, 2 * PAGE) };
    assert_eq!(pages.cached_bytes(), CHUNK);
    pages.check().unwrap();
    let b = pages.alloc_pages(2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(a, b, "the cached span comes back first");
    // A smaller span is split from a cached one, inside the same chunk: no new mapping.
    let c = pages.alloc_pages(PAGE, PAGE).unwrap();
    assert_eq!(pages.cached_bytes(), CHUNK - 3 * PAGE);
    assert_eq!(
        c.as_ptr().addr() / CHUNK,
        b.as_ptr().addr() / CHUNK,
        "split from the chunk"
    );
    pages.check().unwrap();
    // SAFETY: taken above.
    unsafe {
        pages.free_pages(b, 2 * PAGE, 2 * PAGE);
        pages.free_pages(c, PAGE, PAGE);
    }
    pages.drain();
    pages.check().unwrap();
}

#[test]
fn drain_gives_the_memory_back_to_the_kernel() {
    let _serial = serial();
    let pages = MmapPages::new();
    let spans: Vec<_> = (0..256)
        .map(|i| {
            let span = pages.alloc_pages(PAGE, PAGE).unwrap();
            touch(span, PAGE, i as u8);
            span
        })
        .collect();
    for &span in &spans {
        assert_eq!(residency(span, PAGE), Some(1));
    }
    for &span in &spans {
        // SAFETY: taken above.
        unsafe { pages.free_pages(span, PAGE, PAGE) };
    }
    assert_eq!(pages.held_bytes(), 0);
    assert_eq!(pages.cached_bytes(), CHUNK, "one chunk, all cached");
    // Cached: still mapped and resident.
    assert_eq!(residency(spans[7], PAGE), Some(1));
    pages.check().unwrap();
    pages.drain();
    assert_eq!(pages.cached_bytes(), 0);
    pages.check().unwrap();
    for &span in &spans {
        assert_eq!(residency(span, PAGE), None, "still mapped after drain");
    }
    assert_eq!(pages.lost_bytes(), 0);
}

#[test]
fn the_cache_is_bounded_without_reclaim() {
    let _serial = serial();
    let pages = MmapPages::new();
    // 64 MiB of slabs, all freed: the cache keeps at most its floor (8 MiB) once nothing is
    // held, the rest goes back to the kernel as it is freed.
    let spans: Vec<_> = (0..2048)
        .map(|i| {
            let span = pages.alloc_pages(8 * PAGE, 8 * PAGE).unwrap();
            touch(span, 8 * PAGE, i as u8);
            span
        })
        .collect();
    assert_eq!(pages.held_bytes(), 64 << 20);
    let mut unmapped = 0;
    for &span in &spans {
        // SAFETY: taken above.
        unsafe { pages.free_pages(span, 8 * PAGE, 8 * PAGE) };
        // Never above the bound at the start (8 MiB + 64 MiB / 8), and it follows the bound
        // down as the heap frees (up to 4 cached spans unmapped with each free above it).
        assert!(pages.cached_bytes() <= 16 << 20);
    }
    for &span in &spans {
        if residency(span, 8 * PAGE).is_none() {
            unmapped += 1;
        }
    }
    assert!(pages.cached_bytes() <= 8 << 20);
    assert!(unmapped >= 2048 - 256, "only {unmapped} slabs unmapped");
    pages.check().unwrap();
    pages.drain();
    pages.check().unwrap();
}

#[test]
fn huge_blocks_resize_and_keep_their_contents() {
    let _serial = serial();
    let pages = MmapPages::new();
    // A mapping of its own: whole pages rounded up to an eighth of their power of two (6 MiB
    // + 4 KiB is 7 MiB), resized by `mremap` or in place through the kept ranges.
    let layout = Layout::from_size_align(3 * CHUNK + 100, 8).unwrap();
    assert_eq!(pages.huge_usable(layout), 7 << 20);
    let ptr = pages.alloc_huge(layout).unwrap();
    touch(ptr, layout.size(), 3);
    assert_eq!(pages.held_bytes(), 7 << 20);
    let grown = 64 << 20;
    // SAFETY: taken with `alloc_huge(layout)`; the new size forms a layout.
    let moved = unsafe { pages.realloc_huge(ptr, layout, grown) }.expect("mremap grows");
    assert_eq!(pages.held_bytes(), grown);
    pages.check().unwrap();
    // SAFETY: `moved` holds the old contents.
    let old = unsafe { core::slice::from_raw_parts(moved.as_ptr(), layout.size()) };
    for (i, b) in old.iter().enumerate().step_by(512) {
        assert_eq!(*b, 3u8.wrapping_add(i as u8));
    }
    touch(moved, grown, 9);
    let big = Layout::from_size_align(grown, 8).unwrap();
    // SAFETY: resized to `grown`; shrinking keeps the front (and keeps the tail for reuse).
    let shrunk = unsafe { pages.realloc_huge(moved, big, 5 * CHUNK) }.expect("shrinks");
    assert_eq!(shrunk, moved, "shrinking is in place");
    assert_eq!(pages.held_bytes(), 5 * CHUNK);
    assert_eq!(pages.kept_bytes(), grown - 5 * CHUNK);
    pages.check().unwrap();
    // SAFETY: the first 5 chunks of what `touch` wrote.
    assert_eq!(unsafe { *shrunk.as_ptr().add(512) }, 9u8.wrapping_add(0));
    let small = Layout::from_size_align(5 * CHUNK, 8).unwrap();
    // SAFETY: resized to `small`.
    unsafe { pages.free_huge(shrunk, small) };
    assert_eq!(pages.held_bytes(), 0);
    pages.check().unwrap();
    pages.drain();
    assert_eq!(pages.kept_bytes(), 0);
    assert_eq!(
        residency(moved, grown),
        None,
        "drain unmaps the kept ranges"
    );

    // Above 256 KiB at page alignment, a mapping of its own: 300 KiB is 320 KiB (eighths of
    // 512 KiB); in place within it.
    let layout = Layout::from_size_align(300 * 1024, 8).unwrap();
    assert_eq!(pages.huge_usable(layout), 320 * 1024);
    let block = pages.alloc_huge(layout).unwrap();
    // SAFETY: taken with `alloc_huge(layout)`.
    let resized = unsafe { pages.realloc_huge(block, layout, 320 * 1024) };
    assert_eq!(resized, Some(block));
    let layout = Layout::from_size_align(320 * 1024, 8).unwrap();
    // SAFETY: still the block, now of 320 KiB.
    unsafe { pages.free_huge(block, layout) };

    // A span: aligned above a page, its power of two, in place within it, refused across it.
    let layout = Layout::from_size_align(300 * 1024, 2 * PAGE).unwrap();
    assert_eq!(pages.huge_usable(layout), 512 * 1024);
    let span = pages.alloc_huge(layout).unwrap();
    assert_eq!(span.as_ptr().addr() % (512 * 1024), 0);
    // SAFETY: taken with `alloc_huge(layout)`.
    let resized = unsafe { pages.realloc_huge(span, layout, 500 * 1024) };
    assert_eq!(resized, Some(span));
    let layout = Layout::from_size_align(500 * 1024, 2 * PAGE).unwrap();
    // SAFETY: resized to 500 KiB in place.
    let resized = unsafe { pages.realloc_huge(span, layout, 600 * 1024) };
    assert_eq!(resized, None);
    // SAFETY: still the 500 KiB block.
    unsafe { pages.free_huge(span, layout) };

    // Aligned above a page and above a chunk: stays aligned when resized in place.
    let layout = Layout::from_size_align(3 * CHUNK, 4 * CHUNK).unwrap();
    let ptr = pages.alloc_huge(layout).unwrap();
    assert_eq!(ptr.as_ptr().addr() % (4 * CHUNK), 0);
    touch(ptr, layout.size(), 5);
    // SAFETY: taken with `alloc_huge(layout)`.
    let resized = unsafe { pages.realloc_huge(ptr, layout, 2 * CHUNK + PAGE) };
    assert_eq!(resized, Some(ptr), "shrinking is in place");
    let layout = Layout::from_size_align(2 * CHUNK + PAGE, 4 * CHUNK).unwrap();
    // SAFETY: resized to `layout`.
    unsafe { pages.free_huge(ptr, layout) };
    assert_eq!(pages.held_bytes(), 0);
    pages.drain();
    pages.check().unwrap();
}

/// The `large` row of the C benchmarks (issue 16): a freed large block used to be unmapped, so
/// every new one was a fresh mapping whose pages all faulted in again (30x slower than
/// tcmalloc). A freed mapping is kept: the next request it holds takes its front, with its
/// pages still resident (no system call, no fault), and the rest stays kept.
#[test]
fn a_freed_mapping_is_reused_with_its_pages() {
    let _serial = serial();
    let pages = MmapPages::new();
    let four = Layout::from_size_align(4 << 20, 16).unwrap();
    let a = pages.alloc_huge(four).unwrap();
    touch(a, 4 << 20, 1);
    // SAFETY: taken just above.
    unsafe { pages.free_huge(a, four) };
    pages.check().unwrap();
    assert_eq!(
        residency(a, 4 << 20),
        Some(1024),
        "kept: mapped and resident"
    );
    let three = Layout::from_size_align(3 << 20, 16).unwrap();
    let b = pages.alloc_huge(three).unwrap();
    assert_eq!(b, a, "the front of the kept range");
    assert_eq!(residency(b, 3 << 20), Some(768), "no page faults in again");
    assert_eq!(pages.held_bytes(), 3 << 20);
    pages.check().unwrap();
    // A larger request than anything kept grows the kept rest (1 MiB) to its size.
    let six = Layout::from_size_align(6 << 20, 16).unwrap();
    let c = pages.alloc_huge(six).unwrap();
    touch(c, 6 << 20, 2);
    touch(b, 3 << 20, 3);
    pages.check().unwrap();
    // SAFETY: taken above, freed once each.
    unsafe {
        pages.free_huge(b, three);
        pages.free_huge(c, six);
    }
    assert_eq!(pages.held_bytes(), 0);
    pages.check().unwrap();
    pages.drain();
    assert_eq!(pages.kept_bytes(), 0);
    assert_eq!(residency(a, 3 << 20), None);
    pages.check().unwrap();
}

/// The `realloc` row: a huge block grown a page at a time used to be `mremap`ed (or copied,
/// between spans) at almost every step. Now it grows in place, without a system call, into
/// the kept range right after it, and shrinking keeps the tail for the next growth.
#[test]
fn a_mapping_grows_in_place_into_the_kept_range_after_it() {
    let _serial = serial();
    let pages = MmapPages::new();
    let room = Layout::from_size_align(2 << 20, 16).unwrap();
    let r = pages.alloc_huge(room).unwrap();
    // SAFETY: taken just above.
    unsafe { pages.free_huge(r, room) };
    let mut size = 300 * 1024;
    let mut block = pages
        .alloc_huge(Layout::from_size_align(size, 16).unwrap())
        .unwrap();
    assert_eq!(block, r);
    touch(block, size, 5);
    while size + PAGE <= 2 << 20 {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: the live block of `layout`.
        let grown = unsafe { pages.realloc_huge(block, layout, size + PAGE) };
        assert_eq!(grown, Some(block), "{size} + 4 KiB: in place");
        size += PAGE;
        pages.check().unwrap();
    }
    // SAFETY: the first 300 KiB are what `touch` wrote.
    assert_eq!(unsafe { *block.as_ptr().add(1024) }, 5u8.wrapping_add(0));
    let layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: the live block of `layout`; shrinking stays in place.
    block = unsafe { pages.realloc_huge(block, layout, 400 * 1024) }.unwrap();
    assert_eq!(block, r);
    let layout = Layout::from_size_align(400 * 1024, 16).unwrap();
    assert_eq!(pages.kept_bytes(), (2 << 20) - pages.huge_usable(layout));
    pages.check().unwrap();
    // SAFETY: the live block of `layout`.
    unsafe { pages.free_huge(block, layout) };
    assert_eq!(
        pages.kept_bytes(),
        2 << 20,
        "coalesced into one range again"
    );
    pages.check().unwrap();
    pages.drain();
    pages.check().unwrap();
}

/// Freed mappings nobody reuses are not all kept: at most `held / 8` and eight times the
/// largest range kept lately; the rest goes back to the kernel as it is freed.
#[test]
fn kept_mappings_are_bounded() {
    let _serial = serial();
    let pages = MmapPages::new();
    let layout = Layout::from_size_align(3 << 20, 16).unwrap();
    // Blocks with a live one between each two, so the freed ones cannot coalesce.
    let blocks: Vec<_> = (0..40)
        .map(|i| {
            let b = pages.alloc_huge(layout).unwrap();
            touch(b, 3 << 20, i as u8);
            b
        })
        .collect();
    for b in blocks.iter().step_by(2) {
        // SAFETY: taken above, freed once.
        unsafe { pages.free_huge(*b, layout) };
        assert!(pages.kept_bytes() <= pages.held_bytes() / 8 + 8 * (3 << 20));
        pages.check().unwrap();
    }
    let unmapped = blocks
        .iter()
        .step_by(2)
        .filter(|&&b| residency(b, 3 << 20).is_none())
        .count();
    // Kept at most at the end: 60 MiB held / 8 + 8 x 3 MiB, 10 blocks of 3 MiB (12: margin).
    assert!(unmapped >= 20 - 12, "only {unmapped} of 20 unmapped");
    for b in blocks.iter().skip(1).step_by(2) {
        // SAFETY: taken above, freed once.
        unsafe { pages.free_huge(*b, layout) };
        pages.check().unwrap();
    }
    assert!(pages.kept_bytes() <= 8 * (3 << 20));
    pages.drain();
    assert_eq!(pages.kept_bytes(), 0);
    pages.check().unwrap();
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let _serial = serial();
    let pages = MmapPages::new();
    for &(bytes, align) in &[
        (0, PAGE),
        (100, PAGE),
        (PAGE + 1, PAGE),
        (PAGE, 3 * PAGE),
        (PAGE, 0),
        (usize::MAX & !(PAGE - 1), PAGE),
        (PAGE, 1 << 62),
        (1 << 62, PAGE),
    ] {
        assert_eq!(pages.alloc_pages(bytes, align), None, "{bytes} at {align}");
    }
    for layout in [
        Layout::from_size_align(0, 1).unwrap(),
        Layout::from_size_align(1 << 62, 8).unwrap(),
        Layout::from_size_align(PAGE, 1 << 62).unwrap(),
    ] {
        assert_eq!(pages.alloc_huge(layout), None, "{layout:?}");
    }
    assert_eq!(pages.huge_usable(Layout::new::<()>()), 0);
    // A resize the kernel cannot do leaves the block as it was.
    let layout = Layout::from_size_align(3 * CHUNK, 8).unwrap();
    let ptr = pages.alloc_huge(layout).unwrap();
    touch(ptr, layout.size(), 1);
    // SAFETY: taken above; the size forms a layout with align 8.
    assert_eq!(unsafe { pages.realloc_huge(ptr, layout, 1 << 62) }, None);
    assert_eq!(pages.held_bytes(), 3 * CHUNK);
    touch(ptr, layout.size(), 2);
    // SAFETY: taken above, unchanged.
    unsafe { pages.free_huge(ptr, layout) };
    assert_eq!(
        (pages.held_bytes(), pages.cached_bytes(), pages.peak_bytes()),
        (0, 0, 3 * CHUNK)
    );
    pages.check().unwrap();
}

#[test]
fn a_child_forked_with_the_lock_taken_allocates() {
    let _serial = serial();
    static PAGES: MmapPages = MmapPages::new();
    let warm = PAGES.alloc_pages(PAGE, PAGE).unwrap();
    PAGES.lock_for_fork();
    // SAFETY: a fork in a test process; the child only uses the source and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: the image of the thread that took the lock.
        unsafe { PAGES.unlock_after_fork() };
        let ok = PAGES.alloc_pages(PAGE, PAGE).is_some() && PAGES.check().is_ok();
        // SAFETY: ends the child without running the parent's harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: this thread took the lock.
    unsafe { PAGES.unlock_after_fork() };
    let mut status = 0;
    // SAFETY: waits for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    // SAFETY: taken above.
    unsafe { PAGES.free_pages(warm, PAGE, PAGE) };
    PAGES.check().unwrap();
}

#[test]
fn threads_share_one_source() {
    let _serial = serial();
    let pages = MmapPages::new();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let pages = &pages;
            s.spawn(move || {
                let mut live = Vec::new();
                for i in 0..2000usize {
                    let order = (i * 7 + t as usize) % 4;
                    let bytes = PAGE << order;
                    let span = pages.alloc_pages(bytes, bytes).unwrap();
                    assert_eq!(span.as_ptr().addr() % bytes, 0);
                    // SAFETY: ours, `bytes` long.
                    unsafe { span.as_ptr().write_bytes(t, bytes) };
                    live.push((span, bytes));
                    if i % 3 == 0 {
                        let (span, bytes) = live.swap_remove(i % live.len());
                        // SAFETY: every byte is still ours.
                        let seen = unsafe { core::slice::from_raw_parts(span.as_ptr(), bytes) };
                        assert!(seen.iter().all(|&b| b == t), "another thread wrote here");
                        // SAFETY: taken above.
                        unsafe { pages.free_pages(span, bytes, bytes) };
                    }
                }
                for (span, bytes) in live {
                    // SAFETY: ours, `bytes` long.
                    let seen = unsafe { core::slice::from_raw_parts(span.as_ptr(), bytes) };
                    assert!(seen.iter().all(|&b| b == t), "another thread wrote here");
                    // SAFETY: taken above.
                    unsafe { pages.free_pages(span, bytes, bytes) };
                }
            });
        }
    });
    assert_eq!(pages.held_bytes(), 0);
    pages.check().unwrap();
    pages.drain();
    assert_eq!(pages.cached_bytes(), 0);
    pages.check().unwrap();
}

#[test]
fn a_dropped_source_unmaps_its_cache() {
    let _serial = serial();
    let pages = MmapPages::new();
    let span = pages.alloc_pages(PAGE, PAGE).unwrap();
    touch(span, PAGE, 4);
    // SAFETY: taken just above.
    unsafe { pages.free_pages(span, PAGE, PAGE) };
    assert_eq!(residency(span, PAGE), Some(1));
    drop(pages);
    assert_eq!(residency(span, PAGE), None);
}
