"""Subcommands of the `walt` CLI.

Each module here defines `HELP` (one line), `add_args(parser)` and `run(args) -> int`, and keeps
heavy imports (torch, models) inside `run` so `walt --help` stays instant. User mistakes raise
`walt.errors.UserError` (one line, exit code 2, no traceback). Shared by them: `args` (checking
flag values) and `files` (devices, output folders, checkpoints, datasets, the written samples);
`sample_cascade` and `eval_fvd` are the text-to-video half of `walt sample` and the FVD half of
`walt eval`. This table is the one place modules are imported by name.
"""

from __future__ import annotations

import importlib

# Order = order in `walt --help`.
SUBCOMMANDS = {
    "demo": "demo",
    "train-vae": "train_vae",
    "encode": "encode",
    "train": "train",
    "sample": "sample",
    "eval": "eval",
    "bench": "bench",
    "study": "study",
}


def load_all():
    """Import every subcommand module that exists; returns {name: module}."""
    mods = {}
    for name, module in SUBCOMMANDS.items():
        mods[name] = importlib.import_module(f"walt.commands.{module}")
    return mods
