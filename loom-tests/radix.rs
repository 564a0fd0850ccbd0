//! Loom models for the radix protocols (in progress).
#![cfg(loom)]
