//! The TASER penalty (TASER §3, Algorithm 1; docs/METHOD.md, "The TASER penalty").
//!
//! For a scalar probe m(x) of the model (default: the smooth logit margin
//! m(x; y) = LSE_{j≠y} z_j − z_y of §3.3) and a score estimate s̃(x) ≈ ∇ log p(x),
//! the Langevin–Stein residual is
//!
//! ```text
//!   r(x) = Δm(x) + s̃(x)ᵀ∇ₓm(x)        (full, TASER eq. 1)
//!   r(x) =         s̃(x)ᵀ∇ₓm(x)        (first-order, TASER eq. 5)
//! ```
//!
//! and the penalty is R = (1/B) Σᵢ (rᵢ − c)² with centre c (Algorithm 1,
//! lines 9–13). Δm is estimated with K Rademacher probes (Hutchinson:
//! Δm ≈ (1/K) Σ_k v_kᵀ∇²m v_k) or computed exactly as the sum of d
//! Hessian–vector products (small inputs: tests and the toy).
//!
//! Two ways to differentiate (`--stein-mode`):
//! - `autograd` (the paper's): ∇ₓm with `create_graph`, Hessian–vector
//!   products by double backward;
//! - `fd` (finite differences, this suite's): with ŝ = s̃/‖s̃‖ and a unit
//!   direction u,
//!   s̃ᵀ∇m ≈ ‖s̃‖·[m(x+hŝ) − m(x−hŝ)]/2h and
//!   vᵀ∇²m v = ‖v‖²·uᵀ∇²m u ≈ ‖v‖²·[m(x+hu) − 2m(x) + m(x−hu)]/h², u = v/‖v‖,
//!   with every perturbed copy evaluated in one batched forward and no
//!   double backward. The step is the Euclidean length h of every
//!   displacement, so `--fd-step` means the same for both terms and for any
//!   input dimension d (a step along the unnormalised v would be h/√d).
//!
//! Agreement of the two modes. Central differences have truncation error
//! ‖s̃‖·h²·|m'''|/6 (first-order term) and ‖v‖²·h²·|m''''|/12 per probe
//! (Laplacian term), and rounding error of order ε·|m|/h and ‖v‖²·ε·|m|/h²,
//! ε the unit round-off. In double precision with h = 1e-3 on smooth
//! networks the rounding part is ~1e-10 and truncation dominates at
//! ~1e-6 relative, so the tests demand agreement to 1e-4 relative (residuals
//! and the penalty's parameter gradient). In single precision (ε ≈ 6e-8)
//! rounding dominates the Laplacian term, ~d·ε·|m|/h²; at the default
//! h = 1e-2 that is ~6e-4·d·|m|, which is why the exact-Laplacian and
//! low-dimensional uses should prefer autograd, while the first-order fd
//! term (error ~6e-6·|m|·‖s̃‖) is accurate at any d.
//!
//! Networks with kinks (ReLU, max-pooling) agree only where no kink lies
//! within h of x: on cnn-small (max-pool) in double precision the relative
//! gradient disagreement measured 2.0 at h = 1e-3 and 5e-9 at h = 1e-4. For
//! ReLU networks the Hessian is zero almost everywhere, so the autograd
//! Laplacian vanishes while the fd one sees the kinks' curvature: the two
//! modes regularise differently there, by construction.
//!
//! The penalty's forward uses BatchNorm in eval mode by default: in train
//! mode BatchNorm couples the samples of a batch, so ∇ₓ of the batch sum of
//! m would not be the per-sample gradient.
pub mod penalty;

use crate::data::Task;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The scalar probe of the model's output the residual is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// Smooth logit margin LSE_{j≠y} z_j − z_y (TASER §3.3; default).
    Margin,
    /// −z_y.
    Logit,
    /// log p_y = log softmax(z)_y.
    LogProb,
    /// p_y = softmax(z)_y (saturates; kept for comparison).
    Prob,
    /// The model's single output itself (regression; the toy's f).
    Output,
}

/// Full residual or its first-order part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Δm + s̃ᵀ∇m.
    Full,
    /// s̃ᵀ∇m.
    FirstOrder,
}

/// How derivatives are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Double backward (create_graph); the paper's.
    Autograd,
    /// Finite differences in one batched forward; no double backward.
    Fd,
}

/// How the Laplacian is obtained (full residual only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Laplacian {
    /// Hutchinson with K Rademacher probes.
    Hutchinson,
    /// Exact: the sum of d Hessian–vector products (d ≤ 1024).
    Exact,
}

/// Centre subtracted from the residuals before squaring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Center {
    /// The batch mean (optionally detached).
    Batch,
    /// A constant D estimated once on a calibration set.
    Global,
    /// No centring (the toy's plain λ·mean(r²)).
    None,
}

/// Largest input dimension for which the exact Laplacian is accepted.
pub const EXACT_LAPLACIAN_MAX_DIM: i64 = 1024;

/// Options of the residual computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualOptions {
    pub order: Order,
    pub mode: Mode,
    pub laplacian: Laplacian,
    /// Hutchinson probes K.
    pub probes: i64,
    /// Finite-difference step h (Euclidean length of each displacement).
    pub fd_step: f64,
    /// Central or one-sided (forward) difference for the fd first-order term.
    #[serde(default)]
    pub difference: Difference,
}

/// The finite difference of the first-order term (`--fd-difference`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Difference {
    /// ‖s̃‖·[m(x+hŝ) − m(x−hŝ)]/2h: truncation error O(h²), two copies.
    #[default]
    Central,
    /// ‖s̃‖·[m(x+hŝ) − m(x)]/h: truncation error ‖s̃‖·h·|m''|/2, one copy
    /// when m(x) is reused from the clean forward of the step.
    Forward,
}

impl ResidualOptions {
    pub fn check(&self, input_dim: i64) -> Result<()> {
        if self.probes < 1 {
            return Err(Error::invalid(
                "--hutchinson-probes",
                self.probes,
                "must be ≥ 1",
            ));
        }
        if !(self.fd_step > 0.0 && self.fd_step.is_finite()) {
            return Err(Error::invalid(
                "--fd-step",
                self.fd_step,
                "must be a positive number",
            ));
        }
        if self.order == Order::Full
            && self.laplacian == Laplacian::Exact
            && input_dim > EXACT_LAPLACIAN_MAX_DIM
        {
            return Err(Error::invalid(
                "--stein-laplacian",
                "exact",
                format!(
                    "needs d Hessian–vector products and d = {input_dim} > {EXACT_LAPLACIAN_MAX_DIM}; use hutchinson"
                ),
            ));
        }
        Ok(())
    }
}

/// The probe m of model outputs `out` (`[B, C]`) with labels `y` (`[B]`),
/// one value per sample. `Output` takes the single output of a regressor.
pub fn probe_values(out: &Tensor, y: &Tensor, probe: Probe) -> Tensor {
    match probe {
        Probe::Output => out.view([-1]),
        _ => {
            let y1 = y.view([-1, 1]);
            let z_y = out.gather(1, &y1, false).view([-1]);
            match probe {
                Probe::Margin => {
                    let mask = out
                        .zeros_like()
                        .scatter_value(1, &y1, 1.0)
                        .to_kind(Kind::Bool);
                    out.masked_fill(&mask, f64::NEG_INFINITY)
                        .logsumexp([1], false)
                        - z_y
                }
                Probe::Logit => -z_y,
                Probe::LogProb => out
                    .log_softmax(1, out.kind())
                    .gather(1, &y1, false)
                    .view([-1]),
                Probe::Prob => out.softmax(1, out.kind()).gather(1, &y1, false).view([-1]),
                Probe::Output => unreachable!(),
            }
        }
    }
}

/// Checks that `probe` fits the task (regressors have one output and no
/// labels to take a margin of).
pub fn check_probe(probe: Probe, task: Task) -> Result<()> {
    match (task, probe) {
        (Task::Regression, Probe::Output)
        | (Task::Classification, Probe::Margin | Probe::Logit | Probe::LogProb | Probe::Prob) => {
            Ok(())
        }
        (Task::Regression, p) => Err(Error::invalid(
            "--probe",
            format!("{p:?}").to_lowercase(),
            "regression data takes --probe output",
        )),
        (Task::Classification, _) => Err(Error::invalid(
            "--probe",
            "output",
            "classifiers take margin, logit, log-prob or prob",
        )),
        (Task::Posterior, _) => Err(Error::invalid(
            "--lambda",
            "> 0",
            "the TASER penalty is not defined for toy-score (its score field is not the data's); use --lambda 0",
        )),
    }
}

/// Sum over every dimension but the first: per-sample inner products.
fn per_sample_sum(t: &Tensor) -> Tensor {
    t.flatten(1, -1).sum_dim_intlist(1, false, t.kind())
}

/// Draws K Rademacher probes shaped like `x`: `[K, B, …]` of ±1, from
/// libtorch's generator (seeded per epoch by the trainer).
pub fn rademacher(k: i64, x: &Tensor) -> Tensor {
    let mut shape = vec![k];
    shape.extend(x.size());
    Tensor::randint(2, shape.as_slice(), (x.kind(), x.device())) * 2.0 - 1.0
}

/// The one-hot directions e_1…e_d for a batch shaped like `x`: `[d, B, …]`.
fn basis(x: &Tensor) -> Tensor {
    let size = x.size();
    let d: i64 = size[1..].iter().product();
    let eye = Tensor::eye(d, (x.kind(), x.device()));
    let mut shape = vec![d, 1];
    shape.extend(&size[1..]);
    eye.view(shape.as_slice())
        .expand([vec![d], size.clone()].concat().as_slice(), false)
}

/// Residual and its parts, one value per sample.
#[derive(Debug)]
pub struct Residual {
    pub residual: Tensor,
    pub first_order: Tensor,
    /// `None` for the first-order residual.
    pub laplacian: Option<Tensor>,
}

/// Computes r(x) for the per-sample probe `m(x, y)` (a function of a batch
/// of inputs and labels). `score` is s̃(x), shaped like `x`. `probes`: the
/// Hutchinson directions `[K, B, …]` (drawn with [`rademacher`] if `None`).
/// `create_graph`: keep the graph so that the result can be differentiated
/// with respect to the model's parameters (training); false for evaluation.
pub fn residual<F>(
    m: F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    opts: &ResidualOptions,
    probes: Option<&Tensor>,
    create_graph: bool,
) -> Result<Residual>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let inputs = ResidualInputs {
        x,
        y,
        score,
        probes,
        clean: None,
    };
    residual_of(m, &inputs, opts, create_graph)
}

/// The batch a residual is taken on.
pub struct ResidualInputs<'a> {
    /// Inputs `[B, …]`.
    pub x: &'a Tensor,
    /// Labels `[B]`.
    pub y: &'a Tensor,
    /// s̃(x), shaped like `x`.
    pub score: &'a Tensor,
    /// Hutchinson directions `[K, B, …]` (drawn with [`rademacher`] if `None`).
    pub probes: Option<&'a Tensor>,
    /// m(x) `[B]` from a forward the caller made anyway, in the same mode as
    /// `m` (reused by fd for the one-sided difference and the Laplacian's
    /// centre term, saving B forwards; ignored by autograd).
    pub clean: Option<&'a Tensor>,
}

/// [`residual`] on [`ResidualInputs`] (with the option of reusing m(x)).
pub fn residual_of<F>(
    m: F,
    inputs: &ResidualInputs,
    opts: &ResidualOptions,
    create_graph: bool,
) -> Result<Residual>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let (x, y, score) = (inputs.x, inputs.y, inputs.score);
    if score.size() != x.size() {
        return Err(Error::invalid(
            "score",
            format!("{:?}", score.size()),
            format!("must have the shape of the inputs {:?}", x.size()),
        ));
    }
    let directions = match (opts.order, opts.laplacian) {
        (Order::FirstOrder, _) => None,
        (Order::Full, Laplacian::Exact) => Some(basis(x)),
        (Order::Full, Laplacian::Hutchinson) => Some(match inputs.probes {
            Some(p) => p.shallow_clone(),
            None => rademacher(opts.probes, x),
        }),
    };
    match (opts.mode, opts.laplacian, &directions) {
        (Mode::Autograd, Laplacian::Hutchinson, Some(dirs)) => {
            residual_autograd_batched(&m, x, y, score, dirs, create_graph)
        }
        (Mode::Autograd, _, _) => residual_autograd(
            &m,
            x,
            y,
            score,
            directions.as_ref(),
            opts.laplacian,
            create_graph,
        ),
        (Mode::Fd, _, _) => residual_fd(&m, x, y, score, directions.as_ref(), opts, inputs.clean),
    }
}

/// Autograd residual with the K Hutchinson probes in one pass: the batch
/// is repeated K times (`[K·B, …]`), one forward, one gradient and one
/// double backward of Σ_k v_kᵀ∇m(x_k) give every v_kᵀ∇²m v_k at once;
/// the same value as K separate Hessian–vector products (a test checks it).
fn residual_autograd_batched<F>(
    m: &F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    dirs: &Tensor,
    create_graph: bool,
) -> Result<Residual>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let (k, b) = (dirs.size()[0], x.size()[0]);
    let mut reps = vec![k];
    reps.extend(std::iter::repeat_n(1, x.dim() - 1));
    let xg = x.detach().repeat(reps.as_slice()).set_requires_grad(true);
    let values = m(&xg, &y.repeat([k]));
    let grad = Tensor::f_run_backward(&[values.sum(values.kind())], &[&xg], true, true)?
        .pop()
        .expect("one gradient");
    let v = dirs.flatten(0, 1);
    let hv = Tensor::f_run_backward(&[(&grad * &v).sum(grad.kind())], &[&xg], true, create_graph)?
        .pop()
        .expect("K Hessian-vector products");
    let first_order = per_sample_sum(&(grad.narrow(0, 0, b) * score));
    let lap = per_sample_sum(&(hv * &v))
        .view([k, b])
        .sum_dim_intlist(0, false, x.kind())
        / k as f64;
    let (first_order, lap) = if create_graph {
        (first_order, lap)
    } else {
        (first_order.detach(), lap.detach())
    };
    Ok(Residual {
        residual: &first_order + &lap,
        first_order,
        laplacian: Some(lap),
    })
}

fn residual_autograd<F>(
    m: &F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    directions: Option<&Tensor>,
    laplacian: Laplacian,
    create_graph: bool,
) -> Result<Residual>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let xg = x.detach().set_requires_grad(true);
    let values = m(&xg, y);
    // Samples are independent (BatchNorm in eval mode), so the gradient of
    // the batch sum is the per-sample gradient.
    let need_graph = create_graph || directions.is_some();
    let grad = Tensor::f_run_backward(&[values.sum(values.kind())], &[&xg], true, need_graph)?
        .pop()
        .expect("one gradient");
    let first_order = per_sample_sum(&(&grad * score));
    let lap = match directions {
        None => None,
        Some(dirs) => {
            let n = dirs.size()[0];
            let mut quadratic_forms = Vec::with_capacity(n as usize);
            for k in 0..n {
                let v = dirs.get(k);
                let hv = Tensor::f_run_backward(
                    &[(&grad * &v).sum(grad.kind())],
                    &[&xg],
                    true,
                    create_graph,
                )?
                .pop()
                .expect("one Hessian-vector product");
                quadratic_forms.push(per_sample_sum(&(hv * &v)));
            }
            let total = Tensor::stack(&quadratic_forms, 0).sum_dim_intlist(0, false, x.kind());
            Some(match laplacian {
                Laplacian::Exact => total,
                Laplacian::Hutchinson => total / n as f64,
            })
        }
    };
    let (first_order, lap) = if create_graph {
        (first_order, lap)
    } else {
        (first_order.detach(), lap.map(|l| l.detach()))
    };
    Ok(Residual {
        residual: match &lap {
            Some(l) => &first_order + l,
            None => first_order.shallow_clone(),
        },
        first_order,
        laplacian: lap,
    })
}

fn residual_fd<F>(
    m: &F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    directions: Option<&Tensor>,
    opts: &ResidualOptions,
    clean: Option<&Tensor>,
) -> Result<Residual>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let (b, h) = (x.size()[0], opts.fd_step);
    let mut bshape = vec![b];
    bshape.extend(std::iter::repeat_n(1, x.dim() - 1));
    let s_norm = per_sample_sum(&score.square()).sqrt();
    // ŝ = s/‖s‖, and 0 where the score vanishes (its term is then 0 anyway).
    let s_hat = score / s_norm.clamp_min(1e-30).view(bshape.as_slice());
    let one_sided = opts.difference == Difference::Forward;
    // m(x) is needed by the one-sided difference and the Laplacian; it is
    // evaluated in the batched forward unless the caller passes it.
    let need_m0 = one_sided || directions.is_some();
    let eval_m0 = need_m0 && clean.is_none();
    // Displacements of the batched forward (each `[B, …]`, length h):
    // [0 if m(x) is evaluated here], +ŝ, [−ŝ if central], ±u_k per probe.
    let mut offsets = Vec::new();
    if eval_m0 {
        offsets.push(x.zeros_like());
    }
    offsets.push(s_hat.shallow_clone());
    if !one_sided {
        offsets.push(-&s_hat);
    }
    let first_dir = offsets.len() as i64;
    let dir_sq_norms = directions.map(|dirs| {
        let n = dirs.size()[0];
        let sq = dirs
            .flatten(2, -1)
            .square()
            .sum_dim_intlist(2, false, dirs.kind()); // [n, B]
        let mut ushape = vec![n, b];
        ushape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let unit = dirs / sq.sqrt().view(ushape.as_slice());
        for k in 0..n {
            let u = unit.get(k);
            offsets.push(-&u);
            offsets.push(u);
        }
        sq
    });
    let n_copies = offsets.len() as i64;
    // One allocation for every copy: x broadcast against the stacked
    // displacements, flattened to a batch of n_copies·B.
    let copies = (Tensor::stack(&offsets, 0) * h + x.unsqueeze(0)).flatten(0, 1);
    let values = m(&copies, &y.repeat([n_copies])).view([n_copies, b]);
    let m0 = match clean {
        Some(c) if need_m0 => c.shallow_clone(),
        _ => values.get(0),
    };
    let plus = values.get(first_dir - if one_sided { 1 } else { 2 });
    let first_order = if one_sided {
        (plus - &m0) * &s_norm / h
    } else {
        (plus - values.get(first_dir - 1)) * &s_norm / (2.0 * h)
    };
    let lap = dir_sq_norms.map(|sq| {
        let n_dirs = sq.size()[0];
        let seconds = (values
            .narrow(0, first_dir, 2 * n_dirs)
            .view([n_dirs, 2, b])
            .sum_dim_intlist(1, false, x.kind())
            - m0.unsqueeze(0) * 2.0)
            / (h * h)
            * &sq;
        let total = seconds.sum_dim_intlist(0, false, x.kind());
        match opts.laplacian {
            Laplacian::Exact => total,
            Laplacian::Hutchinson => total / n_dirs as f64,
        }
    });
    Ok(Residual {
        residual: match &lap {
            Some(l) => &first_order + l,
            None => first_order.shallow_clone(),
        },
        first_order,
        laplacian: lap,
    })
}

#[cfg(test)]
mod tests;
