//! `BuddyByteAllocator` (seed 001 API) with O(1) buddy lookup. Issue 7, helper A.
