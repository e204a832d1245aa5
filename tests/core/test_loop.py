"""The driver loop with the in-memory batch runner: the NumPy reference fit (no Spark)."""
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from minibatch_kmeans.core import rng as rng_mod
from minibatch_kmeans.core.init import kmeans_plusplus, random_init
from minibatch_kmeans.core.kernels import assign
from minibatch_kmeans.core.loop import (bucket_order, candidate_salt, local_batch_runner,
                                        max_candidates, run_steps, select_candidates)
from minibatch_kmeans.core.minibatch import (STOP_MAX_ITER, STOP_NO_IMPROVEMENT, STOP_TOL,
                                             Convergence, MiniBatchState)


def make_buckets(n, batch_size, seed):
    """Row keys and random buckets of about ``batch_size`` rows."""
    rng = np.random.default_rng(seed)
    n_buckets = max(1, int(round(n / batch_size)))
    buckets = np.array_split(rng.permutation(n), n_buckets)
    keys = rng.integers(0, 2**62, n)
    return keys, buckets


def fit(X, k, seed=0, batch_size=1000, max_steps=200, tol=0.0, max_no_improvement=None,
        ratio=0.01, sample_weight=None, init="k-means++", dtype=np.float32, centers=None,
        bucket_seed=None, **run_kw):
    """A complete local mini-batch fit: (state, stop reason, buckets)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    batch_size = min(batch_size, n)
    keys, buckets = make_buckets(n, batch_size, seed if bucket_seed is None else bucket_seed)
    if centers is None:
        g = rng_mod.generator(seed, rng_mod.INIT)
        sample = g.choice(n, size=min(n, 3 * batch_size + k), replace=False)
        w = None if sample_weight is None else sample_weight[sample]
        if init == "random":
            centers = random_init(X[sample], k, g, sample_weight=w)
        else:
            centers = kmeans_plusplus(X[sample], k, g, sample_weight=w)
    conv = Convergence(n_samples=n, batch_size=batch_size, tol=tol,
                       max_no_improvement=max_no_improvement)
    state = MiniBatchState(centers, conv, reassignment_ratio=ratio)
    runner = local_batch_runner(X, keys, buckets, seed, sample_weight=sample_weight,
                                dtype=dtype)
    reason = run_steps(state, len(buckets), max_steps, seed, runner,
                       max_candidates(k, batch_size), **run_kw)
    return state, reason, buckets


def cost(X, centers, sample_weight=None):
    d = assign(X, centers, dtype="float64")[1]
    return float(d.sum() if sample_weight is None else d @ sample_weight)


_BLOBS = {}


def blobs(n=20000, d=8, k=10, seed=0, std=1.0):
    key = (n, d, k, seed, std)
    if key not in _BLOBS:
        X, y = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std,
                          random_state=seed)
        _BLOBS[key] = (X, y)
    return _BLOBS[key]


@pytest.fixture(scope="module")
def big_blobs():
    """20000 x 8 blobs with 10 centers, and scikit-learn's KMeans inertia on them."""
    X, y = blobs(std=2.0)
    ref = KMeans(n_clusters=10, n_init=3, random_state=0).fit(X).inertia_
    return X, ref


# --- quality and stop reasons -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_cost_within_one_percent_of_sklearn_kmeans(big_blobs, dtype):
    X, ref = big_blobs
    state, reason, buckets = fit(X, 10, seed=1, batch_size=1000, max_steps=200, dtype=dtype)
    assert reason == STOP_MAX_ITER and state.step == 200
    assert cost(X, state.centers) <= 1.01 * ref


def test_fit_with_early_stopping_within_one_percent(big_blobs):
    X, ref = big_blobs
    state, reason, _ = fit(X, 10, seed=2, batch_size=1000, max_steps=1000,
                           max_no_improvement=10)
    assert reason == STOP_NO_IMPROVEMENT and state.step < 1000
    assert cost(X, state.centers) <= 1.01 * ref


def test_stop_reason_max_iter():
    X, _ = blobs(n=3000, k=5)
    state, reason, _ = fit(X, 5, batch_size=100, max_steps=73, tol=0.0,
                           max_no_improvement=None)
    assert reason == STOP_MAX_ITER == "maxIter"
    assert state.step == 73 and len(state.history) == 73


def test_stop_reason_max_no_improvement():
    X, _ = blobs(n=3000, k=5)
    state, reason, _ = fit(X, 5, batch_size=100, max_steps=5000, max_no_improvement=3)
    assert reason == STOP_NO_IMPROVEMENT == "maxNoImprovement"
    assert state.step < 5000
    assert state.convergence.no_improvement == 3


def test_stop_reason_tol():
    X, _ = blobs(n=3000, k=5)
    tol = 1e-4 * float(np.mean(X.var(axis=0)))  # as the Spark fit scales it
    state, reason, _ = fit(X, 5, batch_size=100, max_steps=5000, tol=tol,
                           max_no_improvement=None)
    assert reason == STOP_TOL == "tol"
    assert state.step < 5000
    assert state.history[-1].center_shift <= tol
    assert all(r.center_shift > tol for r in state.history[1:-1])


def test_run_steps_at_max_steps_does_nothing():
    X, _ = blobs(n=1000, k=3)
    state, _, buckets = fit(X, 3, batch_size=100, max_steps=5)
    c = state.centers.copy()
    calls = []
    reason = run_steps(state, len(buckets), 5, 0, lambda *a: calls.append(a), 3)
    assert reason == STOP_MAX_ITER and not calls
    np.testing.assert_array_equal(state.centers, c)


def test_should_stop_interrupts_and_on_step_sees_every_step():
    X, _ = blobs(n=2000, k=4)
    records = []
    state, reason, _ = fit(X, 4, batch_size=100, max_steps=100, on_step=records.append,
                           should_stop=lambda: len(records) >= 7)
    assert reason == "interrupted"
    assert state.step == 7 and [r.step for r in records] == list(range(1, 8))
    assert records == state.history


def test_more_steps_never_score_worse():
    # as scikit-learn checks: a long fit is at least as good as a single step
    X, _ = blobs(n=5000, d=5, k=8, seed=3, std=1.5)
    for seed in range(3):
        one, _, _ = fit(X, 8, seed=seed, batch_size=200, max_steps=1)
        long, _, _ = fit(X, 8, seed=seed, batch_size=200, max_steps=300)
        assert one.step == 1 and long.step == 300
        assert cost(X, long.centers) <= cost(X, one.centers)


def test_resuming_gives_the_same_fit_as_running_at_once():
    X, _ = blobs(n=3000, k=6)
    keys, buckets = make_buckets(len(X), 100, 0)
    c0 = kmeans_plusplus(X[:500], 6, np.random.default_rng(0))

    def new_state():
        return MiniBatchState(c0, Convergence(len(X), 100, max_no_improvement=None), 0.05)

    runner = local_batch_runner(X, keys, buckets, 11)
    once = new_state()
    run_steps(once, len(buckets), 95, 11, runner, max_candidates(6, 100))
    twice = new_state()
    run_steps(twice, len(buckets), 40, 11, runner, max_candidates(6, 100))
    run_steps(twice, len(buckets), 95, 11, runner, max_candidates(6, 100))
    np.testing.assert_array_equal(once.centers, twice.centers)
    np.testing.assert_array_equal(once.weight_sums, twice.weight_sums)


# --- determinism and randomness ---------------------------------------------------------


def test_same_seed_gives_identical_centers():
    X, _ = blobs(n=4000, k=6)
    a, ra, _ = fit(X, 6, seed=5, batch_size=200, max_steps=100, ratio=0.1)
    b, rb, _ = fit(X, 6, seed=5, batch_size=200, max_steps=100, ratio=0.1)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.weight_sums, b.weight_sums)
    assert ra == rb
    assert [r.bucket for r in a.history] == [r.bucket for r in b.history]
    c, _, _ = fit(X, 6, seed=6, batch_size=200, max_steps=100, ratio=0.1)
    assert not np.array_equal(a.centers, c.centers)


def test_bucket_order_is_a_fresh_permutation_per_epoch():
    n_buckets = 20
    orders = [bucket_order(7, e, n_buckets) for e in range(6)]
    for o in orders:
        np.testing.assert_array_equal(np.sort(o), np.arange(n_buckets))
    assert len({tuple(o) for o in orders}) == len(orders)
    np.testing.assert_array_equal(bucket_order(7, 3, n_buckets), orders[3])
    assert not np.array_equal(bucket_order(8, 0, n_buckets), orders[0])


def test_each_epoch_visits_every_bucket_once():
    X, _ = blobs(n=2000, k=4)
    state, _, buckets = fit(X, 4, batch_size=100, max_steps=60, seed=3)
    nb = len(buckets)
    assert nb == 20
    visited = [r.bucket for r in state.history]
    for e in range(3):
        assert sorted(visited[e * nb:(e + 1) * nb]) == list(range(nb))
        assert all(r.epoch == e for r in state.history[e * nb:(e + 1) * nb])
        np.testing.assert_array_equal(visited[e * nb:(e + 1) * nb], bucket_order(3, e, nb))
    assert visited[:nb] != visited[nb:2 * nb]


def test_select_candidates_is_independent_of_row_order():
    rng = np.random.default_rng(0)
    n, m = 500, 9
    X = rng.normal(size=(n, 3))
    keys = rng.integers(0, 2**62, n)
    salt = candidate_salt(42, 17)
    k1, r1 = select_candidates(keys, X, salt, m)
    assert len(k1) == m and r1.shape == (m, 3)
    assert np.all(np.diff(k1.astype(np.float64)) >= 0) and len(np.unique(k1)) == m
    # they are the m smallest per-step keys
    all_rk = rng_mod.keyed_uint64(keys, salt)
    np.testing.assert_array_equal(k1, np.sort(all_rk)[:m])
    for trial in range(5):
        p = rng.permutation(n)
        k2, r2 = select_candidates(keys[p], X[p], salt, m)
        np.testing.assert_array_equal(k2, k1)
        np.testing.assert_array_equal(r2, r1)
    # a different step draws different rows
    k3, _ = select_candidates(keys, X, candidate_salt(42, 18), m)
    assert set(k3.tolist()) != set(k1.tolist())


@pytest.mark.parametrize("dtype,d", [(np.float32, 32), (np.float32, 3), (np.float64, 5)])
def test_row_keys_follow_row_content_not_order(dtype, d):
    """Equal rows get equal keys wherever they are (blocks included), distinct rows
    distinct keys, another seed other keys; one changed bit changes the key."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(70_000, d)).astype(dtype)  # more than one block of rows
    X[-1] = X[0]
    keys = rng_mod.row_keys(X, 7)
    assert keys.dtype == np.int64 and keys[-1] == keys[0]
    assert len(np.unique(keys)) == len(X) - 1
    p = rng.permutation(len(X))
    np.testing.assert_array_equal(rng_mod.row_keys(X[p], 7), keys[p])
    np.testing.assert_array_equal(rng_mod.row_keys(np.asfortranarray(X), 7), keys)
    assert np.mean(rng_mod.row_keys(X, 8) == keys) == 0
    Y = X[:100].astype(np.float32)
    np.testing.assert_array_equal(rng_mod.row_keys(Y, 7), keys[:100])  # float32 bits
    Y.view(np.uint32)[:, d - 1] ^= 1
    assert np.all(rng_mod.row_keys(Y, 7) != keys[:100])
    assert rng_mod.row_keys(X[:0], 7).shape == (0,)


def test_select_candidates_edge_sizes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 2)).astype(np.float32)
    keys = rng.integers(0, 2**62, 5)
    k, r = select_candidates(keys, X, candidate_salt(0, 0), 0)
    assert k.shape == (0,) and r.shape == (0, 2)
    k, r = select_candidates(keys, X, candidate_salt(0, 0), 50)  # more than rows: all
    assert len(k) == 5 and r.dtype == np.float64
    assert sorted(map(tuple, r)) == sorted(map(tuple, X.astype(np.float64)))
    k, r = select_candidates(keys[:0], X[:0], candidate_salt(0, 0), 3)
    assert k.shape == (0,) and r.shape == (0, 2)


def test_candidates_do_not_depend_on_how_a_bucket_is_ordered():
    # the runner over a bucket and over the same bucket shuffled selects the same rows
    X, _ = blobs(n=1000, k=3)
    keys, buckets = make_buckets(1000, 1000, 0)
    shuffled = [np.random.default_rng(1).permutation(b) for b in buckets]
    c = X[:3]
    a = local_batch_runner(X, keys, buckets, 5)(0, c, 4, 9)
    b = local_batch_runner(X, keys, shuffled, 5)(0, c, 4, 9)
    np.testing.assert_array_equal(a.cand_keys, b.cand_keys)
    np.testing.assert_array_equal(a.cand_rows, b.cand_rows)
    np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12)


def test_max_candidates():
    assert max_candidates(10, 1000) == 10
    assert max_candidates(100, 10) == 6
    assert max_candidates(5, 1) == 1


# --- reassignment in the loop -----------------------------------------------------------


def zeroed_blobs(seed):
    X, _ = make_blobs(n_samples=100, centers=5, random_state=seed)
    X[::2, :] = 0
    return X


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("batch_size", [10, 200])
def test_half_zero_rows_do_not_collapse_centers(seed, batch_size):
    # scikit-learn's test_minibatch_sensible_reassign (batch 200 > 100 rows included)
    X = zeroed_blobs(seed)
    state, _, _ = fit(X, 20, seed=seed, batch_size=batch_size, init="random",
                      max_steps=100 * 100 // min(batch_size, 100), max_no_improvement=10)
    num_non_zero = int(state.centers.any(axis=1).sum())
    assert num_non_zero > 9, num_non_zero
    assert any(r.reassigned for r in state.history)


@pytest.mark.parametrize("ratio", [0.01, 1.0, 10.0, 1000.0])
def test_many_reassignments_do_not_crash(ratio):
    # scikit-learn's test_minibatch_with_many_reassignments: 100 clusters, batch 10
    X, _ = make_blobs(n_samples=100, centers=3, n_features=5, random_state=42)
    state, reason, _ = fit(X, 100, seed=42, batch_size=10, max_steps=300, ratio=ratio,
                           max_no_improvement=10, centers=X.copy())
    assert state.centers.shape == (100, 5)
    assert np.all(np.isfinite(state.centers))
    assert np.all(state.weight_sums >= 0)
    assert reason in (STOP_MAX_ITER, STOP_NO_IMPROVEMENT)
    assert all(r.reassigned <= 5 for r in state.history)  # at most half a batch of 10


def test_large_ratio_with_big_batches_does_not_crash():
    X, _ = blobs(n=3000, k=4)
    state, _, _ = fit(X, 4, batch_size=1000, max_steps=30, ratio=50.0)
    assert np.all(np.isfinite(state.centers))


# --- weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_weights_equal_no_weights(dtype):
    X, _ = blobs(n=4000, k=6, std=2.0)
    kw = dict(seed=3, batch_size=200, max_steps=150, ratio=0.05, max_no_improvement=10,
              dtype=dtype)
    a, ra, _ = fit(X, 6, **kw)
    b, rb, _ = fit(X, 6, sample_weight=np.ones(len(X)), **kw)
    assert ra == rb and a.step == b.step
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.weight_sums, b.weight_sums, rtol=1e-12)


def test_scaling_all_weights_changes_nothing():
    X, _ = blobs(n=4000, k=6, std=2.0)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    kw = dict(seed=4, batch_size=200, max_steps=150, ratio=0.05, max_no_improvement=10)
    a, ra, _ = fit(X, 6, sample_weight=w, **kw)
    for scale in (7.0, 1e-3):
        b, rb, _ = fit(X, 6, sample_weight=w * scale, **kw)
        assert ra == rb and a.step == b.step
        np.testing.assert_allclose(a.centers, b.centers, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(b.weight_sums, a.weight_sums * scale, rtol=1e-9)
        np.testing.assert_allclose([r.batch_inertia for r in b.history],
                                   [r.batch_inertia for r in a.history], rtol=1e-9)


def test_weighted_fit_minimises_weighted_cost():
    # heavy weights on one blob pull the weighted optimum; the fit follows them
    X, y = blobs(n=4000, d=2, k=4, seed=5, std=1.5)
    w = np.where(y == 0, 20.0, 1.0)
    c0 = kmeans_plusplus(X, 4, np.random.default_rng(0), sample_weight=w)
    ref = KMeans(n_clusters=4, n_init=3, random_state=0).fit(X, sample_weight=w)
    state, _, _ = fit(X, 4, seed=1, batch_size=200, max_steps=400, sample_weight=w,
                      centers=c0)
    assert cost(X, state.centers, w) <= 1.02 * cost(X, ref.cluster_centers_, w)
