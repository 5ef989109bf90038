"""The exceptions users see.  Each names the file, field or node and what was expected.

The CLI prints any ``SpikelineError`` without a traceback and exits 2 (``VerifyFailed``: 1).
Raise the most specific kind, so that callers can tell them apart:

- ``DataNotFound``       a dataset or file that is not where it should be (says where, and the URL)
- ``BadInput``           a file, field or option whose content is not what was expected
- ``ExportUnsupported``  a network that a target format cannot express (export skips that format)
- ``VerifyFailed``       an artifact that does not spike like the trained network
"""
from __future__ import annotations

import os

__all__ = ["SpikelineError", "DataNotFound", "BadInput", "ExportUnsupported", "VerifyFailed",
           "check_size"]


class SpikelineError(Exception):
    """A user-facing error: bad input file, missing data, unsupported node...

    The CLI prints it without a traceback and exits 2.  Raise it (or a subclass) with a message
    that names the thing (file, field, node) and says what was expected.
    """

    exit_code = 2


class DataNotFound(SpikelineError):
    """A dataset, recording or run folder that is not there."""


class BadInput(SpikelineError):
    """A file, field or option whose content is not what was expected."""


class ExportUnsupported(SpikelineError):
    """The network uses something the target format (netx, Lava, a peer) cannot express."""


class VerifyFailed(SpikelineError):
    """An exported artifact disagrees with the trained network (the CLI exits 1)."""

    exit_code = 1


# Allocations sized by a file's content are checked against this many bytes before they are
# made (a 20 KB file must not claim 6 GB).  Raise it with SPIKELINE_MAX_BYTES.
def max_bytes() -> int:
    return int(os.environ.get("SPIKELINE_MAX_BYTES", str(4 << 30)))


def check_size(nbytes: int | float, what: str) -> None:
    """Refuse an allocation of ``nbytes`` for ``what`` (a file and field) above ``max_bytes()``."""
    limit = max_bytes()
    if not nbytes <= limit:  # also refuses NaN
        raise BadInput(f"{what} would need {nbytes / 2**30:.3g} GiB, above the limit of "
                       f"{limit} bytes ({limit / 2**30:.3g} GiB); raise it with "
                       "SPIKELINE_MAX_BYTES=<bytes> if this is intended")
