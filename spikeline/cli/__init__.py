"""The `spikeline` command: the one place that ties datasets/, pipeline/ and deploy/ together.

Each submodule adds its subcommands with ``register(subparsers)``; a handler returns the exit
code.  Errors meant for users (bad files, missing data) are ``SpikelineError``s: printed to
stderr without a traceback, exit code 2 (1 for ``VerifyFailed``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from spikeline.errors import SpikelineError

# Subcommand modules, in the order `spikeline --help` lists them.
_MODULES = ["data", "train", "detect", "deploy", "energy", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeline",
        description="Event data -> trained SNN -> verified neuromorphic artifact -> energy.",
    )
    from spikeline import __version__

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
