//! Model sizes: every capacity that a loom model needs smaller than a shipped build, in one
//! place.
//!
//! A loom model explores every interleaving of a few operations, so the structures under it
//! must be tiny (a 64-way radix node is 64 loom atomics; a 30-object magazine needs 30 frees
//! before it spills). The shipped constants of the crate read their value from [`SIZES`], which
//! is [`Sizes::SHIPPED`] in every build and [`Sizes::MODEL`] under `RUSTFLAGS="--cfg loom"`;
//! this module is the only place that knows which sizes a model shrinks and by how much. The
//! code paths are the same for both: only the capacities differ.

// Each family reads its own sizes: a build without some family's feature leaves some unread.
#![cfg_attr(not(all(feature = "radix", feature = "heap")), allow(dead_code))]

/// The capacities that differ between a shipped build and a loom model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Key bits per radix tree level (`radix::RADIX_BITS`; the fanout is `1 << bits`).
    pub(crate) radix_bits: u32,
    /// Per-CPU reader counters of a radix tree (CPU ids reduced modulo this).
    pub(crate) radix_reader_slots: usize,
    /// RMWs a radix reclamation spends on one busy reader counter before it gives up.
    pub(crate) radix_grace_polls: usize,
    /// CPU slots of the bitmap page allocator's cursors (ids reduced modulo this).
    pub(crate) page_cursor_slots: usize,
    /// Pages one per-CPU page cache holds at most (`page::PCP_CAPACITY`).
    pub(crate) pcp_capacity: usize,
    /// Default high watermark of a per-CPU page cache (`page::DEFAULT_PCP_HIGH`).
    pub(crate) pcp_high: usize,
    /// Default batch of a per-CPU page cache (`page::DEFAULT_PCP_BATCH`).
    pub(crate) pcp_batch: usize,
    /// Objects per heap magazine (`heap::MAGAZINE`).
    pub(crate) magazine: usize,
    /// Full-magazine slots of a heap class's depot.
    pub(crate) depot: usize,
    /// Slab classes the heap serves (`heap::HEAP_CLASSES`; larger sizes go to TLSF).
    pub(crate) heap_classes: usize,
    /// Empty slabs a heap class keeps before returning one to the pages.
    pub(crate) keep_empty_slabs: usize,
    /// Bytes of the heap's first TLSF pool taken from the pages.
    pub(crate) tlsf_chunk: usize,
    /// Index bits per level of the heap's page map.
    pub(crate) pagemap_bits: u32,
    /// Objects `SmpHeap::check` compares for repeats.
    pub(crate) check_objects: usize,
}

impl Sizes {
    /// The sizes of every normal build.
    pub(crate) const SHIPPED: Self = Self {
        radix_bits: 6,
        radix_reader_slots: 16,
        radix_grace_polls: 64,
        page_cursor_slots: 16,
        pcp_capacity: 64,
        pcp_high: 64,
        pcp_batch: 16,
        magazine: 30,
        depot: 16,
        // All the slab classes (`byte::slab::class::CLASSES`; `heap/route.rs` asserts it).
        heap_classes: 32,
        keep_empty_slabs: 2,
        tlsf_chunk: 256 * 1024,
        // With `std` (user space: C's `free` walks the map on every call) three levels of 12
        // bits, 32 KiB nodes; without (kernels), and under Miri (where writing and checking
        // 4096-slot nodes one atomic at a time costs minutes; the code is the same for any
        // shape), four levels of 9 bits, 4 KiB nodes.
        pagemap_bits: if cfg!(all(feature = "std", not(miri))) {
            12
        } else {
            9
        },
        check_objects: 4096,
    };

    /// The sizes under loom: a few of everything, so that models reach every exchange (a
    /// magazine spill, a depot push, a reclamation, a cache drain) in a few operations.
    pub(crate) const MODEL: Self = Self {
        radix_bits: 1,
        radix_reader_slots: 2,
        radix_grace_polls: 2,
        page_cursor_slots: 2,
        pcp_capacity: 4,
        pcp_high: 2,
        pcp_batch: 1,
        magazine: 2,
        depot: 1,
        // 8..32 B; larger sizes go to TLSF.
        heap_classes: 4,
        // A model's single slab goes back as soon as it empties.
        keep_empty_slabs: 0,
        // A model's pool holds one block of a few KiB, and growths race for it.
        tlsf_chunk: 8 * 1024,
        pagemap_bits: 4,
        check_objects: 64,
    };
}

/// The sizes of this build.
pub(crate) const SIZES: Sizes = if cfg!(loom) {
    Sizes::MODEL
} else {
    Sizes::SHIPPED
};

/// The `Tlsf` of one `TlsfHeap` arena: [`DefaultTlsf`](crate::byte::DefaultTlsf) (a 7 KB
/// header), under loom a small configuration (256 bytes), so a heap fits on a model thread's
/// stack; models use pools of a few blocks.
#[cfg(all(feature = "tlsf", not(loom)))]
pub(crate) type ArenaTlsf = crate::byte::DefaultTlsf;
/// The `Tlsf` of one `TlsfHeap` arena (see the non-loom definition).
#[cfg(all(feature = "tlsf", loom))]
pub(crate) type ArenaTlsf = crate::byte::Tlsf<'static, u8, u8, 8, 4>;
