"""gpu-check: one command that checks a GPU node with the suite's binaries and
PyTorch but no Rust (scripts/gpu-check.sh finds a python and runs this file).

Run from `make dist`'s folder (dist/scripts/) or from the repository
(scripts/, against target/release). Steps, each under --step-timeout:
  1. the binaries see the device (train cnn-small on digits, 1 epoch; a
     missing CUDA device stops here, exit 1); the versions and numerical
     state that run recorded; two --deterministic runs of one seed, whose
     checkpoints must be byte-identical
  2. MPI ranks take their node-local GPU (`sweep devices` under mpirun,
     one rank per GPU; else rank 0 alone)
  3. CIFAR-shaped data (cifar_shaped.py)
  4. resnet18, 1 epoch: standard; + TASER first-order; --tf32;
     --precision bf16; --memory-format channels-last; both (the f32 / TF32 /
     bf16 train losses of one seed side by side)
  5. fd vs autograd first-order residual on one batch, TF32 off and (CUDA)
     on (the train_step bench's --fd-residual; reference: f64 autograd)
  6. peak memory of one training step of resnet18 and wrn-34-10 at batch 128
     (--quick: resnet18 at 8, step 4's runs; wrn-34-10 at 2), each ± the
     first-order penalty
  7. AutoAttack (standard, L-inf 8/255) of the standard model
  8. the side-by-side bench rows (suite vs PyTorch, benches/train_step.py):
     f32, then bf16 + channels-last on resnet18; PGD-AT ± TASER (suite)
then ONE table: step, seconds, status, bench timings, the TASER paper's
overheads beside ours, and each step's peak memory (CUDA: the process's
memory as nvidia-smi lists it, which includes the CUDA context and what
libtorch's caching allocator holds; CPU: the process's peak RSS).
Exit 0 when every step passed, 1 when one failed (or the device is
missing), 2 for bad usage. Needs only the standard library; torch is used
by the child processes (cifar_shaped.py, benches/train_step.py).
"""
import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_check_run import Runner  # noqa: E402
from gpu_check_steps import bench, fd_residual, memory, resnet_runs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse(argv):
    p = argparse.ArgumentParser(
        prog="gpu-check.sh",
        description="Checks a GPU node (or, with --device cpu --quick, this machine); "
        "budget < 8 min on one H100/H200 (full), a few minutes on 2 CPU cores (--quick).",
        epilog="Environment: TASER_PYTHON (gpu-check.sh's python: default the project's "
        ".venv/bin/python, else python3) must import torch; it runs the data writer and the "
        "PyTorch bench rows, and gives torch/lib for the binaries.",
    )
    p.add_argument("--device", default="cuda:0", help="device to check: cuda:N or cpu (default cuda:0)")
    p.add_argument("--quick", action="store_true",
                   help="the same steps, tiny (one resnet18 step at batch 8, 1-step bench rows at "
                   "batch 2 / 32, 4 AutoAttack points, cnn-small adversarial rows, the fd residual "
                   "on 8 images, memory rows at batch 8 (resnet18) and 2 (wrn-34-10)); "
                   "with --device cpu it runs in `make test`")
    p.add_argument("--out", help="where runs and logs go (default: a new /tmp/gpu-check.XXXXXX)")
    p.add_argument("--bin", help="the suite's binaries (default: ../bin beside this script's folder, "
                   "i.e. dist/bin, else ../target/release)")
    p.add_argument("--bench", help="the train_step bench binary (default: BIN/bench-train-step, else "
                   "the newest target/release/deps/train_step-*)")
    p.add_argument("--data-dir", help="folder with digits.csv.gz (default: ../data/cache)")
    p.add_argument("--step-timeout", type=float,
                   help="seconds each step may take (default 600; 300 with --quick)")
    p.add_argument("--record", nargs="?", const=os.path.join(ROOT, "analysis", "gpu-check"),
                   metavar="DIR", help="GPU only: also write the table to DIR/<date>-<gpu name>.md "
                   "(default DIR: analysis/gpu-check beside this script's folder)")
    a = p.parse_args(argv)
    if not re.fullmatch(r"cpu|cuda:[0-9]+", a.device):
        p.error(f"--device '{a.device}': expected cpu or cuda:N")
    if a.record and a.device == "cpu":
        p.error("--record keeps GPU results (analysis/gpu-check/); drop it with --device cpu")
    if a.step_timeout is not None and a.step_timeout <= 0:
        p.error("--step-timeout must be a positive number of seconds")
    return a


def die(msg, code=2):
    print(f"gpu-check: {msg}", file=sys.stderr)
    sys.exit(code)


def locate(a):
    """Fills in the defaults of the paths; exits 2 when one is missing."""
    if not a.bin:
        a.bin = os.path.join(ROOT, "bin") if os.access(os.path.join(ROOT, "bin", "train"), os.X_OK) \
            else os.path.join(ROOT, "target", "release")
    if not a.bench:
        shipped = os.path.join(a.bin, "bench-train-step")
        deps = os.path.join(ROOT, "target", "release", "deps")
        built = [os.path.join(deps, f) for f in os.listdir(deps)
                 if f.startswith("train_step-") and not f.endswith(".d")] if os.path.isdir(deps) else []
        a.bench = shipped if os.access(shipped, os.X_OK) else max(built, key=os.path.getmtime, default="")
    a.data_dir = a.data_dir or os.path.join(ROOT, "data", "cache")
    a.out = a.out or tempfile.mkdtemp(prefix="gpu-check.", dir="/tmp")
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    for b in ("train", "attack", "sweep"):
        if not os.access(os.path.join(a.bin, b), os.X_OK):
            die(f"no {a.bin}/{b}; build first (make build) or pass --bin DIR")
    if not os.path.isfile(os.path.join(a.data_dir, "digits.csv.gz")):
        die(f"no digits.csv.gz in {a.data_dir}; pass --data-dir (make data fetches it)")
    if a.step_timeout is None:
        a.step_timeout = 300.0 if a.quick else 600.0


def torch_info():
    """(torch version, GPUs python's torch sees, torch/lib) from this python."""
    code = ("import torch, os; print(torch.__version__, torch.cuda.device_count(), "
            "os.path.join(os.path.dirname(torch.__file__), 'lib'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"'{sys.executable}' cannot import torch; set TASER_PYTHON to a python with torch 2.11.0")
    version, gpus, lib = r.stdout.split()
    return version, int(gpus), lib


def child_env(torch_lib):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # dist/lib holds the libraries the node may lack; torch/lib is the node's libtorch.
    if os.path.isdir(os.path.join(ROOT, "lib")):
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = ":".join([os.path.join(ROOT, "lib"), torch_lib] + ([old] if old else []))
    return env


def sizes(quick):
    """The runs' sizes. --quick: one resnet18 step at batch 8 on 8 images (those
    runs are also the resnet18 memory rows), wrn-34-10's memory rows at batch 2."""
    keys = "n_train n_test batch n_eval steps bench_batch cnn_batch adv_model residual_batch mem_batch"
    vals = (8, 8, 8, 4, 1, 2, 32, "cnn-small", 8, 2) if quick else \
        (50000, 10000, 128, 64, 20, 256, 256, "resnet18", 128, 128)
    return dict(zip(keys.split(), vals))


def device_check(r, a, torch_version, torch_gpus):
    """Step 1's first run; exits 1 when the binaries cannot use the device."""
    log = os.path.join(a.out, "logs", "device-check.log")
    run = os.path.join(a.out, "device-check")
    res = r.run("binaries see device", "device-check",
                [f"{a.bin}/train", "--device", a.device, "--dataset", "digits", "--data-dir", a.data_dir,
                 "--model", "cnn-small", "--epochs", "1", "--batch-size", "256", "--out", run])
    text = open(log, errors="replace").read()
    if not res.ok:
        if a.device != "cpu" and "CUDA device" in text:
            first = next((l for l in text.splitlines() if "error" in l.lower()), "")
            die(f"the suite's binaries see no {a.device}: {first}\n"
                f"gpu-check: python's torch {torch_version} sees {torch_gpus} GPU(s). Run on a GPU node "
                "whose python3 has the\n  CUDA build of torch 2.11.0 (this script puts its torch/lib "
                "and dist/lib on LD_LIBRARY_PATH),\n  or check another device with --device cpu.", 1)
        die("the device check failed:\n" + "\n".join(text.splitlines()[-5:]), 1)
    record = r.run_record(a.bin, run)
    if record is None:
        die(f"the device check trained, but `report run {run}` cannot read its record", 1)
    meta = record["sidecar"]
    if meta["runtime"]["device"]["device"] != a.device:
        die(f"the device check trained, but not on {a.device} (`report run {run}` says "
            f"{meta['runtime']['device']['device']})", 1)
    r.add(f"binaries see {a.device} (cnn-small/digits, 1 epoch)", res.seconds, "ok", peak=res.peak)
    d, n = meta["runtime"]["device"], meta["runtime"]["numerics"]
    where = (f", cc {d['compute_capability']}, {d['memory_mib']} MiB, driver {d['driver']}"
             if d["compute_capability"] else f", {d['threads']} threads")
    r.add(f"versions: {d['name']}{where}; torch {d['torch']}, CUDA {d['cuda'] or '–'}, "
          f"cuDNN {d['cudnn'] or '–'}")
    r.add(f"numerics: tf32 {n['tf32']} (conv {n['cuda_conv_fp32']}, matmul {n['cuda_matmul_fp32']}), "
          f"deterministic {n['deterministic']}, cudnn benchmark {n['cudnn_benchmark']}")
    return d


def determinism(r, a):
    det = [f"{a.bin}/train", "--device", a.device, "--dataset", "digits", "--data-dir", a.data_dir,
           "--model", "cnn-small", "--epochs", "1", "--seed", "3", "--deterministic"]
    for k in (1, 2):
        r.step(f"train --deterministic, run {k}", f"det{k}", det + ["--out", f"{a.out}/det{k}"])
    files = [r.final_weights(a.bin, f"{a.out}/det{k}") for k in (1, 2)]
    same = all(files) and open(files[0], "rb").read() == open(files[1], "rb").read()
    r.add("… two --deterministic runs: checkpoints byte-identical", status="ok" if same else "FAILED")


def ranks(r, a, torch_gpus):
    # One rank per GPU; on the CPU two ranks show the rule (both take cpu).
    n = 2 if a.device == "cpu" else max(torch_gpus, 1)
    alone = subprocess.run([f"{a.bin}/sweep", "devices"], capture_output=True, text=True, env=r.env)
    if "built without MPI" in alone.stdout + alone.stderr:
        r.add("MPI ranks → node-local device: not checked, this sweep is built without MPI (make dist; "
              "grids run as job arrays, or `make sweep-mpi` on a login node adds MPI)", status="skipped")
        return
    mpirun = shutil.which("mpirun")
    if mpirun:
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True)
        flags = ["--oversubscribe"] if "Open MPI" in version.stdout + version.stderr else []
        r.step(f"MPI ranks → node-local device ({n} rank(s))", "ranks",
               [mpirun] + flags + ["-np", str(n), f"{a.bin}/sweep", "devices"])
    else:
        r.step("rank → device (no mpirun: rank 0 alone)", "ranks", [f"{a.bin}/sweep", "devices"])
    log = os.path.join(a.out, "logs", "ranks.log")
    if os.path.isfile(log):
        lines = [l.split() for l in open(log).read().splitlines()[1:]]
        picks = ", ".join(f"rank {f[0]} → {f[5]}" for f in lines if len(f) == 6)
        if n == 1 and a.device != "cpu":
            picks += " (one GPU: rank 0 → cuda:0 is the whole check)"
        r.add(f"… ranks' devices: {picks}")


def main(argv):
    a = parse(argv)
    locate(a)
    torch_version, torch_gpus, torch_lib = torch_info()
    s = sizes(a.quick)
    r = Runner(a.out, a.device, a.step_timeout, child_env(torch_lib))
    print(f"gpu-check: python torch {torch_version} sees {torch_gpus} GPU(s); binaries in {a.bin}; "
          f"runs in {a.out}", file=sys.stderr)
    device = device_check(r, a, torch_version, torch_gpus)
    determinism(r, a)
    ranks(r, a, torch_gpus)
    r.step(f"CIFAR-shaped data ({s['n_train']} / {s['n_test']}, cifar_shaped.py)", "data",
           [sys.executable, os.path.join(HERE, "cifar_shaped.py"), f"{a.out}/cifar",
            str(s["n_train"]), str(s["n_test"])])
    std_s, taser_s, runs = resnet_runs(r, a, s)
    fd_residual(r, a, s)
    memory(r, a, s, runs if a.quick else None)
    std_weights = r.final_weights(a.bin, f"{a.out}/std")
    r.step(f"AutoAttack (aa, L∞ 8/255) on {s['n_eval']} points", "aa",
           [f"{a.bin}/attack", "--device", a.device, "--checkpoint", std_weights or f"{a.out}/std",
            "--data-dir", f"{a.out}/cifar", "--attacks", "aa", "--eps", "0.0313725",
            "--n-eval", str(s["n_eval"]), "--out", f"{a.out}/aa"])
    bench(r, a, s, std_s, taser_s)
    r.add("total", r.since_start(), "ok" if not r.failed else "FAILED")
    header = [f"gpu-check on {a.device}{' (--quick)' if a.quick else ''}, torch {torch_version}; "
              f"runs and logs in {a.out}",
              "paper: TASER Table 2, A10 GPU (its overhead of TASER over the base method)",
              "peak MiB: " + ("the process's GPU memory as nvidia-smi lists it (CUDA context and "
                              "libtorch's cached blocks included)" if a.device != "cpu"
                              else "the process's peak resident set (RSS)")]
    table = r.table()
    print("\n" + "\n".join(header) + "\n\n" + table)
    if a.record:
        record(a.record, device, header, table)
    return 1 if r.failed else 0


def record(folder, device, header, table):
    """Writes the table to FOLDER/<date>-<gpu name>.md (atomically)."""
    name = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")
    path = os.path.join(folder, f"{datetime.date.today().isoformat()}-{name}.md")
    os.makedirs(folder, exist_ok=True)
    text = (f"# gpu-check on {device['name']}, {datetime.date.today().isoformat()}\n\n"
            + "\n".join(header) + "\n\n" + table + "\n")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gpu-check.", suffix=".partial")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would not suit a file to commit
    os.replace(tmp, path)
    print(f"gpu-check: table recorded in {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
