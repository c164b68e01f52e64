//! Bad input to the binaries: a clear message naming the problem and the
//! fix, a non-zero exit, and no partial files.
mod common;
use common::*;

const NO_PARTIAL: [&str; 3] = ["model.safetensors", "model.json", "resume.safetensors"];

fn assert_no_outputs(dir: &std::path::Path) {
    let files = files_in(dir);
    for f in NO_PARTIAL {
        assert!(
            !files.contains(&f.to_string()),
            "{f} left behind in {}",
            dir.display()
        );
    }
    assert!(
        files.iter().all(|f| !f.starts_with(".tmp-")),
        "temporary files left: {files:?}"
    );
}

#[test]
fn missing_digits_file_names_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_line(
        "train",
        &format!(
            "--data-dir {} --out {} --epochs 1",
            dir.path().display(),
            out.display()
        ),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("digits.csv.gz") && e.contains("make setup"),
        "{e}"
    );
    assert!(!out.exists(), "--out created although nothing ran");
}

#[test]
fn corrupt_data_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("digits.csv.gz"), b"this is not gzip").unwrap();
    let out = dir.path().join("out");
    let o = run_line(
        "train",
        &format!(
            "--data-dir {} --out {}",
            dir.path().display(),
            out.display()
        ),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("corrupt"), "{}", stderr(&o));

    let cifar = dir.path().join("cifar");
    taser::data::cifar::write_synthetic(&cifar, taser::data::cifar::Variant::Cifar10, 10, 4, 0)
        .unwrap();
    let batch = cifar.join("data_batch_3.bin");
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..bytes.len() - 100]).unwrap();
    let o = run_line(
        "train",
        &format!(
            "--dataset cifar10 --data-dir {} --out {}",
            cifar.display(),
            out.display()
        ),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("data_batch_3.bin") && e.contains("truncated"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_line(
        "train",
        &format!("--model resnet99 --out {}", out.display()),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("resnet99") && e.contains("wrn-D-K"), "{e}");
    assert!(!out.exists());
}

#[test]
fn unwritable_out_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("out");
    let o = run_line("train", &format!("--epochs 1 --out {}", out.display()));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("cannot write") && e.contains("writable --out"),
        "{e}"
    );
}

#[test]
fn resuming_with_another_model_or_reusing_an_out_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run_line(
        "train",
        &format!(
            "--model mlp --epochs 1 --device cpu --out {}",
            out.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(out.join("model.safetensors")).unwrap();

    let o = run_line(
        "train",
        &format!(
            "--model cnn-small --epochs 1 --device cpu --out {} --resume",
            out.display()
        ),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("another configuration") && e.contains("model") && e.contains("cnn-small"),
        "{e}"
    );

    let o = run_line(
        "train",
        &format!(
            "--model mlp --epochs 1 --device cpu --out {}",
            out.display()
        ),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before,
        "existing run was touched"
    );
}

#[test]
fn invalid_values_are_refused_with_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o_str = out.to_str().unwrap();
    for (args, flag) in [
        (vec!["--lr", "-1"], "--lr"),
        (vec!["--epochs", "0"], "--epochs"),
        (vec!["--device", "cuda:7"], "--device"),
        (
            vec!["--model", "resnet18", "--dataset", "toy-sin"],
            "image inputs",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--out", o_str]);
        let o = run("train", &a);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(flag), "{args:?}: {}", stderr(&o));
        assert_no_outputs(&out);
    }
}
