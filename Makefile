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

## demo: the main job on the embedded default data (digits).
demo: setup
	@rm -rf $(RUNS)/demo
	$(BIN)/train --dataset digits --model cnn-small --epochs 30 --seed 0 --device auto --out $(RUNS)/demo/cnn-small-standard
	@echo
	@echo "digits, cnn-small, standard training: test accuracy $$(grep -o '"test_acc": [0-9.]*' $(RUNS)/demo/cnn-small-standard/model.json | cut -d' ' -f2)"

## test: unit and integration tests (release profile, shares the setup build).
test: setup
	cargo test --release -- --test-threads=1

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
