//! Loom models of the SMP heap (issue 7): magazine exchange, cross-CPU free, slab release,
//! drain. Empty unless `--cfg loom`.
#![cfg(loom)]
