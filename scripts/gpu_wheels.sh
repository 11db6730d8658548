#!/usr/bin/env bash
# Download the wheels listed in scripts/gpu_wheels.txt for the GPU machine (CPython 3.12, manylinux x86-64)
# into .whl/ (ignored by git), which scripts/gpu_check.sh installs there with pip --no-index. Run it where
# pip can reach PyPI; the GPU machine has no network. Refuses to leave more than 64 MiB (what travels).
#   bash scripts/gpu_wheels.sh [LIST]          # default list: scripts/gpu_wheels.txt
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=${1:-scripts/gpu_wheels.txt}
DEST=${WHEELS:-.whl}
LIMIT=$((64 * 1024 * 1024))
mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$LIST" | grep -v '^$' || true)
mkdir -p "$DEST"
if [ "${#PKGS[@]}" -eq 0 ]; then
  echo "gpu_wheels: nothing to carry ($LIST lists no package); $DEST is left as it is"
  exit 0
fi
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
${PYTHON:-python3} -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PKGS[@]}"
size=$(du -sb "$DEST" | cut -f1)
if [ "$size" -gt "$LIMIT" ]; then
  echo "gpu_wheels: $DEST holds $((size / 1024 / 1024)) MiB, over the 64 MiB that can travel; trim $LIST" >&2
  exit 1
fi
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheel(s), $((size / 1024 / 1024)) MiB in $DEST"
