//! What an evaluation reads before it writes anything: the checkpoint, the
//! data set it was trained on (which must be a classification task its
//! model fits), and the evaluation subset (given with `--subset` or drawn
//! here from `--seed`).
use super::eval::EvalConfig;
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::subset::EvalSubset;
use crate::data::{self, Dataset, Task};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::runtime::Runtime;
use tch::{Device, Kind, Tensor};

/// The loaded and checked inputs of an evaluation.
pub struct Inputs {
    pub model: Model,
    /// The checkpoint's data set (test split on the CPU).
    pub data: Dataset,
    pub subset: EvalSubset,
    /// Whether the subset was drawn here (then it is saved in `--out`).
    pub subset_drawn: bool,
}

impl Inputs {
    /// Loads the checkpoint onto `runtime.device`, its data set from
    /// `runtime.data_dir` and the subset.
    ///
    /// Errors: [`Error::MissingInput`] / [`Error::CorruptInput`] for an
    /// unreadable checkpoint, sidecar, data file or subset;
    /// [`Error::InvalidArgument`] for a regression checkpoint or a subset of
    /// another data set; [`Error::CheckpointMismatch`] when the model does
    /// not fit the data.
    pub fn load(cfg: &EvalConfig, runtime: &Runtime) -> Result<Inputs> {
        let (model, meta) = checkpoint::load(&cfg.checkpoint, runtime.device)?;
        let data = load_data(cfg, &meta, runtime)?;
        let (subset, subset_drawn) = match &cfg.subset {
            Some(path) => {
                let s = EvalSubset::load(path)?;
                s.check_against(&data, path)?;
                (s, false)
            }
            None => (EvalSubset::draw(&data, cfg.n_eval, cfg.seed), true),
        };
        Ok(Inputs {
            model,
            data,
            subset,
            subset_drawn,
        })
    }

    /// The subset's points `[N, …]` (pixels in [0,1]) and labels `[N]`
    /// (int64) on `device`.
    pub fn points(&self, device: Device) -> (Tensor, Tensor) {
        let index: Vec<i64> = self.subset.indices.iter().map(|&i| i as i64).collect();
        let index = Tensor::from_slice(&index);
        let x = self.data.test.x.index_select(0, &index).to_device(device);
        let y = self.data.test.y.index_select(0, &index).to_device(device);
        (x, y)
    }

    /// The subset points' labels.
    pub fn labels(&self) -> Vec<i64> {
        let y = self.data.test.y.to_kind(Kind::Int64);
        let all = Vec::<i64>::try_from(&y).expect("int64 labels");
        self.subset.indices.iter().map(|&i| all[i]).collect()
    }
}

/// The checkpoint's data set, checked to be a classification task whose
/// inputs and classes the model fits.
fn load_data(cfg: &EvalConfig, meta: &CheckpointMeta, runtime: &Runtime) -> Result<Dataset> {
    let dataset = meta.dataset_name(&cfg.checkpoint)?;
    let data = data::load(dataset, &runtime.data_dir, meta.seed)?;
    if data.task != Task::Classification {
        return Err(Error::invalid(
            "--checkpoint",
            cfg.checkpoint.display(),
            format!(
                "is a {} regression model; attacks need a classifier",
                data.name
            ),
        ));
    }
    if meta.model.input_shape != data.input_shape || meta.model.num_outputs != data.num_outputs {
        return Err(Error::CheckpointMismatch {
            path: cfg.checkpoint.clone(),
            reason: format!(
                "its model takes inputs {:?} with {} outputs, but {} has inputs {:?} and {} classes",
                meta.model.input_shape, meta.model.num_outputs, data.name, data.input_shape, data.num_outputs
            ),
            fix: format!("use a checkpoint trained on {}", data.name),
        });
    }
    Ok(data)
}
