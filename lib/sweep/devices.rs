//! `sweep devices`: which device each MPI rank of a launch takes, by the
//! rule `sweep run` uses ([`crate::device::rank_device`]: with `auto`, the CUDA
//! device of the node-local rank modulo the visible devices), gathered on
//! rank 0 and checked, so a GPU node can be checked before a sweep.
#[cfg(feature = "mpi")]
use super::lock::host_name;
#[cfg(feature = "mpi")]
use crate::device::rank_device;
use crate::error::{Error, Result};
#[cfg(feature = "mpi")]
use mpi::traits::*;

/// One rank's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankDevice {
    pub rank: usize,
    pub host: String,
    /// Rank within its node (MPI's shared-memory split, as `sweep run`).
    pub local_rank: usize,
    /// The launcher's own node-local rank (OMPI_COMM_WORLD_LOCAL_RANK,
    /// MPI_LOCALRANKID or SLURM_LOCALID), when it sets one.
    pub launcher_local_rank: Option<usize>,
    /// CUDA devices libtorch sees on this rank.
    pub visible: usize,
    /// The device the rank's jobs would use.
    pub device: String,
}

/// `rank host local_rank launcher_local_rank visible device` (`-` for no
/// launcher rank): what `sweep devices` prints and ranks send to rank 0.
impl std::fmt::Display for RankDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let launcher = self
            .launcher_local_rank
            .map_or("-".to_string(), |l| l.to_string());
        write!(
            f,
            "{} {} {} {launcher} {} {}",
            self.rank, self.host, self.local_rank, self.visible, self.device
        )
    }
}

impl RankDevice {
    #[cfg(any(test, feature = "mpi"))]
    fn decode(line: &str) -> Option<RankDevice> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [rank, host, local, launcher, visible, device] = f.as_slice() else {
            return None;
        };
        Some(RankDevice {
            rank: rank.parse().ok()?,
            host: host.to_string(),
            local_rank: local.parse().ok()?,
            launcher_local_rank: launcher.parse().ok(),
            visible: visible.parse().ok()?,
            device: device.to_string(),
        })
    }
}

#[cfg(feature = "mpi")]
fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

#[cfg(feature = "mpi")]
const TAG: i32 = 11;

/// Every rank's device for `--device spec` (rank 0 gets them all, in rank
/// order; other ranks get None). A lone process is a one-rank launch.
///
/// Errors: [`Error::NoMpi`] in a binary built without MPI; MPI initialised
/// twice in this process.
#[cfg(not(feature = "mpi"))]
pub fn gather(_spec: &str) -> Result<Option<Vec<RankDevice>>> {
    Err(Error::NoMpi {
        command: "sweep devices".into(),
    })
}

/// Every rank's device for `--device spec` (rank 0 gets them all, in rank
/// order; other ranks get None). A lone process is a one-rank launch.
///
/// Errors: MPI initialised twice in this process.
#[cfg(feature = "mpi")]
pub fn gather(spec: &str) -> Result<Option<Vec<RankDevice>>> {
    let universe = mpi::initialize().ok_or_else(|| {
        Error::invalid("MPI", "init", "MPI was already initialised in this process")
    })?;
    let world = universe.world();
    let rank = world.rank();
    let local_rank = world.split_shared(rank).rank() as usize;
    let me = RankDevice {
        rank: rank as usize,
        host: host_name(),
        local_rank,
        launcher_local_rank: launcher_local_rank(),
        visible: tch::Cuda::device_count().max(0) as usize,
        device: rank_device(spec, local_rank),
    };
    if rank != 0 {
        world
            .process_at_rank(0)
            .send_with_tag(me.to_string().as_bytes(), TAG);
        return Ok(None);
    }
    let mut all = vec![me];
    for _ in 1..world.size() {
        let (bytes, _) = world.any_process().receive_vec_with_tag::<u8>(TAG);
        let line = String::from_utf8_lossy(&bytes).to_string();
        all.push(RankDevice::decode(&line).ok_or_else(|| {
            Error::invalid(
                "sweep devices",
                line.clone(),
                "a rank sent a malformed line",
            )
        })?);
    }
    all.sort_by_key(|r| r.rank);
    Ok(Some(all))
}

/// What is wrong with the ranks' choice, if anything: a node-local rank
/// that disagrees with the launcher's, a CUDA device that libtorch on its
/// rank does not see, or two ranks of one node on one GPU while the node
/// has a free one.
pub fn problems(ranks: &[RankDevice]) -> Vec<String> {
    let mut out = Vec::new();
    for r in ranks {
        if r.launcher_local_rank.is_some_and(|l| l != r.local_rank) {
            out.push(format!(
                "rank {} on {}: MPI's node-local rank is {} but the launcher says {}",
                r.rank,
                r.host,
                r.local_rank,
                r.launcher_local_rank.unwrap_or_default()
            ));
        }
        if let Some(i) = r.device.strip_prefix("cuda:") {
            if i.parse::<usize>().map_or(true, |i| i >= r.visible) {
                out.push(format!(
                    "rank {} on {}: {} but libtorch sees {} CUDA device(s)",
                    r.rank, r.host, r.device, r.visible
                ));
            }
        }
        let same_node = ranks.iter().filter(|o| o.host == r.host);
        let shared = same_node
            .clone()
            .filter(|o| o.rank < r.rank && o.device == r.device && r.device != "cpu")
            .count();
        if shared > 0 && same_node.count() <= r.visible {
            out.push(format!(
                "rank {} on {}: shares {} although the node has a GPU per rank",
                r.rank, r.host, r.device
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(rank: usize, host: &str, local: usize, visible: usize, device: &str) -> RankDevice {
        RankDevice {
            rank,
            host: host.into(),
            local_rank: local,
            launcher_local_rank: Some(local),
            visible,
            device: device.into(),
        }
    }

    #[test]
    fn a_line_round_trips_and_good_layouts_pass() {
        let r = rank(3, "node-a", 1, 4, "cuda:1");
        assert_eq!(RankDevice::decode(&r.to_string()), Some(r));
        let two_nodes = [
            rank(0, "a", 0, 2, "cuda:0"),
            rank(1, "a", 1, 2, "cuda:1"),
            rank(2, "b", 0, 2, "cuda:0"),
        ];
        assert!(problems(&two_nodes).is_empty());
        // More ranks than GPUs: sharing is the rule's modulo, not a fault.
        let crowded = [rank(0, "a", 0, 1, "cuda:0"), rank(1, "a", 1, 1, "cuda:0")];
        assert!(problems(&crowded).is_empty());
    }

    #[test]
    fn wrong_local_ranks_invisible_devices_and_needless_sharing_are_named() {
        let mut r = rank(1, "a", 1, 2, "cuda:1");
        r.launcher_local_rank = Some(0);
        assert!(problems(&[rank(0, "a", 0, 2, "cuda:0"), r])[0].contains("launcher says 0"));
        assert!(problems(&[rank(0, "a", 0, 1, "cuda:1")])[0].contains("sees 1"));
        let shared = [rank(0, "a", 0, 2, "cuda:0"), rank(1, "a", 1, 2, "cuda:0")];
        assert!(problems(&shared)[0].contains("shares cuda:0"));
    }
}
