"""The base class of every error partopt raises for bad *input*.

The command line turns exactly these into one-line ``partopt: error: ...``
messages with exit status 1; any other exception is a bug and keeps its
traceback. Each module derives its own error from :class:`PartoptError`
(``ModelError``, ``ClusterError``, ``InvalidPlan``, ...), so callers can
catch one family or all of them. It is a :class:`ValueError`, so code that
catches ``ValueError`` around partopt calls keeps working.
"""

from __future__ import annotations

__all__ = ["PartoptError"]


class PartoptError(ValueError):
    """Bad input to partopt: a model, cluster, plan, config or argument it refuses."""
