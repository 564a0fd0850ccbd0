//! The showcase section for the SMP heap (issue 7): filled in by the benchmark change.

use crate::Options;

/// Runs the heap section.
pub(crate) fn section(_options: &Options) {}
