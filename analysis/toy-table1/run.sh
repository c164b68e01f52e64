#!/usr/bin/env bash
# TASER Table 1 (SPEC §9): trains the toy runs (ℓ2 and exact Stein penalty,
# λ ∈ {0, 1e-4, 1e-3, 1e-2, 1e-1} × 5 seeds; λ = 0 once per seed) two at a
# time, then rebuilds table.csv, table.md and predictions.svg here.
# Finished runs are skipped (--resume), so an interrupted table resumes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$root/target/release"
runs="${RUNS:-$root/runs/toy-table1}"
jobs="${JOBS:-2}"
mkdir -p "$runs"

common=(--dataset toy-sin --model mlp --mlp-hidden 64,64 --activation tanh
        --optimizer adam --lr 1e-3 --weight-decay 0 --schedule constant
        --batch-size 1000 --epochs 3000 --device cpu --threads 1
        --checkpoint-every 500 --log-every 3000 --resume)
stein=(--reg stein --stein-order full --stein-laplacian exact --stein-mode autograd
       --center none --score-source gaussian-std --probe output)

job_lines() {
  for seed in 0 1 2 3 4; do
    echo "l2 0 $seed"
    for lambda in 1e-4 1e-3 1e-2 1e-1; do
      echo "l2 $lambda $seed"
      echo "stein $lambda $seed"
    done
  done
}

run_one() {
  local reg="$1" lambda="$2" seed="$3"
  local out="$runs/$reg-lambda$lambda-seed$seed"
  local extra=(--reg l2)
  [ "$reg" = stein ] && extra=("${stein[@]}")
  if "$bin/train" "${common[@]}" "${extra[@]}" --lambda "$lambda" --seed "$seed" \
       --out "$out" > "$out.log" 2>&1; then
    echo "done: $reg λ=$lambda seed=$seed"
  else
    echo "FAILED: $reg λ=$lambda seed=$seed (see $out.log)" >&2
    return 1
  fi
}
export -f run_one
export bin runs
export common_str="${common[*]}" stein_str="${stein[*]}"

# xargs runs each job in a fresh bash; pass the arrays through as strings.
job_lines | xargs -P "$jobs" -L 1 bash -c '
  read -ra common <<< "$common_str"; read -ra stein <<< "$stein_str"
  run_one "$0" "$1" "$2"'
"$bin/report" toy-table1 --runs "$runs" --out "$root/analysis/toy-table1"
