"""Where commands write: one check of an output folder or file before any work is done."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput

__all__ = ["output_dir", "output_file"]


def output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a folder that can be written: created if missing (parents too); refused with
    ``BadInput`` naming ``option`` when it is an existing file or not writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BadInput(f"{option} {p}: is an existing file, expected a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"{option} {p}: cannot create the folder ({err.strerror})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {p}: the folder is not writable")
    return p


def output_file(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a file to (over)write: its folder must exist or be creatable, and be
    writable; the path itself must not be a folder."""
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{option} {p}: is a folder, expected a file name")
    output_dir(p.parent if str(p.parent) else ".", option)
    return p
