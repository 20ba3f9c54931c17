"""Cascade benchmark: seconds per stage of a text-to-video sample at the paper's sizes and the memory
of the final 512x896x17 decode.

Thin wrapper: the code (and the full description of what is measured and what is extrapolated)
lives in `walt.bench.cascade_speed`, so that it works from an installed wheel; isolated stages run as
`python -m walt.bench.cascade_speed --case ...` children.

    python -m benchmarks.bench_cascade --size cpu            # paper stages, 1+2 steps each, full decode
    python -m benchmarks.bench_cascade --stages sr2 --steps 3 --no-decode
"""

from __future__ import annotations

from walt.bench.cascade_speed import main

if __name__ == "__main__":
    main(prog="python -m benchmarks.bench_cascade")
