"""Rendering the paper's template: ``{{number}}``, ``{{table}}``, ``{{csv}}`` and ``{{figure}}`` directives."""

from __future__ import annotations

import re
from pathlib import Path

from partopt.report import (  # noqa: F401
    ReportError,
    _fmt_any,
)

# -- the paper ------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"\{\{\s*(table|figure|number|csv)\s+([^\s}]+)\s*(?:\|\s*([^}]*?)\s*)?\}\}")

__all__ = ["render_template"]


def _format_number(value, spec: str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if spec:
        return format(value, spec)
    return _fmt_any(value) if isinstance(value, float) else str(value)


def render_template(
    template: str,
    generated: Path,
    relative_to: Path,
    numbers: dict,
    missing: list[str] | None = None,
) -> str:
    """Fill a paper template's directives from the generated files.

    ``{{table NAME}}`` includes ``tables/NAME.md``; ``{{csv NAME}}`` links
    ``tables/NAME.csv``; ``{{figure NAME | caption}}`` links
    ``figures/NAME.png`` (with a link to the PDF); ``{{number KEY | fmt}}``
    inserts a value of ``numbers.json`` with a Python format spec
    (``.1%`` = percent with one decimal). Paths are written relative to
    ``relative_to`` (the paper's folder). A directive naming nothing
    generated raises :class:`ValueError`, unless a ``missing`` list is
    given: then it is rendered as "n/a" and its name appended to the list
    (results still to come).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> render_template("x = {{number a.b | .2f}}, {{number c | .1%}}", d, d, {"a.b": 1.2345, "c": 0.5})
    'x = 1.23, 50.0%'
    """

    def rel(p: Path) -> str:
        import os

        return Path(os.path.relpath(p, relative_to)).as_posix()

    def sub(m: re.Match) -> str:
        kind, name, arg = m.group(1), m.group(2), m.group(3)

        def absent(what: str) -> str:
            if missing is None:
                raise ReportError(f"template: no generated {what} {name!r}")
            missing.append(f"{what} {name}")
            return "n/a" if kind == "number" else f"*({what} {name}: no data yet)*"

        if kind == "number":
            if name not in numbers:
                return absent("number")
            return _format_number(numbers[name], arg)
        if kind == "table":
            p = generated / "tables" / f"{name}.md"
            if not p.exists():
                return absent("table")
            return p.read_text().rstrip("\n") + f"\n\n([CSV]({rel(p.with_suffix('.csv'))}))"
        if kind == "csv":
            p = generated / "tables" / f"{name}.csv"
            if not p.exists():
                return absent("table")
            return f"[{arg or name + '.csv'}]({rel(p)})"
        p = generated / "figures" / f"{name}.png"
        if not p.exists():
            return absent("figure")
        return f"![{arg or name}]({rel(p)})\n\n*{arg or ''}* ([PDF]({rel(p.with_suffix('.pdf'))}))"

    return _DIRECTIVE.sub(sub, template)
