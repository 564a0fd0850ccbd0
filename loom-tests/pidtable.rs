//! Loom models for the pidtable protocols (in progress).
#![cfg(loom)]
