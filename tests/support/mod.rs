//! The test-support kit every test binary mounts with `mod support;`:
//! - [`testkit`] re-exported: the seeded [`Rng`] and the two shadow oracles, [`IdShadow`] (IDs)
//!   and [`RangeShadow`] (owned ranges of bytes or pages);
//! - [`ids`]: the glue that lets [`IdShadow`] observe `AtomicBitmap` and `PidAllocator`, and
//!   the mapping from raw proptest values to interesting IDs;
//! - [`memory`]: real memory for pools ([`memory::Memory`]) and the memory oracle over
//!   [`RangeShadow`] that also writes and checks fill patterns ([`memory::MemShadow`]);
//! - [`bytes`]: the adapter trait over the byte allocators ([`bytes::Bytes`]) and the random
//!   program both run against the memory oracle;
//! - [`pages`]: the adapter trait over the page allocators ([`pages::Pages`], `&self`, so
//!   threads can share one), and a buddy over leaked memory for the heap tests;
//! - [`tlsf`]: the TLSF random program over every configuration;
//! - [`suite!`]: runs one test body over every allocator and configuration, one `#[test]`
//!   each.

#![allow(
    dead_code,
    unused_imports,
    unused_macros,
    reason = "each test binary uses a different part of the kit"
)]

pub(crate) mod bytes;
pub(crate) mod ids;
pub(crate) mod memory;
pub(crate) mod pages;
pub(crate) mod tlsf;

pub(crate) use smpalloc_testkit as testkit;
pub(crate) use smpalloc_testkit::{IdShadow, RangeError, RangeShadow, Regions, Rng, pattern};

/// Runs one test body over several allocators or configurations, one `#[test]` each, so a
/// failure names the allocator:
///
/// ```ignore
/// support::suite!(stress_with_threads: bitmap_stress => bitmap(), buddy_stress => buddy());
/// ```
///
/// expands to `#[test] fn bitmap_stress() { stress_with_threads(&bitmap()) }` and the same for
/// `buddy_stress`; the body is a generic function over the adapter trait ([`pages::Pages`],
/// [`bytes::Bytes`], ...).
macro_rules! suite {
    ($body:path: $($(#[$meta:meta])* $test:ident => $make:expr),+ $(,)?) => {
        $(
            $(#[$meta])*
            #[test]
            fn $test() {
                $body(&$make);
            }
        )+
    };
}
pub(crate) use suite;
