"""Center initialisation: greedy k-means++, random, k-means|| (no Spark)."""
import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.metrics import v_measure_score

from minibatch_kmeans.core import init as init_mod
from minibatch_kmeans.core.init import (complete_with_kmeans_plusplus, kmeans_parallel,
                                        kmeans_plusplus, random_init)
from minibatch_kmeans.core.kernels import assign
from minibatch_kmeans.errors import MiniBatchKMeansError

INITS = [kmeans_plusplus, random_init, kmeans_parallel]


def separated_blobs(n_centers=6, n_samples=600, n_features=4, seed=0):
    """Blobs far apart relative to their spread: every sensible init finds each one."""
    X, y = make_blobs(n_samples=n_samples, centers=n_centers, n_features=n_features,
                      cluster_std=0.3, center_box=(-50, 50), random_state=seed)
    return X, y


def row_indices(X, centers):
    """Index of the row of X equal to each center (asserting one exists)."""
    eq = (X[None, :, :] == centers[:, None, :]).all(axis=2)  # (k, n)
    assert eq.any(axis=1).all(), "a center is not a row of X"
    return eq.argmax(axis=1)


def assert_distinct_rows(X, centers, k):
    assert centers.shape == (k, X.shape[1])
    assert centers.dtype == np.float64
    idx = row_indices(X, centers)
    assert len(set(idx.tolist())) == k
    assert len(np.unique(centers, axis=0)) == k


def seed_inertia(X, centers):
    return float(assign(X, centers, dtype="float64")[1].sum())


# --- greedy k-means++ ------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, 25])
def test_kmeans_plusplus_picks_k_distinct_rows(k):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    for seed in range(5):
        c = kmeans_plusplus(X, k, np.random.default_rng(seed))
        assert_distinct_rows(X, c, k)


def test_kmeans_plusplus_with_k_equal_to_distinct_rows_takes_each_once():
    # 4 distinct rows, each repeated: a greedy k-means++ must take all four values
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0], [3.0, 3.0]])
    X = np.repeat(base, [10, 1, 30, 5], axis=0)
    for seed in range(20):
        c = kmeans_plusplus(X, 4, np.random.default_rng(seed))
        assert sorted(map(tuple, c)) == sorted(map(tuple, base))


def test_kmeans_plusplus_is_deterministic_per_seed():
    X, _ = separated_blobs()
    a = kmeans_plusplus(X, 6, np.random.default_rng(42))
    b = kmeans_plusplus(X, 6, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    others = [kmeans_plusplus(X, 6, np.random.default_rng(s)) for s in range(5)]
    assert any(not np.array_equal(a, o) for o in others)


def test_kmeans_plusplus_does_not_mutate_x_and_returns_a_copy():
    X, _ = separated_blobs()
    X0 = X.copy()
    c = kmeans_plusplus(X, 3, np.random.default_rng(0))
    c[:] = 0.0
    np.testing.assert_array_equal(X, X0)


def test_kmeans_plusplus_finds_one_center_per_separated_blob():
    X, y = separated_blobs(n_centers=8)
    for seed in range(10):
        c = kmeans_plusplus(X, 8, np.random.default_rng(seed))
        blob_of_center = y[row_indices(X, c)]
        assert sorted(blob_of_center.tolist()) == list(range(8)), seed


def outliers_with_zero_weight(seed=0):
    """Half the rows: blobs with weight 1. Other half: far outliers with weight 0."""
    X, y = separated_blobs(n_centers=5, n_samples=300, seed=seed)
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1, 1, size=X.shape) * 1e4 + 1e5
    Xall = np.vstack([X, out])
    w = np.r_[np.ones(len(X)), np.zeros(len(out))]
    perm = rng.permutation(len(Xall))  # interleave, so zero-weight rows are everywhere
    return Xall[perm], w[perm], len(X)


@pytest.mark.parametrize("fn", [kmeans_plusplus, random_init])
def test_zero_weight_rows_are_never_picked(fn):
    X, w, _ = outliers_with_zero_weight()
    for seed in range(40):
        for k in (1, 5, 12):
            c = fn(X, k, np.random.default_rng(seed), sample_weight=w)
            idx = row_indices(X, c)
            assert np.all(w[idx] > 0), (seed, k)
            assert len(set(idx.tolist())) == k


def test_kmeans_parallel_ignores_zero_weight_rows():
    X, w, _ = outliers_with_zero_weight()
    for seed in range(20):
        c = kmeans_parallel(X, 5, np.random.default_rng(seed), sample_weight=w)
        assert np.abs(c).max() < 1e3, seed  # no center anywhere near the outliers


def test_kmeans_plusplus_zero_weight_rows_at_the_end():
    # zero-weight rows after the last positive one (the cumulative-sum edge)
    X, y = separated_blobs(n_centers=3, n_samples=60)
    X = np.vstack([X, np.full((60, X.shape[1]), 1e6)])
    w = np.r_[np.ones(60), np.zeros(60)]
    for seed in range(30):
        c = kmeans_plusplus(X, 3, np.random.default_rng(seed), sample_weight=w)
        assert np.all(w[row_indices(X, c)] > 0)


@pytest.mark.parametrize("fn", [kmeans_plusplus, random_init])
def test_first_pick_is_proportional_to_weight(fn):
    X = np.arange(8.0).reshape(4, 2)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    n = 4000
    hits = np.zeros(4)
    for seed in range(n):
        c = fn(X, 1, np.random.default_rng(seed), sample_weight=w)
        hits[row_indices(X, c)[0]] += 1
    # binomial standard deviation is at most 0.008 here: 0.03 is ~4 sigma
    np.testing.assert_allclose(hits / n, w / w.sum(), atol=0.03)


def test_kmeans_plusplus_quality_close_to_sklearn():
    X, _ = make_blobs(n_samples=3000, centers=20, n_features=5, cluster_std=2.0,
                      random_state=3)
    ours, theirs = [], []
    for seed in range(10):
        ours.append(seed_inertia(X, kmeans_plusplus(X, 20, np.random.default_rng(seed))))
        c, _ = sk_kmeans_plusplus(X, 20, random_state=seed)
        theirs.append(seed_inertia(X, c))
    # same algorithm, different random streams: averages within 25% of each other
    assert np.mean(ours) <= 1.25 * np.mean(theirs)
    assert np.mean(theirs) <= 1.25 * np.mean(ours)


def test_kmeans_plusplus_weighted_quality_close_to_sklearn():
    X, _ = make_blobs(n_samples=2000, centers=10, n_features=3, cluster_std=1.5,
                      random_state=4)
    w = np.random.default_rng(0).uniform(0.1, 3.0, len(X))

    def winertia(c):
        return float(assign(X, c, dtype="float64")[1] @ w)

    ours = np.mean([winertia(kmeans_plusplus(X, 10, np.random.default_rng(s), sample_weight=w))
                    for s in range(10)])
    theirs = np.mean([winertia(sk_kmeans_plusplus(X, 10, sample_weight=w, random_state=s)[0])
                      for s in range(10)])
    assert ours <= 1.25 * theirs


def test_greedy_beats_vanilla_kmeans_plusplus_on_average():
    X, _ = make_blobs(n_samples=2000, centers=15, n_features=4, cluster_std=2.0,
                      random_state=5)
    greedy = np.mean([seed_inertia(X, kmeans_plusplus(X, 15, np.random.default_rng(s)))
                      for s in range(15)])
    vanilla = np.mean([seed_inertia(X, kmeans_plusplus(X, 15, np.random.default_rng(s),
                                                       n_local_trials=1))
                       for s in range(15)])
    assert greedy < vanilla


def test_kmeans_plusplus_docstring_example():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    c = kmeans_plusplus(X, 2, np.random.default_rng(0))
    assert sorted(round(float(v)) for v in c[:, 0]) == [0, 10]


# --- random ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 10, 200])
def test_random_init_picks_k_distinct_rows(k):
    X = np.random.default_rng(1).normal(size=(200, 3))
    for seed in range(3):
        assert_distinct_rows(X, random_init(X, k, np.random.default_rng(seed)), k)


def test_random_init_is_deterministic_per_seed():
    X = np.random.default_rng(1).normal(size=(100, 3))
    np.testing.assert_array_equal(random_init(X, 5, np.random.default_rng(9)),
                                  random_init(X, 5, np.random.default_rng(9)))


def test_random_init_with_as_many_positive_rows_as_k_takes_them_all():
    X = np.arange(20.0).reshape(10, 2)
    w = np.zeros(10)
    w[[1, 4, 7]] = [0.1, 5.0, 1.0]
    c = random_init(X, 3, np.random.default_rng(0), sample_weight=w)
    assert sorted(row_indices(X, c).tolist()) == [1, 4, 7]


# --- k-means|| -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_parallel_recovers_separated_blobs(seed):
    X, y = separated_blobs(n_centers=7, n_samples=1400, seed=seed)
    c = kmeans_parallel(X, 7, np.random.default_rng(seed))
    assert c.shape == (7, X.shape[1])
    labels, _ = assign(X, c, dtype="float64")
    assert v_measure_score(y, labels) == 1.0


def test_kmeans_parallel_covers_many_blobs_in_high_dimension():
    # 50 blobs in 32-D: one greedy k-means++ reduction of the candidates missed a blob for
    # 3 of these 20 seeds (and mini-batch steps never recover); the best of 3 misses none.
    rng = np.random.default_rng(0)
    centers = rng.uniform(-10, 10, (50, 32))
    X = centers[rng.integers(0, 50, 60_000)] + rng.normal(0, 1, (60_000, 32))
    missed = []
    for seed in range(20):
        c = kmeans_parallel(X, 50, np.random.default_rng(seed))
        nearest = assign(centers, c, dtype="float64")[0]
        missed.append(50 - len(np.unique(nearest)))
    assert missed == [0] * 20


def test_kmeans_parallel_is_deterministic_per_seed():
    X, _ = separated_blobs()
    np.testing.assert_array_equal(kmeans_parallel(X, 6, np.random.default_rng(3)),
                                  kmeans_parallel(X, 6, np.random.default_rng(3)))


def test_kmeans_parallel_with_more_steps_and_custom_oversampling():
    X, y = separated_blobs(n_centers=5, n_samples=500)
    c = kmeans_parallel(X, 5, np.random.default_rng(0), init_steps=5, oversampling=3.0)
    assert v_measure_score(y, assign(X, c, dtype="float64")[0]) == 1.0


def test_kmeans_parallel_with_too_few_distinct_candidates(monkeypatch):
    # 6 distinct rows, heavily duplicated; almost no oversampling, so the candidates
    # are fewer than k and the init must complete them from the sample
    base = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0], [9.0, 1.0], [1.0, 9.0]])
    X = np.repeat(base, [50, 3, 20, 7, 40, 1], axis=0)
    X = X[np.random.default_rng(0).permutation(len(X))]
    calls = []
    real = init_mod.complete_with_kmeans_plusplus

    def spy(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(init_mod, "complete_with_kmeans_plusplus", spy)
    for seed in range(10):
        c = kmeans_parallel(X, 6, np.random.default_rng(seed), init_steps=1,
                            oversampling=1e-3)
        assert sorted(map(tuple, c)) == sorted(map(tuple, base))
    assert calls and all(n < 6 for n in calls)  # the completion path was exercised


def test_kmeans_parallel_with_duplicates_and_normal_oversampling():
    base = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    X = np.repeat(base, 25, axis=0)
    for seed in range(10):
        c = kmeans_parallel(X, 4, np.random.default_rng(seed))
        assert sorted(map(tuple, c)) == sorted(map(tuple, base))


def test_complete_with_kmeans_plusplus_adds_distinct_rows():
    X = np.arange(30.0).reshape(15, 2)
    w = np.ones(15)
    c = complete_with_kmeans_plusplus(X, w, X[[0, 3]], 6, np.random.default_rng(0))
    assert c.shape == (6, 2)
    np.testing.assert_array_equal(c[:2], X[[0, 3]])
    assert_distinct_rows(X, c, 6)


def test_complete_with_kmeans_plusplus_raises_on_too_few_distinct_rows():
    base = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    X = np.repeat(base, 10, axis=0)
    with pytest.raises(MiniBatchKMeansError) as e:
        complete_with_kmeans_plusplus(X, np.ones(len(X)), np.empty((0, 2)), 5,
                                      np.random.default_rng(0))
    assert isinstance(e.value, ValueError)
    assert "k=5" in str(e.value) and "3" in str(e.value)


def test_complete_with_kmeans_plusplus_counts_only_positive_weight_rows():
    X = np.arange(12.0).reshape(6, 2)  # 6 distinct rows, only 3 with positive weight
    w = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    with pytest.raises(MiniBatchKMeansError):
        complete_with_kmeans_plusplus(X, w, X[[0]], 4, np.random.default_rng(0))
    c = complete_with_kmeans_plusplus(X, w, X[[0]], 3, np.random.default_rng(0))
    assert sorted(row_indices(X, c).tolist()) == [0, 2, 4]


def test_kmeans_parallel_raises_on_fewer_distinct_rows_than_k():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]), 10, axis=0)
    with pytest.raises(MiniBatchKMeansError) as e:
        kmeans_parallel(X, 4, np.random.default_rng(0))
    assert isinstance(e.value, ValueError)
    assert "k=4" in str(e.value)


# --- bad parameters --------------------------------------------------------------------


@pytest.mark.parametrize("fn", INITS)
@pytest.mark.parametrize("k", [0, -3])
def test_bad_k_raises(fn, k):
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(np.ones((10, 2)), k, np.random.default_rng(0))
    assert isinstance(e.value, ValueError)
    assert f"k must be >= 1, got {k}" in str(e.value)


@pytest.mark.parametrize("fn", INITS)
def test_k_larger_than_positive_rows_raises(fn):
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(X, 11, np.random.default_rng(0))
    assert isinstance(e.value, ValueError) and "k=11" in str(e.value) and "10" in str(e.value)
    w = np.r_[np.ones(3), np.zeros(7)]
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(X, 4, np.random.default_rng(0), sample_weight=w)
    assert "k=4" in str(e.value) and "3" in str(e.value)


@pytest.mark.parametrize("fn", INITS)
def test_all_zero_weights_raise(fn):
    with pytest.raises(MiniBatchKMeansError):
        fn(np.arange(20.0).reshape(10, 2), 1, np.random.default_rng(0),
           sample_weight=np.zeros(10))


@pytest.mark.parametrize("fn", INITS)
@pytest.mark.parametrize("shape", [(9,), (11,), (10, 1)])
def test_wrong_weight_shape_raises(fn, shape):
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(np.arange(20.0).reshape(10, 2), 2, np.random.default_rng(0),
           sample_weight=np.ones(shape))
    assert isinstance(e.value, ValueError)
    assert str(shape) in str(e.value) and "(10,)" in str(e.value)


@pytest.mark.parametrize("fn", INITS)
def test_one_dimensional_x_raises(fn):
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(np.arange(10.0), 2, np.random.default_rng(0))
    assert isinstance(e.value, ValueError) and "(10,)" in str(e.value)


@pytest.mark.parametrize("fn", INITS)
@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_negative_or_nan_weights_raise_package_error(fn, bad):
    X = np.random.default_rng(0).normal(size=(50, 3))
    w = np.ones(50)
    w[7] = bad
    with pytest.raises(MiniBatchKMeansError) as e:
        fn(X, 3, np.random.default_rng(0), sample_weight=w)
    assert isinstance(e.value, ValueError)
    assert "sample_weight" in str(e.value)


def test_kmeans_parallel_bad_init_steps_raises():
    with pytest.raises(MiniBatchKMeansError) as e:
        kmeans_parallel(np.arange(20.0).reshape(10, 2), 2, np.random.default_rng(0),
                        init_steps=0)
    assert isinstance(e.value, ValueError) and "init_steps" in str(e.value) and "0" in str(e.value)


# --- large k: the bounded seeding and Lloyd (issue 18) ---------------------------------


def test_large_k_seeding_and_reduction_keep_their_quality(monkeypatch):
    """Above SEEDING_FLOPS, k-means++ seeds in batches (one chunked GEMM a round) and the
    candidates' reduction runs once, its Lloyd in float32 and capped by LLOYD_FLOPS (at
    k=10,000 greedy seeding and Lloyd took minutes); at moderate k, forced onto that path,
    the result is as good: every blob found, cost within 2% of the greedy path's."""
    X, y = separated_blobs(n_centers=60, n_samples=1800, n_features=8, seed=3)
    w = np.random.default_rng(0).integers(1, 5, len(X)).astype(float)
    greedy = init_mod.reduce_candidates(X, w, 60, np.random.default_rng(1))
    monkeypatch.setattr(init_mod, "SEEDING_FLOPS", 0.0)
    monkeypatch.setattr(init_mod, "LLOYD_FLOPS", 0.0)  # 3 iterations at most
    bounded = init_mod.reduce_candidates(X, w, 60, np.random.default_rng(1))
    again = init_mod.reduce_candidates(X, w, 60, np.random.default_rng(1))
    np.testing.assert_array_equal(bounded, again)  # deterministic per seed
    labels = assign(X, bounded, dtype="float64")[0]
    assert v_measure_score(y, labels) > 0.99
    cost = float(assign(X, bounded, dtype="float64")[1] @ w)
    assert cost <= 1.02 * float(assign(X, greedy, dtype="float64")[1] @ w)
    seeds = kmeans_plusplus(X, 60, np.random.default_rng(2), sample_weight=w)
    assert_distinct_rows(X, seeds, 60)
    assert v_measure_score(y, assign(X, seeds, dtype="float64")[0]) > 0.95
