"""Command-line options generated from ``pipeline/config.py``'s field metadata.

``add_options(parser, TrainConfig, "train")`` adds one ``--flag`` per field that the command
offers, with the field's parser, help and default in the help text.  Every option defaults to
``None`` on the parser, so ``given(args, cls, command)`` tells the options the user typed from
the ones left at their default (a recipe or a resumed run's stored value then stands).
Values are checked by the field's validator: a bad value exits 2 naming the option.
"""
from __future__ import annotations

import argparse
import dataclasses

from spikeline.errors import BadInput
from spikeline.pipeline.config import check_value, flag_of, option_fields


def _argparse_type(f):
    parse = f.metadata.get("parse")

    def convert(text):
        try:
            value = parse(text) if parse is not None else text
            check_value(f, value)
        except (ValueError, BadInput) as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    convert.__name__ = f.name  # argparse names the type in some messages
    return convert


def _default_text(f, defaults: dict) -> str:
    if f.name in defaults:
        value = defaults[f.name]
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        value = f.default_factory()
    return "" if value is None else f" (default {value})"


def add_options(parser: argparse.ArgumentParser, cls, command: str,
                defaults: dict | None = None, skip: tuple[str, ...] = ()) -> None:
    """Add ``cls``'s options for ``command``; ``defaults`` overrides shown defaults."""
    defaults = defaults or {}
    for f in option_fields(cls, command):
        if f.name in skip:
            continue
        help_text = f.metadata["help"] + _default_text(f, defaults)
        if f.type in ("bool", bool):
            parser.add_argument(flag_of(f), dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
            continue
        parser.add_argument(flag_of(f), dest=f.name, default=None, type=_argparse_type(f),
                            metavar=f.name.upper() if f.metadata.get("choices") is None
                            else "{" + ",".join(map(str, f.metadata["choices"])) + "}",
                            help=help_text)


def given(args: argparse.Namespace, cls, command: str) -> dict:
    """The options of ``cls`` the user gave on the command line."""
    return {f.name: getattr(args, f.name) for f in option_fields(cls, command)
            if getattr(args, f.name, None) is not None}
