#!/usr/bin/env bash
# The mnist-5k baselines of issue 18: cnn-small standard and PGD-AT at
# Madry's L∞ ε = 0.3 (SGD, the defaults' cosine schedule, 20 epochs, seed 0),
# PGD-AT with the training attack's radius ramped over 8 epochs
# (--eps-warmup-epochs 8). Evaluated with PGD-20 and AutoAttack on a
# seeded subset of N_EVAL test points (default 200; 1000 is the whole test
# split, ~1–2 h of AutoAttack on one core). Called by `make mnist-baselines`;
# resumable: finished runs and attacks are skipped, a killed one resumes.
set -euo pipefail
BIN=${BIN:-target/release}
RUNS=${RUNS:-runs/mnist-5k-baselines}
N_EVAL=${N_EVAL:-200}
OUT=analysis/mnist-5k-baselines
COMMON="--threads ${TRAIN_THREADS:-1} --dataset mnist-5k --model cnn-small --epochs 20 --seed 0"
mkdir -p "$RUNS"
for name in standard pgd-at; do
  flags="--method standard"
  [ "$name" = pgd-at ] && flags="--method pgd-at --eps 0.3 --eps-warmup-epochs 8"
  # shellcheck disable=SC2086
  [ -f "$RUNS/$name/model.json" ] || "$BIN/train" $COMMON $flags --out "$RUNS/$name" --resume
  cp "$RUNS/$name/metrics.csv" "$OUT/$name-metrics.csv"
done
"$BIN/attack" --checkpoint "$RUNS/pgd-at/model.safetensors" --attacks pgd20,aa --eps 0.3 \
  --n-eval "$N_EVAL" --seed 0 --threads "${ATTACK_THREADS:-2}" --out "$RUNS/pgd-at/eval-$N_EVAL"
ls "$RUNS/pgd-at/eval-$N_EVAL"
