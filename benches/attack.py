"""PyTorch side of `make bench`'s side-by-side attack-throughput table.

usage: attack.py CHECKPOINT POINTS EPS

CHECKPOINT is a cnn-small model.safetensors written by this suite's `train`
(its model.json beside it), loaded into the PyTorch definition of
benches/train_step.py with the checkpoint's input normalisation; POINTS a
safetensors file with `x` (float32 [N, C, H, W] in [0,1]) and `y` (int64
[N]); EPS the L∞ radius. Runs as a server so that the Rust bench can
interleave rows: reads lines `ATTACK N THREADS` on stdin (ATTACK: apgd-ce,
autoattack or spsa; the first N points) and answers each with
`SECONDS ROBUST` (the attack's wall time, and how many of the N points are
still classified correctly at the returned inputs).

The attacks, with this suite's settings (SPEC §6):
- apgd-ce: torchattacks.APGD, cross-entropy, 100 steps, ρ = 0.75, 1 restart;
- autoattack: torchattacks.AutoAttack `standard` (APGD-CE, APGD-T, FAB-T,
  Square 5000 queries), every iterative component at 100 steps as in the
  reference (torchattacks' own default is 10), 9 target classes;
- spsa: written here to SPEC §6 / lib/attack/spsa.rs: margin loss
  z_y − max_{j≠y} z_j from a zero start, Adam (lr 0.01, β = 0.9, 0.999,
  ε = 1e-8) on the SPSA gradient estimate with 128 Rademacher directions
  and δ = 0.01, 32 iterations, the perturbation clamped to the ε-ball and
  x + δ to [0,1] after each step; a point counts as fooled at the first
  misclassified iterate and stops there; at most 16384 model inputs per
  forward pass.
"""
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torchattacks
from safetensors.torch import load_file

from train_step import CnnSmall


class Checkpointed(nn.Module):
    """The suite's cnn-small: (x − norm.mean) / norm.std, then the body."""

    def __init__(self, path):
        super().__init__()
        spec = json.loads(Path(path).with_suffix(".json").read_text())["model"]
        if spec["arch"] != "cnn-small" or spec["activation"] != "relu":
            raise SystemExit(f"attack.py knows cnn-small with relu only, not {spec}")
        c, h, w = spec["input_shape"]
        weights = load_file(str(path))
        self.body = CnnSmall(c, h, w, spec["num_outputs"])
        self.body.load_state_dict({k: v for k, v in weights.items() if not k.startswith("norm.")})
        self.register_buffer("mean", weights["norm.mean"].view(1, -1, 1, 1))
        self.register_buffer("std", weights["norm.std"].view(1, -1, 1, 1))
        self.classes = spec["num_outputs"]

    def forward(self, x):
        return self.body((x - self.mean) / self.std)


def margin(z, y):
    z_y = z.gather(1, y[:, None])[:, 0]
    return z_y - z.scatter(1, y[:, None], float("-inf")).amax(1)


@torch.no_grad()
def spsa_gradient(model, x, y, delta=0.01, nb_sample=128, max_inputs=16384):
    b = x.shape[0]
    chunk = max(1, min(nb_sample, max_inputs // max(2 * b, 1)))
    grad, done = torch.zeros_like(x), 0
    while done < nb_sample:
        m = min(chunk, nb_sample - done)
        v = torch.randint(0, 2, (m, *x.shape), dtype=x.dtype) * 2 - 1
        probes = torch.cat([x[None] + delta * v, x[None] - delta * v]).view(2 * m * b, *x.shape[1:])
        loss = margin(model(probes), y.repeat(2 * m)).view(2 * m, b)
        diff = (loss[:m] - loss[m:]) / (2 * delta)
        grad += (v * diff.view(m, b, *[1] * (x.dim() - 1))).sum(0)
        done += m
    return grad / nb_sample


@torch.no_grad()
def spsa(model, x, y, eps, lr=0.01, nb_iter=32, beta1=0.9, beta2=0.999, adam_eps=1e-8):
    adv = x.clone()
    fooled = model(x).argmax(1) != y
    active = (~fooled).nonzero()[:, 0]
    pert = torch.zeros_like(x[active])
    m1, m2 = torch.zeros_like(pert), torch.zeros_like(pert)
    for t in range(1, nb_iter + 1):
        if active.numel() == 0:
            break
        xa, ya = x[active], y[active]
        g = spsa_gradient(model, xa + pert, ya)
        m1 = beta1 * m1 + (1 - beta1) * g
        m2 = beta2 * m2 + (1 - beta2) * g * g
        step = (m1 / (1 - beta1 ** t)) / ((m2 / (1 - beta2 ** t)).sqrt() + adam_eps)
        x_new = (xa + (pert - lr * step).clamp(-eps, eps)).clamp(0, 1)
        pert = x_new - xa
        wrong = model(x_new).argmax(1) != ya
        if wrong.any():
            adv[active[wrong]] = x_new[wrong]
            fooled[active[wrong]] = True
            keep = ~wrong
            active, pert, m1, m2 = active[keep], pert[keep], m1[keep], m2[keep]
    return adv


def autoattack(model, eps):
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                 n_classes=model.classes, seed=0)
    for component in aa._autoattack.attacks:
        if hasattr(component, "steps"):
            component.steps = 100
    return aa


def main():
    model = Checkpointed(sys.argv[1]).eval()
    points = load_file(sys.argv[2])
    eps = float(sys.argv[3])
    for line in sys.stdin:
        name, n, threads = line.split()
        torch.set_num_threads(int(threads))
        torch.manual_seed(0)
        x, y = points["x"][: int(n)], points["y"][: int(n)]
        if name == "apgd-ce":
            attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                       loss="ce", rho=0.75, seed=0)
        elif name == "autoattack":
            attack = autoattack(model, eps)
        elif name == "spsa":
            attack = lambda a, b: spsa(model, a, b, eps)
        else:
            raise SystemExit(f"unknown attack {name}")
        start = time.perf_counter()
        adv = attack(x, y)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            robust = int((model(adv).argmax(1) == y).sum())
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        print(f"{seconds:.4f} {robust}", flush=True)


if __name__ == "__main__":
    main()
