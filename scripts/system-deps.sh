#!/usr/bin/env bash
# Installs the system libraries the suite builds against, only those that are
# missing and only when it can (root with apt-get). Elsewhere (a cluster
# login node) it names the packages or modules to load and fails.
#   HDF5 (libhdf5-dev), OpenMPI (libopenmpi-dev, openmpi-bin),
#   libclang (libclang-dev, for mpi-sys' bindgen), pkg-config, and the
#   DejaVu Sans font (fonts-dejavu-core) that the figures' PNG text is
#   rasterised with (or any .ttf named by TASER_FONT).
set -euo pipefail

missing=()
have_hdf5() { [ -f /usr/include/hdf5/serial/hdf5.h ] || [ -f /usr/include/hdf5.h ] || command -v h5cc >/dev/null 2>&1 || [ -n "${HDF5_DIR:-}" ]; }
have_mpi() { command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; }
have_font() { [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || [ -f /usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf ] || [ -n "${TASER_FONT:-}" ]; }
# bindgen needs libclang itself (libclang.so / libclang-N.so), not libclang-cpp.
have_libclang() { compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*" >/dev/null || [ -n "${LIBCLANG_PATH:-}" ]; }

have_hdf5 || missing+=(libhdf5-dev)
have_mpi || missing+=(libopenmpi-dev openmpi-bin)
have_libclang || missing+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
have_font || missing+=(fonts-dejavu-core)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
cat >&2 <<MSG
Missing system libraries: ${missing[*]}
Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), or on a
cluster load the modules that provide them, e.g.
  module load hdf5 openmpi llvm
(set HDF5_DIR / LIBCLANG_PATH if they live in non-standard places, and
TASER_FONT to a .ttf file such as DejaVuSans.ttf if no DejaVu Sans is
installed), then
rerun make setup.
MSG
exit 1
