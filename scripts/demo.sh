#!/usr/bin/env bash
# The main job: set up (idempotent), then run `walt demo` end to end on the built-in dataset.
# Extra arguments go to `walt demo` (e.g. --minutes 30 --out outputs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/walt demo "$@"
