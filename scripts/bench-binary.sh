#!/usr/bin/env bash
# Builds the train_step bench (release profile, without running it) and
# prints the path of its executable, for make-dist.sh and gpu-check.
set -euo pipefail
cargo bench --no-run --quiet --bench train_step --message-format=json |
  grep -o '"executable":"[^"]*train_step-[^"]*"' | tail -n 1 | cut -d'"' -f4
