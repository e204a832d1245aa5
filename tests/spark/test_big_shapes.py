"""Big shapes at test size (issue 18): a value repeated far more often than the init
sample holds, and many tasks each returning k x d partial sums to the driver."""
import logging

import numpy as np
import pytest

from helpers import blobs, cols, columns_df
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.spark import passes as passes_mod
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.fit import FitParams, SparkMiniBatch
from minibatch_kmeans.spark.initialize import Initializer
from minibatch_kmeans.spark.prepare import prepare

HEAVY = np.array([50.0, -50.0, 25.0])
INIT_SIZE = 600


@pytest.fixture(scope="module")
def skewed(spark):
    """60,000 copies of one row and 2,000 rows in 4 blobs (the shape of 290,000 identical
    rows and 10,000 others, at test size)."""
    others, _, _ = blobs(n=2000, k=4, d=3, seed=5)
    X = np.vstack([np.tile(HEAVY, (60_000, 1)), others])
    return X, columns_df(spark, X, partitions=4)


def test_step_fit_collects_about_init_size_rows_whatever_the_duplication(skewed):
    """The init sample brings about initSize rows to the driver, not the 60,000 copies
    (before: every row of the heavy value's slot came, 60,000+)."""
    X, df = skewed
    m = MiniBatchKMeans(k=5, inputCols=cols(3), seed=3, fitMode="step", batchSize=8000,
                        initSize=INIT_SIZE, maxIter=1, tol=0.0, maxNoImprovement=0).fit(df)
    s = m.summary
    assert 0 < s.initRowsCollected <= 3 * INIT_SIZE
    assert s.numRows == len(X)
    # the heavy value, 97% of the rows, has its own center
    centers = np.array(m.clusterCenters())
    assert np.min(np.linalg.norm(centers - HEAVY, axis=1)) < 1.0  # the others: 70 away


def test_pass_fit_init_sample_collects_about_init_size_rows(skewed, monkeypatch, caplog):
    """The pass fit's own init sample (when its Bernoulli sample is short of initSize)
    is the same sampler: about initSize rows reach the driver."""
    X, df = skewed
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS", 100)
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS_PER_CENTER", 10)
    with caplog.at_level(logging.INFO, logger="minibatch_kmeans.spark.initialize"):
        m = MiniBatchKMeans(k=5, inputCols=cols(3), seed=3, fitMode="pass",
                            initSize=INIT_SIZE).fit(df)
    collected = [r.args[0] for r in caplog.records if r.msg.startswith("init sample:")]
    assert collected and all(0 < c <= 3 * INIT_SIZE for c in collected)
    assert m.summary.numRows == len(X)


def test_init_sample_of_duplicates_is_deterministic_and_weighted(spark, skewed):
    """The same seed and input give the same sample on 1 and 4 partitions; a repeated
    value is one row, weighted by the copies a uniform sample of initSize rows would
    hold (the weights add up to initSize)."""
    X, _ = skewed
    params = FitParams(k=5, seed=3, fit_mode="step").validate()
    samples = []
    for parts in (1, 4):
        df = columns_df(spark, X, partitions=parts)
        prep = prepare(df, resolve(df, "features", cols(3)), params.seed)
        try:
            samples.append(Initializer(prep, params).init_sample(INIT_SIZE))
        finally:
            prep.unpersist()
    (k1, X1, w1, _), (k2, X2, w2, _) = samples
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(w1, w2)
    assert len(k1) <= INIT_SIZE and w1.sum() == INIT_SIZE
    heavy = np.flatnonzero(np.all(np.abs(X1 - HEAVY) < 1e-9, axis=1))
    assert len(heavy) <= 1
    if len(heavy):  # the heavy value's share of the sample is its share of the slots drawn
        assert w1[heavy[0]] > 0.9 * INIT_SIZE


def _step_fit(prep, params, direct_result_bytes=None):
    mb = SparkMiniBatch(prep, params)
    if direct_result_bytes is not None:
        mb.direct_result_bytes = direct_result_bytes
    return mb.run()


def test_step_results_reaching_the_driver_do_not_grow_with_the_tasks(spark):
    """k=500, d=100 over 16 cached partitions: each step's partials are summed on the
    executors, so the driver receives one partial (k (d + 2) doubles, and the candidates
    on a reassignment step, as the first: every center is empty), not 16; the centers are
    bit for bit those of the partials summed on the driver (``direct_result_bytes``
    raised: today's payload, 16 partials a step)."""
    k, d = 500, 100
    X, _, _ = blobs(n=8_000, k=50, d=d, seed=2)
    df = columns_df(spark, X, partitions=16)
    params = FitParams(k=k, batch_size=2000, max_iter=1, seed=4, init_mode="random",
                       fit_mode="step", tol=0.0, max_no_improvement=None).validate()
    prep = prepare(df, resolve(df, "features", cols(d)), params.seed, partitions=16)
    try:
        assert prep.n_partitions == 16
        tree = _step_fit(prep, params)
        direct = _step_fit(prep, params, direct_result_bytes=float("inf"))
    finally:
        prep.unpersist()
    n_cand = min(k, 2000 // 2 + 1)
    bound = 8 * (k * (d + 2) + n_cand * (d + 1)) + 64 * 1024
    assert tree.summary["numSteps"] == direct.summary["numSteps"] == 4
    assert 0 < tree.summary["maxStepResultBytes"] <= bound
    assert direct.summary["maxStepResultBytes"] > 8 * bound  # 16 partials
    np.testing.assert_array_equal(tree.centers, direct.centers)
    np.testing.assert_array_equal(tree.weight_sums, direct.weight_sums)
    assert tree.summary["clusterSizes"] == direct.summary["clusterSizes"]
