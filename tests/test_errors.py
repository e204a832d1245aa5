"""Bad input gets a clear error (a ValueError and a MiniBatchKMeansError naming what was
given and what was expected), never a Java stack trace or a silently wrong model."""
import numpy as np
import pandas as pd
import pytest
from pyspark.ml.linalg import Vectors

from helpers import blobs, cols, columns_df
from minibatch_kmeans import InvalidInputError, MiniBatchKMeans, MiniBatchKMeansError


def _raises(match):
    """Both ValueError and the project's base error, with a message matching ``match``."""
    return pytest.raises(MiniBatchKMeansError, match=match)


@pytest.fixture(scope="module")
def small(spark):
    X, _, _ = blobs(n=300, k=3, d=3, seed=0)
    return columns_df(spark, X)


def _fit(df, **kw):
    params = dict(k=3, inputCols=cols(3), batchSize=50, maxIter=1)
    params.update(kw)
    return MiniBatchKMeans(**params).fit(df)


def test_error_classes_subclass_value_error():
    for name in ("InvalidInputError", "InvalidParamError", "ConfigError",
                 "ModelPersistenceError"):
        import minibatch_kmeans

        cls = getattr(minibatch_kmeans, name)
        assert issubclass(cls, ValueError) and issubclass(cls, MiniBatchKMeansError)


def test_empty_table(spark):
    df = spark.createDataFrame([], "x0 double, x1 double, x2 double")
    with _raises("the input is empty: expected at least one row"):
        _fit(df)
    vdf = spark.createDataFrame([], "features array<double>")
    with _raises("the input is empty"):
        MiniBatchKMeans(k=2).fit(vdf)


@pytest.mark.parametrize("k", [1, 0, -3])
def test_k_below_two(small, k):
    with _raises(f"k={k} is invalid: expected an integer >= 2"):
        _fit(small, k=k)


def test_k_larger_than_distinct_rows(spark):
    X = np.repeat(np.array([[0.0, 0, 0], [1, 1, 1], [2, 2, 2]]), 50, axis=0)
    with _raises("k=5 but the input has only 3 distinct rows: expected at least k=5"):
        _fit(columns_df(spark, X), k=5)
    with _raises("k=200 but the input has only 150 valid rows"):
        _fit(columns_df(spark, X), k=200)


def test_k_larger_than_distinct_rows_beyond_the_init_sample(spark):
    """The sample holds fewer than k distinct rows but the table has enough: no error."""
    rng = np.random.default_rng(0)
    X = np.repeat(np.array([[0.0, 0, 0], [1, 1, 1]]), 1000, axis=0)
    X = np.vstack([X, rng.normal(5, 1, (3, 3))])
    model = _fit(columns_df(spark, X), k=5, batchSize=10, initSize=10, initMode="k-means++")
    assert len(np.unique(np.array(model.clusterCenters()), axis=0)) == 5


def test_missing_and_non_numeric_columns(spark, small):
    with _raises(r"input column 'nope' is not a column of the input; columns are \['x0'"):
        _fit(small, inputCols=["x0", "nope"])
    sdf = spark.createDataFrame([("a", 1.0)] * 10, "s string, x double")
    with _raises("input column 's' has type string, expected a numeric type"):
        _fit(sdf, inputCols=["s", "x"], k=2)
    with _raises("featuresCol 's' has type string, expected a Vector"):
        MiniBatchKMeans(k=2, featuresCol="s").fit(sdf)
    with _raises("featuresCol 'features' is not a column"):
        MiniBatchKMeans(k=2).fit(sdf)
    with _raises("weightCol 's' has type string, expected a numeric type"):
        _fit(sdf, inputCols=["x"], weightCol="s", k=2)


def test_vectors_of_different_lengths(spark):
    """The error names every length found and how many rows have it (the feature count
    may come from the first row, which can be the odd one)."""
    rows = [(Vectors.dense([1.0, 2.0, 3.0]),)] * 20 + [(Vectors.dense([1.0, 2.0]),)] * 3
    df = spark.createDataFrame(rows, ["features"])
    with _raises(r"3 invalid rows \(wrong length 2 in column 'features' \(expected 3 "
                 r"values\): 3\)"):
        MiniBatchKMeans(k=2, batchSize=10).fit(df)
    arr = spark.createDataFrame(pd.DataFrame({"a": [[1.0, 2.0]] + [[1.0, 2.0, 3.0]] * 20
                                              + [[1.0] * 4] * 4}))
    with _raises(r"24 invalid rows \(wrong length 3 in column 'a' \(expected 2 values\): 20; "
                 r"wrong length 4 in column 'a' \(expected 2 values\): 4\)"):
        MiniBatchKMeans(k=2, featuresCol="a", batchSize=10).fit(arr)


@pytest.mark.parametrize("bad,kind", [(None, "null"), (np.nan, "NaN"), (np.inf, "infinite"),
                                      (-np.inf, "infinite")])
def test_null_nan_inf_values_name_column_and_count(spark, bad, kind):
    X, _, _ = blobs(n=200, k=3, d=3, seed=1)
    rows = [tuple(float(v) for v in r) for r in X]
    for i in (3, 10, 50):
        rows[i] = (rows[i][0], bad, rows[i][2])
    df = spark.createDataFrame(rows, "x0 double, x1 double, x2 double")
    with _raises(f"3 invalid rows \\({kind} value in column 'x1': 3\\).*handleInvalid='skip'"):
        _fit(df)
    model = _fit(df, handleInvalid="skip")
    assert model.summary.numSkipped == 3
    assert model.summary.numRows == 197
    assert model.summary.skippedByReason == {f"{kind} value in column 'x1'": 3}
    assert sum(model.summary.clusterSizes) == 197


def test_invalid_values_in_vector_and_array_columns(spark):
    rows = [(Vectors.dense([1.0, 2.0]),)] * 20 + [(Vectors.dense([np.nan, 2.0]),),
                                                 (None,), (Vectors.dense([np.inf, 1.0]),)]
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import StructField, StructType

    df = spark.createDataFrame(rows, StructType([StructField("features", VectorUDT())]))
    with _raises("3 invalid rows.*null value in column 'features': 1; NaN value in column "
                 "'features': 1; infinite value in column 'features': 1"):
        MiniBatchKMeans(k=2, batchSize=5).fit(df)
    arr = spark.createDataFrame(pd.DataFrame({"a": [[1.0, 2.0], [3.0, 1.0]] * 10 + [[1.0, None]]}),
                                "a array<double>")
    with _raises("1 invalid rows .null value in column 'a': 1"):
        MiniBatchKMeans(k=2, featuresCol="a", batchSize=5).fit(arr)
    m = MiniBatchKMeans(k=2, featuresCol="a", batchSize=5, handleInvalid="skip").fit(arr)
    assert m.summary.numSkipped == 1


def test_all_rows_invalid(spark):
    df = spark.createDataFrame([(None, 1.0), (None, 2.0)], "x0 double, x1 double")
    with _raises("no valid rows: all 2 rows are invalid"):
        _fit(df, inputCols=["x0", "x1"], k=2, handleInvalid="skip")


def test_invalid_weights(spark):
    X, _, _ = blobs(n=100, k=3, d=3, seed=1)
    w = np.ones(100)
    w[5] = -1.0
    df = columns_df(spark, X, weights=w)
    with _raises("invalid weight in column 'w' .null, NaN, infinite or negative.: 1"):
        _fit(df, weightCol="w")


@pytest.mark.parametrize("param,value,expected", [
    ("batchSize", 0, "an integer >= 1"), ("batchSize", -5, "an integer >= 1"),
    ("initSize", 0, "an integer >= 1"), ("initMode", "kmeans", "one of"),
    ("distanceMeasure", "manhattan", "one of .'euclidean', 'cosine'."),
    ("maxIter", -1, "an integer >= 0"), ("tol", -1.0, "a finite number >= 0"),
    ("initSteps", 0, r"an integer in \[1, 100\]"), ("initSteps", 101, r"an integer in \[1, 100\]"),
    ("initRuns", 101, r"an integer in \[0, 100\]"),
    ("reassignmentRatio", -0.1, r"a number in \[0, 1\]"),
    ("reassignmentRatio", float("inf"), r"a number in \[0, 1\]"),
    ("handleInvalid", "keep", "one of .'error', 'skip'."), ("dtype", "float16", "one of"),
    ("maxNoImprovement", -1, "an integer >= 0"), ("initScope", "everything", "one of"),
])
def test_parameter_validation(small, param, value, expected):
    with _raises(f"{param}={value!r} is invalid: expected {expected}"):
        _fit(small, **{param: value})


def test_initial_centers_of_the_wrong_shape(small):
    with _raises(r"initial centers have shape \(2, 3\) but k=3 and 3 features"):
        _fit(small, initialCenters=[[0.0, 0, 0], [1, 1, 1]])
    with _raises(r"initial centers have shape \(3, 2\) but k=3 and 3 features"):
        _fit(small, initialCenters=[[0.0, 0], [1, 1], [2, 2]])


def test_cosine_rejects_zero_vectors(spark):
    X, _, _ = blobs(n=100, k=3, d=3, seed=2)
    X[[4, 9]] = 0.0
    df = columns_df(spark, X)
    with _raises("2 invalid rows .zero vector .cosine distance.: 2"):
        _fit(df, distanceMeasure="cosine")
    with _raises("initial centers include a zero vector"):
        _fit(df, distanceMeasure="cosine", handleInvalid="skip",
             initialCenters=[[0.0, 0, 0], [1, 1, 1], [2, 2, 1]])
    m = _fit(df, distanceMeasure="cosine", handleInvalid="skip")
    assert m.summary.numSkipped == 2


def test_errors_are_not_java_exceptions(small):
    """Validation happens in Python before any Spark job can fail inside the JVM."""
    try:
        _fit(small, inputCols=["x0", "missing"])
    except InvalidInputError as e:
        assert "java" not in str(e).lower() and "py4j" not in str(e).lower()
    else:  # pragma: no cover
        pytest.fail("no error")
