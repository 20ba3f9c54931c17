"""The `walt` command line (also `python -m walt`).

Each subcommand validates its arguments up front and exits non-zero with a one-line reason on
bad input; user errors never print a traceback. Heavy imports happen inside the subcommand so
`walt --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from walt import __version__
from walt.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ONE line on stderr, exit code 2.

    argparse's default prints the whole usage block before the message; here a wrong flag reads
    `walt sample: error: argument --steps: invalid int value: 'abc' (see walt sample --help)`.
    Sub-parsers (`walt CMD`, `walt study encoder`) inherit the class through `add_subparsers`.
    """

    def error(self, message: str):  # type: ignore[override]
        msg = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {msg} (see {self.prog} --help)\n")


# name -> (help, add_args(parser), run(args) -> exit code), filled from walt.commands.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="walt", description="W.A.L.T video generation (Gupta et al. 2023) in PyTorch.")
    p.add_argument("--version", action="version", version=f"walt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add_args(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    _register_all()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _, _, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except UserError as e:
        print(f"walt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"walt {args.command}: interrupted", file=sys.stderr)
        return 130


def _register_all() -> None:
    """Register the subcommand modules of `walt.commands` (kept light: no torch at import)."""
    from walt.commands import load_all

    for name, mod in load_all().items():
        COMMANDS[name] = (mod.HELP, mod.add_args, mod.run)
