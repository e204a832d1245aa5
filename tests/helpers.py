"""Small data builders shared by the Spark tests."""
import os

import numpy as np
import pandas as pd
import pytest


def blobs(n=3000, k=4, d=3, spread=0.3, seed=0, scale=10.0):
    """Well-separated Gaussian blobs: (X float64 (n, d), labels (n,), centers (k, d))."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-scale, scale, size=(k, d))
    # push centers apart so that blobs never overlap
    centers += np.arange(k)[:, None] * 4 * scale
    labels = rng.integers(0, k, size=n)
    X = centers[labels] + rng.normal(0, spread, size=(n, d))
    return X, labels, centers


def columns_df(spark, X, prefix="x", weights=None, partitions=2):
    pdf = pd.DataFrame(X, columns=[f"{prefix}{i}" for i in range(X.shape[1])])
    if weights is not None:
        pdf["w"] = weights
    return spark.createDataFrame(pdf).repartition(partitions)


def cols(d, prefix="x"):
    return [f"{prefix}{i}" for i in range(d)]


def sq_cost(X, centers, w=None):
    d = ((X[:, None, :] - np.asarray(centers)[None, :, :]) ** 2).sum(-1).min(1)
    return float(d.sum() if w is None else d @ w)


#: Three clusters in two features (a, b), for the stream tests.
STREAM_CENTERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def moving_blobs(seed, shift=0.0, n=200):
    """Rows around STREAM_CENTERS moved by ``shift``."""
    rng = np.random.default_rng(seed)
    return STREAM_CENTERS[rng.integers(0, 3, n)] + rng.normal(scale=0.5, size=(n, 2)) + shift


def stream_file(directory, i, X, first_id=None):
    """File ``i`` of a stream of Parquet files (id, a, b); its modification time orders it
    after file i-1."""
    os.makedirs(directory, exist_ok=True)
    first_id = i * 1000 if first_id is None else first_id
    frame = pd.DataFrame({"id": np.arange(first_id, first_id + len(X), dtype=np.int64),
                          "a": X[:, 0], "b": X[:, 1]})
    path = os.path.join(directory, f"part-{i:03d}.parquet")
    frame.to_parquet(path, index=False)
    os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    return path


def _jar(prefix):
    from minibatch_kmeans.spark.session import connector_jars

    return any(os.path.basename(j).startswith(prefix) for j in connector_jars())


#: Tests of Spark's own Delta source (delta-spark) and of the Kafka source need the jars
#: ``make jars`` fetches from Maven Central; without them they are skipped, saying so.
requires_delta_jars = pytest.mark.skipif(
    not _jar("delta-spark"), reason="no delta-spark jars: `make jars` could not fetch them "
                                    "from Maven Central")
requires_kafka_jars = pytest.mark.skipif(
    not _jar("spark-sql-kafka"), reason="no Kafka connector jars: `make jars` could not "
                                        "fetch them from Maven Central")
