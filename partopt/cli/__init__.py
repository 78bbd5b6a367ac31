"""The ``partopt`` command line, one module per group of subcommands.

- :mod:`partopt.cli.plan`: ``inspect``, ``solve``, ``cluster``, ``methods``;
- :mod:`partopt.cli.experiments`: ``sweep``, ``report``;
- :mod:`partopt.cli.pipeline`: ``export``, ``emulate``;
- :mod:`partopt.cli.common`: formatting, argument types and model inputs they share;
- :mod:`partopt.cli.main`: the parser and :func:`main`, which turns user errors
  (:class:`~partopt.errors.PartoptError`) into one-line messages.
"""

from __future__ import annotations

from partopt.cli.common import CliError
from partopt.cli.main import build_parser, main

__all__ = ["CliError", "build_parser", "main"]
