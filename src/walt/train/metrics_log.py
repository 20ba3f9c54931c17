"""Rank-0 training metrics: an append-only CSV plus TensorBoard scalars when it is installed.

Both training loops (autoencoder and transformer) log the same way: one row every `log_every`
steps with the window means of every loss term and the throughput. On resume, rows past the
checkpoint being resumed are dropped (atomically), so the CSV of an interrupted-and-resumed run
has each step once, like an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from walt.io import atomic_write

__all__ = ["MetricsLog"]


class MetricsLog:
    """`log = MetricsLog(out_dir, columns, resume_step, tensorboard)`; `log.write(row)`; `log.close()`.

    Writes `out_dir/log.csv` (header = `columns`, missing values empty, extra keys ignored) and,
    with `tensorboard=True` and the optional `tensorboard` package installed, scalars under
    `out_dir/tb` tagged `train/<column>`. `resume_step=None` starts a fresh CSV.
    """

    def __init__(self, out_dir: str | Path, columns: Sequence[str], resume_step: int | None = None,
                 tensorboard: bool = True):
        out_dir = Path(out_dir)
        self.columns = tuple(columns)
        self.path = out_dir / "log.csv"
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.path.write_text(",".join(self.columns) + "\n")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                self.tb = None

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
