//! The smpalloc showcase: our allocators side by side with the crates people use today.
//!
//! ```text
//! cargo run --release --example showcase                      # every section
//! cargo run --release --example showcase -- --quick           # fewer repetitions (smoke run)
//! cargo run --release --example showcase -- --threads 1,2,4,8 # thread counts of the scaling table
//! cargo run --release --example showcase -- --only pages,bytes # some sections (ids, radix, pages, bytes, heap)
//! cargo run --release --example showcase -- --markdown BENCHMARKS.md # also write the tables there
//! ```
//!
//! Each section measures a few scenarios. Every scenario runs each allocator once per round,
//! in a rotating order, for several rounds; tables show the median time per operation, its
//! spread over the rounds, and the ratio to the best peer (another crate's allocator, or a
//! textbook baseline): our time divided by the best peer's time, so below 1 means faster.
//!
//! Sections: IDs (`ids`), the PID table (`radix`), pages (`pages`), bytes (`bytes`) and the SMP
//! heap (`heap`), each built from the same `Table`. With `--markdown FILE` the run also
//! writes every table, with the date, machine, commit and caveats, to FILE (module `markdown`).

use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` for the sections: prints the line and records it for `--markdown`.
macro_rules! out {
    () => {
        $crate::showcase::markdown::line(String::new())
    };
    ($($arg:tt)*) => {
        $crate::showcase::markdown::line(format!($($arg)*))
    };
}

mod bytes;
mod heap;
mod ids;
mod markdown;
mod pages;
mod radix;

/// Command-line options.
struct Options {
    /// Fewer rounds and operations (a smoke run).
    quick: bool,
    /// Thread counts of the scaling tables.
    threads: Vec<usize>,
    /// Sections to run (empty: all).
    only: Vec<String>,
    /// Where to write the Markdown report, if anywhere.
    markdown: Option<PathBuf>,
}

impl Options {
    const USAGE: &str = "usage: showcase [--quick] [--threads 1,2,4,...] [--only ids,radix,pages,bytes,heap] \
         [--markdown FILE]";
    const SECTIONS: [&str; 5] = ["ids", "radix", "pages", "bytes", "heap"];

    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            quick: false,
            threads: vec![1, 2],
            only: Vec::new(),
            markdown: None,
        };
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            match flag.as_str() {
                "--quick" if inline.is_none() => options.quick = true,
                "--threads" => {
                    let list = inline
                        .or_else(|| args.next())
                        .ok_or("--threads needs a list")?;
                    options.threads = list
                        .split(',')
                        .map(|n| match n.trim().parse() {
                            Ok(n) if n > 0 => Ok(n),
                            _ => Err(format!("bad thread count {n:?} in --threads")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--only" => {
                    let list = inline
                        .or_else(|| args.next())
                        .ok_or("--only needs a list")?;
                    for name in list.split(',').map(str::trim) {
                        if !Self::SECTIONS.contains(&name) {
                            return Err(format!("unknown section {name:?} in --only"));
                        }
                        options.only.push(name.to_owned());
                    }
                }
                "--markdown" => {
                    let path = inline
                        .or_else(|| args.next())
                        .filter(|path| !path.is_empty())
                        .ok_or("--markdown needs a file name")?;
                    options.markdown = Some(PathBuf::from(path));
                }
                "--help" | "-h" => return Err(String::new()), // not an error: print the usage
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }
        Ok(options)
    }

    /// Whether the section `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == name)
    }

    /// Rounds per scenario (each round runs every allocator once).
    fn rounds(&self) -> usize {
        if self.quick { 2 } else { 7 }
    }

    /// `full` operations, or a tenth of them in a quick run.
    fn ops(&self, full: u64) -> u64 {
        if self.quick { full / 10 } else { full }
    }
}

/// The showcase's `main` (`examples/showcase.rs` at the repository root calls it): parses the
/// command line, runs the sections and, with `--markdown FILE`, writes the report there.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Hidden: the heap section's memory table runs each allocator alone in a child process.
    if args.first().is_some_and(|arg| arg == "--rss-probe") {
        return heap::rss_probe(&args[1..]);
    }
    // Hidden: the pages section's pinned buddy row runs in a child (pin hooks are global).
    if args.first().is_some_and(|arg| arg == "--pinned-page-probe") {
        return pages::pinned_probe(&args[1..]);
    }
    let options = match Options::parse(args.clone().into_iter()) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{}", Options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("showcase: {message}\n{}", Options::USAGE);
            return ExitCode::from(2);
        }
    };
    // Taken before the run: the date it started, the commit it measured.
    let facts = options.markdown.as_ref().map(|_| {
        markdown::start();
        markdown::Facts::now(&args)
    });
    header(&options);
    if options.runs("ids") {
        ids::section(&options);
    }
    if options.runs("radix") {
        radix::section(&options);
    }
    if options.runs("pages") {
        pages::section(&options);
    }
    if options.runs("bytes") {
        bytes::section(&options);
    }
    if options.runs("heap") {
        heap::section(&options);
    }
    if let (Some(path), Some(facts)) = (&options.markdown, facts) {
        if let Err(error) = markdown::write(path, &facts, &options) {
            eprintln!("showcase: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("Markdown report written to {}.", path.display());
    }
    ExitCode::SUCCESS
}

/// The facts every figure below depends on.
fn header(options: &Options) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("smpalloc showcase");
    println!("=================");
    if cfg!(debug_assertions) {
        println!("WARNING: debug build; run with `cargo run --release --example showcase`.");
    }
    println!("CPUs available to this process: {cpus} (std::thread::available_parallelism).");
    println!(
        "Each scenario runs every allocator once per round, rotating the order, for {} rounds;",
        options.rounds()
    );
    println!("figures are medians over the rounds, spread = (max - min) / 2 / median.");
    println!("Ratios divide a time per operation by the best peer's: below 1.00x is faster.");
    println!(
        "Threaded figures share {cpus} CPU(s) between the threads: on a 2-vCPU machine they \
         measure contention, not scaling, and thread counts above {cpus} oversubscribe the CPUs \
         (spin locks then also wait for preempted holders)."
    );
    if options.quick {
        println!("--quick: fewer rounds and operations; expect noisier figures.");
    }
    println!();
}

// -------------------------------------------------------------------------------------------------
// Tables

/// One allocator's samples (ns per operation, one per round), summarised.
#[derive(Debug, Clone, Copy)]
struct Measured {
    median: f64,
    spread: f64,
}

impl Measured {
    fn from_samples(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let spread = (sorted[n - 1] - sorted[0]) / 2.0 / median;
        Measured { median, spread }
    }
}

/// Runs `measure` on each of `kinds` for `rounds` rounds, rotating the order every round;
/// returns each kind's summary (in `kinds` order). `measure` returns one sample.
fn rotate<K: Copy>(kinds: &[K], rounds: usize, mut measure: impl FnMut(K) -> f64) -> Vec<Measured> {
    let mut samples = vec![Vec::with_capacity(rounds); kinds.len()];
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            samples[i].push(measure(kinds[i]));
        }
    }
    samples.iter().map(|s| Measured::from_samples(s)).collect()
}

/// A goal, as a bound on `our time / reference peer's time`.
struct Target {
    text: &'static str,
    max_time_ratio: f64,
}

/// A goal for one of our rows against one named peer (a per-family speed goal), as a bound
/// on `our time / that peer's time`.
struct Goal {
    ours: &'static str,
    peer: &'static str,
    max_time_ratio: f64,
}

/// A side-by-side table of one scenario: allocators, median ns per operation, ratios.
struct Table {
    title: String,
    /// Also print operations per second (for aggregate throughput of threaded scenarios).
    throughput: bool,
    /// A peer to print a second ratio against (the one the targets name).
    reference: Option<&'static str>,
    target: Option<Target>,
    /// Goals of single rows against single peers, printed under the target.
    goals: Vec<Goal>,
    /// The header of an extra text column, if any.
    extra: Option<&'static str>,
    rows: Vec<Row>,
    /// Lines printed under the table.
    notes: Vec<String>,
}

/// One allocator's line in a [`Table`].
struct Row {
    name: &'static str,
    /// Someone else's allocator (a peer), or ours.
    peer: bool,
    measured: Measured,
    /// The extra column's text.
    extra: String,
}

impl Table {
    fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            throughput: false,
            reference: None,
            target: None,
            goals: Vec::new(),
            extra: None,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn throughput(mut self) -> Self {
        self.throughput = true;
        self
    }

    fn reference(mut self, peer: &'static str) -> Self {
        self.reference = Some(peer);
        self
    }

    fn target(mut self, text: &'static str, max_time_ratio: f64) -> Self {
        self.target = Some(Target {
            text,
            max_time_ratio,
        });
        self
    }

    /// Adds a goal: our row `ours` at most `max_time_ratio` times peer `peer`'s time.
    fn goal(mut self, ours: &'static str, peer: &'static str, max_time_ratio: f64) -> Self {
        self.goals.push(Goal {
            ours,
            peer,
            max_time_ratio,
        });
        self
    }

    fn extra_column(mut self, header: &'static str) -> Self {
        self.extra = Some(header);
        self
    }

    /// Adds a line under the table.
    fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Adds an allocator: `peer` is true for someone else's allocator, false for ours.
    fn row(&mut self, name: &'static str, peer: bool, measured: Measured) {
        self.row_with(name, peer, measured, String::new());
    }

    /// [`row`](Self::row) with the text of the extra column.
    fn row_with(&mut self, name: &'static str, peer: bool, measured: Measured, extra: String) {
        self.rows.push(Row {
            name,
            peer,
            measured,
            extra,
        });
    }

    fn ns(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.name == name)
            .map(|row| row.measured.median)
    }

    /// The median of the fastest peer, if any.
    fn best_peer(&self) -> Option<f64> {
        self.rows
            .iter()
            .filter(|row| row.peer)
            .map(|row| row.measured.median)
            .min_by(f64::total_cmp)
    }

    /// The reference peer's name and median, if it has a row.
    fn reference_ns(&self) -> Option<(&'static str, f64)> {
        self.reference
            .and_then(|name| self.ns(name).map(|ns| (name, ns)))
    }

    /// Prints the table (and records it for `--markdown`).
    fn print(&self) {
        println!("{}", self.title);
        let best_peer = self
            .rows
            .iter()
            .filter(|row| row.peer)
            .min_by(|a, b| a.measured.median.total_cmp(&b.measured.median));
        let reference = self.reference_ns();
        let mut head = format!("  {:<27} {:>10} {:>7}", "allocator", "ns/op", "spread");
        if self.throughput {
            head += &format!(" {:>9}", "Mops/s");
        }
        head += &format!(" {:>12}", "vs best peer");
        if let Some((name, _)) = reference {
            head += &format!(" {:>17}", format!("vs {}", short(name)));
        }
        if let Some(extra) = self.extra {
            head += &format!(" {extra:>8}");
        }
        println!("{head}");
        for row in &self.rows {
            let m = row.measured;
            let mut line = format!(
                "  {:<27} {:>10.1} {:>6.0}%",
                format!("{}{}", if row.peer { "  " } else { "* " }, row.name),
                m.median,
                m.spread * 100.0
            );
            if self.throughput {
                line += &format!(" {:>9.2}", 1e3 / m.median);
            }
            if let Some(best) = best_peer {
                line += &format!(" {:>11.2}x", m.median / best.measured.median);
            }
            if let Some((_, ns)) = reference {
                line += &format!(" {:>16.2}x", m.median / ns);
            }
            if self.extra.is_some() {
                line += &format!(" {:>8}", row.extra);
            }
            println!("{line}");
        }
        let mut footer = Vec::new();
        if let Some(best) = best_peer {
            footer.push(format!(
                "(* = smpalloc; best peer: {}, {:.1} ns/op)",
                best.name, best.measured.median
            ));
        }
        if let (Some(target), Some((name, ns))) = (&self.target, reference) {
            let verdicts: Vec<String> = self
                .rows
                .iter()
                .filter(|row| !row.peer)
                .map(|row| {
                    let ratio = row.measured.median / ns;
                    let verdict = if ratio <= target.max_time_ratio {
                        "met"
                    } else {
                        "MISSED"
                    };
                    format!("{} {ratio:.2}x {verdict}", short_ours(row.name))
                })
                .collect();
            footer.push(format!(
                "target: {} (time <= {:.2}x {}): {}",
                target.text,
                target.max_time_ratio,
                short(name),
                verdicts.join(", ")
            ));
        }
        for goal in &self.goals {
            let (Some(ours), Some(peer)) = (self.ns(goal.ours), self.ns(goal.peer)) else {
                continue;
            };
            let ratio = ours / peer;
            let verdict = if ratio <= goal.max_time_ratio {
                "met"
            } else {
                "MISSED"
            };
            footer.push(format!(
                "goal: {} time <= {:.2}x {}'s: {ratio:.2}x {verdict}",
                short_ours(goal.ours),
                goal.max_time_ratio,
                short(goal.peer),
            ));
        }
        footer.extend(self.notes.iter().cloned());
        for line in &footer {
            println!("  {line}");
        }
        println!();
        markdown::table(self, &footer);
    }
}

/// A peer's name without its version (`pid_allocator 0.1.6` -> `pid_allocator`).
fn short(name: &str) -> &str {
    name.split(' ').next().unwrap_or(name)
}

/// One of our names without the crate (`smpalloc NextFit` -> `NextFit`).
fn short_ours(name: &str) -> &str {
    name.strip_prefix("smpalloc ").unwrap_or(name)
}

/// A table of aggregate throughput (Mops/s) per thread count.
struct Grid {
    title: String,
    columns: Vec<usize>,
    reference: &'static str,
    /// Per allocator, per column: the summary and the median number of CPUs busy.
    rows: Vec<(&'static str, Vec<(Measured, f64)>)>,
}

impl Grid {
    fn print(&self) {
        println!("{}", self.title);
        let mut head = format!("  {:<25}", "threads:");
        for threads in &self.columns {
            head += &format!(" {threads:>20}");
        }
        println!("{head}");
        let reference = self
            .rows
            .iter()
            .find(|row| row.0 == self.reference)
            .map(|row| &row.1);
        for (name, cells) in &self.rows {
            let mut line = format!("  {name:<25}");
            for (i, (m, cpus)) in cells.iter().enumerate() {
                let mops = 1e3 / m.median;
                let ratio = reference.map_or(1.0, |reference| reference[i].0.median / m.median);
                line += &format!(" {mops:>7.1} {ratio:>5.2}x {cpus:>4.1}");
            }
            println!("{line}");
        }
        let footer = format!(
            "(per thread count: aggregate Mops/s, throughput / {}'s, CPUs busy)",
            short(self.reference)
        );
        println!("  {footer}");
        println!();
        markdown::grid(self, &footer);
    }

    /// The reference row's cells, if it has one.
    fn reference_cells(&self) -> Option<&[(Measured, f64)]> {
        self.rows
            .iter()
            .find(|row| row.0 == self.reference)
            .map(|row| row.1.as_slice())
    }
}
