"""Side by side with Spark MLlib ``KMeans``: quality and time, measured one way for both.

:func:`compare_with_mllib` caches the input once, then fits our
:class:`~minibatch_kmeans.MiniBatchKMeans` and MLlib's ``KMeans`` (block solver for dense
data) on it, and, when the data fits in driver memory, scikit-learn's ``MiniBatchKMeans``
and ``KMeans`` as single-machine references. Every model is then measured by the same
code: :func:`clustering_costs` (full-data cost and cluster sizes, float64, one Spark job
for all center sets), silhouette from MLlib's ``ClusteringEvaluator`` on one seeded sample,
and the assignments of that sample for the adjusted Rand index and normalised mutual
information. Centers are matched one to one by the Hungarian method.

Needs scipy and scikit-learn (``pip install 'minibatch-kmeans[compare]'``).

Examples
--------
>>> est = MiniBatchKMeans(k=20, inputCols=cols)                       # doctest: +SKIP
>>> result = compare_with_mllib(df, est, output_dir="out/compare")  # doctest: +SKIP
>>> result["speedup"], result["cost_ratio"]                        # doctest: +SKIP
(9.8, 0.71)
"""
from __future__ import annotations

import ctypes
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd  # resolvable type hints for the pandas UDF
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..core.kernels import labels_and_distances, row_norms_sq
from ..checks import integer
from ..errors import InvalidInputError, InvalidParamError, MiniBatchKMeansError
from ..paths import join
from ..spark import features as feat
from ..spark.prepare import feature_names
from ..spark.udfs import feature_matrix
from .report import (plot_cluster_sizes, plot_cost_vs_seconds, plot_pca, write_json,
                     write_text)

logger = logging.getLogger(__name__)

VECTOR_COL = "_mbkm_features"
STORAGE = StorageLevel.MEMORY_AND_DISK_DESER
#: MLlib KMeans Params that ``mllib=`` may set (the rest are shared or fixed).
MLLIB_PARAMS = ("maxIter", "tol", "initMode", "initSteps", "solver", "maxBlockSizeInMB",
                "distanceMeasure")
#: The most sample rows a comparison or tuning takes for its silhouette, agreement and
#: picture (they are collected to the driver).
MAX_SAMPLE_ROWS = 1_000_000
#: Rows each side's untimed warm-up fit reads (``compare_with_mllib(warm_up_rows=)``)
WARM_UP_ROWS = 10_000
#: The single-machine references, in the order they run.
REFERENCES = ("sklearn_minibatch", "sklearn_kmeans")


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MiniBatchKMeansError(
            f"the comparison needs {module.split('.')[0]}, which is not installed: "
            "pip install 'minibatch-kmeans[compare]'") from None


# -- the shared measures -----------------------------------------------------------------


def _cost_function(center_sets: Sequence[np.ndarray], d: int):
    sets = [np.ascontiguousarray(C, dtype=np.float64) for C in center_sets]
    ks = [C.shape[0] for C in sets]

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        costs = np.zeros(len(sets))
        counts = [np.zeros(k, np.int64) for k in ks]
        weights = [np.zeros(k) for k in ks]
        norms = [row_norms_sq(C) for C in sets]
        invalid = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            X = feature_matrix(batch, d, np.float64)  # nulls arrive as NaN
            ok = np.isfinite(X).all(axis=1)
            w = None
            if "weight" in batch.schema.names:
                w = batch.column("weight").to_numpy(zero_copy_only=False).astype(np.float64)
                ok &= np.isfinite(w) & (w >= 0)
            if not ok.all():
                invalid += int((~ok).sum())
                X, w = X[ok], (None if w is None else w[ok])
            for i, (C, c_sq) in enumerate(zip(sets, norms)):
                labels, dist = labels_and_distances(X, C, c_sq)
                costs[i] += float(dist @ w) if w is not None else float(dist.sum())
                counts[i] += np.bincount(labels, minlength=ks[i])
                weights[i] += np.bincount(labels, weights=w, minlength=ks[i])
        yield pa.RecordBatch.from_pydict({
            "costs": pa.array([costs], type=pa.list_(pa.float64())),
            "counts": pa.array([np.concatenate(counts)], type=pa.list_(pa.int64())),
            "weights": pa.array([np.concatenate(weights)], type=pa.list_(pa.float64())),
            "invalid": pa.array([invalid], type=pa.int64()),
        })

    return fn


def clustering_costs(df: DataFrame, center_sets: Sequence[Any], features_col: str = "features",
                     input_cols: Optional[Sequence[str]] = None,
                     weight_col: Optional[str] = None) -> List[Dict[str, Any]]:
    """Full-data cost of several center sets in one pass, the same way for every model.

    The cost is MLlib's ``trainingCost`` and scikit-learn's ``inertia_``: the (weighted)
    sum over rows of the squared Euclidean distance to the nearest center, in float64
    (nearest center by a float64 matrix product; the distance recomputed directly).

    Parameters
    ----------
    df : DataFrame
        Rows to measure on; features as ``input_cols`` or a Vector/array ``features_col``.
        Rows with null, NaN or infinite features raise :class:`InvalidInputError`;
        filter them first.
    center_sets : sequence of array-like of shape (k_i, n_features)
    weight_col : str, optional

    Returns
    -------
    list of dict
        Per center set: ``cost`` (float), ``sizes`` (rows per center, list of int),
        ``weights`` (weight per center).
    """
    spec = feat.resolve(df, features_col, input_cols, weight_col)
    d = spec.n_features
    sets = [np.asarray(C, dtype=np.float64) for C in center_sets]
    for i, C in enumerate(sets):
        if C.ndim != 2 or C.shape[1] != d or C.shape[0] == 0:
            raise InvalidParamError(f"center set {i} has shape {C.shape}: expected "
                                    f"(k, {d}) for {spec.describe()}")
    if not sets:
        return []
    table = df.select(*_feature_columns(spec, with_weight=True)).mapInArrow(
        _cost_function(sets, d), "costs array<double>, counts array<long>, "
        "weights array<double>, invalid long").toArrow()
    n_invalid = int(pc.sum(table.column("invalid")).as_py() or 0)
    if n_invalid:
        raise InvalidInputError(
            f"{n_invalid} rows have null, NaN or infinite features ({spec.describe()})"
            + (" or a negative or non-finite weight" if weight_col else "")
            + ": expected none; filter invalid rows first")
    ks = [C.shape[0] for C in sets]
    costs = np.zeros(len(sets))
    counts = np.zeros(sum(ks), np.int64)
    weights = np.zeros(sum(ks))
    partials = sorted(zip(table.column("costs").to_pylist(), table.column("counts").to_pylist(),
                          table.column("weights").to_pylist()))  # a canonical order
    for c, n, w in partials:
        costs += c
        counts += np.asarray(n, np.int64)
        weights += w
    out, start = [], 0
    for i, k in enumerate(ks):
        out.append({"cost": float(costs[i]), "sizes": counts[start:start + k].tolist(),
                    "weights": weights[start:start + k].tolist()})
        start += k
    return out


def match_centers(a, b) -> Dict[str, Any]:
    """Match two center sets one to one, minimising the total Euclidean distance
    (the Hungarian method, ``scipy.optimize.linear_sum_assignment``).

    Returns
    -------
    dict
        ``pairs``: list of ``(i, j)`` (row i of ``a`` with row j of ``b``, by ``i``);
        ``distances``: matched distances; ``mean``, ``max``.
    """
    linear_sum_assignment = _require("scipy.optimize").linear_sum_assignment
    A = np.asarray(a, dtype=np.float64)
    B = np.asarray(b, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise InvalidParamError(f"center sets of shapes {A.shape} and {B.shape} cannot be "
                                "matched: expected (k_a, d) and (k_b, d) with the same d")
    dist = np.sqrt(np.maximum(row_norms_sq(A)[:, None] - 2 * A @ B.T + row_norms_sq(B), 0))
    rows, cols = linear_sum_assignment(dist)
    matched = dist[rows, cols]
    return {"pairs": [(int(i), int(j)) for i, j in zip(rows, cols)],
            "distances": matched.tolist(), "mean": float(matched.mean()),
            "max": float(matched.max())}


def native_blas() -> Dict[str, Any]:
    """Whether this (driver) machine has the native ``libblas.so.3`` that MLlib's netlib
    loader looks for, and the file it resolves to (OpenBLAS, reference BLAS...)."""
    try:
        ctypes.CDLL("libblas.so.3")
    except OSError:
        return {"available": False, "library": None}
    library = "libblas.so.3"
    try:  # the file the loader mapped
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = [ln.split()[-1] for ln in f if "libblas.so.3" in ln]
        if paths:
            library = os.path.realpath(paths[0])
    except OSError:
        pass
    return {"available": True, "library": library}


# -- the comparison --------------------------------------------------------------------


def _trajectory_recorder(points: int, clock_start: float):
    """on_step callback keeping centers at geometrically spaced steps, and the last."""
    snaps: List[Dict[str, Any]] = []
    ratio = 1.0 + 2.0 / max(points, 2)
    state = {"next": 1.0, "last": None}

    def on_step(rec, st):
        snap = {"step": rec.step, "seconds": time.perf_counter() - clock_start,
                "rows_seen": st.rows_seen, "centers": st.centers.copy()}
        if rec.step >= state["next"]:
            snaps.append(snap)
            state["next"] = max(state["next"] * ratio, rec.step + 1)
        else:
            state["last"] = snap

    def finish():
        last = state["last"]
        if last is not None and (not snaps or last["step"] > snaps[-1]["step"]):
            snaps.append(last)
        if len(snaps) > points:  # thin evenly in log(step), always keeping the last
            idx = np.unique(np.round(np.geomspace(1, len(snaps), points)).astype(int) - 1)
            kept = [snaps[i] for i in idx]
            if kept[-1] is not snaps[-1]:
                kept.append(snaps[-1])
            snaps[:] = kept
        return snaps

    return on_step, finish


def _input_frame(df: DataFrame, spec: feat.FeatureSpec, handle_invalid: str):
    """The shared input: the features (as given) plus an MLlib Vector column, the weight,
    cached once; invalid rows raise or are dropped."""
    from pyspark.ml.functions import array_to_vector

    keep = list(spec.columns) + ([spec.weight_col] if spec.weight_col else [])
    vector = (F.col(spec.columns[0]) if spec.kind == "vector"
              else array_to_vector(spec.array_expr()))
    valid = spec.valid_expr(cosine=False)
    counts = df.select(valid.alias("ok")).groupBy("ok").count().collect()
    n_bad = sum(r["count"] for r in counts if not r["ok"])
    if n_bad and handle_invalid != "skip":
        reasons = spec.summarize_invalid(n_bad, spec.invalid_counts(df, cosine=False))
        raise InvalidInputError(
            f"the input has {reasons}; expected none with handleInvalid='error' (set "
            "handleInvalid='skip' on the estimator to leave them out of both fits)")
    data = df.where(valid) if n_bad else df
    data = data.select(*[F.col(feat.quoted(c)) for c in keep],
                       vector.alias(VECTOR_COL)).persist(STORAGE)
    n = data.count()
    logger.info("cached the shared input: %d rows (%d invalid rows skipped)", n, n_bad)
    return data, n, n_bad


def _sample(data: DataFrame, n_rows: int, size: int, seed: int) -> DataFrame:
    if n_rows <= size:
        return data
    frac = min(1.0, 1.1 * size / n_rows + 1e-4)
    return data.sample(False, frac, seed).limit(size)


def labels_frame(sample: DataFrame, spec: feat.FeatureSpec, sets: Mapping[str, np.ndarray]):
    """The sample with one prediction column per center set (nearest center, float64)."""
    from pyspark.sql.functions import pandas_udf

    d = spec.n_features
    names = list(sets)
    mats = [np.ascontiguousarray(sets[n], dtype=np.float64) for n in names]
    schema = ", ".join(f"`{n}` int" for n in names)

    @pandas_udf(schema)
    def predict(*cols: pd.Series) -> pd.DataFrame:
        X = np.column_stack([c.to_numpy(dtype=np.float64) for c in cols]) \
            if len(cols[0]) else np.empty((0, d))
        return pd.DataFrame({n: labels_and_distances(X, C, row_norms_sq(C))[0].astype(np.int32)
                             for n, C in zip(names, mats)})

    tmp = feat.fresh_name(sample.columns, "_pred")
    return sample.withColumn(tmp, predict(*spec.feature_exprs())).select(
        "*", *[F.col(feat.quoted(tmp))[n].alias(f"pred_{n}") for n in names]).drop(tmp)


def sample_silhouette(frame: DataFrame, col: str) -> Optional[float]:
    """MLlib's squared-Euclidean silhouette of :func:`labels_frame`'s column ``col`` (None
    for a single cluster)."""
    from pyspark.ml.evaluation import ClusteringEvaluator

    if frame.select(col).distinct().limit(2).count() < 2:
        return None  # silhouette is undefined for one cluster
    return float(ClusteringEvaluator(featuresCol=VECTOR_COL, predictionCol=col,
                                     metricName="silhouette",
                                     distanceMeasure="squaredEuclidean").evaluate(frame))


def _fit_sklearn(X: np.ndarray, w: Optional[np.ndarray], k: int, seed: int, max_iter: int,
                 batch_size: Optional[int], which: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """scikit-learn's fits on the driver; ``batch_size`` None: its MiniBatchKMeans default."""
    cluster = _require("sklearn.cluster")
    out = {}
    rs = seed % (2 ** 32)
    models = {"sklearn_minibatch": lambda: cluster.MiniBatchKMeans(
                  n_clusters=k, batch_size=batch_size or 1024, random_state=rs,
                  max_iter=max_iter,
                  compute_labels=False, n_init=1),
              "sklearn_kmeans": lambda: cluster.KMeans(n_clusters=k, random_state=rs,
                                                       n_init=1)}
    for name in REFERENCES:
        if name not in which:
            continue
        est = models[name]()
        t0 = time.perf_counter()
        est.fit(X, sample_weight=w)
        seconds = time.perf_counter() - t0
        out[name] = {"fit_seconds": seconds, "iterations": int(est.n_iter_),
                     "centers": est.cluster_centers_}
        if name == "sklearn_minibatch":
            out[name]["steps"] = int(est.n_steps_)
        logger.info("%s: %.1f s, %d iterations", name, seconds, est.n_iter_)
    return out


def compare_with_mllib(df: DataFrame, estimator, *,
                       mllib: Optional[Mapping[str, Any]] = None, sample_size: int = 100_000,
                       local_max_mb: int = 1024, references: Sequence[str] = REFERENCES,
                       trajectory_points: int = 12, warm_up_rows: int = WARM_UP_ROWS,
                       repeats: int = 1, output_dir: Optional[str] = None) -> Dict[str, Any]:
    """Fit a configured :class:`~minibatch_kmeans.MiniBatchKMeans` and MLlib ``KMeans`` on
    the same cached input and compare them.

    Parameters
    ----------
    df : DataFrame
        The input, with the features (and weight column) the estimator names.
    estimator : MiniBatchKMeans
        Our side, as a user would fit it (as ``CrossValidator`` takes one). Its ``k``,
        ``seed``, ``maxIter``, ``weightCol`` and ``handleInvalid`` also set MLlib's fit
        (our ``maxIter`` counts epochs, MLlib's Lloyd iterations); invalid rows are left
        out of both fits under ``handleInvalid="skip"``. Euclidean distance only.
    mllib : mapping, optional
        MLlib ``KMeans`` Params among :data:`MLLIB_PARAMS`; ``solver`` defaults to
        ``"block"`` (its fastest for dense data) and ``maxIter`` to the estimator's.
    sample_size : int
        Rows (at most, seeded) for silhouette, ARI/NMI and the PCA picture.
    local_max_mb : int
        Run the scikit-learn references when the features (float64) take at most this
        many MiB on the driver; 0 never runs them.
    references : sequence of {"sklearn_minibatch", "sklearn_kmeans"}
        Which references to run (scikit-learn's MiniBatchKMeans with our batch size, and
        its KMeans, Lloyd from k-means++: the optimum to its tolerance, but slow at large
        k); empty runs none.
    trajectory_points : int
        How many of our intermediate center sets get a full-data cost (the cost against
        seconds curve and ``ours.seconds_to_mllib_cost``).
    warm_up_rows : int
        Before either clock starts, each side fits once, untimed, on this many rows of the
        input (at least 10 per cluster): the process's first-use costs (JVM class loading
        and JIT, Python imports, compiled kernels) are then in neither fit's time, and
        neither side pays them for the other, whichever runs first. 0: no warm-up (ours,
        run first, then pays them alone).
    repeats : int
        Timed fits per side, taken in turn (ours, MLlib, ours, ...); each side's
        ``fit_seconds`` is its median fit's (the lower middle one for an even count;
        ``fit_seconds_runs`` lists them all), so that one fit slowed by the machine does
        not decide the speedup. Our trajectory is the median fit's; the models are the
        last fits' (a seed gives the same centers every time).
    output_dir : str, optional
        Driver-local folder for ``compare.json``, ``compare.md`` and the PNGs.

    Returns
    -------
    dict
        ``data``, ``ours``, ``mllib``, ``agreement``, ``speedup`` (MLlib fit seconds / ours),
        ``cost_ratio`` (our cost / MLlib's), ``references`` (scikit-learn, when run),
        ``environment`` and ``files``.
    """
    _require("scipy.optimize")
    metrics = _require("sklearn.metrics")
    est, km = _check_options(estimator, mllib, references, sample_size=sample_size,
                             trajectory_points=trajectory_points, local_max_mb=local_max_mb,
                             warm_up_rows=warm_up_rows, repeats=repeats)
    spec = est.featureSpec(df)
    k, seed = est.getK(), est.getSeed()
    data, n, n_skipped = _input_frame(df, spec, est.getHandleInvalid())
    try:
        if n < k:
            raise InvalidInputError(f"k={k} but the input has only {n} valid rows: expected "
                                    "at least k rows")
        warm_rows = min(n, max(warm_up_rows, 10 * k)) if warm_up_rows else 0
        _warm_up(est, km, data, warm_rows)
        fits = _fit_both(est, km, data, trajectory_points, repeats)
        sets = {"ours": np.array(fits["model"].clusterCenters()),
                "mllib": np.array(fits["mllib_model"].clusterCenters())}
        refs = _run_references(data, spec, n, sets, est, references, local_max_mb)
        # One shared cost pass: the final models, then our trajectory.
        names, trajectory = list(sets), fits["trajectory"]
        measured = clustering_costs(data, [sets[m] for m in names]
                                    + [t.pop("centers") for t in trajectory],
                                    est.getFeaturesCol(), list(spec.columns)
                                    if spec.kind == "columns" else None, spec.weight_col)
        final = dict(zip(names, measured))
        for snap, m in zip(trajectory, measured[len(names):]):
            snap["cost"] = m["cost"]
        n_sample, sil, Xs, labels = _sample_measures(data, n, spec, sets, sample_size, seed)
        match = match_centers(sets["ours"], sets["mllib"])
        environment = _environment(data.sparkSession)
    finally:
        data.unpersist()

    result: Dict[str, Any] = {
        "data": {"rows": n, "features": spec.n_features, "k": k, "skipped_rows": n_skipped,
                 "input": spec.describe(), "weight_col": spec.weight_col,
                 "warm_up_rows": warm_rows,
                 "sample_rows": n_sample},
        "ours": _ours_section(est, fits, final, sil),
        "mllib": _mllib_section(km, fits, final, sil),
        "agreement": {
            "ari": float(metrics.adjusted_rand_score(labels["ours"], labels["mllib"])),
            "nmi": float(metrics.normalized_mutual_info_score(labels["ours"],
                                                              labels["mllib"])),
            "center_distance_mean": match["mean"], "center_distance_max": match["max"],
            "matching": match["pairs"],
        },
        "speedup": fits["mllib_seconds"] / fits["ours_seconds"],
        "cost_ratio": (final["ours"]["cost"] / final["mllib"]["cost"]
                       if final["mllib"]["cost"] > 0 else None),
        "references": refs,
        "environment": environment,
    }
    best = min(m["cost"] for m in final.values())
    for name, m in final.items():
        section = result[name] if name in result else refs[name]
        section["cost_vs_best"] = m["cost"] / best if best > 0 else None
        if name in refs:
            section.update(cost=m["cost"], silhouette=sil[name], cluster_sizes=m["sizes"],
                           ari_vs_ours=float(metrics.adjusted_rand_score(labels["ours"],
                                                                         labels[name])))
    if output_dir:
        write_compare(result, output_dir, Xs, labels["ours"], sets)
    return result


def _warm_up(est, km, data: DataFrame, rows: int) -> None:
    """Each side's untimed fit on the first ``rows`` rows (see ``warm_up_rows``)."""
    if rows <= 0:
        return
    t0 = time.perf_counter()
    part = data.limit(rows).persist(STORAGE)
    try:
        part.count()
        est.copy().fit(part)
        km.copy({km.maxIter: 2}).fit(part)
    finally:
        part.unpersist()
    logger.info("warmed up both sides on %d rows, untimed: %.1f s", rows,
                time.perf_counter() - t0)


def _fit_both(est, km, data: DataFrame, trajectory_points: int, repeats: int
              ) -> Dict[str, Any]:
    """Ours (its prepare and init included, its trajectory recorded), then MLlib's, each
    timed as a user waits for it; ``repeats`` times in turn. Each side's time is the median
    fit's (the lower middle one for an even count); ours keeps that fit's trajectory."""
    ours, theirs, trajectories = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        on_step, finish = _trajectory_recorder(trajectory_points, t0)
        model = est.fitWithCallback(data, on_step)
        ours.append(time.perf_counter() - t0)
        trajectories.append(finish())
        logger.info("ours: %.1f s, %d steps (%s)", ours[-1], model.summary.numSteps,
                    model.summary.stopReason)
        t0 = time.perf_counter()
        mllib_model = km.fit(data)
        theirs.append(time.perf_counter() - t0)
        logger.info("MLlib: %.1f s, %d iterations", theirs[-1], mllib_model.summary.numIter)
    median = _median_run(ours)
    return {"model": model, "ours_seconds": ours[median], "ours_runs": ours,
            "trajectory": trajectories[median], "mllib_model": mllib_model,
            "mllib_seconds": theirs[_median_run(theirs)], "mllib_runs": theirs}


def _median_run(seconds: List[float]) -> int:
    """The index of the median of ``seconds`` (the lower middle one for an even count)."""
    return sorted(range(len(seconds)), key=seconds.__getitem__)[(len(seconds) - 1) // 2]


def _run_references(data, spec, n, sets, est, references, local_max_mb) -> Dict[str, Any]:
    """scikit-learn's fits when the features fit in ``local_max_mb`` (their centers go
    into ``sets``), else why they were skipped."""
    need_mb = n * spec.n_features * 8 / 2**20
    if not (references and local_max_mb and need_mb <= local_max_mb):
        return {"skipped": "turned off (local_max_mb=0 or no references)"
                if not (local_max_mb and references) else
                f"the features take {need_mb:,.0f} MiB as float64, over "
                f"local_max_mb={local_max_mb}"}
    X, w = _collect_features(data, spec)
    refs = _fit_sklearn(X, w, est.getK(), est.getSeed(), est.getMaxIter(),
                        est.getBatchSize(), references)
    for name, r in refs.items():
        sets[name] = r.pop("centers")
    return refs


def _ours_section(est, fits, final, sil) -> Dict[str, Any]:
    summ, trajectory = fits["model"].summary, fits["trajectory"]
    # "reached": as low to float64 precision (the same centers summed in another order
    # differ in the last bits: 16000517.082788626 against ...624 on make demo's table)
    reached = [t["seconds"] for t in trajectory
               if t["cost"] <= final["mllib"]["cost"] * (1 + 1e-12)]
    return {
        "fit_seconds": fits["ours_seconds"], "fit_seconds_runs": fits["ours_runs"],
        "cost": final["ours"]["cost"],
        "silhouette": sil["ours"], "steps": summ.numSteps, "epochs": summ.numIter,
        "rows_seen": summ.rowsSeen, "stop_reason": summ.stopReason,
        "batch_size": summ.batchSize, "prepare_seconds": summ.prepareSeconds,
        "fit_mode": summ.fitMode, "passes": summ.numPasses,
        "passes_over_data": summ.passesOverData, "jobs": summ.numJobs,
        "init_seconds": summ.initSeconds, "loop_seconds": summ.loopSeconds,
        "final_pass_seconds": summ.finalPassSeconds,
        "seconds_per_step": summ.loopSeconds / max(1, summ.numSteps),
        "seconds_to_mllib_cost": reached[0] if reached else None,
        "cluster_sizes": final["ours"]["sizes"],
        "params": {p.name: v for p, v in est.extractParamMap().items()
                   if p.name != "initialCenters"},
        "trajectory": trajectory,
    }


def _mllib_section(km, fits, final, sil) -> Dict[str, Any]:
    msumm = fits["mllib_model"].summary
    return {
        "fit_seconds": fits["mllib_seconds"], "fit_seconds_runs": fits["mllib_runs"],
        "cost": final["mllib"]["cost"],
        "silhouette": sil["mllib"], "iterations": int(msumm.numIter),
        "reported_training_cost": float(msumm.trainingCost),
        "cluster_sizes": final["mllib"]["sizes"],
        "params": {p.name: v for p, v in km.extractParamMap().items()},
        "native_blas": native_blas(),
    }


def _check_options(estimator, mllib, references, **counts):
    """Validate the options before any Spark job: (a copy of our estimator, MLlib's
    KMeans with the shared and given Params)."""
    from pyspark.ml.clustering import KMeans

    from ..ml.estimator import MiniBatchKMeans

    if not isinstance(estimator, MiniBatchKMeans):
        raise InvalidParamError(
            f"estimator={estimator!r} is invalid: expected a configured MiniBatchKMeans, "
            "e.g. compare_with_mllib(df, MiniBatchKMeans(k=20, inputCols=cols))")
    if isinstance(references, str) or not set(references) <= set(REFERENCES):
        raise InvalidParamError(f"references={references!r} is invalid: expected a list of "
                                f"some of {list(REFERENCES)}")
    for name, value in counts.items():
        lo = 0 if name in ("local_max_mb", "warm_up_rows") else (
            1 if name in ("trajectory_points", "repeats") else 2)
        integer(name, value, lo, maximum=MAX_SAMPLE_ROWS if name == "sample_size" else None)
    mllib = dict(mllib or {})
    unknown = sorted(set(mllib) - set(MLLIB_PARAMS))
    if unknown:
        raise InvalidParamError(f"mllib Params {unknown} are not supported: expected some of "
                                f"{list(MLLIB_PARAMS)} (k, seed and weightCol are shared)")
    est = estimator.copy().validateParams()
    if "euclidean" != est.getDistanceMeasure() or \
            "euclidean" != mllib.get("distanceMeasure", "euclidean"):
        raise InvalidParamError("the comparison measures squared Euclidean cost: expected "
                                "distanceMeasure='euclidean' for both models")
    mllib.setdefault("solver", "block")
    mllib.setdefault("maxIter", est.getMaxIter())
    km = KMeans(k=est.getK(), seed=est.getSeed(), featuresCol=VECTOR_COL, **mllib)
    if est.isDefined(est.weightCol) and est.getWeightCol():
        km.setWeightCol(est.getWeightCol())
    return est, km


def _feature_columns(spec: feat.FeatureSpec, with_weight: bool = False) -> list:
    cols = [e.alias(n) for e, n in zip(spec.feature_exprs(), feature_names(spec.n_features))]
    if with_weight and spec.weight_col is not None:
        cols.append(spec.weight_expr().alias("weight"))
    return cols


def _collect_features(data: DataFrame, spec: feat.FeatureSpec):
    """(X float64, weights or None) of the whole input, on the driver."""
    table = data.select(*_feature_columns(spec, with_weight=True)).toArrow()
    X = feature_matrix(table, spec.n_features, np.float64)
    w = table.column("weight").to_numpy() if spec.weight_col is not None else None
    return X, w


def _sample_measures(data, n, spec, sets, sample_size, seed):
    """On one seeded sample: silhouette per center set, and the sample's rows and labels
    (for ARI/NMI and the PCA picture)."""
    names = list(sets)
    sample = labels_frame(_sample(data, n, sample_size, seed), spec, sets).persist(STORAGE)
    try:
        n_sample = sample.count()
        sil = {name: sample_silhouette(sample, f"pred_{name}") for name in names}
        table = sample.select(*_feature_columns(spec),
                              *[f"pred_{name}" for name in names]).toArrow()
    finally:
        sample.unpersist()
    labels = {name: table.column(f"pred_{name}").to_numpy() for name in names}
    return n_sample, sil, feature_matrix(table, spec.n_features, np.float64), labels


def _environment(spark) -> Dict[str, Any]:
    import platform

    import pyspark

    conf = {}
    for key in ("spark.master", "spark.driver.memory", "spark.executor.memory"):
        try:
            conf[key] = spark.conf.get(key, None)
        except Exception:  # Spark Connect hides some settings
            conf[key] = None
    return {"spark_version": spark.version, "pyspark": pyspark.__version__,
            "python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), **conf}


def markdown(result: Mapping[str, Any]) -> str:
    """``compare.md``: the comparison as readable tables."""
    d, o, m, a = result["data"], result["ours"], result["mllib"], result["agreement"]
    refs = {k: v for k, v in result.get("references", {}).items() if k != "skipped"}
    cols = [("ours (MiniBatchKMeans)", o), (f"MLlib KMeans ({m['params'].get('solver')})", m)]
    cols += [({"sklearn_minibatch": "scikit-learn MiniBatchKMeans",
               "sklearn_kmeans": "scikit-learn KMeans"}[k], v) for k, v in refs.items()]

    def fmt(v, spec):
        if v is None:
            return "n/a"
        return format(v, spec) if spec else str(v)

    def row(label, key, spec=""):
        return f"| {label} | " + " | ".join(fmt(c.get(key), spec) for _, c in cols) + " |"

    def sizes(c):
        s = c.get("cluster_sizes") or []
        return f"{min(s):,} / {max(s):,}" if s else "n/a"

    def plural(n, word):
        return f"{n} {word}{'s' * (n != 1)}"

    iters = [f"{plural(c['steps'], 'step')} ({plural(c['epochs'], 'epoch')})"
             if "epochs" in c else plural(c["iterations"], "iteration") for _, c in cols]
    lines = [
        f"# MiniBatchKMeans vs MLlib KMeans: {d['rows']:,} rows x {d['features']} features, "
        f"k={d['k']}", "",
        f"**Speedup {result['speedup']:.1f}x** (MLlib fit seconds / ours); "
        f"**cost ratio {fmt(result['cost_ratio'], '.4f')}** (our cost / MLlib's; below 1 is "
        "better).", "",
        "| | " + " | ".join(name for name, _ in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
        row("fit seconds", "fit_seconds", ".1f"),
        row("full-data cost", "cost", ".6g"),
        row("cost / best here", "cost_vs_best", ".4f"),
        row(f"silhouette ({d['sample_rows']:,}-row sample)", "silhouette", ".4f"),
        "| steps / iterations | " + " | ".join(iters) + " |",
        "| cluster sizes (min / max) | " + " | ".join(sizes(c) for _, c in cols) + " |", "",
        "## Agreement (ours vs MLlib)", "",
        "| adjusted Rand index | normalised mutual information | matched center distance "
        "(mean / max) |", "| --- | --- | --- |",
        f"| {a['ari']:.4f} | {a['nmi']:.4f} | {a['center_distance_mean']:.4g} / "
        f"{a['center_distance_max']:.4g} |", "",
        "## How it was measured", "",
        f"- Input: {d['input']}, cached once before either clock started"
        + (f"; {d['skipped_rows']:,} invalid rows left out" if d["skipped_rows"] else "")
        + (f"; each side first fitted {d['warm_up_rows']:,} of its rows, untimed, so that "
           "neither clock holds the process's first-use costs (class loading, JIT, "
           "imports, compiled kernels)" if d.get("warm_up_rows") else "")
        + ".",
        *([f"- Fit seconds: the median of {len(o['fit_seconds_runs'])} timed fits per side, "
           "taken in turn (ours: " + ", ".join(f"{x:.2f}" for x in o["fit_seconds_runs"])
           + " s; MLlib: " + ", ".join(f"{x:.2f}" for x in m["fit_seconds_runs"]) + " s)."]
          if len(o.get("fit_seconds_runs") or ()) > 1 else []),
        f"- Ours: fitMode {o.get('fit_mode')}, batch {o['batch_size']:,}, "
        f"{fmt(o.get('passes_over_data'), '.2f')} passes over the data in "
        f"{o.get('jobs')} Spark jobs, stopped by {o['stop_reason']}; the fit time includes "
        f"counting and sampling (or prepare) {o['prepare_seconds']:.1f} s and init "
        f"{o['init_seconds']:.1f} s.",
        (f"- Ours reached MLlib's final cost after {o['seconds_to_mllib_cost']:.1f} s."
         if o["seconds_to_mllib_cost"] is not None else
         "- Ours never reached MLlib's final cost (of the centers recorded during the fit)."),
        f"- MLlib: solver {m['params'].get('solver')}, maxIter {m['params'].get('maxIter')}, "
        f"initMode {m['params'].get('initMode')}; native BLAS "
        + (f"available ({m['native_blas']['library']})" if m["native_blas"]["available"]
           else "NOT available (MLlib ran on its Java fallback)")
        + f"; its own reported trainingCost {m['reported_training_cost']:.6g} (the cost "
          "before its last center update).",
        "- Costs: one shared float64 function for every model (sum of squared distances to "
        "the nearest center over all rows). Silhouette: MLlib ClusteringEvaluator "
        "(squared Euclidean) on one seeded sample; ARI/NMI on the same sample.",
    ]
    skipped = result.get("references", {}).get("skipped")
    if skipped:
        lines.append(f"- scikit-learn references not run: {skipped}.")
    files = result.get("files") or {}
    pngs = [v for k, v in files.items() if str(v).endswith(".png")]
    if pngs:
        lines += ["", "Pictures: " + ", ".join(f"`{p}`" for p in pngs) + "."]
    return "\n".join(lines) + "\n"


def write_compare(result: dict, output_dir: str, sample_X: np.ndarray,
                  sample_labels: np.ndarray, centers: Mapping[str, np.ndarray]) -> dict:
    """Write ``compare.json``, ``compare.md`` and the three PNGs under ``output_dir`` (a
    folder path or URI: :func:`~minibatch_kmeans.paths.write_file`); sets and returns
    ``result["files"]``."""
    files = {name: join(output_dir, name) for name in (
        "compare.json", "compare.md", "cost_vs_seconds.png", "cluster_sizes.png", "pca.png")}
    result["files"] = files
    plot_cost_vs_seconds(result, files["cost_vs_seconds.png"])
    plot_cluster_sizes(result, files["cluster_sizes.png"])
    plot_pca(sample_X, sample_labels, centers, files["pca.png"])
    write_text(markdown(result), files["compare.md"])
    write_json(result, files["compare.json"])
    return files
