//! The binding of a checkpoint's sidecar to its tensors, both ways:
//!
//! - the safetensors header's `__metadata__` holds, under
//!   [`BINDING_KEY`], what the sidecar says about how to use the tensors
//!   ([`Binding`]: model spec, data set, training-split fingerprint, seed),
//!   so a sidecar edited afterwards (`activation` relu → silu: the tensors
//!   still fit) is refused, naming both values;
//! - the sidecar records the SHA-256 of the weights file
//!   (`weights_sha256`), so weights replaced under an unchanged sidecar are
//!   refused, naming both digests.
//!
//! The header is written deterministically (one metadata key, fields in a
//! fixed order), so two runs of one seed still give byte-identical weights
//! files; PyTorch's `safetensors.torch.load_file` ignores the metadata.
//!
//! Checkpoints written before the binding carry neither: they still load,
//! with a warning that their sidecar cannot be checked. Editing a bound
//! sidecar cannot make it look unbound (the binding lives in the weights
//! file), and weights rewritten without the binding no longer match the
//! sidecar's digest.
use super::CheckpointMeta;
use crate::error::{Error, Result};
use crate::identity::differences;
use crate::models::ModelSpec;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The `__metadata__` key of the binding (JSON of [`Binding`]).
pub const BINDING_KEY: &str = "taser.binding";

/// What a checkpoint's tensors are, as its sidecar says and the weights
/// file repeats: everything `attack` and `finetune` build and evaluate
/// the model from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub model: ModelSpec,
    pub dataset: String,
    pub train_fingerprint: String,
    pub seed: u64,
}

impl Binding {
    pub fn of(meta: &CheckpointMeta) -> Binding {
        Binding {
            model: meta.model.clone(),
            dataset: meta.dataset.clone(),
            train_fingerprint: meta.train_fingerprint.clone(),
            seed: meta.seed,
        }
    }
}

/// A safetensors file read whole.
pub struct TensorFile {
    pub tensors: Vec<(String, Tensor)>,
    /// The header's binding; `None` in files written without one.
    pub binding: Option<serde_json::Value>,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a safetensors file holding `tensors` (CPU, contiguous) and,
/// with `binding`, its JSON under [`BINDING_KEY`] in `__metadata__`.
pub fn serialize(tensors: &[(String, Tensor)], binding: Option<&Binding>) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = Dtype::try_from(t.kind())?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        data.push((name.clone(), dtype, shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("tensors", "(safetensors view)", format!("{e:?}")))?;
    let metadata = binding.map(|b| {
        let json = serde_json::to_string(b).expect("a binding serialises to JSON");
        HashMap::from([(BINDING_KEY.to_string(), json)])
    });
    safetensors::tensor::serialize(views, &metadata)
        .map_err(|e| Error::invalid("tensors", "(safetensors)", format!("{e:?}")))
}

/// SHA-256 (hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Parses the bytes of the safetensors file at `path`.
///
/// Errors: [`Error::CorruptInput`] when they are not safetensors or a
/// tensor's dtype has no libtorch kind.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
    let corrupt = |reason: String| Error::CorruptInput {
        path: path.to_path_buf(),
        reason: format!("not a readable safetensors file ({reason})"),
        fix: "re-run the training that wrote it, or resume it with --resume".into(),
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let binding = match header.metadata().as_ref().and_then(|m| m.get(BINDING_KEY)) {
        None => None,
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| corrupt(format!("its `{BINDING_KEY}` metadata is not JSON: {e}")))?,
        ),
    };
    let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        let t = Tensor::try_from(view).map_err(|e| corrupt(e.to_string()))?;
        tensors.push((name, t));
    }
    Ok(TensorFile {
        tensors,
        binding,
        sha256: sha256_hex(bytes),
    })
}

/// Checks that the sidecar `meta` of the weights at `path` describes them:
/// its `weights_sha256` is the file's digest and its [`Binding`] the one
/// the file's header holds. A checkpoint with neither (written before the
/// binding) passes with a warning on stderr.
///
/// Errors: [`Error::CorruptInput`] naming the sidecar and each differing
/// field with both values.
pub fn check(path: &Path, meta: &CheckpointMeta, file: &TensorFile) -> Result<()> {
    let sidecar = super::sidecar_path(path);
    let refuse = |reason: String| Error::CorruptInput {
        path: sidecar.clone(),
        reason: format!(
            "it does not describe the tensors of {}: {reason}",
            path.display()
        ),
        fix: "restore the sidecar written with these weights (train and finetune write both), or \
              retrain the checkpoint"
            .into(),
    };
    match (&meta.weights_sha256, &file.binding) {
        (None, None) => {
            eprintln!(
                "warning: {} has no binding to {} (written before checkpoints recorded one); \
                 its model, data set and seed are used unchecked",
                sidecar.display(),
                path.display()
            );
            return Ok(());
        }
        (None, Some(_)) => {
            return Err(refuse(
                "it records no `weights_sha256`, though the weights file is bound to a sidecar"
                    .into(),
            ))
        }
        (Some(recorded), _) if *recorded != file.sha256 => {
            return Err(refuse(format!(
                "`weights_sha256` is {recorded}, the weights file's SHA-256 is {}",
                file.sha256
            )))
        }
        _ => {}
    }
    let Some(bound) = &file.binding else {
        return Err(refuse(format!(
            "the weights file's header lacks `{BINDING_KEY}`"
        )));
    };
    let now = serde_json::to_value(Binding::of(meta)).expect("a binding serialises to JSON");
    let diffs = differences(bound, &now);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(refuse(format!(
        "the weights were written for another description (written with the weights → model.json \
         now: {})",
        diffs.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::super::{load, model_tensors, save, sidecar_path, write_tensors, FORMAT};
    use super::*;
    use crate::models::{Activation, Arch, Model};
    use std::collections::BTreeMap;
    use tch::Device;

    fn meta(activation: Activation) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT.into(),
            version: crate::VERSION.into(),
            model: ModelSpec {
                arch: Arch::Mlp,
                activation,
                mlp_hidden: vec![8],
                input_shape: vec![1, 8, 8],
                num_outputs: 10,
            },
            dataset: "digits".into(),
            train_fingerprint: "0123456789abcdef".into(),
            seed: 0,
            epochs_completed: 1,
            hyperparameters: serde_json::json!({}),
            metrics: BTreeMap::new(),
            score_file: None,
            runtime: None,
            weights_sha256: None,
        }
    }

    fn write_sidecar(path: &Path, meta: &CheckpointMeta) {
        std::fs::write(sidecar_path(path), serde_json::to_string(meta).unwrap()).unwrap();
    }

    #[test]
    fn an_edited_sidecar_or_replaced_weights_are_refused_and_an_unbound_checkpoint_loads() {
        let dir = tempfile::tempdir().unwrap();
        let relu = meta(Activation::Relu);
        let m = Model::new(&relu.model, Device::Cpu, &[0.0], &[1.0]).unwrap();
        let path = dir.path().join("m.safetensors");
        save(&m, &path, &relu).unwrap();
        let (_, read) = load(&path, Device::Cpu).unwrap();
        let digest = read.weights_sha256.clone().unwrap();
        assert_eq!(digest, crate::checkpoint::file_sha256(&path).unwrap());
        // The sidecar says silu; the weights were written as relu.
        write_sidecar(
            &path,
            &CheckpointMeta {
                model: meta(Activation::Silu).model,
                ..read.clone()
            },
        );
        let err = load(&path, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("model.activation: \"relu\" → \"silu\"") && err.contains("m.json"),
            "{err}"
        );
        // A digest for other bytes.
        write_sidecar(
            &path,
            &CheckpointMeta {
                weights_sha256: Some("0".repeat(64)),
                ..read.clone()
            },
        );
        let err = load(&path, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`weights_sha256` is {}", "0".repeat(64)))
                && err.contains(&digest),
            "{err}"
        );
        // The bound weights without their digest in the sidecar.
        write_sidecar(
            &path,
            &CheckpointMeta {
                weights_sha256: None,
                ..read.clone()
            },
        );
        assert!(load(&path, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("records no"));
        // Written before the binding: neither side holds one; it loads.
        write_tensors(&path, &model_tensors(&m)).unwrap();
        write_sidecar(
            &path,
            &CheckpointMeta {
                weights_sha256: None,
                ..read
            },
        );
        load(&path, Device::Cpu).unwrap();
    }

    #[test]
    fn the_header_is_byte_identical_for_one_description() {
        let m = Model::new(&meta(Activation::Relu).model, Device::Cpu, &[0.0], &[1.0]).unwrap();
        let b = Binding::of(&meta(Activation::Relu));
        let t = super::super::on_cpu(&model_tensors(&m));
        assert_eq!(
            serialize(&t, Some(&b)).unwrap(),
            serialize(&t, Some(&b)).unwrap()
        );
    }
}
