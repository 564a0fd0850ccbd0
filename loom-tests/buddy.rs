//! Loom models for the buddy protocols (in progress).
#![cfg(loom)]
