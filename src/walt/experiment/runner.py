"""An experiment's output folder: the settings it was made with and the stages it has finished.

    check_settings(out / "settings.json", settings, "a demo run", "pass --fresh to replace it")
    log = StageLog(out / "stages.json", order=("vae", "cache", "walt"))
    info = log.run("vae", lambda: train_vae_stage(...))     # the stored record, or run it now and store it

Every experiment (`walt demo`, `walt study`, `walt bench`) is a sequence of stages whose results
are JSON records. A rerun into the same folder reuses the finished ones, which makes a killed run
resumable, but only when the settings are the ones the folder was made with: otherwise its
numbers would mix two experiments, so `check_settings` refuses the folder (before any work) and
names what differs. The trainers and the latent cache also resume *inside* a stage from their own
checkpoints / shards.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from walt.errors import UserError
from walt.io import write_json

__all__ = ["SettingsError", "check_settings", "changed_settings", "StageLog", "reporter", "remove"]


class SettingsError(UserError):
    """The output folder holds a run with other settings (raised before any work)."""


def changed_settings(old: dict[str, Any], new: dict[str, Any], reusable: Iterable[str] = ()) -> list[str]:
    """What differs: each key of the "config" entries (outside `reusable`), then the other top-level keys."""
    reusable = set(reusable)
    oc, nc = old.get("config") or {}, new.get("config") or {}
    keys = [k for k in sorted(set(oc) | set(nc)) if k not in reusable and oc.get(k) != nc.get(k)]
    return keys + [k for k in sorted(set(old) | set(new)) if k != "config" and old.get(k) != new.get(k)]


def check_settings(path: Path, settings: dict[str, Any], what: str, remedy: str, reusable: Iterable[str] = (),
                   error: type[SettingsError] = SettingsError) -> None:
    """Refuse a folder whose `path` records other settings (`error` naming them), then record these.

    `reusable`: config keys that may change between runs without invalidating the stages (how
    long to train, how to sample): the demo's budget, for one.
    """
    settings = json.loads(json.dumps(settings, default=float))  # as it will read back
    if path.is_file():
        changed = changed_settings(json.loads(path.read_text()), settings, reusable)
        if changed:
            raise error(f"{path.parent} holds {what} with other settings ({', '.join(changed)}); {remedy}")
    write_json(path, settings)


class StageLog:
    """The finished stages of a run as JSON records, in their `order` (later stages depend on earlier).

    `path` a .json file: every stage in one document ({"stages": {name: record}}); a folder: one
    file per stage (`<name>.json`), for runs with many small stages. Written atomically either way.
    """

    def __init__(self, path: str | Path, order: Sequence[str] = ()):
        self.path, self.order = Path(path), tuple(order)
        self.one_file = self.path.suffix == ".json"
        self.stages: dict[str, dict[str, Any]] = {}
        if self.one_file and self.path.is_file():
            self.stages = json.loads(self.path.read_text()).get("stages", {})
        elif not self.one_file and self.path.is_dir():
            self.stages = {p.stem: json.loads(p.read_text()) for p in sorted(self.path.glob("*.json"))}

    def get(self, name: str) -> dict[str, Any] | None:
        return self.stages.get(name)

    def done(self, name: str) -> bool:
        return name in self.stages

    def finish(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        """Record stage `name` as finished with `info`; returns it as it reads back."""
        self.stages[name] = json.loads(json.dumps(info, default=float))
        if self.one_file:
            write_json(self.path, {"stages": self.stages})
        else:
            write_json(self.path / f"{name}.json", self.stages[name])
        return self.stages[name]

    def forget_from(self, name: str) -> None:
        """Forget `name` and every later stage of `order` (their inputs are about to change)."""
        later = self.order[self.order.index(name):] if name in self.order else (name,)
        for s in later:
            if self.stages.pop(s, None) is not None and not self.one_file:
                (self.path / f"{s}.json").unlink(missing_ok=True)
        if self.one_file:
            write_json(self.path, {"stages": self.stages})

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored record of stage `name`, or run `fn()` now and store what it returns (with its seconds)."""
        done = self.get(name)
        if done is not None:
            return done
        t0 = time.perf_counter()
        info = fn()
        info.setdefault("stage_seconds", time.perf_counter() - t0)
        return self.finish(name, info)


def reporter(tag: str) -> Callable[[str], None]:
    """The progress printer of an experiment: `[walt demo] ...` lines, flushed at once."""

    def say(msg: str) -> None:
        print(f"[{tag}] {msg}", flush=True)

    return say


def remove(paths: Iterable[Path]) -> None:
    """Delete files and folders (what `--fresh` starts over from); missing ones are fine."""
    for p in paths:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
