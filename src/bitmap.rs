//! [`AtomicBitmap`]: a lock-free hierarchical bitmap, the engine of ID and page allocation.
//!
//! # Layout
//! Leaf words hold one bit per ID (1 = allocated). Above them sit summary levels: bit `j` of word
//! `i` at level `k` is 1 exactly when word `i * BITS + j` of level `k - 1` is *full* (all ones).
//! Each level has `ceil(len(k - 1) / BITS)` words, up to a level of one word (the top). Bits of
//! a summary word that stand for no child word (past the end of the level below) are kept at 1,
//! so searches never descend into them. With 64-bit words:
//!
//! | IDs | leaf words | summary words ([`summary_words`]) | overhead |
//! |---|---|---|---|
//! | 4,096 | 64 | 1 | 1.6 % |
//! | 262,144 | 4,096 | 65 | 1.6 % |
//! | 4,194,304 (Linux `PID_MAX_LIMIT`) | 65,536 | 1,041 | 1.6 % |
//!
//! # Operations
//! A search starts at a hint (a cursor for next-fit, the floor for lowest-free-first), reads the
//! leaf word there, and when it holds no free bit past the hint climbs to the summary level to
//! find the next non-full word, descending again with `trailing_zeros`: O(levels) word reads.
//! The chosen bit is claimed with a compare-and-swap on the leaf word, so two callers can never
//! both own it. A free clears the bit with one `fetch_and`: [`AtomicBitmap::free`] reads the
//! whole old word (a CAS loop on x86), [`AtomicBitmap::free_bit`] only the freed bit (one
//! `lock btr`) and then the parent summary word.
//!
//! # The summary protocol
//! A summary bit must never claim "full" for a word that has a free bit once threads are
//! quiescent, or that free ID would be hidden from every search. The classic race: thread A
//! fills a word and sets its summary bit while thread B frees a bit in it and clears the summary
//! bit; if B's clear lands before A's set, the word has a free bit but looks full.
//!
//! Every read-modify-write that changes whether a word is full (a claim that fills it, a free or
//! rollback that un-fills it, a summary update that fills or un-fills a summary word) is followed
//! by `sync_parent`: set or clear the parent bit to match with an `AcqRel` (now `SeqCst`) RMW, then re-read the
//! child, and repeat while the re-read disagrees with what was just written. docs/design/03-bitmap-and-ids.md proves
//! that at quiescence every parent bit equals "child is full", at every level. The proof needs
//! the summary RMWs to be `AcqRel`; leaf operations carry only the orderings that hand an ID
//! from one owner to the next (claim `Acquire`, free `Release`). `free_bit`, which skips the
//! summary when the parent bit is clear, adds a store-buffering argument that needs its RMW and
//! parent load, and the summary RMWs and re-read, to be `SeqCst` (the same instructions as
//! before on x86). Loom model: `loom-tests/bitmap.rs` (it fails if the summary RMWs are
//! `Relaxed`, or if `free_bit` reads the parent before its RMW or not at all).
//!
//! While threads race, a summary may be briefly stale in either direction: a search may visit a
//! full word (it moves on) or skip a word that was just freed (the free is still in progress).
//! So `None` from an allocation means "no free ID found"; with no free running concurrently it
//! means the bitmap is full.

use core::fmt;

use crate::sync::atomic::{AtomicUsize, Ordering, usize_array};
use crate::sync::{Backoff, loom_const_fn};

/// Bits per bitmap word (`usize::BITS`).
pub const BITS: usize = usize::BITS as usize;
const FULL: usize = !0;
/// The most summary levels a bitmap may have (enough for 2^30 IDs with 32-bit words and 2^36
/// with 64-bit words).
pub const MAX_LEVELS: usize = 5;

/// The number of summary words a bitmap of `leaf_words` leaf words needs.
///
/// Use it to size an [`AtomicBitmap`] (or a `PidAllocator`) beyond
/// [`DEFAULT_SUMMARY_WORDS`]: `AtomicBitmap::<65536, { summary_words(65536) }>`.
pub const fn summary_words(leaf_words: usize) -> usize {
    let mut total = 0;
    let mut len = leaf_words;
    while len > 1 {
        len = len.div_ceil(BITS);
        total += len;
    }
    total
}

/// The default summary size: enough for up to 4,096 leaf words (262,144 IDs with 64-bit words).
pub const DEFAULT_SUMMARY_WORDS: usize = summary_words(4096);

/// Errors of bitmap (and ID) operations. Every operation that returns one changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitmapError {
    /// The ID (or part of the range) is outside `0..capacity`.
    OutOfRange,
    /// The ID (or an ID of the range) is already allocated.
    AlreadyAllocated,
    /// The ID (or an ID of the range) is not allocated.
    NotAllocated,
    /// The ID is in the permanently reserved range.
    Reserved,
    /// A zero count, or an alignment that is not a power of two.
    InvalidArgument,
}

impl fmt::Display for BitmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfRange => "ID out of range",
            Self::AlreadyAllocated => "ID already allocated",
            Self::NotAllocated => "ID not allocated",
            Self::Reserved => "ID is reserved",
            Self::InvalidArgument => "invalid count or alignment",
        })
    }
}

impl core::error::Error for BitmapError {}

impl From<BitmapError> for crate::traits::AllocError {
    fn from(error: BitmapError) -> Self {
        match error {
            BitmapError::OutOfRange | BitmapError::Reserved | BitmapError::InvalidArgument => {
                Self::InvalidParam
            }
            BitmapError::AlreadyAllocated => Self::MemoryOverlap,
            BitmapError::NotAllocated => Self::NotAllocated,
        }
    }
}

/// A violated invariant found by [`AtomicBitmap::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckError {
    /// A summary bit disagrees with the fullness of the word it stands for.
    SummaryMismatch {
        /// The summary level (1 = just above the leaves).
        level: usize,
        /// The index of the child word at `level - 1`.
        child: usize,
    },
    /// A padding bit (standing for no word) is clear.
    PaddingClear {
        /// The summary level.
        level: usize,
        /// The summary word's index in its level.
        word: usize,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SummaryMismatch { level, child } => {
                write!(
                    f,
                    "summary bit of level {level} disagrees with child word {child}"
                )
            }
            Self::PaddingClear { level, word } => {
                write!(
                    f,
                    "padding bit clear in summary word {word} of level {level}"
                )
            }
        }
    }
}

impl core::error::Error for CheckError {}

/// The shape of a bitmap: how many words each level has and where it starts in the summary.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Leaf words.
    words: usize,
    /// Summary levels (0 when there is a single leaf word).
    levels: usize,
    /// `len[k]`: words at level `k` (level 0 = leaves).
    len: [usize; MAX_LEVELS + 1],
    /// `offset[k]`: index of level `k`'s first word in the summary array (`k >= 1`).
    offset: [usize; MAX_LEVELS + 1],
}

impl Geometry {
    const fn new(words: usize, summary: usize) -> Self {
        assert!(words > 0, "a bitmap needs at least one leaf word");
        let mut len = [0; MAX_LEVELS + 1];
        let mut offset = [0; MAX_LEVELS + 1];
        len[0] = words;
        let mut levels = 0;
        let mut used = 0;
        while len[levels] > 1 {
            assert!(
                levels < MAX_LEVELS,
                "bitmap too large: more than MAX_LEVELS summary levels"
            );
            levels += 1;
            len[levels] = len[levels - 1].div_ceil(BITS);
            offset[levels] = used;
            used += len[levels];
        }
        assert!(
            summary >= used,
            "the SUMMARY parameter is smaller than summary_words(WORDS): pass \
             `{{ smpalloc::bitmap::summary_words(WORDS) }}` as SUMMARY"
        );
        Self {
            words,
            levels,
            len,
            offset,
        }
    }

    /// Whether word `index` of `level` is full in the state "IDs `0..prefix` allocated, the rest
    /// free" (used to build pre-reserved bitmaps in `const`).
    const fn prefix_full(&self, level: usize, index: usize, prefix: usize) -> bool {
        // Leaf words covered by this word: [index * BITS^level, (index + 1) * BITS^level).
        let mut span = 1usize;
        let mut k = 0;
        while k < level {
            span = span.saturating_mul(BITS);
            k += 1;
        }
        let end = (index + 1).saturating_mul(span);
        let end = if end < self.words { end } else { self.words };
        end.saturating_mul(BITS) <= prefix
    }

    /// The value of word `index` of `level` in the prefix state above.
    const fn prefix_word(&self, level: usize, index: usize, prefix: usize) -> usize {
        if level == 0 {
            let start = index * BITS;
            return if prefix >= start + BITS {
                FULL
            } else if prefix <= start {
                0
            } else {
                FULL >> (BITS - (prefix - start))
            };
        }
        let mut value = 0;
        let mut bit = 0;
        while bit < BITS {
            let child = index * BITS + bit;
            if child >= self.len[level - 1] || self.prefix_full(level - 1, child, prefix) {
                value |= 1 << bit;
            }
            bit += 1;
        }
        value
    }
}

/// A next-fit hint: where the next search starts. Keep one per CPU (see `percpu::PerCpu`) so
/// CPUs allocate in different words; for a strict shared next-fit order use [`CyclicCursor`].
#[derive(Debug)]
pub struct Cursor(AtomicUsize);

impl Cursor {
    loom_const_fn! {
        /// A cursor at `position`.
        pub fn new(position: usize) -> Self {
            Self(AtomicUsize::new(position))
        }
    }

    /// Where the next search starts. The cursor is only a hint, so `Relaxed` suffices.
    #[inline]
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the cursor.
    #[inline]
    pub fn set(&self, position: usize) {
        self.0.store(position, Ordering::Relaxed);
    }
}

/// The cursor of strict next-fit ([`AtomicBitmap::alloc_cyclic`], Linux's `idr_alloc_cyclic`
/// order): a lap counter and a position packed in one word, which only moves forward.
///
/// The low bits hold the position (as many as the bitmap's capacity needs), the high bits the
/// lap. The cursor only moves forward: every update is a CAS from the value the search started
/// at to a position past the ID it found, so a wrapped lap counter (after billions of laps)
/// would need a thread to sleep through a whole lap-counter cycle to confuse it.
#[derive(Debug)]
pub struct CyclicCursor(AtomicUsize);

impl CyclicCursor {
    loom_const_fn! {
        /// A cursor at `position`, lap 0.
        pub fn new(position: usize) -> Self {
            Self(AtomicUsize::new(position))
        }
    }

    /// The raw packed value (lap and position), for diagnostics.
    pub fn raw(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The outcome of one fast-path claim attempt.
enum Fast {
    Claimed(usize),
    /// The word has no free bit in the allowed range (or does not exist).
    NoneFree,
    /// The CAS lost a race (or failed spuriously): the word may still have free bits.
    Lost,
}

/// A lock-free bitmap of `WORDS * BITS` IDs with summary levels.
///
/// `SUMMARY` is the size of the summary array; it must be at least [`summary_words`]`(WORDS)`
/// (checked at compile time). The default covers up to 4,096 leaf words.
///
/// ```
/// use smpalloc::bitmap::AtomicBitmap;
/// static IDS: AtomicBitmap<4> = AtomicBitmap::new(); // 256 IDs with 64-bit words
/// let a = IDS.alloc_lowest().unwrap();
/// let b = IDS.alloc_lowest().unwrap();
/// assert_ne!(a, b);
/// IDS.free(a).unwrap();
/// assert_eq!(IDS.free(a), Err(smpalloc::bitmap::BitmapError::NotAllocated));
/// ```
pub struct AtomicBitmap<const WORDS: usize, const SUMMARY: usize = DEFAULT_SUMMARY_WORDS> {
    /// One bit per ID, 1 = allocated. Claimed by CAS (`Acquire` on success), freed by
    /// `fetch_and` (`Release`; `SeqCst` in `free_bit`).
    leaves: [AtomicUsize; WORDS],
    /// The summary levels, level 1 first; bit = child word is full. Written only by
    /// `sync_parent` (`SeqCst` RMWs).
    summary: [AtomicUsize; SUMMARY],
}

impl<const WORDS: usize, const SUMMARY: usize> AtomicBitmap<WORDS, SUMMARY> {
    const GEOM: Geometry = Geometry::new(WORDS, SUMMARY);

    /// The number of IDs: `WORDS * BITS`.
    pub const CAPACITY: usize = WORDS * BITS;

    loom_const_fn! {
        /// An empty bitmap (every ID free).
        pub fn new() -> Self {
            Self::with_prefix_allocated(0)
        }
    }

    loom_const_fn! {
        /// A bitmap whose IDs `0..prefix` start allocated (for reserved ranges); the rest are
        /// free. `prefix` is clamped to the capacity.
        pub fn with_prefix_allocated(prefix: usize) -> Self {
            let geom = Self::GEOM;
            let prefix = if prefix < Self::CAPACITY { prefix } else { Self::CAPACITY };
            let mut leaves = usize_array::<WORDS>(0);
            let mut i = 0;
            while i < WORDS {
                leaves[i] = AtomicUsize::new(geom.prefix_word(0, i, prefix));
                i += 1;
            }
            let mut summary = usize_array::<SUMMARY>(0);
            let mut level = 1;
            while level <= geom.levels {
                let mut i = 0;
                while i < geom.len[level] {
                    summary[geom.offset[level] + i] =
                        AtomicUsize::new(geom.prefix_word(level, i, prefix));
                    i += 1;
                }
                level += 1;
            }
            Self { leaves, summary }
        }
    }

    /// The number of IDs, `WORDS * BITS`.
    pub const fn capacity(&self) -> usize {
        Self::CAPACITY
    }

    #[inline(always)]
    fn word(&self, level: usize, index: usize) -> &AtomicUsize {
        if level == 0 {
            &self.leaves[index]
        } else {
            &self.summary[Self::GEOM.offset[level] + index]
        }
    }

    // ---------------------------------------------------------------------------------------
    // Searching

    /// The first ID at or after `from` that the summaries and leaves show as free, or `None`
    /// past the end. A snapshot: the caller claims it with a CAS that may fail.
    ///
    /// O(levels) word reads when the summaries are current: climb while the word holds no
    /// free bit past the position, then descend along lowest zero bits.
    #[inline]
    fn seek(&self, from: usize) -> Option<usize> {
        let geom = &Self::GEOM;
        let mut level = 0;
        let mut pos = from;
        loop {
            let index = pos / BITS;
            if index >= geom.len[level] {
                return None;
            }
            let word = self.word(level, index).load(Ordering::Relaxed);
            let free = !word & (FULL << (pos % BITS));
            if free != 0 {
                let found = index * BITS + free.trailing_zeros() as usize;
                if level == 0 {
                    return Some(found);
                }
                level -= 1;
                pos = found * BITS;
            } else if level == geom.levels {
                return None;
            } else {
                level += 1;
                pos = index + 1;
            }
        }
    }

    /// One claim attempt on leaf `index`: CAS it from `current` to `new` (a superset of
    /// `current`) and, if that filled the word, bring the summary in step. `Err` carries the
    /// word's fresh value.
    ///
    /// Acquire on success: the previous owner's writes (before its `Release` free) happen before
    /// ours. Failure is Relaxed: the caller only retries with the fresh value. Weak: a spurious
    /// failure is one more retry.
    #[inline(always)]
    fn cas_leaf(&self, index: usize, current: usize, new: usize) -> Result<(), usize> {
        self.leaves[index].compare_exchange_weak(
            current,
            new,
            Ordering::Acquire,
            Ordering::Relaxed,
        )?;
        if new == FULL {
            self.sync_parent(0, index, true);
        }
        Ok(())
    }

    /// Claims the lowest free bit at or after bit `from_bit` of leaf word `index` whose
    /// position is a multiple of `align` (`align <= BITS`, a power of two).
    #[inline]
    fn claim_in_word(&self, index: usize, from_bit: usize, align: usize) -> Option<usize> {
        let allowed = (FULL << from_bit) & align_mask(align);
        let mut current = self.leaves[index].load(Ordering::Relaxed);
        let backoff = Backoff::new();
        loop {
            let free = !current & allowed;
            if free == 0 {
                return None;
            }
            let bit = free & free.wrapping_neg();
            match self.cas_leaf(index, current, current | bit) {
                Ok(()) => return Some(index * BITS + bit.trailing_zeros() as usize),
                Err(now) => {
                    current = now;
                    backoff.spin();
                }
            }
        }
    }

    /// Claims the first free ID at or after `from`. Lock-free: a failed CAS means another
    /// thread made progress.
    ///
    /// The fast path, inlined into every allocation: one load of the word at `from` and one CAS
    /// when it has a free bit at or after `from`; when it has none, the same on the next word
    /// (a next-fit cursor leaving its word). Everything else, a lost CAS included, is out of
    /// line: moving on to the next word after a lost CAS would skip free bits of this one.
    #[inline(always)]
    fn alloc_from(&self, from: usize) -> Option<usize> {
        let index = from / BITS;
        match self.try_claim_fast(index, FULL << (from % BITS)) {
            Fast::Claimed(id) => return Some(id),
            Fast::NoneFree => {
                if let Fast::Claimed(id) = self.try_claim_fast(index + 1, FULL) {
                    return Some(id);
                }
            }
            Fast::Lost => {}
        }
        self.alloc_from_slow(from, 1)
    }

    /// One attempt at the lowest free bit of leaf `index` within `allowed`: a load and a CAS.
    #[inline(always)]
    fn try_claim_fast(&self, index: usize, allowed: usize) -> Fast {
        let Some(leaf) = self.leaves.get(index) else {
            return Fast::NoneFree;
        };
        let word = leaf.load(Ordering::Relaxed);
        let free = !word & allowed;
        if free == 0 {
            return Fast::NoneFree;
        }
        let bit = free & free.wrapping_neg();
        match self.cas_leaf(index, word, word | bit) {
            Ok(()) => Fast::Claimed(index * BITS + bit.trailing_zeros() as usize),
            Err(_) => Fast::Lost,
        }
    }

    /// The first ID at or after `from` that looks free, without claiming it, and the value of
    /// its leaf word as read: the word at `from` and the next one inline, the summaries out of
    /// line.
    #[inline(always)]
    fn find_from(&self, from: usize) -> Option<(usize, usize)> {
        let index = from / BITS;
        for (index, allowed) in [(index, FULL << (from % BITS)), (index + 1, FULL)] {
            let word = self.leaves.get(index)?.load(Ordering::Relaxed);
            let free = !word & allowed;
            if free != 0 {
                return Some((index * BITS + free.trailing_zeros() as usize, word));
            }
        }
        let id = self.seek(from)?;
        Some((id, self.leaves[id / BITS].load(Ordering::Relaxed)))
    }

    /// `alloc_from` past its fast path (and aligned single IDs): summary-guided search and CAS
    /// retries for the first free ID at or after `from` at a multiple of `align` (`<= BITS`).
    #[inline(never)]
    fn alloc_from_slow(&self, from: usize, align: usize) -> Option<usize> {
        let mut from = from;
        loop {
            let candidate = self.seek(from)?;
            let index = candidate / BITS;
            if let Some(id) = self.claim_in_word(index, candidate % BITS, align) {
                return Some(id);
            }
            from = (index + 1) * BITS;
        }
    }

    /// Allocates the lowest free ID at or above `floor` (lowest-free-first, as POSIX file
    /// descriptors need).
    ///
    /// Returns `None` when no free ID at or above `floor` was found (see the module docs for
    /// what that means under concurrent frees).
    ///
    /// # Time Complexity
    /// O(levels) word reads plus one CAS when uncontended.
    pub fn alloc_lowest_from(&self, floor: usize) -> Option<usize> {
        self.alloc_from(floor)
    }

    /// Allocates the lowest free ID. See [`alloc_lowest_from`](Self::alloc_lowest_from).
    pub fn alloc_lowest(&self) -> Option<usize> {
        self.alloc_from(0)
    }

    /// Allocates next-fit from a hint: the first free ID at or after `cursor`, wrapping around
    /// to `floor` (IDs below `floor` are never returned), and moves the cursor past it.
    ///
    /// The cursor is a hint written with a plain store: one thread (or one CPU) using its own
    /// cursor gets strict next-fit order, but threads sharing a cursor may move it backwards
    /// and so reuse an ID before the cursor wraps. Share a [`CyclicCursor`] with
    /// [`alloc_cyclic`](Self::alloc_cyclic) for a strict shared order.
    ///
    /// # Time Complexity
    /// O(levels) word reads plus one CAS when uncontended.
    #[inline]
    pub fn alloc_next_fit(&self, cursor: &Cursor, floor: usize) -> Option<usize> {
        let start = cursor.get().max(floor);
        let id = match self.alloc_from(start) {
            Some(id) => id,
            None if start > floor => self.alloc_from(floor)?,
            None => return None,
        };
        cursor.set(if id + 1 < Self::CAPACITY {
            id + 1
        } else {
            floor
        });
        Some(id)
    }

    /// Bits of a [`CyclicCursor`] that hold the position (enough for `0..=CAPACITY`).
    const POS_BITS: u32 = usize::BITS - Self::CAPACITY.leading_zeros();
    const POS_MASK: usize = (1 << Self::POS_BITS) - 1;
    const LAP: usize = 1 << Self::POS_BITS;

    /// Allocates strict next-fit with wrap-around to `floor`, shared by any number of threads:
    /// an ID freed in this lap of the cursor is never handed out again before the cursor wraps,
    /// as PID allocators need (Linux's `idr_alloc_cyclic` order).
    ///
    /// Reserve, then claim: find the first ID that looks free at or after the cursor, move the
    /// cursor past it with a CAS (which reserves every position up to it for this call), and
    /// only then claim the ID. Two successful CASes on a cursor that only moves forward cannot
    /// both cover one position in one lap, so each position is handed out at most once per lap.
    /// If the ID was taken meanwhile by an allocation that does not use the cursor (a specific
    /// ID, a range), the search goes on from the reserved position. docs/design/03-bitmap-and-ids.md ("The cyclic cursor");
    /// loom model `cyclic_never_reuses_within_a_lap`.
    ///
    /// # Time Complexity
    /// O(levels) word reads, one CAS on the cursor and one on the leaf when uncontended.
    #[inline]
    pub fn alloc_cyclic(&self, cursor: &CyclicCursor, floor: usize) -> Option<usize> {
        let mut seen = cursor.0.load(Ordering::Relaxed);
        loop {
            let lap = seen & !Self::POS_MASK;
            let pos = (seen & Self::POS_MASK).max(floor);
            let ((id, word), id_lap) = match self.find_from(pos) {
                Some(found) => (found, lap),
                None if pos > floor => (self.find_from(floor)?, lap.wrapping_add(Self::LAP)),
                None => return None,
            };
            let next = if id + 1 < Self::CAPACITY {
                (id_lap | id) + 1
            } else {
                id_lap.wrapping_add(Self::LAP) | floor
            };
            // Relaxed: the cursor only arbitrates positions; the ID's handoff is ordered by the
            // leaf's claim (Acquire) and free (Release).
            if let Err(now) =
                cursor
                    .0
                    .compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                seen = now;
                continue;
            }
            if self.claim_seen(id / BITS, 1 << (id % BITS), word) {
                return Some(id);
            }
            seen = next;
        }
    }

    /// Allocates exactly `id`.
    ///
    /// # Errors
    /// - [`BitmapError::OutOfRange`] if `id >= capacity`;
    /// - [`BitmapError::AlreadyAllocated`] if it is taken.
    ///
    /// # Time Complexity
    /// One CAS when uncontended (plus a summary update when it fills a word).
    pub fn alloc_specific(&self, id: usize) -> Result<(), BitmapError> {
        if id >= Self::CAPACITY {
            return Err(BitmapError::OutOfRange);
        }
        let mask = 1 << (id % BITS);
        if self.claim_mask(id / BITS, mask) {
            Ok(())
        } else {
            Err(BitmapError::AlreadyAllocated)
        }
    }

    /// Sets all of `mask` in leaf `index` if none of it is set; false (and no change) otherwise.
    fn claim_mask(&self, index: usize, mask: usize) -> bool {
        self.claim_seen(index, mask, self.leaves[index].load(Ordering::Relaxed))
    }

    /// [`claim_mask`](Self::claim_mask) starting from `current`, a recent read of the leaf
    /// (a stale value only costs one failed CAS).
    #[inline]
    fn claim_seen(&self, index: usize, mask: usize, current: usize) -> bool {
        let mut current = current;
        let backoff = Backoff::new();
        loop {
            if current & mask != 0 {
                return false;
            }
            match self.cas_leaf(index, current, current | mask) {
                Ok(()) => return true,
                Err(now) => {
                    current = now;
                    backoff.spin();
                }
            }
        }
    }

    /// Allocates `count` contiguous IDs starting at a multiple of `align` (a power of two), at
    /// or above `floor`; returns the first ID (the lowest such range: first fit). Used by
    /// `IdAllocator::alloc_id`. Same as [`alloc_contiguous_offset`](Self::alloc_contiguous_offset)
    /// with offset 0.
    ///
    /// # Errors
    /// - [`BitmapError::InvalidArgument`] if `count == 0` or `align` is not a power of two;
    /// - `Ok(None)` if no such range was found.
    ///
    /// # Time Complexity
    /// See [`alloc_contiguous_offset`](Self::alloc_contiguous_offset).
    pub fn alloc_contiguous(
        &self,
        count: usize,
        align: usize,
        floor: usize,
    ) -> Result<Option<usize>, BitmapError> {
        self.alloc_contiguous_offset(count, align, 0, floor)
    }

    /// Allocates `count` contiguous IDs whose first ID `s` satisfies `s % align == offset %
    /// align` (`align` a power of two), at or above `floor`; returns `s`, the lowest such range
    /// (first fit). The offset lets a page allocator whose index 0 is not aligned ask for
    /// aligned *addresses*.
    ///
    /// How a range is found, never bit by bit:
    /// - `count <= BITS` and `align <= BITS`: per leaf word, the starts of all free runs of
    ///   `count` bits are computed at once (`m &= m >> s` doubling, O(log count) word
    ///   operations) and masked with the allowed start positions; a run that crosses into the
    ///   next word is tried from the word's free top bits. Full words are skipped through the
    ///   summaries. A run inside one word is claimed with one CAS.
    /// - otherwise: candidate starts are visited in steps of `align`, each checked with one
    ///   load per word of the range; a conflict moves the search past the highest taken ID.
    ///
    /// A range spanning words is claimed word by word with CAS; if another thread took a bit of
    /// it in the meantime, the words already claimed are released again (rollback) and the
    /// search goes on past the conflict, so no caller ever owns an ID twice and nothing leaks.
    ///
    /// # Errors
    /// - [`BitmapError::InvalidArgument`] if `count == 0` or `align` is not a power of two;
    /// - `Ok(None)` if no such range was found.
    ///
    /// # Time Complexity
    /// O(levels) for one ID with `align <= BITS` and offset 0; for `count, align <= BITS`,
    /// O(log count) per non-full leaf word scanned; otherwise O(count / BITS) per candidate.
    pub fn alloc_contiguous_offset(
        &self,
        count: usize,
        align: usize,
        offset: usize,
        floor: usize,
    ) -> Result<Option<usize>, BitmapError> {
        if count == 0 || !align.is_power_of_two() {
            return Err(BitmapError::InvalidArgument);
        }
        let offset = offset & (align - 1);
        if count == 1 && align <= BITS && offset == 0 {
            return Ok(self.alloc_from_slow(align_up(floor, align), align));
        }
        if count <= BITS && align <= BITS {
            return Ok(self.alloc_small_run(count, align, offset, floor));
        }
        let Some(mut start) = align_up_offset(floor, align, offset) else {
            return Ok(None);
        };
        loop {
            let Some(end) = start.checked_add(count) else {
                return Ok(None);
            };
            if end > Self::CAPACITY {
                return Ok(None);
            }
            // Skip a full first word through the summaries.
            if self.leaves[start / BITS].load(Ordering::Relaxed) == FULL {
                let Some(next) = self.seek(start) else {
                    return Ok(None);
                };
                let Some(next) = align_up_offset(next, align, offset) else {
                    return Ok(None);
                };
                start = next;
                continue;
            }
            let taken = match self.find_conflict(start, end) {
                Some(taken) => taken,
                None => match self.claim_range(start, end) {
                    Ok(()) => return Ok(Some(start)),
                    Err(taken) => taken,
                },
            };
            let Some(next) = align_up_offset(taken + 1, align, offset) else {
                return Ok(None);
            };
            start = next;
        }
    }

    /// [`alloc_contiguous_offset`](Self::alloc_contiguous_offset) for `count, align <= BITS`:
    /// word-parallel search for aligned free runs, first fit.
    fn alloc_small_run(
        &self,
        count: usize,
        align: usize,
        offset: usize,
        floor: usize,
    ) -> Option<usize> {
        // Bit positions where a run may start (`BITS % align == 0`, so the same in every word).
        let starts = align_mask(align) << offset;
        let run = FULL >> (BITS - count);
        let mut from = floor;
        loop {
            // The first free ID at or after `from`, skipping full words.
            let found = self.seek(from)?;
            let index = found / BITS;
            let lo = found % BITS;
            let word = self.leaves[index].load(Ordering::Relaxed);
            let free = !word & (FULL << lo);
            let inside = run_starts(free, count) & starts;
            if inside != 0 {
                let bit = inside.trailing_zeros() as usize;
                if self.claim_seen(index, run << bit, word) {
                    return Some(index * BITS + bit);
                }
                // Lost a race in this word: look at it again.
                from = found;
                continue;
            }
            // A run starting in this word's free top bits and ending in the next word. The
            // lowest allowed start needs the fewest bits of the next word.
            let top_free = (!free).leading_zeros() as usize;
            if count > 1 && top_free > 0 && index + 1 < WORDS {
                let first = BITS - top_free;
                let bit = first + ((offset.wrapping_sub(first)) & (align - 1));
                if bit < BITS && bit + count > BITS {
                    let start = index * BITS + bit;
                    let end = start + count;
                    if self.find_conflict(start, end).is_none()
                        && self.claim_range(start, end).is_ok()
                    {
                        return Some(start);
                    }
                }
            }
            from = (index + 1) * BITS;
            if from >= Self::CAPACITY {
                return None;
            }
        }
    }

    /// Claims exactly the IDs `start..start + count`, all or none.
    ///
    /// # Errors
    /// - [`BitmapError::InvalidArgument`] if `count == 0`;
    /// - [`BitmapError::OutOfRange`] if the range passes the capacity;
    /// - [`BitmapError::AlreadyAllocated`] if any ID of it is taken: nothing changes (words
    ///   claimed before the conflict was seen are rolled back).
    ///
    /// # Time Complexity
    /// O(count / BITS) word operations.
    pub fn alloc_range(&self, start: usize, count: usize) -> Result<(), BitmapError> {
        if count == 0 {
            return Err(BitmapError::InvalidArgument);
        }
        let end = start.checked_add(count).ok_or(BitmapError::OutOfRange)?;
        if end > Self::CAPACITY {
            return Err(BitmapError::OutOfRange);
        }
        self.claim_range(start, end)
            .map_err(|_| BitmapError::AlreadyAllocated)
    }

    /// Marks every ID allocated (every word, summaries and padding included, becomes all
    /// ones, which is consistent: every child is full). `&mut self` proves no other thread
    /// uses the bitmap. A page allocator starts from this state and frees its regions; a
    /// kernel handing in storage (even zeroed memory reinterpreted as a bitmap) calls it first.
    ///
    /// # Time Complexity
    /// O(WORDS + SUMMARY) stores.
    pub fn fill(&mut self) {
        for word in self.leaves.iter().chain(self.summary.iter()) {
            word.store(FULL, Ordering::Relaxed);
        }
    }

    /// The highest allocated ID in `start..end` (a snapshot), or `None` if all look free.
    fn find_conflict(&self, start: usize, end: usize) -> Option<usize> {
        let mut conflict = None;
        for_each_word_mask(start, end, |index, mask| {
            let taken = self.leaves[index].load(Ordering::Relaxed) & mask;
            if taken != 0 {
                conflict = Some(index * BITS + highest_bit(taken));
            }
        });
        conflict
    }

    /// Claims every ID in `start..end` or none: on a conflict, releases the words claimed so far
    /// and returns the conflicting ID.
    fn claim_range(&self, start: usize, end: usize) -> Result<(), usize> {
        let mut claimed_to = start;
        let mut conflict = None;
        for_each_word_mask(start, end, |index, mask| {
            if conflict.is_some() {
                return;
            }
            if self.claim_mask(index, mask) {
                claimed_to = ((index + 1) * BITS).min(end);
            } else {
                let taken = self.leaves[index].load(Ordering::Relaxed) & mask;
                // `taken == 0`: the blocker was freed since; resume after the mask's first bit.
                let bit = if taken == 0 {
                    mask.trailing_zeros() as usize
                } else {
                    highest_bit(taken)
                };
                conflict = Some(index * BITS + bit);
            }
        });
        match conflict {
            None => Ok(()),
            Some(taken) => {
                // Rollback: these bits are ours, so clearing them cannot hit another owner.
                for_each_word_mask(start, claimed_to, |index, mask| {
                    self.release_mask(index, mask);
                });
                Err(taken)
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Freeing

    /// Frees `id`.
    ///
    /// # Errors
    /// - [`BitmapError::OutOfRange`] if `id >= capacity`;
    /// - [`BitmapError::NotAllocated`] if it is free (a double free): nothing changes.
    ///
    /// Reads the whole old word (on x86 a load and a `lock cmpxchg` loop) and updates the
    /// summary only when the word was full. [`free_bit`](Self::free_bit) is the same free as
    /// one single-bit RMW plus a load of the summary; which is faster depends on the access
    /// pattern (docs/design/03-bitmap-and-ids.md, "Free").
    ///
    /// # Time Complexity
    /// One `fetch_and` (plus a summary update when the word was full).
    pub fn free(&self, id: usize) -> Result<(), BitmapError> {
        if id >= Self::CAPACITY {
            return Err(BitmapError::OutOfRange);
        }
        let mask = 1 << (id % BITS);
        let old = self.release_mask(id / BITS, mask);
        if old & mask == 0 {
            Err(BitmapError::NotAllocated)
        } else {
            Ok(())
        }
    }

    /// Frees `id` like [`free`](Self::free), with a single-bit RMW whose old value is read
    /// only at the freed bit (one `lock btr` on x86, no CAS loop and no load before it), then
    /// one load of the parent summary word, and a summary update only if that word marks the
    /// leaf full. Same results and errors as `free`; the two may be mixed freely.
    ///
    /// `PidAllocator` uses it under `Policy::LowestFree`, where the allocation that follows
    /// a free reads the same leaf word and the CAS loop's load before its `lock cmpxchg` was
    /// the hottest spot of an allocate+drop pair (docs/design/03-bitmap-and-ids.md, "Free").
    ///
    /// # Errors
    /// - [`BitmapError::OutOfRange`] if `id >= capacity`;
    /// - [`BitmapError::NotAllocated`] if it is free (a double free): nothing changes.
    ///
    /// # Time Complexity
    /// One `fetch_and` and one load (plus a summary update when the parent marks the word
    /// full).
    #[inline]
    pub fn free_bit(&self, id: usize) -> Result<(), BitmapError> {
        if id >= Self::CAPACITY {
            return Err(BitmapError::OutOfRange);
        }
        let index = id / BITS;
        let mask = 1 << (id % BITS);
        // Only the freed bit of the old value is used, so x86 does this with one `lock btr`
        // (no CAS loop). `SeqCst`: the free half of the store-buffering pair with
        // `sync_parent` (see `after_free`); `Release` alone would do for the ID handoff.
        let old = self.leaves[index].fetch_and(!mask, Ordering::SeqCst);
        if old & mask == 0 {
            return Err(BitmapError::NotAllocated);
        }
        self.after_free(index);
        Ok(())
    }

    /// The summary half of a single-bit free of leaf `index`, which did not read whether the
    /// word was full: if the parent bit says "full", the free may have un-filled the word, so
    /// bring the parent in step (`sync_parent`); if it says "not full", nothing to do.
    ///
    /// Why a clear parent bit is safe to trust (docs/design/03-bitmap-and-ids.md, "Free"): the
    /// free's `SeqCst` RMW and this `SeqCst` load, against `sync_parent`'s `SeqCst` RMW on the
    /// parent and `SeqCst` re-read of the child, form a store-buffering pair: either this load
    /// sees the filler's parent write, or the filler's re-read sees the free and clears the
    /// bit again. (Loom models `SeqCst` accesses as `AcqRel`, so its builds read the parent
    /// with an `AcqRel` RMW instead, which gives the same guarantee in its model.)
    #[inline(always)]
    fn after_free(&self, index: usize) {
        if Self::GEOM.levels == 0 {
            return;
        }
        // Level 1 starts at offset 0 of the summary.
        let parent = &self.summary[index / BITS];
        #[cfg(not(loom))]
        let parent = parent.load(Ordering::SeqCst);
        // Loom models `SeqCst` accesses as `AcqRel`, which would let this load miss the
        // filler's write (a false alarm). An `AcqRel` RMW gives what the `SeqCst` pair gives:
        // it reads the latest value, or the filler's `sync_parent` RMW reads from it.
        #[cfg(loom)]
        let parent = parent.fetch_or(0, Ordering::AcqRel);
        if parent & (1 << (index % BITS)) != 0 {
            self.sync_parent(0, index, false);
        }
    }

    /// Frees `count` IDs from `start`.
    ///
    /// # Errors
    /// - [`BitmapError::InvalidArgument`] if `count == 0`;
    /// - [`BitmapError::OutOfRange`] if the range passes the capacity;
    /// - [`BitmapError::NotAllocated`] if any ID of it is free: nothing changes.
    ///
    /// Freeing the same range from two threads at once is a double free by the caller: each ID
    /// is still freed once, and one caller gets `NotAllocated` (possibly after a prefix of the
    /// range was freed by it).
    ///
    /// # Time Complexity
    /// O(count / BITS) word operations.
    pub fn free_range(&self, start: usize, count: usize) -> Result<(), BitmapError> {
        if count == 0 {
            return Err(BitmapError::InvalidArgument);
        }
        let end = start.checked_add(count).ok_or(BitmapError::OutOfRange)?;
        if end > Self::CAPACITY {
            return Err(BitmapError::OutOfRange);
        }
        let mut all_set = true;
        // Relaxed: only a check that changes nothing; each clearing CAS below carries the
        // `Release` that hands the IDs on.
        for_each_word_mask(start, end, |index, mask| {
            all_set &= self.leaves[index].load(Ordering::Relaxed) & mask == mask;
        });
        if !all_set {
            return Err(BitmapError::NotAllocated);
        }
        let mut result = Ok(());
        for_each_word_mask(start, end, |index, mask| {
            if result.is_ok() && !self.release_mask_if_set(index, mask) {
                result = Err(BitmapError::NotAllocated);
            }
        });
        result
    }

    /// Clears `mask` in leaf `index` with one `fetch_and`; returns the old word.
    ///
    /// `Release`: the owner's writes happen before the next claimer's `Acquire` CAS. (The
    /// summary protocol needs no ordering from leaf operations; see `sync_parent`.)
    #[inline]
    fn release_mask(&self, index: usize, mask: usize) -> usize {
        let old = self.leaves[index].fetch_and(!mask, Ordering::Release);
        if old == FULL {
            self.sync_parent(0, index, false);
        }
        old
    }

    /// Clears `mask` in leaf `index` only if all of it is set.
    fn release_mask_if_set(&self, index: usize, mask: usize) -> bool {
        let leaf = &self.leaves[index];
        let mut current = leaf.load(Ordering::Relaxed);
        loop {
            if current & mask != mask {
                return false;
            }
            match leaf.compare_exchange_weak(
                current,
                current & !mask,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if current == FULL {
                        self.sync_parent(0, index, false);
                    }
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // The summary protocol

    /// Makes the parent bits of word `index` at `level` agree with its fullness, all the way
    /// up. `full` is the fullness the caller's RMW just produced.
    ///
    /// Per level: write the parent bit (`fetch_or`/`fetch_and`, `SeqCst`: `AcqRel` suffices for
    /// this argument, `free_bit`'s needs `SeqCst`), then re-read the child (a `SeqCst` load,
    /// for the same reason); if the child's fullness changed meanwhile, write the parent bit
    /// again. Whenever a write changed the parent word's own fullness, repeat one level up.
    ///
    /// Why this is enough (docs/design/03-bitmap-and-ids.md, "The summary protocol", has the full proof): take the last
    /// write O to a parent bit, by thread T, and T's re-read after it, which agreed with O. If the
    /// child changed afterwards, the thread U that changed it writes the parent bit (O') after
    /// its change. Were O' before O in the parent word's modification order, O (`Acquire`)
    /// would read from O' (`Release`; all parent writes are RMWs, so a release sequence), making
    /// U's child change happen before T's re-read, which then could not have missed it. So O'
    /// comes after O, contradicting "last". Hence at quiescence every parent bit is exact.
    #[cold]
    fn sync_parent(&self, level: usize, index: usize, full: bool) {
        let geom = &Self::GEOM;
        let (mut level, mut index, mut full) = (level, index, full);
        while level < geom.levels {
            let parent_index = index / BITS;
            let bit = 1 << (index % BITS);
            let parent = self.word(level + 1, parent_index);
            let child = self.word(level, index);
            let mut parent_changed = false;
            loop {
                // `SeqCst` (O): `AcqRel` for the proof's synchronization, and the filler's half
                // of the store-buffering pair with a single-bit free (`after_free`).
                let old = if full {
                    parent.fetch_or(bit, Ordering::SeqCst)
                } else {
                    parent.fetch_and(!bit, Ordering::SeqCst)
                };
                let new = if full { old | bit } else { old & !bit };
                parent_changed |= (old == FULL) != (new == FULL);
                // `SeqCst` (Q): the other load of the store-buffering pair.
                let now_full = child.load(Ordering::SeqCst) == FULL;
                if now_full == full {
                    break;
                }
                full = now_full;
            }
            if !parent_changed {
                return;
            }
            level += 1;
            index = parent_index;
            full = self.word(level, index).load(Ordering::Relaxed) == FULL;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Queries

    /// Whether `id` is allocated; `false` for an ID out of range.
    ///
    /// # Time Complexity
    /// One load.
    #[inline]
    pub fn contains(&self, id: usize) -> bool {
        id < Self::CAPACITY
            && self.leaves[id / BITS].load(Ordering::Acquire) & (1 << (id % BITS)) != 0
    }

    /// The number of allocated IDs: a popcount of the leaves. Exact when no thread is
    /// allocating or freeing; a snapshot that may mix moments otherwise.
    ///
    /// # Time Complexity
    /// O(WORDS) loads.
    pub fn count_allocated(&self) -> usize {
        self.leaves
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// The number of allocated IDs in `start..end` (clamped to the capacity).
    ///
    /// # Time Complexity
    /// O((end - start) / BITS) loads.
    pub fn count_allocated_in(&self, start: usize, end: usize) -> usize {
        let end = end.min(Self::CAPACITY);
        let mut count = 0;
        if start < end {
            for_each_word_mask(start, end, |index, mask| {
                count += (self.leaves[index].load(Ordering::Relaxed) & mask).count_ones() as usize;
            });
        }
        count
    }

    /// Checks the structure's invariants; call it when no thread is using the bitmap (tests
    /// call it after every step):
    /// - every summary bit equals "the child word is full", at every level;
    /// - every padding bit (standing for no child) is set.
    ///
    /// # Time Complexity
    /// O(WORDS) loads.
    pub fn check(&self) -> Result<(), CheckError> {
        let geom = &Self::GEOM;
        for level in 1..=geom.levels {
            for word in 0..geom.len[level] {
                let value = self.word(level, word).load(Ordering::Acquire);
                for bit in 0..BITS {
                    let child = word * BITS + bit;
                    let set = value & (1 << bit) != 0;
                    if child >= geom.len[level - 1] {
                        if !set {
                            return Err(CheckError::PaddingClear { level, word });
                        }
                    } else {
                        let full = self.word(level - 1, child).load(Ordering::Acquire) == FULL;
                        if set != full {
                            return Err(CheckError::SummaryMismatch { level, child });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Iterates over the allocated IDs in increasing order (a snapshot per word).
    pub fn iter_allocated(&self) -> impl Iterator<Item = usize> + '_ {
        self.leaves.iter().enumerate().flat_map(|(index, word)| {
            let mut bits = word.load(Ordering::Relaxed);
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(index * BITS + bit)
            })
        })
    }
}

impl<const WORDS: usize, const SUMMARY: usize> Default for AtomicBitmap<WORDS, SUMMARY> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize, const SUMMARY: usize> fmt::Debug for AtomicBitmap<WORDS, SUMMARY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicBitmap")
            .field("capacity", &Self::CAPACITY)
            .field("allocated", &self.count_allocated())
            .finish()
    }
}

/// The index of the highest set bit of `word` (`word != 0`).
#[inline]
fn highest_bit(word: usize) -> usize {
    BITS - 1 - word.leading_zeros() as usize
}

/// Rounds `value` up to a multiple of `align` (a power of two), saturating.
#[inline]
fn align_up(value: usize, align: usize) -> usize {
    value
        .checked_add(align - 1)
        .map_or(usize::MAX & !(align - 1), |v| v & !(align - 1))
}

/// The smallest `x >= value` with `x % align == offset` (`align` a power of two,
/// `offset < align`), or `None` on overflow.
#[inline]
fn align_up_offset(value: usize, align: usize, offset: usize) -> Option<usize> {
    value.checked_add(offset.wrapping_sub(value) & (align - 1))
}

/// Bit `p` of the result is set exactly when bits `p..p + count` of `free` are all set (runs
/// never wrap past the top bit). `count` in `1..=BITS`; O(log count) shifts and ANDs.
#[inline]
fn run_starts(free: usize, count: usize) -> usize {
    let mut starts = free;
    let mut len = 1;
    while len < count {
        // `starts` covers runs of `len`; AND with itself shifted by `step <= len` covers
        // `len + step` (the two windows overlap or touch).
        let step = len.min(count - len);
        starts &= starts >> step;
        len += step;
    }
    starts
}

/// The bits of a word at positions that are multiples of `align` (a power of two `<= BITS`):
/// `FULL / (2^align - 1)` repeats the pattern `0..01` of width `align` across the word.
#[inline]
const fn align_mask(align: usize) -> usize {
    if align >= BITS {
        1
    } else {
        FULL / ((1 << align) - 1)
    }
}

/// Calls `f(word_index, mask)` for each leaf word overlapping `start..end` (`start < end`),
/// with the mask of the range's bits in that word.
#[inline]
fn for_each_word_mask(start: usize, end: usize, mut f: impl FnMut(usize, usize)) {
    let mut pos = start;
    while pos < end {
        let index = pos / BITS;
        let lo = pos % BITS;
        let hi = (end - index * BITS).min(BITS);
        let mask = (FULL >> (BITS - (hi - lo))) << lo;
        f(index, mask);
        pos = (index + 1) * BITS;
    }
}
