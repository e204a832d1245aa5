"""The pass fit's core: one task's mini-batch epochs, the merge, and the pass loop."""
import numpy as np
import pytest

from helpers import blobs, sq_cost
from minibatch_kmeans.core import rng as rng_mod
from minibatch_kmeans.core.kernels import batch_stats
from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState, minibatch_update
from minibatch_kmeans.core.passes import (batches_in_order, lloyd_step, merge_epochs,
                                          minibatch_epochs, run_passes)


def _plain_loop(X, C, batch, epochs, salt, keys):
    """Sculley's loop written out: the reference of one task's epochs."""
    W = np.zeros(len(C))
    for e in range(epochs):
        order = np.argsort(rng_mod.keyed_uint64(keys, rng_mod.salt(salt, e)), kind="stable")
        for start in range(0, len(X), batch):
            s = batch_stats(X[order[start:start + batch]], C, dtype="float64")
            C, W = minibatch_update(C, W, s.sums, s.weights)
    return C, W


def test_one_task_is_sculleys_loop():
    X, _, C = blobs(n=1000, k=3, d=2, seed=3)
    keys = np.arange(len(X), dtype=np.int64) * 7919
    C0 = X[:3] + 1.0
    r = minibatch_epochs(X, C0, np.zeros(3), 64, 3, 42, keys=keys, max_no_improvement=None)
    assert (r.epochs, r.steps, r.stop_reason, r.rows) == (3, 3 * 16, "maxIter", 1000)
    C_ref, W_ref = _plain_loop(X, C0, 64, 3, 42, keys)
    # what the task returns is what its moves added to the running means
    np.testing.assert_allclose(r.stats.weights, W_ref)
    np.testing.assert_allclose(r.stats.sums, W_ref[:, None] * C_ref, rtol=1e-12)
    C1, _ = minibatch_update(C0, np.zeros(3), r.stats.sums, r.stats.weights)
    np.testing.assert_allclose(C1, C_ref, rtol=1e-12)
    # the order depends on the keys, not on where the rows are
    perm = np.random.default_rng(0).permutation(len(X))
    r2 = minibatch_epochs(X[perm], C0, np.zeros(3), 64, 3, 42, keys=keys[perm],
                          max_no_improvement=None)
    np.testing.assert_allclose(r2.stats.sums, r.stats.sums, rtol=1e-12)


@pytest.mark.parametrize("n,batch,top", [(0, 5, 10), (1, 5, 10), (10, 3, 4), (1000, 7, 50),
                                         (5000, 10, 2 ** 64 - 1), (20000, 64, 2 ** 63),
                                         (3000, 1, 3)])
def test_batches_in_order_are_the_stable_argsort_in_runs(n, batch, top):
    """Sorting lazily, chunk by chunk, gives the stable argsort exactly: ties (duplicate
    rows share a key) in index order, the extreme values, few distinct values."""
    h = np.random.default_rng(n).integers(0, top, size=n, dtype=np.uint64)
    if n > 4:
        h[:3], h[3] = np.uint64(top - 1), 0
    runs = list(batches_in_order(h, batch))
    assert all(len(r) == batch for r in runs[:-1])
    assert 0 < len(runs[-1]) <= batch if runs else n == 0
    order = np.concatenate(runs) if runs else np.empty(0, dtype=np.intp)
    np.testing.assert_array_equal(order, np.argsort(h, kind="stable"))


def test_many_batches_per_epoch_follow_the_plain_loop():
    """Epochs of many batches (the order is sorted lazily, several chunks per epoch) are
    still Sculley's loop over the stable key order."""
    X, _, _ = blobs(n=3000, k=3, d=2, seed=5)
    keys = np.arange(len(X), dtype=np.int64) * 104729
    C0 = X[:3] + 0.5
    r = minibatch_epochs(X, C0, np.zeros(3), 10, 2, 7, keys=keys, max_no_improvement=None)
    assert r.steps == 2 * 300
    C_ref, W_ref = _plain_loop(X, C0, 10, 2, 7, keys)
    np.testing.assert_allclose(r.stats.weights, W_ref)
    np.testing.assert_allclose(r.stats.sums, W_ref[:, None] * C_ref, rtol=1e-10)


def test_early_stop_and_reassignment():
    X, _, C = blobs(n=4000, k=4, d=2, seed=1)
    keys = np.arange(len(X), dtype=np.int64)
    stopped = minibatch_epochs(X, C + 0.1, np.zeros(4), 100, 50, 1, keys=keys,
                               max_no_improvement=3)
    assert stopped.stop_reason == "maxNoImprovement" and stopped.epochs < 50
    # all four centers start in one blob: reassignment moves the starved ones out
    start = np.repeat(X[:1], 4, axis=0) + np.arange(4)[:, None] * 1e-3
    kept = minibatch_epochs(X, start, np.zeros(4), 100, 3, 1, keys=keys,
                            max_no_improvement=None)
    moved = minibatch_epochs(X, start, np.zeros(4), 100, 3, 1, keys=keys,
                             max_no_improvement=None, reassignment_ratio=0.3)
    cost = {}
    for name, r in (("kept", kept), ("moved", moved)):
        Cm, _ = minibatch_update(start, np.zeros(4), r.stats.sums, r.stats.weights)
        cost[name] = sq_cost(X, Cm)
    assert cost["moved"] < 0.5 * cost["kept"]


def test_merge_is_order_free():
    X, _, C = blobs(n=900, k=3, d=2, seed=2)
    keys = np.arange(len(X), dtype=np.int64)
    parts = [minibatch_epochs(X[i::3], C, np.zeros(3), 50, 1, 5, keys=keys[i::3])
             for i in range(3)]
    a, info = merge_epochs(parts)
    b, _ = merge_epochs(parts[::-1])
    np.testing.assert_array_equal(a.sums, b.sums)
    assert info["sets"] == 3 and info["rows"] == 900 and info["steps"] == sum(
        p.steps for p in parts)


def test_lloyd_step_gain_is_the_cost_decrease_for_the_same_assignment():
    X, _, C = blobs(n=600, k=3, d=2, seed=4, spread=2.0)
    C0 = C + 0.7
    s = batch_stats(X, C0, dtype="float64")
    new, gain = lloyd_step(C0, s)
    labels = ((X[:, None] - C0[None]) ** 2).sum(-1).argmin(1)
    same_assignment = sum(((X[labels == c] - new[c]) ** 2).sum() for c in range(3))
    assert s.inertia - same_assignment == pytest.approx(gain, rel=1e-9)
    assert sq_cost(X, new) <= same_assignment + 1e-9


def _loop(X, C0, **kw):
    state = MiniBatchState(C0, Convergence(len(X), 100), 0.0)
    keys = np.arange(len(X), dtype=np.int64)

    def epochs_pass(C, W, n_cand):
        return merge_epochs([minibatch_epochs(X, C, W, 100, 1, 3, keys=keys)], n_cand)

    def exact_pass(C):
        return batch_stats(X, C, dtype="float64")

    out = run_passes(state, epochs_pass, exact_pass, n_candidates=0, **kw)
    return state, out


def test_pass_loop_stops_on_tol_or_the_pass_limit():
    X, _, C = blobs(n=2000, k=3, d=2, seed=6, spread=1.0)
    state, out = _loop(X, C + 0.5, max_passes=4, tol=1e-4)
    assert out.reason == "tol" and [r.kind for r in state.history][0] == "epochs"
    # the exact statistics are those of the returned centers
    assert out.exact.inertia == pytest.approx(sq_cost(X, state.centers), rel=1e-9)
    state, out = _loop(X, C + 0.5, max_passes=2, tol=0.0)
    assert out.reason == "maxIter" and [r.kind for r in state.history] == ["epochs", "exact"]
    state, out = _loop(X, C + 0.5, max_passes=4, tol=0.0, exact_passes=False)
    assert out.reason == "maxIter" and out.exact is None and len(state.history) == 1


def test_empty_centers_move_to_the_farthest_rows():
    """A center no row is nearest to (here: a duplicate) moves to the farthest row, and
    the fit passes again rather than stopping with it (scikit-learn KMeans' rule)."""
    X = np.vstack([np.zeros((500, 2)), np.ones((500, 2)), [[9.0, 9.0], [9.5, 9.0]]])
    C0 = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    state = MiniBatchState(C0, Convergence(len(X), 100), 0.0)

    def exact_pass(C):
        return batch_stats(X, C, dtype="float64")

    def farthest_pass(C, m):
        d = ((X[:, None] - C[None]) ** 2).sum(-1).min(1)
        return X[np.argsort(-d, kind="stable")[:m]]

    state.step = 1  # the epochs pass is done: exact passes only
    out = run_passes(state, None, exact_pass, max_passes=4, tol=1e-4, n_candidates=0,
                     farthest_pass=farthest_pass)
    assert out.reason == "tol" and state.history[0].reassigned == 1
    assert sorted(out.exact.counts.tolist()) == [2, 500, 500]
    assert out.exact.inertia == pytest.approx(sq_cost(X, state.centers))
