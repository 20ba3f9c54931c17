"""What both studies do around their rows: settings, FVD reference features, resumable rows, reports.

    sweep = Sweep.start(cfg, out, "encoder", settings, train_data, eval_data, device, i3d, command, data)
    rows = sweep.rows(items, run_row, ...)   # each row reused when finished, else run; the report after each

A study is a list of rows (designs, variants) measured against the same held-out clips under the
same budget. `Sweep.start` refuses a folder that holds another study (`walt.experiment.runner`),
loads the FVD network once, and computes the real clips' I3D features and the real-vs-real FVD
floor once; `Sweep.rows` runs the rows in order, each in its own folder with its stage log
(`stages/<name>.json`), so a killed study continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from walt.config import config_to_dict
from walt.experiment.machine import load_average, machine_info
from walt.experiment.runner import StageLog, check_settings, reporter
from walt.study import fvd as V
from walt.study.config import StudyConfig, StudySettingsError

say = reporter("walt study")


@dataclass
class Sweep:
    """One study's folder and what every row is measured against."""

    cfg: StudyConfig
    out: Path
    kind: str  # "encoder" | "ablation"
    device: torch.device
    command: str | None
    data: str  # a description of the data, for the report
    real: torch.Tensor  # (N, 3, T, H, W) held-out real clips
    i3d: Any = None
    fvd_record: dict[str, Any] | None = None
    real_feats: np.ndarray | None = None
    floor: float | None = None

    @classmethod
    def start(cls, cfg: StudyConfig, out: str | Path, kind: str, settings: dict[str, Any], train_data, eval_data,
              device: str | torch.device, i3d, command: str | None, data_description: str) -> "Sweep":
        """Check the folder's settings (before any work), load the I3D, compute the reference features."""
        out, device = Path(out), torch.device(device)
        if len(eval_data) < cfg.eval_clips:
            raise ValueError(f"the held-out set has {len(eval_data)} clips but eval_clips={cfg.eval_clips}; lower it")
        out.mkdir(parents=True, exist_ok=True)
        i3d, record = V.prepare_fvd(cfg, i3d, device)
        check_settings(out / "study.json", {"kind": kind, "config": config_to_dict(cfg), "data": data_description,
                                            **settings, "fvd": record}, "a study",
                       "use another --out, or delete it to start over", error=StudySettingsError)
        sweep = cls(cfg, out, kind, device, command, data_description, V.stack_videos(eval_data, range(cfg.eval_clips)),
                    i3d, record)
        if i3d is not None:
            sweep.real_feats = V.real_features(i3d, sweep.real, cfg, out / "real_i3d.npy")
            sweep.floor = V.real_vs_real_fvd(i3d, train_data, sweep.real_feats, cfg, out / "train_i3d.npy")
        return sweep

    def rows(self, items: Sequence[tuple[str, str]], run_row: Callable[[int, Path], dict[str, Any]],
             seconds_key: str, done_line: Callable[[dict[str, Any]], str], **report: Any) -> list[dict[str, Any]]:
        """Run (or reuse) every row: `items` are (name, label); `run_row(i, folder)` returns row i."""
        t_start, rows = time.time(), []
        for i, (name, label) in enumerate(items):
            folder = self.out / ("designs" if self.kind == "encoder" else "variants") / name
            log = StageLog(folder / "stages")
            if log.done("result"):
                say(f"[{i + 1}/{len(items)}] {name}: finished earlier, reused")
                rows.append(log.get("result"))
                continue
            say(f"[{i + 1}/{len(items)}] {name} ({label})")
            t0 = time.time()
            row = {**run_row(i, folder), **V.fvd_identity(self.fvd_record)}  # which protocol and network measured it
            row[seconds_key] = time.time() - t0
            row["load_1min"] = (load_average() or [None])[0]
            rows.append(log.finish("result", row))
            say(f"  done in {row[seconds_key] / 60:.1f} min: {done_line(row)}")
            self.report(rows, plots=False, **report)  # plots at the end
        self.report(rows, **report)
        what = "designs" if self.kind == "encoder" else "variants"
        say(f"{len(rows)} {what} in {(time.time() - t_start) / 60:.1f} min this run: {self.out / 'report.md'}")
        return rows

    def report(self, rows: list[dict[str, Any]], **kw: Any) -> None:
        from walt.study.report import write_study_report

        write_study_report(self.out, rows, self.kind, self.cfg, machine_info(self.device), self.command, self.data,
                           self.fvd_record, fvd_floor=self.floor, **kw)
