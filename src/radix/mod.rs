//! The lock-free PID radix tree and [`PidTable`] (the NexaOS PID system, made concurrent).
//!
//! - [`RadixTree`]: 64-way lock-free radix tree from keys to machine words; wait-free lookups,
//!   lock-free insert/remove/replace/compare-exchange, empty nodes reclaimed after a grace
//!   period (`tree.rs` and docs/design/04-radix-and-pid-table.md give the protocol).
//! - Node storage: [`NodePool`] (a fixed array, no heap, `const`) or [`HeapNodePool`] (one heap
//!   array sized at run time, feature `alloc`).
//! - [`PidTable`]: strict next-fit PID allocation on an [`AtomicBitmap`](crate::bitmap::AtomicBitmap)
//!   plus the PID -> value map, with the bitmap/mapping races decided (`table.rs`).
//! - [`compat`]: the NexaOS free functions over one static table.

mod pool;
pub mod table;
pub mod tree;

#[cfg(not(loom))]
pub mod compat;

#[cfg(feature = "alloc")]
pub use pool::HeapNodePool;
pub use pool::{FANOUT, Node, NodePool, NodeStorage, RADIX_BITS, full_tree_nodes};
#[cfg(not(loom))]
pub use table::NexaPidTable;
pub use table::{MAX_PID_VALUE, NEXA_POOL_NODES, PidError, PidStats, PidTable, TreeView};
pub use tree::{Census, MAX_LEVELS, RadixError, RadixStats, RadixTree, Reclaim};
