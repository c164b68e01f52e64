//! `cargo bench --bench attack -- --side-by-side`: attack throughput of this
//! suite next to PyTorch implementations of the same attacks with the same
//! settings (benches/attack.py, run as a server so that the rows
//! alternate), one CPU thread each (`--threads N` to change), on the same
//! model weights and points. Each row is timed `--rounds` times (default 2)
//! on each side, the side that goes first alternating between rounds; the
//! table gives the faster round of each side.
//!
//! The model: `--checkpoint PATH` (a cnn-small model.safetensors of `train`,
//! relu), else cnn-small trained with PGD-AT on digits for 15 epochs (seed 0,
//! one thread, about a minute), kept in target/bench-attack/ for later runs.
//! Points: the first N digits test points (`--n-apgd`, `--n-aa`, `--n-spsa`;
//! defaults 200, 48, 48). One short APGD-CE run on each side first warms
//! up libtorch (the first attack of a process ran ×2 slower).
use super::cli;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use taser::attack::apgd::{apgd_ce, ApgdConfig};
use taser::attack::autoattack::autoattack_standard;
use taser::attack::spsa::{spsa, SpsaConfig};
use taser::attack::{Norm, Threat};
use taser::data::{self, DatasetName};
use taser::models::Model;
use tch::{Device, Kind, Tensor};

/// The checkpoint to attack: `--checkpoint`, or the bench's own PGD-AT
/// cnn-small, trained on first use.
fn checkpoint() -> PathBuf {
    if let Some(p) = cli::flag_value("--checkpoint") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-attack/cnn-small-pgd-at");
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        eprintln!("training the bench's model (cnn-small, PGD-AT, 15 epochs) into {dir:?}");
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_train"))
            .args([
                "--dataset",
                "digits",
                "--model",
                "cnn-small",
                "--method",
                "pgd-at",
            ])
            .args([
                "--epochs",
                "15",
                "--seed",
                "0",
                "--device",
                "cpu",
                "--threads",
                "1",
            ])
            .arg("--out")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run target/release/train");
        assert!(status.success(), "training the bench's model failed");
    }
    weights
}

/// The suite's run of `attack` on (x, y): seconds and robust points.
fn suite(attack: &str, model: &Model, x: &Tensor, y: &Tensor, threat: Threat) -> (f64, i64) {
    tch::manual_seed(0);
    let n = x.size()[0];
    let start = Instant::now();
    let robust = match attack {
        "apgd-ce" => {
            n - apgd_ce(model, x, y, &ApgdConfig::standard(threat))
                .1
                .sum(Kind::Int64)
                .int64_value(&[])
        }
        "autoattack" => autoattack_standard(model, x, y, &threat, 0)
            .robust
            .sum(Kind::Int64)
            .int64_value(&[]),
        "spsa" => {
            n - spsa(model, x, y, &SpsaConfig::standard(threat))
                .1
                .sum(Kind::Int64)
                .int64_value(&[])
        }
        _ => unreachable!(),
    };
    (start.elapsed().as_secs_f64(), robust)
}

/// The PyTorch side: benches/attack.py as a server.
struct Torch {
    child: std::process::Child,
    to_py: std::process::ChildStdin,
    from_py: BufReader<std::process::ChildStdout>,
    threads: i32,
}

impl Torch {
    fn start(weights: &Path, points: &Path, eps: f64, threads: i32) -> Torch {
        let python = std::env::var("TASER_PYTHON")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
        let mut child = std::process::Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/attack.py"))
            .arg(weights)
            .arg(points)
            .arg(eps.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start benches/attack.py with TASER_PYTHON");
        let to_py = child.stdin.take().unwrap();
        let from_py = BufReader::new(child.stdout.take().unwrap());
        Torch {
            child,
            to_py,
            from_py,
            threads,
        }
    }

    /// PyTorch's run of `attack` on the first `n` points: seconds and robust points.
    fn run(&mut self, attack: &str, n: i64) -> (f64, i64) {
        writeln!(self.to_py, "{attack} {n} {}", self.threads).unwrap();
        let mut line = String::new();
        self.from_py.read_line(&mut line).unwrap();
        let answer: Vec<f64> = line
            .split_whitespace()
            .map(|v| v.parse().expect("benches/attack.py answer"))
            .collect();
        assert_eq!(answer.len(), 2, "benches/attack.py answered {line:?}");
        (answer[0], answer[1] as i64)
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // The server would wait for another line: end it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn side_by_side() {
    let threads: i32 = cli::number("--threads", 1);
    let rounds: usize = cli::number("--rounds", 2);
    tch::set_num_threads(threads);
    let weights = checkpoint();
    let (model, _) = taser::checkpoint::load(&weights, Device::Cpu).expect("--checkpoint");
    let digits = data::load(DatasetName::Digits, &data::default_data_dir(), 0)
        .expect("digits data: run `make setup`");
    let rows = [
        ("apgd-ce", cli::number("--n-apgd", 200i64)),
        ("autoattack", cli::number("--n-aa", 48i64)),
        ("spsa", cli::number("--n-spsa", 48i64)),
    ];
    let n_max = rows
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap()
        .min(digits.test.len());
    let (x, y) = (
        digits.test.x.narrow(0, 0, n_max),
        digits.test.y.narrow(0, 0, n_max),
    );
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.safetensors");
    taser::checkpoint::write_tensors(
        &points,
        &[
            ("x".into(), x.shallow_clone()),
            ("y".into(), y.shallow_clone()),
        ],
    )
    .unwrap();
    let threat = Threat {
        norm: Norm::Linf,
        eps: 0.2,
    };
    let mut torch = Torch::start(&weights, &points, threat.eps, threads);
    let mut torch = |attack: &str, n: i64| torch.run(attack, n);
    // Warm-up on both sides (oneDNN kernels, allocator): a short APGD-CE.
    let _ = suite(
        "apgd-ce",
        &model,
        &x.narrow(0, 0, 8),
        &y.narrow(0, 0, 8),
        threat,
    );
    let _ = torch("apgd-ce", 8);
    println!(
        "attacks side by side, CPU, {threads} thread(s) each, cnn-small ({}) on the first digits test points, L∞ ε = 0.2; best of {rounds} alternating rounds per side",
        weights.display()
    );
    println!("PyTorch: torchattacks (APGD; AutoAttack standard, iterative components at 100 steps), SPSA in benches/attack.py\n");
    println!("| attack | n | suite samples/s | PyTorch samples/s | suite time / PyTorch time | robust: suite | robust: PyTorch | rounds' suite/PyTorch |");
    println!("|---|---|---|---|---|---|---|---|");
    for (attack, n) in rows {
        let n = n.min(n_max);
        let (xs, ys) = (x.narrow(0, 0, n), y.narrow(0, 0, n));
        let mut best = [(f64::INFINITY, 0i64); 2];
        let mut each = Vec::new();
        for round in 0..rounds {
            let (s, t) = if round % 2 == 0 {
                let s = suite(attack, &model, &xs, &ys, threat);
                (s, torch(attack, n))
            } else {
                let t = torch(attack, n);
                (suite(attack, &model, &xs, &ys, threat), t)
            };
            each.push(format!("{:.2}", s.0 / t.0));
            if s.0 < best[0].0 {
                best[0] = s;
            }
            if t.0 < best[1].0 {
                best[1] = t;
            }
        }
        let [s, t] = best;
        println!(
            "| {attack} | {n} | {:.1} | {:.1} | {:.2} | {} ({:.1}%) | {} ({:.1}%) | {} |",
            n as f64 / s.0,
            n as f64 / t.0,
            s.0 / t.0,
            s.1,
            100.0 * s.1 as f64 / n as f64,
            t.1,
            100.0 * t.1 as f64 / n as f64,
            each.join(", ")
        );
    }
}
