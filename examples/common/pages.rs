//! The showcase section for the pages family (in progress).

/// Prints this family's tables (none yet).
pub(crate) fn section(_options: &crate::Options) {}
