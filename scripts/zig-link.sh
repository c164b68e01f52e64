#!/usr/bin/env bash
# The linker of the portable build (make-dist.sh): zig cc against glibc
# 2.28's symbol versions, with two changes to what rustc asks for:
# - the unwinder is the shared libgcc_s.so.1 (every glibc system has it, and
#   libtorch's C++ exceptions unwind through it), never a second, static
#   one: a C++ exception thrown in libtorch and caught in the suite's glue
#   must be unwound by one unwinder. rustc asks for -lgcc_s; it is given
#   this machine's libgcc_s.so.1 by path (only symbols of GCC ≤ 4.2 are
#   used), and its own glibc needs are left to the node's (they are not
#   ours: --allow-shlib-undefined).
set -euo pipefail
args=()
for a in "$@"; do
  case "$a" in
    -lgcc_s) args+=("$(gcc -print-file-name=libgcc_s.so.1)") ;;
    *) args+=("$a") ;;
  esac
done
exec python3 -m ziglang cc -target x86_64-linux-gnu.2.28 -Wl,--allow-shlib-undefined "${args[@]}"
