#!/usr/bin/env bash
# `make bench`: the sweep launcher's overhead per job and its speed-up from
# 1 to 2 to 3 MPI ranks on short jobs (12 one-epoch digits mlp trainings,
# one libtorch thread each). Overhead per job = (wall time − Σ job seconds /
# ranks) / jobs per rank: what the launcher adds around the binaries it runs.
# Prints a table; asserts nothing.
set -euo pipefail
BIN=${BIN:-target/release}
JOBS=${JOBS:-12}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
seeds=$(seq -s, 0 $((JOBS - 1)))
cat > "$tmp/grid.toml" <<GRID
name = "launcher-bench"
steps = ["train"]

[axes]
seed = [$seeds]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
epochs = 1
threads = 1
GRID
echo "sweep launcher: $JOBS short jobs (digits mlp, 1 epoch, 1 thread), mpirun --oversubscribe"
echo
echo "| ranks | wall s | Σ job s | overhead per job s | speed-up vs 1 rank |"
echo "|---|---|---|---|---|"
base=""
for np in 1 2 3; do
  start=$(date +%s.%N)
  mpirun --oversubscribe -np "$np" "$BIN/sweep" run "$tmp/grid.toml" --out "$tmp/run$np" \
    > "$tmp/log$np" 2>&1 || { cat "$tmp/log$np"; exit 1; }
  end=$(date +%s.%N)
  jobsum=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds_total") c = i }
                    NR > 1 { s += $c } END { print s }' "$tmp/run$np/results.csv")
  wall=$(awk "BEGIN { print $end - $start }")
  [ -z "$base" ] && base=$wall
  awk -v np="$np" -v wall="$wall" -v js="$jobsum" -v base="$base" -v n="$JOBS" 'BEGIN {
    printf "| %d | %.2f | %.2f | %.3f | ×%.2f |\n", np, wall, js, (wall - js / np) / (n / np), base / wall }'
done
