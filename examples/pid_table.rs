//! Process IDs for a kernel: a `PidAllocator` for IDs alone, and a `PidTable` (here
//! `NexaPidTable`, 2^18 PIDs) that maps each live PID to its process-table slot, with
//! wait-free lookups. Both live in `static`s: no heap, no lock, no initialisation at run time.
//!
//! ```text
//! cargo run --example pid_table
//! ```

use smpalloc::PidAllocator;
use smpalloc::radix::{NexaPidTable, PidError};

/// Thread IDs: 4,096 of them, ID 0 reserved. A handle frees its ID when dropped.
static TIDS: PidAllocator<64> = PidAllocator::with_reserved(1);

/// PIDs 1..2^18, mapped to process-table slots; after a wrap, allocation restarts at 300
/// (Linux's rule: low PIDs belong to early daemons).
static PIDS: NexaPidTable = NexaPidTable::with_reserved_after_wrap(300);

fn main() {
    // Allocate: init takes PID 1 explicitly, then next-fit hands out 2, 3, ...
    PIDS.allocate_specific_pid(1).unwrap();
    let shell = PIDS.allocate_pid().expect("PIDs left");
    assert_eq!(shell, 2);

    // Register: the process-table slot each PID maps to.
    PIDS.register_pid_mapping(1, 0).unwrap();
    PIDS.register_pid_mapping(shell, 1).unwrap();

    // Look up: wait-free, from any CPU, concurrently with the updates.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..1000 {
                    assert_eq!(PIDS.lookup_pid(1), Some(0));
                }
            });
        }
        s.spawn(|| {
            for slot in 2..1000 {
                let pid = PIDS.allocate_pid().unwrap();
                PIDS.register_pid_mapping(pid, slot).unwrap();
                assert_eq!(PIDS.free_pid(pid), Ok(Some(slot)));
            }
        });
    });

    // Free: the PID and its mapping go together; a freed PID cannot be registered again.
    assert_eq!(PIDS.free_pid(shell), Ok(Some(1)));
    assert_eq!(PIDS.lookup_pid(shell), None);
    assert_eq!(
        PIDS.register_pid_mapping(shell, 5),
        Err(PidError::NotAllocated)
    );
    // Bad input is an error, never a panic or an alias: PIDs above the maximum do not exist.
    assert_eq!(PIDS.lookup_pid(1 + (1 << 18)), None);
    PIDS.check().expect("PID table invariants");

    // A thread ID per thread, released when its handle drops.
    let main_tid = TIDS.allocate().expect("TIDs left");
    let worker_tid = std::thread::scope(|s| s.spawn(|| *TIDS.allocate().unwrap()).join().unwrap());
    println!(
        "init is PID 1, the shell was PID {shell}; TIDs {} and {worker_tid}; {} PID(s) live",
        *main_tid,
        PIDS.allocated_pid_count()
    );
}
