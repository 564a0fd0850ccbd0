//! The SMP heap (issue 7): per-CPU slab magazines over the page layer, TLSF for odd and large
//! sizes, huge blocks straight from the pages.

mod source;

pub use source::PageSource;
#[cfg(feature = "std")]
pub use source::SystemPages;
