#!/usr/bin/env bash
# Trains the digits model of every method, without and with TASER, for the
# methods table (analysis/digits-methods). Called by `make digits-methods`;
# skips runs that already finished. Needs the release binaries (make setup).
set -euo pipefail
BIN=${BIN:-target/release}
RUNS=${RUNS:-runs/digits-methods}
mkdir -p "$RUNS"
SCORES=$RUNS/digits-dsm.h5
[ -f "$SCORES" ] || "$BIN/score-precompute" --dataset digits --source dsm --dsm-steps 1000 --seed 0 --out "$SCORES"
# TASER on digits: DSM scores, λ = 0.1 ramped over the first 10 epochs
# (450 steps); λ = 1 costs ~10 points of clean accuracy here.
TASER="--lambda 0.1 --lambda-warmup-steps 450 --scores $SCORES"
# TRAIN_THREADS=1 when the machine is shared: libtorch's OpenMP threads spin
# and slow down badly when oversubscribed.
COMMON="${TRAIN_THREADS:+--threads $TRAIN_THREADS} --dataset digits --model cnn-small --optimizer adam --lr 1e-3 --weight-decay 1e-4 \
        --schedule cosine --epochs 30 --seed 0 --log-every 10"
declare -A METHOD=(
  [standard]="--method standard"
  [pgd-at]="--method pgd-at"
  [trades]="--method trades"
  [mart]="--method mart"
  [trades-awp]="--method trades --awp --awp-warmup 10"
  [mart-awp]="--method mart --awp --awp-warmup 10"
)
for name in standard pgd-at trades mart trades-awp mart-awp; do
  for variant in base taser; do
    out=$RUNS/$name-$variant
    [ -f "$out/model.json" ] && continue
    extra=""
    [ "$variant" = taser ] && extra=$TASER
    echo "== $name $variant"
    # shellcheck disable=SC2086
    "$BIN/train" $COMMON ${METHOD[$name]} $extra --out "$out" --resume | grep -E "^(epoch +30|test_acc|train_seconds)"
  done
done
