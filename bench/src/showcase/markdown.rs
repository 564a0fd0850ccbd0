//! `--markdown FILE`: the run's report as Markdown (BENCHMARKS.md).
//!
//! Every line a section prints goes through [`line`] (the `out!` macro), every table through
//! [`Table::print`](super::Table::print) and [`Grid::print`](super::Grid::print): they print to
//! the console exactly as without `--markdown`, and, while recording, also keep what they
//! printed. At the end [`write`] puts a header (date, machine, commit, command line, caveats,
//! the peers' versions from Cargo.lock) in front of the recorded blocks. Nothing in the file is
//! typed by hand: a figure in it is a figure of the run that wrote it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Grid, Options, Table, short};

/// One piece of the report.
enum Block {
    /// A line of prose (consecutive lines make one paragraph).
    Text(String),
    /// An empty line: the end of a paragraph.
    Blank,
    /// A section title (a printed line underlined with dashes).
    Heading(String),
    /// Lines printed as a fixed-width table, kept as they are.
    Pre(Vec<String>),
    /// Markdown made by a table.
    Markdown(String),
}

/// What is recorded so far; `None` unless `--markdown` was given.
struct Recorder {
    blocks: Vec<Block>,
    /// Lines of an open [`Block::Pre`].
    pre: Option<Vec<String>>,
}

static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

/// Runs `f` on the recorder if this run records.
fn record(f: impl FnOnce(&mut Recorder)) {
    let mut recorder = RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(recorder) = recorder.as_mut() {
        f(recorder);
    }
}

/// Starts recording (`--markdown`).
pub(super) fn start() {
    *RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Recorder {
        blocks: Vec::new(),
        pre: None,
    });
}

/// Prints `text` as `println!` does and records it. A line of dashes under a line makes that
/// line a heading.
pub(crate) fn line(text: String) {
    println!("{text}");
    record(|r| {
        if let Some(pre) = r.pre.as_mut() {
            pre.push(text);
        } else if text.len() >= 3 && text.bytes().all(|b| b == b'-') {
            if let Some(Block::Text(title)) = r.blocks.pop() {
                r.blocks.push(Block::Heading(title));
            }
        } else if text.trim().is_empty() {
            r.blocks.push(Block::Blank);
        } else {
            r.blocks.push(Block::Text(text));
        }
    });
}

/// Starts (`true`) or ends (`false`) a run of lines kept as they are printed (a fixed-width
/// table that is not a [`Table`]).
pub(crate) fn preformatted(on: bool) {
    record(|r| {
        if on {
            r.pre.get_or_insert_with(Vec::new);
        } else if let Some(pre) = r.pre.take() {
            r.blocks.push(Block::Pre(pre));
        }
    });
}

/// Escapes the characters Markdown would read as markup in running text or a table cell.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '<' | '>' | '|' | '\\' | '`' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A name cell: ours in bold, as the console's `*` marks them.
fn name_cell(name: &str, peer: bool) -> String {
    if peer {
        escape(name)
    } else {
        format!("**{}**", escape(name))
    }
}

/// Records `table` (already printed); `footer` are the lines printed under it.
pub(super) fn table(table: &Table, footer: &[String]) {
    record(|r| {
        let best_peer = table.best_peer();
        let reference = table.reference_ns();
        let mut md = format!(
            "**{}**\n\n| allocator | ns/op | spread |",
            escape(&table.title)
        );
        let mut rule = String::from("|---|--:|--:|");
        if table.throughput {
            md += " Mops/s |";
            rule += "--:|";
        }
        md += " vs best peer |";
        rule += "--:|";
        if let Some((name, _)) = reference {
            let _ = write!(md, " vs {} |", escape(short(name)));
            rule += "--:|";
        }
        if let Some(extra) = table.extra {
            let _ = write!(md, " {} |", escape(extra));
            rule += "--:|";
        }
        md += "\n";
        md += &rule;
        md += "\n";
        for row in &table.rows {
            let m = row.measured;
            let _ = write!(
                md,
                "| {} | {:.1} | {:.0}% |",
                name_cell(row.name, row.peer),
                m.median,
                m.spread * 100.0
            );
            if table.throughput {
                let _ = write!(md, " {:.2} |", 1e3 / m.median);
            }
            match best_peer {
                Some(best) => {
                    let _ = write!(md, " {:.2}x |", m.median / best);
                }
                None => md += " |",
            }
            if let Some((_, ns)) = reference {
                let _ = write!(md, " {:.2}x |", m.median / ns);
            }
            if table.extra.is_some() {
                let _ = write!(md, " {} |", escape(&row.extra));
            }
            md += "\n";
        }
        paragraph(&mut md, footer);
        r.blocks.push(Block::Markdown(md));
    });
}

/// Records `grid` (already printed); `footer` is the line printed under it.
pub(super) fn grid(grid: &Grid, footer: &str) {
    record(|r| {
        let mut md = format!("**{}**\n\n| allocator |", escape(&grid.title));
        let mut rule = String::from("|---|");
        let reference = escape(short(grid.reference));
        for threads in &grid.columns {
            let _ = write!(md, " {threads} thr. Mops/s | vs {reference} | CPUs busy |");
            rule += "--:|--:|--:|";
        }
        md += "\n";
        md += &rule;
        md += "\n";
        let reference = grid.reference_cells();
        for (name, cells) in &grid.rows {
            let _ = write!(md, "| {} |", name_cell(name, is_peer_name(name)));
            for (i, (m, cpus)) in cells.iter().enumerate() {
                let ratio = reference.map_or(1.0, |reference| reference[i].0.median / m.median);
                let _ = write!(md, " {:.1} | {ratio:.2}x | {cpus:.1} |", 1e3 / m.median);
            }
            md += "\n";
        }
        paragraph(&mut md, &[footer.to_owned()]);
        r.blocks.push(Block::Markdown(md));
    });
}

/// Whether a row name is a peer's (ours start with `smpalloc`).
fn is_peer_name(name: &str) -> bool {
    !name.starts_with("smpalloc")
}

/// Appends `lines` as one paragraph, one line each (Markdown hard line breaks).
fn paragraph(md: &mut String, lines: &[String]) {
    let lines: Vec<String> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_prefix("(* = smpalloc") {
            Some(rest) => format!("(**bold** = smpalloc{}", escape(rest)),
            None => escape(l),
        })
        .collect();
    if !lines.is_empty() {
        md.push('\n');
        md.push_str(&lines.join("\\\n"));
        md.push('\n');
    }
}

/// The facts of this run, taken when it starts.
pub(super) struct Facts {
    date: String,
    cpu_model: String,
    cpus: usize,
    online: usize,
    virtualized: bool,
    commit: String,
    command: String,
}

impl Facts {
    /// Reads the clock, /proc/cpuinfo and git; `args` are the showcase's arguments.
    pub(super) fn now(args: &[String]) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".to_owned());
        let online = cpuinfo
            .lines()
            .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
            .count();
        let virtualized = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let mut command = String::from("cargo run --release --example showcase");
        if !args.is_empty() {
            command += " --";
            for arg in args {
                command.push(' ');
                command += arg;
            }
        }
        Facts {
            date: utc_now(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            online,
            virtualized,
            commit: commit(),
            command,
        }
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` if a tracked file differs from it; `unknown`
/// without git or outside a checkout.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            match git(&["status", "--porcelain", "--untracked-files=no"]) {
                Some(status) if status.is_empty() => hash,
                Some(_) => format!("{hash}-dirty"),
                None => format!("{hash} (dirty or not: unknown)"),
            }
        }
        _ => "unknown".to_owned(),
    }
}

/// The time now, UTC, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The workspace's Cargo.lock as this crate was built with it.
const CARGO_LOCK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));

/// One `[[package]]` of Cargo.lock.
struct Locked<'a> {
    name: &'a str,
    version: &'a str,
    /// `name` or `name version` (when the name alone is ambiguous).
    dependencies: Vec<&'a str>,
}

fn lock_packages() -> Vec<Locked<'static>> {
    let quoted = |l: &'static str| l.split('"').nth(1).unwrap_or("");
    let mut packages = Vec::new();
    for entry in CARGO_LOCK.split("[[package]]").skip(1) {
        let mut package = Locked {
            name: "",
            version: "",
            dependencies: Vec::new(),
        };
        let mut in_dependencies = false;
        for l in entry.lines().map(str::trim) {
            if in_dependencies {
                if l.starts_with(']') {
                    in_dependencies = false;
                } else {
                    package.dependencies.push(quoted(l));
                }
            } else if l.starts_with("name = ") {
                package.name = quoted(l);
            } else if l.starts_with("version = ") {
                package.version = quoted(l);
            } else if l.starts_with("dependencies = [") {
                in_dependencies = true;
            }
        }
        packages.push(package);
    }
    packages
}

/// The peers this crate depends on, with their versions from Cargo.lock, and the allocators
/// inside them (`axallocator 0.2.0 (ax_slab_allocator 0.4.0, ...)`).
fn peer_versions() -> Vec<String> {
    /// Our own crates and helpers that are no peer.
    const NOT_PEERS: [&str; 8] = [
        "smpalloc",
        "smpalloc-testkit",
        "crossbeam-utils",
        "allocator-api2",
        "libc",
        "criterion",
        "hashbrown",
        "lock_api",
    ];
    /// Allocators (or their C libraries) inside a peer, worth naming.
    const INSIDE: [&str; 7] = [
        "ax_slab_allocator",
        "buddy_system_allocator",
        "rlsf",
        "bitmap-allocator",
        "libmimalloc-sys",
        "tikv-jemalloc-sys",
        "snmalloc-sys",
    ];
    let packages = lock_packages();
    let find = |dependency: &str| {
        let mut parts = dependency.split(' ');
        let (name, version) = (parts.next().unwrap_or(""), parts.next());
        packages
            .iter()
            .find(|p| p.name == name && version.is_none_or(|v| p.version == v))
    };
    let Some(bench) = packages.iter().find(|p| p.name == "smpalloc-bench") else {
        return vec!["unknown (smpalloc-bench not in Cargo.lock)".to_owned()];
    };
    bench
        .dependencies
        .iter()
        .filter_map(|&d| find(d))
        .filter(|p| !NOT_PEERS.contains(&p.name))
        .map(|p| {
            let inside: Vec<String> = p
                .dependencies
                .iter()
                .filter_map(|&d| find(d))
                .filter(|q| INSIDE.contains(&q.name))
                .map(|q| format!("{} {}", q.name, q.version))
                .collect();
            if inside.is_empty() {
                format!("{} {}", p.name, p.version)
            } else {
                format!("{} {} (with {})", p.name, p.version, inside.join(", "))
            }
        })
        .collect()
}

/// Writes the report to `path`: the header from `facts` and `options`, then every block.
pub(super) fn write(path: &Path, facts: &Facts, options: &Options) -> std::io::Result<()> {
    let recorder = RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let blocks = recorder.map_or_else(Vec::new, |r| r.blocks);
    let mut md = String::new();
    md += "# smpalloc benchmarks\n\n";
    let _ = writeln!(
        md,
        "Written by the showcase (`{}`): every figure below comes from that run. To \
         regenerate this file, run `cargo run --release --example showcase -- --markdown \
         BENCHMARKS.md` on an otherwise idle machine; do not edit it by hand.\n",
        escape_code(&facts.command)
    );
    md += "| | |\n|---|---|\n";
    let _ = writeln!(md, "| date | {} |", facts.date);
    let cpu_kind = if facts.virtualized { "vCPUs" } else { "CPUs" };
    let _ = writeln!(
        md,
        "| machine | {}; {} {cpu_kind} available to the run ({} online) |",
        escape(&facts.cpu_model),
        facts.cpus,
        facts.online
    );
    let _ = writeln!(md, "| commit | {} |", escape(&facts.commit));
    let _ = writeln!(md, "| command | `{}` |", escape_code(&facts.command));
    let build = if cfg!(debug_assertions) {
        "debug (figures meaningless: run with --release)"
    } else {
        "release"
    };
    let _ = writeln!(md, "| build | {build} |");
    let _ = writeln!(md, "| peers | {} |", escape(&peer_versions().join(", ")));
    md += "\nCaveats:\n";
    let _ = writeln!(
        md,
        "- The run had {} {cpu_kind}: threaded rows measure contention between threads that \
         share them, not scaling; thread counts above {} oversubscribe them (spin locks then \
         also wait for preempted holders).",
        facts.cpus, facts.cpus
    );
    let _ = writeln!(
        md,
        "- Every scenario runs each allocator once per round, rotating the order, for {} \
         rounds; figures are medians over the rounds, spread = (max - min) / 2 / median.",
        options.rounds()
    );
    md += "- Ratios divide a time per operation by the best peer's (or the named peer's): \
           below 1.00x is faster. **Bold** rows are smpalloc's.\n";
    md += "- The figures are of one machine at one time; other load on it shows as spread.\n";
    if options.quick {
        md += "- `--quick`: fewer rounds and operations; expect noisier figures.\n";
    }
    md.push('\n');

    let mut in_paragraph = false;
    for block in blocks {
        match block {
            Block::Text(text) => {
                if in_paragraph {
                    md.push('\n');
                }
                md += &escape(text.trim());
                in_paragraph = true;
            }
            other => {
                if in_paragraph {
                    md += "\n\n";
                    in_paragraph = false;
                }
                match other {
                    Block::Text(_) | Block::Blank => {}
                    Block::Heading(title) => {
                        let _ = write!(md, "## {}\n\n", escape(title.trim()));
                    }
                    Block::Pre(lines) => {
                        md += "```text\n";
                        for l in lines {
                            md += &l;
                            md.push('\n');
                        }
                        md += "```\n\n";
                    }
                    Block::Markdown(text) => {
                        md += &text;
                        md.push('\n');
                    }
                }
            }
        }
    }
    if in_paragraph {
        md.push('\n');
    }
    std::fs::write(path, md.trim_end().to_owned() + "\n")
}

/// `text` for a code span (no backticks inside).
fn escape_code(text: &str) -> String {
    text.replace('`', "'")
}
