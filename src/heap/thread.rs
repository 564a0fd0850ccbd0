//! Thread caches for std programs (docs/design/08-heap.md §"Thread caches (std)"): per thread, per class, two magazines in a
//! *record* that one heap at a time uses, with no atomic read-modify-write on the fast path.
//!
//! Built in std builds on unix (records from `mmap`, the exit hook a pthread key) and under
//! loom (records leaked boxes, the exit hook a loom thread-local's destructor); elsewhere
//! [`Threads`] is empty and every thread uses the CPU slots.

#[cfg(any(loom, all(feature = "std", unix)))]
pub(super) use enabled::*;

#[cfg(not(any(loom, all(feature = "std", unix))))]
pub(super) use disabled::*;

#[cfg(any(loom, all(feature = "std", unix)))]
mod enabled {
    use core::ptr::{self, NonNull};

    use super::super::PageSource;
    use super::super::depot::Depot;
    use super::super::magazine::{CacheCounters, Magazines};
    use super::super::route::{HEAP_CLASSES, MAGAZINE};
    use super::super::stats::{CheckError, load, store};
    use super::os;
    use crate::lock::SpinLock;
    use crate::percpu;
    use crate::sync::atomic::boot::AtomicUsize as BootUsize;
    use crate::sync::atomic::{AtomicUsize, Ordering};
    use crate::sync::{UnsafeCell, loom_const_fn};

    /// Record states (docs/design/08-heap.md §"Thread caches (std)").
    pub(super) const IDLE: usize = 0;
    pub(super) const BOUND: usize = 1;
    pub(super) const ORPHAN: usize = 2;

    /// The heap id of a record bound to no heap (heap ids start at 1; an unnamed heap's is 0).
    pub(super) const NO_HEAP: usize = usize::MAX;

    /// The next heap id (never reused, so a dropped heap's id matches no record again).
    static NEXT_HEAP_ID: BootUsize = BootUsize::new(1);

    /// One class of a thread's cache: the counters next to the magazines, so that the fast
    /// path's counter update and magazine length share a cache line.
    #[repr(C)]
    struct ClassCache {
        counters: CacheCounters,
        /// Written only as T1 allows.
        magazines: UnsafeCell<Magazines>,
    }

    // The fast path indexes the classes with a shift (see `MAGAZINE`); a layout change that
    // breaks this costs a multiplication on every allocation and free.
    #[cfg(not(loom))]
    const _: () = assert!(size_of::<ClassCache>().is_power_of_two());

    impl ClassCache {
        loom_const_fn! {
            fn new() -> Self {
                Self { counters: CacheCounters::new(), magazines: UnsafeCell::new(Magazines::new()) }
            }
        }
    }

    /// One thread's cache: per class two magazines and their counters. `heap` first: it
    /// shares a cache line with the first classes'.
    #[repr(C)]
    pub(crate) struct Record {
        /// The id of the heap the record is bound to, or `NO_HEAP`. Written by the owner when
        /// it binds and by the heap's `Drop` when it unbinds; read on the owner's fast path.
        pub(super) heap: AtomicUsize,
        /// `IDLE`, `BOUND` or `ORPHAN` (T2, T3).
        pub(super) state: AtomicUsize,
        /// The next record of the list that holds this one (a heap's registry or the pool),
        /// accessed under that list's lock.
        pub(super) next: UnsafeCell<*mut Record>,
        classes: [ClassCache; HEAP_CLASSES],
    }

    impl Record {
        #[cfg(not(loom))]
        pub(super) const fn new() -> Self {
            Self {
                heap: AtomicUsize::new(NO_HEAP),
                state: AtomicUsize::new(IDLE),
                next: UnsafeCell::new(ptr::null_mut()),
                classes: [const { ClassCache::new() }; HEAP_CLASSES],
            }
        }

        #[cfg(loom)]
        pub(super) fn new() -> Self {
            Self {
                heap: AtomicUsize::new(NO_HEAP),
                state: AtomicUsize::new(IDLE),
                next: UnsafeCell::new(ptr::null_mut()),
                classes: core::array::from_fn(|_| ClassCache::new()),
            }
        }

        /// Pops an object of `class` from the loaded magazine; `None` when it is empty.
        ///
        /// # Safety
        /// The caller is the record's owner, bound to the heap (T1).
        #[inline(always)]
        pub(crate) unsafe fn pop(&self, class: usize) -> Option<NonNull<u8>> {
            let cache = &self.classes[class];
            let magazines = cache.magazines.get_mut();
            // SAFETY: T1 (caller); the reference ends before `magazines` does.
            let m = unsafe { magazines.deref() };
            let object = m.loaded.0.pop()?;
            cache.counters.allocated();
            Some(object)
        }

        /// Pushes `ptr` onto the loaded magazine; `false` (nothing done) when it is full.
        ///
        /// # Safety
        /// As for [`pop`](Self::pop); `ptr` is an object of `class` of that heap, not freed
        /// since.
        #[inline(always)]
        pub(crate) unsafe fn push(&self, ptr: NonNull<u8>, class: usize) -> bool {
            let cache = &self.classes[class];
            let magazines = cache.magazines.get_mut();
            // SAFETY: T1 (caller); the reference ends before `magazines` does.
            let m = unsafe { magazines.deref() };
            debug_assert!(
                !m.loaded.0.contains(&ptr),
                "SmpHeap::deallocate: double free"
            );
            if m.loaded.0.try_push(ptr).is_err() {
                return false;
            }
            cache.counters.freed();
            true
        }

        /// Pops an object of `class` (refilling from the depot when the magazines are empty).
        ///
        /// # Safety
        /// The caller is the record's owner, bound to the heap of `depot` (T1).
        #[inline(always)]
        pub(crate) unsafe fn alloc<P: PageSource>(
            &self,
            class: usize,
            depot: &Depot,
            pages: &P,
        ) -> Option<NonNull<u8>> {
            let cache = &self.classes[class];
            let magazines = cache.magazines.get_mut();
            // SAFETY: T1 (caller); the reference ends before `magazines` does.
            let m = unsafe { magazines.deref() };
            let counters = &cache.counters;
            let object = match m.loaded.0.pop() {
                Some(object) => object,
                None => m.refill(counters, depot, class, pages)?,
            };
            counters.allocated();
            Some(object)
        }

        /// Pushes `ptr` (spilling to the depot when the magazines are full).
        ///
        /// # Safety
        /// As for [`alloc`](Self::alloc); `ptr` is an object of `class` of that heap, not
        /// freed since.
        #[inline(always)]
        pub(crate) unsafe fn free<P: PageSource>(
            &self,
            ptr: NonNull<u8>,
            class: usize,
            depot: &Depot,
            pages: &P,
        ) {
            let cache = &self.classes[class];
            let magazines = cache.magazines.get_mut();
            // SAFETY: T1 (caller); the reference ends before `magazines` does.
            let m = unsafe { magazines.deref() };
            debug_assert!(
                !m.loaded.0.contains(&ptr),
                "SmpHeap::deallocate: double free"
            );
            let counters = &cache.counters;
            if m.loaded.0.try_push(ptr).is_err() {
                // SAFETY: caller.
                unsafe { m.spill(counters, depot, class, pages, ptr) };
            }
            counters.freed();
        }

        /// Hands every cached object back to the class layer.
        ///
        /// # Safety
        /// T1: the caller is the owner (bound), or holds the heap's registry lock and the
        /// record is `ORPHAN`, or is the heap's `Drop`.
        unsafe fn flush<P: PageSource>(&self, depot: &Depot, pages: &P) {
            for (class, cache) in self.classes.iter().enumerate() {
                let magazines = cache.magazines.get_mut();
                // SAFETY: caller (T1).
                let m = unsafe { magazines.deref() };
                m.drain(&cache.counters, depot, class, pages);
            }
        }

        /// Folds the (flushed) record's counters into `retired` and zeroes them (T4).
        fn retire(&self, retired: &[AtomicUsize; HEAP_CLASSES]) {
            for (cache, total) in self.classes.iter().zip(retired) {
                let counters = &cache.counters;
                debug_assert_eq!(counters.fill(), 0, "a retired record holds objects");
                store(total, load(total).wrapping_add(counters.take_net()));
            }
        }

        /// Checks the record's magazines (the caller may read them: T1) and appends their
        /// objects of `class` to `out`.
        ///
        /// # Safety
        /// As for [`flush`](Self::flush).
        unsafe fn check_class(
            &self,
            class: usize,
            out: &mut arrayvec::ArrayVec<NonNull<u8>, { 2 * MAGAZINE }>,
        ) -> Result<(), CheckError> {
            let error = |what| CheckError::Magazine { class, what };
            let cache = &self.classes[class];
            let magazines = cache.magazines.get_mut();
            // SAFETY: caller (T1); read only, and the reference ends before `magazines` does.
            let m = unsafe { &*magazines.deref() };
            let previous = m.previous.0.len();
            if previous != 0 && previous != MAGAZINE {
                return Err(error("a previous magazine is neither full nor empty"));
            }
            if cache.counters.fill() != m.len() {
                return Err(error(
                    "a thread cache's counters disagree with its magazines",
                ));
            }
            out.extend(m.objects().copied());
            Ok(())
        }
    }

    /// The records bound to one heap.
    struct Registry {
        head: *mut Record,
        len: usize,
    }

    // SAFETY: the pointers name records, which live for the whole process and are shared under
    // the registry lock and T1-T3.
    unsafe impl Send for Registry {}

    /// A heap's side of the thread caches: its id, the records bound to it, and the counts of
    /// records that left.
    pub(crate) struct Threads {
        /// 0 until a record first binds, then unique.
        id: AtomicUsize,
        registry: SpinLock<Registry>,
        /// Allocations minus frees of records that left the registry, per class (T4); written
        /// under the registry lock.
        retired: [AtomicUsize; HEAP_CLASSES],
    }

    impl Threads {
        /// Thread caches are built.
        pub(crate) const ENABLED: bool = true;

        #[cfg(not(loom))]
        pub(crate) const fn new() -> Self {
            Self {
                id: AtomicUsize::new(0),
                registry: SpinLock::new(Registry {
                    head: ptr::null_mut(),
                    len: 0,
                }),
                retired: [const { AtomicUsize::new(0) }; HEAP_CLASSES],
            }
        }

        #[cfg(loom)]
        pub(crate) fn new() -> Self {
            Self {
                id: AtomicUsize::new(0),
                registry: SpinLock::new(Registry {
                    head: ptr::null_mut(),
                    len: 0,
                }),
                retired: core::array::from_fn(|_| AtomicUsize::new(0)),
            }
        }

        /// The calling thread's record when it is bound to this heap: one thread-local load,
        /// two plain loads and a compare.
        #[inline(always)]
        pub(crate) fn current(&self) -> Option<&'static Record> {
            let record = os::current();
            if record.addr() <= os::BINDING {
                return None;
            }
            // SAFETY: a thread-local record pointer that is neither null nor dead names this
            // thread's record, which is never freed.
            let record = unsafe { &*record };
            (record.heap.load(Ordering::Relaxed) == self.id.load(Ordering::Relaxed))
                .then_some(record)
        }

        /// Binds the calling thread's record (taking one first if it has none) to this heap,
        /// collecting orphans on the way; `None` when the thread should use the CPU slots: a
        /// CPU-id source is registered, the thread is exiting, its record serves another heap,
        /// or no record could be had.
        #[cold]
        #[inline(never)]
        pub(crate) fn bind<P: PageSource>(
            &self,
            depot: &Depot,
            pages: &P,
        ) -> Option<&'static Record> {
            if percpu::has_cpu_source() {
                return None;
            }
            let mut record = os::current();
            // `BINDING`: a nested call while this thread takes its record (R1): CPU slots.
            if record.addr() == os::DEAD || record.addr() == os::BINDING {
                return None;
            }
            if record.is_null() {
                record = os::adopt()?;
            }
            // SAFETY: this thread's record (never freed).
            let r = unsafe { &*record };
            if r.heap.load(Ordering::Relaxed) != NO_HEAP {
                return None;
            }
            // T2: a heap's `Drop` emptied the magazines before its Release CAS to `IDLE`.
            if r.state.load(Ordering::Acquire) != IDLE {
                return None;
            }
            let id = self.id();
            let mut registry = self.registry.lock();
            self.collect_locked(&mut registry, depot, pages);
            r.state.store(BOUND, Ordering::Relaxed);
            r.heap.store(id, Ordering::Relaxed);
            // SAFETY: the registry lock guards `next` of the records it holds; `r` joins it.
            unsafe { *r.next.get_mut().deref() = registry.head };
            registry.head = record;
            registry.len += 1;
            Some(r)
        }

        /// Takes the registry lock, then the process-wide record pool's, and keeps them
        /// (docs/design/08-heap.md §"Fork").
        pub(crate) fn lock_for_fork(&self) {
            self.registry.lock_held();
            os::lock_for_fork();
        }

        /// Releases what [`lock_for_fork`](Self::lock_for_fork) took.
        ///
        /// # Safety
        /// The caller (or the forked child of it) holds them from `lock_for_fork`.
        pub(crate) unsafe fn unlock_after_fork(&self) {
            // SAFETY: caller: held since `lock_for_fork`.
            unsafe {
                os::unlock_after_fork();
                self.registry.unlock_held();
            }
        }

        /// This heap's id, named on first use.
        fn id(&self) -> usize {
            let id = self.id.load(Ordering::Relaxed);
            if id != 0 {
                return id;
            }
            let fresh = NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed);
            match self
                .id
                .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => fresh,
                Err(named) => named,
            }
        }

        /// Flushes the calling thread's record when it is bound to this heap.
        pub(crate) fn flush_current<P: PageSource>(&self, depot: &Depot, pages: &P) {
            if let Some(record) = self.current() {
                // SAFETY: T1: the owner, bound to this heap.
                unsafe { record.flush(depot, pages) };
            }
        }

        /// Collects the orphans: flushed, retired, unlinked, back to the pool (T2-T4).
        pub(crate) fn collect<P: PageSource>(&self, depot: &Depot, pages: &P) {
            let mut registry = self.registry.lock();
            self.collect_locked(&mut registry, depot, pages);
        }

        fn collect_locked<P: PageSource>(&self, registry: &mut Registry, depot: &Depot, pages: &P) {
            let mut record = core::mem::replace(&mut registry.head, ptr::null_mut());
            let mut kept = ptr::null_mut();
            while let Some(current) = NonNull::new(record) {
                // SAFETY: records are never freed.
                let r = unsafe { current.as_ref() };
                // SAFETY: `next` is guarded by the registry lock we hold.
                record = unsafe { *r.next.get_mut().deref() };
                // T2: Acquire pairs with the exit hook's Release CAS.
                if r.state.load(Ordering::Acquire) == ORPHAN {
                    // SAFETY: T1: an orphan, under the registry lock.
                    unsafe { r.flush(depot, pages) };
                    r.retire(&self.retired);
                    registry.len -= 1;
                    // SAFETY: T3: the heap that collects an orphan releases it; no list holds
                    // it any more and its owner is gone.
                    unsafe { os::release(current.as_ptr()) };
                } else {
                    // SAFETY: as above.
                    unsafe { *r.next.get_mut().deref() = kept };
                    kept = current.as_ptr();
                }
            }
            registry.head = kept;
        }

        /// Unbinds every record (the heap is being dropped): flushes them, then moves live
        /// owners' records to `IDLE` and releases the orphans (T2, T3).
        pub(crate) fn unbind_all<P: PageSource>(&self, depot: &Depot, pages: &P) {
            let mut registry = self.registry.lock();
            let mut record = core::mem::replace(&mut registry.head, ptr::null_mut());
            registry.len = 0;
            while let Some(current) = NonNull::new(record) {
                // SAFETY: records are never freed.
                let r = unsafe { current.as_ref() };
                // SAFETY: `next` is guarded by the registry lock we hold.
                record = unsafe { *r.next.get_mut().deref() };
                // SAFETY: T1: the heap's `Drop` (no owner is inside a call on it).
                unsafe { r.flush(depot, pages) };
                r.retire(&self.retired);
                r.heap.store(NO_HEAP, Ordering::Relaxed);
                // T2/T3: Release publishes the emptied magazines to an owner that rebinds.
                match r
                    .state
                    .compare_exchange(BOUND, IDLE, Ordering::Release, Ordering::Acquire)
                {
                    Ok(_) => {}
                    // SAFETY: T3: the owner exited (ORPHAN): the heap releases the record.
                    Err(_) => unsafe { os::release(current.as_ptr()) },
                }
            }
        }

        /// Allocations minus frees and cached objects of `class` over every record bound to
        /// this heap and those that left; and the number of records bound.
        pub(crate) fn counts(&self, class: usize) -> (usize, usize, usize) {
            let registry = self.registry.lock();
            let mut net = load(&self.retired[class]);
            let mut fill = 0;
            let mut record = registry.head;
            while let Some(current) = NonNull::new(record) {
                // SAFETY: records are never freed; `next` is guarded by the registry lock.
                let r = unsafe { current.as_ref() };
                net = net.wrapping_add(r.classes[class].counters.net());
                fill += r.classes[class].counters.fill();
                // SAFETY: as above.
                record = unsafe { *r.next.get_mut().deref() };
            }
            (net, fill, registry.len)
        }

        /// Checks the calling thread's record (when bound here) and returns its objects of
        /// each class; call [`collect`](Self::collect) first so that no orphan is left.
        pub(crate) fn check_current(
            &self,
            class: usize,
            out: &mut arrayvec::ArrayVec<NonNull<u8>, { 2 * MAGAZINE }>,
        ) -> Result<(), CheckError> {
            match self.current() {
                // SAFETY: T1: the owner, bound to this heap.
                Some(record) => unsafe { record.check_class(class, out) },
                None => Ok(()),
            }
        }
    }
}

/// Platform glue for std on unix: the thread-local record pointer, the exit hook (a pthread
/// key), records from `mmap` and a pool of records whose threads exited.
#[cfg(all(feature = "std", unix, not(loom)))]
mod os {
    #[cfg(not(all(
        feature = "initial-exec-tls",
        target_os = "linux",
        target_arch = "x86_64",
        not(miri)
    )))]
    use core::cell::Cell;
    use core::ptr;

    use super::enabled::{BOUND, IDLE, NO_HEAP, ORPHAN, Record};
    use crate::lock::SpinLock;
    use crate::sync::atomic::Ordering;
    use crate::sync::atomic::boot::AtomicUsize as BootUsize;

    /// The thread-local value of an exiting thread: never bind again (T5).
    pub(super) const DEAD: usize = 1;

    /// The thread-local value while the thread takes its record (R1, docs/design/08-heap.md §"Thread caches (std)"): a
    /// nested allocation (C's `pthread_setspecific` may call `calloc`, which is this heap
    /// when it is the C library's malloc) uses the CPU slots instead of binding again.
    pub(super) const BINDING: usize = 2;

    #[cfg(not(all(
        feature = "initial-exec-tls",
        target_os = "linux",
        target_arch = "x86_64",
        not(miri)
    )))]
    crate::sync::thread_locals! {
        /// This thread's record, null before it has one, `DEAD` once its exit hook ran.
        static CURRENT: Cell<*mut Record> = const { Cell::new(ptr::null_mut()) };
    }

    /// With the `initial-exec-tls` feature on x86-64 Linux: the same thread-local as one
    /// pointer in the static TLS block, read with two instructions (`@gottpoff`, then a load
    /// relative to `%fs`) instead of std's `thread_local!`, which in a shared object costs a
    /// call to `__tls_get_addr` per access (stable Rust has no initial-exec model).
    #[cfg(all(
        feature = "initial-exec-tls",
        target_os = "linux",
        target_arch = "x86_64",
        not(miri)
    ))]
    use ie::CURRENT;

    #[cfg(all(
        feature = "initial-exec-tls",
        target_os = "linux",
        target_arch = "x86_64",
        not(miri)
    ))]
    mod ie {
        use super::Record;

        // One zero-initialised pointer in `.tbss` (null: no record yet), hidden so that a
        // shared object does not export it. Initial-exec: a shared object holding it must be
        // loaded at startup (or fit glibc's surplus static TLS when `dlopen`ed).
        core::arch::global_asm!(
            ".pushsection .tbss.__smpalloc_thread_record,\"awT\",@nobits",
            ".p2align 3",
            ".globl __smpalloc_thread_record",
            ".hidden __smpalloc_thread_record",
            ".type __smpalloc_thread_record,@object",
            ".size __smpalloc_thread_record,8",
            "__smpalloc_thread_record:",
            ".zero 8",
            ".popsection",
        );

        /// The thread's record pointer, `Cell`-like.
        pub(super) struct Slot;

        pub(super) static CURRENT: Slot = Slot;

        impl Slot {
            #[inline(always)]
            pub(super) fn get(&self) -> *mut Record {
                let value: usize;
                // SAFETY: reads the calling thread's copy of `__smpalloc_thread_record`, an
                // 8-byte aligned TLS object defined above: its offset from the thread pointer
                // comes from the GOT (initial-exec), the load is `%fs`-relative.
                unsafe {
                    core::arch::asm!(
                        "mov {value}, qword ptr [rip + __smpalloc_thread_record@GOTTPOFF]",
                        "mov {value}, qword ptr fs:[{value}]",
                        value = out(reg) value,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                core::ptr::with_exposed_provenance_mut(value)
            }

            #[inline(always)]
            pub(super) fn set(&self, record: *mut Record) {
                let value = record.expose_provenance();
                // SAFETY: writes the calling thread's copy of the TLS object (as in `get`).
                unsafe {
                    core::arch::asm!(
                        "mov {offset}, qword ptr [rip + __smpalloc_thread_record@GOTTPOFF]",
                        "mov qword ptr fs:[{offset}], {value}",
                        offset = out(reg) _,
                        value = in(reg) value,
                        options(nostack, preserves_flags),
                    );
                }
            }
        }
    }

    #[inline(always)]
    pub(super) fn current() -> *mut Record {
        CURRENT.get()
    }

    /// Records whose threads exited, for the next threads (never unmapped: T3 needs records
    /// to outlive both their heap and their thread).
    struct Pool {
        head: *mut Record,
        mapped: usize,
        pooled: usize,
    }

    // SAFETY: the pointers name records, shared under the pool lock.
    unsafe impl Send for Pool {}

    static POOL: SpinLock<Pool> = SpinLock::new(Pool {
        head: ptr::null_mut(),
        mapped: 0,
        pooled: 0,
    });

    /// The pthread key whose destructor is the exit hook, plus one (0: not created yet).
    static KEY: BootUsize = BootUsize::new(0);

    /// Records mapped so far and records in the pool, process-wide.
    pub(crate) fn records() -> (usize, usize) {
        let pool = POOL.lock();
        (pool.mapped, pool.pooled)
    }

    /// The exit hook's key, created on first use (creation does not allocate in glibc).
    fn key() -> Option<libc::pthread_key_t> {
        let key = KEY.load(Ordering::Acquire);
        if key != 0 {
            return Some((key - 1) as libc::pthread_key_t);
        }
        let mut fresh: libc::pthread_key_t = 0;
        // SAFETY: `fresh` is a valid out-pointer; `on_exit` has the destructor's signature.
        if unsafe { libc::pthread_key_create(&mut fresh, Some(on_exit)) } != 0 {
            return None;
        }
        match KEY.compare_exchange(0, fresh as usize + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(fresh),
            Err(key) => {
                // SAFETY: `fresh` was created above and never used.
                unsafe { libc::pthread_key_delete(fresh) };
                Some((key - 1) as libc::pthread_key_t)
            }
        }
    }

    /// Gives the calling thread a record (from the pool, else mapped) and registers its exit
    /// hook; `None` when no key or no memory. The thread-local holds `BINDING` meanwhile (R1).
    pub(super) fn adopt() -> Option<*mut Record> {
        CURRENT.set(BINDING as *mut Record);
        let record = adopt_record();
        CURRENT.set(record.unwrap_or(ptr::null_mut()));
        record
    }

    fn adopt_record() -> Option<*mut Record> {
        let key = key()?;
        let record = match pop() {
            Some(record) => record,
            None => map()?,
        };
        // SAFETY: a valid key. glibc's `pthread_setspecific` of a key above 31 `calloc`s the
        // thread's second-level block: with this heap as malloc that nests here (R1).
        if unsafe { libc::pthread_setspecific(key, record.cast()) } != 0 {
            // SAFETY: the record is ours and idle.
            unsafe { release(record) };
            return None;
        }
        Some(record)
    }

    /// Takes the record pool's lock and keeps it (`Threads::lock_for_fork`).
    pub(super) fn lock_for_fork() {
        POOL.lock_held();
    }

    /// # Safety
    /// The caller (or the forked child of it) holds the pool's lock from `lock_for_fork`.
    pub(super) unsafe fn unlock_after_fork() {
        // SAFETY: caller.
        unsafe { POOL.unlock_held() };
    }

    fn pop() -> Option<*mut Record> {
        let mut pool = POOL.lock();
        let record = ptr::NonNull::new(pool.head)?;
        // SAFETY: records are never freed; `next` is guarded by the pool lock we hold.
        pool.head = unsafe { *record.as_ref().next.get_mut().deref() };
        pool.pooled -= 1;
        Some(record.as_ptr())
    }

    fn map() -> Option<*mut Record> {
        let bytes = size_of::<Record>().next_multiple_of(4096);
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let memory = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if memory == libc::MAP_FAILED {
            return None;
        }
        let record = memory.cast::<Record>();
        // SAFETY: fresh memory of at least `size_of::<Record>()` bytes, page-aligned.
        unsafe { record.write(Record::new()) };
        POOL.lock().mapped += 1;
        Some(record)
    }

    /// Puts an idle, empty record in the pool (T3: its one releaser calls this once).
    ///
    /// # Safety
    /// No list holds the record and no thread will use it again.
    pub(super) unsafe fn release(record: *mut Record) {
        // SAFETY: records are never freed.
        let r = unsafe { &*record };
        r.heap.store(NO_HEAP, Ordering::Relaxed);
        r.state.store(IDLE, Ordering::Relaxed);
        let mut pool = POOL.lock();
        // SAFETY: the record is ours (caller); its `next` joins the pool under its lock.
        unsafe { *r.next.get_mut().deref() = pool.head };
        pool.head = record;
        pool.pooled += 1;
    }

    /// The pthread key's destructor: the thread is exiting (T5, then T2/T3).
    unsafe extern "C" fn on_exit(value: *mut libc::c_void) {
        CURRENT.set(DEAD as *mut Record);
        let record = value.cast::<Record>();
        // SAFETY: the value set by `adopt`: this thread's record, never freed.
        let r = unsafe { &*record };
        // T2: Release publishes the thread's last magazine writes to the collecting heap. T3:
        // on failure (`IDLE`), Acquire orders the heap's `Drop`, which flushed the magazines
        // before its Release CAS, before the release and so before the record's next owner.
        if r.state
            .compare_exchange(BOUND, ORPHAN, Ordering::Release, Ordering::Acquire)
            .is_err()
        {
            // IDLE (T3): no heap holds it.
            // SAFETY: no list holds an idle record and the thread uses it no more.
            unsafe { release(record) };
        }
    }
}

/// Loom glue: the exit hook is a loom thread-local's destructor; records are leaked boxes that
/// a released record's pool (a loom mutex, as the std glue's pool is a lock) hands to the next
/// thread, and adoptions and releases are counted (a model checks each record is released
/// exactly once).
#[cfg(loom)]
mod os {
    use core::cell::Cell;
    use core::ptr;
    use std::boxed::Box;
    use std::vec::Vec;

    use loom::sync::Mutex;

    use super::enabled::{BOUND, IDLE, NO_HEAP, ORPHAN, Record};
    use crate::sync::atomic::Ordering;
    use crate::sync::atomic::boot::AtomicUsize as BootUsize;

    pub(super) const DEAD: usize = 1;
    pub(super) const BINDING: usize = 2;

    /// No record pool under loom.
    pub(super) fn lock_for_fork() {}

    /// # Safety
    /// None needed: nothing is held.
    pub(super) unsafe fn unlock_after_fork() {}

    struct Current(Cell<*mut Record>);

    impl Drop for Current {
        fn drop(&mut self) {
            let record = self.0.get();
            if record.is_null() {
                return;
            }
            // SAFETY: this thread's record, leaked.
            let r = unsafe { &*record };
            // As in the std glue's exit hook (T2, T3).
            if r.state
                .compare_exchange(BOUND, ORPHAN, Ordering::Release, Ordering::Acquire)
                .is_err()
            {
                // SAFETY: T3: idle, no list holds it.
                unsafe { release(record) };
            }
        }
    }

    crate::sync::thread_locals! {
        static CURRENT: Current = Current(Cell::new(ptr::null_mut()));
    }

    // Process-wide counts across model executions, not modeled: boot cells (`sync`).
    static ADOPTED: BootUsize = BootUsize::new(0);
    static RELEASED: BootUsize = BootUsize::new(0);

    /// Records adopted and released so far (process-wide, across model executions).
    pub(crate) fn records() -> (usize, usize) {
        (
            ADOPTED.load(Ordering::SeqCst),
            RELEASED.load(Ordering::SeqCst),
        )
    }

    pub(super) fn current() -> *mut Record {
        CURRENT.with(|c| c.0.get())
    }

    /// A released record waiting for a new thread (the std glue's pool, modeled: its lock
    /// orders a releaser before the next adopter, and nothing else does).
    struct Pooled(*mut Record);

    // SAFETY: a pooled record is idle: no thread uses it until one adopts it (T3), and the
    // pool's lock hands it over.
    unsafe impl Send for Pooled {}

    loom::lazy_static! {
        static ref POOL: Mutex<Vec<Pooled>> = Mutex::new(Vec::new());
    }

    /// A released record if the pool has one (as in the std glue), else a new leaked box.
    pub(super) fn adopt() -> Option<*mut Record> {
        let pooled = POOL.lock().unwrap().pop();
        let record = match pooled {
            Some(Pooled(record)) => record,
            None => Box::into_raw(Box::new(Record::new())),
        };
        ADOPTED.fetch_add(1, Ordering::SeqCst);
        CURRENT.with(|c| c.0.set(record));
        Some(record)
    }

    /// Pools the record for the next thread (as in the std glue) and counts the release.
    ///
    /// # Safety
    /// As in the std glue: the record's one releaser (T3).
    pub(super) unsafe fn release(record: *mut Record) {
        // SAFETY: records are leaked boxes, never freed.
        let r = unsafe { &*record };
        r.heap.store(NO_HEAP, Ordering::Relaxed);
        r.state.store(IDLE, Ordering::Relaxed);
        POOL.lock().unwrap().push(Pooled(record));
        RELEASED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Without thread caches: every thread uses the CPU slots.
#[cfg(not(any(loom, all(feature = "std", unix))))]
mod disabled {
    use core::ptr::NonNull;

    use super::super::PageSource;
    use super::super::depot::Depot;
    use super::super::route::MAGAZINE;
    use super::super::stats::CheckError;

    /// No thread caches in this build.
    pub(crate) enum Record {}

    impl Record {
        pub(crate) unsafe fn pop(&self, _: usize) -> Option<NonNull<u8>> {
            match *self {}
        }

        pub(crate) unsafe fn push(&self, _: NonNull<u8>, _: usize) -> bool {
            match *self {}
        }

        pub(crate) unsafe fn alloc<P: PageSource>(
            &self,
            _: usize,
            _: &Depot,
            _: &P,
        ) -> Option<NonNull<u8>> {
            match *self {}
        }

        pub(crate) unsafe fn free<P: PageSource>(
            &self,
            _: NonNull<u8>,
            _: usize,
            _: &Depot,
            _: &P,
        ) {
            match *self {}
        }
    }

    /// No thread caches in this build.
    pub(crate) struct Threads;

    impl Threads {
        /// Thread caches are not built.
        pub(crate) const ENABLED: bool = false;

        pub(crate) const fn new() -> Self {
            Threads
        }

        #[inline(always)]
        pub(crate) fn current(&self) -> Option<&'static Record> {
            None
        }

        #[inline(always)]
        pub(crate) fn bind<P: PageSource>(&self, _: &Depot, _: &P) -> Option<&'static Record> {
            None
        }

        pub(crate) fn flush_current<P: PageSource>(&self, _: &Depot, _: &P) {}

        pub(crate) fn lock_for_fork(&self) {}

        pub(crate) unsafe fn unlock_after_fork(&self) {}

        pub(crate) fn collect<P: PageSource>(&self, _: &Depot, _: &P) {}

        pub(crate) fn unbind_all<P: PageSource>(&self, _: &Depot, _: &P) {}

        pub(crate) fn counts(&self, _: usize) -> (usize, usize, usize) {
            (0, 0, 0)
        }

        pub(crate) fn check_current(
            &self,
            _: usize,
            _: &mut arrayvec::ArrayVec<NonNull<u8>, { 2 * MAGAZINE }>,
        ) -> Result<(), CheckError> {
            Ok(())
        }
    }
}

/// Thread-cache records mapped so far and records waiting in the pool for new threads,
/// process-wide: mapped records are never unmapped, so `mapped` is bounded by the most threads
/// that used a heap at once (docs/design/08-heap.md §"Thread caches (std)"). `(0, 0)` in builds without thread caches.
pub fn thread_cache_records() -> (usize, usize) {
    #[cfg(any(loom, all(feature = "std", unix)))]
    return os::records();
    #[cfg(not(any(loom, all(feature = "std", unix))))]
    return (0, 0);
}
