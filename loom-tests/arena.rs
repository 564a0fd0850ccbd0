//! Loom models for the arena protocols (in progress).
#![cfg(loom)]
