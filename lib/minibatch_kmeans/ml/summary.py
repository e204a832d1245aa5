"""The training summary of a fitted model (:class:`MiniBatchKMeansSummary`)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from pyspark.ml import Model
from pyspark.sql import DataFrame

class MiniBatchKMeansSummary:
    """Training summary of a :class:`MiniBatchKMeansModel` (KMeansSummary's fields, and
    ours: numSteps, stopReason and the per-step history).

    Attributes
    ----------
    trainingCost : float
        Exact cost of the final centers over all valid training rows (an exact pass), or
        an estimate when ``computeTrainingCost=False``.
    clusterSizes : list of int
    k, numIter, numSteps : int
        numIter: epochs (of the epochs pass, in the pass fit); numSteps: mini-batch steps.
    fitMode : {"local", "pass", "step"}
    numPasses, numJobs : int
        Passes over the data (the pass fit; None for the step fit) and Spark jobs.
    passesOverData : float
        Rows handed to Python or the driver over the row count (the epochs pass runs on a
        sample of a large table; the step fit counts its prepare copy as one).
    epochRows, epochsStopReason
        Rows the epochs pass ran over, and why its epochs stopped (the pass fit).
    partitionDependent : bool
        Whether the result depends on the partitioning (the pass fit's sample does).
    stopReason : {"maxIter", "tol", "maxNoImprovement", "interrupted"}
    history : list of dict
        Per step (per pass in the pass fit): step, epoch, bucket, rows, batch_inertia (per
        unit weight), ewa, center_shift, reassigned, seconds, kind ("step", "epochs" or
        "exact").
    """

    def __init__(self, model: Model, dataset: DataFrame, info: Dict[str, Any],
                 history: List[dict]):
        self._model = model
        self._dataset = dataset
        self._info = dict(info)
        self.history = history

    def __getattr__(self, name):
        """The fit's other figures (``as_dict()`` lists them all), for example
        ``prepareSeconds``."""
        info = self.__dict__.get("_info", {})
        if name in info:
            return info[name]
        raise AttributeError(name)

    @property
    def trainingCost(self) -> float:
        return self._info.get("trainingCost")

    @property
    def clusterSizes(self) -> Optional[List[int]]:
        return self._info.get("clusterSizes")

    @property
    def k(self) -> int:
        return self._info.get("k")

    @property
    def numIter(self) -> int:
        return self._info.get("numIter")

    @property
    def numSteps(self) -> int:
        return self._info.get("numSteps")

    @property
    def fitMode(self) -> str:
        return self._info.get("fitMode")

    @property
    def numPasses(self) -> Optional[int]:
        return self._info.get("numPasses")

    @property
    def numJobs(self) -> Optional[int]:
        return self._info.get("numJobs")

    @property
    def passesOverData(self) -> Optional[float]:
        return self._info.get("passesOverData")

    @property
    def epochRows(self) -> Optional[int]:
        return self._info.get("epochRows")

    @property
    def epochsStopReason(self) -> Optional[str]:
        return self._info.get("epochsStopReason")

    @property
    def partitionDependent(self) -> bool:
        return self._info.get("partitionDependent")

    @property
    def stopReason(self) -> str:
        return self._info.get("stopReason")

    @property
    def predictions(self) -> DataFrame:
        """The training data transformed by the model (computed lazily)."""
        return self._model.transform(self._dataset)

    @property
    def predictionCol(self) -> str:
        return self._model.getPredictionCol()

    @property
    def featuresCol(self) -> str:
        return self._model.getFeaturesCol()

    @property
    def cluster(self) -> DataFrame:
        return self.predictions.select(self.predictionCol)

    def as_dict(self, include_history: bool = True) -> dict:
        out = dict(self._info)
        if include_history:
            out["history"] = self.history
        return out
