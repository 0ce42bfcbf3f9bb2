//! The corekv member (`corekv`) and its CLI (`corekvctl`).

pub mod cluster;
pub mod config;
pub mod coord;
pub mod ctl;
pub mod gateway;
pub mod http;
pub mod inspect;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod stages;
