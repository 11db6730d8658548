#!/usr/bin/env bash
# Creates .venv in the checkout and installs the project with every extra the tests need.
# torch is pinned FIRST: an unpinned torch would pull a CUDA build of several GB on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==${TORCH_VERSION}"
# setuptools announces every editable install with an informational UserWarning ("Editable installation ...
# folders with the same name may take precedence"); only that message is filtered, real deprecations still show.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" "${PIP[@]}" -e ".[export,dev,bench]" "tritonclient[grpc,http]>=2.60" "protobuf>=6.31"
# The Triton Inference Server binary (2.51.0, Python backend) ships inside this wheel; only its files are
# used, so its Python dependencies (which pin numpy<2 and protobuf<5) are not installed.
"${PIP[@]}" --no-deps "nvidia-pytriton==0.7.0"
# TensorRT's typed API description (10.x) for the static check of the TensorRT code, in a folder of its own:
# installed into site-packages, a stubs-only `tensorrt` would import as an empty package (see the script).
.venv/bin/python scripts/install_trt_stubs.py .venv/trt-stubs
touch .venv/.coreba-installed
echo "set-up done: $(.venv/bin/python -c 'import torch, sys; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
