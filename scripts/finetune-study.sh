#!/usr/bin/env bash
# A TASER study by the fine-tune protocol, one command: runs the sweep of
# GRID under `mpirun -np RANKS` (default 2; resumable: a rerun finishes only
# what is missing), then the paired bootstrap (Holm-adjusted) of each
# comparison spec SPECS/vs-*.toml (vs-control, vs-base, …) into OUT/vs-*/
# (tables, comparisons.csv, forest and Δ-vs-x figures) and prints each
# Table 2 and the call's wall time. Needs the release binaries (make setup).
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
for spec in "$SPECS"/vs-*.toml; do
  cmp=$(basename "$spec" .toml)
  "$BIN/bootstrap" --spec "$spec" --runs "$RUNS/jobs" --multiplicity holm --seed 0 \
    --out "$OUT/$cmp" > /dev/null
  echo "== $cmp"
  cat "$OUT/$cmp/table2.md"
done
echo "study wall time of this call: $(( $(date +%s) - start )) s"
