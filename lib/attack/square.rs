//! Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), the
//! score-based black-box component of AutoAttack `standard`: 5000 queries,
//! p_init = 0.8 with the reference's piecewise-constant schedule of p
//! (AutoAttack runs it unrescaled), margin loss z_y − max_{j≠y} z_j, a
//! candidate accepted when it lowers the loss or misclassifies.
//!
//! L∞: vertical-stripe start x ± ε, then each query replaces a random s×s
//! square (s = round(√(p·n/c))) of every channel by ±ε of a random sign.
//! L2: a start of ±η-shaped squares on a 5×5 grid scaled to the sphere of
//! radius ε, then each query moves the perturbation's mass of one random
//! square into another (the reference's update with its η pattern).
//!
//! As in the reference, the square's position is drawn once per query for
//! the whole batch; the signs are drawn per sample and channel. Its offset
//! along an axis of length h with side s is drawn as the reference code
//! does by default ([`WindowRange::Reference`]: 0 … h − s − 1, so a square
//! smaller than the image never covers the last row or column), or from
//! every position ([`WindowRange::Full`]: 0 … h − s; `attack
//! --square-window-range full`). Inputs that
//! are not images `[B, C, H, W]` are treated as `[B, 1, 1, d]` with s ≤
//! min(H, W). Points already fooled stop querying.
use super::{correct_margin, mask_indices, per_sample, per_sample_norm, select_rows, Norm, Threat};
use crate::models::Model;
use tch::{Device, Kind, Tensor};

/// Settings of the Square Attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquareConfig {
    pub threat: Threat,
    pub n_queries: usize,
    pub p_init: f64,
    /// The range the square's offset is drawn from.
    pub window: WindowRange,
}

impl SquareConfig {
    /// AutoAttack `standard`'s settings (with the reference's offsets).
    pub fn standard(threat: Threat) -> SquareConfig {
        SquareConfig {
            threat,
            n_queries: 5000,
            p_init: 0.8,
            window: WindowRange::Reference,
        }
    }
}

/// The range a square window's offset is drawn from, along an axis of
/// length h with window side s ≤ h.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum WindowRange {
    /// 0 … h − s − 1 (0 when s = h), as the official AutoAttack code draws
    /// it (`random_int(0, h - s)`, a floor of a uniform draw in [0, h − s)):
    /// the last row and column are never moved by a square smaller than the
    /// image. What "AutoAttack standard" means in published numbers.
    #[default]
    Reference,
    /// 0 … h − s: every position of the window (a stronger attack than the
    /// reference; numbers are not comparable with published ones).
    Full,
}

impl WindowRange {
    /// A random offset for a window of side `s` on an axis of length `h`,
    /// from libtorch's generator.
    pub fn offset(self, h: i64, s: i64) -> i64 {
        let positions = match self {
            WindowRange::Reference => h - s,
            WindowRange::Full => h - s + 1,
        };
        random_below(positions)
    }
}

impl std::fmt::Display for WindowRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WindowRange::Reference => "reference",
            WindowRange::Full => "full",
        })
    }
}

/// The fraction p of pixels changed at query `it` (0-based): p_init halved
/// after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000.
pub fn p_selection(p_init: f64, it: usize) -> f64 {
    let div = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / div
}

fn random_sign(shape: &[i64], device: Device) -> Tensor {
    (Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0).sign()
}

/// A uniform integer in [0, n) from libtorch's generator (0 when n ≤ 1).
fn random_below(n: i64) -> i64 {
    if n <= 1 {
        0
    } else {
        Tensor::randint(n, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0])
    }
}

/// The reference's nested-rectangle pattern on an `rows × cols` grid,
/// normalised to unit Frobenius norm.
fn eta_rectangles(rows: usize, cols: usize) -> Vec<f64> {
    let mut delta = vec![0.0f64; rows * cols];
    if rows == 0 || cols == 0 {
        return delta;
    }
    let (xc, yc) = (rows as i64 / 2 + 1, cols as i64 / 2 + 1);
    let (mut c0, mut c1) = (xc - 1, yc - 1);
    for counter in 0..xc.max(yc) {
        let (r0, r1) = (c0.max(0), (c0 + 2 * counter + 1).min(rows as i64));
        let (q0, q1) = (c1.max(0), (c1 + 2 * counter + 1).min(cols as i64));
        for r in r0..r1 {
            for q in q0..q1 {
                delta[r as usize * cols + q as usize] += 1.0 / ((counter + 1) as f64).powi(2);
            }
        }
        c0 -= 1;
        c1 -= 1;
    }
    let norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        delta.iter_mut().for_each(|v| *v /= norm);
    }
    delta
}

/// The L2 update's s×s pattern: positive rectangles on the top half,
/// negative on the bottom, unit norm, transposed with probability ½.
fn eta(s: i64, device: Device) -> Tensor {
    let s_u = s as usize;
    let top = eta_rectangles(s_u / 2, s_u);
    let bottom = eta_rectangles(s_u - s_u / 2, s_u);
    let mut v: Vec<f64> = top;
    v.extend(bottom.iter().map(|b| -b));
    let t = Tensor::from_slice(&v).view([s, s]);
    let t = &t / t.square().sum(Kind::Double).sqrt().clamp_min(1e-12);
    let t = if Tensor::rand([1], (Kind::Float, Device::Cpu)).double_value(&[0]) > 0.5 {
        t.transpose(0, 1).contiguous()
    } else {
        t
    };
    t.to_kind(Kind::Float).to_device(device)
}

fn as_image(x: &Tensor) -> Tensor {
    if x.dim() == 4 {
        x.shallow_clone()
    } else {
        x.view([x.size()[0], 1, 1, -1])
    }
}

fn window(h: i64, w: i64, vh: i64, vw: i64, s: i64, device: Device) -> Tensor {
    let m = Tensor::zeros([1, 1, h, w], (Kind::Float, device));
    let _ = m.narrow(2, vh, s).narrow(3, vw, s).fill_(1.0);
    m
}

/// Runs the Square Attack on the points of `x` and returns the adversarial
/// batch (inside the threat set) and the mask of points misclassified.
pub fn square(model: &Model, x: &Tensor, y: &Tensor, cfg: &SquareConfig) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let shape = x.size();
    let x4 = as_image(&x.detach());
    let (n, c, h, w) = {
        let s = x4.size();
        (s[0], s[1], s[2], s[3])
    };
    let device = x.device();
    let eps = cfg.threat.eps;
    let n_features = (c * h * w) as f64;
    let in_shape: Vec<i64> = std::iter::once(-1)
        .chain(shape[1..].iter().copied())
        .collect();
    let query = |xq: &Tensor, yq: &Tensor| {
        correct_margin(&model.forward_t(&xq.view(in_shape.as_slice()), false), yq)
    };
    let mut x_best = match cfg.threat.norm {
        Norm::Linf => (&x4 + random_sign(&[n, c, 1, w], device) * eps).clamp(0.0, 1.0),
        Norm::L2 => {
            let delta = Tensor::zeros([n, c, h, w], (Kind::Float, device));
            let s = (h / 5).max(1);
            let start = (h - s * 5).max(0) / 2;
            let mut vh = start;
            for _ in 0..(h / s) {
                let mut vw = start;
                for _ in 0..(w / s) {
                    if vh + s <= h && vw + s <= w {
                        let patch =
                            eta(s, device).view([1, 1, s, s]) * random_sign(&[n, c, 1, 1], device);
                        let mut win = delta.narrow(2, vh, s).narrow(3, vw, s);
                        win += patch;
                    }
                    vw += s;
                }
                vh += s;
            }
            let norm = per_sample_norm(&delta, Norm::L2).clamp_min(1e-12);
            (&x4 + &delta / per_sample(&norm, &delta) * eps).clamp(0.0, 1.0)
        }
    };
    let mut margin_min = query(&x_best, y);
    for it in 0..cfg.n_queries {
        let idx = mask_indices(&margin_min.gt(0.0));
        let m = idx.numel() as i64;
        if m == 0 {
            break;
        }
        let xc = x4.index_select(0, &idx);
        let xbc = x_best.index_select(0, &idx);
        let yc = y.index_select(0, &idx);
        let mc = margin_min.index_select(0, &idx);
        let p = p_selection(cfg.p_init, it);
        let x_new = match cfg.threat.norm {
            Norm::Linf => {
                let s = ((p * n_features / c as f64).sqrt().round() as i64)
                    .max(1)
                    .min(h.min(w));
                let (vh, vw) = (cfg.window.offset(h, s), cfg.window.offset(w, s));
                let mut cand = xbc.copy();
                let mut win = cand.narrow(2, vh, s).narrow(3, vw, s);
                win.copy_(
                    &(xc.narrow(2, vh, s).narrow(3, vw, s)
                        + random_sign(&[m, c, 1, 1], device) * eps),
                );
                cand = cfg.threat.project(&cand, &xc);
                cand
            }
            Norm::L2 => {
                let mut s = ((p * n_features / c as f64).sqrt().round() as i64).max(3);
                if s % 2 == 0 {
                    s += 1;
                }
                let s = s.min(h.min(w));
                let delta = &xbc - &xc;
                let (vh, vw) = (cfg.window.offset(h, s), cfg.window.offset(w, s));
                let (vh2, vw2) = (cfg.window.offset(h, s), cfg.window.offset(w, s));
                let win1 = delta.narrow(2, vh, s).narrow(3, vw, s);
                let norm_win1 = win1
                    .square()
                    .sum_dim_intlist([-2i64, -1].as_slice(), true, None)
                    .sqrt();
                let mask =
                    window(h, w, vh, vw, s, device).maximum(&window(h, w, vh2, vw2, s, device));
                let norm_image = per_sample_norm(&delta, Norm::L2);
                let norm_windows = per_sample_norm(&(&delta * &mask), Norm::L2);
                let mut new =
                    eta(s, device).view([1, 1, s, s]) * random_sign(&[m, c, 1, 1], device);
                new += &win1 / (&norm_win1 + 1e-12);
                let budget = ((-norm_image.square() + eps * eps).clamp_min(0.0) / c as f64
                    + norm_windows.square())
                .sqrt();
                let new_norm = new
                    .square()
                    .sum_dim_intlist([-2i64, -1].as_slice(), true, None)
                    .sqrt();
                let new = &new / (new_norm + 1e-12) * per_sample(&budget, &new);
                let _ = delta.narrow(2, vh2, s).narrow(3, vw2, s).fill_(0.0);
                delta.narrow(2, vh, s).narrow(3, vw, s).copy_(&new);
                let norm = per_sample_norm(&delta, Norm::L2).clamp_min(1e-12);
                (&xc + &delta / per_sample(&norm, &delta) * eps).clamp(0.0, 1.0)
            }
        };
        let mg = query(&x_new, &yc);
        // Margin loss: lower is better; accept improvements (which include
        // every misclassification of a point not yet fooled).
        let improved = mg.lt_tensor(&mc).logical_or(&mg.le(0.0));
        margin_min = margin_min.index_copy(0, &idx, &mg.where_self(&improved, &mc));
        x_best = x_best.index_copy(0, &idx, &select_rows(&improved, &x_new, &xbc));
    }
    let fooled = margin_min.le(0.0);
    (x_best.view(shape.as_slice()), fooled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_offsets_follow_the_reference_by_default_and_reach_the_edge_when_full() {
        tch::manual_seed(3);
        let (h, s) = (8i64, 3i64);
        let draw =
            |range: WindowRange| -> Vec<i64> { (0..2000).map(|_| range.offset(h, s)).collect() };
        let reference = draw(WindowRange::default());
        assert_eq!(*reference.iter().max().unwrap(), h - s - 1);
        assert_eq!(*reference.iter().min().unwrap(), 0);
        let full = draw(WindowRange::Full);
        assert_eq!(*full.iter().max().unwrap(), h - s);
        assert_eq!(*full.iter().min().unwrap(), 0);
        // A window as large as the axis sits at 0 under either range.
        assert_eq!(WindowRange::Reference.offset(h, h), 0);
        assert_eq!(WindowRange::Full.offset(h, h), 0);
        assert_eq!(
            SquareConfig::standard(Threat {
                norm: Norm::Linf,
                eps: 0.1
            })
            .window,
            WindowRange::Reference
        );
    }

    #[test]
    fn p_schedule_matches_the_reference() {
        assert_eq!(p_selection(0.8, 0), 0.8);
        assert_eq!(p_selection(0.8, 10), 0.8);
        assert_eq!(p_selection(0.8, 11), 0.4);
        assert_eq!(p_selection(0.8, 200), 0.2);
        assert_eq!(p_selection(0.8, 4999), 0.8 / 128.0);
        assert_eq!(p_selection(0.8, 9000), 0.8 / 512.0);
    }

    #[test]
    fn eta_pattern_is_unit_norm_and_antisymmetric_in_sign() {
        tch::manual_seed(0);
        for s in [1i64, 3, 5, 7] {
            let e = eta(s, Device::Cpu);
            let n = e.square().sum(Kind::Double).double_value(&[]);
            assert!((n - 1.0).abs() < 1e-5, "s = {s}: ‖η‖² = {n}");
        }
        let e = eta(4, Device::Cpu);
        assert!(e.sum(Kind::Double).double_value(&[]).abs() < 1e-6);
    }
}
