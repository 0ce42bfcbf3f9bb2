//! corekv's storage engine: a memory-mapped copy-on-write B+ tree and the
//! MVCC store on top of it.
