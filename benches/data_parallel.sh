#!/usr/bin/env bash
# `make bench`: data-parallel training throughput at 1, 2 (and 4 where the
# machine has 4 cores) ranks, side by side with PyTorch DDP (gloo).
# The suite: `mpirun -np G train --data-parallel`, cnn-small on digits, PGD-AT
# (10 sign steps), SGD, global batch 256, one libtorch thread per rank,
# 3 epochs; samples/s = training samples / the mean seconds of epochs 2–3
# (each epoch: 1438 samples in 6 steps, and the test-set evaluation), and
# the share of rank 0's wall time spent in the gradient sums (moving
# buffers, waiting for the slowest rank: data_parallel_sum_share).
# PyTorch: benches/data_parallel.py, the same step on digits-shaped random
# data, 6 timed steps of 256. Prints a table; asserts nothing.
set -euo pipefail
BIN=${BIN:-target/release}
PY=${TASER_PYTHON:-.venv/bin/python}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ranks="1 2"
[ "$(nproc)" -ge 4 ] && ranks="1 2 4"
echo "data-parallel throughput: cnn-small on digits, PGD-AT (10 steps), SGD, global batch 256, 1 thread per rank, $(nproc) cores"
echo
echo "| ranks | suite samples/s | suite time in sums | PyTorch DDP samples/s | suite / PyTorch | suite speed-up vs 1 rank |"
echo "|---|---|---|---|---|---|"
base=""
for g in $ranks; do
    out="$tmp/r$g"
    mpirun --oversubscribe -np "$g" "$BIN/train" --data-parallel --dataset digits --model cnn-small \
        --method pgd-at --batch-size 256 --epochs 3 --threads 1 --device cpu --out "$out" >/dev/null
    record=$("$BIN/report" run "$out")
    read -r suite share < <("$PY" - "$record" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
rows = r["epochs"][1:]
seconds = sum(row["seconds"] for row in rows) / len(rows)
print(f"{1438 / seconds:.1f} {r['sidecar']['metrics']['data_parallel_sum_share']:.3f}")
PY
)
    torch=$("$PY" benches/data_parallel.py "$g" 256 6 10 0.2)
    base=${base:-$suite}
    printf '| %s | %s | %.1f%% | %s | %.2f | ×%.2f |\n' "$g" "$suite" "$(echo "$share * 100" | bc -l)" "$torch" \
        "$(echo "$suite / $torch" | bc -l)" "$(echo "$suite / $base" | bc -l)"
done
