//! A page source at fixed addresses for the loom models of the heap (`heap.rs`,
//! `pagemap.rs`): first fit in one region that the model allocates once, so every execution
//! of a model sees the same addresses. (The heap's page map walks as many nodes as the
//! addresses' indices say; with the system's addresses, which differ between executions, loom
//! could not replay an execution.)

use core::alloc::Layout;
use core::ptr::NonNull;

use loom::sync::Mutex;
use smpalloc::heap::PageSource;

/// Bytes of the region.
pub(crate) const REGION: usize = 256 * 1024;

/// Pages at fixed addresses: first fit in one region, 4 KiB granules.
pub(crate) struct Fixed {
    pub(crate) base: usize,
    len: usize,
    used: Mutex<Vec<(usize, usize)>>,
}

impl Fixed {
    /// A source over the region at `base` (from [`model`]).
    pub(crate) fn new(base: usize) -> Self {
        Self::within(base, REGION)
    }

    /// A source over `len` bytes at `base`, a part of the region (two heaps of one model).
    #[allow(dead_code)] // Used by heap.rs, not pagemap.rs.
    pub(crate) fn within(base: usize, len: usize) -> Self {
        Self {
            base,
            len,
            used: Mutex::new(Vec::new()),
        }
    }

    /// Bytes handed out and not freed.
    pub(crate) fn held_bytes(&self) -> usize {
        self.used.lock().unwrap().iter().map(|&(_, n)| n).sum()
    }
}

// SAFETY: hands out disjoint, aligned ranges of its region (memory the model owns) until they
// are freed.
unsafe impl PageSource for Fixed {
    fn alloc_pages(&self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let mut used = self.used.lock().unwrap();
        let mut at = self.base;
        while at + bytes <= self.base + self.len {
            if at % align == 0 && used.iter().all(|&(s, n)| at + bytes <= s || s + n <= at) {
                used.push((at, bytes));
                return NonNull::new(core::ptr::with_exposed_provenance_mut(at));
            }
            at += 4096;
        }
        None
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        let mut used = self.used.lock().unwrap();
        let at = ptr.as_ptr().addr();
        let i = used
            .iter()
            .position(|&r| r == (at, bytes))
            .expect("not allocated");
        used.swap_remove(i);
    }
}

/// Runs `f(base)` under loom on a model thread with a 1 MiB stack (the heap's `check` needs
/// more than a model's default), `base` being one region for every execution.
pub(crate) fn model(f: impl Fn(usize) + Sync + Send + 'static) {
    let layout = Layout::from_size_align(REGION, REGION).unwrap();
    // SAFETY: a non-zero size.
    let region = unsafe { std::alloc::alloc(layout) };
    assert!(!region.is_null());
    let base = region.expose_provenance();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    // The TLSF models' executions run long (statistics, check and reclaim of every class);
    // loom's default stops at 1,000 branches.
    builder.max_branches = builder.max_branches.max(20_000);
    let f = std::sync::Arc::new(f);
    builder.check(move || {
        let f = f.clone();
        loom::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || f(base))
            .unwrap()
            .join()
            .unwrap();
    });
    // SAFETY: allocated above with `layout`; no execution runs any more.
    unsafe { std::alloc::dealloc(region, layout) };
}
