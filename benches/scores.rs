//! `make bench` (scores): throughput of each score source on digits
//! (samples/s, computing only, after fitting/training), and the HDF5 write
//! rate of the score file next to a plain sequential write of the same
//! bytes. Prints figures and ratios; asserts nothing.
//!
//! Options: --hdf5-only (the write table alone), --n N (samples written;
//! default 50 000, CIFAR-10's training split), --compression none|gzip1|gzip4
//! (that writer alone; default all three).
#[path = "cli.rs"]
#[allow(dead_code)] // --device is not used here
mod cli;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use taser::data::{self, DatasetName};
use taser::score::dsm::{DsmConfig, DsmNet};
use taser::score::file::{Compression, ScoreFileMeta, ScoreWriter};
use taser::score::gmm::Gmm;
use taser::score::torchscript::{InputRange, ScoreInput, TorchScriptEps};
use taser::score::{Gaussian, ScoreField};
use tch::{Device, Kind, Tensor};

fn throughput(field: &dyn ScoreField, x: &Tensor, batch: i64) -> f64 {
    let n = x.size()[0];
    let idx = Tensor::arange(batch, (Kind::Int64, x.device()));
    let run = || {
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let s = field.score(&x.narrow(0, start, len), &idx.narrow(0, 0, len), None);
            let _ = s.sum(Kind::Float).double_value(&[]);
            start += len;
        }
    };
    run();
    let t = Instant::now();
    run();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // `--hdf5-only`: the HDF5 write table alone (no score-source set-up).
    if std::env::args().any(|a| a == "--hdf5-only") {
        hdf5_writes(&tempfile::tempdir().unwrap());
        return;
    }
    let digits = data::load(DatasetName::Digits, &data::default_data_dir(), 0)
        .expect("digits: run `make setup`");
    let x = digits.train.x.shallow_clone();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "score sources on digits ({} training inputs, batch 256, CPU)\n",
        x.size()[0]
    );
    println!("| source | set-up s | samples/s |");
    println!("|---|---|---|");
    let t = Instant::now();
    let g = Gaussian::standard(&[1, 8, 8]);
    println!(
        "| gaussian-std | {:.3} | {:.0} |",
        t.elapsed().as_secs_f64(),
        throughput(&g, &x, 256)
    );
    let t = Instant::now();
    let g = Gaussian::fit(&x, 0.1).unwrap();
    println!(
        "| gaussian (fitted) | {:.3} | {:.0} |",
        t.elapsed().as_secs_f64(),
        throughput(&g, &x, 256)
    );
    let t = Instant::now();
    let m = Gmm::fit(&x, &digits.train.y, 10, 0.1).unwrap();
    println!(
        "| gmm | {:.3} | {:.0} |",
        t.elapsed().as_secs_f64(),
        throughput(&m, &x, 256)
    );
    let t = Instant::now();
    let cfg = DsmConfig {
        sigma: 0.1,
        steps: 200,
        batch_size: 128,
        lr: 1e-3,
        seed: 0,
    };
    let net = DsmNet::train(&x, &cfg, Device::Cpu).unwrap();
    println!(
        "| dsm (conv; 200 training steps in set-up) | {:.3} | {:.0} |",
        t.elapsed().as_secs_f64(),
        throughput(&net, &x, 256)
    );
    // A tiny traced ε-model, made with the venv's torch.
    let inputs = dir.path().join("inputs.safetensors");
    taser::checkpoint::write_tensors(&inputs, &[("inputs".into(), x.narrow(0, 0, 4))]).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/make_eps_models.py");
    let ok = std::process::Command::new(python)
        .arg(script)
        .arg(dir.path())
        .arg(&inputs)
        .arg("50")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        let t = Instant::now();
        let ts = TorchScriptEps::load(
            &dir.path().join("eps.pt"),
            &[1, 8, 8],
            50,
            InputRange::MinusOneOne,
            ScoreInput::Clean,
            Device::Cpu,
        )
        .unwrap();
        println!(
            "| torchscript (tiny 2-conv ε-model) | {:.3} | {:.0} |",
            t.elapsed().as_secs_f64(),
            throughput(&ts, &x, 256)
        );
    } else {
        println!("| torchscript | – | skipped: could not trace a model with .venv's python |");
    }

    hdf5_writes(&dir);
}

/// HDF5 write rate of each --compression versus a plain sequential write of the same bytes.
fn hdf5_writes(dir: &tempfile::TempDir) {
    // HDF5 write rate versus a plain sequential write of the same bytes.
    let (n, shape) = (cli::number("--n", 50_000usize), vec![3i64, 32, 32]);
    let batch = 256;
    let data = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let bytes = n * 3 * 32 * 32 * 4;
    let meta = ScoreFileMeta {
        dataset: "bench".into(),
        split: "train".into(),
        input_shape: shape,
        source: "bench".into(),
        source_config: "{}".into(),
        t: None,
        sigma_t: None,
        fingerprint: "0".into(),
    };
    let write_h5 = |compression: Compression| {
        let h5 = dir.path().join(format!("{compression:?}.h5"));
        let t = Instant::now();
        let mut w = ScoreWriter::create(&h5, &meta, n, compression).unwrap();
        let mut written = 0;
        while written < n {
            let len = batch.min(n - written);
            w.write_batch(&data.narrow(0, 0, len as i64)).unwrap();
            written += len;
        }
        w.finish(1.0).unwrap();
        std::fs::File::open(&h5).unwrap().sync_all().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&h5).unwrap().len() as f64 / 1e6;
        std::fs::remove_file(&h5).unwrap();
        (secs, size)
    };
    let raw: Vec<f32> = Vec::try_from(data.view([-1])).unwrap();
    let raw_bytes: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
    let write_plain = || {
        let plain = dir.path().join("w.bin");
        let t = Instant::now();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&plain).unwrap());
        let mut written = 0;
        while written < n {
            let len = batch.min(n - written);
            f.write_all(&raw_bytes[..len * 3 * 32 * 32 * 4]).unwrap();
            written += len;
        }
        f.into_inner().unwrap().sync_all().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&plain).unwrap().len() as f64 / 1e6;
        std::fs::remove_file(&plain).unwrap();
        (secs, size)
    };
    let mb = bytes as f64 / 1e6;
    // Interleaved, two rounds: each writer's time is the faster of its two
    // runs, and the plain write is timed beside every one of them, before
    // it in the first round and after it in the second (whichever write
    // comes first pays for the page cache the previous one left).
    let writers: Vec<Compression> = match cli::flag_value("--compression") {
        Some(c) => {
            vec![clap::ValueEnum::from_str(&c, true).expect("--compression none|gzip1|gzip4")]
        }
        None => vec![Compression::None, Compression::Gzip1, Compression::Gzip4],
    };
    let mut best = [(f64::INFINITY, 0.0); 4];
    let plain_at = best.len() - 1;
    for round in 0..2 {
        for (i, &c) in writers.iter().enumerate() {
            let (p, h) = if round == 0 {
                (write_plain(), write_h5(c))
            } else {
                let h = write_h5(c);
                (write_plain(), h)
            };
            best[plain_at] = if p.0 < best[plain_at].0 {
                p
            } else {
                best[plain_at]
            };
            best[i] = if h.0 < best[i].0 { h } else { best[i] };
        }
    }
    let plain_secs = best[plain_at].0;
    println!("\nwriting {n} CIFAR-shaped f32 scores ({mb:.0} MB of values; random values, so compression gains little; best of 2 interleaved runs):\n");
    println!("| writer (--compression) | seconds | MB/s | file MB | × plain time |");
    println!("|---|---|---|---|---|");
    for (i, c) in writers.iter().enumerate() {
        let (secs, size) = best[i];
        println!(
            "| HDF5 chunked, {c:?} (NaN check) | {secs:.2} | {:.0} | {size:.0} | ×{:.2} |",
            mb / secs,
            secs / plain_secs
        );
    }
    println!(
        "| plain sequential write | {plain_secs:.2} | {:.0} | {:.0} | ×1.00 |",
        mb / plain_secs,
        best[plain_at].1
    );
}
