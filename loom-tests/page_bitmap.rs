//! Loom models for the page_bitmap protocols (in progress).
#![cfg(loom)]
