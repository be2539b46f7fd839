"""The project's one exception type.

Every layer raises :class:`AutolabelError` (or a subclass) for bad input, so the CLI can show one
line and exit non-zero instead of a traceback. It lives in the bottom layer so that every package
can raise it without importing upwards.
"""

from __future__ import annotations


class AutolabelError(Exception):
    """Bad input or an impossible request; the message names the input and the problem."""


class GeometryError(AutolabelError):
    """Invalid geometric input (non-rotation matrix, wrong array shape, non-finite values)."""


class InputError(AutolabelError):
    """A file, directory or dataset entry that is missing, malformed or inconsistent."""
