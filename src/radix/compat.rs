//! The NexaOS `process::pid_tree` API as free functions over one static [`NexaPidTable`], so a
//! kernel written against it switches by changing an import:
//! `use smpalloc::radix::compat::{allocate_pid, free_pid, ...};`.
//!
//! Same signatures (`u64` PIDs, `u16` process-table indices) and constants. Differences, all
//! fixes of the original's defects: every PID up to [`MAX_PID`] works (not only those below
//! 4,096); [`allocate_pid`] returns 0 (PID 0 is never a process) when every PID is taken
//! instead of a duplicate; the node pool holds the full tree, so registration never runs out;
//! PIDs above [`MAX_PID`] are rejected instead of aliasing low PIDs; freed PIDs are not reused
//! at once (next-fit); and nothing takes a lock.

use super::NexaPidTable;

/// The largest PID (2^18 - 1).
pub const MAX_PID: u64 = NexaPidTable::MAX_PID as u64;
/// The smallest PID a process gets (PID 0 is the kernel's).
pub const MIN_PID: u64 = 1;

static TABLE: NexaPidTable = NexaPidTable::with_reserved_after_wrap(1);

/// The table behind these functions (for statistics and `check`).
pub fn table() -> &'static NexaPidTable {
    &TABLE
}

fn pid(pid: u64) -> Option<usize> {
    usize::try_from(pid).ok().filter(|&p| p as u64 <= MAX_PID)
}

/// Allocates the next PID (next-fit with wrap-around); 0 when every PID is taken.
pub fn allocate_pid() -> u64 {
    TABLE.allocate_pid().map_or(0, |p| p as u64)
}

/// Frees `pid` and removes its mapping; does nothing for a PID that is not allocated.
pub fn free_pid(pid: u64) {
    if let Some(p) = self::pid(pid) {
        let _ = TABLE.free_pid(p);
    }
}

/// Maps the allocated `pid` to process-table slot `process_table_idx`; false (nothing
/// changed) if the PID is invalid, not allocated or already mapped.
pub fn register_pid_mapping(pid: u64, process_table_idx: u16) -> bool {
    self::pid(pid).is_some_and(|p| {
        TABLE
            .register_pid_mapping(p, usize::from(process_table_idx))
            .is_ok()
    })
}

/// Changes `pid`'s mapping; false (nothing changed) if it has none.
pub fn update_pid_mapping(pid: u64, new_process_table_idx: u16) -> bool {
    self::pid(pid).is_some_and(|p| {
        TABLE
            .update_pid_mapping(p, usize::from(new_process_table_idx))
            .is_ok()
    })
}

/// The process-table slot of `pid`.
pub fn lookup_pid(pid: u64) -> Option<u16> {
    self::pid(pid)
        .and_then(|p| TABLE.lookup_pid(p))
        .map(|v| v as u16)
}

/// Removes `pid`'s mapping and returns it.
pub fn unregister_pid_mapping(pid: u64) -> Option<u16> {
    self::pid(pid)
        .and_then(|p| TABLE.unregister_pid_mapping(p))
        .map(|v| v as u16)
}

/// Whether `pid` is allocated (PID 0, the kernel's, is).
pub fn is_pid_allocated(pid: u64) -> bool {
    pid == 0 || self::pid(pid).is_some_and(|p| TABLE.is_pid_allocated(p))
}

/// Allocated PIDs, PID 0 included (as the original counts).
pub fn allocated_pid_count() -> u64 {
    TABLE.allocated_pid_count() as u64 + 1
}

/// Allocates `pid` itself; false (nothing changed) if it is 0, above [`MAX_PID`] or taken.
pub fn allocate_specific_pid(pid: u64) -> bool {
    self::pid(pid).is_some_and(|p| TABLE.allocate_specific_pid(p).is_ok())
}

/// (allocated PIDs with PID 0, radix nodes in use).
pub fn get_pid_stats() -> (u64, usize) {
    let stats = TABLE.get_pid_stats();
    (stats.allocated as u64 + 1, stats.nodes_in_use)
}
