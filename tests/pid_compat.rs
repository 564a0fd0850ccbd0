//! The `pid_allocator` crate's tests (its six unit tests and five doctests, RESEARCH.md 1.4)
//! re-pointed at `smpalloc::PidAllocator`, with the weak ones made meaningful, plus regression
//! tests for the seed's verified defects (RESEARCH.md 1.6): `ORDER > 64` panicking in debug
//! builds, no `static` allocator, and immediate reuse of a freed PID.

use smpalloc::bitmap::{BITS, summary_words};
use smpalloc::{Pid, PidAllocator, Policy};

/// The seed's unit tests use `ORDER = 64`.
const ORDER: usize = 64;

const POLICIES: [Policy; 3] = [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree];

// -------------------------------------------------------------------------------------------
// The seed's unit tests (`src/tests.rs`)

#[test]
fn pid_allocate_success() {
    let allocator = PidAllocator::<ORDER>::new();
    assert!(allocator.allocate().is_some());
}

#[test]
fn pid_allocate_unique() {
    let allocator = PidAllocator::<ORDER>::new();
    let pid1 = allocator.allocate().expect("first PID");
    let pid2 = allocator.allocate().expect("second PID");
    assert_ne!(*pid1, *pid2);
}

/// The seed's version dropped each `Pid` at the end of its loop iteration, so it re-allocated
/// PID 0 every time and checked only the loop count. Here every PID is held, so the loop
/// really exhausts the allocator: `ORDER * BITS` distinct PIDs, then `None`.
#[test]
fn pid_recycle_and_reallocate() {
    for policy in POLICIES {
        let allocator = PidAllocator::<ORDER>::new().with_policy(policy);
        let pid = allocator.allocate().expect("a PID");
        let first = *pid;
        drop(pid);
        assert!(!allocator.contains(first));

        let capacity = ORDER * BITS;
        let mut seen = vec![false; capacity];
        let mut held = Vec::with_capacity(capacity);
        for _ in 0..capacity {
            let pid = allocator.allocate().expect("a PID while any is free");
            assert!(
                !core::mem::replace(&mut seen[*pid], true),
                "{policy:?}: duplicate {}",
                *pid
            );
            held.push(pid);
        }
        assert_eq!(held.len(), capacity);
        assert!(seen.iter().all(|&s| s), "every PID handed out once");
        assert!(allocator.allocate().is_none(), "{policy:?}: exhausted");
        assert_eq!(allocator.used(), capacity);
        assert_eq!(allocator.check(), Ok(()));
    }
}

#[test]
fn test_contains_allocated_pid() {
    let allocator = PidAllocator::<ORDER>::new();
    let pid = allocator.allocate().expect("a PID");
    assert!(allocator.contains(*pid));
}

#[test]
fn test_recycle_pid() {
    let allocator = PidAllocator::<ORDER>::new();
    let pid = allocator.allocate().expect("a PID");
    let value = *pid;
    drop(pid);
    assert!(!allocator.contains(value));
}

#[test]
fn test_contains_unallocated_pid() {
    let allocator = PidAllocator::<ORDER>::new();
    assert!(
        !allocator.contains(ORDER * BITS * 2),
        "out of range is not allocated"
    );
    assert!(!allocator.contains(ORDER * BITS));
    assert!(!allocator.contains(usize::MAX));
    assert!(!allocator.contains(0), "nothing allocated yet");
}

// -------------------------------------------------------------------------------------------
// The seed's doctests (`src/allocator.rs`)

/// The struct example: allocate, `contains`, and recycling at the end of a scope.
#[test]
fn doctest_struct_example() {
    let allocator = PidAllocator::<32>::new();
    let number;
    {
        let pid = allocator.allocate().expect("a PID");
        number = *pid;
        assert!(allocator.contains(number));
    }
    assert!(
        !allocator.contains(number),
        "recycled when the handle went out of scope"
    );
}

#[test]
fn doctest_new() {
    let allocator = PidAllocator::<32>::new();
    assert_eq!(allocator.used(), 0);
    assert_eq!(allocator.capacity(), 32 * BITS);
    let default: PidAllocator<32> = PidAllocator::default();
    assert_eq!(default.size(), allocator.size());
}

#[test]
fn doctest_allocate_success() {
    let allocator = PidAllocator::<32>::new();
    let pid = allocator.allocate().expect("a fresh allocator has PIDs");
    assert!(*pid < 32 * BITS);
}

/// The seed's only exhaustion check: `ORDER = 8`, allocate until `None`, then `None` again.
#[test]
fn doctest_exhaustion_order_8() {
    const ORDER: usize = 8;
    for policy in POLICIES {
        let allocator = PidAllocator::<ORDER>::new().with_policy(policy);
        let mut pids = Vec::new();
        while let Some(pid) = allocator.allocate() {
            pids.push(pid);
            assert!(
                pids.len() <= ORDER * BITS,
                "{policy:?}: more PIDs than the capacity"
            );
        }
        assert_eq!(pids.len(), ORDER * BITS);
        assert!(allocator.allocate().is_none());
    }
}

#[test]
fn doctest_contains() {
    let allocator = PidAllocator::<32>::new();
    let pid = allocator.allocate().expect("a PID");
    assert!(allocator.contains(*pid));
    assert!(!allocator.contains(*pid + 1));
}

// -------------------------------------------------------------------------------------------
// Regressions for the seed's defects

/// Fills an allocator completely (checking uniqueness), checks it is exhausted, drops every
/// handle, and fills it again.
fn fill_drop_fill<const O: usize, const S: usize>(allocator: &PidAllocator<O, S>) {
    let capacity = O * BITS;
    for round in 0..2 {
        let mut seen = vec![false; capacity];
        let mut pids = Vec::with_capacity(capacity);
        while let Some(pid) = allocator.allocate() {
            assert!(
                !core::mem::replace(&mut seen[*pid], true),
                "round {round}: duplicate {}",
                *pid
            );
            pids.push(pid);
        }
        assert_eq!(pids.len(), capacity, "round {round}: every PID handed out");
        assert!(allocator.allocate().is_none());
        assert_eq!(allocator.used(), capacity);
        assert_eq!(allocator.check(), Ok(()));
        drop(pids);
        assert_eq!(allocator.used(), 0, "round {round}: every PID recycled");
        assert_eq!(allocator.check(), Ok(()));
    }
}

/// The seed panicked ("attempt to shift left with overflow") once a word index reached 64,
/// then again in `Drop`, aborting the process.
#[test]
fn order_65_works_in_debug_builds() {
    for policy in POLICIES {
        let allocator = PidAllocator::<65, { summary_words(65) }>::new().with_policy(policy);
        fill_drop_fill(&allocator);
    }
}

#[test]
fn order_4096_works_in_debug_builds() {
    for policy in [Policy::NextFit, Policy::LowestFree] {
        let allocator = Box::new(PidAllocator::<4096>::new().with_policy(policy));
        fill_drop_fill(&*allocator);
    }
}

/// An exhausted allocator answers `None`, never a PID someone holds, however often it is
/// asked; the one PID freed is the next one handed out.
#[test]
fn exhaustion_is_none_never_a_duplicate() {
    for policy in POLICIES {
        let allocator = PidAllocator::<1>::new().with_policy(policy);
        let mut pids: Vec<_> = core::iter::from_fn(|| allocator.allocate()).collect();
        assert_eq!(pids.len(), BITS);
        for _ in 0..100 {
            assert!(allocator.allocate().is_none(), "{policy:?}");
            assert!(allocator.allocate_raw().is_none(), "{policy:?}");
        }
        let freed = *pids.swap_remove(17);
        let again = allocator.allocate().expect("the freed PID");
        assert_eq!(*again, freed, "{policy:?}");
        assert!(allocator.allocate().is_none());
        assert_eq!(allocator.check(), Ok(()));
    }
}

/// The seed's `new` was not `const` (it allocated an `Arc`), so no `static` allocator.
#[test]
fn static_allocator() {
    static PIDS: PidAllocator<4> = PidAllocator::new();
    let a: Pid<'static, 4> = PIDS.allocate().expect("a PID");
    let b = std::thread::spawn(|| PIDS.allocate().expect("a PID").into_raw())
        .join()
        .expect("no panic");
    assert_ne!(*a, b);
    assert!(PIDS.contains(*a) && PIDS.contains(b));
    // A `Pid<'static>` can move to another thread and be dropped there.
    let a_id = *a;
    std::thread::spawn(move || drop(a))
        .join()
        .expect("no panic");
    assert!(!PIDS.contains(a_id));
    assert_eq!(PIDS.free(b), Ok(()));
    assert_eq!(PIDS.used(), 0);
    assert_eq!(PIDS.check(), Ok(()));
}

/// The seed reused a freed PID at once (alloc 0, alloc 1, drop 0 -> 0). Next-fit does not;
/// lowest-free-first (the seed's order) does.
#[test]
fn next_fit_does_not_reuse_a_freed_pid_at_once() {
    let next_fit = PidAllocator::<4>::new();
    assert_eq!(
        next_fit.policy(),
        Policy::NextFit,
        "next-fit is the default"
    );
    let p0 = next_fit.allocate().expect("free");
    let p1 = next_fit.allocate().expect("free");
    assert_eq!((*p0, *p1), (0, 1));
    drop(p0);
    assert_eq!(*next_fit.allocate().expect("free"), 2);

    let lowest = PidAllocator::<4>::new().with_policy(Policy::LowestFree);
    let p0 = lowest.allocate().expect("free");
    let p1 = lowest.allocate().expect("free");
    assert_eq!((*p0, *p1), (0, 1));
    drop(p0);
    assert_eq!(*lowest.allocate().expect("free"), 0);

    // Per-CPU next-fit: this thread's IDs still increase past a freed one.
    let per_cpu = PidAllocator::<4>::new().with_policy(Policy::PerCpuNextFit);
    let a = per_cpu.allocate().expect("free");
    let b = per_cpu.allocate().expect("free");
    let first = *a;
    assert_eq!(*b, first + 1);
    drop(a);
    let c = per_cpu.allocate().expect("free");
    assert_eq!(*c, first + 2);
}

/// Next-fit comes round: after the cursor passes the end it wraps to the reserved floor and
/// hands out the freed PIDs in increasing order.
#[test]
fn next_fit_wraps_to_the_floor() {
    let allocator = PidAllocator::<1>::with_reserved(1);
    let mut pids: Vec<_> = core::iter::from_fn(|| allocator.allocate()).collect();
    assert_eq!(
        pids.iter().map(|p| **p).collect::<Vec<_>>(),
        (1..BITS).collect::<Vec<_>>()
    );
    // Free 40 and then 5 (indices are PID - 1).
    let forty = pids.swap_remove(39);
    drop(forty);
    let five = pids.swap_remove(4);
    drop(five);
    let five = allocator.allocate().expect("5 is free");
    assert_eq!(*five, 5);
    let forty = allocator.allocate().expect("40 is free");
    assert_eq!(*forty, 40);
    assert!(allocator.allocate().is_none());
}
