"""Atomic writes: a file is either its old self or completely the new one, never half written.

Caches, checkpoints, exports and reports all write through here: a temporary file beside the
target (``.<name>.<pid>.<random>.tmp``), renamed over it with ``os.replace`` (atomic on POSIX
and Windows) once fully written, removed if the write fails.

- A full disk (``ENOSPC``, also when a library wraps it) becomes a ``SpikelineError`` that says
  "no space left on device" and names the file; the previous file is kept.
- A write killed before its rename leaves its temporary file behind; the next write of the same
  target removes the leftovers of writers that are no longer running.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import SpikelineError

__all__ = ["atomic_path", "atomic_file", "atomic_text"]

log = logging.getLogger(__name__)

_DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError with a disk errno in ``err``'s cause/context chain (torch and h5py wrap it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
            return err
        if "No space left on device" in str(err) or (
                isinstance(err, OSError) and _SHORT_WRITE.search(str(err))):
            # numpy's tofile reports a short write as "N requested and M written", no errno;
            # a regular file is written short only when the disk (or quota) is full
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_leftovers(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by killed writers (not by running ones):
    ``.<name>.<pid>.<random>.tmp``, and ``.<name>.<random>.tmp`` of writers before pids were
    recorded (mkstemp's random part has no dots, so other targets' files never match)."""
    name = re.escape(path.name)
    with_pid, without = re.compile(rf"\.{name}\.(\d+)\.[^.]+\.tmp"), \
        re.compile(rf"\.{name}\.[^.]+\.tmp")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = with_pid.fullmatch(tmp.name)
        if match is None and without.fullmatch(tmp.name) is None:
            continue  # another target's file (``a.b`` beside ``a``)
        if match is not None and _writer_alive(int(match[1])):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
            log.info("removed %s, left by an interrupted write", tmp)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``.

    ``fsync`` flushes the data to disk before the rename (checkpoints, reports), so a crash
    right after cannot leave an empty file in its place.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise SpikelineError(f"{path}: cannot write here ({err.strerror or err})") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is an ordinary output
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as err:
        disk = None if isinstance(err, SpikelineError) else _os_error_in(err)
        if disk is None:
            raise
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise SpikelineError(f"{path}: {_DISK_ERRORS[disk.errno]} ({kept})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = False):
    """A binary file object to write ``path`` through (see ``atomic_path``)."""
    with atomic_path(path, fsync) as tmp:
        with open(tmp, "wb") as fh:
            yield fh


def atomic_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_file(path, fsync) as fh:
        fh.write(text.encode())
    return Path(path)
