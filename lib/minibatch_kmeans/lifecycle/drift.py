"""Reference statistics saved with a model, and drift of new data against them.

:func:`reference_statistics` describes the data a model was trained on, computed on a
held-out split (:func:`holdout_split`): per feature the mean, standard deviation, quantile
bin edges with the share of rows in each bin, and a hashed sample of values; per cluster
the share of rows and the mean distance to its center. The result is a plain dict that
serialises to JSON and is saved next to the model.

:func:`drift_report` compares a new slice of data with those statistics:

- schema drift: feature columns removed (or renamed), retyped, and columns added;
- per feature: the population stability index (PSI) over the reference bins and a
  two-sample Kolmogorov-Smirnov test of a hashed sample against the reference sample;
- cluster proportion drift: the Jensen-Shannon divergence between the reference and the
  new share of rows per cluster;
- the ratio of the new mean distance to the nearest center over the reference one.

Each figure is compared with :class:`DriftThresholds`; the report says ``drift`` and why
(``reasons``). :func:`drift_markdown` and :func:`plot_drift` render it for people.

Formulas (``a``: new proportions, ``e``: reference proportions, both over the same bins):

- ``PSI = sum((a - e) * ln(a / e))`` with every proportion first raised to at least
  ``PSI_EPSILON`` (1e-4) so that an empty bin does not give an infinite term;
- ``JS = jensenshannon(e, a, base=2) ** 2``: the Jensen-Shannon *divergence* in bits
  (scipy returns the distance, its square root), between 0 and 1;
- ``distance ratio = mean distance now / mean distance in the reference``.

Statistics are over the rows a model can cluster (null, NaN or infinite features, or a
wrong length, are left out and counted as ``invalidRows``) and ignore row weights.

Examples
--------
>>> train, holdout = holdout_split(df, 0.2, seed=7)                  # doctest: +SKIP
>>> model = MiniBatchKMeans(k=3, inputCols=["x0", "x1"]).fit(train)   # doctest: +SKIP
>>> reference = reference_statistics(model, holdout)                 # doctest: +SKIP
>>> report = drift_report(model, reference, new_df)                  # doctest: +SKIP
>>> report["drift"], report["reasons"]                               # doctest: +SKIP
(True, ["PSI above 0.2 for ['x0']", ...])
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ..errors import InvalidInputError, InvalidParamError
from ..evaluate.holdout import holdout_split  # noqa: F401 - public here since before
from ..spark import features as feat
from ..spark.features import column_types

logger = logging.getLogger(__name__)

#: Version of the reference statistics' layout.
REFERENCE_VERSION = 1
#: Proportions are raised to at least this before PSI (an empty bin would give infinity).
PSI_EPSILON = 1e-4
#: Seed of the hashed samples (the same in the reference and in every report).
SAMPLE_SEED = 42
_PRED, _DIST = "__mbkm_drift_cluster", "__mbkm_drift_distance"
#: From this many features on, the statistics use the long layout (one row per row and
#: feature, :func:`_long_aggregate` and :func:`_long_bins_and_clusters`): aggregations of
#: a fixed handful of columns, grouped by feature. The wide layout's aggregations hold
#: 5 + ``bins`` columns per feature, and Spark's planning and generated code grow faster
#: than the columns: on 2,000 rows, 100 features took 381 s on this (heavily shared)
#: machine and 400 did not finish in 8 minutes. Both layouts give the same statistics.
WIDE_FEATURES = 64
#: Features the statistics cover at most (see :func:`check_width`): the driver holds
#: ``features x (bins + 5)`` figures besides the sample, and the reference JSON as many.
MAX_FEATURES = 20_000
#: Values (rows x features) of the hashed sample kept on the driver and in the JSON: a
#: wide table keeps fewer rows (``sample_rows`` is lowered to fit, and logged).
MAX_SAMPLE_VALUES = 1_000_000


@dataclass(frozen=True)
class DriftThresholds:
    """When a figure counts as drift.

    Attributes
    ----------
    psi : float
        A feature drifts when its PSI is above this (0.2: the usual "significant shift").
    ks_pvalue : float
        ... or when the KS test's p-value is below this ...
    ks_statistic : float
        ... and its statistic (the largest gap between the two empirical CDFs) is at
        least this, so that a large sample does not flag a negligible shift.
    js : float
        Cluster proportions drift when their Jensen-Shannon divergence (base 2, in [0, 1])
        is above this.
    distance_ratio : float
        Rows are farther from their centers than in the reference when the ratio of mean
        distances is above this.
    """

    psi: float = 0.2
    ks_pvalue: float = 0.01
    ks_statistic: float = 0.1
    js: float = 0.1
    distance_ratio: float = 1.5

    def __post_init__(self):
        checks = {"psi": self.psi > 0, "ks_pvalue": 0 < self.ks_pvalue < 1,
                  "ks_statistic": 0 <= self.ks_statistic <= 1, "js": 0 < self.js <= 1,
                  "distance_ratio": self.distance_ratio > 0}
        expected = {"psi": "> 0", "ks_pvalue": "in (0, 1)", "ks_statistic": "in [0, 1]",
                    "js": "in (0, 1]", "distance_ratio": "> 0"}
        for name, ok in checks.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok \
                    or not math.isfinite(value):
                raise InvalidParamError(f"drift threshold {name}={value!r} is invalid: "
                                        f"expected a number {expected[name]}")

    def as_dict(self) -> dict:
        return asdict(self)


# -- the held-out split ---------------------------------------------------------------


# -- schema drift -----------------------------------------------------------------------


def schema_differences(df: DataFrame, feature_schema: Mapping,
                       input_schema: Optional[Mapping[str, str]] = None,
                       ignore: Sequence[str] = ()) -> dict:
    """How ``df``'s columns differ from a model's, without raising (the rules of
    :func:`minibatch_kmeans.tables.quality.check_feature_schema`).

    Returns
    -------
    dict
        ``removed``: feature columns missing from ``df``; ``added``: columns of ``df``
        that are neither in ``input_schema`` nor in ``ignore`` (none when
        ``input_schema`` is unknown); ``retyped``: ``{"column", "expected", "actual"}``
        for feature columns of another type; ``drift``: whether any of them is non-empty.
    """
    current = column_types(df)
    cols = list(feature_schema["columns"])
    types = feature_schema.get("types") or [None] * len(cols)
    removed = [c for c in cols if c not in current]
    retyped = [{"column": c, "expected": t, "actual": current[c]}
               for c, t in zip(cols, types) if c in current and t is not None and current[c] != t]
    added = ([c for c in current if c not in input_schema and c not in ignore]
             if input_schema else [])
    return {"removed": removed, "added": added, "retyped": retyped,
            "drift": bool(removed or added or retyped)}


def _schema_reason(diff: Mapping) -> str:
    parts = []
    if diff["removed"]:
        parts.append(f"feature column(s) {diff['removed']} removed")
    if diff["added"]:
        parts.append(f"column(s) {diff['added']} added")
    if diff["retyped"]:
        parts.append("retyped: " + ", ".join(f"{r['column']} {r['expected']} -> {r['actual']}"
                                             for r in diff["retyped"]))
    hint = " (renamed?)" if diff["removed"] and diff["added"] else ""
    return "schema drift: " + "; ".join(parts) + hint


# -- shared Spark passes -------------------------------------------------------------------


def _feature_names(spec: feat.FeatureSpec) -> List[str]:
    if spec.kind == "columns":
        return list(spec.columns)
    return [f"{spec.columns[0]}[{i}]" for i in range(spec.n_features)]


def _spec(model, df: DataFrame) -> feat.FeatureSpec:
    return model.featureSpec(df, withWeight=False)


def _valid(model, spec: feat.FeatureSpec) -> Column:
    return spec.valid_expr(model.getDistanceMeasure() == "cosine")


def _num(value) -> Optional[float]:
    """A finite float, or None (JSON has no NaN or infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _bin_index(x: Column, edges: Sequence[float]) -> Column:
    """Bin of ``x`` for sorted cut points: the number of cut points <= x (NumPy's
    ``searchsorted(edges, x, side="right")``); bin 0 is below the first cut point."""
    if not len(edges):
        return F.lit(0)
    return feat.balanced_sum([(x >= F.lit(float(e))).cast("int") for e in edges])


def _cluster_and_bin_counts(model, spec: feat.FeatureSpec, df: DataFrame,
                            edges: Sequence[Sequence[float]]):
    """One pass over the valid rows of ``df`` through ``model.transform``.

    Returns
    -------
    counts : ndarray of shape (k,)
        Rows per cluster.
    distance_sums : ndarray of shape (k,)
        Sum of distances to the nearest center per cluster.
    bin_counts : list of ndarray
        Rows per bin for each feature (``len(edges[j]) + 1`` bins).
    """
    k = len(model.clusterCenters())
    scorer = model.copy()
    scorer.setPredictionCol(_PRED).setDistanceCol(_DIST).setHandleInvalid("skip")
    scored = scorer.transform(df.select(*[F.col(feat.quoted(c)) for c in spec.columns]))
    spec_now = _spec(model, scored)
    aggs = [F.count(F.lit(1)).alias("n"), F.sum(_DIST).alias("dist")]
    for j, (x, e) in enumerate(zip(spec_now.feature_exprs(), edges)):
        b = _bin_index(x, e)
        aggs += [F.count(F.when(b == i, 1)).alias(f"b{j}_{i}") for i in range(len(e) + 1)]
    rows = scored.groupBy(_PRED).agg(*aggs).collect()
    counts, dist = np.zeros(k, dtype=np.int64), np.zeros(k)
    bins = [np.zeros(len(e) + 1, dtype=np.int64) for e in edges]
    for r in rows:
        c = int(r[_PRED])
        counts[c] += int(r["n"])
        dist[c] += float(r["dist"] or 0.0)
        for j, e in enumerate(edges):
            bins[j] += np.array([int(r[f"b{j}_{i}"]) for i in range(len(e) + 1)])
    return counts, dist, bins


def _hashed_sample(model, spec: feat.FeatureSpec, df: DataFrame, rows: int,
                   seed: int) -> np.ndarray:
    """The ``rows`` valid rows of smallest ``xxhash64(seed, features)``: a sample that
    depends on the rows' content only, as ndarray of shape (<= rows, n_features)."""
    if rows <= 0:
        return np.zeros((0, spec.n_features))
    # the hash of the features' array is the hash of the features one after the other
    # (xxhash64(seed, array(a, b)) == xxhash64(seed, a, b) for non-null values), and its
    # plan stays small however wide the table (d expressions fail code generation at 2,000)
    picked = (df.where(_valid(model, spec))
              .select(spec.array_expr().alias("__features"))
              .select(F.xxhash64(F.lit(int(seed)), "__features").alias("__key"),
                      "__features")
              .orderBy("__key").limit(int(rows)).collect())
    out = np.array([r["__features"] for r in picked], dtype=np.float64)
    return out.reshape(len(picked), spec.n_features)


# -- the long layout: wide tables ------------------------------------------------------------


def _is_wide(spec: feat.FeatureSpec) -> bool:
    return spec.n_features >= WIDE_FEATURES


def _long_aggregate(model, spec: feat.FeatureSpec, df: DataFrame,
                    probs: Optional[Sequence[float]] = None, accuracy: int = 10000) -> dict:
    """:func:`_reference_aggregates` (or, without ``probs``, :func:`_valid_moments`) for
    a wide table, in one aggregation whose plan does not grow with the features: each
    row's features are exploded to ``(j, x)`` rows (an invalid row to one ``(null,
    null)``), grouped by ``j``. The driver receives ``features + 1`` rows of at most
    ``5 + len(probs)`` figures. Returns a dict with the narrow row's keys (``rows``,
    ``invalid``, ``mean{j}``, ``std{j}`` and, with ``probs``, ``min{j}``, ``max{j}``,
    ``q{j}``)."""
    arr = F.when(_valid(model, spec), spec.array_expr())
    long = df.select(arr.alias("__a")).select(F.posexplode_outer("__a").alias("j", "x"))
    aggs = [F.count(F.lit(1)).alias("n"), F.avg("x").alias("mean"),
            F.stddev_samp("x").alias("std")]
    if probs is not None:
        aggs += [F.min("x").alias("min"), F.max("x").alias("max"),
                 F.percentile_approx("x", list(probs), accuracy).alias("q")]
    out = {"invalid": 0}
    valid = 0
    for r in long.groupBy("j").agg(*aggs).collect():
        if r["j"] is None:
            out["invalid"] = int(r["n"])
            continue
        j = int(r["j"])
        valid = int(r["n"])  # the same for every feature
        out[f"mean{j}"], out[f"std{j}"] = r["mean"], r["std"]
        if probs is not None:
            out[f"min{j}"], out[f"max{j}"], out[f"q{j}"] = r["min"], r["max"], r["q"]
    out["rows"] = valid + out["invalid"]
    return out


def _long_bins_and_clusters(model, spec: feat.FeatureSpec, df: DataFrame,
                            edges: Sequence[Sequence[float]]):
    """:func:`_cluster_and_bin_counts` for a wide table: one pass through
    ``model.transform``, each scored row exploded to one ``(-1, cluster, distance)`` entry
    and one ``(j, bin, x)`` entry per feature (the bin found among the feature's cut
    points, which travel as one constant), grouped by ``(j, bin)``: the driver receives
    at most ``k + features x bins`` rows."""
    k = len(model.clusterCenters())
    scorer = model.copy()
    scorer.setPredictionCol(_PRED).setDistanceCol(_DIST).setHandleInvalid("skip")
    scored = scorer.transform(df.select(*[F.col(feat.quoted(c)) for c in spec.columns]))
    spec_now = _spec(model, scored)
    cuts = F.from_json(F.lit(json.dumps([[float(e) for e in cut] for cut in edges])),
                       "array<array<double>>")  # folded to one literal by the optimizer
    entries = F.expr(
        "concat(array(named_struct('j', -1, 'b', CAST(__p AS INT), 'x', CAST(__d AS DOUBLE)))"
        ", transform(__a, (x, i) -> named_struct('j', i, "
        "'b', size(filter(__e[i], c -> c <= x)), 'x', x)))")
    rows = (scored.select(F.col(_PRED).alias("__p"), F.col(_DIST).alias("__d"),
                          spec_now.array_expr().alias("__a"), cuts.alias("__e"))
            .select(F.inline(entries))
            .groupBy("j", "b").agg(F.count(F.lit(1)).alias("n"), F.sum("x").alias("s"))
            .collect())
    counts, dist = np.zeros(k, dtype=np.int64), np.zeros(k)
    bins = [np.zeros(len(e) + 1, dtype=np.int64) for e in edges]
    for r in rows:
        j, b = int(r["j"]), int(r["b"])
        if j < 0:
            counts[b] += int(r["n"])
            dist[b] += float(r["s"] or 0.0)
        else:
            bins[j][b] += int(r["n"])
    return counts, dist, bins


def _bins_and_clusters(model, spec: feat.FeatureSpec, df: DataFrame,
                       edges: Sequence[Sequence[float]]):
    """Rows and distance sums per cluster and rows per bin of each feature, in the
    layout that suits the width (:data:`WIDE_FEATURES`)."""
    if _is_wide(spec):
        return _long_bins_and_clusters(model, spec, df, edges)
    return _cluster_and_bin_counts(model, spec, df, edges)


def check_width(n_features: int, bins: int) -> None:
    """Raise, before any Spark job, when the statistics would cover more than
    :data:`MAX_FEATURES` features: naming the limit and what to do."""
    if n_features > MAX_FEATURES:
        raise InvalidInputError(
            f"drift statistics cover at most {MAX_FEATURES} features (the driver and the "
            f"reference JSON hold {5 + bins} figures per feature with bins={bins}, besides "
            f"the sample); the model has {n_features}: compute them on a selection of at "
            f"most {MAX_FEATURES} features (a model of those columns), or on a projection "
            "of the features")


def sample_size(sample_rows: int, n_features: int) -> int:
    """``sample_rows`` lowered so that the hashed sample holds at most
    :data:`MAX_SAMPLE_VALUES` values."""
    fit = max(1, MAX_SAMPLE_VALUES // max(n_features, 1))
    if sample_rows > fit:
        logger.info("hashed sample: %d rows instead of %d, so that %d features hold at "
                    "most %d values", fit, sample_rows, n_features, MAX_SAMPLE_VALUES)
        return fit
    return sample_rows


def _proportions(counts: np.ndarray) -> List[Optional[float]]:
    total = counts.sum()
    return [float(c / total) if total else None for c in counts]


# -- reference statistics --------------------------------------------------------------------


def reference_statistics(model, df: DataFrame, bins: int = 10,
                         sample_rows: int = 2000, accuracy: int = 10000) -> dict:
    """Describe ``df`` (a held-out split of the training data) for later drift checks.

    Three passes over ``df``: one aggregation for counts, moments and quantiles; one
    pass through ``model.transform`` for the clusters and the rows per bin; one for the
    hashed sample. From :data:`WIDE_FEATURES` features on, the first two run in the long
    layout (one row per row and feature, grouped by feature), whose plans do not grow
    with the features; the statistics are the same. The driver holds at most
    ``features x (bins + 5) + k`` figures and :data:`MAX_SAMPLE_VALUES` sample values.

    Parameters
    ----------
    model : MiniBatchKMeansModel
    df : DataFrame
        Rows with the model's features (``inputCols`` columns, or its vector or array
        ``featuresCol``).
    bins : int
        Quantile bins per feature (``bins - 1`` cut points at ``1/bins, 2/bins...``);
        equal cut points are merged, so a feature with few values has fewer bins.
    sample_rows : int
        Size of the hashed sample kept for the Kolmogorov-Smirnov test (0: none); at
        most :data:`MAX_SAMPLE_VALUES` / features (bounded driver memory and JSON).
    accuracy : int
        ``percentile_approx`` accuracy (the relative rank error is 1 / accuracy).

    Returns
    -------
    dict
        JSON-serialisable: ``version``, ``featureSchema``, ``inputSchema``,
        ``distanceMeasure``, ``k``, ``rows``, ``invalidRows``, ``validRows``, ``bins``,
        ``sampleRows``, ``sampleSeed``, ``meanDistance``; ``features`` maps each feature
        name (the column, or ``"features[3]"`` for a vector/array column) to ``mean``,
        ``std`` (sample), ``min``, ``max``, ``edges`` (the sorted inner cut points; bin
        ``i`` holds ``edges[i-1] <= x < edges[i]``, with -inf and +inf at the ends),
        ``proportions`` (``len(edges) + 1`` shares of rows) and ``sample`` (values);
        ``clusters`` is a list of ``{"cluster", "rows", "proportion", "meanDistance"}``.

    Raises
    ------
    InvalidInputError
        The features cannot be found, no row is valid, or there are more than
        :data:`MAX_FEATURES` features (before any Spark job).
    """
    _check_arguments(bins, sample_rows)
    spec = _spec(model, df)
    check_width(spec.n_features, bins)
    sample_rows = sample_size(sample_rows, spec.n_features)
    names = _feature_names(spec)
    if _is_wide(spec):
        row = _long_aggregate(model, spec, df, [i / bins for i in range(1, bins)], accuracy)
    else:
        row = df.agg(*_reference_aggregates(spec, _valid(model, spec), bins,
                                            accuracy)).first()
    rows, invalid = int(row["rows"]), int(row["invalid"])
    if rows == invalid:
        raise InvalidInputError(f"reference statistics need valid rows: the input has "
                                f"{rows} rows, {invalid} of them invalid ({spec.describe()})")
    edges = [sorted({float(q) for q in row[f"q{j}"]}) for j in range(spec.n_features)]
    counts, dist, bin_counts = _bins_and_clusters(model, spec, df, edges)
    sample = _hashed_sample(model, spec, df, sample_rows, SAMPLE_SEED)
    features = {}
    for j, name in enumerate(names):
        features[name] = {
            "mean": _num(row[f"mean{j}"]), "std": _num(row[f"std{j}"]),
            "min": _num(row[f"min{j}"]), "max": _num(row[f"max{j}"]),
            "edges": edges[j], "proportions": _proportions(bin_counts[j]),
            "sample": [float(v) for v in sample[:, j]],
        }
    n_valid = int(counts.sum())
    ref = {
        "version": REFERENCE_VERSION,
        "featureSchema": model.featureSchema or _schema_of(spec, df),
        "inputSchema": model.inputSchema or column_types(df),
        "distanceMeasure": model.getDistanceMeasure(),
        "k": len(counts), "rows": rows, "invalidRows": invalid, "validRows": n_valid,
        "bins": bins, "sampleRows": int(sample.shape[0]), "sampleSeed": SAMPLE_SEED,
        "meanDistance": _num(dist.sum() / n_valid) if n_valid else None,
        "features": features,
        "clusters": _clusters(counts, dist),
    }
    logger.info("reference statistics: %d rows (%d invalid), %d features, %d clusters, "
                "%d sample rows, mean distance %.4g", rows, invalid, len(names), len(counts),
                sample.shape[0], ref["meanDistance"] or float("nan"))
    return ref


def _check_arguments(bins, sample_rows) -> None:
    if not isinstance(bins, int) or bins < 2:
        raise InvalidParamError(f"bins={bins!r} is invalid: expected an integer >= 2")
    if not isinstance(sample_rows, int) or sample_rows < 0:
        raise InvalidParamError(f"sample_rows={sample_rows!r} is invalid: expected an "
                                "integer >= 0")


def _reference_aggregates(spec: feat.FeatureSpec, valid: Column, bins: int,
                          accuracy: int) -> List[Column]:
    """The reference aggregation's columns: ``rows``, ``invalid``, and per feature ``j``
    the valid rows' ``mean{j}``, ``std{j}``, ``min{j}``, ``max{j}`` and cut points ``q{j}``."""
    probs = [i / bins for i in range(1, bins)]
    aggs = [F.count(F.lit(1)).alias("rows"), F.count(F.when(~valid, 1)).alias("invalid")]
    for j, x in enumerate(spec.feature_exprs()):
        v = F.when(valid, x)
        aggs += [F.avg(v).alias(f"mean{j}"), F.stddev_samp(v).alias(f"std{j}"),
                 F.min(v).alias(f"min{j}"), F.max(v).alias(f"max{j}"),
                 F.percentile_approx(v, probs, accuracy).alias(f"q{j}")]
    return aggs


def _schema_of(spec: feat.FeatureSpec, df: DataFrame) -> dict:
    types = column_types(df)
    return {"kind": spec.kind, "columns": list(spec.columns), "numFeatures": spec.n_features,
            "types": [types.get(c) for c in spec.columns]}


def bin_edges(feature: Mapping) -> np.ndarray:
    """The full bin edges of one feature of the reference statistics: -inf, the stored
    cut points, +inf (bin ``i`` is ``edges[i] <= x < edges[i + 1]``)."""
    return np.concatenate([[-np.inf], np.asarray(feature["edges"], dtype=np.float64),
                           [np.inf]])


def _clusters(counts: np.ndarray, dist: np.ndarray) -> List[dict]:
    props = _proportions(counts)
    return [{"cluster": i, "rows": int(n), "proportion": props[i],
             "meanDistance": _num(dist[i] / n) if n else None}
            for i, n in enumerate(counts)]


# -- the drift report -----------------------------------------------------------------------


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two proportion vectors
    over the same bins, each proportion raised to at least ``eps`` first."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (base 2, between 0 and 1): the square of
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, float), np.asarray(q, float), base=2) ** 2)


def _check_reference(model, reference: Mapping, names: List[str]) -> None:
    if reference.get("version") != REFERENCE_VERSION:
        raise InvalidInputError(f"reference statistics have version "
                                f"{reference.get('version')!r}: expected {REFERENCE_VERSION}")
    ref_names = list(reference["features"])
    k = len(model.clusterCenters())
    if ref_names != names or reference["k"] != k:
        raise InvalidInputError(
            f"reference statistics describe features {ref_names} and k={reference['k']}, "
            f"but the model has features {names} and k={k}")


def drift_report(model, reference: Mapping, df: DataFrame,
                 thresholds: DriftThresholds = DriftThresholds(),
                 ignore: Sequence[str] = ()) -> dict:
    """Compare a new slice of data with a model's reference statistics.

    First the schema (never raises on drift); then, when every feature column is there
    with a numeric (or vector/array) type, the feature and cluster statistics, in three
    Spark jobs like :func:`reference_statistics`. An added or retyped column still counts
    as schema drift, but the statistics are computed when they can be.

    Parameters
    ----------
    model : MiniBatchKMeansModel
    reference : dict
        From :func:`reference_statistics` for this model (or its JSON, loaded).
    df : DataFrame
    thresholds : DriftThresholds
    ignore : sequence of str
        Columns that may be new without counting as schema drift (ids, dates...).

    Returns
    -------
    dict
        JSON-serialisable: ``drift`` (bool), ``reasons`` (list of str), ``schema``
        (see :func:`schema_differences`), ``thresholds``, ``rows``, ``invalidRows``,
        ``validRows``, ``features`` (per feature: ``psi``, ``ksStatistic``,
        ``ksPvalue``, ``ksSampleRows``, ``mean``, ``std``, ``referenceMean``,
        ``referenceStd``, ``meanShiftStd`` (mean shift in reference standard deviations),
        ``proportions``, ``drift`` and ``reasons``), ``driftedFeatures``, ``clusters``
        (``reference`` and ``current`` proportions, ``js``, ``drift``), ``meanDistance``,
        ``referenceMeanDistance``, ``distanceRatio``, ``distanceDrift``. The statistics
        are None (and ``skipped`` says why) when the features cannot be read.
    """
    feature_schema = reference.get("featureSchema") or model.featureSchema
    input_schema = reference.get("inputSchema") or model.inputSchema
    diff = schema_differences(df, feature_schema, input_schema, ignore)
    report = {"drift": False, "reasons": [], "schema": diff,
              "thresholds": thresholds.as_dict(), "rows": None, "invalidRows": None,
              "validRows": None, "features": None, "driftedFeatures": [], "clusters": None,
              "meanDistance": None, "referenceMeanDistance": reference.get("meanDistance"),
              "distanceRatio": None, "distanceDrift": None, "skipped": None}
    if diff["drift"]:
        report["reasons"].append(_schema_reason(diff))
    if diff["removed"]:
        report["skipped"] = "feature columns are missing: no statistics"
        return _finish(report)
    try:
        spec = _spec(model, df)
    except InvalidInputError as e:
        report["skipped"] = f"the features cannot be read: {e}"
        return _finish(report)
    names = _feature_names(spec)
    check_width(len(names), int(reference.get("bins") or 10))
    _check_reference(model, reference, names)
    ref_features = reference["features"]
    row = (_long_aggregate(model, spec, df) if _is_wide(spec)
           else _valid_moments(model, spec, df))
    rows, invalid = int(row["rows"]), int(row["invalid"])
    report.update(rows=rows, invalidRows=invalid, validRows=rows - invalid)
    if rows == invalid:
        report["skipped"] = f"no valid rows ({rows} rows, all invalid): no statistics"
        report["reasons"].append(f"no valid rows to compare ({rows} rows)")
        return _finish(report)
    edges = [ref_features[n]["edges"] for n in names]
    counts, dist, bin_counts = _bins_and_clusters(model, spec, df, edges)
    n_sample = min((len(ref_features[n]["sample"]) for n in names), default=0)
    sample = _hashed_sample(model, spec, df, n_sample, int(reference.get("sampleSeed",
                                                                         SAMPLE_SEED)))
    features = _features_drift(names, ref_features, bin_counts, sample, row, thresholds)
    drifted = [name for name in names if features[name]["drift"]]
    report["features"], report["driftedFeatures"] = features, drifted
    if drifted:
        report["reasons"].append(f"{len(drifted)} of {len(names)} features drifted: "
                                 + "; ".join(f"{n} ({', '.join(features[n]['reasons'])})"
                                             for n in drifted))
    _cluster_drift(report, reference, counts, thresholds)
    _distance_drift(report, reference, counts, dist, thresholds)
    return _finish(report)


def _features_drift(names, ref_features: Mapping, bin_counts, sample: np.ndarray, row,
                    thresholds: DriftThresholds) -> dict:
    """Each feature's entry of the drift report (:func:`_feature_drift`), by name."""
    from scipy.stats import ks_2samp

    features = {}
    for j, name in enumerate(names):
        ref_sample = np.asarray(ref_features[name]["sample"], dtype=np.float64)
        ks = ks_2samp(ref_sample, sample[:, j]) if len(ref_sample) and len(sample) else None
        features[name] = _feature_drift(ref_features[name], bin_counts[j], ks,
                                        int(min(len(ref_sample), len(sample))),
                                        row[f"mean{j}"], row[f"std{j}"], thresholds)
    return features


def _valid_moments(model, spec: feat.FeatureSpec, df: DataFrame):
    """One aggregation over ``df``: ``rows``, ``invalid`` (rows the model cannot cluster)
    and per feature ``j`` the mean (``mean{j}``) and sample standard deviation
    (``std{j}``) of the valid rows."""
    valid = _valid(model, spec)
    aggs = [F.count(F.lit(1)).alias("rows"), F.count(F.when(~valid, 1)).alias("invalid")]
    for j, x in enumerate(spec.feature_exprs()):
        v = F.when(valid, x)
        aggs += [F.avg(v).alias(f"mean{j}"), F.stddev_samp(v).alias(f"std{j}")]
    return df.agg(*aggs).first()


def _feature_drift(ref: Mapping, bin_counts: np.ndarray, ks, ks_rows: int, mean, std,
                   thresholds: DriftThresholds) -> dict:
    """One feature's entry of the drift report: PSI of its rows per reference bin
    (``bin_counts``), the Kolmogorov-Smirnov test result ``ks`` (None without samples) on
    ``ks_rows`` sample rows, the mean shift, and whether (and why) it drifted."""
    now = _proportions(bin_counts)
    value = psi(ref["proportions"], now)
    ks_stat = ks_p = None
    if ks is not None:
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    mean, std = _num(mean), _num(std)
    shift = (None if mean is None or ref["mean"] is None or not ref["std"]
             else (mean - ref["mean"]) / ref["std"])
    why = []
    if value > thresholds.psi:
        why.append(f"PSI {value:.3g} > {thresholds.psi:g}")
    if (ks_p is not None and ks_p < thresholds.ks_pvalue
            and ks_stat >= thresholds.ks_statistic):
        why.append(f"KS statistic {ks_stat:.3g} (p={ks_p:.2g})")
    return {"psi": value, "ksStatistic": ks_stat, "ksPvalue": ks_p, "ksSampleRows": ks_rows,
            "mean": mean, "std": std, "referenceMean": ref["mean"],
            "referenceStd": ref["std"], "meanShiftStd": _num(shift),
            "proportions": now, "drift": bool(why), "reasons": why}


def _cluster_drift(report: dict, reference: Mapping, counts: np.ndarray,
                   thresholds: DriftThresholds) -> None:
    """Add the cluster proportion drift to ``report``: ``clusters`` (the reference and
    current shares of rows, their Jensen-Shannon divergence) and a reason when it drifted."""
    ref_props = [c["proportion"] or 0.0 for c in reference["clusters"]]
    now_props = _proportions(counts)
    js = js_divergence(ref_props, now_props)
    report["clusters"] = {"reference": ref_props, "current": now_props,
                          "rows": [int(c) for c in counts], "js": js,
                          "drift": js > thresholds.js}
    if js > thresholds.js:
        report["reasons"].append(f"cluster proportions: Jensen-Shannon divergence {js:.3g} > "
                                 f"{thresholds.js:g}")


def _distance_drift(report: dict, reference: Mapping, counts: np.ndarray, dist: np.ndarray,
                    thresholds: DriftThresholds) -> None:
    """Add the mean distance to the nearest center to ``report``, its ratio to the
    reference's and a reason when the ratio is above the threshold."""
    n_valid = int(counts.sum())
    mean_dist = dist.sum() / n_valid
    report["meanDistance"] = _num(mean_dist)
    ref_dist = reference.get("meanDistance")
    if ref_dist:
        ratio = float(mean_dist / ref_dist)
        report["distanceRatio"] = _num(ratio)
        report["distanceDrift"] = ratio > thresholds.distance_ratio
        if ratio > thresholds.distance_ratio:
            report["reasons"].append(f"mean distance to the nearest center is {ratio:.3g} "
                                     f"times the reference (> {thresholds.distance_ratio:g})")


def _finish(report: dict) -> dict:
    report["drift"] = bool(report["reasons"])
    logger.info("drift report: %s%s", "drift" if report["drift"] else "no drift",
                f" ({'; '.join(report['reasons'])})" if report["reasons"] else "")
    return report


# -- rendering ----------------------------------------------------------------------------------


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def drift_markdown(report: Mapping) -> str:
    """The drift report as Markdown: the verdict and reasons, a table per feature (PSI,
    KS statistic, p-value, mean shift, drift) and one per cluster (shares of rows)."""
    t = report["thresholds"]
    lines = [f"**Drift: {'yes' if report['drift'] else 'no'}**", ""]
    lines += [f"- {r}" for r in report["reasons"]] or ["- every figure is within its threshold"]
    schema = report["schema"]
    lines += ["", "Schema: " + ("changed" if schema["drift"] else "unchanged")]
    if report.get("skipped"):
        lines += ["", f"Statistics skipped: {report['skipped']}"]
    if report.get("features"):
        lines += ["", f"Rows: {report['rows']:,} ({report['invalidRows']:,} invalid rows left "
                  "out)",
                  "", f"| feature | PSI (> {t['psi']:g}) | KS statistic | KS p-value "
                  f"(< {t['ks_pvalue']:g}) | mean shift (std) | drift |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, f in report["features"].items():
            lines.append(f"| {name.replace('|', '/')} | {_fmt(f['psi'], '.4f')} | "
                         f"{_fmt(f['ksStatistic'], '.4f')} | {_fmt(f['ksPvalue'], '.3g')} | "
                         f"{_fmt(f['meanShiftStd'], '+.2f')} | "
                         f"{'**yes**' if f['drift'] else 'no'} |")
    c = report.get("clusters")
    if c:
        lines += ["", f"Cluster proportions: Jensen-Shannon divergence {c['js']:.4f} "
                  f"(threshold {t['js']:g}); mean distance ratio "
                  f"{_fmt(report['distanceRatio'], '.3f')} (threshold {t['distance_ratio']:g})",
                  "", "| cluster | reference | now |", "| ---: | ---: | ---: |"]
        for i, (a, b) in enumerate(zip(c["reference"], c["current"])):
            lines.append(f"| {i} | {_fmt(a, '.2%')} | {_fmt(b, '.2%')} |")
    return "\n".join(lines) + "\n"


def plot_drift(report: Mapping, path: str) -> str:
    """A PNG: per-feature PSI bars (drifted features in red) with the threshold line, and
    the cluster proportions of the reference and now side by side. Returns ``path``."""
    from ..evaluate.report import new_figure, save_figure

    feats: Dict[str, dict] = report.get("features") or {}
    clusters = report.get("clusters")
    widest = max(len(feats), len(clusters["reference"]) if clusters else 0)
    fig = new_figure((max(8.0, min(18.0, 0.35 * widest + 4)), 7))
    ax, ax2 = fig.subplots(2, 1)
    if feats:
        names = list(feats)
        x = np.arange(len(names))
        ax.bar(x, [feats[n]["psi"] for n in names],
               color=["C3" if feats[n]["drift"] else "C0" for n in names])
        ax.axhline(report["thresholds"]["psi"], color="k", ls="--", lw=1,
                   label=f"threshold {report['thresholds']['psi']:g}")
        ax.set_xticks(x, names, rotation=45 if len(names) > 8 else 0, ha="right"
                      if len(names) > 8 else "center", fontsize=8)
        ax.legend(frameon=False, loc="upper right")
        ax.set_ylabel("PSI")
        ax.grid(alpha=0.3, axis="y")
        ax.set_title("population stability index per feature (red: drift)")
    else:
        reason = report.get("skipped") or "no feature statistics"
        schema = [r for r in report["reasons"] if r.startswith("schema")]
        ax.text(0.5, 0.5, "\n".join(schema + [reason]), ha="center", va="center",
                wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
    if clusters:
        k = len(clusters["reference"])
        x = np.arange(k)
        ax2.bar(x - 0.2, clusters["reference"], 0.4, color="0.6", label="reference")
        ax2.bar(x + 0.2, [p or 0.0 for p in clusters["current"]], 0.4, color="C0", label="now")
        if k <= 40:
            ax2.set_xticks(x)
        ax2.set_xlabel("cluster")
        ax2.set_ylabel("share of rows")
        ax2.grid(alpha=0.3, axis="y")
        ax2.legend(frameon=False)
        ax2.set_title(f"cluster proportions (Jensen-Shannon divergence {clusters['js']:.3g})")
    else:
        ax2.set_axis_off()
    return save_figure(fig, path)
