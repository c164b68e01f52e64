"""gpu-check's measuring steps: resnet18 epochs in each numerical mode, the
fd vs autograd residual, peak memory per training step, the bench rows."""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASER = ["--lambda", "1", "--stein-order", "first-order", "--score-source", "gaussian-std"]
BENCH_ROW = re.compile(r"^\| (cnn-small|resnet18) ")
RESIDUAL = re.compile(r"^fd-residual: tf32 (off|on), .*batch (\d+), vs f64 autograd: fd median (\S+) "
                      r"p90 (\S+), autograd median (\S+) p90 (\S+)$")
# The float32 autograd residual must match the float64 one this closely
# (median relative error; TF32 off): a check of the reference itself.
AUTOGRAD_TOLERANCE = 1e-3


def last_metric(r, a, run, column):
    """`column` of RUN's last epoch (`report run`; None when absent or not a number)."""
    record = r.run_record(a.bin, os.path.join(a.out, run))
    v = (record or {}).get("last_epoch") or {}
    return v.get(column) if isinstance(v.get(column), (int, float)) else None


def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return f"×{a / b:.2f}" if a and b and a > 0 and b > 0 else "–"


def resnet_runs(r, a, s):
    """resnet18 for one epoch in each mode; returns the standard and TASER
    epoch seconds and the step results of those two runs."""
    common = [f"{a.bin}/train", "--device", a.device, "--dataset", "cifar10", "--data-dir",
              f"{a.out}/cifar", "--model", "resnet18", "--epochs", "1", "--batch-size",
              str(s["batch"]), "--lr", "0.05"]
    runs = [("standard", "std", []), ("+ TASER first-order", "taser", TASER), ("--tf32", "tf32", ["--tf32"]),
            ("--precision bf16", "bf16", ["--precision", "bf16"]),
            ("--memory-format channels-last", "cl", ["--memory-format", "channels-last"]),
            ("bf16 + channels-last", "bf16-cl", ["--precision", "bf16", "--memory-format", "channels-last"])]
    results = {run: r.step(f"train resnet18 1 epoch, {label}", run, common + flags + ["--out", f"{a.out}/{run}"])
               for label, run, flags in runs}
    # f32 vs TF32 vs bf16 on one seed: train_loss of the epoch and its relative gap to f32.
    f = last_metric(r, a, "std", "train_loss")
    cells = [f"f32 {fmt(f, '.4f')}"]
    for run in ("tf32", "bf16"):
        v = last_metric(r, a, run, "train_loss")
        gap = f"{v:.4f} (rel. gap {abs(v - f) / max(abs(f), 1e-12):.1e})" if None not in (v, f) else "–"
        cells.append(f"{run} {gap}")
    r.add("… train_loss, one seed: " + ", ".join(cells))
    secs = {run: last_metric(r, a, run, "seconds") for run in ("std", "taser", "bf16", "cl", "bf16-cl")}
    r.add(f"… epoch seconds (per-epoch log): standard {fmt(secs['std'])}, TASER {fmt(secs['taser'])}, "
          f"bf16 {fmt(secs['bf16'])}, channels-last {fmt(secs['cl'])}, both {fmt(secs['bf16-cl'])}")
    return secs["std"], secs["taser"], {run: results[run] for run in ("std", "taser")}


def bench_env(r, a):
    """The bench's environment: digits, and the python and script of its PyTorch side."""
    return dict(r.env, TASER_PYTHON=sys.executable, TASER_DATA_DIR=a.data_dir,
                TASER_BENCH_PY=os.path.join(ROOT, "benches", "train_step.py"))


def fd_residual(r, a, s):
    """The bench's --fd-residual: fd and autograd (float32) against float64 autograd."""
    b = s["residual_batch"]
    res = r.step(f"fd vs autograd first-order residual (resnet18 silu, one batch of {b})", "fd-residual",
                 [a.bench, "--device", a.device, "--fd-residual", "--batch", str(b)], bench_env(r, a))
    if not res.ok:
        return
    text = open(os.path.join(a.out, "logs", "fd-residual.log"), errors="replace").read().splitlines()
    found = {m.group(1): m.groups() for m in map(RESIDUAL.match, text) if m}
    if "off" not in found:
        r.add("… fd residual: no `fd-residual: tf32 off` line in logs/fd-residual.log", status="FAILED")
        return
    for state in ("off", "on"):
        if state not in found:
            r.add(f"… TF32 {state}: n/a (TF32 exists on CUDA devices only)")
            continue
        _, _, fd, fd90, ag, ag90 = found[state]
        cell = (f"… TF32 {state}, vs f64 autograd (median rel. error, p90): fd {fd} ({fd90}), "
                f"autograd {ag} ({ag90})")
        if state == "on":
            cell += f"; fd error ×{float(fd) / max(float(found['off'][2]), 1e-30):.0f} the TF32-off one"
            r.add(cell)
        else:
            ok = float(ag) < AUTOGRAD_TOLERANCE
            r.add(cell, status="ok" if ok else f"FAILED (f32 autograd ≥ {AUTOGRAD_TOLERANCE:g} from f64)")


def memory(r, a, s, quick_runs):
    """Peak memory of one training step (one epoch of B images at batch B) of
    resnet18 and wrn-34-10, each ± the first-order penalty. `quick_runs`
    (--quick): step 4's standard and TASER results, already one resnet18 step
    at batch B on B images, taken as resnet18's rows instead of new runs."""
    note = " (--quick: small batch)" if a.quick else ""
    variants = (("standard", "std", []), ("+ first-order penalty", "taser", TASER))
    resnet_batch = s["batch"] if quick_runs else s["mem_batch"]
    for model, b in (("resnet18", resnet_batch), ("wrn-34-10", s["mem_batch"])):
        row = f"peak memory: {model} b={b}{note}, one step, "
        if model == "resnet18" and quick_runs:
            for label, run, _ in variants:
                res = quick_runs[run]
                r.add(row + label + " (step 4's run)", None, "ok" if res.ok else f"FAILED (logs/{run}.log)",
                      peak=res.peak)
            continue
        data = f"{a.out}/mem-cifar-{b}"
        if not os.path.isdir(data):
            r.step(f"CIFAR-shaped data for the memory rows ({b} / {b})", f"mem-data-{b}",
                   [sys.executable, os.path.join(HERE, "cifar_shaped.py"), data, str(b), str(b)])
        for label, run, flags in variants:
            name = f"mem-{model}-{run}"
            r.step(row + label, name,
                   [f"{a.bin}/train", "--device", a.device, "--dataset", "cifar10", "--data-dir", data,
                    "--model", model, "--epochs", "1", "--batch-size", str(b), "--eval-batch-size", str(b),
                    "--out", f"{a.out}/{name}"] + flags)


def bench_rows(r, out, log, tag):
    """The side-by-side rows: | model | batch | method | variant | suite | PyTorch | ratio | × alone |."""
    path = os.path.join(out, "logs", f"{log}.log")
    if not os.path.isfile(path):
        return
    for line in open(path, errors="replace"):
        if BENCH_ROW.match(line):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            r.add(f"bench {tag}: {c[0]} b={c[1]} {c[2]} {c[3]}", None, "", c[4], c[5], c[6], c[7])


def adv_rows(r, out):
    """The suite-only PGD-AT rows; returns the × alone of `+ first-order, fd`."""
    path, first = os.path.join(out, "logs", "bench-adv.log"), ""
    if not os.path.isfile(path):
        return first
    for line in open(path, errors="replace"):
        if BENCH_ROW.match(line):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            r.add(f"bench: {c[0]} b={c[1]} {c[2]} {c[3]}", None, "", c[4], "", "", c[5])
            if c[3] == "+ first-order, fd":
                first = c[5]
    return first


def bench(r, a, s, std_s, taser_s):
    """The side-by-side bench rows and the overhead rows beside the paper's."""
    if not a.bench or not os.access(a.bench, os.X_OK):
        r.add("bench rows", status="FAILED (no bench binary: make dist ships bin/bench-train-step; "
              "in the repository cargo bench --no-run --bench train_step)")
    else:
        env = bench_env(r, a)
        args = [a.bench, "--device", a.device, "--batch", str(s["bench_batch"]),
                "--cnn-batch", str(s["cnn_batch"])]
        steps = s["steps"]
        r.step("bench side by side, f32", "bench-f32", args + ["--steps", str(steps), "--side-by-side"], env)
        r.step("bench side by side, resnet18, bf16 + channels-last", "bench-bf16-cl",
               args + ["--steps", str(steps), "--side-by-side", "--models", "resnet18", "--precision",
                       "bf16", "--memory-format", "channels-last"], env)
        # PGD-AT steps cost 11 forward/backward passes: half the timed steps.
        r.step(f"bench {s['adv_model']}, PGD-AT ± TASER (suite)", "bench-adv",
               args + ["--steps", str(max(steps // 2, 1)), "--methods", "pgd-at", "--models",
                       s["adv_model"]], env)
    bench_rows(r, a.out, "bench-f32", "f32")
    bench_rows(r, a.out, "bench-bf16-cl", "bf16-cl")
    adv_first = adv_rows(r, a.out)
    first = ""
    path = os.path.join(a.out, "logs", "bench-f32.log")
    if os.path.isfile(path):
        for line in open(path, errors="replace"):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            if BENCH_ROW.match(line) and c[0].startswith("resnet18") and c[2] == "standard" \
                    and c[3] == "+ first-order, autograd":
                first = c[7]
    r.add("overhead: TASER first-order / standard, resnet18 epoch", None, "", "", "", "",
          ratio(taser_s, std_s), "×2.45")
    r.add("overhead: + first-order autograd / alone, resnet18 step (bench)", None, "", "", "", "",
          first or "–", "×2.45")
    r.add(f"overhead: PGD-AT + first-order fd / PGD-AT, {s['adv_model']} step (bench)", None, "", "", "",
          "", adv_first or "–", "×1.17–1.27")
