#!/usr/bin/env bash
# gpu-check.sh: one command that checks a GPU node with PyTorch but no Rust,
# run from `make dist`'s folder (dist/scripts/gpu-check.sh) or from the
# repository (scripts/gpu-check.sh, against target/release). Steps:
#   1. the binaries see the device (train cnn-small on digits, 1 epoch);
#      a missing CUDA device stops here with a message and exit 1; the
#      versions and numerical state that run recorded; two --deterministic
#      runs of one seed, whose checkpoints must be byte-identical
#   2. MPI ranks take their node-local GPU (`sweep devices`, under mpirun
#      with one rank per GPU when mpirun exists; else rank 0 alone)
#   3. CIFAR-shaped data (scripts/cifar_shaped.py: CIFAR-10's binary format,
#      50 000 / 10 000 seeded class-pattern + noise images)
#   4. resnet18, 1 epoch: standard; + TASER (first-order, N(0, I) scores);
#      --tf32; --precision bf16; --memory-format channels-last; both (the
#      f32 / TF32 / bf16 train losses of one seed side by side)
#   5. AutoAttack (standard, L∞ 8/255) of the standard model on 64 points
#   6. the side-by-side bench rows on the device (suite vs PyTorch,
#      benches/train_step.py): f32, then bf16 + channels-last on resnet18;
#      and PGD-AT ± the TASER penalty (suite) for the adversarial overhead
# then ONE table: step, seconds, status; bench rows with suite / PyTorch and
# × alone; the TASER paper's overheads (×2.45 standard, ×1.17–1.27
# adversarial, A10 GPU) beside ours. Exit 0 when every step passed, 1 when
# one failed (or the device is missing), 2 for bad usage. Each step has a
# time limit (--step-timeout); one that runs over counts as failed.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: gpu-check.sh [--device cuda:N|cpu] [--quick] [--out DIR]
                    [--bin DIR] [--bench FILE] [--data-dir DIR]

  --device D    device to check (default cuda:0)
  --quick       the same steps, tiny (32 training images, 1-step bench rows
                at batch 2 / 32, 4 AutoAttack points, cnn-small adversarial
                rows); with --device cpu it runs in `make test`
  --out DIR     where runs and logs go (default: a new /tmp/gpu-check.XXXXXX)
  --bin DIR     the suite's binaries (default: ../bin beside this script's
                folder, i.e. dist/bin, else ../target/release)
  --bench FILE  the train_step bench binary (default: BIN/bench-train-step,
                else the newest target/release/deps/train_step-*)
  --data-dir D  folder with digits.csv.gz (default: ../data/cache)
  --step-timeout S  seconds each step may take (default 600; 300 with --quick)
Environment: TASER_PYTHON (default: the project's .venv/bin/python, else
python3): the python with torch, used for the data, the PyTorch bench rows,
the versions table and to find torch/lib.
Budget: < 8 min on one H100/H200 (full); ~2-3 min on 2 CPU cores (--quick).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
device=cuda:0 quick=0 out="" bin="" bench="" digits="" step_timeout=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --bin) bin="${2:?--bin needs a value}"; shift 2 ;;
    --bench) bench="${2:?--bench needs a value}"; shift 2 ;;
    --data-dir) digits="${2:?--data-dir needs a value}"; shift 2 ;;
    --step-timeout) step_timeout="${2:?--step-timeout needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$device" in cpu|cuda:[0-9]*) ;; *)
  echo "gpu-check: --device '$device': expected cpu or cuda:N" >&2; exit 2 ;;
esac
py="${TASER_PYTHON:-}"
[ -n "$py" ] || { if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi; }
[ -n "$bin" ] || { if [ -x "$root/bin/train" ]; then bin="$root/bin"; else bin="$root/target/release"; fi; }
if [ -z "$bench" ]; then
  if [ -x "$bin/bench-train-step" ]; then bench="$bin/bench-train-step"
  else bench=$(ls -t "$root"/target/release/deps/train_step-* 2>/dev/null | grep -v '\.d$' | head -n 1); fi
fi
[ -n "$digits" ] || digits="$root/data/cache"
[ -n "$out" ] || out=$(mktemp -d /tmp/gpu-check.XXXXXX)
mkdir -p "$out/logs"
for b in train attack sweep; do
  [ -x "$bin/$b" ] || { echo "gpu-check: no $bin/$b; build first (make build) or pass --bin DIR" >&2; exit 2; }
done
[ -f "$digits/digits.csv.gz" ] || { echo "gpu-check: no digits.csv.gz in $digits; pass --data-dir (make data fetches it)" >&2; exit 2; }
torch_info=$("$py" -c 'import torch, os; print(torch.__version__, torch.cuda.device_count(), os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || {
  echo "gpu-check: '$py' cannot import torch; set TASER_PYTHON to a python with torch 2.11.0" >&2; exit 2; }
read -r torch_version torch_gpus torch_lib <<<"$torch_info"
# dist/lib holds the libraries the node may lack; torch/lib is the node's libtorch.
if [ -d "$root/lib" ]; then export LD_LIBRARY_PATH="$root/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ "$quick" = 1 ]; then
  n_train=32 n_test=16 batch=16 n_eval=4 steps=1 bench_batch=2 cnn_batch=32 adv_model=cnn-small
else
  n_train=50000 n_test=10000 batch=128 n_eval=64 steps=20 bench_batch=256 cnn_batch=256 adv_model=resnet18
fi
[ -n "$step_timeout" ] || step_timeout=$([ "$quick" = 1 ] && echo 300 || echo 600)
rows=() failed=0 started=$(date +%s.%N)
row() { rows+=("| $1 | $2 | $3 | ${4:-} | ${5:-} | ${6:-} | ${7:-} | ${8:-} |"); }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# step NAME LOG CMD…: runs CMD (output in logs/LOG.log), adds its row.
step() {
  local name="$1" log="$out/logs/$2.log"; shift 2
  echo "gpu-check: $name" >&2
  local t0; t0=$(date +%s.%N)
  if timeout "$step_timeout" "$@" >"$log" 2>&1; then
    row "$name" "$(since "$t0")" ok
  else
    local rc=$?; failed=1
    row "$name" "$(since "$t0")" "FAILED (exit $rc, logs/$2.log)"
    tail -n 5 "$log" >&2
  fi
}
# Seconds of the last epoch (metrics.csv's `seconds` column) of a run.
epoch_seconds() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i; next } { s = $c }
    END { if (s != "") printf "%.1f", s; else print "–" }' "$1/metrics.csv" 2>/dev/null || echo –
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "×%.2f", a / b; else print "–" }'; }

# 1. The binaries see the device.
echo "gpu-check: python torch $torch_version sees $torch_gpus GPU(s); binaries in $bin; runs in $out" >&2
t0=$(date +%s.%N)
if ! "$bin/train" --device "$device" --dataset digits --data-dir "$digits" --model cnn-small \
    --epochs 1 --batch-size 256 --out "$out/device-check" >"$out/logs/device-check.log" 2>&1; then
  if [ "$device" != cpu ] && grep -q "CUDA device" "$out/logs/device-check.log"; then
    echo "gpu-check: the suite's binaries see no $device: $(grep -m1 -i error "$out/logs/device-check.log")" >&2
    echo "gpu-check: python's torch $torch_version sees $torch_gpus GPU(s). Run on a GPU node whose python3 has the" >&2
    echo "  CUDA build of torch 2.11.0 (this script puts its torch/lib and dist/lib on LD_LIBRARY_PATH)," >&2
    echo "  or check another device with --device cpu." >&2
    exit 1
  fi
  echo "gpu-check: the device check failed:" >&2; tail -n 5 "$out/logs/device-check.log" >&2; exit 1
fi
if ! grep -q "\"device\": \"$device\"" "$out/device-check/model.json"; then
  echo "gpu-check: the device check trained, but not on $device (see $out/device-check/model.json)" >&2; exit 1
fi
row "binaries see $device (cnn-small/digits, 1 epoch)" "$(since "$t0")" ok
# Versions and numerical state, as the run recorded them (model.json's runtime).
while IFS= read -r line; do row "$line" "" ""; done < <("$py" - "$out/device-check/model.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runtime"]; d, n = r["device"], r["numerics"]
print(f"versions: {d['name']}" + (f", cc {d['compute_capability']}, {d['memory_mib']} MiB, driver {d['driver']}" if d["compute_capability"] else f", {d['threads']} threads")
      + f"; torch {d['torch']}, CUDA {d['cuda'] or '–'}, cuDNN {d['cudnn'] or '–'}")
print(f"numerics: tf32 {n['tf32']} (conv {n['cuda_conv_fp32']}, matmul {n['cuda_matmul_fp32']}), deterministic {n['deterministic']}, cudnn benchmark {n['cudnn_benchmark']}")
PY
)

# Two --deterministic runs of one seed give byte-identical checkpoints.
det=(--device "$device" --dataset digits --data-dir "$digits" --model cnn-small --epochs 1 --seed 3 --deterministic)
step "train --deterministic, run 1" det1 "$bin/train" "${det[@]}" --out "$out/det1"
step "train --deterministic, run 2" det2 "$bin/train" "${det[@]}" --out "$out/det2"
if cmp -s "$out/det1/model.safetensors" "$out/det2/model.safetensors"; then row "… two --deterministic runs: checkpoints byte-identical" "" ok
else row "… two --deterministic runs: checkpoints byte-identical" "" FAILED; failed=1; fi

# 2. MPI ranks take their node-local GPU.
# One rank per GPU; on the CPU two ranks show the rule (both take cpu).
if [ "$device" = cpu ]; then ranks=2; elif [ "$torch_gpus" -gt 1 ]; then ranks=$torch_gpus; else ranks=1; fi
if command -v mpirun >/dev/null; then
  flags=(); mpirun --version 2>&1 | grep -q "Open MPI" && flags=(--oversubscribe)
  step "MPI ranks → node-local device ($ranks rank(s))" ranks mpirun "${flags[@]}" -np "$ranks" "$bin/sweep" devices
else
  step "rank → device (no mpirun: rank 0 alone)" ranks "$bin/sweep" devices
fi
if [ -f "$out/logs/ranks.log" ]; then
  picks=$(awk 'NR > 1 && NF == 6 { printf "%srank %s → %s", sep, $1, $6; sep = ", " }' "$out/logs/ranks.log")
  [ "$ranks" = 1 ] && [ "$device" != cpu ] && picks="$picks (one GPU: rank 0 → cuda:0 is the whole check)"
  row "… ranks' devices: $picks" "" ""
fi

# 3. CIFAR-shaped data.
step "CIFAR-shaped data ($n_train / $n_test, cifar_shaped.py)" data "$py" "$here/cifar_shaped.py" "$out/cifar" "$n_train" "$n_test"

# 4. resnet18, one epoch each.
common=(--device "$device" --dataset cifar10 --data-dir "$out/cifar" --model resnet18 --epochs 1
        --batch-size "$batch" --lr 0.05)
taser=(--lambda 1 --stein-order first-order --score-source gaussian-std)
step "train resnet18 1 epoch, standard" std "$bin/train" "${common[@]}" --out "$out/std"
step "train resnet18 1 epoch, + TASER first-order" taser "$bin/train" "${common[@]}" "${taser[@]}" --out "$out/taser"
step "train resnet18 1 epoch, --tf32" tf32 "$bin/train" "${common[@]}" --tf32 --out "$out/tf32"
step "train resnet18 1 epoch, --precision bf16" bf16 "$bin/train" "${common[@]}" --precision bf16 --out "$out/bf16"
step "train resnet18 1 epoch, --memory-format channels-last" cl "$bin/train" "${common[@]}" \
  --memory-format channels-last --out "$out/cl"
step "train resnet18 1 epoch, bf16 + channels-last" bf16-cl "$bin/train" "${common[@]}" --precision bf16 \
  --memory-format channels-last --out "$out/bf16-cl"
std_s=$(epoch_seconds "$out/std"); taser_s=$(epoch_seconds "$out/taser")
# f32 vs TF32 vs bf16 on one seed: train_loss of the epoch and its relative gap to f32.
losses=$("$py" - "$out" <<'PY'
import csv, sys
def loss(run):
    try: return float(list(csv.DictReader(open(f"{sys.argv[1]}/{run}/metrics.csv")))[-1]["train_loss"])
    except Exception: return None
f = loss("std"); cells = [f"f32 {f:.4f}" if f is not None else "f32 –"]
for run in ("tf32", "bf16"):
    v = loss(run)
    cells.append(f"{run} –" if v is None or f is None else f"{run} {v:.4f} (rel. gap {abs(v - f) / max(abs(f), 1e-12):.1e})")
print(", ".join(cells))
PY
)
row "… train_loss, one seed: $losses" "" ""
row "… epoch seconds (metrics.csv): standard $std_s, TASER $taser_s, bf16 $(epoch_seconds "$out/bf16"), channels-last $(epoch_seconds "$out/cl"), both $(epoch_seconds "$out/bf16-cl")" "" ""

# 5. AutoAttack on the standard model.
step "AutoAttack (aa, L∞ 8/255) on $n_eval points" aa "$bin/attack" --device "$device" \
  --checkpoint "$out/std/model.safetensors" --data-dir "$out/cifar" --attacks aa --eps 0.0313725 \
  --n-eval "$n_eval" --out "$out/aa"

# 6. Bench rows on the device.
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
  row "bench rows" "" "FAILED (no bench binary: make dist ships bin/bench-train-step; in the repository cargo bench --no-run --bench train_step)"
  failed=1
else
  export TASER_PYTHON="$py" TASER_BENCH_PY="$root/benches/train_step.py" TASER_DATA_DIR="$digits"
  bench_args=(--device "$device" --batch "$bench_batch" --cnn-batch "$cnn_batch")
  step "bench side by side, f32" bench-f32 "$bench" "${bench_args[@]}" --steps "$steps" --side-by-side
  step "bench side by side, resnet18, bf16 + channels-last" bench-bf16-cl "$bench" "${bench_args[@]}" \
    --steps "$steps" --side-by-side --models resnet18 --precision bf16 --memory-format channels-last
  # PGD-AT steps cost 11 forward/backward passes: half the timed steps.
  step "bench $adv_model, PGD-AT ± TASER (suite)" bench-adv "$bench" "${bench_args[@]}" \
    --steps $(( steps > 1 ? steps / 2 : 1 )) --methods pgd-at --models "$adv_model"
fi
# Side-by-side rows: | model | batch | method | variant | suite | PyTorch | ratio | × alone |
# (`echo $x` trims the cells' spaces.)
for log in bench-f32 bench-bf16-cl; do
  [ -f "$out/logs/$log.log" ] || continue
  tag=${log#bench-}
  while IFS='|' read -r _ model b method variant suite torch r alone _; do
    row "bench $tag: $(echo $model) b=$(echo $b) $(echo $method) $(echo $variant)" "" "" "$(echo $suite)" "$(echo $torch)" "$(echo $r)" "$(echo $alone)"
  done < <(grep -E '^\| (cnn-small|resnet18) ' "$out/logs/$log.log")
done
adv_first=""
if [ -f "$out/logs/bench-adv.log" ]; then
  while IFS='|' read -r _ model b method variant ms alone _; do
    row "bench: $(echo $model) b=$(echo $b) $(echo $method) $(echo $variant)" "" "" "$(echo $ms)" "" "" "$(echo $alone)"
    [ "$(echo $variant)" = "+ first-order, fd" ] && adv_first=$(echo $alone)
  done < <(grep -E '^\| (cnn-small|resnet18) ' "$out/logs/bench-adv.log")
fi
bench_first=$(grep -E '^\| resnet18 .*\| standard \| \+ first-order, autograd \|' "$out/logs/bench-f32.log" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $9); print $9 }')
row "overhead: TASER first-order / standard, resnet18 epoch" "" "" "" "" "" "$(ratio "$taser_s" "$std_s")" "×2.45"
row "overhead: + first-order autograd / alone, resnet18 step (bench)" "" "" "" "" "" "${bench_first:-–}" "×2.45"
row "overhead: PGD-AT + first-order fd / PGD-AT, $adv_model step (bench)" "" "" "" "" "" "${adv_first:-–}" "×1.17–1.27"
row "total" "$(since "$started")" "$([ $failed = 0 ] && echo ok || echo FAILED)"

echo
echo "gpu-check on $device$([ $quick = 1 ] && echo ' (--quick)'), torch $torch_version; runs and logs in $out"
echo "paper: TASER Table 2, A10 GPU (its overhead of TASER over the base method)"
echo
echo "| step | seconds | status | suite ms/step | PyTorch ms/step | suite / PyTorch | × alone | paper |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
