"""Where the features are, how to read them, and which rows are invalid.

Features come from a Vector column, an ``array<numeric>`` column, or a list of numeric
columns (``inputCols``, no VectorAssembler needed). :func:`resolve` checks the schema and
returns a :class:`FeatureSpec`; the spec builds Spark SQL expressions (all built-in,
code-generated functions): one double per feature, a per-row validity flag, and, only
when some rows are invalid, a count of invalid values by reason and column.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import InvalidInputError, InvalidParamError

# Invalid codes: KIND * 65536 + position of the offending input column.
NULL, NAN, INF, LENGTH, ZERO, WEIGHT = 1, 2, 3, 4, 5, 6
_KIND_TEXT = {NULL: "null", NAN: "NaN", INF: "infinite", LENGTH: "wrong length",
              ZERO: "zero vector (cosine distance)", WEIGHT: "invalid weight"}
_SHIFT = 65536

_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
            T.DecimalType)


def _is_numeric(dt) -> bool:
    return isinstance(dt, _NUMERIC)


def _type_name(dt) -> str:
    return dt.simpleString() if hasattr(dt, "simpleString") else str(dt)


@dataclass(frozen=True)
class FeatureSpec:
    """Where the features of a DataFrame are.

    Attributes
    ----------
    kind : {"columns", "vector", "array"}
    columns : tuple of str
        The numeric input columns, or the single vector/array column.
    n_features : int
    weight_col : str or None
    """

    kind: str
    columns: Tuple[str, ...]
    n_features: int
    weight_col: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "columns":
            return f"{self.n_features} numeric columns {list(self.columns)}"
        return f"{self.kind} column {self.columns[0]!r} of length {self.n_features}"

    # -- expressions ---------------------------------------------------------------
    def array_expr(self) -> Column:
        """The features as ``array<double>`` (nulls and NaN pass through unchanged)."""
        if self.kind == "columns":
            return F.array(*[F.col(quoted(c)).cast("double") for c in self.columns])
        c = F.col(quoted(self.columns[0]))
        if self.kind == "vector":  # vector_to_array fails on null: guard it
            return F.when(c.isNotNull(), vector_to_array(c, "float64"))
        return c.cast("array<double>")

    def feature_exprs(self) -> List[Column]:
        """One double expression per feature (null where the value is missing)."""
        if self.kind == "columns":
            return [F.col(quoted(c)).cast("double") for c in self.columns]
        arr = self.array_expr()
        return [F.get(arr, i) for i in range(self.n_features)]  # null past the end, even ANSI

    def weight_expr(self) -> Column:
        if self.weight_col is None:
            return F.lit(1.0)
        return F.col(quoted(self.weight_col)).cast("double")

    def valid_expr(self, cosine: bool) -> Column:
        """Boolean, never null: true for a row that can be clustered.

        Flat arithmetic rather than one condition per column (a chain of d CASE WHENs
        defeats code generation and was 8x slower): ``x * 0`` is 0 for a finite value,
        NaN for NaN or an infinity, and null for null.
        """
        if self.kind == "columns":
            feats = self.feature_exprs()
            ok = balanced_sum([x * F.lit(0.0) for x in feats]) == F.lit(0.0)
            if cosine:
                ok = ok & (balanced_sum([F.abs(x) for x in feats]) > F.lit(0.0))
        else:
            arr = self.array_expr()
            hi, lo = F.array_max(arr), F.array_min(arr)
            ok = (arr.isNotNull() & (F.size(arr) == F.lit(self.n_features))
                  & (F.size(F.array_compact(arr)) == F.size(arr))
                  & ((hi - lo) * F.lit(0.0) == F.lit(0.0)))
            if cosine:
                ok = ok & ((hi != F.lit(0.0)) | (lo != F.lit(0.0)))
        if self.weight_col is not None:
            w = self.weight_expr()
            ok = ok & (w * F.lit(0.0) == F.lit(0.0)) & (w >= F.lit(0.0))
        return F.coalesce(ok, F.lit(False))

    def staged_sql(self, cosine: bool, cast_to: Optional[str] = None
                   ) -> Optional[List[str]]:
        """For numeric input columns, what :func:`prepare.prepared_rows` projects first,
        as SQL text (``_valid``, ``f0`` ... as double, ``weight``): the same expressions as
        :meth:`valid_expr` and :meth:`feature_exprs`, parsed by Spark in one call instead
        of built by hundreds of Python-to-JVM calls (about 0.3 s at 32 columns). None for
        vector and array columns. ``cast_to``: the SQL type the features are then cast
        to (``f0`` ... in that type)."""
        if self.kind != "columns":
            return None
        feats = [f"CAST({quoted(c)} AS DOUBLE)" for c in self.columns]

        def balanced(terms):
            while len(terms) > 1:
                terms = [f"({terms[i]} + {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
                         for i in range(0, len(terms), 2)]
            return terms[0]

        ok = f"({balanced([f'({x} * 0.0D)' for x in feats])} = 0.0D)"
        if cosine:
            ok += f" AND ({balanced([f'abs({x})' for x in feats])} > 0.0D)"
        out = []
        if self.weight_col is not None:
            w = f"CAST({quoted(self.weight_col)} AS DOUBLE)"
            ok += f" AND (({w} * 0.0D) = 0.0D) AND ({w} >= 0.0D)"
        out.append(f"coalesce({ok}, false) AS _valid")
        out += [(f"CAST({x} AS {cast_to})" if cast_to else x) + f" AS f{i}"
                for i, x in enumerate(feats)]
        if self.weight_col is not None:
            out.append(f"{w} AS weight")
        return out

    def invalid_counts(self, df: DataFrame, cosine: bool) -> Dict[int, int]:
        """Invalid values by reason and column, ``{kind * 65536 + column position: n}``,
        from one aggregation over the invalid rows only. A row with several bad values
        counts once under each."""
        inf, ninf = float("inf"), float("-inf")
        checks: List[Tuple[Column, int]] = []
        if self.kind == "columns":
            for i, c in enumerate(self.feature_exprs()):
                checks += [(c.isNull(), NULL * _SHIFT + i), (F.isnan(c), NAN * _SHIFT + i),
                           (c.isin(inf, ninf), INF * _SHIFT + i)]
            if cosine:
                checks.append((balanced_sum([F.abs(x) for x in self.feature_exprs()]) == 0,
                               ZERO * _SHIFT))
        else:
            arr = self.array_expr()
            checks += [
                (arr.isNull(), NULL * _SHIFT),
                (F.size(F.array_compact(arr)) != F.size(arr), NULL * _SHIFT),
                (F.array_contains(arr, F.lit(float("nan"))), NAN * _SHIFT),
                (F.array_contains(arr, F.lit(inf)) | F.array_contains(arr, F.lit(ninf)),
                 INF * _SHIFT),
            ]
            if cosine:
                checks.append(((F.array_max(arr) == 0) & (F.array_min(arr) == 0),
                               ZERO * _SHIFT))
        if self.weight_col is not None:
            w = self.weight_expr()
            checks.append((w.isNull() | F.isnan(w) | w.isin(inf, ninf) | (w < 0),
                           WEIGHT * _SHIFT))
        merged: Dict[int, Column] = {}
        for cond, code in checks:  # the two null checks of arrays share one code
            merged[code] = cond if code not in merged else (merged[code] | cond)
        aggs = [F.count(F.when(cond, 1)).alias(f"c{code}") for code, cond in merged.items()]
        invalid = df.where(~self.valid_expr(cosine))
        row = invalid.agg(*aggs).first()
        counts = {code: int(row[f"c{code}"]) for code in merged if row[f"c{code}"]}
        if self.kind != "columns":
            counts.update(self._length_counts(invalid))
        return counts

    def _length_counts(self, invalid: DataFrame, most: int = 5) -> Dict[int, int]:
        """Rows of a vector or array column whose length is not ``n_features``, by the
        length found (the most frequent ``most`` lengths): ``{LENGTH * 65536 + length: n}``.
        The feature count may have been read from the first row, so the lengths found are
        what tells which rows are odd."""
        size = F.size(self.array_expr())
        rows = (invalid.where(size.isNotNull() & (size >= 0)
                              & (size != F.lit(self.n_features)))
                .groupBy(size.alias("n")).count().orderBy(F.desc("count")).limit(most)
                .collect())
        return {LENGTH * _SHIFT + min(int(r["n"]), _SHIFT - 1): int(r["count"]) for r in rows}

    def reason_text(self, code: int) -> str:
        """Human text for an invalid code, naming the column."""
        kind, pos = divmod(int(code), _SHIFT)
        what = _KIND_TEXT.get(kind, f"invalid code {code}")
        if kind == WEIGHT:
            return f"{what} in column {self.weight_col!r} (null, NaN, infinite or negative)"
        if kind == LENGTH:
            return (f"{what} {pos} in column {self.columns[0]!r} (expected "
                    f"{self.n_features} values)")
        if kind == ZERO:
            return what
        col = self.columns[pos] if self.kind == "columns" else self.columns[0]
        return f"{what} value in column {col!r}"

    def summarize_invalid(self, n_rows: int, counts: Dict[int, int]) -> str:
        """"3 invalid rows (null value in column 'x1': 2; NaN value in column 'x2': 1)"."""
        parts = [f"{self.reason_text(c)}: {n}" for c, n in sorted(counts.items())]
        return f"{n_rows} invalid rows ({'; '.join(parts)})"


def column_types(df: DataFrame) -> Dict[str, str]:
    """Every column of ``df`` and its Spark SQL type name (``"double"``, ``"vector"``...)."""
    return {f.name: _type_name(f.dataType) for f in df.schema.fields}


def balanced_sum(exprs: Sequence[Column]) -> Column:
    """Sum of expressions as a balanced tree (a linear chain of d terms nests d deep)."""
    exprs = list(exprs)
    while len(exprs) > 1:
        exprs = [exprs[i] + exprs[i + 1] if i + 1 < len(exprs) else exprs[i]
                 for i in range(0, len(exprs), 2)]
    return exprs[0]


def quoted(name: str) -> str:
    """Quote a column name for F.col (names may contain dots or spaces)."""
    return "`" + name.replace("`", "``") + "`"


def select_named(df: DataFrame, names: Sequence[str]) -> DataFrame:
    """``df``'s columns ``names`` (once each), by their exact names: dots, spaces and
    backticks in them are not parsed as Spark SQL."""
    return df.select(*[F.col(quoted(c)) for c in dict.fromkeys(names)])


def clashes(columns: Sequence[str], names: Sequence[str]) -> List[str]:
    """The columns of ``columns`` that a new column named one of ``names`` would replace.
    Names compare without case, as Spark resolves them by default
    (``spark.sql.caseSensitive=false``)."""
    wanted = {n.lower() for n in names if n}
    return [c for c in columns if c.lower() in wanted]


def fresh_name(columns: Sequence[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... : a name for a temporary column that
    replaces none of ``columns``."""
    name, i = base, 0
    while clashes(columns, [name]):
        i += 1
        name = f"{base}_{i}"
    return name


def check_new_columns(columns: Sequence[str], new: Dict[str, Optional[str]],
                      what: str = "the input") -> None:
    """Raise :class:`InvalidInputError` when an output column (``{Param: name}``, None
    for one not written) would replace a column of ``columns``, or two share a name:
    never overwrite an input column silently."""
    named = [(p, n) for p, n in new.items() if n]
    for i, (param, name) in enumerate(named):
        taken = clashes(columns, [name])
        if taken:
            raise InvalidInputError(
                f"{what} already has a column {taken[0]!r}, which {param}={name!r} would "
                f"replace: set {param} to a name that is not a column of {what}")
        same = [p for p, n in named[i + 1:] if clashes([n], [name])]
        if same:
            raise InvalidInputError(f"{param} and {same[0]} are both {name!r}: expected "
                                    "distinct output column names")


def _field(df: DataFrame, name: str, role: str) -> T.StructField:
    fields = {f.name: f for f in df.schema.fields}
    if name not in fields:
        raise InvalidInputError(
            f"{role} {name!r} is not a column of the input; columns are {sorted(fields)}")
    return fields[name]


def _vector_size_from_metadata(field: T.StructField) -> Optional[int]:
    attrs = (field.metadata or {}).get("ml_attr", {})
    n = attrs.get("num_attrs")
    return int(n) if isinstance(n, int) and n > 0 else None


def resolve(df: DataFrame, features_col: str, input_cols: Optional[Sequence[str]],
            weight_col: Optional[str] = None, n_features: Optional[int] = None) -> FeatureSpec:
    """Check the input schema and return where its features are.

    Parameters
    ----------
    df : DataFrame
    features_col : str
        Used when ``input_cols`` is empty: a Vector or ``array<numeric>`` column.
    input_cols : sequence of str, optional
        Numeric feature columns; takes precedence over ``features_col``.
    weight_col : str, optional
        A numeric column of non-negative row weights.
    n_features : int, optional
        Expected number of features (from a fitted model or initial centers). For a
        vector/array column without size metadata it is otherwise read from one row.

    Raises
    ------
    InvalidInputError
        A column is missing or has a type that cannot hold features.
    """
    if weight_col:
        wf = _field(df, weight_col, "weightCol")
        if not _is_numeric(wf.dataType):
            raise InvalidInputError(
                f"weightCol {weight_col!r} has type {_type_name(wf.dataType)}, "
                "expected a numeric type")
    else:
        weight_col = None
    if input_cols:
        cols = list(input_cols)
        if len(set(cols)) != len(cols):
            raise InvalidParamError(f"inputCols has duplicate names: {cols}")
        for c in cols:
            f = _field(df, c, "input column")
            if not _is_numeric(f.dataType):
                raise InvalidInputError(
                    f"input column {c!r} has type {_type_name(f.dataType)}, expected a "
                    "numeric type (int, long, float, double, decimal)")
        if n_features is not None and n_features != len(cols):
            raise InvalidInputError(
                f"inputCols names {len(cols)} columns but {n_features} features are expected")
        return FeatureSpec("columns", tuple(cols), len(cols), weight_col)
    f = _field(df, features_col, "featuresCol")
    dt = f.dataType
    if isinstance(dt, VectorUDT):
        kind = "vector"
        size = _vector_size_from_metadata(f)
    elif isinstance(dt, T.ArrayType) and _is_numeric(dt.elementType):
        kind = "array"
        size = None
    else:
        raise InvalidInputError(
            f"featuresCol {features_col!r} has type {_type_name(dt)}, expected a Vector "
            "(pyspark.ml.linalg) or array<float|double> column; or set inputCols to numeric "
            "columns")
    if n_features is None:
        n_features = size
    if n_features is None:
        spec = FeatureSpec(kind, (features_col,), 0, weight_col)
        row = (df.select(F.size(spec.array_expr()).alias("n"))
               .where(F.col("n") >= 0).limit(1).collect())
        if not row:
            n_features = 0  # no non-null row: the empty-input check reports it
        else:
            n_features = int(row[0]["n"])
    return FeatureSpec(kind, (features_col,), int(n_features), weight_col)

