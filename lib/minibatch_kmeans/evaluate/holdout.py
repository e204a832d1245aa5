"""Held-out rows, and how models are measured on them: the same rows for every model
(a hash of each row's content decides), the holdout cost per row of several center sets
in one pass, and their silhouette on one fixed sample. Choosing k (lifecycle.tune), the
monitor's challenger and the registry's holdout metrics all measure this way."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import InvalidInputError, InvalidParamError
from ..spark import features as feat
from .compare import STORAGE, VECTOR_COL, clustering_costs, labels_frame, sample_silhouette

#: Salt of choose_k's holdout hash (and of the silhouette sample's order).
HOLDOUT_SALT = "minibatch_kmeans.tune.holdout"
#: Hash buckets of :func:`holdout_split`.
SPLIT_SLOTS = 1 << 30
#: Holdout rows the silhouette is measured on by default (:func:`silhouette_sample`).
SILHOUETTE_ROWS = 10_000


def in_holdout(key: Column, fraction: float, slots: int) -> Column:
    """True for a row whose 64-bit hash ``key`` falls in the first ``fraction`` of
    ``slots`` buckets: the held-out rows, the same ones in any order or partitioning."""
    return F.pmod(key, F.lit(slots)) < F.lit(int(round(fraction * slots)))


def holdout_split(df: DataFrame, fraction: float, seed: int,
                  cols: Optional[Sequence[str]] = None) -> Tuple[DataFrame, DataFrame]:
    """Split ``df`` into ``(rest, holdout)`` by a hash of each row's content.

    A row goes to the holdout when ``xxhash64(seed, cols...)`` falls in the first
    ``fraction`` of the hash range, so the same table (in any order, over any partitioning)
    always gives the same split; identical rows land on the same side.

    Parameters
    ----------
    df : DataFrame
    fraction : float
        Expected share of rows in the holdout, in (0, 1).
    seed : int
    cols : sequence of str, optional
        The columns hashed (default: every column except maps, which cannot be hashed).
        Pass the feature columns to keep the split when other columns change.

    Returns
    -------
    rest, holdout : DataFrame
    """
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InvalidParamError(f"holdout fraction={fraction!r} is invalid: expected a "
                                "number in (0, 1)")
    if cols is None:
        cols = [f.name for f in df.schema.fields if not isinstance(f.dataType, T.MapType)]
    if not cols:
        raise InvalidInputError(f"holdout_split has no column to hash: expected some of "
                                f"{df.columns}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidInputError(f"holdout_split columns {missing} are not in the table: "
                                f"columns are {df.columns}")
    key = F.xxhash64(F.lit(int(seed)), *[F.col(feat.quoted(c)) for c in cols])
    inside = in_holdout(key, fraction, SPLIT_SLOTS)
    return df.where(~inside), df.where(inside)


def silhouette_sample(holdout: DataFrame, spec: feat.FeatureSpec, sample_size: int,
                      seed: int) -> DataFrame:
    """At most ``sample_size`` valid rows of ``holdout`` (those of smallest
    ``xxhash64(HOLDOUT_SALT, seed, features)``, so the same rows for every model) with
    their features as a Vector column ``VECTOR_COL``, for :func:`measure_centers`. Lazy."""
    from pyspark.ml.functions import array_to_vector

    vector = (F.col(feat.quoted(spec.columns[0])) if spec.kind == "vector"
              else array_to_vector(spec.array_expr()))
    h = F.xxhash64(F.lit(HOLDOUT_SALT), F.lit(int(seed)), *spec.feature_exprs())
    keep = [F.col(feat.quoted(c)) for c in spec.columns]
    return (holdout.where(spec.valid_expr(cosine=False)).orderBy(h).limit(int(sample_size))
            .select(*keep, vector.alias(VECTOR_COL)))


def holdout_size(holdout: DataFrame, spec: feat.FeatureSpec) -> Tuple[int, float]:
    """Rows and total weight (rows when unweighted) of a holdout, in one job: what
    :func:`measure_centers` divides the cost by."""
    counts = holdout.agg(F.count(F.lit(1)).alias("n"),
                         F.sum(spec.weight_expr()).alias("w")).first()
    return int(counts["n"]), float(counts["w"] or 0.0)


def holdout_metrics(rows: int, measured: Mapping[str, Any],
                    reference: Mapping[str, Any]) -> Dict[str, Any]:
    """The holdout metrics registered with a model version: rows, cost per row and
    silhouette (one entry of :func:`measure_centers`) and the reference statistics' mean
    distance."""
    return {"rows": rows, "costPerRow": measured["holdout_cost_per_row"],
            "silhouette": measured["silhouette"], "meanDistance": reference.get("meanDistance")}


def measure_centers(holdout: DataFrame, sample: DataFrame, spec: feat.FeatureSpec,
                    centers: Mapping[str, np.ndarray],
                    holdout_weight: float) -> Dict[str, Dict[str, Any]]:
    """Measure several center sets on the same held-out rows, the way :func:`choose_k`
    judges its grid.

    Parameters
    ----------
    holdout : DataFrame
        Valid held-out rows (features as ``spec`` says).
    sample : DataFrame
        Holdout rows with a Vector column ``VECTOR_COL`` (see :func:`silhouette_sample`).
    spec : FeatureSpec
    centers : mapping of str to ndarray of shape (k_i, n_features)
    holdout_weight : float
        Rows (or total weight) of ``holdout``: the cost is divided by it.

    Returns
    -------
    dict
        Per name: ``holdout_cost`` (sum of squared distances to the nearest center),
        ``holdout_cost_per_row`` (None for an empty holdout), ``holdout_sizes`` (rows per
        center) and ``silhouette`` (squared Euclidean, on ``sample``; None for fewer than
        two clusters).
    """
    names = list(centers)
    costs = clustering_costs(holdout, [centers[n] for n in names], **_cost_args(spec))
    labelled = labels_frame(sample, spec, centers).persist(STORAGE)
    try:
        return {n: {"holdout_cost": c["cost"],
                    "holdout_cost_per_row": (c["cost"] / holdout_weight
                                             if holdout_weight > 0 else None),
                    "holdout_sizes": c["sizes"],
                    "silhouette": sample_silhouette(labelled, f"pred_{n}")}
                for n, c in zip(names, costs)}
    finally:
        labelled.unpersist()


def _cost_args(spec: feat.FeatureSpec) -> Dict[str, Any]:
    if spec.kind == "columns":
        return {"input_cols": list(spec.columns), "weight_col": spec.weight_col}
    return {"features_col": spec.columns[0], "weight_col": spec.weight_col}
