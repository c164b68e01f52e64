//! `make bench`: time per training step of standard training alone and with
//! the TASER penalty (first-order and full with K = 1, in autograd and fd
//! modes; in the suite-only table also the one-sided first-order penalty on a
//! fraction f ∈ {0.5, 0.25} of each batch, `--stein-fraction`), for
//! cnn-small on digits and resnet18 on CIFAR-shaped random data, each as a
//! ratio to standard training. Prints a table; asserts nothing.
//!
//! Options: --device auto|cpu|cuda:N, --steps N (timed steps per row;
//! default 20, on the CPU 6 for resnet18),
//! --repeats R (side by side: each row timed in R rounds, each round a
//! fresh model on both sides whose timed steps alternate one by one, suite
//! then PyTorch, each round's figure the mean of its timed steps, and the
//! rounds' medians compared; default 1), --threads N (libtorch threads of
//! each side in the side-by-side table; default 1),
//! --batch N (resnet18 batch; default 256 on CUDA, 32 on CPU),
//! --cnn-batch N (cnn-small batch; default 256),
//! --precision f32|bf16 and --memory-format contiguous|channels-last (as
//! `train`'s; the penalty stays f32), --models cnn-small,resnet18 and
//! --methods standard,pgd-at,trades,mart (rows to run; default all),
//! --variants 1,…,6 (side by side: the penalty variants to run, by their
//! position in the table, 1 = alone; default all; × alone reads NaN
//! without 1),
//! --side-by-side (against benches/train_step.py, or the script named by
//! TASER_BENCH_PY, run by TASER_PYTHON), --fd-residual (instead of the
//! timings: the fd vs autograd first-order residual on one batch with TF32
//! off and on, see fd_residual.rs). Digits are read from TASER_DATA_DIR
//! when set (else the repository's data/cache).
use clap::Parser;
#[path = "cli.rs"]
mod cli;
#[path = "fd_residual.rs"]
mod fd_residual;

use std::time::Instant;
use taser::data::{self, Dataset, DatasetName, Split, Task};
use taser::device::{MemoryFormat, Precision};
use taser::models::{Activation, Arch, Model, ModelSpec};
use taser::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use taser::score::Gaussian;
use taser::stein::penalty::Coordinates;
use taser::stein::penalty::{
    Estimator, LambdaRamp, Regularizer, ScoreControl, SteinPenalty, Strength,
};
use taser::stein::{Center, Difference, Laplacian, Mode, Order, Probe, ResidualOptions};
use taser::train::method::{MethodArgs, MethodSettings};
use taser::train::step::{BaseLoss, StepPrecision};
use taser::train::{train_step, Batch, Method, StepLoss};
use tch::{Device, Kind, Tensor};

struct Opts {
    device: Device,
    /// `--steps`: timed steps per row (None: [`Opts::steps`]'s defaults).
    steps: Option<usize>,
    /// Side-by-side rounds per row (medians reported).
    repeats: usize,
    batch: Option<i64>,
    cnn_batch: i64,
    precision: Precision,
    format: MemoryFormat,
    /// Model names to run (cnn-small, resnet18).
    models: Vec<String>,
    /// Methods to run (standard, pgd-at, trades, mart).
    methods: Vec<String>,
    /// Side-by-side variants to run, by the position in the table's
    /// order (1 = alone … 6 = full fd); all when empty.
    variants: Vec<usize>,
}

fn parse() -> Opts {
    use clap::ValueEnum;
    let device = cli::device();
    let choice = |flag: &str, default: &str| cli::flag_value(flag).unwrap_or(default.into());
    Opts {
        device,
        steps: cli::flag_value("--steps").map(|s| s.parse().expect("--steps")),
        repeats: cli::number("--repeats", 1).max(1),
        batch: cli::flag_value("--batch").map(|s| s.parse().expect("--batch")),
        cnn_batch: cli::number("--cnn-batch", 256),
        precision: Precision::from_str(&choice("--precision", "f32"), true).expect("--precision"),
        format: MemoryFormat::from_str(&choice("--memory-format", "contiguous"), true)
            .expect("--memory-format"),
        models: list_flag("--models", "cnn-small,resnet18"),
        methods: list_flag("--methods", "standard,pgd-at,trades,mart"),
        variants: list_flag("--variants", "1,2,3,4,5,6")
            .iter()
            .map(|v| v.parse().expect("--variants: positions 1-6"))
            .collect(),
    }
}

impl Opts {
    /// Timed steps per row of `arch`: `--steps`, else 20, and on the CPU 6
    /// for resnet18 (a step takes seconds there). Three steps, the old CPU
    /// default, read cnn-small's plain step 5% slower than PyTorch's in the
    /// medians of 5 rounds; 20 read it 7% faster.
    fn steps(&self, arch: Arch) -> usize {
        match (self.steps, self.device.is_cuda(), arch) {
            (Some(n), _, _) => n,
            (None, false, Arch::Resnet18) => 6,
            _ => 20,
        }
    }

    /// The timed steps for the tables' headers.
    fn steps_label(&self) -> String {
        match (self.steps, self.device.is_cuda()) {
            (None, false) => "20 (resnet18: 6)".into(),
            _ => self.steps(Arch::CnnSmall).to_string(),
        }
    }
}

/// A comma-separated list flag, or `default` when absent.
fn list_flag(flag: &str, default: &str) -> Vec<String> {
    cli::flag_value(flag)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

/// How the rows compute, for the tables' headers.
fn compute_label(o: &Opts) -> String {
    format!("{:?}, {:?}", o.precision, o.format).to_lowercase()
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

/// What the suite times in one row: `method` with `variant` of the penalty
/// (None: the method alone) on a `fraction` of each batch.
struct SuiteRow<'a> {
    spec: &'a ModelSpec,
    data: &'a Dataset,
    batch: i64,
    method: Method,
    variant: Variant,
    fraction: f64,
}

/// Mean seconds per step of `row` over its timed steps (after 2 warm-up
/// steps). `between` runs after each timed step, outside the clock: the
/// side-by-side table times one PyTorch step there, so that the two sides
/// alternate step by step and drift of the machine hits both alike.
fn time_steps(row: &SuiteRow, o: &Opts, between: &mut dyn FnMut()) -> f64 {
    let SuiteRow {
        spec,
        data,
        batch,
        method,
        variant,
        fraction,
    } = *row;
    tch::manual_seed(0);
    let c = spec.input_shape[0] as usize;
    let mut model = Model::new(spec, o.device, &vec![0.5; c], &vec![0.25; c]).unwrap();
    model.set_memory_format(o.format).unwrap();
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
        Some((order, mode, difference)) => Regularizer::Stein(stein_penalty(
            order, mode, difference, fraction, data, o.device,
        )),
    };
    let n = data.train.len();
    let idx: Vec<i64> = (0..batch).map(|i| i % n).collect();
    let t = Tensor::from_slice(&idx);
    let x = data.train.x.index_select(0, &t).to_device(o.device);
    let y = data.train.y.index_select(0, &t).to_device(o.device);
    let idx = t.to_device(o.device);
    let method = settings(method, data);
    let objective = StepLoss {
        base: BaseLoss::Method {
            task: Task::Classification,
            settings: &method,
        },
        regularizer: &reg,
        awp_gamma: None,
        teacher: None,
        precision: StepPrecision {
            base: o.precision,
            penalty: Precision::F32,
        },
    };
    let batch = Batch {
        x: &x,
        y: &y,
        indices: &idx,
        aug: None,
        share: None,
    };
    let mut step = |s: usize| {
        train_step(&model, &mut opt, &objective, &batch, s, 0.01).unwrap();
        sync(o.device);
    };
    (0..2).for_each(&mut step); // warm-up: allocator, cuDNN autotuning
    let steps = o.steps(spec.arch);
    let mut secs = 0.0;
    for s in 2..2 + steps {
        let start = Instant::now();
        step(s);
        secs += start.elapsed().as_secs_f64();
        between();
    }
    secs / steps as f64
}

/// The bench's TASER penalty: λ = 1 from the first step, one Hutchinson
/// probe, fd step 1e-2, the margin probe centred on the batch, BatchNorm in
/// eval mode, N(0, I) scores in pixel coordinates, on a `fraction` of the batch.
fn stein_penalty(
    order: Order,
    mode: Mode,
    difference: Difference,
    fraction: f64,
    data: &Dataset,
    device: Device,
) -> SteinPenalty {
    SteinPenalty {
        ramp: LambdaRamp {
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
        estimator: Estimator::Plain,
        probe: Probe::Margin,
        center: Center::Batch,
        detach_mean: false,
        bn_train: false,
        global_center: 0.0,
        field: Some(Box::new(
            Gaussian::standard(&data.input_shape).to_device(device),
        )),
        control: ScoreControl::None,
        grad_norm: false,
        coordinates: Coordinates::Pixel,
        fraction,
        seed: 0,
        strength: Strength::Given,
        chunk: None,
        auto_chunk: false,
    }
}

type Variant = Option<(Order, Mode, Difference)>;

/// `--stein-fraction` values of the suite-only table's extra rows.
const FRACTIONS: [f64; 2] = [0.5, 0.25];

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

/// `--side-by-side`: standard training and PGD-AT ± each penalty variant,
/// this suite and the same step in PyTorch (benches/train_step.py, run as a
/// server so that the two sides' timed steps alternate one by one and drift
/// of the machine hits both), one thread each; ms per step and the ratio
/// suite / PyTorch. PGD-AT rows: cnn-small always,
/// resnet18 on CUDA only (a CPU step takes many seconds).
fn side_by_side(digits: &Dataset, cifar_like: &Dataset, batch: i64, o: &Opts) {
    let threads = cli::number("--threads", 1);
    tch::set_num_threads(threads);
    let python = std::env::var("TASER_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    let script = std::env::var("TASER_BENCH_PY")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step.py").into());
    let mut torch = TorchSide::start(&python, &script);
    let pgd = settings(Method::PgdAt, digits).attack.unwrap();
    println!(
        "side by side, {} ({}), {threads} CPU thread(s) each, SGD, {} timed steps per row after 2 warm-up steps, the two sides' steps alternating, median of {} round(s), fd step 1e-2, K = 1; PGD-AT on digits: {} sign steps of {} from a uniform start in the L∞ ball of ε = {}",
        taser::device::device_name(o.device),
        compute_label(o),
        o.steps_label(),
        o.repeats,
        pgd.steps,
        pgd.step_size,
        pgd.threat.eps
    );
    println!();
    println!("| model / data | batch | method | variant | suite ms/step | PyTorch ms/step | suite / PyTorch | suite × alone |");
    println!("|---|---|---|---|---|---|---|---|");
    let cases = [
        (
            "cnn-small / digits",
            Arch::CnnSmall,
            digits,
            o.cnn_batch,
            Method::Standard,
        ),
        (
            "cnn-small / digits",
            Arch::CnnSmall,
            digits,
            o.cnn_batch,
            Method::PgdAt,
        ),
        (
            "resnet18 / CIFAR-shaped",
            Arch::Resnet18,
            cifar_like,
            batch,
            Method::Standard,
        ),
        (
            "resnet18 / CIFAR-shaped",
            Arch::Resnet18,
            cifar_like,
            batch,
            Method::PgdAt,
        ),
    ];
    for (name, arch, d, b, method) in cases.into_iter().filter(|c| {
        o.models.contains(&c.1.to_string())
            && o.methods.contains(&method_name(c.4))
            && (o.device.is_cuda() || c.1 == Arch::CnnSmall || c.4 == Method::Standard)
    }) {
        let spec = ModelSpec {
            arch,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: d.input_shape.clone(),
            num_outputs: d.num_outputs,
        };
        let mut alone = f64::NAN;
        let chosen = VARIANTS
            .into_iter()
            .enumerate()
            .filter(|(i, _)| o.variants.contains(&(i + 1)));
        for (_, (label, py_name, v)) in chosen {
            let row = Row {
                arch,
                method,
                variant: py_name,
                batch: b,
                data: d,
                threads,
            };
            let suite_row = SuiteRow {
                spec: &spec,
                data: d,
                batch: b,
                method,
                variant: v,
                fraction: 1.0,
            };
            let (mut suites, mut pytorches) = (vec![], vec![]);
            for _ in 0..o.repeats {
                torch.start_row(&row, o);
                let mut steps = vec![];
                let suite = time_steps(&suite_row, o, &mut || steps.push(torch.step()));
                suites.push(suite * 1e3);
                pytorches.push(statrs::statistics::Statistics::mean(&steps));
            }
            let (suite, pytorch) = (median(suites), median(pytorches));
            if v.is_none() {
                alone = suite;
            }
            println!(
                "| {name} | {b} | {} | {label} | {suite:.1} | {pytorch:.1} | {:.2} | ×{:.2} |",
                method_name(method),
                suite / pytorch,
                suite / alone
            );
        }
    }
    torch.finish();
}

/// The median of `xs` (statrs: the mean of the middle two for an even count).
fn median(xs: Vec<f64>) -> f64 {
    use statrs::statistics::{Data, Median};
    Data::new(xs).median()
}

/// The method's flag name (pgd-at, …).
fn method_name(m: Method) -> String {
    use clap::ValueEnum;
    m.to_possible_value().unwrap().get_name().to_string()
}

/// One side-by-side row as benches/train_step.py reads it.
struct Row<'a> {
    arch: Arch,
    method: Method,
    variant: &'a str,
    batch: i64,
    data: &'a Dataset,
    threads: i32,
}

/// benches/train_step.py running as a server: a row line builds the row
/// and runs its 2 warm-up steps (answer `ready`), then each `step` line
/// times one step (answer: its ms).
struct TorchSide {
    child: std::process::Child,
    to_py: Option<std::process::ChildStdin>,
    from_py: std::io::BufReader<std::process::ChildStdout>,
}

impl TorchSide {
    fn start(python: &str, script: &str) -> TorchSide {
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start benches/train_step.py with TASER_PYTHON");
        let to_py = child.stdin.take();
        let from_py = std::io::BufReader::new(child.stdout.take().unwrap());
        TorchSide {
            child,
            to_py,
            from_py,
        }
    }

    /// Builds `row` in PyTorch, with the method's reference training
    /// attack (the suite's defaults for the data set), and runs its warm-up
    /// steps.
    fn start_row(&mut self, row: &Row, o: &Opts) {
        use std::io::Write;
        let pgd = settings(Method::PgdAt, row.data).attack.unwrap();
        let (shape, device) = (&row.data.input_shape, taser::device::device_name(o.device));
        let (precision, format) = (
            format!("{:?}", o.precision).to_lowercase(),
            format!("{:?}", o.format).to_lowercase(),
        );
        writeln!(
            self.to_py.as_mut().unwrap(),
            "{} {} {} {} {} {} {} {} {} {device} {precision} {format} {} {} {}",
            row.arch,
            method_name(row.method),
            row.variant,
            row.batch,
            shape[0],
            shape[1],
            shape[2],
            row.data.num_outputs,
            row.threads,
            pgd.threat.eps,
            pgd.step_size,
            pgd.steps
        )
        .unwrap();
        let answer = self.answer();
        assert_eq!(answer, "ready", "benches/train_step.py answer");
    }

    /// PyTorch's ms for one step of the row last started.
    fn step(&mut self) -> f64 {
        use std::io::Write;
        writeln!(self.to_py.as_mut().unwrap(), "step").unwrap();
        self.answer().parse().expect("benches/train_step.py answer")
    }

    fn answer(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.from_py.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn finish(mut self) {
        drop(self.to_py.take());
        self.child.wait().unwrap();
    }
}

fn main() {
    use clap::ValueEnum;
    let o = parse();
    // As the binaries do (RuntimeArgs::resolve); PyTorch's side keeps
    // glibc's defaults, as a user's script would.
    taser::runtime::retain_freed_memory();
    let cuda = o.device.is_cuda();
    let data_dir = std::env::var_os("TASER_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(data::default_data_dir);
    let digits = data::load(DatasetName::Digits, &data_dir, 0).expect(
        "digits data: run `make setup`, or set TASER_DATA_DIR to a folder with digits.csv.gz",
    );
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
            o.cnn_batch,
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
    if std::env::args().any(|a| a == "--fd-residual") {
        fd_residual::run(&cifar_like, &o);
        return;
    }
    if std::env::args().any(|a| a == "--side-by-side") {
        side_by_side(&digits, &cifar_like, batch, &o);
        return;
    }
    // The side-by-side variants on the whole batch, then the cheapest
    // first-order variant with the penalty on a fraction f of each batch
    // (`--stein-fraction`; its floor is ×(1 + f)).
    let one_sided = Some((Order::FirstOrder, Mode::Fd, Difference::Forward));
    let variants: Vec<_> = VARIANTS
        .iter()
        .map(|&(l, _, v)| (l.to_string(), v, 1.0))
        .chain(FRACTIONS.iter().map(|&f| {
            (
                format!("+ first-order, fd one-sided, f = {f}"),
                one_sided,
                f,
            )
        }))
        .collect();
    println!(
        "time per training step, device {} ({}), {} timed steps per row (after 2 warm-up steps)",
        taser::device::device_name(o.device),
        compute_label(&o),
        o.steps_label()
    );
    println!("paper (TASER Table 2, A10 GPU): standard ×2.45, adversarial methods ×1.17–×1.27");
    println!("training attacks: 10 PGD steps (pgd-at, trades, mart)");
    println!();
    println!("| model / data | batch | method | variant | ms/step | × method alone |");
    println!("|---|---|---|---|---|---|");
    let wanted = |m: &Method| {
        o.methods
            .iter()
            .any(|w| Method::from_str(w, true).ok() == Some(*m))
    };
    for (name, s, d, b, methods) in cases {
        if !o.models.contains(&s.arch.to_string()) {
            continue;
        }
        for &method in methods.iter().filter(|m| wanted(m)) {
            let mut base = 0.0;
            for (label, v, fraction) in &variants {
                let (v, fraction) = (*v, *fraction);
                let row = SuiteRow {
                    spec: &s,
                    data: d,
                    batch: b,
                    method,
                    variant: v,
                    fraction,
                };
                let secs = time_steps(&row, &o, &mut || {});
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
