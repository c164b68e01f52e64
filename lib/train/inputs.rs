//! What a training run reads, as fingerprints: the training and test
//! splits, the validation split, the extra data, the score file and a
//! fine-tune's base checkpoint. The resume state records them
//! ([`super::resume`]), so a run resumed on other data (another
//! `--data-dir` with the same counts, a score file recomputed at the same
//! path, another base) is refused instead of training its later epochs on
//! it.
use super::mixing::ExtraPlan;
use super::validation::ValPlan;
use crate::checkpoint;
use crate::data::{fingerprint, Dataset, Split};
use crate::error::Result;
use crate::stein::penalty::Regularizer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Fingerprints of one split ([`crate::data::fingerprint`]: 16 hex digits
/// of SHA-256 over shape and values) of its inputs and of its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPrint {
    pub inputs: String,
    pub labels: String,
}

impl SplitPrint {
    pub fn of(split: &Split) -> SplitPrint {
        SplitPrint {
            inputs: split.fingerprint(),
            labels: fingerprint(&split.y),
        }
    }
}

/// Everything a run reads besides its flags, compared field by field
/// ([`crate::identity::differences`]) when it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInputs {
    /// The training split (without the validation split carved out of it).
    pub train: SplitPrint,
    /// The test split, evaluated after every epoch.
    pub test: SplitPrint,
    /// The validation split (`--val-size`).
    pub validation: Option<SplitPrint>,
    /// The extra data (`--extra-data`).
    pub extra_data: Option<SplitPrint>,
    /// SHA-256 (hex) of the score file's bytes (`--scores`).
    pub score_file: Option<String>,
    /// SHA-256 (hex) of a fine-tune's base weights (`finetune --from`).
    pub finetuned_from: Option<String>,
}

impl RunInputs {
    /// The fingerprints of `data`, the validation split, the extra data,
    /// the score file `reg` reads and the base checkpoint at `teacher`.
    ///
    /// Errors: [`crate::Error::MissingInput`] when the base checkpoint
    /// cannot be read.
    pub fn of(
        data: &Dataset,
        validation: Option<&ValPlan>,
        extra: Option<&ExtraPlan>,
        reg: &Regularizer,
        teacher: Option<&Path>,
    ) -> Result<RunInputs> {
        let score_file = match reg {
            Regularizer::Stein(p) => p
                .field
                .as_ref()
                .and_then(|f| f.provenance())
                .map(|prov| prov.sha256),
            _ => None,
        };
        Ok(RunInputs {
            train: SplitPrint::of(&data.train),
            test: SplitPrint::of(&data.test),
            validation: validation.map(|v| SplitPrint::of(&v.split)),
            extra_data: extra.map(|e| SplitPrint {
                inputs: e.source.fingerprint().into(),
                labels: e.source.labels_fingerprint().into(),
            }),
            score_file,
            finetuned_from: teacher.map(checkpoint::file_sha256).transpose()?,
        })
    }
}
