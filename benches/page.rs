//! Criterion benchmarks for the page family (in progress).

fn main() {}
