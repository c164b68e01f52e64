#!/usr/bin/env bash
# The digits TASER study (`make digits-taser-study`): runs the sweep of
# sweeps/digits-taser-study.toml under `mpirun -np 2` (resumable: a rerun
# finishes only what is missing), then the paired bootstraps of
# vs-control.toml and vs-base.toml into analysis/digits-taser-study/
# {vs-control,vs-base}/ (tables, comparisons.csv, forest and Δ-vs-λ
# figures). Needs the release binaries (make setup).
set -euo pipefail
BIN=${BIN:-target/release}
RUNS=${RUNS:-runs/digits-taser-study}
HERE=$(dirname "$0")
start=$(date +%s)
mpirun --oversubscribe -np "${RANKS:-2}" "$BIN/sweep" run sweeps/digits-taser-study.toml --out "$RUNS"
for cmp in vs-control vs-base; do
  "$BIN/bootstrap" --spec "$HERE/$cmp.toml" --runs "$RUNS/jobs" --seed 0 --out "$HERE/$cmp" > /dev/null
  echo "== $cmp"
  cat "$HERE/$cmp/table2.md"
done
echo "study wall time of this call: $(( $(date +%s) - start )) s"
