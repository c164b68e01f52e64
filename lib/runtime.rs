//! Where a binary runs: the runtime flags every compute binary shares
//! (`--device`, `--data-dir`, `--threads`), declared once and flattened into
//! each binary's arguments, and resolved once into a [`Runtime`].
//!
//! These flags choose the machine, never the result: they are not part of a
//! run's identity (resume and fingerprints ignore them), and the same seed
//! gives the same numbers on CPU whatever `--threads` says.
use crate::device::parse_device;
use crate::error::{Error, Result};
use std::path::PathBuf;
use tch::Device;

/// Where data sets are read from unless `--data-dir` (or `TASER_DATA_DIR`)
/// says otherwise: the git-ignored cache that `make setup` fills.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/cache"))
}

/// The runtime flags, as clap parses them.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RuntimeArgs {
    /// auto, cpu or cuda:N (auto: cuda:0 when libtorch sees a GPU, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Folder with the data files (default: the repository's data/cache).
    #[arg(long, env = "TASER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        RuntimeArgs {
            device: "auto".into(),
            data_dir: None,
            threads: 0,
        }
    }
}

/// The runtime flags resolved: a checked device and a data folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// The device every tensor of the run lives on.
    pub device: Device,
    /// Folder the data sets are read from.
    pub data_dir: PathBuf,
}

impl RuntimeArgs {
    /// Checks the flags and applies `--threads` to libtorch.
    ///
    /// Errors: [`Error::InvalidArgument`] for a negative `--threads` or a
    /// `--device` libtorch cannot see.
    pub fn resolve(&self) -> Result<Runtime> {
        if self.threads < 0 {
            return Err(Error::invalid(
                "--threads",
                self.threads,
                "must be ≥ 0 (0: libtorch's default)",
            ));
        }
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        Ok(Runtime {
            device: parse_device(&self.device)?,
            data_dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_threads_and_unknown_devices_are_refused_naming_the_flag() {
        let bad = RuntimeArgs {
            threads: -1,
            ..RuntimeArgs::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("--threads"));
        let bad = RuntimeArgs {
            device: "tpu".into(),
            ..RuntimeArgs::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("--device"));
    }

    #[test]
    fn cpu_resolves_to_the_cpu_and_the_default_data_folder() {
        let rt = RuntimeArgs {
            device: "cpu".into(),
            ..RuntimeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(rt.device, Device::Cpu);
        assert_eq!(rt.data_dir, default_data_dir());
    }
}
