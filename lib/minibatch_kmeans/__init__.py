"""minibatch_kmeans: mini-batch k-means clustering for Spark DataFrames.

>>> from minibatch_kmeans import MiniBatchKMeans
>>> model = MiniBatchKMeans(k=50, inputCols=["x0", "x1"]).fit(df)   # doctest: +SKIP
"""
from .errors import (ConcurrentWriteError, ConfigError, InvalidInputError, InvalidParamError,
                     MiniBatchKMeansError, ModelPersistenceError)
from .ml.estimator import MiniBatchKMeans, MiniBatchKMeansModel, MiniBatchKMeansSummary

__version__ = "0.1.0"

__all__ = [
    "ConcurrentWriteError", "ConfigError", "InvalidInputError", "InvalidParamError", "MiniBatchKMeans",
    "MiniBatchKMeansError", "MiniBatchKMeansModel", "MiniBatchKMeansSummary",
    "ModelPersistenceError",
]
