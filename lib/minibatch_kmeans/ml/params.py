"""The Params that MiniBatchKMeans and its model share (:class:`MiniBatchKMeansParams`:
definitions, defaults, getters, the feature spec), and partialFit's forgetting rule."""
from __future__ import annotations

import zlib
from typing import Any, List, Optional

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasDistanceMeasure, HasFeaturesCol, HasInputCols,
                                     HasMaxIter, HasPredictionCol, HasSeed, HasTol,
                                     HasWeightCol)
from pyspark.sql import DataFrame

from ..checks import Rule
from ..errors import InvalidParamError
from ..spark import features as feat
from ..spark.params import PARAM_RULES

#: Deterministic default seed (pyspark's HasSeed default hashes the class name with
#: Python's per-process randomised ``hash``, which would make default fits irreproducible).
DEFAULT_SEED = zlib.crc32(b"minibatch_kmeans.MiniBatchKMeans")


class MiniBatchKMeansParams(HasMaxIter, HasFeaturesCol, HasSeed, HasPredictionCol, HasTol,
                            HasDistanceMeasure, HasWeightCol, HasInputCols):
    """Params shared by :class:`MiniBatchKMeans` and :class:`MiniBatchKMeansModel`."""

    k = Param(Params._dummy(), "k", "The number of clusters to create. Must be > 1.",
              typeConverter=TypeConverters.toInt)
    initMode = Param(Params._dummy(), "initMode",
                     'The initialization algorithm: "k-means||" (Spark\'s default), '
                     '"k-means++" (greedy, on a driver-side sample) or "random".',
                     typeConverter=TypeConverters.toString)
    initSteps = Param(Params._dummy(), "initSteps",
                      "The number of rounds of k-means|| initialization. Must be > 0.",
                      typeConverter=TypeConverters.toInt)
    initScope = Param(Params._dummy(), "initScope",
                      'Where k-means|| runs: "sample" (the driver-side init sample, default) '
                      'or "table" (distributed over the whole table, as Spark MLlib).',
                      typeConverter=TypeConverters.toString)
    initRuns = Param(Params._dummy(), "initRuns",
                     "Initializations to try on the init sample, keeping the one of lowest "
                     "inertia (scikit-learn's n_init); 0 (default) means 3 for random and 1 "
                     "otherwise.", typeConverter=TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize",
                      "Approximate number of rows per mini-batch. Must be > 0. Unset "
                      "(default): automatic, 4096 rows per step (4 k when larger) for "
                      "fitMode auto/local/pass, 10000 for fitMode step.",
                      typeConverter=TypeConverters.toInt)
    fitMode = Param(Params._dummy(), "fitMode",
                    'How the fit spends Spark jobs: "auto" (default: "local" for a small '
                    'table, else "pass"), "local" (collect the valid rows and fit on the '
                    'driver), "pass" (mini-batch epochs on the driver over a random '
                    "sample, then exact passes over the input; the sample depends on the "
                    'partitioning) or "step" (a prepared copy and one Spark job per '
                    "mini-batch; partition-independent).",
                    typeConverter=TypeConverters.toString)
    localSteps = Param(Params._dummy(), "localSteps",
                       "Mini-batch steps per Spark job (default 1). With m > 1 each job reads "
                       "m batches and every task updates its own copy of the centers after "
                       "each of its sub-batches; the driver merges the tasks' sums by weight. "
                       "Fewer jobs for nearly the same result (see the README).",
                       typeConverter=TypeConverters.toInt)
    initSize = Param(Params._dummy(), "initSize",
                     "Rows sampled to the driver for initialization. Default (unset): "
                     "3 * batchSize, or 3 * k when that is larger; at most the row count.",
                     typeConverter=TypeConverters.toInt)
    maxNoImprovement = Param(Params._dummy(), "maxNoImprovement",
                             "Stop after this many steps without improvement of the smoothed "
                             "batch inertia; 0 disables this rule only (each stop rule has "
                             "its own off switch: tol=0 turns off the center-shift stop, so "
                             "maxNoImprovement=0 and tol=0 run all maxIter epochs).",
                             typeConverter=TypeConverters.toInt)
    reassignmentRatio = Param(Params._dummy(), "reassignmentRatio",
                              "Centers whose accumulated weight is below this fraction of the "
                              "largest are re-seeded from the batch; 0 disables.",
                              typeConverter=TypeConverters.toFloat)
    handleInvalid = Param(Params._dummy(), "handleInvalid",
                          'Rows with null, NaN or infinite features (or a zero vector under '
                          'cosine distance): "error" (default) raises, "skip" skips and '
                          'counts them.', typeConverter=TypeConverters.toString)
    initialCenters = Param(Params._dummy(), "initialCenters",
                           "Initial centers (k lists of n_features numbers) for a warm start; "
                           "overrides initMode.", typeConverter=TypeConverters.toListListFloat)
    distanceCol = Param(Params._dummy(), "distanceCol",
                        "Optional output column: distance of each row to its center "
                        "(Euclidean, or cosine distance 1 - cos).",
                        typeConverter=TypeConverters.toString)
    dtype = Param(Params._dummy(), "dtype",
                  'Compute precision: "float32" (default, faster) or "float64". Sums and '
                  "costs are always accumulated in float64.",
                  typeConverter=TypeConverters.toString)
    computeTrainingCost = Param(Params._dummy(), "computeTrainingCost",
                                "Run one final full pass for the exact training cost and "
                                "cluster sizes (default true); false estimates the cost from "
                                "the last epoch's batches.", typeConverter=TypeConverters.toBoolean)
    prepareStorage = Param(Params._dummy(), "prepareStorage",
                           'Where the prepared training rows live: "memory" (a cache), '
                           '"disk" (a scratch Parquet copy laid out by batch, for tables '
                           'larger than memory) or "auto" (default: disk when the rows would '
                           'take more than half of the storage memory the session\'s '
                           'settings tell; memory when they do not tell).',
                           typeConverter=TypeConverters.toString)
    scratchDir = Param(Params._dummy(), "scratchDir",
                       'Directory for prepareStorage="disk" (a fresh subdirectory, deleted '
                       "after the fit); default: the system's temporary directory, which "
                       "only a local session can use. On a cluster it must be reachable by "
                       "the driver and every executor.", typeConverter=TypeConverters.toString)
    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "Directory for the fit's checkpoints (unset: none). The fit saves its "
                          "state there every checkpointInterval steps and when it ends, and a "
                          "fit that finds a checkpoint there resumes from it (same Params and "
                          "input required). Any path Spark can write; local, file: and dbfs: "
                          "paths are written by the driver.",
                          typeConverter=TypeConverters.toString)
    # Our own Param, not pyspark's HasCheckpointInterval (whose doc speaks of the
    # SparkContext's checkpoint directory, RDD lineage and -1): same name, as in MLlib,
    # but the fit's own checkpoints to checkpointDir.
    checkpointInterval = Param(Params._dummy(), "checkpointInterval",
                               "Steps between checkpoints to checkpointDir (>= 1, default 10); "
                               "ignored when checkpointDir is unset.",
                               typeConverter=TypeConverters.toInt)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._setDefault(k=2, maxIter=20, tol=1e-4, seed=DEFAULT_SEED, initMode="k-means||",
                         initSteps=2, initScope="sample", initRuns=0, distanceMeasure="euclidean",
                         fitMode="auto", maxNoImprovement=10, reassignmentRatio=0.01,
                         handleInvalid="error", dtype="float32", computeTrainingCost=True,
                         prepareStorage="auto", localSteps=1, checkpointInterval=10)

    def getK(self) -> int:
        return self.getOrDefault(self.k)

    def getInitMode(self) -> str:
        return self.getOrDefault(self.initMode)

    def getInitSteps(self) -> int:
        return self.getOrDefault(self.initSteps)

    def getInitScope(self) -> str:
        return self.getOrDefault(self.initScope)

    def getInitRuns(self) -> int:
        return self.getOrDefault(self.initRuns)

    def getBatchSize(self) -> Optional[int]:
        """The batch size set, or None (automatic)."""
        return self.getOrDefault(self.batchSize) if self.isDefined(self.batchSize) else None

    def getFitMode(self) -> str:
        return self.getOrDefault(self.fitMode)

    def getLocalSteps(self) -> int:
        return self.getOrDefault(self.localSteps)

    def getInitSize(self) -> Optional[int]:
        return self.getOrDefault(self.initSize) if self.isDefined(self.initSize) else None

    def getMaxNoImprovement(self) -> int:
        return self.getOrDefault(self.maxNoImprovement)

    def getReassignmentRatio(self) -> float:
        return self.getOrDefault(self.reassignmentRatio)

    def getHandleInvalid(self) -> str:
        return self.getOrDefault(self.handleInvalid)

    def getInitialCenters(self) -> Optional[List[List[float]]]:
        return self.getOrDefault(self.initialCenters) if self.isDefined(self.initialCenters) \
            else None

    def getDistanceCol(self) -> Optional[str]:
        return self.getOrDefault(self.distanceCol) if self.isDefined(self.distanceCol) else None

    def getDtype(self) -> str:
        return self.getOrDefault(self.dtype)

    def getComputeTrainingCost(self) -> bool:
        return self.getOrDefault(self.computeTrainingCost)

    def getPrepareStorage(self) -> str:
        return self.getOrDefault(self.prepareStorage)

    def getScratchDir(self) -> Optional[str]:
        return self.getOrDefault(self.scratchDir) if self.isDefined(self.scratchDir) else None

    def getCheckpointInterval(self) -> int:
        return self.getOrDefault(self.checkpointInterval)

    def getCheckpointDir(self) -> Optional[str]:
        return (self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir)
                else None)

    # setters that apply to the estimator and the model alike; each returns self
    def setFeaturesCol(self, value: str):
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str):
        return self._set(predictionCol=value)

    def setInputCols(self, value: List[str]):
        return self._set(inputCols=value)

    def setHandleInvalid(self, value: str):
        return self._set(handleInvalid=value)

    def setDistanceCol(self, value: str):
        return self._set(distanceCol=value)

    def featureSpec(self, dataset: DataFrame, withWeight: bool = True) -> feat.FeatureSpec:
        """Where ``dataset``'s features (and, ``withWeight``, the weights) are for this
        stage's Params: its ``inputCols``, or its Vector or array ``featuresCol``
        (:func:`~minibatch_kmeans.spark.features.resolve`); a model also checks the
        feature count it was fitted on. Raises InvalidInputError naming what is missing."""
        return feat.resolve(dataset, self.getFeaturesCol(), self._input_cols(),
                            self._weight_col() if withWeight else None,
                            n_features=getattr(self, "numFeatures", None))

    def _input_cols(self) -> Optional[List[str]]:
        return self.getInputCols() if self.isDefined(self.inputCols) else None

    def _weight_col(self) -> Optional[str]:
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() \
            else None

    def _checked(self, name: str):
        """The Param's value, checked against its rule in PARAM_RULES."""
        return PARAM_RULES[name][1](name, self.getOrDefault(name))


#: partialFit's time units: Spark's StreamingKMeans calls rows "points".
TIME_UNITS = {"batches": "batches", "rows": "rows", "points": "rows"}


#: partialFit's forgetting arguments, name -> rule (the stream config checks its keys
#: with the same rules).
UPDATE_RULES = {
    "decayFactor": Rule("number", 0, 1, optional=True),
    "halfLife": Rule("number", 0, above=True, optional=True,
                     expected="a number of batches or rows > 0"),
    "timeUnit": Rule("choice", choices=tuple(TIME_UNITS)),
    "reseedRatio": Rule("number", 0, 1, below=True,
                        expected="a number in [0, 1); 0 never re-seeds"),
}


def discount_rule(decay_factor, half_life, time_unit,
                  names=("decayFactor", "halfLife", "timeUnit"), error=InvalidParamError):
    """partialFit's forgetting rule: a function from the batch's weight to the discount
    applied to the accumulated weights (validated here, before any Spark job; errors name
    the arguments by ``names`` and are raised as ``error``)."""
    decay_name, half_name, unit_name = names
    rules = UPDATE_RULES
    if decay_factor is not None and half_life is not None:
        raise error(f"{decay_name}={decay_factor!r} and {half_name}={half_life!r} are both "
                    "set: expected one of them")
    unit = TIME_UNITS[rules["timeUnit"](unit_name, time_unit, error)]
    if half_life is not None:
        a = 0.5 ** (1.0 / rules["halfLife"](half_name, half_life, error))
    elif decay_factor is None:
        a = 1.0
    else:
        a = rules["decayFactor"](decay_name, decay_factor, error)
    return (lambda weight: a) if unit == "batches" else (lambda weight: a ** weight)
