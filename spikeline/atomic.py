"""Atomic writes: a file is either its old self or completely the new one, never half written.

Caches, checkpoints, exports and reports all write through here: a temporary file beside the
target, renamed over it with ``os.replace`` (atomic on POSIX and Windows) once fully written,
removed if the write fails.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``.

    ``fsync`` flushes the data to disk before the rename (checkpoints, reports), so a crash
    right after cannot leave an empty file in its place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is an ordinary output
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = False):
    """A binary file object to write ``path`` through (see ``atomic_path``)."""
    with atomic_path(path, fsync) as tmp:
        with open(tmp, "wb") as fh:
            yield fh
