"""Rows collected to the driver batch by batch (spark.collect): the DataFrame's own order
whatever order its tasks finish in, invalid rows left out, weights kept."""
import time

import numpy as np
import pytest
from pyspark.sql import functions as F

from minibatch_kmeans.spark import collect


@pytest.mark.parametrize("seed", range(40))
def test_blocks_arriving_in_any_order_are_put_back_in_order(seed):
    """put_in_order rearranges blocks (empty ones, runs already in sequence, blocks longer
    than its swap chunk) into the order Spark gives, for a matrix and its weights alike."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 14))
    sizes = rng.integers(0, 3 * collect.SWAP_ROWS if seed % 4 == 0 else 50, m)
    blocks = [rng.normal(size=(s, 3)).astype(np.float32) for s in sizes]
    arrival = rng.permutation(m) if seed % 5 else np.arange(m)  # arrival a holds block arrival[a]
    X = np.concatenate([blocks[b] for b in arrival])
    w = X[:, 0].astype(np.float64)
    order = list(np.argsort(arrival))
    collect.put_in_order([X, w], [sizes[b] for b in arrival], order)
    want = np.concatenate(blocks)
    np.testing.assert_array_equal(X, want)
    np.testing.assert_array_equal(w, want[:, 0].astype(np.float64))


@pytest.mark.parametrize("expected_rows", [0, 10, 5000, 10 ** 7])
def test_collect_matrix_equals_to_arrow_in_order(spark, expected_rows):
    """Many partitions of unequal size, two slots (tasks finish out of order), invalid rows
    and weights: the matrix is toArrow's valid rows in toArrow's order, whatever size the
    matrix was given up front."""
    n = 3000
    df = (spark.range(0, n, 1, 9)
          .withColumn("f0", (F.col("id") * 0.5).cast("float"))
          .withColumn("f1", F.sin("id").cast("float"))
          .withColumn("weight", (F.col("id") % 7 + 1).cast("double"))
          .withColumn("_valid", F.col("id") % 13 != 0)
          .select("_valid", "f0", "f1", "weight"))
    df = df.repartition(9, F.col("id") % 5).select("_valid", "f0", "f1", "weight")
    table = df.toArrow()
    valid = table.column("_valid").to_numpy(zero_copy_only=False)
    want_X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False)
                              for c in ("f0", "f1")])[valid]
    want_w = table.column("weight").to_numpy(zero_copy_only=False)[valid]

    got = collect.collect_matrix(df, 2, np.float32, expected_rows)
    assert got.n_invalid == int((~valid).sum()) > 0
    assert got.X.dtype == np.float32 and got.X.shape == want_X.shape
    np.testing.assert_array_equal(got.X, want_X)
    np.testing.assert_array_equal(got.w, want_w)


def test_collect_matrix_of_no_rows(spark):
    df = spark.range(0).selectExpr("CAST(id AS FLOAT) AS f0")
    got = collect.collect_matrix(df, 1, np.float64, 100)
    assert got.X.shape == (0, 1) and got.w is None and got.n_invalid == 0


def test_a_failing_job_raises_spark_s_error_not_a_socket_error(spark):
    """An error in the job comes out as Spark's own exception, after the stream ends."""
    df = spark.range(0, 100, 1, 2).selectExpr(
        "CAST(assert_true(id < 50, 'row too large') AS FLOAT) AS f0")
    with pytest.raises(Exception, match="row too large"):
        collect.collect_matrix(df, 1, np.float32)


def _features(spark, n, scale):
    return spark.range(0, n, 1, 3).select(*[(F.col("id") * scale + j).cast("float")
                                             .alias(f"f{j}") for j in range(4)])


def test_fits_back_to_back_write_into_the_memory_the_last_one_left(spark, monkeypatch):
    """Inside matrix_memory blocks, a collect writes into the memory of the last block's
    matrix (kept for KEEP_SECONDS) and still gives its own rows; outside a block, or once
    KEEP_SECONDS have passed, it allocates anew; a larger matrix than the kept one gets
    new memory."""
    want = [np.arange(500, dtype=np.float32)[:, None] * s + np.arange(4, dtype=np.float32)
            for s in (1.0, 2.0)]
    collect.release_kept_memory()  # what earlier fits kept
    with collect.matrix_memory():
        first = collect.collect_matrix(_features(spark, 500, 1.0), 4, np.float32, 500).X
        np.testing.assert_array_equal(first, want[0])
    with collect.matrix_memory():
        second = collect.collect_matrix(_features(spark, 500, 2.0), 4, np.float32, 500).X
        assert np.shares_memory(first, second)
        np.testing.assert_array_equal(second, want[1])
        with collect.matrix_memory():  # a nested block finds nothing kept
            nested = collect.collect_matrix(_features(spark, 500, 1.0), 4, np.float32, 500).X
            assert not np.shares_memory(nested, second)
    outside = collect.collect_matrix(_features(spark, 500, 1.0), 4, np.float32, 500).X
    assert not np.shares_memory(outside, second)
    with collect.matrix_memory():  # more rows than the kept memory holds
        big = collect.collect_matrix(_features(spark, 5000, 1.0), 4, np.float32, 5000).X
        assert not np.shares_memory(big, second) and len(big) == 5000
    monkeypatch.setattr(collect, "KEEP_SECONDS", 0.2)
    with collect.matrix_memory():
        kept = collect.collect_matrix(_features(spark, 500, 1.0), 4, np.float32, 500).X
        assert np.shares_memory(kept, big)
    time.sleep(1.0)
    with collect.matrix_memory():
        late = collect.collect_matrix(_features(spark, 500, 1.0), 4, np.float32, 500).X
        assert not np.shares_memory(late, kept)
        np.testing.assert_array_equal(late, want[0])
