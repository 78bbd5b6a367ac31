"""The ``partopt`` command: the parser of every subcommand, and how errors end.

An error the user can cause (a :class:`~partopt.errors.PartoptError`, an
unreadable file, a bad option) is one line on stderr and exit status 1, no
traceback; ``partopt solve`` uses status 2 for "no plan". Any other
exception is a bug in partopt and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from partopt.cli import experiments, pipeline, plan
from partopt.errors import PartoptError, first_line

__all__ = ["build_parser", "main"]

SUBCOMMAND_MODULES = (plan, experiments, pipeline)
"""Each adds its subcommands with ``add_parsers(subparsers)``, in this order."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error and exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="partopt",
        description="Split a DNN across an edge cluster as a pipeline with the smallest bottleneck.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in SUBCOMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    msg = first_line(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    return msg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("partopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (PartoptError, OSError) as exc:
        print(f"partopt: error: {_one_line(exc)}", file=sys.stderr)
        return 1
