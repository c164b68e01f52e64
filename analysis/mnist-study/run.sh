#!/usr/bin/env bash
# The mnist-5k TASER study (`make mnist-study`): runs the sweep of
# sweeps/mnist-study.toml under `mpirun -np 2` (resumable: a rerun finishes
# only what is missing), then the paired bootstraps of vs-control.toml and
# vs-base.toml into analysis/mnist-study/{vs-control,vs-base}/ (tables,
# comparisons.csv, forest and Δ-vs-λ figures). Needs the release binaries
# (make setup). GRID and RUNS override the grid and the runs folder.
set -euo pipefail
BIN=${BIN:-target/release}
GRID=${GRID:-sweeps/mnist-study.toml}
RUNS=${RUNS:-runs/mnist-study}
HERE=$(dirname "$0")
OUT=${OUT:-$HERE}
start=$(date +%s)
mpirun --oversubscribe -np "${RANKS:-2}" "$BIN/sweep" run "$GRID" --out "$RUNS"
for cmp in vs-control vs-base; do
  "$BIN/bootstrap" --spec "$HERE/$cmp.toml" --runs "$RUNS/jobs" --seed 0 --out "$OUT/$cmp" > /dev/null
  echo "== $cmp"
  cat "$OUT/$cmp/table2.md"
done
echo "study wall time of this call: $(( $(date +%s) - start )) s"
