//! score-precompute end to end: the torchscript source against Python, the
//! HDF5 layout through h5py, augmentation of precomputed scores, a kill in
//! the middle of a write, bad input, a file locked by another process,
//! `--overwrite`, and the score file's record in model.json.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use taser::checkpoint::{read_tensors, write_tensors};
use taser::data::augment::CropFlip;
use taser::data::cifar::{write_bin, RawImages, Variant, IMAGE_BYTES};
use taser::data::{self, DatasetName};
use taser::score::file::ScoreFile;
use taser::score::torchscript::{InputRange, ScoreInput, TorchScriptEps};
use taser::score::{Gaussian, ScoreField};
use tch::{Device, Tensor};

fn py(script: &str, args: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let o = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn precompute(args: &[&str]) -> std::process::Output {
    run("score-precompute", args)
}

fn precompute_ok(args: &[&str]) {
    let o = precompute(args);
    assert!(
        o.status.success(),
        "score-precompute {args:?}: {}",
        stderr(&o)
    );
}

fn tensor(path: &Path, name: &str) -> Tensor {
    read_tensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

fn digits() -> data::Dataset {
    data::load(DatasetName::Digits, &data::default_data_dir(), 0).unwrap()
}

#[test]
fn torchscript_source_matches_python_and_bad_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = digits();
    let inputs = d.train.x.narrow(0, 0, 64).contiguous();
    let inputs_path = dir.path().join("inputs.safetensors");
    write_tensors(&inputs_path, &[("inputs".into(), inputs.shallow_clone())]).unwrap();
    let t = "50";
    println!(
        "{}",
        py(
            "make_eps_models.py",
            &[dir.path(), &inputs_path, Path::new(t)]
        )
    );
    let expected = tensor(&dir.path().join("expected.safetensors"), "score");

    let model = TorchScriptEps::load(
        &dir.path().join("eps.pt"),
        &[1, 8, 8],
        50,
        InputRange::MinusOneOne,
        ScoreInput::Clean,
        Device::Cpu,
    )
    .unwrap();
    assert!(
        (model.sigma_t
            - tensor(&dir.path().join("expected.safetensors"), "sigma_t").double_value(&[0]))
        .abs()
            < 1e-12
    );
    let got = model.score(&inputs, &Tensor::new(), None);
    let err = (&got - &expected).abs().max().double_value(&[]);
    println!("torchscript score vs Python: max |diff| = {err:.2e}");
    assert!(err < 1e-5, "max |diff| {err}");

    // Through the binary and the file: the first 64 rows are the same scores.
    let out = dir.path().join("ts.h5");
    let model_path = dir.path().join("eps.pt");
    precompute_ok(&[
        "--source",
        "torchscript",
        "--model",
        model_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let file = ScoreFile::open(&out, &d, "train", false, Device::Cpu).unwrap();
    assert_eq!(file.meta.t, Some(50));
    let err = (file.all().narrow(0, 0, 64) - &expected)
        .abs()
        .max()
        .double_value(&[]);
    assert!(err < 1e-5, "file vs Python: {err}");

    for (name, expect) in [
        ("eps_one_arg.pt", "forward(x_t, t)"),
        ("eps_shape.pt", "returned shape"),
        ("eps_nan.pt", "not finite"),
    ] {
        let bad_out = dir.path().join(format!("{name}.h5"));
        let p = dir.path().join(name);
        let o = precompute(&[
            "--source",
            "torchscript",
            "--model",
            p.to_str().unwrap(),
            "--out",
            bad_out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(!o.status.success(), "{name} accepted");
        assert!(stderr(&o).contains(expect), "{name}: {}", stderr(&o));
        assert!(
            !bad_out.exists(),
            "{name}: a file was left at the final name"
        );
    }
    let o = precompute(&[
        "--source",
        "torchscript",
        "--out",
        dir.path().join("x.h5").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--model"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn hdf5_file_opens_in_h5py_with_the_documented_layout_and_values() {
    // Every --compression filter is read by h5py without plugins. Batches
    // of 256 (= the chunk) go to HDF5 straight from the tensor; batches of
    // 100 fill chunks across batches.
    for (compression, batch) in [
        ("none", "256"),
        ("none", "100"),
        ("gzip1", "100"),
        ("gzip4", "100"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("g.h5");
        precompute_ok(&[
            "--source",
            "gaussian-std",
            "--out",
            out.to_str().unwrap(),
            "--batch-size",
            batch,
            "--device",
            "cpu",
            "--compression",
            compression,
        ]);
        let dump = dir.path().join("dump.safetensors");
        println!(
            "{compression}: {}",
            py("check_h5.py", &[&out, &dump, Path::new(compression)])
        );
        let d = digits();
        let file = ScoreFile::open(&out, &d, "train", false, Device::Cpu).unwrap();
        assert!(
            tensor(&dump, "score").equal(file.all()),
            "{compression}: h5py and Rust read different values"
        );
        assert!(
            file.all().equal(&(-&d.train.x)),
            "gaussian-std scores are not −x"
        );
        assert_eq!(tensor(&dump, "index").size(), vec![d.train.len()]);
    }
}

/// CIFAR-format training images that equal their own mirror image.
fn write_flip_symmetric_cifar(dir: &Path, n: usize) {
    let raw = taser::data::cifar::random_images(n, 10, 3);
    let mut pixels = raw.pixels.clone();
    for img in pixels.chunks_mut(IMAGE_BYTES) {
        for row in img.chunks_mut(32) {
            for w in 0..16 {
                row[31 - w] = row[w];
            }
        }
    }
    let images = RawImages {
        pixels,
        labels: raw.labels,
    };
    std::fs::create_dir_all(dir).unwrap();
    for k in 1..=5 {
        write_bin(
            &dir.join(format!("data_batch_{k}.bin")),
            Variant::Cifar10,
            &images,
        )
        .unwrap();
    }
    write_bin(
        &dir.join("test_batch.bin"),
        Variant::Cifar10,
        &taser::data::cifar::random_images(10, 10, 4),
    )
    .unwrap();
}

#[test]
fn augmented_precomputed_scores_equal_scores_of_augmented_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar");
    write_flip_symmetric_cifar(&cifar, 24);
    let d = data::load(DatasetName::Cifar10, &cifar, 0).unwrap();
    let (fit, std) = (dir.path().join("fit.h5"), dir.path().join("std.h5"));
    for (source, out) in [("gaussian", &fit), ("gaussian-std", &std)] {
        precompute_ok(&[
            "--dataset",
            "cifar10",
            "--data-dir",
            cifar.to_str().unwrap(),
            "--source",
            source,
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
    }
    let n = d.train.len();
    let idx = Tensor::arange(n, (tch::Kind::Int64, Device::Cpu));
    let x = d.train.x.shallow_clone();
    // Flips: the fitted Gaussian of flip-symmetric data commutes with them.
    let zeros = Tensor::zeros([n], (tch::Kind::Int64, Device::Cpu));
    let flips = CropFlip {
        flip: (idx.remainder(2)).eq(0).to_kind(tch::Kind::Int64),
        dy: zeros.copy(),
        dx: zeros,
    };
    let fitted = Gaussian::fit(&d.train.x, 0.1).unwrap();
    let file = ScoreFile::open(&fit, &d, "train", false, Device::Cpu).unwrap();
    let xa = flips.apply(&x);
    let err = (file.score(&xa, &idx, Some(&flips)) - fitted.score(&xa, &idx, None))
        .abs()
        .max()
        .double_value(&[]);
    let scale = fitted.score(&xa, &idx, None).abs().max().double_value(&[]);
    println!("flip: max |augmented file − recomputed| = {err:.2e} (scores up to {scale:.1})");
    assert!(err < 1e-4 * scale.max(1.0), "{err}");
    // Crops and flips with N(0, I): s = −x, zero in the padding.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let aug = CropFlip::draw(n as usize, &mut rng, Device::Cpu);
    let file = ScoreFile::open(&std, &d, "train", false, Device::Cpu).unwrap();
    let xa = aug.apply(&x);
    assert!(file.score(&xa, &idx, Some(&aug)).equal(&(-&xa)));
}

#[test]
fn a_kill_in_the_middle_of_a_write_leaves_no_file_and_a_rerun_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar");
    taser::data::cifar::write_synthetic(&cifar, Variant::Cifar10, 3000, 10, 0).unwrap();
    let out = dir.path().join("scores.h5");
    let args = [
        "--dataset",
        "cifar10",
        "--data-dir",
        cifar.to_str().unwrap(),
        "--source",
        "gaussian",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut child = Command::new(bin("score-precompute"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp_of = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let tmp = loop {
        if let Some(t) = tmp_of(dir.path()) {
            if std::fs::metadata(&t).map(|m| m.len() > 0).unwrap_or(false) {
                break Some(t);
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        tmp.is_some(),
        "the write finished (or never started) before the kill; make it slower"
    );
    assert!(
        !out.exists(),
        "a killed write left a file at the final name"
    );
    let o = precompute(&args);
    assert!(o.status.success(), "rerun failed: {}", stderr(&o));
    let d = data::load(DatasetName::Cifar10, &cifar, 0).unwrap();
    ScoreFile::open(&out, &d, "train", false, Device::Cpu).unwrap();
}

#[test]
fn mismatched_truncated_or_unknown_inputs_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let digits_h5 = dir.path().join("digits.h5");
    precompute_ok(&[
        "--source",
        "gaussian-std",
        "--out",
        &s(&digits_h5),
        "--device",
        "cpu",
    ]);
    let train_with = |extra: &[&str]| {
        let out = dir.path().join("run");
        let _ = std::fs::remove_dir_all(&out);
        let mut a = vec![
            "--lambda",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(extra);
        let o = run("train", &a);
        assert!(!o.status.success(), "{extra:?} accepted");
        stderr(&o)
    };
    // Another data set.
    let cifar = dir.path().join("cifar");
    taser::data::cifar::write_synthetic(&cifar, Variant::Cifar10, 20, 4, 0).unwrap();
    let e = train_with(&[
        "--dataset",
        "cifar10",
        "--data-dir",
        &s(&cifar),
        "--model",
        "mlp",
        "--scores",
        &s(&digits_h5),
    ]);
    assert!(
        e.contains("data set is digits") && e.contains("cifar10"),
        "{e}"
    );
    // Another split.
    let test_h5 = dir.path().join("test.h5");
    precompute_ok(&[
        "--source",
        "gaussian-std",
        "--split",
        "test",
        "--out",
        &s(&test_h5),
        "--device",
        "cpu",
    ]);
    let e = train_with(&["--scores", &s(&test_h5)]);
    assert!(e.contains("split is test"), "{e}");
    // Other inputs (toy data of another seed): the fingerprint differs.
    let toy_h5 = dir.path().join("toy.h5");
    precompute_ok(&[
        "--dataset",
        "toy-sin",
        "--seed",
        "1",
        "--source",
        "gaussian-std",
        "--out",
        &s(&toy_h5),
        "--device",
        "cpu",
    ]);
    let e = train_with(&[
        "--dataset",
        "toy-sin",
        "--model",
        "mlp",
        "--seed",
        "2",
        "--scores",
        &s(&toy_h5),
    ]);
    assert!(e.contains("fingerprint"), "{e}");
    // Truncated file.
    let bytes = std::fs::read(&digits_h5).unwrap();
    let cut = dir.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = train_with(&["--scores", &s(&cut)]);
    assert!(e.contains("cut.h5") && e.contains("truncated"), "{e}");
    // Missing file, unknown source.
    let e = train_with(&["--scores", &s(&dir.path().join("none.h5"))]);
    assert!(
        e.contains("none.h5") && e.contains("score-precompute"),
        "{e}"
    );
    let o = precompute(&["--source", "oracle", "--out", &s(&dir.path().join("o.h5"))]);
    assert!(
        !o.status.success() && stderr(&o).contains("possible values"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn training_reads_precomputed_scores() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("gmm.h5");
    precompute_ok(&[
        "--source",
        "gmm",
        "--out",
        h5.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let out = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--model",
            "mlp",
            "--epochs",
            "1",
            // Mixture scores on digits are large (border pixels barely
            // vary): a small λ with Adam keeps the run finite.
            "--lambda",
            "0.01",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--device",
            "cpu",
            "--scores",
            h5.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(meta.contains("gmm.h5") && meta.contains("residual_std"));
    assert_sidecar_records(&out.join("model.json"), &h5);
    // finetune with the same scores records them too.
    let tuned = dir.path().join("tuned");
    let o = run(
        "finetune",
        &[
            "--from",
            out.join("model.safetensors").to_str().unwrap(),
            "--epochs",
            "1",
            "--lambda",
            "0.01",
            "--device",
            "cpu",
            "--scores",
            h5.to_str().unwrap(),
            "--out",
            tuned.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_sidecar_records(&tuned.join("model.json"), &h5);
}

/// The sidecar's `score_file` equals the file's path, SHA-256 and root
/// attributes as h5py and hashlib read them (−1/NaN ↔ null).
fn assert_sidecar_records(sidecar: &Path, h5: &Path) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sidecar).unwrap()).unwrap();
    let recorded = &meta["score_file"];
    let script = r#"
import h5py, hashlib, json, math, sys
with h5py.File(sys.argv[1], "r") as f:
    a = {k: f.attrs[k] for k in ["fingerprint", "source", "source_config", "dataset", "split",
                                 "t", "sigma_t", "score_std", "c_t"]}
a = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
     for k, v in a.items()}
a["t"] = None if a["t"] < 0 else a["t"]
a["sigma_t"] = None if math.isnan(a["sigma_t"]) else a["sigma_t"]
a["sha256"] = hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()
print(json.dumps(a))
"#;
    let o = Command::new(python())
        .args(["-c", script, h5.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let attrs: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for (key, value) in attrs.as_object().unwrap() {
        assert_eq!(
            &recorded[key],
            value,
            "score_file.{key} in {}",
            sidecar.display()
        );
    }
    assert_eq!(recorded["path"], h5.to_str().unwrap());
}

/// A python child that holds `h5` open for writing (h5py mode 'a') until
/// its stdin closes.
struct Holder(std::process::Child);

impl Holder {
    fn hold(h5: &Path) -> Holder {
        use std::io::BufRead;
        let script = "import h5py, sys\nf = h5py.File(sys.argv[1], 'a')\nprint('held', flush=True)\nsys.stdin.read()\nf.close()\n";
        let mut child = Command::new(python())
            .args(["-c", script, h5.to_str().unwrap()])
            .env_remove("HDF5_USE_FILE_LOCKING")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "held",
            "the holder did not open {}",
            h5.display()
        );
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// `bin args` with HDF5_USE_FILE_LOCKING unset, or set to `locking`.
fn run_locking(name: &str, args: &[&str], locking: Option<&str>) -> std::process::Output {
    let mut c = Command::new(bin(name));
    c.args(args).env_remove("HDF5_USE_FILE_LOCKING");
    if let Some(v) = locking {
        c.env("HDF5_USE_FILE_LOCKING", v);
    }
    c.output().unwrap()
}

#[test]
fn a_score_file_held_by_another_process_is_called_locked_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("held.h5");
    let h5s = h5.to_str().unwrap();
    precompute_ok(&["--source", "gaussian-std", "--out", h5s, "--device", "cpu"]);
    let holder = Holder::hold(&h5);
    let out = dir.path().join("run");
    let train = |locking| {
        let _ = std::fs::remove_dir_all(&out);
        let a = [
            "--model",
            "mlp",
            "--lambda",
            "0.01",
            "--optimizer",
            "adam",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--scores",
            h5s,
        ];
        run_locking(
            "train",
            &[&a[..], &["--out", out.to_str().unwrap()]].concat(),
            locking,
        )
    };
    let o = train(None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("held.h5 is locked")
            && e.contains("Another process holds it")
            && e.contains("HDF5_USE_FILE_LOCKING=FALSE")
            && !e.contains("corrupt"),
        "{e}"
    );
    // Without locks (as on Lustre/NFS) the same run reads the file.
    let o = train(Some("FALSE"));
    assert!(o.status.success(), "{}", stderr(&o));
    // Replacing a file its writer holds is refused the same way.
    let o = run_locking(
        "score-precompute",
        &[
            "--source",
            "gaussian-std",
            "--device",
            "cpu",
            "--overwrite",
            "--out",
            h5s,
        ],
        None,
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("is locked") && e.contains("HDF5_USE_FILE_LOCKING=FALSE"),
        "{e}"
    );
    drop(holder);
    precompute_ok(&[
        "--source",
        "gaussian-std",
        "--device",
        "cpu",
        "--overwrite",
        "--out",
        h5s,
    ]);
}

#[test]
fn an_existing_score_file_is_replaced_only_with_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("s.h5");
    let h5s = h5.to_str().unwrap();
    precompute_ok(&["--source", "gaussian-std", "--out", h5s, "--device", "cpu"]);
    let before = std::fs::read(&h5).unwrap();
    // Refused before any work: the data folder is not even read.
    let o = precompute(&[
        "--source",
        "gaussian",
        "--data-dir",
        dir.path().join("no-data").to_str().unwrap(),
        "--out",
        h5s,
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(h5s) && e.contains("--overwrite"), "{e}");
    assert_eq!(
        std::fs::read(&h5).unwrap(),
        before,
        "the refused run changed the file"
    );
    assert_eq!(files_in(dir.path()), vec!["s.h5"]);
    precompute_ok(&[
        "--source",
        "gaussian",
        "--out",
        h5s,
        "--device",
        "cpu",
        "--overwrite",
    ]);
    let d = digits();
    let f = ScoreFile::open(&h5, &d, "train", false, Device::Cpu).unwrap();
    assert_eq!(f.meta.source, "gaussian-fit");
    assert!(
        !f.meta.source_config.contains("overwrite"),
        "{}",
        f.meta.source_config
    );
}

#[test]
fn a_sweep_retries_a_score_task_whose_file_outlived_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("g.toml");
    std::fs::write(
        &grid,
        "name = \"g\"\nsteps = [\"train\"]\n[scores.g]\nsource = \"gaussian-std\"\n\
         [axes]\nseed = [0]\n[train]\nmodel = \"mlp\"\noptimizer = \"adam\"\n\
         lambda = 0.01\nscores = \"@g\"\nepochs = 1\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let sweep = || {
        let o = run(
            "sweep",
            &[
                "run",
                grid.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--device",
                "cpu",
            ],
        );
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    };
    sweep();
    // A crash after the file was renamed into place, before the markers.
    let scores = out.join(taser::layout::SCORES_DIR);
    let task = std::fs::read_dir(&scores)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(task.join(taser::layout::SCORES).exists());
    std::fs::remove_file(task.join(taser::layout::DONE)).unwrap();
    std::fs::remove_file(task.join(taser::layout::step_done("score-precompute"))).unwrap();
    sweep();
    assert!(task.join(taser::layout::DONE).exists());
}

#[test]
fn dsm_scores_at_noised_inputs_are_seeded_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let common = ["--dataset", "digits", "--device", "cpu", "--threads", "1"];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let ok =
        |args: Vec<String>| precompute_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(with(&[
        "--source",
        "dsm",
        "--dsm-steps",
        "20",
        "--out",
        &p("clean.h5"),
    ]));
    let net = p("clean.dsm.safetensors");
    for (name, seed) in [
        ("noised-a.h5", "1"),
        ("noised-b.h5", "1"),
        ("noised-c.h5", "2"),
    ] {
        ok(with(&[
            "--source",
            "dsm",
            "--dsm-model",
            &net,
            "--score-input",
            "noised",
            "--seed",
            seed,
            "--out",
            &p(name),
        ]));
    }
    let d = digits();
    let open =
        |name: &str| ScoreFile::open(Path::new(&p(name)), &d, "train", false, Device::Cpu).unwrap();
    let idx = Tensor::arange(64, (tch::Kind::Int64, Device::Cpu));
    let x = d.train.x.narrow(0, 0, 64);
    let read = |name: &str| open(name).score(&x, &idx, None);
    let (clean, a, b, c) = (
        read("clean.h5"),
        read("noised-a.h5"),
        read("noised-b.h5"),
        read("noised-c.h5"),
    );
    assert!(a.equal(&b), "one seed, one set of noised inputs");
    assert!(!a.equal(&c) && !a.equal(&clean));
    // The network at x + σξ (σ = 0.1) against the network at x: the net's
    // own DSM loss compares them; here only that the noise reached it.
    let gap = (&a - &clean)
        .abs()
        .mean(tch::Kind::Double)
        .double_value(&[]);
    assert!(gap > 1e-3, "noised and clean scores differ by {gap}");
    let cfg = open("noised-a.h5").meta.source_config;
    assert!(cfg.contains("\"score_input\":\"noised\""), "{cfg}");
    assert!(open("clean.h5")
        .meta
        .source_config
        .contains("\"score_input\":\"clean\""));
    // Sources without a noise level refuse it, before any work.
    let o = precompute(
        &with(&[
            "--source",
            "gaussian",
            "--score-input",
            "noised",
            "--out",
            &p("g.h5"),
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--score-input") && !dir.path().join("g.h5").exists());
}
