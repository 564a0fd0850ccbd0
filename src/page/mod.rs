//! The page layer: bitmap and buddy page allocators with per-CPU page caches (issue 5, in
//! progress).
