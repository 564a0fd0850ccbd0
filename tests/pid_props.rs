//! Model-based property tests of `PidAllocator`: every `Policy`, reserved ranges of 0, 1 and
//! 300 IDs, handles and raw IDs, specific IDs, ranges, and arceos' `BaseAllocator` /
//! `IdAllocator` traits (`init`, `add_memory`). Each step is compared with a shadow model
//! (`support::IdShadow`) and followed by `check()`.

mod support;

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::select;
use smpalloc::bitmap::{BITS, BitmapError, summary_words};
use smpalloc::id::HINT_SLOTS;
use smpalloc::percpu::current_cpu;
use smpalloc::{AllocError, BaseAllocator, IdAllocator, Pid, PidAllocator, Policy};
use support::IdShadow;
use support::ids::{Pos, ShadowCheck, pick};

fn pos() -> impl Strategy<Value = Pos> {
    (any::<u8>(), any::<u32>()).prop_map(|(a, b)| Pos(a, b))
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1..=4usize,
        3 => 1..=70usize,
        1 => 60..=300usize,
        1 => Just(0usize),
        1 => (usize::MAX - 3)..=usize::MAX,
    ]
}

fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(1usize),
        3 => select(vec![2usize, 4, 8, 64, 128]),
        1 => select(vec![4096usize, 1 << (usize::BITS - 1)]),
        1 => select(vec![0usize, 3, 12]),
    ]
}

/// The allocator's next-fit cursors as the model sees them (only allocations move them).
#[derive(Debug)]
struct Cursors {
    shared: usize,
    per_cpu: [usize; HINT_SLOTS],
}

impl Cursors {
    /// The cursors of an allocator managing `start..end`: the shared one at `start`, the
    /// per-CPU ones spread evenly over the range (`with_reserved` spreads them over
    /// `reserved..capacity`, `init(start, size)` over the new managed range).
    fn new(start: usize, end: usize) -> Self {
        let (reserved, stride) = (start, (end - start) / HINT_SLOTS);
        Self {
            shared: reserved,
            per_cpu: core::array::from_fn(|i| reserved + i * stride),
        }
    }
}

/// The model of one allocator: owned IDs, the managed range, the cursors.
struct PidModel {
    ids: IdShadow,
    cursors: Cursors,
    policy: Policy,
    capacity: usize,
}

impl PidModel {
    fn new(policy: Policy, reserved: usize, capacity: usize) -> Self {
        let reserved = reserved.min(capacity);
        Self {
            ids: IdShadow::new(reserved, capacity),
            cursors: Cursors::new(reserved, capacity),
            policy,
            capacity,
        }
    }

    fn reserved(&self) -> usize {
        self.ids.domain().0
    }

    fn limit(&self) -> usize {
        self.ids.domain().1
    }

    /// The ID `allocate` must return (and records the cursor move); does not take it.
    fn next(&mut self) -> Option<usize> {
        let floor = self.reserved();
        let cursor = match self.policy {
            Policy::LowestFree => return self.ids.lowest_free_from(floor),
            Policy::NextFit => &mut self.cursors.shared,
            Policy::PerCpuNextFit => &mut self.cursors.per_cpu[current_cpu() % HINT_SLOTS],
        };
        let (id, after) = self.ids.next_fit(*cursor, floor, self.capacity);
        *cursor = after;
        id
    }

    /// Where `id` stands for `allocate_specific` / `free`: reserved, out of range, or managed.
    fn managed(&self, id: usize) -> Result<(), BitmapError> {
        if id < self.reserved() {
            Err(BitmapError::Reserved)
        } else if id >= self.limit() {
            Err(BitmapError::OutOfRange)
        } else {
            Ok(())
        }
    }

    fn expect_specific(&self, id: usize) -> Result<(), BitmapError> {
        self.managed(id)?;
        if self.ids.contains(id) {
            Err(BitmapError::AlreadyAllocated)
        } else {
            Ok(())
        }
    }

    fn expect_free(&self, id: usize) -> Result<(), BitmapError> {
        self.managed(id)?;
        if self.ids.contains(id) {
            Ok(())
        } else {
            Err(BitmapError::NotAllocated)
        }
    }

    fn expect_alloc_id(&self, count: usize, align: usize) -> Result<usize, AllocError> {
        if count == 0 || !align.is_power_of_two() {
            return Err(AllocError::InvalidParam);
        }
        self.ids
            .first_fit_range(count, align, self.reserved())
            .ok_or(AllocError::NoMemory)
    }

    fn expect_dealloc_id(&self, start: usize, count: usize) -> Result<(), AllocError> {
        let end = start.checked_add(count).ok_or(AllocError::InvalidParam)?;
        if start < self.reserved() || end > self.limit() || count == 0 {
            return Err(AllocError::InvalidParam);
        }
        if self.ids.all_owned(start, end) {
            Ok(())
        } else {
            Err(AllocError::NotAllocated)
        }
    }

    /// Checks the counts and everything `IdShadow::verify` checks.
    #[track_caller]
    fn verify<const O: usize, const S: usize>(
        &self,
        alloc: &PidAllocator<O, S>,
        touched: &[usize],
        context: &dyn core::fmt::Debug,
    ) {
        self.ids.verify(alloc, touched, context);
        assert_eq!(
            alloc.reserved(),
            self.reserved(),
            "reserved() after {context:?}"
        );
        assert_eq!(
            alloc.size(),
            self.limit() - self.reserved(),
            "size() after {context:?}"
        );
        assert_eq!(
            alloc.available(),
            alloc.size() - self.ids.len(),
            "available() after {context:?}"
        );
        assert_eq!(alloc.capacity(), self.capacity);
        assert_eq!(alloc.policy(), self.policy);
        for &id in touched {
            if id < self.reserved() || id >= self.limit() {
                assert!(
                    !alloc.contains(id),
                    "contains({id}) outside the managed range"
                );
            }
        }
    }
}

/// A `free_range`-style range around the run of the `k`-th owned ID (see `bitmap_props`).
fn run_range(model: &IdShadow, k: usize, shape: u8, extra: usize) -> Option<(usize, usize)> {
    let id = model.nth(k % model.len().max(1))?;
    let (s, e) = model.run_at(id)?;
    Some(match shape {
        0 => (id, 1 + extra % (e - id)),
        1 => (s, e - s),
        2 => (id, e + 1 - id),
        _ => (s.saturating_sub(1), e - s.saturating_sub(1)),
    })
}

// -------------------------------------------------------------------------------------------
// `IdAllocator` operations, driven through either entry point

/// The `IdAllocator` operations both suites drive: ranges and fixed IDs.
#[derive(Debug, Clone)]
enum IdOp {
    AllocId {
        count: usize,
        align: usize,
    },
    DeallocId {
        start: Pos,
        count: usize,
    },
    /// `dealloc_id` of a range shaped around the `k`-th owned run (see `run_range`).
    DeallocRunRange {
        k: usize,
        shape: u8,
        extra: usize,
    },
    AllocFixedId(Pos),
}

fn id_op() -> impl Strategy<Value = IdOp> {
    prop_oneof![
        3 => (count(), align()).prop_map(|(count, align)| IdOp::AllocId { count, align }),
        1 => (pos(), count()).prop_map(|(start, count)| IdOp::DeallocId { start, count }),
        3 => (any::<usize>(), 0..4u8, any::<usize>())
            .prop_map(|(k, shape, extra)| IdOp::DeallocRunRange { k, shape, extra }),
        2 => pos().prop_map(IdOp::AllocFixedId),
    ]
}

/// An entry point for `IdOp`s: the inherent `&self` methods or the `&mut self` trait methods.
trait IdEntry {
    fn alloc_id(&mut self, count: usize, align: usize) -> Result<usize, AllocError>;
    fn alloc_fixed_id(&mut self, id: usize) -> Result<(), AllocError>;
    /// The result where the entry point reports one; `None` for the trait's `()`.
    fn dealloc_id(&mut self, start: usize, count: usize) -> Option<Result<(), AllocError>>;
}

/// The inherent `&self` methods.
struct Inherent<'a, const O: usize, const S: usize>(&'a PidAllocator<O, S>);

impl<const O: usize, const S: usize> IdEntry for Inherent<'_, O, S> {
    fn alloc_id(&mut self, count: usize, align: usize) -> Result<usize, AllocError> {
        self.0.alloc_id(count, align)
    }
    fn alloc_fixed_id(&mut self, id: usize) -> Result<(), AllocError> {
        self.0.alloc_fixed_id(id)
    }
    fn dealloc_id(&mut self, start: usize, count: usize) -> Option<Result<(), AllocError>> {
        Some(self.0.dealloc_id(start, count))
    }
}

/// arceos' `IdAllocator` trait methods.
struct ViaTrait<'a, const O: usize, const S: usize>(&'a mut PidAllocator<O, S>);

impl<const O: usize, const S: usize> IdEntry for ViaTrait<'_, O, S> {
    fn alloc_id(&mut self, count: usize, align: usize) -> Result<usize, AllocError> {
        IdAllocator::alloc_id(self.0, count, align)
    }
    fn alloc_fixed_id(&mut self, id: usize) -> Result<(), AllocError> {
        IdAllocator::alloc_fixed_id(self.0, id)
    }
    fn dealloc_id(&mut self, start: usize, count: usize) -> Option<Result<(), AllocError>> {
        IdAllocator::dealloc_id(self.0, start, count);
        None
    }
}

/// Applies `op` through `entry` and to the model, asserting every reported result (an
/// unreported one is checked by the caller's `verify`: a failed call must change nothing).
/// Ranges touching an ID in `held` (live handles) are not freed: that would be a logic error.
fn apply_id_op(
    entry: &mut impl IdEntry,
    model: &mut PidModel,
    op: &IdOp,
    held: &BTreeSet<usize>,
    context: &str,
    touched: &mut Vec<usize>,
) {
    let capacity = model.capacity;
    let mut dealloc = |model: &mut PidModel, start: usize, count: usize| {
        let want = model.expect_dealloc_id(start, count);
        let end = start.saturating_add(count);
        if want.is_err() || held.range(start..end).next().is_none() {
            if let Some(got) = entry.dealloc_id(start, count) {
                assert_eq!(got, want, "{context} ({start}+{count})");
            }
            if want.is_ok() {
                model.ids.release_range(start, end);
            }
        }
    };
    match *op {
        IdOp::AllocId { count, align } => {
            let want = model.expect_alloc_id(count, align);
            assert_eq!(entry.alloc_id(count, align), want, "{context}");
            if let Ok(start) = want {
                model.ids.take_range(start, start + count);
                touched.extend([start, start + count - 1]);
            }
        }
        IdOp::DeallocId { start, count } => {
            let start = pick(capacity, start);
            dealloc(model, start, count);
            touched.push(start);
        }
        IdOp::DeallocRunRange { k, shape, extra } => {
            if let Some((start, count)) = run_range(&model.ids, k, shape, extra) {
                dealloc(model, start, count);
                touched.extend([start, start + count - 1]);
            }
        }
        IdOp::AllocFixedId(id) => {
            let id = pick(capacity, id);
            let want = model.expect_specific(id).map_err(AllocError::from);
            assert_eq!(entry.alloc_fixed_id(id), want, "{context} ({id})");
            if want.is_ok() {
                model.ids.take(id);
            }
            touched.push(id);
        }
    }
}

// -------------------------------------------------------------------------------------------
// Handles and the inherent `&self` API

#[derive(Debug, Clone)]
enum HandleOp {
    Allocate,
    AllocateRaw,
    AllocateSpecific(Pos),
    AllocateSpecificRaw(Pos),
    /// `free` of any ID (skipped when a live handle holds it: that would be a logic error).
    Free(Pos),
    /// Frees the `k`-th owned ID: drops its handle or `free`s the raw ID.
    FreeOwned(usize),
    /// `Pid::into_raw` of the `k`-th handle.
    IntoRaw(usize),
    /// `unsafe Pid::from_raw` of the `k`-th raw ID.
    FromRaw(usize),
    Id(IdOp),
    Contains(Pos),
}

fn handle_op() -> impl Strategy<Value = HandleOp> {
    prop_oneof![
        6 => Just(HandleOp::Allocate),
        3 => Just(HandleOp::AllocateRaw),
        2 => pos().prop_map(HandleOp::AllocateSpecific),
        2 => pos().prop_map(HandleOp::AllocateSpecificRaw),
        2 => pos().prop_map(HandleOp::Free),
        5 => any::<usize>().prop_map(HandleOp::FreeOwned),
        2 => any::<usize>().prop_map(HandleOp::IntoRaw),
        2 => any::<usize>().prop_map(HandleOp::FromRaw),
        8 => id_op().prop_map(HandleOp::Id),
        1 => pos().prop_map(HandleOp::Contains),
    ]
}

/// The test body for handles: `PidAllocator::<O, S>::with_reserved(reserved)` under `policy`.
fn run_handles<const O: usize, const S: usize>(policy: Policy, reserved: usize, ops: &[HandleOp]) {
    let capacity = PidAllocator::<O, S>::CAPACITY;
    assert_eq!(capacity, O * BITS);
    let alloc = Box::new(PidAllocator::<O, S>::with_reserved(reserved).with_policy(policy));
    let mut model = PidModel::new(policy, reserved, capacity);
    model.verify(&*alloc, &[0, reserved], &"construction");

    let mut handles: Vec<Pid<'_, O, S>> = Vec::new();
    // IDs held by live handles (a subset of the model's owned IDs; the rest are raw).
    let mut held: BTreeSet<usize> = BTreeSet::new();

    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step}: {op:?}");
        let mut touched = Vec::new();
        match *op {
            HandleOp::Allocate => {
                let want = model.next();
                let got = alloc.allocate();
                assert_eq!(got.as_deref().copied(), want, "{context}");
                if let Some(pid) = got {
                    assert_eq!(pid.id(), *pid);
                    model.ids.take(*pid);
                    held.insert(*pid);
                    touched.push(*pid);
                    handles.push(pid);
                }
            }
            HandleOp::AllocateRaw => {
                let want = model.next();
                assert_eq!(alloc.allocate_raw(), want, "{context}");
                if let Some(id) = want {
                    model.ids.take(id);
                    touched.push(id);
                }
            }
            HandleOp::AllocateSpecific(id) => {
                let id = pick(capacity, id);
                let want = model.expect_specific(id);
                let got = alloc.allocate_specific(id);
                assert_eq!(
                    got.as_ref().map(|pid| **pid).map_err(|e| *e),
                    want.map(|()| id),
                    "{context} ({id})"
                );
                if let Ok(pid) = got {
                    model.ids.take(id);
                    held.insert(id);
                    handles.push(pid);
                }
                touched.push(id);
            }
            HandleOp::AllocateSpecificRaw(id) => {
                let id = pick(capacity, id);
                let want = model.expect_specific(id);
                assert_eq!(alloc.allocate_specific_raw(id), want, "{context} ({id})");
                if want.is_ok() {
                    model.ids.take(id);
                }
                touched.push(id);
            }
            HandleOp::Free(id) => {
                let id = pick(capacity, id);
                if !held.contains(&id) {
                    let want = model.expect_free(id);
                    assert_eq!(alloc.free(id), want, "{context} ({id})");
                    if want.is_ok() {
                        model.ids.release(id);
                        assert_eq!(
                            alloc.free(id),
                            Err(BitmapError::NotAllocated),
                            "double free"
                        );
                    }
                }
                touched.push(id);
            }
            HandleOp::FreeOwned(k) => {
                if let Some(id) = model.ids.nth(k % model.ids.len().max(1)) {
                    if held.remove(&id) {
                        let index = handles.iter().position(|pid| **pid == id).expect("held");
                        drop(handles.swap_remove(index));
                    } else {
                        assert_eq!(alloc.free(id), Ok(()), "{context} ({id})");
                    }
                    model.ids.release(id);
                    touched.push(id);
                }
            }
            HandleOp::IntoRaw(k) => {
                if !handles.is_empty() {
                    let pid = handles.swap_remove(k % handles.len());
                    let id = *pid;
                    assert_eq!(pid.into_raw(), id);
                    held.remove(&id);
                    assert!(alloc.contains(id), "into_raw keeps the ID allocated");
                    touched.push(id);
                }
            }
            HandleOp::FromRaw(k) => {
                let raw: Vec<usize> = model
                    .ids
                    .ids()
                    .into_iter()
                    .filter(|id| !held.contains(id))
                    .collect();
                if !raw.is_empty() {
                    let id = raw[k % raw.len()];
                    // SAFETY: `id` is allocated in `alloc` (the model owns it), and no handle
                    // holds it (`held` tracks every live handle), so this handle is its only
                    // owner.
                    let pid = unsafe { Pid::from_raw(&alloc, id) };
                    assert_eq!(*pid, id);
                    held.insert(id);
                    handles.push(pid);
                    touched.push(id);
                }
            }
            HandleOp::Id(ref id_op) => {
                let mut entry = Inherent(&*alloc);
                apply_id_op(&mut entry, &mut model, id_op, &held, &context, &mut touched);
            }
            HandleOp::Contains(id) => touched.push(pick(capacity, id)),
        }
        model.verify(&*alloc, &touched, &context);
        if step % 16 == 15 {
            model.ids.verify_full(&*alloc, &context);
        }
    }
    model.ids.verify_full(&*alloc, &"the end of the sequence");

    // Dropping every handle frees exactly the held IDs; the raw ones stay until freed.
    for pid in handles.drain(..) {
        model.ids.release(*pid);
    }
    model.ids.verify_full(&*alloc, &"dropping every handle");
    for id in model.ids.ids() {
        assert_eq!(alloc.free(id), Ok(()), "freeing raw ID {id}");
    }
    assert_eq!(alloc.used(), 0);
    assert_eq!(alloc.available(), alloc.size());
    assert_eq!(alloc.check(), Ok(()));
}

macro_rules! handle_model_tests {
    ($($name:ident: ($order:expr, $summary:expr), $policy:ident, reserved $reserved:expr,
       cases $cases:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]
            #[test]
            fn $name(ops in proptest::collection::vec(handle_op(), 1..100)) {
                run_handles::<{ $order }, { $summary }>(Policy::$policy, $reserved, &ops);
            }
        }
    )*};
}

handle_model_tests! {
    handles_next_fit_r0: (8, summary_words(8)), NextFit, reserved 0, cases 64;
    handles_next_fit_r1: (8, summary_words(8)), NextFit, reserved 1, cases 64;
    handles_next_fit_r300: (8, summary_words(8)), NextFit, reserved 300, cases 64;
    handles_per_cpu_r0: (8, summary_words(8)), PerCpuNextFit, reserved 0, cases 64;
    handles_per_cpu_r1: (8, summary_words(8)), PerCpuNextFit, reserved 1, cases 64;
    handles_per_cpu_r300: (8, summary_words(8)), PerCpuNextFit, reserved 300, cases 64;
    handles_lowest_free_r0: (8, summary_words(8)), LowestFree, reserved 0, cases 64;
    handles_lowest_free_r1: (8, summary_words(8)), LowestFree, reserved 1, cases 64;
    handles_lowest_free_r300: (8, summary_words(8)), LowestFree, reserved 300, cases 64;
    handles_one_word_r1: (1, summary_words(1)), NextFit, reserved 1, cases 128;
    handles_one_word_lowest_r1: (1, summary_words(1)), LowestFree, reserved 1, cases 128;
    handles_65_words_next_fit_r300: (65, summary_words(65)), NextFit, reserved 300, cases 32;
    handles_65_words_per_cpu_r1: (65, summary_words(65)), PerCpuNextFit, reserved 1, cases 32;
    handles_65_words_lowest_free_r0: (65, summary_words(65)), LowestFree, reserved 0, cases 32;
}

// -------------------------------------------------------------------------------------------
// arceos' traits (`&mut self`, raw IDs), including `init` and `add_memory`

#[derive(Debug, Clone)]
enum TraitOp {
    Init {
        start: Pos,
        size: Pos,
    },
    /// `add_memory` of a range shaped around the managed range: below it (touching), above it
    /// (touching), overlapping it, with a gap, anywhere, or overflowing.
    AddMemory {
        shape: u8,
        a: u16,
        b: u16,
        any: Pos,
    },
    Id(IdOp),
    IsAllocated(Pos),
    /// An operation on an ID at an edge of the managed range (`reserved - 1`, `reserved`,
    /// `limit - 1`, `limit`): `alloc_fixed_id`, `free`, `is_allocated` or `dealloc_id(id, 1)`.
    Edge {
        which: u8,
        action: u8,
    },
    AllocateRaw,
    FreeOwned(usize),
}

fn trait_op() -> impl Strategy<Value = TraitOp> {
    prop_oneof![
        1 => (pos(), pos()).prop_map(|(start, size)| TraitOp::Init { start, size }),
        3 => (0..6u8, any::<u16>(), any::<u16>(), pos())
            .prop_map(|(shape, a, b, any)| TraitOp::AddMemory { shape, a, b, any }),
        10 => id_op().prop_map(TraitOp::Id),
        1 => pos().prop_map(TraitOp::IsAllocated),
        3 => (0..4u8, 0..4u8).prop_map(|(which, action)| TraitOp::Edge { which, action }),
        4 => Just(TraitOp::AllocateRaw),
        3 => any::<usize>().prop_map(TraitOp::FreeOwned),
    ]
}

/// What `add_memory(start, size)` must return (documented errors).
fn expect_add_memory(model: &PidModel, start: usize, size: usize) -> Result<(), AllocError> {
    let (reserved, limit) = model.ids.domain();
    let end = start.checked_add(size).ok_or(AllocError::InvalidParam)?;
    if size == 0 || end > model.capacity {
        return Err(AllocError::InvalidParam);
    }
    if reserved == limit && start <= reserved && end >= limit {
        return Ok(());
    }
    if start < limit && end > reserved {
        return Err(AllocError::MemoryOverlap);
    }
    if end == reserved || start == limit {
        Ok(())
    } else {
        Err(AllocError::InvalidParam)
    }
}

fn run_traits<const O: usize, const S: usize>(policy: Policy, ops: &[TraitOp]) {
    let capacity = PidAllocator::<O, S>::CAPACITY;
    let mut alloc = Box::new(PidAllocator::<O, S>::new().with_policy(policy));
    let mut model = PidModel::new(policy, 0, capacity);
    model.verify(&*alloc, &[], &"construction");

    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step}: {op:?}");
        let mut touched = Vec::new();
        let a: &mut PidAllocator<O, S> = &mut alloc;
        match *op {
            TraitOp::Init { start, size } => {
                let start = pick(capacity, start);
                let size = pick(capacity, size);
                BaseAllocator::init(a, start, size);
                let lo = start.min(capacity);
                let hi = lo.saturating_add(size).min(capacity);
                model.ids.reset(lo, hi);
                model.cursors = Cursors::new(lo, hi);
                touched.extend([lo, hi]);
            }
            TraitOp::AddMemory {
                shape,
                a: x,
                b: y,
                any,
            } => {
                let (reserved, limit) = model.ids.domain();
                let (x, y) = (usize::from(x), usize::from(y));
                let (start, size) = match shape {
                    0 => {
                        let start = reserved.saturating_sub(x % 200);
                        (start, reserved - start)
                    }
                    1 => (limit, 1 + y % 200),
                    2 => (reserved + x % (limit - reserved + 1), 1 + y % 100),
                    3 => (limit + 1 + x % 10, 1 + y % 10),
                    4 => (pick(capacity, any), y % 300),
                    _ => (usize::MAX - x % 4, 1 + y % 8),
                };
                let want = expect_add_memory(&model, start, size);
                assert_eq!(
                    a.add_memory(start, size),
                    want,
                    "{context} ({start}+{size})"
                );
                if want.is_ok() {
                    if reserved == limit {
                        // An empty range restarts: the per-CPU cursors are spread anew.
                        model.cursors.per_cpu = Cursors::new(start, start + size).per_cpu;
                    }
                    model.ids.grow(reserved.min(start), limit.max(start + size));
                }
                touched.extend([start, start.saturating_add(size), reserved, limit]);
            }
            TraitOp::Id(ref id_op) => {
                let mut entry = ViaTrait(&mut *a);
                let no_handles = BTreeSet::new();
                apply_id_op(
                    &mut entry,
                    &mut model,
                    id_op,
                    &no_handles,
                    &context,
                    &mut touched,
                );
            }
            TraitOp::Edge { which, action } => {
                let (reserved, limit) = model.ids.domain();
                let id = [
                    reserved.wrapping_sub(1),
                    reserved,
                    limit.wrapping_sub(1),
                    limit,
                ][usize::from(which)];
                match action {
                    0 => {
                        let want = model.expect_specific(id).map_err(AllocError::from);
                        assert_eq!(IdAllocator::alloc_fixed_id(a, id), want, "{context} ({id})");
                        if want.is_ok() {
                            model.ids.take(id);
                        }
                    }
                    1 => {
                        let want = model.expect_free(id);
                        assert_eq!(a.free(id), want, "{context} ({id})");
                        if want.is_ok() {
                            model.ids.release(id);
                        }
                    }
                    2 => {
                        assert_eq!(
                            a.is_allocated(id),
                            model.ids.contains(id),
                            "{context} ({id})"
                        );
                    }
                    _ => {
                        let want = model.expect_dealloc_id(id, 1);
                        assert_eq!(PidAllocator::dealloc_id(a, id, 1), want, "{context} ({id})");
                        if want.is_ok() {
                            model.ids.release(id);
                        }
                    }
                }
                touched.push(id);
            }
            TraitOp::IsAllocated(id) => {
                let id = pick(capacity, id);
                assert_eq!(
                    a.is_allocated(id),
                    model.ids.contains(id),
                    "{context} ({id})"
                );
                touched.push(id);
            }
            TraitOp::AllocateRaw => {
                let want = model.next();
                assert_eq!(a.allocate_raw(), want, "{context}");
                if let Some(id) = want {
                    model.ids.take(id);
                    touched.push(id);
                }
            }
            TraitOp::FreeOwned(k) => {
                if let Some(id) = model.ids.nth(k % model.ids.len().max(1)) {
                    assert_eq!(a.free(id), Ok(()), "{context} ({id})");
                    model.ids.release(id);
                    touched.push(id);
                }
            }
        }
        let a: &PidAllocator<O, S> = &alloc;
        assert_eq!(
            IdAllocator::size(a),
            model.limit() - model.reserved(),
            "{context}"
        );
        assert_eq!(IdAllocator::used(a), model.ids.len(), "{context}");
        assert_eq!(
            IdAllocator::available(a),
            IdAllocator::size(a) - model.ids.len(),
            "{context}"
        );
        for &id in &touched {
            assert_eq!(
                a.is_allocated(id),
                model.ids.contains(id),
                "is_allocated({id}), {context}"
            );
        }
        model.verify(a, &touched, &context);
        if step % 16 == 15 {
            model.ids.verify_full(a, &context);
        }
    }
    model.ids.verify_full(&*alloc, &"the end of the sequence");
}

macro_rules! trait_model_tests {
    ($($name:ident: ($order:expr, $summary:expr), $policy:ident, cases $cases:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]
            #[test]
            fn $name(ops in proptest::collection::vec(trait_op(), 1..80)) {
                run_traits::<{ $order }, { $summary }>(Policy::$policy, &ops);
            }
        }
    )*};
}

trait_model_tests! {
    traits_next_fit: (8, summary_words(8)), NextFit, cases 96;
    traits_per_cpu: (8, summary_words(8)), PerCpuNextFit, cases 96;
    traits_lowest_free: (8, summary_words(8)), LowestFree, cases 96;
    traits_65_words_next_fit: (65, summary_words(65)), NextFit, cases 32;
}

// -------------------------------------------------------------------------------------------
// Deterministic checks

#[test]
fn documented_errors_and_no_change_on_error() {
    // `LowestFree` frees through `AtomicBitmap::free_bit` on x86: the same errors.
    for policy in [Policy::NextFit, Policy::LowestFree] {
        let alloc = PidAllocator::<8>::with_reserved(300).with_policy(policy);
        let cap = 8 * BITS;
        assert_eq!(alloc.free(0), Err(BitmapError::Reserved));
        assert_eq!(alloc.free(299), Err(BitmapError::Reserved));
        assert_eq!(alloc.free(cap), Err(BitmapError::OutOfRange));
        assert_eq!(alloc.free(usize::MAX), Err(BitmapError::OutOfRange));
        assert_eq!(alloc.free(300), Err(BitmapError::NotAllocated));
        assert_eq!(alloc.used(), 0);
        assert_eq!(alloc.check(), Ok(()));
    }
    let alloc = PidAllocator::<8>::with_reserved(300);
    let cap = 8 * BITS;
    assert_eq!(
        alloc.allocate_specific(299).map(|p| *p),
        Err(BitmapError::Reserved)
    );
    assert_eq!(
        alloc.allocate_specific_raw(cap),
        Err(BitmapError::OutOfRange)
    );
    assert_eq!(alloc.alloc_fixed_id(5), Err(AllocError::InvalidParam));
    assert_eq!(alloc.alloc_fixed_id(cap), Err(AllocError::InvalidParam));
    assert_eq!(alloc.used(), 0);
    assert!(
        !alloc.contains(0),
        "reserved IDs are not reported as allocated"
    );
    assert_eq!(alloc.check(), Ok(()));

    let pid = alloc.allocate().expect("a free ID");
    assert_eq!(*pid, 300, "next-fit starts at the reserved floor");
    assert_eq!(
        alloc.allocate_specific(300).map(|p| *p),
        Err(BitmapError::AlreadyAllocated)
    );
    assert_eq!(alloc.alloc_fixed_id(300), Err(AllocError::MemoryOverlap));
    let raw = alloc.allocate_raw().expect("a free ID");
    assert_eq!(alloc.free(raw), Ok(()));
    assert_eq!(
        alloc.free(raw),
        Err(BitmapError::NotAllocated),
        "double free"
    );
    assert_eq!(alloc.used(), 1, "the double free changed nothing");
    assert_eq!(alloc.dealloc_id(raw, 1), Err(AllocError::NotAllocated));
    assert_eq!(
        alloc.dealloc_id(299, 2),
        Err(AllocError::InvalidParam),
        "starts reserved"
    );
    assert_eq!(
        alloc.dealloc_id(cap - 1, 2),
        Err(AllocError::InvalidParam),
        "leaves the range"
    );
    assert_eq!(
        alloc.dealloc_id(300, 0),
        Err(AllocError::InvalidParam),
        "zero count"
    );
    assert_eq!(
        alloc.dealloc_id(usize::MAX, 2),
        Err(AllocError::InvalidParam),
        "overflow"
    );
    assert_eq!(alloc.alloc_id(0, 1), Err(AllocError::InvalidParam));
    assert_eq!(alloc.alloc_id(1, 3), Err(AllocError::InvalidParam));
    assert_eq!(alloc.alloc_id(cap, 1), Err(AllocError::NoMemory));
    assert_eq!(alloc.used(), 1);
    assert_eq!(alloc.check(), Ok(()));
    drop(pid);
    assert_eq!(alloc.used(), 0);
}

#[test]
fn reserved_range_is_clamped_to_the_capacity() {
    let alloc = PidAllocator::<2>::with_reserved(usize::MAX);
    assert_eq!(alloc.reserved(), 2 * BITS);
    assert_eq!(alloc.size(), 0);
    assert_eq!(alloc.used(), 0);
    assert_eq!(alloc.available(), 0);
    for policy in [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree] {
        let alloc = PidAllocator::<2>::with_reserved(2 * BITS + 1).with_policy(policy);
        assert!(alloc.allocate().is_none(), "{policy:?}");
        assert_eq!(alloc.alloc_id(1, 1), Err(AllocError::NoMemory));
        assert_eq!(alloc.check(), Ok(()));
    }
    // Every ID but the last reserved: exactly one to hand out, under every policy.
    for policy in [Policy::NextFit, Policy::PerCpuNextFit, Policy::LowestFree] {
        let alloc = PidAllocator::<2>::with_reserved(2 * BITS - 1).with_policy(policy);
        assert_eq!(alloc.size(), 1);
        let pid = alloc.allocate().expect("the one managed ID");
        assert_eq!(*pid, 2 * BITS - 1, "{policy:?}");
        assert!(alloc.allocate().is_none());
        drop(pid);
        assert_eq!(
            alloc.allocate().map(|p| *p),
            Some(2 * BITS - 1),
            "{policy:?}"
        );
    }
}

#[test]
fn into_raw_from_raw_round_trip() {
    let alloc = PidAllocator::<1>::with_reserved(1);
    let pid = alloc.allocate().expect("free");
    let id = pid.into_raw();
    assert_eq!(id, 1);
    assert!(alloc.contains(id), "a detached ID stays allocated");
    assert_eq!(alloc.used(), 1);
    // SAFETY: `id` came from `into_raw` of this allocator and nothing else holds or frees it.
    let pid = unsafe { Pid::from_raw(&alloc, id) };
    assert_eq!(*pid, id);
    assert_eq!(pid.id(), id);
    assert_eq!(format!("{pid}"), "1");
    assert_eq!(format!("{pid:?}"), "Pid(1)");
    drop(pid);
    assert!(!alloc.contains(id), "the rebuilt handle frees the ID");
    assert_eq!(alloc.used(), 0);
    assert_eq!(alloc.check(), Ok(()));

    // Raw IDs from allocate_raw / allocate_specific_raw can be wrapped too.
    let raw = alloc.allocate_raw().expect("free");
    alloc.allocate_specific_raw(40).expect("free");
    // SAFETY: both IDs are allocated in `alloc` and owned by nobody else.
    let (a, b) = unsafe { (Pid::from_raw(&alloc, raw), Pid::from_raw(&alloc, 40)) };
    assert_ne!(a, b);
    assert_eq!(alloc.used(), 2);
    drop((a, b));
    assert_eq!(alloc.used(), 0);
}

#[test]
fn handles_compare_by_id_and_allocator() {
    let one = PidAllocator::<1>::new();
    let two = PidAllocator::<1>::new();
    let a = one.allocate().expect("free");
    let b = two.allocate().expect("free");
    assert_eq!(*a, *b);
    assert_ne!(a, b, "same number, different allocators");
    let id = a.into_raw();
    // SAFETY: `id` is allocated in `one`, detached from its only handle just above.
    let a = unsafe { Pid::from_raw(&one, id) };
    assert_eq!(a, a);
}

/// An empty managed range (`init(x, 0)`) accepts any range around `x` as the new managed range.
#[test]
fn add_memory_restarts_an_empty_range() {
    let mut alloc = PidAllocator::<2>::new().with_policy(Policy::LowestFree);
    BaseAllocator::init(&mut alloc, 5, 0);
    assert_eq!((alloc.reserved(), IdAllocator::size(&alloc)), (5, 0));
    assert!(alloc.allocate().is_none());
    assert_eq!(
        alloc.add_memory(10, 5),
        Err(AllocError::InvalidParam),
        "does not touch 5"
    );
    assert_eq!(alloc.add_memory(3, 5), Ok(()));
    assert_eq!((alloc.reserved(), IdAllocator::size(&alloc)), (3, 5));
    assert_eq!(alloc.check(), Ok(()));
    assert_eq!(alloc.allocate().map(|p| p.into_raw()), Some(3));
    assert_eq!(alloc.add_memory(4, 2), Err(AllocError::MemoryOverlap));
}

#[test]
fn init_and_add_memory_documented_behaviour() {
    let mut alloc = PidAllocator::<4>::new().with_policy(Policy::LowestFree);
    let cap = 4 * BITS;
    BaseAllocator::init(&mut alloc, 10, 20);
    assert_eq!((alloc.reserved(), IdAllocator::size(&alloc)), (10, 20));
    assert_eq!(alloc.policy(), Policy::LowestFree, "init keeps the policy");
    assert_eq!(alloc.check(), Ok(()));
    assert_eq!(IdAllocator::alloc_id(&mut alloc, 20, 1), Ok(10));
    assert_eq!(
        IdAllocator::alloc_id(&mut alloc, 1, 1),
        Err(AllocError::NoMemory)
    );
    assert_eq!(
        IdAllocator::alloc_fixed_id(&mut alloc, 30),
        Err(AllocError::InvalidParam)
    );
    assert!(!alloc.is_allocated(30) && !alloc.is_allocated(9) && alloc.is_allocated(29));
    IdAllocator::dealloc_id(&mut alloc, 10, 20);
    assert_eq!(IdAllocator::used(&alloc), 0);

    assert_eq!(alloc.add_memory(5, 6), Err(AllocError::MemoryOverlap));
    assert_eq!(alloc.add_memory(29, 2), Err(AllocError::MemoryOverlap));
    assert_eq!(
        alloc.add_memory(31, 2),
        Err(AllocError::InvalidParam),
        "a gap"
    );
    assert_eq!(
        alloc.add_memory(0, 5),
        Err(AllocError::InvalidParam),
        "a gap below"
    );
    assert_eq!(
        alloc.add_memory(30, 0),
        Err(AllocError::InvalidParam),
        "empty"
    );
    assert_eq!(
        alloc.add_memory(30, cap),
        Err(AllocError::InvalidParam),
        "past the capacity"
    );
    assert_eq!(
        alloc.add_memory(usize::MAX, 2),
        Err(AllocError::InvalidParam),
        "overflow"
    );
    assert_eq!(alloc.add_memory(30, 5), Ok(()));
    assert_eq!(alloc.add_memory(4, 6), Ok(()));
    assert_eq!((alloc.reserved(), IdAllocator::size(&alloc)), (4, 31));
    assert_eq!(alloc.check(), Ok(()));
    assert_eq!(
        alloc.allocate().map(|p| *p),
        Some(4),
        "the new low IDs are free"
    );
    assert_eq!(IdAllocator::alloc_fixed_id(&mut alloc, 34), Ok(()));
    assert_eq!(
        IdAllocator::alloc_fixed_id(&mut alloc, 34),
        Err(AllocError::MemoryOverlap)
    );

    // init forgets everything, and clamps to the capacity.
    BaseAllocator::init(&mut alloc, 100, usize::MAX);
    assert_eq!(
        (
            alloc.reserved(),
            IdAllocator::size(&alloc),
            IdAllocator::used(&alloc)
        ),
        (100, cap - 100, 0)
    );
    assert_eq!(alloc.check(), Ok(()));
    BaseAllocator::init(&mut alloc, usize::MAX, 5);
    assert_eq!((alloc.reserved(), IdAllocator::size(&alloc)), (cap, 0));
    assert!(alloc.allocate().is_none());
    assert_eq!(alloc.check(), Ok(()));
}

#[test]
fn alloc_error_conversions_and_messages() {
    assert_eq!(
        AllocError::from(BitmapError::OutOfRange),
        AllocError::InvalidParam
    );
    assert_eq!(
        AllocError::from(BitmapError::Reserved),
        AllocError::InvalidParam
    );
    assert_eq!(
        AllocError::from(BitmapError::InvalidArgument),
        AllocError::InvalidParam
    );
    assert_eq!(
        AllocError::from(BitmapError::AlreadyAllocated),
        AllocError::MemoryOverlap
    );
    assert_eq!(
        AllocError::from(BitmapError::NotAllocated),
        AllocError::NotAllocated
    );
    assert_eq!(BitmapError::Reserved.to_string(), "ID is reserved");
    assert_eq!(AllocError::NoMemory.to_string(), "out of memory");
}
