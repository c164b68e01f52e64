//! `make bench`: time per training step of standard training alone and with
//! the TASER penalty (first-order and full with K = 1, in autograd and fd
//! modes), for cnn-small on digits and resnet18 on CIFAR-shaped random data,
//! each as a ratio to standard training. Prints a table; asserts nothing.
//!
//! Options: --device auto|cpu|cuda:N, --steps N (timed steps per row),
//! --batch N (resnet18 batch; default 256 on CUDA, 32 on CPU).
use clap::Parser;
#[path = "cli.rs"]
mod cli;

use std::time::Instant;
use taser::data::{self, Dataset, DatasetName, Split, Task};
use taser::models::{Activation, Arch, Model, ModelSpec};
use taser::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use taser::score::Gaussian;
use taser::stein::controls::Coordinates;
use taser::stein::{Center, Difference, Laplacian, Mode, Order, Probe, ResidualOptions};
use taser::train::method::{MethodArgs, MethodSettings};
use taser::train::regularizer::{LambdaRamp, Regularizer, ScoreControl, SteinPenalty};
use taser::train::step::BaseLoss;
use taser::train::{train_step, Batch, Method, StepLoss};
use tch::{Device, Kind, Tensor};

struct Opts {
    device: Device,
    steps: usize,
    batch: Option<i64>,
}

fn parse() -> Opts {
    let device = cli::device();
    Opts {
        device,
        steps: cli::number("--steps", if device.is_cuda() { 20 } else { 3 }),
        batch: cli::flag_value("--batch").map(|s| s.parse().expect("--batch")),
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[derive(Parser)]
struct MethodFlags {
    #[command(flatten)]
    m: MethodArgs,
}

/// The method's reference defaults (ε 8/255 on CIFAR, the digits ε on digits).
fn settings(method: Method, data: &Dataset) -> MethodSettings {
    MethodFlags::parse_from(["bench"])
        .m
        .resolve(
            method,
            data.name,
            Task::Classification,
            data.num_outputs,
            data.input_shape.iter().product::<i64>() as usize,
        )
        .unwrap()
}

/// Mean seconds per step of `method` with `variant` of the penalty (None:
/// the method alone).
fn time_steps(
    spec: &ModelSpec,
    data: &Dataset,
    batch: i64,
    method: Method,
    variant: Option<(Order, Mode, Difference)>,
    o: &Opts,
) -> f64 {
    tch::manual_seed(0);
    let c = spec.input_shape[0] as usize;
    let model = Model::new(spec, o.device, &vec![0.5; c], &vec![0.25; c]).unwrap();
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        nesterov: false,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 5e-4,
    };
    let mut opt = Optimizer::new(&cfg, model.named_trainable());
    let reg = match variant {
        None => Regularizer::None,
        Some((order, mode, difference)) => Regularizer::Stein(SteinPenalty {
            lambda: LambdaRamp {
                max: 1.0,
                warmup_steps: 0,
            },
            options: ResidualOptions {
                order,
                mode,
                laplacian: Laplacian::Hutchinson,
                probes: 1,
                fd_step: 1e-2,
                difference,
            },
            probe: Probe::Margin,
            center: Center::Batch,
            detach_mean: false,
            bn_train: false,
            global_center: 0.0,
            field: Some(Box::new(
                Gaussian::standard(&data.input_shape).to_device(o.device),
            )),
            control: ScoreControl::None,
            grad_norm: false,
            coordinates: Coordinates::Pixel,
            fraction: 1.0,
            seed: 0,
        }),
    };
    let n = data.train.len();
    let idx: Vec<i64> = (0..batch).map(|i| i % n).collect();
    let t = Tensor::from_slice(&idx);
    let x = data.train.x.index_select(0, &t).to_device(o.device);
    let y = data.train.y.index_select(0, &t).to_device(o.device);
    let method = settings(method, data);
    let objective = StepLoss {
        base: BaseLoss::Method {
            task: Task::Classification,
            settings: &method,
        },
        regularizer: &reg,
        awp_gamma: None,
        teacher: None,
        precision: Default::default(),
    };
    let batch = Batch {
        x: &x,
        y: &y,
        indices: &idx,
        aug: None,
    };
    let mut run = |k: usize| {
        for s in 0..k {
            train_step(&model, &mut opt, &objective, &batch, s, 0.01).unwrap();
        }
        sync(o.device);
    };
    run(2); // warm-up: allocator, cuDNN autotuning
    let start = Instant::now();
    run(o.steps);
    start.elapsed().as_secs_f64() / o.steps as f64
}

type Variant = Option<(Order, Mode, Difference)>;

/// The rows of each table: label, the PyTorch step's name for the same
/// variant (benches/train_step.py), and the penalty (None: the method alone).
/// PyTorch's one-sided row is its two-copy central difference, the
/// reference the suite's one-sided variant is compared with.
const VARIANTS: [(&str, &str, Variant); 6] = [
    ("alone", "alone", None),
    (
        "+ first-order, autograd",
        "first-autograd",
        Some((Order::FirstOrder, Mode::Autograd, Difference::Central)),
    ),
    (
        "+ first-order, fd",
        "first-fd",
        Some((Order::FirstOrder, Mode::Fd, Difference::Central)),
    ),
    (
        "+ first-order, fd one-sided",
        "first-fd",
        Some((Order::FirstOrder, Mode::Fd, Difference::Forward)),
    ),
    (
        "+ full K=1, autograd",
        "full-autograd",
        Some((Order::Full, Mode::Autograd, Difference::Central)),
    ),
    (
        "+ full K=1, fd",
        "full-fd",
        Some((Order::Full, Mode::Fd, Difference::Central)),
    ),
];

/// `--side-by-side`: standard training ± each penalty variant, this suite
/// and the same step in PyTorch (benches/train_step.py, run as a server so
/// the rows alternate and drift hits both), one thread each; ms per step
/// and the ratio suite / PyTorch.
fn side_by_side(digits: &Dataset, cifar_like: &Dataset, batch: i64, o: &Opts) {
    use std::io::{BufRead, BufReader, Write};
    let threads = cli::number("--threads", 1);
    tch::set_num_threads(threads);
    let python = std::env::var("TASER_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start benches/train_step.py with TASER_PYTHON");
    let mut to_py = child.stdin.take().unwrap();
    let mut from_py = BufReader::new(child.stdout.take().unwrap());
    println!(
        "side by side, CPU, {threads} thread(s) each, standard training (SGD), {} timed steps per row after 2 warm-up steps, fd step 1e-2, K = 1",
        o.steps
    );
    println!();
    println!("| model / data | batch | variant | suite ms/step | PyTorch ms/step | suite / PyTorch | suite × alone |");
    println!("|---|---|---|---|---|---|---|");
    for (name, arch, d, b) in [
        ("cnn-small / digits", Arch::CnnSmall, digits, 256),
        ("resnet18 / CIFAR-shaped", Arch::Resnet18, cifar_like, batch),
    ] {
        let spec = ModelSpec {
            arch,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: d.input_shape.clone(),
            num_outputs: d.num_outputs,
        };
        let mut alone = 0.0;
        for (label, py_name, v) in VARIANTS {
            let suite = time_steps(&spec, d, b, Method::Standard, v, o) * 1e3;
            let shape = &d.input_shape;
            let arch_name = if arch == Arch::CnnSmall {
                "cnn-small"
            } else {
                "resnet18"
            };
            writeln!(
                to_py,
                "{arch_name} {py_name} {b} {} {} {} {} {} {threads}",
                shape[0], shape[1], shape[2], d.num_outputs, o.steps
            )
            .unwrap();
            let mut line = String::new();
            from_py.read_line(&mut line).unwrap();
            let torch: f64 = line.trim().parse().expect("benches/train_step.py answer");
            if v.is_none() {
                alone = suite;
            }
            println!(
                "| {name} | {b} | {label} | {suite:.1} | {torch:.1} | {:.2} | ×{:.2} |",
                suite / torch,
                suite / alone
            );
        }
    }
    drop(to_py);
    child.wait().unwrap();
}

fn main() {
    let o = parse();
    let cuda = o.device.is_cuda();
    let digits = data::load(DatasetName::Digits, &data::default_data_dir(), 0)
        .expect("digits data: run `make setup`");
    let batch = o.batch.unwrap_or(if cuda { 256 } else { 32 });
    tch::manual_seed(1);
    let cifar_like = Dataset {
        name: DatasetName::Cifar10,
        task: Task::Classification,
        input_shape: vec![3, 32, 32],
        num_outputs: 10,
        train: Split {
            x: Tensor::rand([batch, 3, 32, 32], (Kind::Float, Device::Cpu)),
            y: Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu)),
        },
        test: Split {
            x: Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu)),
            y: Tensor::zeros([1], (Kind::Int64, Device::Cpu)),
        },
        ood: None,
    };
    let spec = |arch: Arch, d: &Dataset| ModelSpec {
        arch,
        activation: Activation::Relu,
        mlp_hidden: vec![],
        input_shape: d.input_shape.clone(),
        num_outputs: d.num_outputs,
    };
    let all_methods = [
        Method::Standard,
        Method::PgdAt,
        Method::Trades,
        Method::Mart,
    ];
    // On a CPU an adversarial resnet18 step takes many seconds: there the
    // resnet18 rows cover standard and TRADES only.
    let resnet_methods: &[Method] = if cuda {
        &all_methods
    } else {
        &[Method::Standard, Method::Trades]
    };
    let cases = [
        (
            "cnn-small / digits",
            spec(Arch::CnnSmall, &digits),
            &digits,
            256,
            &all_methods[..],
        ),
        (
            "resnet18 / CIFAR-shaped",
            spec(Arch::Resnet18, &cifar_like),
            &cifar_like,
            batch,
            resnet_methods,
        ),
    ];
    if std::env::args().any(|a| a == "--side-by-side") {
        side_by_side(&digits, &cifar_like, batch, &o);
        return;
    }
    let variants: Vec<_> = VARIANTS.iter().map(|&(l, _, v)| (l, v)).collect();
    println!(
        "time per training step, device {}, {} timed steps per row (after 2 warm-up steps)",
        taser::device::device_name(o.device),
        o.steps
    );
    println!("paper (TASER Table 2, A10 GPU): standard ×2.45, adversarial methods ×1.17–×1.27");
    println!("training attacks: 10 PGD steps (pgd-at, trades, mart)");
    println!();
    println!("| model / data | batch | method | variant | ms/step | × method alone |");
    println!("|---|---|---|---|---|---|");
    for (name, s, d, b, methods) in cases {
        for &method in methods {
            let mut base = 0.0;
            for &(label, v) in &variants {
                let secs = time_steps(&s, d, b, method, v, &o);
                if v.is_none() {
                    base = secs;
                }
                println!(
                    "| {name} | {b} | {method:?} | {label} | {:.2} | ×{:.2} |",
                    secs * 1e3,
                    secs / base
                );
            }
        }
    }
}
