"""What every ``partopt`` subcommand shares: formatting, argument types, model inputs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from partopt.errors import PartoptError

__all__ = [
    "CliError",
    "float_above",
    "float_at_least",
    "fmt_bytes",
    "fmt_s",
    "input_shapes",
    "int_at_least",
    "sample_inputs",
    "table",
]


class CliError(PartoptError):
    """A usage problem; printed as one line."""


# -- formatting -------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    """Bytes in binary units, as the tables print them.

    Examples
    --------
    >>> fmt_bytes(3 * 2**20), fmt_bytes(512), fmt_bytes(None)
    ('3.00 MB', '512 B', '?')
    """
    if n is None:
        return "?"
    if not math.isfinite(n):
        return "inf"
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_s(t: float | None) -> str:
    """Seconds with a unit that keeps three significant figures.

    Examples
    --------
    >>> fmt_s(0.0123), fmt_s(2e-6), fmt_s(None)
    ('12.30 ms', '2.0 us', '-')
    """
    if t is None:
        return "-"
    if not math.isfinite(t):
        return "inf"
    if t == 0:
        return "0 s"
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.3f} s"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Right-aligned plain-text table with a rule under the headers."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


# -- argument types (argparse names the option in its error) -----------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum``.

    Examples
    --------
    >>> int_at_least(0)("3")
    3
    >>> int_at_least(0)("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 0, got '-1'
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_type(minimum: float, strict: bool) -> Callable[[str], float]:
    word = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be a number {word} {minimum:g}, got {text!r}")
        return value

    parse.__name__ = f"number {word} {minimum:g}"
    return parse


def float_at_least(minimum: float) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers ``>= minimum`` (``nan`` and ``inf`` refused).

    Examples
    --------
    >>> float_at_least(0)("0.5")
    0.5
    """
    return _float_type(minimum, strict=False)


def float_above(minimum: float) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers ``> minimum``.

    Examples
    --------
    >>> float_above(0)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a number > 0, got '0'
    """
    return _float_type(minimum, strict=True)


# -- model inputs -----------------------------------------------------------


def input_shapes(specs: str | Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape NAME=D1xD2x...`` values (one or a list) as a dict, or None."""
    if not specs:
        return None
    from partopt.onnx_graph import parse_input_shape

    if isinstance(specs, str):
        specs = [specs]
    return dict(parse_input_shape(s) for s in specs)


def sample_inputs(path: str | None) -> dict | None:
    """The arrays of ``--sample-inputs FILE.npz``, or None."""
    if not path:
        return None
    from partopt.probe import load_sample_inputs

    return load_sample_inputs(path)
