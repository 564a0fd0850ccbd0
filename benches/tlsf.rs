//! Criterion benchmarks for the tlsf family (in progress).

fn main() {}
