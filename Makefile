# Set-up, demo, tests, benchmarks and lint. Each target is self-sufficient:
# `make demo` and `make test` do the whole set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV          := $(CURDIR)/.venv
PY            := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
VENV_STAMP    := $(VENV)/.installed-torch-$(TORCH_VERSION)
BIN           := $(CURDIR)/target/release
RUNS          := $(CURDIR)/runs

# libtorch comes from the venv's torch wheel (DESIGN.md, Toolchain).
export PATH                          := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH          := 1
export TASER_PYTHON                  := $(PY)
export OMPI_ALLOW_RUN_AS_ROOT        := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: setup system-deps venv data build demo test lint bench dist clean toy-table1

## setup: system libraries (if missing), .venv with torch, digits data, release binaries. Idempotent.
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

data: venv
	@PYTHON=$(PY) bash data/fetch-digits.sh

build: system-deps venv
	cargo build --release --bins --quiet

## demo: the main job on the embedded default data (digits): DSM scores → standard and TASER training.
DEMO_TRAIN := --dataset digits --model cnn-small --optimizer adam --lr 1e-3 --weight-decay 1e-4 \
              --schedule cosine --epochs 30 --seed 0 --device auto --log-every 10
demo: setup
	@rm -rf $(RUNS)/demo
	$(BIN)/score-precompute --dataset digits --source dsm --dsm-steps 1000 --out $(RUNS)/demo/digits-dsm.h5
	$(BIN)/train $(DEMO_TRAIN) --out $(RUNS)/demo/standard
	$(BIN)/train $(DEMO_TRAIN) --lambda 1 --lambda-warmup-steps 450 --scores $(RUNS)/demo/digits-dsm.h5 --out $(RUNS)/demo/taser
	@echo
	@echo "digits, cnn-small (Adam 1e-3, 30 epochs), test accuracy:"
	@echo "  standard                          $$(grep -o '"test_acc": [0-9.]*' $(RUNS)/demo/standard/model.json | cut -d' ' -f2)"
	@echo "  + TASER (λ = 1, DSM scores, ramp) $$(grep -o '"test_acc": [0-9.]*' $(RUNS)/demo/taser/model.json | cut -d' ' -f2)"

## test: unit and integration tests (release profile, shares the setup build).
test: setup
	cargo test --release --no-fail-fast -- --test-threads=1

## bench: per-step cost of the TASER penalty (figures and ratios; BENCH_ARGS="--device cuda:0").
BENCH_ARGS ?= --device auto
bench: setup
	cargo bench --quiet --bench train_step -- $(BENCH_ARGS)
	cargo bench --quiet --bench scores

## toy-table1: TASER Table 1 (45 toy runs, ~10 min on 2 cores) → analysis/toy-table1/
toy-table1: setup
	bash analysis/toy-table1/run.sh

lint: venv
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings

## dist: the binaries plus the shared libraries a GPU node may lack (DESIGN.md, GPU nodes).
dist: build
	@bash scripts/make-dist.sh $(BIN) $(CURDIR)/dist

clean:
	cargo clean
	rm -rf $(RUNS) dist
