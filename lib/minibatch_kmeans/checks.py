"""Value checks every layer shares, and :class:`Rule`, one Param's constraint.

A check returns the value it accepts (an integral float as an int) or raises ``error``
(InvalidParamError unless the caller passes another, the config passes ConfigError) with
the one message shape used everywhere: ``"<name>=<value> is invalid: expected <what>"``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .errors import InvalidParamError

REDACTED = "*********(redacted)"


def fail(name: str, value, expected: str, error=InvalidParamError, secret: bool = False):
    """Raise ``error`` naming what was given (``secret``: redacted) and what was expected."""
    shown = REDACTED if secret else repr(value)
    raise error(f"{name}={shown} is invalid: expected {expected}")


def integer(name: str, value, minimum: Optional[int] = None, optional: bool = False,
            expected: Optional[str] = None, error=InvalidParamError,
            maximum: Optional[int] = None) -> Optional[int]:
    """An integer >= minimum and <= maximum (an integral float is taken as its int)."""
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        fail(name, value, expected or _expected("an integer", "an integer", minimum, maximum,
                                                False, False, optional, str), error)
    return int(value)


def number(name: str, value, minimum: Optional[float] = None,
           maximum: Optional[float] = None, above: bool = False, below: bool = False,
           optional: bool = False, expected: Optional[str] = None,
           error=InvalidParamError) -> Optional[float]:
    """A finite number >= minimum (> with ``above``) and <= maximum (< with ``below``)."""
    if value is None and optional:
        return None
    ok = _is_number(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if below else value <= maximum
    if not ok:
        fail(name, value, expected or _expected("a finite number", "a number", minimum, maximum,
                                                above, below, optional, "{:g}".format), error)
    return float(value)


def _expected(word: str, ranged: str, minimum, maximum, above: bool, below: bool,
              optional: bool, show) -> str:
    """What a bounded value must be: "an integer >= 1", "a number in [0, 1)", "... or
    null"."""
    if minimum is not None and maximum is not None:
        text = (f"{ranged} in {'(' if above else '['}{show(minimum)}, {show(maximum)}"
                f"{')' if below else ']'}")
    elif minimum is not None:
        text = f"{word} {'>' if above else '>='} {show(minimum)}"
    else:
        text = word
    return text + (" or null" if optional else "")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def choice(name: str, value, choices: Sequence[str], fold=None, error=InvalidParamError):
    """One of ``choices`` (after ``fold``, e.g. ``str.lower``, for strings)."""
    key = fold(value) if (fold is not None and isinstance(value, str)) else value
    if key not in choices:
        fail(name, value, f"one of {list(choices)}", error)
    return key


def boolean(name: str, value, error=InvalidParamError) -> bool:
    if not isinstance(value, bool):
        fail(name, value, "true or false", error)
    return value


def string(name: str, value, optional: bool = False, nonempty: bool = True,
           error=InvalidParamError) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (nonempty and not value.strip()):
        fail(name, value, "a non-empty string" + (" or null" if optional else ""), error)
    return value


def names(name: str, value, error=InvalidParamError) -> Tuple[str, ...]:
    """A non-empty list of distinct, non-empty column names, as a tuple."""
    if not isinstance(value, (list, tuple)) or not value:
        fail(name, value, "a non-empty list of column names", error)
    for i, item in enumerate(value):
        string(f"{name}[{i}]", item, error=error)
    dupes = sorted({item for item in value if list(value).count(item) > 1})
    if dupes:
        fail(name, value, f"distinct column names (repeated: {dupes})", error)
    return tuple(value)


@dataclass(frozen=True)
class Rule:
    """One Param's constraint, written once and read by the estimator, the fit's
    :class:`~minibatch_kmeans.spark.params.FitParams` and the YAML config.

    ``kind`` is "integer", "number", "choice", "boolean", "string", "names" (column
    names) or "matrix" (a k x d list of finite numbers; its shape is checked where k and
    d are known)."""

    kind: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()
    optional: bool = False
    above: bool = False
    below: bool = False
    expected: Optional[str] = None

    def __call__(self, name: str, value, error=InvalidParamError):
        """The value accepted under ``name``, or ``error``."""
        if self.kind == "integer":
            return integer(name, value, self.minimum, self.optional, self.expected, error,
                           self.maximum)
        if self.kind == "number":
            return number(name, value, self.minimum, self.maximum, self.above, self.below,
                          self.optional, self.expected, error)
        if self.kind == "choice":
            if value is None and self.optional:
                return None
            return choice(name, value, self.choices, error=error)
        if self.kind == "boolean":
            return boolean(name, value, error)
        if self.kind == "string":
            return string(name, value, self.optional, error=error)
        if self.kind == "names":
            return None if value is None and self.optional else names(name, value, error)
        if self.kind == "matrix":
            return matrix(name, value, optional=self.optional, error=error)
        raise AssertionError(f"unknown rule kind {self.kind!r}")


def matrix(name: str, value, optional: bool = False, error=InvalidParamError):
    """A non-empty list of equally long, non-empty lists of finite numbers, as tuples."""
    if value is None and optional:
        return None
    if hasattr(value, "tolist"):  # a NumPy array
        value = value.tolist()
    expected = "a list of k lists of n_features finite numbers" + (" or null" if optional
                                                                   else "")
    if not isinstance(value, (list, tuple)) or not value \
            or not all(isinstance(r, (list, tuple)) for r in value):
        fail(name, value, expected, error)
    width = len(value[0])
    for i, row in enumerate(value):
        if width == 0 or len(row) != width:
            fail(f"{name}[{i}]", row, f"a non-empty list of numbers as long as the first row "
                                      f"({width})", error)
        for j, x in enumerate(row):
            number(f"{name}[{i}][{j}]", x, error=error)
    return tuple(tuple(float(x) for x in r) for r in value)
