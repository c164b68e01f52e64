#!/usr/bin/env bash
# Fetches the 8×8 digits data set: the copy shipped inside the scikit-learn
# wheel (downloaded without dependencies), extracts
# sklearn/datasets/data/digits.csv.gz into data/cache (or $TASER_DATA_DIR) and
# verifies its checksum (data/digits.sha256). Idempotent. The scikit-learn
# wheel is platform-specific, so only the extracted file is pinned.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/fetch-from-wheel.sh" "scikit-learn==1.5.2" \
  "sklearn/datasets/data/digits.csv.gz" "$here/digits.sha256"
