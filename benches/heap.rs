//! The SMP heap against glibc, mimalloc and the no_std peers (issue 7). Filled in by the
//! benchmark change.
fn main() {}
