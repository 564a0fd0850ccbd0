//! The lock-free PID radix tree and `PidTable` (issue 4, in progress).
