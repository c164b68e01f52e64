//! Library behind the suite's binaries (`score-precompute`, `train`,
//! `finetune`, `attack`, `bootstrap`, `sweep`, `report`).
//!
//! Modules stand on floors that follow the way of the data; a module imports
//! only from its own floor or lower ones (tests/house.rs checks it):
//!
//! | floor | modules | what |
//! |---|---|---|
//! | ground | [`error`], [`exit`], [`fsutil`], [`outdir`], [`csvio`], [`identity`], [`layout`], [`runtime`], [`device`], [`progress`], [`optim`], [`figure`], [`collective`], [`signal`], `portable` | errors and the exit-code policy, atomic writes and the versioned-JSON reader, output folders owned by one run (lock, clean-up after a failure), CSV files, run identities, run-folder file names, the runtime flags, optimisers and schedules, figures (SVG + PNG), the ranks of a data-parallel run and their sums, stop signals, the glibc-2.28 build's shim |
//! | 1 | [`data`] | data sets in [0,1] pixels, evaluation subsets, augmentation |
//! | 2 | [`models`] | architectures with normalisation inside |
//! | 3 | [`checkpoint`] | safetensors + JSON sidecar |
//! | 4 | [`score`] | score sources and the HDF5 score file |
//! | 5 | [`stein`] | the Stein residual and the TASER penalty's pieces |
//! | 6 | [`attack`] | threat models, PGD, APGD, FAB, Square, SPSA, AutoAttack, and the evaluator |
//! | 7 | [`train`] | methods, the plan, the epoch loop, resume (the TASER penalty is [`stein::penalty`]) |
//! | 8 | [`stats`] | paired bootstrap, comparison specs, tables and their figures |
//! | 9 | [`sweep`] | grids, the MPI launcher, results.csv |
//! | 10 | [`report`] | the papers' toy tables and figures from finished runs |
//!
//! The attack algorithms stand below training because PGD-AT, TRADES and
//! MART use them as their inner maximiser. What the suite computes is
//! stated in docs/METHOD.md and the papers it cites; each public item says
//! which formula it implements.
pub mod attack;
pub mod checkpoint;
pub mod collective;
pub mod csvio;
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
pub mod outdir;
#[cfg(feature = "portable")]
pub mod portable;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod score;
pub mod signal;
pub mod stats;
pub mod stein;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};

/// Version written into every output's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
