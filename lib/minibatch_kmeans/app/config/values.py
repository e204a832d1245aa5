"""Reading YAML values: a mapping with known keys (:class:`Section`), and the value checks
of :mod:`minibatch_kmeans.checks` raising ConfigError under the field's dotted path."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

from ... import checks
from ...checks import Rule
from ...errors import ConfigError
from ...paths import join
from ...redaction import redact

MISSING = object()


def type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def one_line(e) -> str:
    return " ".join(str(e).split())


def is_secret(name: str) -> bool:
    return redact(name, "") != ""


def thaw(value):
    """A frozen config value (tuples) as the lists a Param expects."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def short(value) -> str:
    text = repr(thaw(value))
    return text if len(text) <= 60 else text[:57] + "..."


def join_path(base: str, name: str) -> str:
    return join(base, name)


class Section:
    """Reads the keys of one mapping; unknown keys are errors."""

    def __init__(self, path: str, raw, known: Sequence[str],
                 hints: Optional[Mapping[str, str]] = None):
        self.path = path
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path or 'the config'} is {type_name(raw)} ({raw!r}): "
                              f"expected a mapping with keys {list(known)}")
        for key in raw:
            if key not in known:
                hint = (hints or {}).get(key)
                raise ConfigError(f"{self.sub(key)} is not a known key: expected one of "
                                  f"{list(known)}" + (f" ({hint})" if hint else ""))
        self.raw = raw

    def sub(self, key) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def get(self, key, default=MISSING):
        if key not in self.raw:
            if default is MISSING:
                raise ConfigError(f"{self.sub(key)} is missing: it is required")
            return default
        return self.raw[key]

    def has(self, key) -> bool:
        return key in self.raw


def fail(path: str, value, expected: str, secret: bool = False) -> None:
    checks.fail(path, value, expected, ConfigError, secret)


def string(path: str, value, allow_none: bool = False) -> Optional[str]:
    return checks.string(path, value, allow_none, error=ConfigError)


def choice(path: str, value, choices: Sequence[str], fold=None) -> str:
    return checks.choice(path, value, choices, fold, ConfigError)


def integer(path: str, value, minimum: Optional[int] = None, allow_none: bool = False,
            expected: Optional[str] = None, maximum: Optional[int] = None) -> Optional[int]:
    return checks.integer(path, value, minimum, allow_none, expected, ConfigError, maximum)


def yaml_number(value):
    """YAML 1.1 reads 1e-4 (no dot) as a string: number fields accept numeric strings."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def number(path: str, value, minimum: Optional[float] = None,
           expected: Optional[str] = None) -> float:
    return checks.number(path, yaml_number(value), minimum, expected=expected,
                         error=ConfigError)


def boolean(path: str, value) -> bool:
    return checks.boolean(path, value, ConfigError)


def names(path: str, value) -> Tuple[str, ...]:
    return checks.names(path, value, ConfigError)


def by_rule(path: str, rule: Rule, value):
    """``value`` checked by a Param's rule, reported under ``path``."""
    return rule(path, yaml_number(value) if rule.kind == "number" else value, ConfigError)


def int_list(path: str, value, minimum: int, increasing: bool) -> Tuple[int, ...]:
    """A non-empty list of distinct integers >= minimum (increasing, if asked)."""
    expected = (f"a non-empty list of distinct integers >= {minimum}"
                + (" in increasing order, e.g. [5, 10, 15]" if increasing else ""))
    if not isinstance(value, list) or not value:
        fail(path, value, expected)
    ints = [integer(f"{path}[{i}]", v, minimum) for i, v in enumerate(value)]
    if increasing:
        bad = any(b <= a for a, b in zip(ints, ints[1:]))
    else:
        bad = len(set(ints)) < len(ints)
    if bad:
        fail(path, value, expected)
    return tuple(ints)
