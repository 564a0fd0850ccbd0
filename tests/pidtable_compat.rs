//! The NexaOS compatibility functions (`smpalloc::radix::compat`), including a regression
//! test for each verified defect of the original `pid_tree.rs` (RESEARCH.md §3.4). One test
//! function: the functions share one static table.

use smpalloc::radix::compat::{
    MAX_PID, MIN_PID, allocate_pid, allocate_specific_pid, allocated_pid_count, free_pid,
    get_pid_stats, is_pid_allocated, lookup_pid, register_pid_mapping, table,
    unregister_pid_mapping, update_pid_mapping,
};

#[test]
fn nexaos_api_and_its_defects_fixed() {
    assert_eq!((MAX_PID, MIN_PID), ((1 << 18) - 1, 1));
    assert!(is_pid_allocated(0), "PID 0 is the kernel's");
    assert_eq!(allocated_pid_count(), 1, "the original counts PID 0");

    // Basic lifecycle, next-fit.
    let a = allocate_pid();
    let b = allocate_pid();
    assert_eq!((a, b), (1, 2));
    assert!(register_pid_mapping(a, 10));
    assert!(!register_pid_mapping(a, 11), "already mapped");
    assert!(update_pid_mapping(a, 12));
    assert_eq!(lookup_pid(a), Some(12));
    assert_eq!(unregister_pid_mapping(a), Some(12));
    assert!(register_pid_mapping(a, 13));
    free_pid(a);
    assert_eq!(lookup_pid(a), None, "free_pid removes the mapping");
    assert!(!is_pid_allocated(a));
    assert_eq!(allocate_pid(), 3, "a freed PID is not reused at once");
    free_pid(b);
    free_pid(3);
    table().check().unwrap();

    // Defect 1: only PIDs below 4,096 worked.
    for pid in [4095, 4096, 50_000, MAX_PID] {
        assert!(allocate_specific_pid(pid), "PID {pid}");
        assert!(register_pid_mapping(pid, (pid % 60_000) as u16));
        assert_eq!(lookup_pid(pid), Some((pid % 60_000) as u16));
    }
    assert!(!allocate_specific_pid(0));
    assert!(!allocate_specific_pid(MAX_PID + 1));

    // Defect 4: PIDs above the maximum aliased low PIDs.
    assert!(allocate_specific_pid(1));
    assert!(register_pid_mapping(1, 77));
    assert_eq!(lookup_pid(1 + (1 << 18)), None);
    assert_eq!(unregister_pid_mapping(1 + (1 << 18)), None);
    assert!(!register_pid_mapping(1 + (1 << 18), 5));
    assert!(!is_pid_allocated(1 + (1 << 18)));
    assert_eq!(lookup_pid(1), Some(77));
    for pid in [1, 4095, 4096, 50_000, MAX_PID] {
        free_pid(pid);
    }
    table().check().unwrap();

    // Defect 3: the node pool ran out after ~250 registrations. Register 10,000 at once, then
    // cycle through every PID of the space (leaves are reclaimed and reused).
    let pids: Vec<u64> = (0..10_000).map(|_| allocate_pid()).collect();
    for (i, &pid) in pids.iter().enumerate() {
        assert!(
            register_pid_mapping(pid, i as u16),
            "registration {i} failed"
        );
    }
    for (i, &pid) in pids.iter().enumerate() {
        assert_eq!(lookup_pid(pid), Some(i as u16));
        free_pid(pid);
    }
    table().check().unwrap();
    table().reclaim();
    assert_eq!(get_pid_stats(), (1, 1), "every node reclaimed");

    // Defect 2: duplicates after exhaustion. Fill the whole space.
    let mut live = Vec::with_capacity(MAX_PID as usize);
    loop {
        let pid = allocate_pid();
        if pid == 0 {
            break;
        }
        live.push(pid);
    }
    assert_eq!(
        live.len() as u64,
        MAX_PID,
        "every PID 1..=MAX_PID, each once"
    );
    live.sort_unstable();
    live.dedup();
    assert_eq!(live.len() as u64, MAX_PID, "a PID was handed out twice");
    assert_eq!(allocate_pid(), 0, "exhausted: 0, never a duplicate");
    assert_eq!(allocated_pid_count(), MAX_PID + 1);
    // With every PID mapped, the pool (sized for the full tree) does not run out.
    for &pid in &live {
        assert!(register_pid_mapping(pid, pid as u16));
    }
    assert_eq!(get_pid_stats(), (MAX_PID + 1, 4161));
    table().check().unwrap();
    for &pid in &live {
        free_pid(pid);
    }
    table().reclaim();
    assert_eq!(get_pid_stats(), (1, 1));
    table().check().unwrap();
}
