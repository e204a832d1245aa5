"""``MiniBatchKMeans`` and ``MiniBatchKMeansModel``: a pyspark.ml Estimator/Model pair.

They read like :class:`pyspark.ml.clustering.KMeans` (same Param names and defaults where
the meaning is the same) so that users can swap one for the other, work inside
``Pipeline`` and ``CrossValidator``, and save/load as JSON metadata plus Parquet centers
(never pickle), through the DataFrame API only, so also on Spark Connect.
"""
from __future__ import annotations

import json
import logging
from typing import Dict, List, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import DenseVector, SparseVector, Vector
from pyspark.ml.param import Params
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..core.kernels import predict_matrix
from ..core.minibatch import minibatch_update, split_dying
from ..errors import InvalidInputError, ModelPersistenceError
from ..spark import features as feat
from ..spark.features import column_types
from ..spark.fit import FitParams, cost_from_inertia, fit
from ..spark.params import PARAM_RULES
from ..spark.prepare import feature_names
from ..spark.udfs import STATS_SCHEMA, stats_function, table_to_stats
from .params import UPDATE_RULES, MiniBatchKMeansParams, discount_rule
from .persistence import (centers_from_table, data_dir, new_data_dir, path_exists,
                          remove_old_data)
from .predict import predict_udf
from .summary import MiniBatchKMeansSummary

logger = logging.getLogger(__name__)


# -- persistence ----------------------------------------------------------------------


def _spark() -> SparkSession:
    spark = SparkSession.getActiveSession()
    if spark is None:
        raise ModelPersistenceError("no active SparkSession: start one before save/load")
    return spark


def _metadata_json(instance: Params, spark, extra: Optional[dict] = None) -> str:
    """pyspark's DefaultParamsWriter metadata format (so Pipeline and CrossValidator
    readers can load our stages), built without the JVM."""
    from pyspark.ml.util import DefaultParamsWriter

    return DefaultParamsWriter._get_metadata_to_save(instance, spark, extra)


def _write_text(spark, text: str, path: str, overwrite: bool) -> None:
    from pyspark.errors import AnalysisException

    writer = spark.createDataFrame([(text,)], "value string").coalesce(1).write
    try:
        writer.mode("overwrite" if overwrite else "error").text(path)  # Connect knows "error" only
    except AnalysisException as e:
        if "PATH_ALREADY_EXISTS" in str(e) or "already exists" in str(e):
            raise ModelPersistenceError(
                f"cannot save to {path!r}: the path already exists; use "
                "write().overwrite().save(path) to replace it") from None
        raise


def _read_metadata(path: str, expected_class: str) -> dict:
    from pyspark.errors import AnalysisException

    spark = _spark()
    short = expected_class.rsplit(".", 1)[-1]
    try:
        rows = spark.read.text(f"{path}/metadata").collect()
    except AnalysisException:
        raise ModelPersistenceError(
            f"cannot load from {path!r}: no saved {short} there "
            f"(expected a 'metadata' folder)") from None
    if not rows:
        raise ModelPersistenceError(f"cannot load from {path!r}: empty metadata")
    meta = json.loads(rows[0][0])
    cls = meta.get("class", "")
    if cls.rsplit(".", 1)[-1] != short:
        raise ModelPersistenceError(f"cannot load a {short} from {path!r}: it holds a {cls}")
    return meta


def _set_params_from_metadata(instance: Params, meta: dict) -> None:
    for name, value in meta.get("defaultParamMap", {}).items():
        if instance.hasParam(name):
            instance._setDefault(**{name: value})
    for name, value in meta.get("paramMap", {}).items():
        if instance.hasParam(name):
            instance._set(**{name: value})


class _ParamsWriter(MLWriter):
    """Writes metadata (params) and, for models, the centers as Parquet. JVM-free."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:  # not MLWriter.save: its overwrite uses the JVM
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        """A model's centers go to a new ``data-<token>`` folder first; the metadata,
        written last, names it: a save that fails before the metadata is written leaves
        the model that was there whole, and a reader sees the old model or the new one."""
        spark = _spark()
        meta_path = f"{path}/metadata"
        if not self.shouldOverwrite and path_exists(spark, meta_path):
            raise ModelPersistenceError(
                f"cannot save to {path!r}: the path already exists; use "
                "write().overwrite().save(path) to replace it")
        extra = self.instance._extra_metadata() if hasattr(self.instance,
                                                           "_extra_metadata") else None
        data_dir = None
        if isinstance(self.instance, MiniBatchKMeansModel):
            data_dir = new_data_dir()
            self.instance._save_data(spark, f"{path}/{data_dir}")
            extra = {**extra, "dataDir": data_dir}
        _write_text(spark, _metadata_json(self.instance, spark, extra), meta_path, True)
        if data_dir is not None:
            remove_old_data(path, data_dir)


class _ParamsReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        meta = _read_metadata(path, self.cls.__module__ + "." + self.cls.__name__)
        if self.cls is MiniBatchKMeansModel:
            instance = MiniBatchKMeansModel._load(_spark(), path, meta)
        else:
            instance = self.cls()
        instance._resetUid(meta["uid"])
        _set_params_from_metadata(instance, meta)
        return instance


class _ReadWrite(MLReadable, MLWritable):
    def write(self) -> MLWriter:
        return _ParamsWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ParamsReader(cls)


# -- the estimator --------------------------------------------------------------------


class MiniBatchKMeans(Estimator, MiniBatchKMeansParams, _ReadWrite):
    """Mini-batch k-means (Sculley 2010) for Spark DataFrames.

    Each step reads one random batch of about ``batchSize`` rows (not the whole table, as
    MLlib's KMeans does every iteration), assigns it to the nearest centers in a
    vectorized Arrow UDF on the executors, and moves each center toward its batch mean
    with a per-center learning rate on the driver. ``maxIter`` counts epochs (passes over
    the data); fits usually stop earlier on ``maxNoImprovement`` or ``tol``.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(Vectors.dense([0.0, 0.0]),), (Vectors.dense([1.0, 1.0]),),
    ...                             (Vectors.dense([9.0, 8.0]),), (Vectors.dense([8.0, 9.0]),)],
    ...                            ["features"])
    >>> model = MiniBatchKMeans(k=2, seed=1, batchSize=4).fit(df)
    >>> model.predict(Vectors.dense([0.5, 0.5])) != model.predict(Vectors.dense([8.5, 8.5]))
    True
    >>> model.summary.clusterSizes
    [2, 2]
    """

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", predictionCol: str = "prediction",
                 k: int = 2, maxIter: int = 20, tol: float = 1e-4, seed: Optional[int] = None,
                 initMode: str = "k-means||", initSteps: int = 2, initScope: str = "sample",
                 initRuns: int = 0, distanceMeasure: str = "euclidean",
                 weightCol: Optional[str] = None, inputCols: Optional[List[str]] = None,
                 batchSize: Optional[int] = None, fitMode: str = "auto",
                 initSize: Optional[int] = None, maxNoImprovement: int = 10,
                 reassignmentRatio: float = 0.01, handleInvalid: str = "error",
                 initialCenters: Optional[List[List[float]]] = None,
                 distanceCol: Optional[str] = None, dtype: str = "float32",
                 computeTrainingCost: bool = True, prepareStorage: str = "auto",
                 scratchDir: Optional[str] = None, localSteps: int = 1,
                 checkpointDir: Optional[str] = None, checkpointInterval: int = 10):
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", predictionCol: str = "prediction",
                  k: int = 2, maxIter: int = 20, tol: float = 1e-4, seed: Optional[int] = None,
                  initMode: str = "k-means||", initSteps: int = 2, initScope: str = "sample",
                  initRuns: int = 0, distanceMeasure: str = "euclidean",
                  weightCol: Optional[str] = None, inputCols: Optional[List[str]] = None,
                  batchSize: Optional[int] = None, fitMode: str = "auto",
                  initSize: Optional[int] = None, maxNoImprovement: int = 10,
                  reassignmentRatio: float = 0.01, handleInvalid: str = "error",
                  initialCenters: Optional[List[List[float]]] = None,
                  distanceCol: Optional[str] = None, dtype: str = "float32",
                  computeTrainingCost: bool = True, prepareStorage: str = "auto",
                  scratchDir: Optional[str] = None, localSteps: int = 1,
                  checkpointDir: Optional[str] = None,
                  checkpointInterval: int = 10) -> "MiniBatchKMeans":
        """Set params by keyword; returns self."""
        kwargs = self._input_kwargs
        kwargs = {k_: v for k_, v in kwargs.items() if v is not None}
        return self._set(**kwargs)

    # typed setters, as pyspark's KMeans
    def setK(self, value: int) -> "MiniBatchKMeans":
        return self._set(k=value)

    def setMaxIter(self, value: int) -> "MiniBatchKMeans":
        return self._set(maxIter=value)

    def setTol(self, value: float) -> "MiniBatchKMeans":
        return self._set(tol=value)

    def setSeed(self, value: int) -> "MiniBatchKMeans":
        return self._set(seed=value)

    def setInitMode(self, value: str) -> "MiniBatchKMeans":
        return self._set(initMode=value)

    def setInitSteps(self, value: int) -> "MiniBatchKMeans":
        return self._set(initSteps=value)

    def setInitScope(self, value: str) -> "MiniBatchKMeans":
        return self._set(initScope=value)

    def setInitRuns(self, value: int) -> "MiniBatchKMeans":
        return self._set(initRuns=value)

    def setDistanceMeasure(self, value: str) -> "MiniBatchKMeans":
        return self._set(distanceMeasure=value)

    def setWeightCol(self, value: str) -> "MiniBatchKMeans":
        return self._set(weightCol=value)

    def setBatchSize(self, value: int) -> "MiniBatchKMeans":
        return self._set(batchSize=value)

    def setFitMode(self, value: str) -> "MiniBatchKMeans":
        return self._set(fitMode=value)

    def setLocalSteps(self, value: int) -> "MiniBatchKMeans":
        return self._set(localSteps=value)

    def setInitSize(self, value: int) -> "MiniBatchKMeans":
        return self._set(initSize=value)

    def setMaxNoImprovement(self, value: int) -> "MiniBatchKMeans":
        return self._set(maxNoImprovement=value)

    def setReassignmentRatio(self, value: float) -> "MiniBatchKMeans":
        return self._set(reassignmentRatio=value)

    def setInitialCenters(self, value) -> "MiniBatchKMeans":
        return self._set(initialCenters=[[float(x) for x in row] for row in np.asarray(value)])

    def setDtype(self, value: str) -> "MiniBatchKMeans":
        return self._set(dtype=value)

    def setComputeTrainingCost(self, value: bool) -> "MiniBatchKMeans":
        return self._set(computeTrainingCost=value)

    def setPrepareStorage(self, value: str) -> "MiniBatchKMeans":
        return self._set(prepareStorage=value)

    def setScratchDir(self, value: str) -> "MiniBatchKMeans":
        return self._set(scratchDir=value)

    def setCheckpointDir(self, value: str) -> "MiniBatchKMeans":
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value: int) -> "MiniBatchKMeans":
        return self._set(checkpointInterval=value)

    def _fit_params(self) -> FitParams:
        """The fit's Params (validated by the fit against PARAM_RULES)."""
        return FitParams(**{field: self.getOrDefault(name) if self.isDefined(name) else None
                            for name, (field, _) in PARAM_RULES.items() if field is not None})

    def validateParams(self) -> "MiniBatchKMeans":
        """Check every Param against its rule (what ``fit`` does first), before any Spark
        job; raises InvalidParamError naming the Param, the value and what was expected.
        Returns self."""
        self._fit_params().validate()
        return self

    def fitWithCallback(self, dataset: DataFrame, onStep) -> "MiniBatchKMeansModel":
        """:meth:`fit`, calling ``onStep(record, state)`` on the driver after every
        mini-batch step: ``record`` is the step's
        :class:`~minibatch_kmeans.core.minibatch.StepRecord`, ``state`` the running
        :class:`~minibatch_kmeans.core.minibatch.MiniBatchState` (``centers``, a NumPy
        array to copy if kept, ``rows_seen``...). The comparison with MLlib records its
        cost-against-time trajectory with it."""
        return self._fit(dataset, on_step=onStep)

    def _fit(self, dataset: DataFrame, on_step=None) -> "MiniBatchKMeansModel":
        spec = self.featureSpec(dataset)
        result = fit(dataset, spec, self._fit_params(), on_step=on_step)
        model = MiniBatchKMeansModel(result.centers, result.weight_sums, spec,
                                     input_schema=column_types(dataset))
        self._copyValues(model)
        model._summary = MiniBatchKMeansSummary(model, dataset, result.summary,
                                                [r.as_dict() for r in result.history])
        return model


# -- the model ------------------------------------------------------------------------


class MiniBatchKMeansModel(Model, MiniBatchKMeansParams, _ReadWrite):
    """A fitted mini-batch k-means model.

    Parameters
    ----------
    centers : array-like of shape (k, n_features)
    weight_sums : array-like of shape (k,), optional
        Weight accumulated by each center during training (kept for warm starts).
    spec : FeatureSpec, optional
        The training input's feature layout (saved with the model).
    """

    def __init__(self, centers=None, weight_sums=None, spec: Optional[feat.FeatureSpec] = None,
                 input_schema: Optional[Dict[str, str]] = None):
        super().__init__()
        self._centers = (np.zeros((0, 0)) if centers is None
                         else np.array(centers, dtype=np.float64))
        k = self._centers.shape[0]
        self._weight_sums = (np.zeros(k) if weight_sums is None
                             else np.array(weight_sums, dtype=np.float64))
        self._spec = spec
        self._input_schema = dict(input_schema) if input_schema else None
        self._summary: Optional[MiniBatchKMeansSummary] = None
        self._training_info: Optional[dict] = None
        self._num_updates = 0
        self._last_update: Optional[dict] = None

    # -- spark.ml KMeansModel API ------------------------------------------------------
    def clusterCenters(self) -> List[np.ndarray]:
        """The cluster centers, as a list of NumPy arrays (like KMeansModel)."""
        return [c.copy() for c in self._centers]

    @property
    def numFeatures(self) -> int:
        return int(self._centers.shape[1])

    @property
    def weightSums(self) -> np.ndarray:
        """Weight (row count when unweighted) accumulated by each center in training."""
        return self._weight_sums.copy()

    @property
    def featureSchema(self) -> Optional[dict]:
        """The training input's feature layout: kind, columns, number of features, and
        (for models trained by this version) the feature columns' Spark SQL types."""
        if self._spec is None:
            return None
        out = {"kind": self._spec.kind, "columns": list(self._spec.columns),
               "numFeatures": self._spec.n_features}
        if self._input_schema is not None:
            out["types"] = [self._input_schema.get(c) for c in self._spec.columns]
        return out

    @property
    def inputSchema(self) -> Optional[Dict[str, str]]:
        """Every column of the training input and its Spark SQL type (None for a model
        built by hand or saved before this was recorded)."""
        return None if self._input_schema is None else dict(self._input_schema)

    @property
    def _cosine(self) -> bool:
        return self.getDistanceMeasure() == "cosine"

    def _compute_dtype(self):
        return np.float32 if self.getDtype() == "float32" else np.float64

    def predict(self, value) -> int:
        """Index of the nearest center for one feature vector (Vector or sequence)."""
        if isinstance(value, (DenseVector, SparseVector, Vector)):
            x = value.toArray()
        else:
            x = np.asarray(value, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.numFeatures:
            raise InvalidInputError(
                f"vector has {x.shape[0]} values, expected {self.numFeatures} features")
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("vector has NaN or infinite values")
        labels, _ = predict_matrix(x[None, :], self._centers, self._cosine, np.float64)
        return int(labels[0])

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> "MiniBatchKMeansSummary":
        """Training summary (only on a model returned by fit, as in Spark)."""
        if self._summary is None:
            raise RuntimeError(
                f"No training summary available for this {self.__class__.__name__}")
        return self._summary

    def _spec_for(self, dataset: DataFrame, with_weight: bool = False) -> feat.FeatureSpec:
        self._checked("handleInvalid")
        return self.featureSpec(dataset, withWeight=with_weight)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        spec = self._spec_for(dataset)
        args = spec.feature_exprs()
        if self.getHandleInvalid() == "skip":
            dataset = dataset.where(spec.valid_expr(self._cosine))
        elif spec.kind != "columns":  # a longer array would otherwise pass unnoticed
            args.append(F.size(spec.array_expr()))
        dist_col = self.getDistanceCol()
        pred = self.getPredictionCol()
        feat.check_new_columns(dataset.columns, {"predictionCol": pred,
                                                 "distanceCol": dist_col})
        udf = predict_udf(self._centers, self._cosine, self._compute_dtype(),
                          dist_col is not None, spec)
        if dist_col is None:
            return dataset.withColumn(pred, udf(*args))
        tmp = feat.fresh_name(dataset.columns, "__mbkm_prediction")
        s = F.col(feat.quoted(tmp))
        return (dataset.withColumn(tmp, udf(*args))
                .withColumns({pred: s.getField("prediction"),
                              dist_col: s.getField("distance")}).drop(tmp))

    def computeCost(self, dataset: DataFrame) -> float:
        """Sum of (weighted) distances of the valid rows to their nearest center: squared
        Euclidean, or cosine distance under distanceMeasure='cosine' (as Spark's cost).

        Rows with invalid features raise under handleInvalid='error' and are left out
        under 'skip'."""
        return cost_from_inertia(self._batch_stats(dataset).inertia, self._cosine)

    def partialFit(self, dataset: DataFrame, decayFactor: Optional[float] = None, *,
                   halfLife: Optional[float] = None, timeUnit: str = "batches",
                   reseedRatio: float = 1e-8) -> "MiniBatchKMeansModel":
        """A new model: these centers moved by one mini-batch update with every valid row
        of ``dataset`` (one Spark job), as Spark's ``StreamingKMeans`` updates on a batch.

        With accumulated weights ``W`` (``weightSums``), a discount ``a`` and the batch's
        per-center sums ``S`` and weights ``w``: ``W' = a * W + w`` and
        ``c' = (a * W * c + S) / W'`` for centers the batch reaches; others keep their
        place (their weight still decays). ``a = 1`` is Sculley's update, the one
        :class:`MiniBatchKMeans` applies per batch, so a sequence of ``partialFit`` calls
        equals those steps; smaller discounts let old data fade.

        Then, as in ``StreamingKMeans``, a dying center (weight below ``reseedRatio``
        times the heaviest's) is re-seeded by splitting the heaviest in two
        (:func:`~minibatch_kmeans.core.minibatch.split_dying`). ``numUpdates`` counts the
        calls and :attr:`lastUpdate` tells what this one did. Invalid rows follow
        ``handleInvalid``. The model itself is not changed.

        Parameters
        ----------
        dataset : DataFrame
            The features (and weight column) the model was trained on.
        decayFactor : float, optional
            In [0, 1]; the discount per batch, or per row under ``timeUnit="rows"``.
            Default 1 (nothing forgotten).
        halfLife : float, optional
            Instead of ``decayFactor``: the number of batches (or rows) after which old
            data has half its weight, ``decayFactor = 0.5 ** (1 / halfLife)``.
        timeUnit : {"batches", "rows"}
            "batches": ``a = decayFactor`` per call; "rows" (Spark's "points", also
            accepted): ``a = decayFactor ** n`` with ``n`` the batch's weight (its valid
            row count when unweighted).
        reseedRatio : float
            In [0, 1); 0 never re-seeds. Spark's fixed value is 1e-8.
        """
        discount_of = discount_rule(decayFactor, halfLife, timeUnit)
        UPDATE_RULES["reseedRatio"]("reseedRatio", reseedRatio)
        stats = self._batch_stats(dataset)
        batch_weight = float(stats.weights.sum())
        discount = discount_of(batch_weight)
        centers, weights = minibatch_update(self._centers, self._weight_sums * discount,
                                            stats.sums, stats.weights)
        centers, weights, splits = split_dying(centers, weights, reseedRatio)
        for small, big in splits:
            logger.info("center %d is dying: re-seeded by splitting the heaviest, %d",
                        small, big)
        if self._cosine:
            norms = np.linalg.norm(centers, axis=1, keepdims=True)
            centers = np.where(norms > 0, centers / np.where(norms > 0, norms, 1.0), centers)
        model = self.copy()
        model._centers, model._weight_sums = centers, weights
        model._num_updates = self._num_updates + 1
        model._summary = None
        model._last_update = {
            "rows": stats.n_rows, "weight": batch_weight, "discount": discount,
            "cost": cost_from_inertia(stats.inertia, self._cosine),
            "counts": [int(c) for c in stats.counts], "reseeded": [list(p) for p in splits]}
        return model

    @property
    def lastUpdate(self) -> Optional[dict]:
        """What the :meth:`partialFit` that made this model did (None otherwise): ``rows``
        and ``weight`` of the batch, the ``discount`` applied to the old weights, the
        batch's ``cost`` under the centers before the update (a prequential measure of
        how well the model fitted the new rows), the rows per center (``counts``), and
        the ``reseeded`` (dying, split) center pairs."""
        return None if self._last_update is None else dict(self._last_update)

    @property
    def numUpdates(self) -> int:
        """:meth:`partialFit` calls that led to this model (0 after ``fit``)."""
        return self._num_updates

    def _batch_stats(self, dataset: DataFrame):
        """Merged statistics of ``dataset``'s valid rows under these centers (one job)."""
        spec = self._spec_for(dataset, with_weight=True)
        valid = spec.valid_expr(self._cosine)
        if self.getHandleInvalid() == "error":
            n_bad = dataset.where(~valid).count()
            if n_bad:
                counts = spec.invalid_counts(dataset, self._cosine)
                raise InvalidInputError(
                    f"the input has {spec.summarize_invalid(n_bad, counts)}; "
                    "expected none with handleInvalid='error' (set handleInvalid='skip' to "
                    "leave them out)")
        cols = [x.alias(n) for x, n in zip(spec.feature_exprs(), feature_names(self.numFeatures))]
        if spec.weight_col is not None:
            cols.append(spec.weight_expr().alias("weight"))
        fn = stats_function(self._centers, self._compute_dtype(), spherical=self._cosine)
        table = dataset.where(valid).select(*cols).mapInArrow(fn, STATS_SCHEMA).toArrow()
        return table_to_stats(table, self._centers.shape[0], self.numFeatures)

    # -- persistence -------------------------------------------------------------------
    def _extra_metadata(self) -> dict:
        extra = {"numFeatures": self.numFeatures, "numCenters": int(self._centers.shape[0]),
                 "featureSchema": self.featureSchema,
                 "inputSchema": self._input_schema, "numUpdates": self._num_updates}
        if self.trainingInfo is not None:  # kept through partialFit updates
            extra["trainingSummary"] = self.trainingInfo
        return extra

    def _save_data(self, spark, path: str) -> None:
        rows = [(i, [float(v) for v in c], float(w))
                for i, (c, w) in enumerate(zip(self._centers, self._weight_sums))]
        (spark.createDataFrame(rows, "clusterIdx int, clusterCenter array<double>, "
                                     "weightSum double")
         .coalesce(1).write.mode("overwrite").parquet(path))

    @classmethod
    def _load(cls, spark, path: str, meta: dict) -> "MiniBatchKMeansModel":
        table = spark.read.parquet(f"{path}/{data_dir(meta)}").toArrow()
        return cls._from_arrays(meta, *centers_from_table(path, meta, table.to_pandas()))

    @classmethod
    def _from_arrays(cls, meta: dict, centers, weight_sums) -> "MiniBatchKMeansModel":
        """A model from its saved metadata and data (Params are set by the caller)."""
        fs = meta.get("featureSchema")
        spec = (feat.FeatureSpec(fs["kind"], tuple(fs["columns"]), int(fs["numFeatures"]))
                if fs else None)
        model = cls(centers, weight_sums, spec, meta.get("inputSchema"))
        model._training_info = meta.get("trainingSummary")
        model._num_updates = int(meta.get("numUpdates", 0))
        return model

    def _to_dict(self, spark) -> dict:
        """The whole model as plain JSON values (what ``save`` writes, in one document)."""
        return {"metadata": json.loads(_metadata_json(self, spark, self._extra_metadata())),
                "centers": self._centers.tolist(), "weightSums": self._weight_sums.tolist()}

    @classmethod
    def _from_dict(cls, state: dict) -> "MiniBatchKMeansModel":
        """The model :meth:`_to_dict` described."""
        meta = state["metadata"]
        model = cls._from_arrays(meta, np.array(state["centers"], dtype=np.float64),
                                 np.array(state["weightSums"], dtype=np.float64))
        model._resetUid(meta["uid"])
        _set_params_from_metadata(model, meta)
        return model

    @property
    def trainingInfo(self) -> Optional[dict]:
        """How the model was trained (the summary's figures without per-step history),
        also after ``load``; None for a model built by hand."""
        if self._summary is not None:
            return self._summary.as_dict(include_history=False)
        return self._training_info

    def dropSummary(self) -> "MiniBatchKMeansModel":
        """Keep the training figures (:attr:`trainingInfo`, saved with the model) and drop
        the summary, which holds the training DataFrame: a long-running stream must not
        keep a micro-batch's plan alive. Returns this model."""
        self._training_info, self._summary = self.trainingInfo, None
        return self

    def copy(self, extra=None) -> "MiniBatchKMeansModel":
        that = super().copy(extra)
        that._centers = self._centers.copy()
        that._weight_sums = self._weight_sums.copy()
        that._input_schema = self.inputSchema
        that._num_updates = self._num_updates
        that._last_update = self._last_update
        return that


