"""The BENCHMARKS.md fragment of one `scripts/benchmarks.sh` run.

    python -m walt.bench.benchmarks_md start  --out DIR --command "scripts/benchmarks.sh --size cpu" --size cpu
    ... walt bench --out DIR/suite ... ; python -m walt.bench.cascade_speed --out DIR/cascade ...
    python -m walt.bench.benchmarks_md finish --out DIR

`start` writes DIR/run.json (the exact command, the UTC start time, the machine: CPU model,
cores, threads, torch version, device, memory, load average); `finish` adds the end time and
load average and writes DIR/BENCHMARKS.fragment.md: that header, then the tables of
DIR/suite/bench.md and DIR/cascade/cascade.md, ready to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
FRAGMENT = "BENCHMARKS.fragment.md"
PARTS = (("suite", "bench.md", "walt bench"), ("cascade", "cascade.md", "Cascade (text-to-video)"))


def _utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def start(out: Path, command: str, size: str, device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Record the command, the start time and the machine before anything is measured."""
    import torch

    from walt.experiment.machine import machine_info

    if threads:
        torch.set_num_threads(threads)  # so the header states the threads the parts run with

    out.mkdir(parents=True, exist_ok=True)
    run = {"command": command, "size": size, "started": _utc(), "t0": time.time(),
           "machine": machine_info(None if device in (None, "auto") else device)}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    return run


def _body(md: str) -> str:
    """A part's Markdown without its own H1 title, its headings two levels down (under ## run / ### part)."""
    lines = md.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("##" + l if l.startswith("#") else l for l in lines).strip()


def fragment(out: Path) -> str:
    """The Markdown fragment for BENCHMARKS.md from DIR/run.json and the parts' tables."""
    from walt.experiment.machine import load_average

    run = json.loads((out / RUN_FILE).read_text())
    m = run["machine"]
    wall = time.time() - run["t0"]
    dev = m["device"] + (f" ({m['gpu']}, CUDA {m['cuda']})" if m.get("gpu") else "")
    L = [f"## {run['size']} run on {m['cpu']} ({run['started'][:10]})", "",
         f"- Command: `{run['command']}`",
         f"- Date: {run['started']} to {_utc()} ({wall / 60:.1f} min in all)",
         f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
         f"{m['memory_gb']} GB RAM, {m['os']}; torch {m['torch']} with {m['torch_threads']} threads, "
         f"Python {m['python']}; device {dev}",
         f"- Load average (1/5/15 min): {m['load_average']} at start, {load_average()} at the end "
         "(other work on the machine lengthens every time below)", ""]
    for folder, name, title in PARTS:
        path = out / folder / name
        L += [f"### {title}", "", _body(path.read_text()) if path.exists() else f"(not run: no {folder}/{name})", ""]
    return "\n".join(L).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m walt.bench.benchmarks_md", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("start", "finish"))
    p.add_argument("--out", required=True, help="the run's output folder")
    p.add_argument("--command", default="", help="start: the exact command line that was run")
    p.add_argument("--size", default="", help="start: the size that was run")
    p.add_argument("--device", default=None, help="start: the device the run uses")
    p.add_argument("--threads", type=int, default=None, help="start: torch CPU threads the run uses")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.action == "start":
        start(out, a.command, a.size, a.device, a.threads)
        return
    if not (out / RUN_FILE).exists():
        p.error(f"{out / RUN_FILE} is missing: run `python -m walt.bench.benchmarks_md start --out {out} ...` first")
    (out / FRAGMENT).write_text(fragment(out))
    print(f"wrote {out / FRAGMENT}")


if __name__ == "__main__":
    main()
