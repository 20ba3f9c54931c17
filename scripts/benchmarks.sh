#!/usr/bin/env bash
# Every benchmark in one command: `walt bench` (autoencoder vs CogVideoX, streaming decode,
# transformer tokens/s window vs full, samplers, matmul peak and FLOP utilisation, Latte ratios)
# and the cascade benchmark (seconds per stage at the paper's sizes, 512x896x17 decode), each
# writing JSON + Markdown, then a Markdown fragment for BENCHMARKS.md with the exact command,
# the date, the machine and its load average.
#
#   scripts/benchmarks.sh [--size smoke|cpu|paper] [--out DIR] [--device auto|cpu|cuda] [--threads N] [--no-setup]
#
#   --size smoke   tiny models: checks the whole path in about a minute; the numbers mean nothing
#   --size cpu     (default) reduced `walt bench` sizes + the paper-size cascade (1 warm-up + 2 timed
#                  steps per stage, 50 steps extrapolated; the tiled 512x896 decode of 2 of the 5
#                  latent frames, 17 frames extrapolated). Estimated on an idle 2-core AVX2 AMD EPYC
#                  from counted FLOPs and small timed runs: walt bench ~10 min, cascade ~25 min
#                  (stages ~12, decode ~12); ~35 min in all (30-45 with a fp32 matmul peak of
#                  190-130 GFLOP/s). Peak memory ~13 GB (the 3B base in fp32).
#   --size paper   paper sizes throughout (ucf101 VAE at 17x128x128, W.A.L.T-L, 257-frame
#                  streaming decode, 1000-step DDPM; cascade with 2 warm-up + 5 timed steps and
#                  t2v-base as well): meant for a GPU; hours on a CPU.
#
# Output (git-ignored): DIR (default outputs/bench/<size>) with suite/bench.{json,md},
# cascade/cascade.{json,md}, run.json and BENCHMARKS.fragment.md. Run it on a quiet machine:
# other jobs lengthen every time (the load average is recorded for that reason).
set -euo pipefail
cd "$(dirname "$0")/.."
COMMAND="scripts/benchmarks.sh $*"
SIZE=cpu OUT= DEVICE=auto THREADS= SETUP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=${2:?--size needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
    --threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    --no-setup) SETUP=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "benchmarks.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$SIZE" in
  smoke) SUITE=tiny CASCADE=smoke ;;
  cpu) SUITE=cpu CASCADE=cpu ;;
  paper) SUITE=paper CASCADE=full ;;
  *) echo "benchmarks.sh: --size must be smoke, cpu or paper, got '$SIZE'" >&2; exit 2 ;;
esac
OUT=${OUT:-outputs/bench/$SIZE}
[ "$SETUP" = 1 ] && bash scripts/setup.sh
PY=.venv/bin/python
if [ "$DEVICE" = auto ]; then
  DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi
EXTRA=()
[ -n "$THREADS" ] && EXTRA=(--threads "$THREADS")

"$PY" -m walt.bench.benchmarks_md start --out "$OUT" --command "$COMMAND" --size "$SIZE" --device "$DEVICE" "${EXTRA[@]}"
echo "benchmarks.sh: walt bench --size $SUITE -> $OUT/suite"
"$PY" -m walt bench --size "$SUITE" --device "$DEVICE" --out "$OUT/suite" "${EXTRA[@]}"
echo "benchmarks.sh: cascade --size $CASCADE -> $OUT/cascade"
"$PY" -m walt.bench.cascade_speed --size "$CASCADE" --device "$DEVICE" --out "$OUT/cascade" "${EXTRA[@]}"
"$PY" -m walt.bench.benchmarks_md finish --out "$OUT"
echo "benchmarks.sh: done; paste $OUT/BENCHMARKS.fragment.md into BENCHMARKS.md"
