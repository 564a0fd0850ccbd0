//! The showcase section for the radix family (in progress).

/// Prints this family's tables (none yet).
pub(crate) fn section(_options: &crate::Options) {}
