"""Where the numbers were measured: the machine description every experiment's report states.

`machine_info(device)` is the JSON record (CPU model, cores usable here, torch threads, memory,
load average, GPU); `machine()` the one-line form for a report's header. The load average is
part of it because other jobs on a shared machine lengthen every timing.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["cpu_model", "load_average", "machine_info", "machine"]


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none): how busy the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Everything about the machine a results table must state (JSON-able)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(), "device": str(device), "load_average": load_average(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"{os.cpu_count()}-core CPU ({cpu_model()}), {torch.get_num_threads()} threads, torch {torch.__version__}"
