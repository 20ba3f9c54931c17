#!/usr/bin/env bash
# The test command: set up (idempotent) and run the fast test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One BLAS thread: the FVD eigendecompositions stall when BLAS threads compete with torch.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
.venv/bin/python -m pytest -q "$@"
