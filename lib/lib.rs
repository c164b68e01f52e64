//! Library behind the suite's binaries (`score-precompute`, `train`,
//! `finetune`, `attack`, `bootstrap`, `sweep`).
//!
//! Modules follow the way of the data: [`data`] → [`score`] → [`models`] →
//! [`stein`] → [`train`] → [`checkpoint`]. The formulas implemented are fixed by `SPEC.md` (shared
//! beside the repository) and the papers it cites; each public item says
//! which one it implements.
pub mod attack;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod exit;
pub mod figure;
pub mod fsutil;
pub mod identity;
pub mod layout;
pub mod models;
pub mod optim;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod score;
pub mod stats;
pub mod stein;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};

/// Version written into every output's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
