//! `make bench`: attack throughput (samples per second) of APGD-CE (100
//! iterations, every sample attacked for all of them) and of the whole
//! AutoAttack `standard` (APGD-CE, APGD-T, FAB-T, Square; later components
//! only see the points still robust, so its throughput depends on the
//! model's robustness: random weights are broken early, a robust model
//! costs far more), for cnn-small on digits-shaped inputs and resnet18 on
//! CIFAR-shaped inputs, both random (labels = the model's predictions, so
//! every point is attacked). Prints a table; asserts nothing.
//!
//! Options: --device auto|cpu|cuda:N, --n-small N (cnn-small samples;
//! default 512 on CUDA, 64 on CPU), --n-large N (resnet18 samples; default
//! 256 on CUDA, 4 on CPU), --threads N (CPU threads; 0 = libtorch's default).
//!
//! `--side-by-side` (CPU): APGD-CE, AutoAttack `standard` and SPSA against a
//! trained cnn-small on the first digits test points at the digits ε (0.2,
//! L∞), in this suite and in PyTorch (benches/attack.py: torchattacks'
//! APGD and AutoAttack, an SPSA written to the same spec), same weights,
//! points and thread count, the two sides alternating; see [`side`].
#[path = "cli.rs"]
mod cli;
#[path = "attack_side.rs"]
mod side;

use std::time::Instant;
use taser::attack::apgd::{apgd_ce, ApgdConfig};
use taser::attack::autoattack::autoattack_standard;
use taser::attack::{Norm, Threat};
use taser::models::{Activation, Arch, Model, ModelSpec};
use tch::{Device, Kind, Tensor};

struct Opts {
    device: Device,
    n_small: i64,
    n_large: i64,
}

fn parse() -> Opts {
    let device = cli::device();
    let threads: i32 = cli::number("--threads", 0);
    if threads > 0 {
        tch::set_num_threads(threads);
    }
    let cuda = device.is_cuda();
    Opts {
        device,
        n_small: cli::number("--n-small", if cuda { 512 } else { 64 }),
        n_large: cli::number("--n-large", if cuda { 256 } else { 4 }),
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--side-by-side") {
        side::side_by_side();
        return;
    }
    let o = parse();
    println!(
        "attack throughput on {} ({} CPU threads), L∞ ε = 8/255, random weights and inputs",
        taser::device::device_name(o.device),
        tch::get_num_threads()
    );
    println!(
        "{:<10} {:<12} {:<10} {:>8} {:>10} {:>11}  robust after",
        "model", "input", "attack", "samples", "seconds", "samples/s"
    );
    let threat = Threat {
        norm: Norm::Linf,
        eps: 8.0 / 255.0,
    };
    for (arch, shape, n) in [
        (Arch::CnnSmall, vec![1i64, 8, 8], o.n_small),
        (Arch::Resnet18, vec![3i64, 32, 32], o.n_large),
    ] {
        tch::manual_seed(0);
        let spec = ModelSpec {
            arch,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: shape.clone(),
            num_outputs: 10,
        };
        let c = shape[0] as usize;
        let model = Model::new(&spec, o.device, &vec![0.5; c], &vec![0.25; c]).unwrap();
        let mut full = vec![n];
        full.extend(&shape);
        let x = Tensor::rand(full.as_slice(), (Kind::Float, o.device));
        let y = {
            let _g = tch::no_grad_guard();
            model.forward_t(&x, false).argmax(-1, false)
        };
        // Warm-up (CUDA kernels, allocator).
        let _ = apgd_ce(
            &model,
            &x.narrow(0, 0, 1.min(n)),
            &y.narrow(0, 0, 1.min(n)),
            &ApgdConfig {
                n_iter: 2,
                ..ApgdConfig::standard(threat)
            },
        );
        sync(o.device);
        let input = format!("{shape:?}");
        let t0 = Instant::now();
        let (_, fooled) = apgd_ce(&model, &x, &y, &ApgdConfig::standard(threat));
        sync(o.device);
        let s = t0.elapsed().as_secs_f64();
        let robust = n - fooled.sum(Kind::Int64).int64_value(&[]);
        println!(
            "{:<10} {:<12} {:<10} {:>8} {:>10.3} {:>11.2}  {robust}",
            arch.to_string(),
            input,
            "apgd-ce",
            n,
            s,
            n as f64 / s
        );
        let t0 = Instant::now();
        let r = autoattack_standard(&model, &x, &y, &threat, 0);
        sync(o.device);
        let s = t0.elapsed().as_secs_f64();
        let after: Vec<String> = r
            .after
            .iter()
            .map(|(c, m)| format!("{}={}", c.name(), m.sum(Kind::Int64).int64_value(&[])))
            .collect();
        println!(
            "{:<10} {:<12} {:<10} {:>8} {:>10.3} {:>11.2}  {}",
            arch.to_string(),
            input,
            "aa",
            n,
            s,
            n as f64 / s,
            after.join(" ")
        );
    }
}
