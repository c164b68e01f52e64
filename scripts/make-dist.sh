#!/usr/bin/env bash
# Assembles dist/: the release binaries plus the shared libraries they need
# that a GPU node may lack (their ldd closure minus glibc and libtorch's own
# folder, which the node's torch provides). On the node:
#   export LD_LIBRARY_PATH=dist/lib:$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
#   dist/bin/train --device cuda:0 ...
set -euo pipefail
bin_dir="$1"; out="$2"
rm -rf "$out.partial"; mkdir -p "$out.partial/bin" "$out.partial/lib"
bins=(score-precompute train finetune attack bootstrap sweep)
for b in "${bins[@]}"; do cp "$bin_dir/$b" "$out.partial/bin/"; done
for b in "${bins[@]}"; do
  ldd "$bin_dir/$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) continue ;;
  esac
  case "$lib" in */torch/lib/*|*/nvidia/*) continue ;; esac
  cp -L "$lib" "$out.partial/lib/"
done
rm -rf "$out"; mv "$out.partial" "$out"
echo "dist: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries in $out"
