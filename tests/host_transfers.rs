//! No host↔device traffic per training step (lib/device/transfers.rs): a
//! run's counted uploads and reads do not grow with its number of steps.
//! Each configuration trains one epoch on digits twice in this process, at
//! batch 512 (3 steps) and batch 32 (45 steps), and the counts of the two
//! runs must be equal; a per-step upload or read would add 42 to them.
use clap::Parser;
use taser::device::transfers;
use taser::train::{train, RunOptions, TrainConfig};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    run: RunOptions,
}

/// Counted transfers of one `train` run with `flags` at `batch`.
fn transfers_of(flags: &[&str], batch: &str) -> transfers::Transfers {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut argv = vec![
        "train",
        "--dataset",
        "digits",
        "--model",
        "cnn-small",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--activation",
        "silu",
        "--batch-size",
        batch,
        "--out",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(flags);
    let args = Args::parse_from(argv);
    let before = transfers::counted();
    train(&args.config, &args.run).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    let after = transfers::counted();
    transfers::Transfers {
        uploads: after.uploads - before.uploads,
        reads: after.reads - before.reads,
    }
}

/// A score file of digits' training split (N(0, I) scores), for the
/// flags that read one.
fn score_file(dir: &std::path::Path) -> String {
    let path = dir.join("scores.h5");
    let exe = std::env::var("CARGO_BIN_EXE_score-precompute").unwrap();
    let o = std::process::Command::new(exe)
        .args([
            "--dataset",
            "digits",
            "--source",
            "gaussian",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    path.to_str().unwrap().to_string()
}

#[test]
fn no_method_uploads_or_reads_per_training_step() {
    let dir = tempfile::tempdir().unwrap();
    let scores = score_file(dir.path());
    let taser = "--lambda 0.001 --score-source gaussian-fit";
    let from_file = format!("--lambda 0.001 --scores {scores}");
    let cases: Vec<String> = vec![
        "--augment crop-flip".into(),
        "--method pgd-at --attack-steps 2 --eps 0.1".into(),
        "--method trades --attack-steps 2 --eps 0.1".into(),
        "--method mart --attack-steps 2 --eps 0.1".into(),
        "--method pgd-at --attack-steps 2 --eps 0.1 --awp".into(),
        format!("{taser} --augment crop-flip"),
        format!("{from_file} --augment crop-flip"),
        format!("{from_file} --stein-order full --score-permute"),
        format!("{taser} --penalty-chunk 8"),
        "--lambda 0.001 --reg grad-norm".into(),
    ];
    for case in &cases {
        let flags: Vec<&str> = case.split_whitespace().collect();
        let (few, many) = (transfers_of(&flags, "512"), transfers_of(&flags, "32"));
        println!("{flags:?}: 3 steps {few:?}, 45 steps {many:?}");
        assert!(
            few.uploads > 0,
            "{flags:?}: the epoch's order is uploaded once"
        );
        assert_eq!(few, many, "{flags:?}: transfers grow with the steps");
    }
}

#[test]
fn a_per_step_upload_is_counted() {
    // --stein-fraction draws its subset on the host each step (its own
    // seeded stream): the one documented per-step upload, and the proof
    // that the counter sees what the step does.
    let flags = [
        "--lambda",
        "0.001",
        "--score-source",
        "gaussian-fit",
        "--stein-fraction",
        "0.5",
    ];
    let (few, many) = (transfers_of(&flags, "512"), transfers_of(&flags, "32"));
    assert_eq!(many.uploads - few.uploads, 45 - 3, "{few:?} {many:?}");
}
