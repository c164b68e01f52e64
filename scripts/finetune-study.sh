#!/usr/bin/env bash
# A TASER study by the fine-tune protocol, one command: runs the sweep of
# GRID under `mpirun -np RANKS` (default 2; resumable: a rerun finishes only
# what is missing), then the paired bootstraps of SPECS/vs-control.toml and
# SPECS/vs-base.toml into OUT/{vs-control,vs-base}/ (tables,
# comparisons.csv, forest and Δ-vs-λ figures) and prints both Table 2s and
# the call's wall time. Needs the release binaries (make setup).
#
#   scripts/finetune-study.sh GRID RUNS SPECS [OUT]   (OUT defaults to SPECS)
#
# `make digits-taser-study` and `make mnist-study` call it.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 GRID RUNS SPECS [OUT]" >&2
  exit 2
fi
GRID=$1 RUNS=$2 SPECS=$3 OUT=${4:-$3}
BIN=${BIN:-target/release}
start=$(date +%s)
mpirun --oversubscribe -np "${RANKS:-2}" "$BIN/sweep" run "$GRID" --out "$RUNS"
for cmp in vs-control vs-base; do
  "$BIN/bootstrap" --spec "$SPECS/$cmp.toml" --runs "$RUNS/jobs" --seed 0 --out "$OUT/$cmp" > /dev/null
  echo "== $cmp"
  cat "$OUT/$cmp/table2.md"
done
echo "study wall time of this call: $(( $(date +%s) - start )) s"
