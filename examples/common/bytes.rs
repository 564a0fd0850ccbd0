//! The showcase section for the bytes family (in progress).

/// Prints this family's tables (none yet).
pub(crate) fn section(_options: &crate::Options) {}
