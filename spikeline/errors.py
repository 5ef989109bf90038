"""The one exception type users see: it names the file/field and what was expected."""


class SpikelineError(Exception):
    """A user-facing error: bad input file, missing data, unsupported node...

    The CLI prints it without a traceback and exits 2.  Raise it (or a subclass) with a message
    that names the thing (file, field, node) and says what was expected.
    """
