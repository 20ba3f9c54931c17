"""docs/study/README.md from the two study folders: the committed copy of one real run.

    walt study docs --encoder outputs/study-encoder --ablation outputs/study-ablation --out docs/study

The README opens with the answer to the research question, written by a person from the tables
(between the two `answer` markers; a placeholder until then, and kept as it is when the README is
rebuilt), then how to reproduce it, then both reports (`walt.study.report.render_report`) with
their plots copied next to it. Nothing in it is written by hand except the answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from walt.io import atomic_write, read_json

__all__ = ["write_docs", "ANSWER_START", "ANSWER_END", "PLACEHOLDER"]

ANSWER_START = "<!-- answer: written from the tables below; `walt study docs` keeps what lies between these markers -->"
ANSWER_END = "<!-- /answer -->"
PLACEHOLDER = ("**PLACEHOLDER: 5-10 lines that answer the question on this data go here. Each sentence is backed by a "
               "table row below and its interval, and the lines say which differences are not established.**")


def _answer(readme: Path) -> str:
    """What lies between the markers of an existing README (the placeholder when there is none)."""
    text = readme.read_text() if readme.is_file() else ""
    if ANSWER_START in text and ANSWER_END in text:
        return text.split(ANSWER_START, 1)[1].split(ANSWER_END, 1)[0].strip("\n") or PLACEHOLDER
    return PLACEHOLDER


def _meta(folder: Path, kind: str) -> dict:
    meta = read_json(Path(folder) / "report.json")
    if meta is None or meta.get("kind") != kind:
        raise ValueError(f"{folder} holds no finished `walt study {kind}` (no report.json of that kind); run it first")
    return meta


def write_docs(encoder: str | Path, ablation: str | Path | None, out: str | Path) -> Path:
    """Write out/README.md from the studies in `encoder` (and `ablation`), copying their plots; returns its path."""
    from walt.study.report import IMAGES, render_report

    out = Path(out)
    metas = [(Path(encoder), _meta(encoder, "encoder"))]
    if ablation is not None:
        metas.append((Path(ablation), _meta(ablation, "ablation")))
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.md"
    commands = [m["command"] or f"(Python API, {m['kind']})" for _, m in metas]
    docs_cmd = f"walt study docs --encoder {metas[0][0]}" + (f" --ablation {metas[1][0]}" if len(metas) > 1 else "")
    md = ["# Study: the causal encoder's design vs generation quality and throughput", "", ANSWER_START,
          _answer(readme), ANSWER_END, "", "## Reproduce", "", "```", *commands, f"{docs_cmd} --out {out}", "```", "",
          f"Machine: {metas[0][1]['machine'].get('cpu')} ({metas[0][1]['machine'].get('usable_cpus')} usable CPUs), "
          f"torch {metas[0][1]['machine'].get('torch')}. Everything below is generated from the two output folders "
          f"(report.json; written {', '.join(m['written'] for _, m in metas)}).", ""]
    for folder, meta in metas:
        md += [render_report(meta, level=2), ""]
        for name in IMAGES[meta["kind"]]:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, out / name)
    text = "\n".join(md)
    atomic_write(readme, lambda tmp: Path(tmp).write_text(text))
    return readme
