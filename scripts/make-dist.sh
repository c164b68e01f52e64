#!/usr/bin/env bash
# Assembles dist/: the release binaries plus the shared libraries they need
# that a GPU node may lack (their ldd closure minus glibc and libtorch's own
# folder, which the node's torch provides), and what gpu-check needs: the
# train_step bench as bin/bench-train-step, scripts/gpu-check.sh and its
# gpu_check*.py, scripts/cifar_shaped.py, benches/train_step.py and data/cache/digits.csv.gz.
# On the node:
#   bash dist/scripts/gpu-check.sh          # the check (README, GPU nodes)
#   export LD_LIBRARY_PATH=dist/lib:$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
#   dist/bin/train --device cuda:0 ...
# usage: make-dist.sh BIN_DIR OUT BENCH_BINARY
set -euo pipefail
bin_dir="$1"; out="$2"; bench="$3"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$out.partial"
mkdir -p "$out.partial/bin" "$out.partial/lib" "$out.partial/scripts" "$out.partial/benches" "$out.partial/data/cache"
bins=(score-precompute train finetune attack bootstrap sweep report)
for b in "${bins[@]}"; do cp "$bin_dir/$b" "$out.partial/bin/"; done
cp "$bench" "$out.partial/bin/bench-train-step"
cp "$repo"/scripts/{gpu-check.sh,gpu_check.py,gpu_check_run.py,gpu_check_steps.py,cifar_shaped.py} "$out.partial/scripts/"
cp "$repo/benches/train_step.py" "$out.partial/benches/"
cp "$repo/data/cache/digits.csv.gz" "$out.partial/data/cache/"
for b in "$bench" "${bins[@]/#/$bin_dir/}"; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) continue ;;
  esac
  case "$lib" in */torch/lib/*|*/nvidia/*) continue ;; esac
  cp -L "$lib" "$out.partial/lib/"
done
rm -rf "$out"; mv "$out.partial" "$out"
echo "dist: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries in $out"
