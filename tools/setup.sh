#!/usr/bin/env bash
# Idempotent set-up: .venv with the CPU torch, spikeline (editable), lava-nc/lava-dl (patched for
# Python 3.11, docs/reference.md §4), the test-only peers (SpikingJelly, snnTorch, NeuroBench) and
# the documentation tools (mkdocs, the `docs` extra).
# A second run only checks a stamp and returns; change any input below and it reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # GPU users: TORCH_SPEC='torch==2.13.0' with PyPI's CUDA index
STAMP=.venv/.spikeline-installed
KEY=$(cat pyproject.toml tools/setup.sh tools/patch_lava.py | sha256sum | cut -c1-16)-$TORCH_SPEC

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade "pip>=23" setuptools wheel
pip install "$TORCH_SPEC"                       # first, so nothing else picks a CUDA build
pip install -e ".[test,docs]"
# lava-nc 0.10.0 / lava-dl 0.6.0 declare Python < 3.11 and pin torch 2.3: install their real
# needs, then the wheels without dependency resolution, then the three source fixes.
pip install "networkx<=2.8.7" "asteval<0.10" scipy
pip install --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
.venv/bin/python tools/patch_lava.py
# Peers we verify exports against.  spikingjelly and neurobench declare torchvision/torchaudio,
# whose PyPI wheels do not fit the CPU torch (they fail at import): install without them.
pip install "snntorch==1.0.0" loguru numba llvmlite
pip install --no-deps spikingjelly==2.0.0 neurobench==2.3.0
.venv/bin/python -c "import torch, lava.lib.dl.slayer, lava.lib.dl.netx, spikingjelly, snntorch, neurobench, spikeline, mkdocs, mkdocstrings"
echo "$KEY" > "$STAMP"
echo "spikeline set-up complete (.venv, $(.venv/bin/python -c 'import torch;print("torch",torch.__version__)'))"
