//! `corekv-tune`: probes the host (CPU, memory, kernel, io_uring, memlock,
//! filesystem, block device, writeback sysctls, measured fsync latency),
//! turns the probe into recommended corekv settings with reasons, and ships
//! OS tuning profiles. See `docs/tuning.md` for how to read the output.

pub mod advise;
pub mod error;
pub mod fsync;
pub mod host;
pub mod parse;
pub mod probe;
pub mod profile;
pub mod render;
pub mod uring;

pub use error::{Result, TuneError};
