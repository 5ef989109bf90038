"""The `spikeline` command: the one place that ties datasets/, pipeline/ and deploy/ together.

Each submodule adds its subcommands with ``register(subparsers)``; a handler returns the exit
code.  Errors meant for users (bad files, missing data) are ``SpikelineError``s: printed to
stderr without a traceback, exit code 2 (1 for ``VerifyFailed``).

Start-up: building the parser imports every subcommand module, 2.3 s, most of it torch,
which the dataset choices of ``spikeline data`` (``datasets.registry``) import (measured at
load 5).  The library modules a handler needs (``spikeline.workflow``, ``spikeline.deploy.*``,
``pipeline.checkpoint`` / ``diagnose`` / ``detect_train``, nir) are imported inside it, each
marked ``# lazy: CLI start-up (cli/__init__)``: ``spikeline.workflow`` alone adds 3.2 s after
torch (measured at load 4), which ``--help``, a refused flag and the other subcommands do not
pay.  What the parser has loaded already (``pipeline.config``, ``paths``, ``atomic``, the
dataset modules) is imported at the top.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from spikeline import __version__
from spikeline.errors import SpikelineError

# Subcommand modules, in the order `spikeline --help` lists them.
_MODULES = ["data", "train", "detect", "deploy", "energy", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeline",
        description="Event data -> trained SNN -> verified neuromorphic artifact -> energy.",
    )
    parser.add_argument("--version", action="version", version=f"spikeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _MODULES:
        importlib.import_module(f"spikeline.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SpikelineError as err:
        print(f"spikeline: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
