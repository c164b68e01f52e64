#!/usr/bin/env bash
# gpu-check.sh: one command that checks a GPU node with the suite's binaries
# and PyTorch but no Rust, from `make dist`'s folder (dist/scripts/) or from
# the repository (scripts/, against target/release). The steps, options and
# the one table are scripts/gpu_check.py's (`gpu-check.sh --help`); this
# wrapper only finds the python that runs it: TASER_PYTHON, else the
# project's .venv/bin/python, else python3. That python must import torch
# (2.11.0; the CUDA build on a GPU node).
#   bash scripts/gpu-check.sh --device cpu --quick    # a few minutes on a CPU
#   bash dist/scripts/gpu-check.sh --record           # a GPU node, < 8 min
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py="${TASER_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then py="$here/../.venv/bin/python"; else py=python3; fi
fi
if ! command -v "$py" >/dev/null; then
  echo "gpu-check: no python '$py'; set TASER_PYTHON to a python with torch 2.11.0" >&2
  exit 2
fi
exec "$py" "$here/gpu_check.py" "$@"
