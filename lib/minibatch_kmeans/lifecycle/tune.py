"""Choosing k: mini-batch fits over a grid of k (and batch sizes), judged on held-out rows.

:func:`choose_k` splits the input into a training part and a holdout part by a hash of each
row's features and the seed (``xxhash64``, salted so that it is independent of the hash
that places rows into batches): the split is the same however the input is partitioned,
and reading it costs one pass. The split is cached once; every grid point fits
:class:`~minibatch_kmeans.MiniBatchKMeans` on the training part. Each model is then measured
the way :mod:`minibatch_kmeans.evaluate.compare` measures models: the holdout cost of every
model in one float64 pass (:func:`~minibatch_kmeans.evaluate.compare.clustering_costs`),
divided by the holdout's rows (or total weight), and the silhouette (MLlib ``ClusteringEvaluator``,
squared Euclidean) on one fixed sample of holdout rows: those with the smallest hashes.

The recommended k is the one with the largest silhouette (ties: the smallest k). Beside it
the elbow of the cost curve is reported (:func:`elbow`): the maximum of Kneedle's
difference curve, that is the point of the normalised cost-against-k curve farthest below
the chord from its first point to its last.

Examples
--------
>>> est = MiniBatchKMeans(inputCols=cols, seed=7)                   # doctest: +SKIP
>>> result = choose_k(df, est, [5, 10, 15, 20])                     # doctest: +SKIP
>>> result["recommended"]["k"], result["elbow"]["k"]                  # doctest: +SKIP
(10, 10)
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..evaluate.compare import MAX_SAMPLE_ROWS, STORAGE, VECTOR_COL
from ..evaluate.holdout import HOLDOUT_SALT, SILHOUETTE_ROWS, in_holdout, measure_centers
from ..checks import integer
from ..errors import InvalidInputError, InvalidParamError
from ..spark import features as feat

logger = logging.getLogger(__name__)

#: Salt of the holdout hash: another hash than the one that places rows into batches
#: (``xxhash64(seed, features)`` in :mod:`minibatch_kmeans.spark.prepare`), so that the
#: training part still fills every batch.
#: Holdout membership resolution: rows whose hash mod 2^24 is below fraction * 2^24.
_BUCKETS = 1 << 24
#: Estimator Params the tuning refuses.
_REFUSED = {"initialCenters": "every k needs its own initialisation",
            "checkpointDir": "grid fits do not checkpoint"}


# -- the elbow ---------------------------------------------------------------------------


def elbow(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """The elbow of a decreasing, convex curve such as cost against k.

    Both axes are normalised to [0, 1] (min-max); the elbow is the point farthest below
    the chord from the first point to the last, which is the maximum of the difference
    curve of Kneedle (Satopää et al., 2011) taken offline, without its sensitivity
    threshold.

    Parameters
    ----------
    x : sequence of float, increasing
    y : sequence of float, same length

    Returns
    -------
    float or None
        The x of the elbow; None with fewer than 3 points, non-finite values, a flat
        curve, or no point below the chord.

    Examples
    --------
    >>> elbow([2, 3, 4, 5, 6], [90.0, 40.0, 5.0, 4.5, 4.0])
    4
    >>> elbow([2, 3, 4], [3.0, 2.0, 1.0]) is None       # a straight line has no elbow
    True
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise InvalidParamError(f"x and y have shapes {xs.shape} and {ys.shape}: expected "
                                "two sequences of the same length")
    if len(xs) < 3 or not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return None
    if np.any(np.diff(xs) <= 0):
        raise InvalidParamError(f"x={list(x)} is invalid: expected increasing values")
    span = ys.max() - ys.min()
    if span <= 0:
        return None
    xn = (xs - xs[0]) / (xs[-1] - xs[0])
    yn = (ys - ys.min()) / span
    below = yn[0] + (yn[-1] - yn[0]) * xn - yn  # chord minus curve
    i = int(np.argmax(below))
    if below[i] <= 1e-12:
        return None
    return x[i]


# -- validation --------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_k_values(k_values) -> List[int]:
    """Distinct integers >= 2 in increasing order (a copy as a list of int)."""
    ok = (isinstance(k_values, (list, tuple)) and len(k_values) > 0
          and all(_is_int(k) and k >= 2 for k in k_values))
    ks = [int(k) for k in k_values] if ok else []
    if not ok or any(b <= a for a, b in zip(ks, ks[1:])):
        raise InvalidParamError(f"k_values={k_values!r} is invalid: expected distinct "
                                "integers >= 2 in increasing order, e.g. [5, 10, 15]")
    return ks


def _check_batch_sizes(batch_sizes) -> Optional[List[int]]:
    if batch_sizes is None:
        return None
    ok = (isinstance(batch_sizes, (list, tuple)) and len(batch_sizes) > 0
          and all(_is_int(b) and b >= 1 for b in batch_sizes)
          and len(set(batch_sizes)) == len(batch_sizes))
    if not ok:
        raise InvalidParamError(f"batch_sizes={batch_sizes!r} is invalid: expected None or "
                                "distinct integers >= 1")
    return [int(b) for b in batch_sizes]


def _check_options(holdout_fraction, sample_size, seed):
    if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float)) \
            or not 0 < holdout_fraction < 1:
        raise InvalidParamError(f"holdout_fraction={holdout_fraction!r} is invalid: expected "
                                "a number between 0 and 1 (exclusive)")
    integer("sample_size", sample_size, 2, maximum=MAX_SAMPLE_ROWS)
    if not _is_int(seed):
        raise InvalidParamError(f"seed={seed!r} is invalid: expected an integer")


def _check_estimator(estimator):
    """A validated copy of ``estimator`` for the grid (computeTrainingCost off unless
    set), or InvalidParamError before any Spark job."""
    from ..ml.estimator import MiniBatchKMeans

    if not isinstance(estimator, MiniBatchKMeans):
        raise InvalidParamError(
            f"estimator={estimator!r} is invalid: expected a configured MiniBatchKMeans, "
            "e.g. choose_k(df, MiniBatchKMeans(inputCols=cols), [5, 10, 15])")
    for name, why in _REFUSED.items():
        if estimator.isSet(name):
            raise InvalidParamError(f"{name} is set ({_short(estimator.getOrDefault(name))}): "
                                    f"expected it unset ({why})")
    if estimator.getDistanceMeasure() != "euclidean":
        raise InvalidParamError(f"distanceMeasure={estimator.getDistanceMeasure()!r} is "
                                "invalid: choosing k measures squared Euclidean cost and "
                                "silhouette, so expected 'euclidean'")
    est = estimator.copy()
    if not est.isSet(est.computeTrainingCost):
        est.setComputeTrainingCost(False)
    return est.validateParams()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the grid ----------------------------------------------------------------------------


def _split_columns(spec: feat.FeatureSpec) -> Tuple[List[str], str, str]:
    """The input columns :func:`_split` keeps (features, weight), and the names of its
    part and hash columns, apart from them."""
    cols = list(dict.fromkeys([*spec.columns, *([spec.weight_col] if spec.weight_col else [])]))
    return cols, feat.fresh_name(cols, "_part"), feat.fresh_name(cols, "_h")


def _split(df: DataFrame, spec: feat.FeatureSpec, fraction: float, seed: int):
    """The input's feature (and weight) columns with a part (-1 invalid, 0 training,
    1 holdout) and the holdout hash (:func:`_split_columns`), cached; and its counts per
    part."""
    cols, part_col, h_col = _split_columns(spec)
    h = F.xxhash64(F.lit(HOLDOUT_SALT), F.lit(int(seed)), *spec.feature_exprs())
    part = (F.when(~spec.valid_expr(cosine=False), F.lit(-1))
            .when(in_holdout(h, fraction, _BUCKETS), F.lit(1)).otherwise(F.lit(0)))
    data = df.select(*[F.col(feat.quoted(c)) for c in cols], part.alias(part_col),
                     h.alias(h_col)).persist(STORAGE)
    rows = data.groupBy(F.col(feat.quoted(part_col)).alias("part")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(spec.weight_expr()).alias("w")).collect()
    counts = {r["part"]: (int(r["n"]), float(r["w"] or 0.0)) for r in rows}
    return data, counts


def choose_k(df: DataFrame, estimator, k_values: Sequence[int],
             batch_sizes: Optional[Sequence[int]] = None, holdout_fraction: float = 0.2,
             sample_size: int = SILHOUETTE_ROWS, seed: Optional[int] = None) -> Dict[str, Any]:
    """Fit a configured :class:`~minibatch_kmeans.MiniBatchKMeans` for every k (and batch
    size) on a training part of ``df`` and measure each fit on the held-out rest.

    Parameters
    ----------
    df : DataFrame
        The input, with the features (and weight column) the estimator names.
    estimator : MiniBatchKMeans
        The Params every grid point shares (as ``CrossValidator`` takes an estimator);
        each fit is a copy with the grid's ``k`` (and batch size). Not with
        ``initialCenters`` or ``checkpointDir``; Euclidean distance only.
        ``computeTrainingCost`` defaults to False (the holdout is measured here). With
        ``handleInvalid="skip"`` invalid rows are left out, otherwise they raise
        :class:`InvalidInputError`.
    k_values : sequence of int
        Distinct values >= 2, increasing.
    batch_sizes : sequence of int, optional
        Batch sizes to try for every k (default: the estimator's ``batchSize``).
    holdout_fraction : float
        Share of rows held out, by a hash of the row's features and ``seed`` (identical
        rows fall on the same side).
    sample_size : int
        Holdout rows (at most) for the silhouette: those with the smallest holdout hashes,
        the same rows for every fit.
    seed : int, optional
        Seeds the split (default: the estimator's seed).

    Returns
    -------
    dict
        ``grid``: one dict per fit (``k``, ``batch_size``, ``holdout_cost``,
        ``holdout_cost_per_row``, ``silhouette``, ``seconds``, ``steps``, ``epochs``,
        ``stop_reason``, ``holdout_sizes``), by batch size then k; ``recommended``
        (``k``, ``batch_size``, ``silhouette``: the largest silhouette), ``elbow``
        (``k`` of the elbow of the recommended batch size's cost curve, ``method``),
        ``elbows`` (per batch size), ``data`` (row counts), ``params`` (the estimator's
        shared Params and the tuning options) and ``metrics`` (flat figures to log).

    Raises
    ------
    InvalidParamError
        A bad grid, option or Param.
    InvalidInputError
        Invalid rows (unless ``handleInvalid="skip"``), or fewer training or holdout rows
        than the largest k.
    """
    ks = check_k_values(k_values)
    sizes = _check_batch_sizes(batch_sizes)
    est = _check_estimator(estimator)
    seed = est.getSeed() if seed is None else seed
    _check_options(holdout_fraction, sample_size, seed)
    spec = est.featureSpec(df)
    grid_sizes = sizes or [est.getBatchSize()]

    data, counts = _split(df, spec, float(holdout_fraction), int(seed))
    sample = None
    try:
        n_bad = counts.get(-1, (0, 0.0))[0]
        (n_train, _), (n_hold, w_hold) = counts.get(0, (0, 0.0)), counts.get(1, (0, 0.0))
        _check_split(est, df, spec, ks[-1], holdout_fraction, n_bad, n_train, n_hold)
        cols, part_col, _ = _split_columns(spec)
        part = F.col(feat.quoted(part_col))
        train = feat.select_named(data.where(part == 0), cols)
        holdout = feat.select_named(data.where(part == 1), cols)
        sample = _silhouette_sample(data, spec, sample_size)
        n_sample = sample.count()
        grid, centers = _fit_grid(est, train, ks, grid_sizes)
        measured = measure_centers(holdout, sample, spec, centers, w_hold)
        for g in grid:
            g.update(measured[g.pop("_name")])
            logger.info("k=%d, batch %d: holdout cost per row %.6g, silhouette %s",
                        g["k"], g["batch_size"], g["holdout_cost_per_row"],
                        "n/a" if g["silhouette"] is None else f"{g['silhouette']:.4f}")
    finally:
        if sample is not None:
            sample.unpersist()
        data.unpersist()

    result: Dict[str, Any] = {
        "grid": grid,
        "data": {"rows": n_train + n_hold + n_bad, "train_rows": n_train,
                 "holdout_rows": n_hold, "holdout_weight": w_hold, "invalid_rows": n_bad,
                 "sample_rows": n_sample, "features": spec.n_features,
                 "input": spec.describe(), "weight_col": spec.weight_col},
        "params": {"k_values": ks, "batch_sizes": [g for g in grid_sizes],
                   "holdout_fraction": float(holdout_fraction), "sample_size": sample_size,
                   "seed": int(seed),
                   "estimator": {p.name: v for p, v in est.extractParamMap().items()
                                 if p.name not in ("k", "batchSize")}},
    }
    result.update(recommend(grid))
    return result


def _check_split(est, df, spec, k_max, holdout_fraction, n_bad, n_train, n_hold) -> None:
    """Raise for invalid rows under handleInvalid='error', or too few rows on a side."""
    if n_bad and est.getHandleInvalid() != "skip":
        reasons = spec.summarize_invalid(n_bad, spec.invalid_counts(df, cosine=False))
        raise InvalidInputError(
            f"the input has {reasons}; expected none with handleInvalid='error' (set "
            "handleInvalid='skip' to leave them out)")
    if n_hold < k_max or n_train < k_max:
        raise InvalidInputError(
            f"the split has {n_train} training and {n_hold} holdout rows (holdout_fraction="
            f"{holdout_fraction}, {n_bad} invalid rows left out): expected at least the "
            f"largest k={k_max} rows in each; use fewer k, more rows or another "
            "holdout_fraction")
    logger.info("split %d rows: %d training, %d holdout (%d invalid left out)",
                n_train + n_hold + n_bad, n_train, n_hold, n_bad)


def _silhouette_sample(data: DataFrame, spec: feat.FeatureSpec, sample_size: int):
    """The holdout rows with the smallest hashes, with an MLlib Vector column, cached."""
    from pyspark.ml.functions import array_to_vector

    cols, part_col, h_col = _split_columns(spec)
    vector = (F.col(feat.quoted(spec.columns[0])) if spec.kind == "vector"
              else array_to_vector(spec.array_expr()))
    return (data.where(F.col(feat.quoted(part_col)) == 1).orderBy(F.col(feat.quoted(h_col)))
            .limit(sample_size)
            .select(*[F.col(feat.quoted(c)) for c in cols], vector.alias(VECTOR_COL))
            .persist(STORAGE))


def _fit_grid(est, train: DataFrame, ks: Sequence[int], grid_sizes):
    """One fit per (batch size, k): the grid's rows and {row name: centers}."""
    grid: List[Dict[str, Any]] = []
    centers: Dict[str, np.ndarray] = {}
    for b in grid_sizes:
        for k in ks:
            fit_est = est.copy({est.k: k} if b is None else {est.k: k, est.batchSize: b})
            t0 = time.perf_counter()
            model = fit_est.fit(train)
            seconds = time.perf_counter() - t0
            s = model.summary
            name = f"g{len(grid)}"
            centers[name] = np.array(model.clusterCenters())
            grid.append({"k": k, "batch_size": int(s.batchSize), "seconds": seconds,
                         "steps": int(s.numSteps), "epochs": int(s.numIter),
                         "stop_reason": s.stopReason, "_name": name})
            logger.info("k=%d, batch %d: %.1f s, %d steps (%s)", k, s.batchSize,
                        seconds, s.numSteps, s.stopReason)
    return grid, centers


def recommend(grid: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """From measured grid points (``k``, ``batch_size``, ``silhouette``,
    ``holdout_cost_per_row``): ``recommended`` (largest silhouette; ties, the smallest k,
    then the first batch size), ``elbow`` (of the recommended batch size's cost curve),
    ``elbows`` (per batch size) and the flat ``metrics``."""
    scored = [g for g in grid if g.get("silhouette") is not None]
    best = max(scored, key=lambda g: (g["silhouette"], -g["k"]), default=None)
    elbows = {}
    for b in dict.fromkeys(g["batch_size"] for g in grid):
        curve = [g for g in grid if g["batch_size"] == b
                 and g.get("holdout_cost_per_row") is not None]
        elbows[b] = elbow([g["k"] for g in curve], [g["holdout_cost_per_row"] for g in curve])
    b_rec = best["batch_size"] if best else next(iter(elbows), None)
    recommended = ({"k": best["k"], "batch_size": best["batch_size"],
                    "silhouette": best["silhouette"],
                    "holdout_cost_per_row": best.get("holdout_cost_per_row"),
                    "by": "largest silhouette on the holdout sample"}
                   if best else {"k": None, "batch_size": None, "silhouette": None,
                                 "by": "no silhouette could be measured"})
    elbow_k = elbows.get(b_rec)
    metrics = {"recommended_k": recommended["k"], "elbow_k": elbow_k,
               "best_silhouette": recommended["silhouette"]}
    if best:
        metrics["recommended_batch_size"] = best["batch_size"]
        metrics["recommended_holdout_cost_per_row"] = best.get("holdout_cost_per_row")
    return {"recommended": recommended,
            "elbow": {"k": elbow_k, "batch_size": b_rec,
                      "method": "Kneedle: the point of the min-max normalised holdout cost "
                                "per row against k farthest below the chord from the first "
                                "point to the last"},
            "elbows": {str(b): v for b, v in elbows.items()},
            "metrics": metrics}


# -- reporting ---------------------------------------------------------------------------


def markdown(result: Mapping[str, Any]) -> str:
    """``tune.md``: the grid as a table, and the recommendation beside the elbow."""
    d, r, e = result["data"], result["recommended"], result["elbow"]

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = [f"# Choosing k: {d['train_rows']:,} training rows, {d['holdout_rows']:,} holdout "
             f"rows x {d['features']} features", ""]
    if r["k"] is not None:
        lines.append(f"**Recommended k = {r['k']}** (batch size {r['batch_size']:,}): the "
                     f"largest silhouette, {r['silhouette']:.4f}, on {d['sample_rows']:,} "
                     "holdout rows.")
    else:
        lines.append("**No recommendation**: no fit had a silhouette (every sample row fell "
                     "in one cluster).")
    lines += ["", f"Elbow of the holdout cost curve: **k = {fmt(e['k'], '')}**"
              + ("" if e["k"] is not None else " (no elbow: fewer than 3 k values, or no "
                                               "bend)")
              + f" ({e['method']}).", "",
              "| k | batch size | holdout cost per row | silhouette | seconds |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for g in result["grid"]:
        mark = " **←**" if (g["k"], g["batch_size"]) == (r["k"], r["batch_size"]) else ""
        lines.append(f"| {g['k']}{mark} | {g['batch_size']:,} | "
                     f"{fmt(g['holdout_cost_per_row'], '.6g')} | "
                     f"{fmt(g['silhouette'], '.4f')} | {g['seconds']:.1f} |")
    lines += ["", f"- Input: {d['input']}; {d['invalid_rows']:,} invalid rows left out.",
              f"- Holdout: {result['params']['holdout_fraction']:g} of the rows by a hash of "
              f"their features and seed {result['params']['seed']}; cost per row is the "
              "float64 sum of squared distances to the nearest center over the holdout, "
              "divided by its rows (or total weight).",
              "- Silhouette: MLlib ClusteringEvaluator (squared Euclidean) on the holdout "
              "rows with the smallest hashes, the same rows for every fit."]
    files = result.get("files") or {}
    if files.get("k_curves.png"):
        lines += ["", f"Picture: `{files['k_curves.png']}`."]
    return "\n".join(lines) + "\n"


#: Colors of the batch sizes' curves (green and red mark the recommendation and elbow).
_LINE_COLORS = ("C0", "C1", "C4", "C5", "C6", "C7", "C8", "C9")


def plot_k_curves(result: Mapping[str, Any], path: str) -> str:
    """Holdout cost per row (top, linear: the scale the elbow is found on) and silhouette
    (bottom) against k, one line per batch size, with the recommended k (wide green band,
    star) and the elbow (dashed orange line, diamond) marked; a PNG at the driver-local
    ``path``."""
    from matplotlib.ticker import MaxNLocator

    from ..evaluate.report import new_figure, save_figure

    grid = result["grid"]
    r, e = result["recommended"], result["elbow"]
    fig = new_figure((8, 6.5))
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    sizes = list(dict.fromkeys(g["batch_size"] for g in grid))
    for i, b in enumerate(sizes):
        pts = [g for g in grid if g["batch_size"] == b]
        label = f"batch {b:,}" if len(sizes) > 1 else None
        ks = [g["k"] for g in pts]
        cost = [np.nan if g["holdout_cost_per_row"] is None else g["holdout_cost_per_row"]
                for g in pts]
        sil = [np.nan if g["silhouette"] is None else g["silhouette"] for g in pts]
        color = _LINE_COLORS[i % len(_LINE_COLORS)]
        ax.plot(ks, cost, "o-", color=color, ms=4, label=label)
        ax2.plot(ks, sil, "o-", color=color, ms=4, label=label)
    if r.get("k") is not None:
        for a in (ax, ax2):
            a.axvline(r["k"], color="C2", lw=4, alpha=0.3, zorder=0)
        ax2.plot([r["k"]], [r["silhouette"]], "*", color="C2", ms=14,
                 label=f"recommended: k={r['k']} (largest silhouette, {r['silhouette']:.3f})")
    if e.get("k") is not None:
        at = [g for g in grid if g["k"] == e["k"] and g["batch_size"] == e.get("batch_size")]
        for a in (ax, ax2):
            a.axvline(e["k"], color="C3", ls="--", lw=1.2, zorder=3)
        if at and at[0]["holdout_cost_per_row"] is not None:
            which = f", batch {e['batch_size']:,}" if len(sizes) > 1 else ""
            ax.plot([e["k"]], [at[0]["holdout_cost_per_row"]], "D", color="C3", ms=8,
                    zorder=4, label=f"elbow of the cost curve: k={e['k']} (Kneedle{which})")
    ax.set_ylabel("holdout cost per row")
    ax2.set_ylabel("silhouette (holdout sample)")
    ax2.set_xlabel("k")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8, frameon=False, loc="best")
    d = result["data"]
    ax.set_title(f"choosing k: {d['train_rows']:,} training / {d['holdout_rows']:,} holdout "
                 f"rows x {d['features']}")
    return save_figure(fig, path)


def write_tune(result: dict, output_dir: str) -> Dict[str, str]:
    """Write ``tune.json``, ``tune.md`` and ``k_curves.png`` under ``output_dir`` (a
    folder path or URI: :func:`~minibatch_kmeans.paths.write_file`); sets and returns
    ``result["files"]`` (mutates ``result``)."""
    from ..evaluate.report import write_json, write_text
    from ..paths import join

    files = {name: join(output_dir, name)
             for name in ("tune.json", "tune.md", "k_curves.png")}
    result["files"] = files
    plot_k_curves(result, files["k_curves.png"])
    write_text(markdown(result), files["tune.md"])
    write_json(result, files["tune.json"])
    return files


__all__ = ["choose_k", "elbow", "recommend", "markdown", "plot_k_curves", "write_tune",
           "check_k_values"]
