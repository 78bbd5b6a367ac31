"""The base class of every error partopt raises for bad *input*.

The command line turns exactly these into one-line ``partopt: error: ...``
messages with exit status 1; any other exception is a bug and keeps its
traceback. Each module derives its own error from :class:`PartoptError`
(``ModelError``, ``ClusterError``, ``InvalidPlan``, ...), so callers can
catch one family or all of them. It is a :class:`ValueError`, so code that
catches ``ValueError`` around partopt calls keeps working.
"""

from __future__ import annotations

__all__ = ["PartoptError", "first_line"]


class PartoptError(ValueError):
    """Bad input to partopt: a model, cluster, plan, config or argument it refuses."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    r"""The first line of ``exc``'s message (its type name when empty), cut at ``limit`` characters.

    Examples
    --------
    >>> first_line(ValueError("bad shape\nmore detail")), first_line(KeyError()), first_line(OSError("x" * 9), 4)
    ('bad shape', 'KeyError', 'xxxx')
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
