#!/usr/bin/env bash
# Fetches the 8×8 digits data set: the copy shipped inside the scikit-learn
# wheel (downloaded without dependencies), extracts
# sklearn/datasets/data/digits.csv.gz into data/cache and verifies its
# checksum. Idempotent: does nothing when the verified file is present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/cache"
target="$cache/digits.csv.gz"
sums="$here/digits.sha256"
python="${PYTHON:-python3}"
sklearn_version="1.5.2"

verify() { (cd "$cache" && sha256sum --quiet -c "$sums" >/dev/null 2>&1); }

mkdir -p "$cache"
if [ -f "$target" ] && verify; then
  exit 0
fi
tmp="$(mktemp -d "$cache/.wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching digits: scikit-learn==$sklearn_version wheel (no dependencies)"
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  "scikit-learn==$sklearn_version" -d "$tmp"
wheel="$(ls "$tmp"/scikit_learn-*.whl | head -n1)"
"$python" - "$wheel" "$tmp/digits.csv.gz" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with open(sys.argv[2], "wb") as out:
        out.write(z.read("sklearn/datasets/data/digits.csv.gz"))
PY
mv "$tmp/digits.csv.gz" "$target.partial"
if ! (cd "$cache" && sha256sum "digits.csv.gz.partial" | sed 's/\.partial$//' | diff -q - "$sums" >/dev/null); then
  echo "digits.csv.gz from the wheel does not match data/digits.sha256; refusing it" >&2
  rm -f "$target.partial"
  exit 1
fi
mv "$target.partial" "$target"
echo "digits: $target (checksum verified)"
