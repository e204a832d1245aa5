"""The data quality gate that runs before training and scoring.

:func:`check_quality` checks a table against :class:`QualityRules` and the features it
will be clustered on:

- expected columns and types (missing or retyped columns are an error at once);
- at least ``min_rows`` rows;
- per feature: null, NaN and infinite values, and values outside optional ranges;
- for a weight column: null, NaN, infinite or negative weights.

Counts come from one aggregation over the table. A row with any problem is *invalid*:
:meth:`QualityResult.quarantine` gives those rows with a ``reason`` column naming every
problem ("x3: null; x7: above max 100"), so a job can write them to a quarantine table
and nothing is lost silently, and :meth:`QualityResult.valid` the others. The report
(:meth:`QualityResult.report`) counts rows per reason and per column; a threshold
(``max_invalid_fraction``) turns a bad table into :class:`DataQualityError`, which jobs
map to exit code 2 with a one-line reason.

Examples
--------
>>> rules = QualityRules(ranges={"x0": (0.0, None)}, max_invalid_fraction=0.1)
>>> result = check_quality(df, spec, rules)        # doctest: +SKIP
>>> result.report()["invalidRows"], result.passed  # doctest: +SKIP
(3, True)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ..errors import InvalidInputError
from ..spark.features import FeatureSpec, column_types

logger = logging.getLogger(__name__)

#: Reasons, in report order.
NULL, NAN, INF, LENGTH, BELOW, ABOVE, WEIGHT = ("null", "NaN", "infinite", "wrong length",
                                               "below min", "above max", "invalid weight")
REASONS = (NULL, NAN, INF, LENGTH, BELOW, ABOVE, WEIGHT)
#: The column :meth:`QualityResult.quarantine` adds to the invalid rows.
REASON_COLUMN = "reason"


class DataQualityError(InvalidInputError):
    """The input fails the data quality gate (too many invalid rows, too few rows)."""


@dataclass(frozen=True)
class QualityRules:
    """What the gate checks besides the features' own validity.

    Attributes
    ----------
    expected_columns : mapping of str to str
        Columns that must exist, with their Spark SQL type (``"double"``,
        ``"array<float>"``...; ``"numeric"`` accepts any numeric type).
    ranges : mapping of str to (min or None, max or None)
        Inclusive bounds per feature column; for a vector or array features column, the
        bounds apply to every element.
    min_rows : int
        Fewer rows fail the gate (default 1: an empty table fails).
    max_invalid_fraction : float
        More invalid rows than this fraction of all rows fail the gate (1.0 never fails
        on invalid rows, but a table of only invalid rows still fails).
    """

    expected_columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ranges: Mapping[str, Tuple[Optional[float], Optional[float]]] = field(
        default_factory=lambda: MappingProxyType({}))
    min_rows: int = 1
    max_invalid_fraction: float = 0.05

    def as_dict(self) -> dict:
        return {"expectedColumns": dict(self.expected_columns),
                "ranges": {k: list(v) for k, v in self.ranges.items()},
                "minRows": self.min_rows, "maxInvalidFraction": self.max_invalid_fraction}


_NUMERIC_NAMES = ("tinyint", "smallint", "int", "bigint", "float", "double")


def check_columns(df: DataFrame, expected: Mapping[str, str], what: str = "the input") -> None:
    """Raise :class:`InvalidInputError` naming every expected column that is missing or
    has another type."""
    types = column_types(df)
    missing = [c for c in expected if c not in types]
    retyped = []
    for c, want in expected.items():
        got = types.get(c)
        if got is None or got == want:
            continue
        if want == "numeric" and (got in _NUMERIC_NAMES or got.startswith("decimal")):
            continue
        retyped.append(f"{c!r} is {got}, expected {want}")
    if missing or retyped:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if retyped:
            parts.append("; ".join(retyped))
        raise InvalidInputError(f"{what} does not have the expected columns: "
                                + "; ".join(parts) + f" (columns are {sorted(types)})")


def check_feature_schema(df: DataFrame, feature_schema: Mapping, input_schema:
                         Optional[Mapping[str, str]] = None, ignore: Sequence[str] = (),
                         what: str = "the scoring table") -> None:
    """Raise :class:`InvalidInputError` when ``df``'s features are not the ones a model
    was trained on, naming every column: a feature removed (or renamed), one retyped,
    and a column added since training.

    Parameters
    ----------
    df : DataFrame
    feature_schema : mapping
        The model's ``featureSchema``: ``columns`` and, when recorded, ``types``.
    input_schema : mapping of str to str, optional
        Every column of the training input (the model's ``inputSchema``); a column of
        ``df`` that is not there and not in ``ignore`` counts as added.
    ignore : sequence of str
        Columns that may be new (ids, partition columns of the scoring table).
    """
    current = column_types(df)
    cols = list(feature_schema["columns"])
    types = feature_schema.get("types") or [None] * len(cols)
    removed = [c for c in cols if c not in current]
    retyped = [f"{c} {t} -> {current[c]}" for c, t in zip(cols, types)
               if c in current and t is not None and current[c] != t]
    added = ([c for c in current if c not in input_schema and c not in ignore]
             if input_schema else [])
    if not (removed or retyped or added):
        return
    parts = []
    if removed:
        parts.append(f"feature column(s) {removed} removed")
    if added:
        parts.append(f"column(s) {added} added")
    if retyped:
        parts.append("retyped: " + ", ".join(retyped))
    hint = " (renamed?)" if removed and added else ""
    raise InvalidInputError(
        f"{what} does not match the model's feature schema: " + "; ".join(parts) + hint
        + f". The model was trained on features {cols}"
        + (f" of types {types}" if any(types) else "")
        + (": list new non-feature columns in scoring.ignore_columns" if added else ""))


class _Checks:
    """Named boolean problem conditions over a table's rows: (column, reason, condition)."""

    def __init__(self, spec: FeatureSpec, rules: QualityRules, cosine: bool,
                 extra: Sequence[Tuple[str, str, Column]] = ()):
        self.items: List[Tuple[str, str, Column]] = []
        for column, reason, cond in extra:
            self.add(column, reason, cond)
        inf, ninf = float("inf"), float("-inf")
        if spec.kind == "columns":
            for name, x in zip(spec.columns, spec.feature_exprs()):
                self.add(name, NULL, x.isNull())
                self.add(name, NAN, F.isnan(x))
                self.add(name, INF, x.isin(inf, ninf))
                lo, hi = rules.ranges.get(name, (None, None))
                finite = (x * F.lit(0.0)) == F.lit(0.0)
                if lo is not None:
                    self.add(name, BELOW, finite & (x < F.lit(float(lo))))
                if hi is not None:
                    self.add(name, ABOVE, finite & (x > F.lit(float(hi))))
        else:
            name, arr = spec.columns[0], spec.array_expr()
            self.add(name, NULL, arr.isNull() | (F.size(F.array_compact(arr)) != F.size(arr)))
            self.add(name, LENGTH, F.size(arr) != F.lit(spec.n_features))
            self.add(name, NAN, F.array_contains(arr, F.lit(float("nan"))))
            self.add(name, INF, F.array_contains(arr, F.lit(inf))
                     | F.array_contains(arr, F.lit(ninf)))
            lo, hi = rules.ranges.get(name, (None, None))
            finite = F.filter(arr, lambda v: (v * F.lit(0.0)) == F.lit(0.0))
            if lo is not None:
                self.add(name, BELOW, F.array_min(finite) < F.lit(float(lo)))
            if hi is not None:
                self.add(name, ABOVE, F.array_max(finite) > F.lit(float(hi)))
        if cosine:  # a zero vector has no direction
            self.add(name if spec.kind != "columns" else "features", "zero vector",
                     ~spec.valid_expr(True) & spec.valid_expr(False))
        if spec.weight_col is not None:
            w = spec.weight_expr()
            self.add(spec.weight_col, WEIGHT, w.isNull() | F.isnan(w) | w.isin(inf, ninf)
                     | (w < 0))

    def add(self, column: str, reason: str, cond: Column) -> None:
        self.items.append((column, reason, F.coalesce(cond, F.lit(False))))

    def any_problem(self) -> Column:
        out = F.lit(False)
        for _, _, cond in self.items:
            out = out | cond
        return out

    def reason(self) -> Column:
        """"x3: null; x7: above max" for an invalid row ('' for a valid one)."""
        return F.concat_ws("; ", *[F.when(cond, F.lit(f"{col}: {why}"))
                                   for col, why, cond in self.items])


@dataclass
class QualityResult:
    """What :func:`check_quality` found. ``valid()`` and ``quarantine()`` are lazy."""

    df: DataFrame
    rules: QualityRules
    rows: int
    invalid_rows: int
    by_column: Dict[str, Dict[str, int]]
    failure: Optional[str]
    _checks: _Checks = field(repr=False, default=None)

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def valid_rows(self) -> int:
        return self.rows - self.invalid_rows

    def valid(self) -> DataFrame:
        """The rows without any problem."""
        return self.df.where(~self._checks.any_problem())

    def quarantine(self, reason_col: str = REASON_COLUMN) -> DataFrame:
        """The invalid rows, every input column kept, plus ``reason_col``."""
        return (self.df.where(self._checks.any_problem())
                .withColumn(reason_col, self._checks.reason()))

    def by_reason(self) -> Dict[str, int]:
        """Problem values per reason, summed over columns (a row can count under several)."""
        out: Dict[str, int] = {}
        for counts in self.by_column.values():
            for why, n in counts.items():
                out[why] = out.get(why, 0) + n
        return out

    def report(self) -> dict:
        """The JSON quality report."""
        return {
            "rows": self.rows, "validRows": self.valid_rows, "invalidRows": self.invalid_rows,
            "invalidFraction": self.invalid_rows / self.rows if self.rows else None,
            "byReason": self.by_reason(), "byColumn": self.by_column,
            "thresholds": self.rules.as_dict(), "passed": self.passed,
            "failure": self.failure,
        }

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise DataQualityError(self.failure)


def check_quality(df: DataFrame, spec: FeatureSpec, rules: QualityRules = QualityRules(),
                  cosine: bool = False, what: str = "the input",
                  extra: Sequence[Tuple[str, str, Column]] = ()) -> QualityResult:
    """Run the gate over ``df``: the column check at once, then one aggregation.

    Parameters
    ----------
    df : DataFrame
    spec : FeatureSpec
        Where the features are (see :func:`minibatch_kmeans.spark.features.resolve`).
    rules : QualityRules
    cosine : bool
        Under cosine distance a zero vector is invalid too.
    what : str
        How errors and the log name the table.
    extra : sequence of (column, reason, condition)
        Problems of the source's own beyond the features' (a Kafka event whose value
        does not parse: :func:`minibatch_kmeans.tables.kafka.malformed_checks`).

    Returns
    -------
    QualityResult
        Check ``passed`` (or call ``raise_if_failed``); the result never raises by itself
        for invalid rows, so a job can write the quarantine and the report first.

    Raises
    ------
    InvalidInputError
        An expected column is missing or has another type, or a range names a column
        that is not a feature.
    """
    check_columns(df, rules.expected_columns, what)
    unknown = [c for c in rules.ranges if c not in spec.columns]
    if unknown:
        raise InvalidInputError(f"quality ranges name {unknown}, which are not feature "
                                f"columns: expected some of {list(spec.columns)}")
    checks = _Checks(spec, rules, cosine, extra)
    aggs = [F.count(F.lit(1)).alias("rows"), F.count(F.when(checks.any_problem(), 1)).alias("bad")]
    aggs += [F.count(F.when(cond, 1)).alias(f"c{i}") for i, (_, _, cond) in enumerate(checks.items)]
    row = df.agg(*aggs).first()
    rows, bad = int(row["rows"]), int(row["bad"])
    by_column: Dict[str, Dict[str, int]] = {}
    for i, (col, why, _) in enumerate(checks.items):
        n = int(row[f"c{i}"])
        if n:
            by_column.setdefault(col, {})[why] = n
    failure = None
    if rows < rules.min_rows:
        failure = (f"{what} has {rows} rows: expected at least {rules.min_rows}")
    elif rows and bad == rows:
        failure = f"{what} has no valid rows: all {rows} rows are invalid ({_top(by_column)})"
    elif rows and bad / rows > rules.max_invalid_fraction:
        failure = (f"{what} has {bad} invalid rows of {rows} ({bad / rows:.2%}), more than "
                   f"max_invalid_fraction={rules.max_invalid_fraction:g} ({_top(by_column)})")
    logger.info("quality of %s: %d rows, %d invalid%s", what, rows, bad,
                f" ({_top(by_column)})" if bad else "")
    return QualityResult(df, rules, rows, bad, by_column, failure, checks)


def report_top(report: Mapping, limit: int = 4) -> str:
    """The most frequent problems of a quality report, as one short phrase."""
    return _top(report["byColumn"], limit)


def _top(by_column: Mapping[str, Mapping[str, int]], limit: int = 4) -> str:
    """"x3: null 12, x0: above max 3, ..." — the most frequent problems first."""
    items = sorted(((n, f"{c}: {why}") for c, d in by_column.items() for why, n in d.items()),
                   reverse=True)
    text = ", ".join(f"{name} {n}" for n, name in items[:limit])
    return text + (f", and {len(items) - limit} more" if len(items) > limit else "")


def quality_rows(report: Mapping) -> List[tuple]:
    """The report as table rows ``(column, reason, count, rows)``: one per problem, and
    one with column and reason null holding the invalid row count."""
    rows = int(report["rows"])
    out = [(None, None, int(report["invalidRows"]), rows)]
    for col, counts in sorted(report["byColumn"].items()):
        out += [(col, why, int(n), rows) for why, n in sorted(counts.items())]
    return out


QUALITY_SCHEMA = "column string, reason string, count long, rows long"
