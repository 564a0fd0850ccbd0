//! Criterion benchmarks for the radix family (in progress).

fn main() {}
