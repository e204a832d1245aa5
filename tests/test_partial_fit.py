"""MiniBatchKMeansModel.partialFit: one mini-batch update per DataFrame, with a decay
factor, checked against a NumPy replay; state survives save and load."""
import numpy as np
import pytest

from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans.errors import InvalidParamError

CENTERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def batch(spark, seed, shift=0.0, n=300):
    rng = np.random.default_rng(seed)
    X = CENTERS[rng.integers(0, 3, n)] + rng.normal(size=(n, 2)) + shift
    return X, spark.createDataFrame([tuple(map(float, r)) for r in X], "a double, b double")


def replay(centers, weights, X, decay):
    """NumPy: assign to the nearest center, then StreamingKMeans' update."""
    labels = ((X[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
    W = weights * decay
    new_c, new_W = centers.copy(), W.copy()
    for j in range(len(centers)):
        rows = X[labels == j]
        if len(rows):
            new_W[j] = W[j] + len(rows)
            new_c[j] = (centers[j] * W[j] + rows.sum(0)) / new_W[j]
    return new_c, new_W


@pytest.fixture(scope="module")
def model(spark):
    _, df = batch(spark, 0)
    return MiniBatchKMeans(k=3, inputCols=["a", "b"], batchSize=100, seed=2,
                           dtype="float64").fit(df)


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_partial_fits_match_a_numpy_replay(spark, model, decay):
    C = np.array(model.clusterCenters())
    W = model.weightSums
    current = model
    for seed, shift in ((1, 0.0), (2, 1.5)):
        X, df = batch(spark, seed, shift)
        current = current.partialFit(df, decayFactor=decay)
        C, W = replay(C, W, X, decay)
        np.testing.assert_allclose(np.array(current.clusterCenters()), C, rtol=1e-10)
        np.testing.assert_allclose(current.weightSums, W, rtol=1e-12)
    assert current.numUpdates == 2 and model.numUpdates == 0  # the model is not changed
    assert not current.hasSummary


def test_state_survives_save_and_load(spark, model, tmp_path):
    _, df = batch(spark, 3)
    updated = model.partialFit(df, 0.9)
    path = str(tmp_path / "m")
    updated.write().save(path)
    loaded = MiniBatchKMeansModel.load(path)
    assert loaded.numUpdates == 1
    np.testing.assert_array_equal(loaded.weightSums, updated.weightSums)
    np.testing.assert_array_equal(np.array(loaded.clusterCenters()),
                                  np.array(updated.clusterCenters()))


def test_bad_decay_and_invalid_rows(spark, model):
    _, df = batch(spark, 4)
    for bad in (-0.1, 1.5, True, "1"):
        with pytest.raises(InvalidParamError, match="decayFactor"):
            model.partialFit(df, bad)
    dirty = df.union(spark.createDataFrame([(None, 1.0)], "a double, b double"))
    with pytest.raises(ValueError, match="1 invalid rows"):
        model.partialFit(dirty)
    skipped = model.copy().setHandleInvalid("skip").partialFit(dirty)
    np.testing.assert_allclose(skipped.weightSums, model.partialFit(df).weightSums)


def test_half_life_in_batches_and_rows(spark, model):
    X, df = batch(spark, 5)
    C, W = np.array(model.clusterCenters()), model.weightSums
    # halfLife 2 batches: each call keeps 0.5 ** 0.5 of the old weight
    by_batches = model.partialFit(df, halfLife=2)
    exp_C, exp_W = replay(C, W, X, 0.5 ** 0.5)
    np.testing.assert_allclose(by_batches.weightSums, exp_W, rtol=1e-12)
    np.testing.assert_allclose(np.array(by_batches.clusterCenters()), exp_C, rtol=1e-10)
    assert by_batches.lastUpdate["discount"] == pytest.approx(0.5 ** 0.5)
    # halfLife 600 rows, a batch of 300 rows: the old weight is discounted by 0.5 ** 0.5
    by_rows = model.partialFit(df, halfLife=600, timeUnit="rows")
    np.testing.assert_allclose(by_rows.weightSums, exp_W, rtol=1e-12)
    points = model.partialFit(df, decayFactor=0.999, timeUnit="points")  # Spark's name
    assert points.lastUpdate["discount"] == pytest.approx(0.999 ** 300)
    info = by_rows.lastUpdate
    assert info["rows"] == 300 and info["weight"] == 300.0 and sum(info["counts"]) == 300
    labels = ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
    assert info["cost"] == pytest.approx(((X - C[labels]) ** 2).sum(), rel=1e-9)
    assert info["reseeded"] == [] and model.lastUpdate is None
    for kwargs, word in (({"decayFactor": 0.5, "halfLife": 2}, "both set"),
                         ({"halfLife": 0}, "halfLife"),
                         ({"halfLife": float("inf")}, "halfLife"),
                         ({"timeUnit": "hours"}, "timeUnit"),
                         ({"reseedRatio": 1.0}, "reseedRatio")):
        with pytest.raises(InvalidParamError, match=word):
            model.partialFit(df, **kwargs)


def test_a_dying_cluster_is_reseeded_by_splitting_the_heaviest(spark):
    """Rows stop coming to one center: its weight fades until it is re-seeded next to the
    heaviest, and the two halves then separate onto the two groups that center held."""
    start = MiniBatchKMeansModel(np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]]),
                                 [100.0, 100.0, 100.0]).setInputCols(["a", "b"])
    rng = np.random.default_rng(7)
    groups = np.array([[-3.0, -3.0], [3.0, 3.0], [10.0, 0.0]])  # two groups near center 0
    current, reseeded = start, []
    for i in range(8):
        X = groups[rng.integers(0, 3, 300)] + rng.normal(scale=0.3, size=(300, 2))
        df = spark.createDataFrame([tuple(map(float, r)) for r in X], "a double, b double")
        current = current.partialFit(df, halfLife=1, reseedRatio=0.01)
        reseeded += current.lastUpdate["reseeded"]
    assert reseeded[0] == [2, 0]  # center 2 died; center 0 (the heaviest) was split
    got = sorted(map(tuple, np.round(np.array(current.clusterCenters()))))
    assert got == [(-3.0, -3.0), (3.0, 3.0), (10.0, 0.0)]
