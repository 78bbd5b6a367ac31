"""``partopt sweep`` and ``partopt report``: the experiment subcommands.

:func:`add_parsers` is called by :mod:`partopt.cli` with its subparsers.
Errors the user can cause raise :class:`UsageError` (a
:class:`~partopt.errors.PartoptError`) with a one-line message, which the
main CLI prints before exiting with code 1.
Heavy imports (solvers, Dask, matplotlib) happen inside the commands, so
``partopt --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

from partopt.cli.common import int_at_least
from partopt.errors import PartoptError

__all__ = ["UsageError", "add_parsers", "cmd_sweep", "cmd_report"]


class UsageError(PartoptError):
    """A usage problem; printed as one line."""


def cmd_sweep(args) -> int:
    from partopt.experiments.config import load_config
    from partopt.experiments.runner import run_sweep

    config = load_config(args.config, check_methods=False)  # run_sweep checks the ones it runs
    methods = None
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise UsageError(
                f"--methods {args.methods!r} names no method; give some of "
                f"{', '.join(config.methods)} (comma-separated)"
            )
    out = Path(args.out) if args.out else config.results
    if out is None:
        raise UsageError(f"config {args.config} names no results file; give --out FILE")
    if args.dry_run:
        from partopt.experiments.records import read_records

        done = {r["run_key"] for r in read_records(out)}
        runs = [r for r in config.runs if methods is None or r.method in methods]
        todo = sum(r.key not in done for r in runs)
        from partopt import solvers

        missing = [m for m in config.methods if m not in solvers.available()]
        print(
            f"{config.name}: {len(runs)} runs ({', '.join(config.methods)}), "
            f"{len(runs) - todo} already in {out}, {todo} to run"
            + (f"; not registered yet: {', '.join(missing)}" if missing else "")
        )
        return 0
    redo = [m.strip() for m in args.redo.split(",") if m.strip()] if args.redo else []
    summary = run_sweep(
        config,
        out,
        jobs=args.jobs,
        scheduler=args.scheduler,
        limit=args.limit,
        methods=methods,
        redo=redo,
        progress=not args.quiet,
    )
    print(summary.line())
    for failure in summary.failures[:5]:
        print(f"  failed: {failure}", file=sys.stderr)
    return 1 if summary.failures else 0


def cmd_report(args) -> int:
    from partopt.report import write_report

    if args.paper and not args.template:
        raise UsageError("--paper FILE needs --template FILE (the Markdown to render)")
    missing: list[str] = []
    written = write_report(
        args.results,
        args.out,
        published_dir=args.published,
        template=args.template,
        paper=args.paper,
        missing=missing,
    )
    print(
        f"wrote {len(written)} files to {args.out}"
        + (f" and {written[-1]}" if args.template else "")
    )
    if missing:
        print(
            f"partopt: {len(missing)} template directives have no data yet (shown as n/a): "
            + ", ".join(missing[:8])
            + (", ..." if len(missing) > 8 else ""),
            file=sys.stderr,
        )
    return 0


def add_parsers(subparsers) -> None:
    """Add the ``sweep`` and ``report`` subcommands to ``partopt``'s subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run an experiment config, appending one JSON record per run (resumable)",
        description="Run every (instance, method, seed) of CONFIG that is not yet in the results "
        "file. Safe to kill and rerun: finished runs are skipped.",
    )
    p.add_argument("config", metavar="CONFIG", help="sweep config (.toml or .yaml)")
    p.add_argument("--out", metavar="FILE", help="results file (JSON lines; default: the config's)")
    p.add_argument(
        "--jobs",
        "-j",
        type=int_at_least(1),
        metavar="J",
        help="worker processes (default: all cores; 1 = no pool)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask distributed cluster (e.g. tcp://host:8786)",
    )
    p.add_argument(
        "--limit", type=int_at_least(1), metavar="N", help="run at most N new runs this time"
    )
    p.add_argument(
        "--methods", metavar="A,B", help="only these of the config's methods (comma-separated)"
    )
    p.add_argument(
        "--redo",
        metavar="A,B",
        help="drop these methods' records of this config and run them again",
    )
    p.add_argument("--dry-run", action="store_true", help="count runs done and to do, run nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser(
        "report",
        help="turn sweep records into tables (Markdown, CSV) and figures (PNG, PDF)",
    )
    p.add_argument(
        "results",
        metavar="RESULTS",
        nargs="+",
        help="results files (JSON lines) or folders holding them",
    )
    p.add_argument("--out", metavar="DIR", default="report", help="output folder (default: report)")
    p.add_argument(
        "--published",
        metavar="DIR",
        help="the original study's per-configuration CSVs (default: paper/data if present)",
    )
    p.add_argument(
        "--template",
        metavar="FILE",
        help="a Markdown template whose {{...}} directives pull in generated files",
    )
    p.add_argument("--paper", metavar="FILE", help="where to write the rendered template")
    p.set_defaults(func=cmd_report)
