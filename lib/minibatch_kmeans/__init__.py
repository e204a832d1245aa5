"""minibatch_kmeans: mini-batch k-means clustering for Spark DataFrames.

>>> from minibatch_kmeans import MiniBatchKMeans
>>> model = MiniBatchKMeans(k=50, inputCols=["x0", "x1"]).fit(df)   # doctest: +SKIP

pyspark is imported only when a Spark class is first used (``minibatch_kmeans.MiniBatchKMeans``
and the model and summary classes): the Spark-free parts (the NumPy core, a saved model
scored with pandas, the MLflow pyfunc model) run where pyspark is not installed.
"""
from importlib import import_module

from .errors import (ConcurrentWriteError, ConfigError, InvalidInputError, InvalidParamError,
                     MiniBatchKMeansError, ModelPersistenceError)

__version__ = "0.1.0"

#: the Spark classes, each imported from its module when first used
SPARK_CLASSES = {"MiniBatchKMeans": "minibatch_kmeans.ml.estimator",
                 "MiniBatchKMeansModel": "minibatch_kmeans.ml.estimator",
                 "MiniBatchKMeansSummary": "minibatch_kmeans.ml.estimator"}

__all__ = [
    "ConcurrentWriteError", "ConfigError", "InvalidInputError", "InvalidParamError", "MiniBatchKMeans",
    "MiniBatchKMeansError", "MiniBatchKMeansModel", "MiniBatchKMeansSummary",
    "ModelPersistenceError",
]


def __getattr__(name: str):
    if name in SPARK_CLASSES:
        value = getattr(import_module(SPARK_CLASSES[name]), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'minibatch_kmeans' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SPARK_CLASSES))
