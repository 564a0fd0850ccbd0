//! The smpalloc showcase: every allocator family side by side with the crates people use
//! today (the `smpalloc-bench` crate in `bench/` holds the sections, contestants and
//! workloads).
//!
//! ```text
//! cargo run --release --example showcase                       # every section
//! cargo run --release --example showcase -- --quick            # fewer repetitions (smoke run)
//! cargo run --release --example showcase -- --only pages,bytes # some sections
//! cargo run --release --example showcase -- --markdown BENCHMARKS.md # also write the tables
//! ```

fn main() -> std::process::ExitCode {
    smpalloc_bench::showcase::main()
}
