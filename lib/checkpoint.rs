//! Checkpoints: weights in safetensors (loadable by PyTorch with
//! `safetensors.torch.load_file`) and a JSON sidecar beside them (same stem,
//! `.json`) holding the model spec, data set, every hyperparameter, seed,
//! version and metrics. Both are written atomically, weights first, so a
//! sidecar always describes complete weights; the two are bound to each
//! other ([`binding`]: the weights' header repeats the model, data set,
//! fingerprint and seed, the sidecar records the weights' SHA-256) and
//! every load checks the binding.
pub mod binding;

use crate::error::{Error, Result};
use crate::fsutil::{
    read_versioned_json, write_bytes_atomically, write_json_atomically, JsonFixes,
};
use crate::models::{Model, ModelSpec};
use crate::runtime::RuntimeRecord;
use binding::{Binding, TensorFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Format tag of the sidecar.
pub const FORMAT: &str = "taser-checkpoint/1";

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// Version of the suite that wrote it.
    pub version: String,
    pub model: ModelSpec,
    pub dataset: String,
    /// Fingerprint of the training split's inputs.
    pub train_fingerprint: String,
    pub seed: u64,
    pub epochs_completed: usize,
    /// Every hyperparameter of the run that produced it.
    pub hyperparameters: serde_json::Value,
    /// Final metrics (test accuracy, losses, timings…).
    pub metrics: BTreeMap<String, f64>,
    /// The score file the run trained with (`train --scores`): its path,
    /// SHA-256 and attributes (`score::file::ScoreProvenance`); absent
    /// without one and in sidecars written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_file: Option<serde_json::Value>,
    /// What the run computed on: the device (GPU name, compute capability,
    /// driver, CUDA, cuDNN and torch versions; on the CPU its model) and
    /// libtorch's numerical mode (TF32, determinism) as read back after
    /// start-up; absent in sidecars written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRecord>,
    /// SHA-256 (hex) of the weights file it describes, set by [`save`];
    /// absent in sidecars written before checkpoints were bound
    /// ([`binding`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// The sidecar path of a weights file: same stem, `.json`.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Writes named tensors (moved to the CPU, contiguous) to a safetensors file
/// atomically.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_bytes_atomically(path, &binding::serialize(&on_cpu(tensors), None)?)
}

fn on_cpu(tensors: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect()
}

/// Reads every tensor of a safetensors file, mapping failures to errors
/// that name the file. Every checkpoint load (`attack --checkpoint`,
/// `finetune --from`, resume) goes through it.
///
/// Errors: [`Error::MissingInput`] without the file; [`Error::CorruptInput`]
/// when it is not safetensors or a floating-point tensor holds NaN or ±Inf
/// (named, with the count and the first flat index): such weights make every
/// prediction meaningless — e.g. all logits NaN, argmax 0 — and would be
/// reported as "robust".
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Ok(read_checked(path)?.tensors)
}

/// [`read_tensors`] with the file's binding and digest.
fn read_checked(path: &Path) -> Result<TensorFile> {
    let file = read_tensor_file(path)?;
    for (name, t) in &file.tensors {
        check_finite_tensor(path, name, t)?;
    }
    Ok(file)
}

/// Refuses a floating-point tensor holding NaN or ±Inf, naming it.
fn check_finite_tensor(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    if !t.is_floating_point() || bool::try_from(t.isfinite().all()).unwrap_or(false) {
        return Ok(());
    }
    let bad = t.isfinite().logical_not().flatten(0, -1);
    let count = bad.sum(tch::Kind::Int64).int64_value(&[]);
    let first = bad.nonzero().int64_value(&[0, 0]);
    let value = t.flatten(0, -1).double_value(&[first]);
    Err(Error::CorruptInput {
        path: path.to_path_buf(),
        reason: format!(
            "tensor `{name}` holds {count} non-finite value(s) (first: {value} at flat index {first}); \
             a model with such weights predicts nothing meaningful"
        ),
        fix: "use a checkpoint whose weights are all finite (retrain it, or resume the run from an \
              earlier checkpoint)"
            .into(),
    })
}

fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    if !path.exists() {
        return Err(Error::MissingInput {
            path: path.to_path_buf(),
            reason: "no such file".into(),
            fix: "give the path of a .safetensors checkpoint written by `train` or `finetune`"
                .into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    binding::parse(path, &bytes)
}

/// SHA-256 (64 hex digits) of a file's bytes, read in one streaming pass:
/// the identity of a checkpoint's weights (compare with `sha256sum FILE`).
///
/// Errors: [`Error::MissingInput`] when the file cannot be read.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let unreadable = |e: std::io::Error| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: "give the path of a .safetensors checkpoint written by `train` or `finetune`".into(),
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(unreadable)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The model's variables (parameters and buffers) by name.
pub fn model_tensors(model: &Model) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Copies `tensors` into `model`, checking that names and shapes match
/// exactly (no missing, extra or reshaped tensor).
pub fn load_tensors_into(
    model: &mut Model,
    tensors: &[(String, Tensor)],
    path: &Path,
) -> Result<()> {
    let mismatch = |reason: String| Error::CheckpointMismatch {
        path: path.to_path_buf(),
        reason,
        fix: format!(
            "use a checkpoint of model {} with inputs {:?} and {} outputs",
            model.spec.arch, model.spec.input_shape, model.spec.num_outputs
        ),
    };
    let vars = model.vs.variables();
    let given: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if let Some(missing) = vars.keys().find(|k| !given.contains_key(k.as_str())) {
        return Err(mismatch(format!("it lacks tensor `{missing}`")));
    }
    if let Some(extra) = given.keys().find(|k| !vars.contains_key(**k)) {
        return Err(mismatch(format!(
            "it has tensor `{extra}` the model does not"
        )));
    }
    for (name, var) in &vars {
        let t = given[name.as_str()];
        if t.size() != var.size() {
            return Err(mismatch(format!(
                "tensor `{name}` has shape {:?}, the model's is {:?}",
                t.size(),
                var.size()
            )));
        }
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            var.copy_(given[name.as_str()]);
        }
    });
    Ok(())
}

/// Saves a model's weights to `path` (`.safetensors`, bound to `meta`:
/// [`binding`]) and `meta` beside it with the weights' SHA-256.
pub fn save(model: &Model, path: &Path, meta: &CheckpointMeta) -> Result<()> {
    let bytes = binding::serialize(&on_cpu(&model_tensors(model)), Some(&Binding::of(meta)))?;
    write_bytes_atomically(path, &bytes)?;
    let meta = CheckpointMeta {
        weights_sha256: Some(binding::sha256_hex(&bytes)),
        ..meta.clone()
    };
    write_json_atomically(&sidecar_path(path), &meta)
}

/// Reads the sidecar of the checkpoint at `path` and checks each field's
/// range ([`check_meta`]).
///
/// Errors: [`Error::MissingInput`] without a sidecar, [`Error::CorruptInput`]
/// when it is not a sidecar of this format or a field is out of its range.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let fixes = JsonFixes {
        missing: "a checkpoint needs its JSON sidecar (same name, .json) written beside it",
        corrupt: "restore the sidecar written with the checkpoint, or use a checkpoint written by this suite",
    };
    let sidecar = sidecar_path(path);
    let meta: CheckpointMeta = read_versioned_json(&sidecar, FORMAT, fixes)?;
    check_meta(&meta).map_err(|reason| Error::CorruptInput {
        path: sidecar,
        reason,
        fix: fixes.corrupt.into(),
    })?;
    Ok(meta)
}

/// The sidecar's fields in their ranges: a model the architecture can be
/// built as (input shape of one to three sizes ≥ 1, outputs ≥ 1, mlp
/// widths ≥ 1, image inputs of H, W ≥ 4 for the convolutional models), a
/// data set of this suite, a 16-hex-digit training fingerprint and a
/// 64-hex-digit `weights_sha256`. Returns what is wrong, naming the field
/// and its value.
fn check_meta(meta: &CheckpointMeta) -> std::result::Result<(), String> {
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let m = &meta.model;
    if m.input_shape.is_empty() || m.input_shape.len() > 3 || m.input_shape.iter().any(|&d| d < 1) {
        return Err(format!(
            "field `model.input_shape` = {:?} is invalid: it holds one to three sizes, each ≥ 1",
            m.input_shape
        ));
    }
    if let Err(e) = m.check() {
        return Err(format!(
            "field `model` does not describe a model that can be built ({e})"
        ));
    }
    if meta.dataset.parse::<crate::data::DatasetName>().is_err() {
        return Err(format!(
            "field `dataset` = {:?} is invalid: not a data set of this suite",
            meta.dataset
        ));
    }
    if !hex_of(&meta.train_fingerprint, 16) {
        return Err(format!(
            "field `train_fingerprint` = {:?} is invalid: it is 16 hex digits",
            meta.train_fingerprint
        ));
    }
    if let Some(sha) = meta.weights_sha256.as_deref().filter(|s| !hex_of(s, 64)) {
        return Err(format!(
            "field `weights_sha256` = {sha:?} is invalid: it is 64 hex digits"
        ));
    }
    Ok(())
}

impl CheckpointMeta {
    /// The data set the model was trained on, for the checkpoint at `path`.
    ///
    /// Errors: [`Error::CorruptInput`] naming the sidecar when `dataset` is
    /// not a data set of this suite ([`read_meta`] refuses such a sidecar).
    pub fn dataset_name(&self, path: &Path) -> Result<crate::data::DatasetName> {
        self.dataset.parse().map_err(|_| Error::CorruptInput {
            path: sidecar_path(path),
            reason: format!("unknown data set `{}`", self.dataset),
            fix: "use a checkpoint written by this suite".into(),
        })
    }
}

/// Rebuilds the model described by the sidecar and loads its weights,
/// after checking that the sidecar describes them ([`binding::check`]).
///
/// Errors: [`Error::MissingInput`] without the weights or the sidecar;
/// [`Error::CorruptInput`] for an unreadable file, a non-finite weight, or
/// a sidecar that does not describe the weights (naming both values);
/// [`Error::CheckpointMismatch`] when the tensors do not fit the model.
pub fn load(path: &Path, device: Device) -> Result<(Model, CheckpointMeta)> {
    if !path.is_file() {
        return Err(Error::MissingInput {
            path: path.to_path_buf(),
            reason: "no such file".into(),
            fix:
                "give the model.safetensors that train or finetune wrote (its model.json beside it)"
                    .into(),
        });
    }
    let meta = read_meta(path)?;
    let channels = if meta.model.input_shape.len() == 3 {
        meta.model.input_shape[0] as usize
    } else {
        1
    };
    let mut model = Model::new(
        &meta.model,
        device,
        &vec![0.0; channels],
        &vec![1.0; channels],
    )?;
    let file = read_checked(path)?;
    binding::check(path, &meta, &file)?;
    load_tensors_into(&mut model, &file.tensors, path)?;
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Arch};
    use tch::Kind;

    fn meta_for(spec: &ModelSpec) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT.into(),
            version: crate::VERSION.into(),
            model: spec.clone(),
            dataset: "digits".into(),
            train_fingerprint: "0123456789abcdef".into(),
            seed: 0,
            epochs_completed: 0,
            hyperparameters: serde_json::json!({}),
            metrics: BTreeMap::new(),
            score_file: None,
            runtime: None,
            weights_sha256: None,
        }
    }

    fn spec(arch: Arch) -> ModelSpec {
        ModelSpec {
            arch,
            activation: Activation::Silu,
            mlp_hidden: vec![16],
            input_shape: vec![1, 8, 8],
            num_outputs: 10,
        }
    }

    #[test]
    fn save_then_load_gives_identical_logits() {
        let dir = tempfile::tempdir().unwrap();
        for arch in [Arch::Mlp, Arch::CnnSmall] {
            tch::manual_seed(1);
            let s = spec(arch);
            let m = Model::new(&s, Device::Cpu, &[0.3], &[0.4]).unwrap();
            let path = dir.path().join(format!("{arch}.safetensors"));
            save(&m, &path, &meta_for(&s)).unwrap();
            let (back, meta) = load(&path, Device::Cpu).unwrap();
            assert_eq!(meta.model, s);
            let x = Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu));
            assert!(m.forward_t(&x, false).equal(&back.forward_t(&x, false)));
        }
    }

    #[test]
    fn a_checkpoint_of_another_model_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mlp = Model::new(&spec(Arch::Mlp), Device::Cpu, &[0.0], &[1.0]).unwrap();
        let path = dir.path().join("mlp.safetensors");
        save(&mlp, &path, &meta_for(&spec(Arch::Mlp))).unwrap();
        let mut cnn = Model::new(&spec(Arch::CnnSmall), Device::Cpu, &[0.0], &[1.0]).unwrap();
        let tensors = read_tensors(&path).unwrap();
        let err = load_tensors_into(&mut cnn, &tensors, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mlp.safetensors") && err.contains("cnn-small"),
            "{err}"
        );
        let mut wider = spec(Arch::Mlp);
        wider.mlp_hidden = vec![17];
        let mut other = Model::new(&wider, Device::Cpu, &[0.0], &[1.0]).unwrap();
        let err = load_tensors_into(&mut other, &tensors, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let m = Model::new(&spec(Arch::Mlp), Device::Cpu, &[0.0], &[1.0]).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut tensors = model_tensors(&m);
            let (name, t) = tensors.iter_mut().find(|(_, t)| t.numel() > 2).unwrap();
            *t = t.detach().copy();
            let _ = t.flatten(0, -1).get(1).fill_(bad);
            let name = name.clone();
            let path = dir.path().join("bad.safetensors");
            write_tensors(&path, &tensors).unwrap();
            let err = read_tensors(&path).unwrap_err();
            assert!(matches!(err, Error::CorruptInput { .. }));
            let err = err.to_string();
            assert!(
                err.contains(&format!("`{name}`"))
                    && err.contains("1 non-finite")
                    && err.contains("index 1"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_sidecar_field_out_of_its_range_is_refused_naming_it_and_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(Arch::CnnSmall);
        let m = Model::new(&s, Device::Cpu, &[0.0], &[1.0]).unwrap();
        let path = dir.path().join("m.safetensors");
        save(&m, &path, &meta_for(&s)).unwrap();
        let good: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(sidecar_path(&path)).unwrap()).unwrap();
        type Edit = fn(&mut serde_json::Value);
        let cases: [(Edit, &str); 6] = [
            (
                |v| v["model"]["input_shape"] = serde_json::json!([1, 0, 8]),
                "`model.input_shape` = [1, 0, 8]",
            ),
            (
                |v| v["model"]["input_shape"] = serde_json::json!([64]),
                "`model`",
            ),
            (
                |v| v["model"]["num_outputs"] = serde_json::json!(0),
                "num_outputs = 0",
            ),
            (
                |v| v["dataset"] = serde_json::json!("imagenet"),
                "`dataset` = \"imagenet\"",
            ),
            (
                |v| v["train_fingerprint"] = serde_json::json!("xyz"),
                "`train_fingerprint` = \"xyz\"",
            ),
            (
                |v| v["weights_sha256"] = serde_json::json!("abc"),
                "`weights_sha256` = \"abc\"",
            ),
        ];
        for (edit, want) in cases {
            let mut v = good.clone();
            edit(&mut v);
            std::fs::write(sidecar_path(&path), v.to_string()).unwrap();
            let err = read_meta(&path).unwrap_err();
            assert!(matches!(err, Error::CorruptInput { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(want) && err.contains("m.json"),
                "{want}: {err}"
            );
        }
    }

    #[test]
    fn corrupt_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("corrupt"),
            "{err}"
        );
        let err = load(&dir.path().join("none.safetensors"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none.safetensors") && err.contains("no such file"),
            "{err}"
        );
        // Weights without their sidecar: the sidecar is named.
        std::fs::copy(&path, dir.path().join("lone.safetensors")).unwrap();
        let err = load(&dir.path().join("lone.safetensors"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lone.json"), "{err}");
    }
}
