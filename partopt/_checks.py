"""Argument checks at the Python API boundary: one wording for every public entry point.

Type errors raise :class:`TypeError`, bad values :class:`ValueError` (or the
caller's :class:`~partopt.errors.PartoptError` subclass); both name the
argument, so ``Cluster.uniform(-2, ...)`` says ``num_nodes`` rather than
failing inside numpy.

Examples
--------
>>> check_int(3, "num_nodes", minimum=1)
3
>>> check_int(2.5, "num_nodes")
Traceback (most recent call last):
...
TypeError: num_nodes must be an integer, got 2.5 (float)
>>> check_real(float("nan"), "time_limit_s", minimum=0.0)
Traceback (most recent call last):
...
ValueError: time_limit_s must be a number >= 0, got nan
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_real", "is_number"]


def is_number(value: object) -> bool:
    """True for ints and floats (numpy's included), false for bools, strings and ``None``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    error: type[ValueError] = ValueError,
) -> int:
    """``value`` as an ``int``; ``TypeError`` unless it is an integer, ``error`` if below ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    out = int(value)
    if minimum is not None and out < minimum:
        raise error(f"{name} must be at least {minimum}, got {out}")
    return out


def check_real(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    allow_inf: bool = False,
    error: type[ValueError] = ValueError,
) -> float:
    """``value`` as a ``float``; ``TypeError`` unless it is a number, ``error`` if out of range.

    ``nan`` is always refused, ``inf`` only allowed with ``allow_inf``;
    ``positive`` demands ``> 0``, ``minimum`` demands ``>= minimum``.
    """
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    out = float(value)  # type: ignore[arg-type]
    if positive:
        wanted = "a positive number"
    elif minimum is not None:
        wanted = f"a number >= {minimum:g}"
    else:
        wanted = "a number"
    if not allow_inf and math.isinf(out):
        wanted = "a finite " + wanted.removeprefix("a ")
    bad = (
        math.isnan(out)
        or (math.isinf(out) and not allow_inf)
        or (positive and not out > 0)
        or (minimum is not None and out < minimum)
    )
    if bad:
        raise error(f"{name} must be {wanted}, got {out!r}")
    return out
