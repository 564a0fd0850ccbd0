//! Byte allocators: TLSF and the locked arena heap (issue 6), slab and buddy (issue 7); in
//! progress.
