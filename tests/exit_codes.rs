//! The one exit-code policy (lib/exit.rs), checked on every binary: 2 for
//! bad usage (a flag that does not exist) and for bad input (a missing
//! file), 1 for a run that fails while computing or writing, and a message
//! on stderr in each case.
//!
//! "Failed" runs are made to fail for real: training that diverges (SGD at
//! a learning rate of 1e12 gives a non-finite loss), or an output whose
//! final name is taken by a non-empty folder, so the atomic rename at the
//! end of the work fails.
mod common;
use common::*;
use std::path::Path;
use std::process::Output;

const BINARIES: [&str; 7] = [
    "score-precompute",
    "train",
    "finetune",
    "attack",
    "bootstrap",
    "sweep",
    "report",
];

/// Flags of a digits run that diverges in its first epoch.
const DIVERGE: &str = "--optimizer sgd --lr 1e12 --epochs 1 --device cpu";

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(!stderr(o).is_empty(), "{what}: nothing on stderr");
}

fn ok(o: Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", stderr(&o));
}

/// Makes `path` a non-empty folder, so renaming a file onto it fails.
fn block(path: &Path) {
    std::fs::create_dir_all(path.join("occupied")).unwrap();
}

#[test]
fn a_flag_that_does_not_exist_exits_2_for_every_binary() {
    for b in BINARIES {
        let o = run(b, &["--no-such-flag"]);
        assert_code(&o, 2, b);
        assert!(stderr(&o).contains("--no-such-flag"), "{b}: {}", stderr(&o));
    }
}

#[test]
fn a_missing_input_exits_2_for_every_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let cases = [
        (
            "score-precompute",
            format!("--source gaussian --data-dir {d}/empty --out {d}/s.h5"),
        ),
        ("train", format!("--data-dir {d}/empty --out {d}/t")),
        (
            "finetune",
            format!("--from {d}/none/model.safetensors --out {d}/f"),
        ),
        (
            "attack",
            format!("--checkpoint {d}/none/model.safetensors --out {d}/a"),
        ),
        (
            "bootstrap",
            format!("--baseline {d}/none --treatment {d}/none --out {d}/b"),
        ),
        ("sweep", format!("run {d}/none/grid.toml --out {d}/w")),
        ("report", format!("toy-table1 --runs {d}/none --out {d}/r")),
    ];
    for (b, line) in cases {
        assert_code(&run_line(b, &line), 2, b);
    }
}

#[test]
fn training_that_diverges_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let o = run_line(
        "train",
        &format!("--dataset digits --model mlp {DIVERGE} --out {d}/t"),
    );
    assert_code(&o, 1, "train");
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));

    let base = format!("--dataset digits --model mlp --epochs 1 --device cpu --out {d}/ckpt");
    ok(run_line("train", &base), "train");
    let o = run_line(
        "finetune",
        &format!("--from {d}/ckpt/model.safetensors {DIVERGE} --out {d}/f"),
    );
    assert_code(&o, 1, "finetune");
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));
}

#[test]
fn an_output_that_cannot_be_put_in_place_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    block(&dir.path().join("s.h5"));
    let line = format!("--source gaussian-std --device cpu --out {d}/s.h5");
    assert_code(&run_line("score-precompute", &line), 1, "score-precompute");

    let base = format!("--dataset digits --model mlp --epochs 1 --device cpu --out {d}/ckpt");
    ok(run_line("train", &base), "train");
    let attack = format!(
        "--checkpoint {d}/ckpt/model.safetensors --attacks pgd1 --eps 0.1 --n-eval 20 --device cpu"
    );
    block(&dir.path().join("eval/per_sample.csv"));
    assert_code(
        &run_line("attack", &format!("{attack} --out {d}/eval")),
        1,
        "attack",
    );

    ok(
        run_line("attack", &format!("{attack} --out {d}/good")),
        "attack",
    );
    block(&dir.path().join("boot/comparisons.csv"));
    let line = format!("--baseline {d}/good --treatment {d}/good --resamples 100 --out {d}/boot");
    assert_code(&run_line("bootstrap", &line), 1, "bootstrap");
}

#[test]
fn a_sweep_with_a_failing_job_and_a_report_that_cannot_write_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let grid = dir.path().join("grid.toml");
    let flags =
        "dataset = \"digits\"\nmodel = \"mlp\"\nepochs = 1\noptimizer = \"sgd\"\nlr = 1e12\n";
    std::fs::write(&grid, format!("steps = [\"train\"]\n[train]\n{flags}")).unwrap();
    let o = run_line(
        "sweep",
        &format!("run {d}/grid.toml --out {d}/w --device cpu"),
    );
    assert_code(&o, 1, "sweep");

    let toy = format!("--dataset toy-sin --model mlp --epochs 5 --device cpu --out {d}/runs/l2-0");
    ok(run_line("train", &toy), "train toy-sin");
    block(&dir.path().join("report/table.csv"));
    let o = run_line(
        "report",
        &format!("toy-table1 --runs {d}/runs --out {d}/report"),
    );
    assert_code(&o, 1, "report");
}

/// A model too large for any memory: libtorch's allocator fails (400 GB)
/// while tch builds it, inside a method that panics on libtorch errors.
const HUGE_HIDDEN: &str = "100000000000";

/// Asserts exit 1 with the out-of-memory hint (never a panic's 101).
fn assert_torch_failure(o: &Output, what: &str) {
    assert_code(o, 1, what);
    let err = stderr(o);
    assert!(
        err.contains("libtorch: ") && err.contains("--batch-size"),
        "{what}: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

#[test]
fn a_libtorch_failure_exits_1_with_its_hint_for_every_binary_that_computes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let o = run_line(
        "train",
        &format!("--dataset digits --model mlp --mlp-hidden {HUGE_HIDDEN} --epochs 1 --device cpu --out {d}/t"),
    );
    assert_torch_failure(&o, "train");
    assert!(
        !dir.path().join("t").exists(),
        "train left its --out behind"
    );

    // A checkpoint whose sidecar describes that model: every binary that
    // loads it builds the model first.
    let ok_line =
        format!("--dataset toy-sin --model mlp --epochs 1 --device cpu --out {d}/runs/l2-0");
    ok(run_line("train", &ok_line), "train toy-sin");
    let sidecar = dir.path().join("runs/l2-0/model.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    meta["model"]["mlp_hidden"] = serde_json::json!([HUGE_HIDDEN.parse::<u64>().unwrap()]);
    std::fs::write(&sidecar, meta.to_string()).unwrap();
    let ckpt = format!("{d}/runs/l2-0/model.safetensors");
    let o = run_line(
        "finetune",
        &format!("--from {ckpt} --epochs 1 --device cpu --out {d}/f"),
    );
    assert_torch_failure(&o, "finetune");
    let o = run_line(
        "attack",
        &format!(
            "--checkpoint {ckpt} --attacks pgd1 --eps 0.1 --n-eval 20 --device cpu --out {d}/a"
        ),
    );
    assert_torch_failure(&o, "attack");
    let o = run_line("report", &format!("toy-table1 --runs {d}/runs --out {d}/r"));
    assert_torch_failure(&o, "report");

    // A sweep whose job fails in libtorch: the job's binary exits 1, so does the sweep.
    let grid = dir.path().join("grid.toml");
    let text = format!(
        "steps = [\"train\"]\n[train]\ndataset = \"digits\"\nmodel = \"mlp\"\nmlp-hidden = \"{HUGE_HIDDEN}\"\nepochs = 1\n"
    );
    std::fs::write(&grid, text).unwrap();
    let o = run_line(
        "sweep",
        &format!("run {d}/grid.toml --out {d}/w --device cpu"),
    );
    assert_code(&o, 1, "sweep");
    let failed = std::fs::read_dir(dir.path().join("w/jobs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("failed.json")).ok())
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 1, "one failed job");
    assert!(
        failed[0].contains("\"exit_code\":1") || failed[0].contains("\"exit_code\": 1"),
        "{}",
        failed[0]
    );

    // score-precompute: a TorchScript ε-model whose forward asks libtorch
    // for 4 TB. (bootstrap computes without libtorch: nothing to fail.)
    let model = dir.path().join("huge.pt");
    let script = format!(
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x, t):\n        \
         return x + torch.zeros([1000000000000]).sum()\n\
         torch.jit.script(M()).save('{}')\n",
        model.display()
    );
    // TorchScript reads the class's source, so it goes to a file.
    let make = dir.path().join("make_huge.py");
    std::fs::write(&make, script).unwrap();
    let py = std::process::Command::new(python())
        .arg(&make)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", stderr(&py));
    let o = run_line(
        "score-precompute",
        &format!(
            "--source torchscript --model {} --device cpu --out {d}/s.h5",
            model.display()
        ),
    );
    assert_torch_failure(&o, "score-precompute");
}
