#!/usr/bin/env bash
# Builds and assembles dist/: the suite's binaries in a portable form, plus
# what gpu-check needs (the train_step bench as bin/bench-train-step,
# scripts/gpu-check.sh and its gpu_check*.py, scripts/cifar_shaped.py,
# benches/train_step.py and data/cache/digits.csv.gz).
#
# Portable (docs/CLUSTER.md, "GPU nodes"): built by cargo-zigbuild and linked
# by scripts/zig-link.sh (zig cc) against glibc 2.28's symbol versions (RHEL/Rocky/Alma 8, SLES 15 and newer start
# them, as they start PyTorch's manylinux_2_28 wheels); libstdc++ linked
# statically into our objects, so no GLIBCXX newer than libtorch's own needs
# is asked of the node, while C++ exceptions unwind through the node's
# libgcc_s.so.1, as libtorch's do (scripts/zig-link.sh); HDF5 and zlib built from source and linked
# statically; no MPI (its sweep runs grids as Slurm job arrays; `make
# sweep-mpi` on a login node builds one against the site's MPI). dist/lib
# gets what the ldd closure still needs beyond glibc, libgcc_s, libstdc++
# and torch's own libraries (the node's torch provides those) — nothing,
# as built today.
# On the node:
#   bash dist/scripts/gpu-check.sh          # the check
#   export LD_LIBRARY_PATH=dist/lib:$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
#   dist/bin/train --device cuda:0 ...
# usage: make-dist.sh OUT   (needs cargo-zigbuild and ziglang: make dist installs them)
set -euo pipefail
out="$1"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=x86_64-unknown-linux-gnu.2.28
# torch-sys' C++ glue is compiled by g++ (libtorch's ABI is libstdc++'s) and
# links libstdc++.a instead of libstdc++.so; the C of HDF5 and zlib by zig
# cc against glibc 2.28's headers. __libc_single_threaded (glibc 2.32),
# which g++'s headers read, is defined by lib/portable.rs (feature portable).
# torch-sys links OpenMP as -lgomp: here that is torch's own libgomp.so.1
# (the wheel ships it; libtorch needs it anyway), not this machine's.
gcc_lib=$(dirname "$(g++ -print-file-name=libstdc++.a)")
torch_lib=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
link_dir="$repo/target/dist-link"
mkdir -p "$link_dir" && ln -sf "$torch_lib/libgomp.so.1" "$link_dir/libgomp.so"
export CXX_x86_64_unknown_linux_gnu=g++ CXXSTDLIB_x86_64_unknown_linux_gnu=
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER="$repo/scripts/zig-link.sh"
export RUSTFLAGS="-L native=$link_dir -C link-arg=$gcc_lib/libstdc++.a ${RUSTFLAGS:-}"
executables=$(cd "$repo" && cargo zigbuild --release --target "$target" --no-default-features \
  --features portable --bins --bench train_step --message-format=json-render-diagnostics |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
rm -rf "$out.partial"
mkdir -p "$out.partial/bin" "$out.partial/lib" "$out.partial/scripts" "$out.partial/benches" "$out.partial/data/cache"
bins=(score-precompute train finetune attack bootstrap sweep report)
for b in "${bins[@]}"; do
  cp "$(grep "/$b\$" <<<"$executables")" "$out.partial/bin/"
done
cp "$(grep '/train_step-[^/]*$' <<<"$executables")" "$out.partial/bin/bench-train-step"
cp "$repo"/scripts/{gpu-check.sh,gpu_check.py,gpu_check_run.py,gpu_check_steps.py,cifar_shaped.py} "$out.partial/scripts/"
cp "$repo/benches/train_step.py" "$out.partial/benches/"
cp "$repo/data/cache/digits.csv.gz" "$out.partial/data/cache/"
# glibc's own libraries are the node's (copying them mixes two glibcs);
# libgcc_s and libstdc++ come with any glibc system and with torch.
glibc='^(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libcrypt|libBrokenLocale|libthread_db|libnss_[a-z0-9]+|ld-linux-x86-64|libgcc_s|libstdc\+\+)\.so'
for b in "$out.partial"/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  grep -Eq "$glibc" <<<"$(basename "$lib")" && continue
  case "$lib" in */torch/lib/*|*/nvidia/*|*/torch.libs/*) continue ;; esac
  cp -L "$lib" "$out.partial/lib/"
done
rm -rf "$out"; mv "$out.partial" "$out"
echo "dist: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries in $out (glibc ≤ 2.28, no MPI)"
