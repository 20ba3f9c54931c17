#!/usr/bin/env bash
# The test command: set up (idempotent) and run the fast test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
