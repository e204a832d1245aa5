"""Assignment kernel and partial statistics against brute-force NumPy (no Spark)."""
import itertools

import numpy as np
import pytest

from minibatch_kmeans.core import kernels
from minibatch_kmeans.core.kernels import (CHUNK_ROWS, BatchStats, assign, batch_stats,
                                           smallest_keys)
from minibatch_kmeans.errors import MiniBatchKMeansError

DTYPES = ["float32", "float64"]
#: Relative tolerance of one squared distance, per compute dtype (in units of |x|^2+|c|^2).
REL_TOL = {"float32": 1e-5, "float64": 1e-12}


def brute_sq_dist(X, C):
    """(n, k) squared distances by explicit differences, in float64."""
    X = np.asarray(X, np.float64)
    C = np.asarray(C, np.float64)
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)


def brute_stats(X, C, w=None):
    """Per-center weighted sums, weights, counts and weighted inertia, by loops over centers."""
    X = np.asarray(X, np.float64)
    D = brute_sq_dist(X, C)
    labels = D.argmin(axis=1)
    w = np.ones(len(X)) if w is None else np.asarray(w, np.float64)
    k = len(C)
    sums = np.zeros((k, X.shape[1]))
    weights = np.zeros(k)
    counts = np.zeros(k, np.int64)
    for c in range(k):
        m = labels == c
        sums[c] = (X[m] * w[m, None]).sum(axis=0)
        weights[c] = w[m].sum()
        counts[c] = m.sum()
    inertia = float((D[np.arange(len(X)), labels] * w).sum())
    return sums, weights, counts, inertia


def blobs(rng, k=5, per=40, d=3, spread=0.5, scale=20.0):
    """Well-separated Gaussian blobs: (X, true_labels, true_centers)."""
    centers = rng.uniform(-scale, scale, size=(k, d))
    # make sure the centers are far apart relative to the spread
    while brute_sq_dist(centers, centers)[~np.eye(k, dtype=bool)].min() < (20 * spread) ** 2:
        centers = rng.uniform(-scale, scale, size=(k, d))
    y = np.repeat(np.arange(k), per)
    X = centers[y] + spread * rng.normal(size=(k * per, d))
    return X, y, centers


def check_assign_matches_brute(X, C, dtype):
    labels, dist = assign(X, C, dtype=dtype)
    D = brute_sq_dist(X, C)
    n = len(X)
    assert labels.shape == (n,) and labels.dtype == np.int32
    assert dist.shape == (n,) and dist.dtype == np.float64
    assert np.all(dist >= 0)
    x_sq = (np.asarray(X, np.float64) ** 2).sum(axis=1)
    c_sq = (np.asarray(C, np.float64) ** 2).sum(axis=1)
    tol = REL_TOL[dtype] * (x_sq + c_sq.max()) + 1e-30
    best = D.min(axis=1)
    # the returned distance is the true minimum, up to the dtype's rounding
    np.testing.assert_array_less(np.abs(dist - best), tol + 1e-300)
    # the chosen center is a nearest center, up to rounding
    np.testing.assert_array_less(D[np.arange(n), labels] - best, tol + 1e-300)
    # rows whose nearest center is unambiguous get exactly the brute-force label
    part = np.sort(D, axis=1)
    clear = (part[:, 1] - part[:, 0]) > 10 * tol if C.shape[0] > 1 else np.ones(n, bool)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], D.argmin(axis=1)[clear])
    return labels, dist


@pytest.mark.parametrize("dtype", DTYPES)
def test_assign_matches_brute_force(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 7)) * 3
    C = rng.normal(size=(11, 7)) * 3
    check_assign_matches_brute(X, C, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_assign_across_chunk_boundaries(dtype):
    rng = np.random.default_rng(2)
    n = 2 * CHUNK_ROWS + 123
    X = rng.normal(size=(n, 5))
    C = rng.normal(size=(9, 5))
    labels, dist = check_assign_matches_brute(X, C, dtype)
    # the rows on either side of each chunk boundary are handled like any other row
    for b in (CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS - 1, 2 * CHUNK_ROWS, n - 1):
        lb, db = assign(X[b:b + 1], C, dtype=dtype)
        assert lb[0] == labels[b]
        assert db[0] == pytest.approx(dist[b], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_assign_single_center(dtype):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    C = rng.normal(size=(1, 4))
    labels, dist = check_assign_matches_brute(X, C, dtype)
    assert np.all(labels == 0)
    np.testing.assert_allclose(dist, brute_sq_dist(X, C)[:, 0], rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_at_a_center_integer_data_have_exactly_zero_distance(dtype):
    rng = np.random.default_rng(4)
    C = rng.integers(-50, 50, size=(6, 8)).astype(np.float64)
    X = np.repeat(C, 3, axis=0)[rng.permutation(18)]
    labels, dist = assign(X, C, dtype=dtype)
    np.testing.assert_array_equal(C[labels], X)
    np.testing.assert_array_equal(dist, np.zeros(len(X)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_at_a_center_never_negative(dtype):
    # generic (non-representable-exactly) values: the expanded formula may leave a
    # rounding residue, but it is clamped at zero and tiny relative to |x|^2
    rng = np.random.default_rng(5)
    C = rng.normal(size=(10, 16)) * 100
    X = np.repeat(C, 5, axis=0)
    labels, dist = assign(X, C, dtype=dtype)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 5))
    assert np.all(dist >= 0)
    x_sq = (X ** 2).sum(axis=1)
    np.testing.assert_array_less(dist, 4 * REL_TOL[dtype] * x_sq)


def test_assign_docstring_example():
    labels, d = assign(np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([[10.0, 10.0], [1.0, 0.0]]))
    assert labels.tolist() == [1, 0]
    assert d.tolist() == [1.0, 2.0]


def test_float32_and_float64_agree_on_well_separated_data():
    rng = np.random.default_rng(6)
    X, y, centers = blobs(rng, k=8, per=300, d=10)
    l32, d32 = assign(X, centers, dtype="float32")
    l64, d64 = assign(X, centers, dtype="float64")
    np.testing.assert_array_equal(l32, l64)
    np.testing.assert_array_equal(l64, y)
    np.testing.assert_allclose(d32, d64, rtol=1e-2, atol=1e-2)


def test_assign_accepts_numpy_dtype_and_rejects_other_dtypes():
    X = np.eye(3)
    assign(X, X, dtype=np.float64)
    with pytest.raises(MiniBatchKMeansError) as e:
        assign(X, X, dtype="float16")
    assert isinstance(e.value, ValueError)
    assert "float16" in str(e.value)


# --- batch_stats -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_batch_stats_match_brute_force(dtype, weighted):
    rng = np.random.default_rng(7)
    X, _, centers = blobs(rng, k=6, per=50, d=4)
    C = centers + rng.normal(size=centers.shape)  # not exactly at the blob means
    C = np.vstack([C, [[1e4] * 4]])  # one center nobody is near: must stay empty
    w = rng.uniform(0, 3, size=len(X)) if weighted else None
    s = batch_stats(X, C, sample_weight=w, dtype=dtype)
    # rows enter the sums as cast to the compute dtype, accumulated in float64
    sums, weights, counts, inertia = brute_stats(X.astype(dtype), C, w)
    assert s.sums.dtype == np.float64 and s.sums.shape == C.shape
    np.testing.assert_allclose(s.sums, sums, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(s.weights, weights, rtol=1e-12)
    np.testing.assert_array_equal(s.counts, counts)
    assert s.counts[-1] == 0 and s.weights[-1] == 0 and not s.sums[-1].any()
    rel = 1e-4 if dtype == "float32" else 1e-10
    assert s.inertia == pytest.approx(inertia, rel=rel)
    assert s.n_rows == len(X)
    assert s.weight_total == pytest.approx(weights.sum())
    assert len(s.cand_keys) == 0


def test_batch_stats_weight_two_equals_duplicated_rows():
    rng = np.random.default_rng(8)
    X, _, centers = blobs(rng, k=4, per=30, d=3)
    C = centers + 0.3
    w = np.ones(len(X))
    dup = rng.random(len(X)) < 0.4
    w[dup] = 2.0
    weighted = batch_stats(X, C, sample_weight=w, dtype="float64")
    Xd = np.vstack([X, X[dup]])
    duplicated = batch_stats(Xd, C, dtype="float64")
    np.testing.assert_allclose(weighted.sums, duplicated.sums, rtol=1e-12)
    np.testing.assert_allclose(weighted.weights, duplicated.weights, rtol=1e-12)
    assert weighted.inertia == pytest.approx(duplicated.inertia, rel=1e-10)
    # counts are rows, not weights
    assert weighted.counts.sum() == len(X)
    assert duplicated.counts.sum() == len(Xd)


def test_batch_stats_zero_weights_contribute_nothing():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(100, 3))
    C = rng.normal(size=(4, 3))
    w = np.ones(100)
    w[50:] = 0.0
    full = batch_stats(X, C, sample_weight=w, dtype="float64")
    half = batch_stats(X[:50], C, dtype="float64")
    np.testing.assert_allclose(full.sums, half.sums, atol=1e-12)
    np.testing.assert_allclose(full.weights, half.weights)
    assert full.inertia == pytest.approx(half.inertia)


def test_batch_stats_empty_batch():
    s = batch_stats(np.empty((0, 3)), np.eye(3))
    assert s.n_rows == 0 and s.inertia == 0.0
    assert not s.sums.any() and not s.weights.any() and not s.counts.any()


# --- merge -----------------------------------------------------------------------------


def stats_with_candidates(X, C, keys, w, m):
    s = batch_stats(X, C, sample_weight=w, dtype="float64")
    s.cand_keys, s.cand_rows = smallest_keys(keys, X.astype(np.float64), m)
    return s


@pytest.mark.parametrize("weighted", [False, True])
def test_merge_of_disjoint_subsets_equals_whole_in_any_order(weighted):
    rng = np.random.default_rng(10)
    X, _, centers = blobs(rng, k=5, per=60, d=4)
    C = centers + rng.normal(size=centers.shape)
    n = len(X)
    w = rng.uniform(0.1, 2, n) if weighted else None
    keys = rng.integers(0, 2**62, n).astype(np.uint64)
    m = 7
    whole = stats_with_candidates(X, C, keys, w, m)
    parts = np.array_split(rng.permutation(n), 4)
    part_stats = [stats_with_candidates(X[p], C, keys[p], None if w is None else w[p], m)
                  for p in parts]
    for perm in itertools.permutations(range(4)):
        merged = BatchStats.empty(len(C), X.shape[1])
        for i in perm:
            merged = merged.merge(part_stats[i], max_candidates=m)
        np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(merged.weights, whole.weights, rtol=1e-12)
        np.testing.assert_array_equal(merged.counts, whole.counts)
        assert merged.inertia == pytest.approx(whole.inertia, rel=1e-12)
        assert merged.n_rows == n
        np.testing.assert_array_equal(merged.cand_keys, whole.cand_keys)
        np.testing.assert_array_equal(merged.cand_rows, whole.cand_rows)
    # a tree-shaped merge gives the same as a left fold
    tree = (part_stats[0].merge(part_stats[1], m)).merge(
        part_stats[2].merge(part_stats[3], m), m)
    np.testing.assert_allclose(tree.sums, whole.sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(tree.cand_keys, whole.cand_keys)


def test_merged_candidates_keep_smallest_keys_regardless_of_split():
    rng = np.random.default_rng(11)
    n, d, m = 200, 3, 5
    X = rng.normal(size=(n, d))
    C = rng.normal(size=(3, d))
    keys = rng.integers(0, 2**62, n).astype(np.uint64)
    expected = np.sort(keys)[:m]
    for trial in range(20):
        n_parts = int(rng.integers(1, 12))
        # uneven splits, including parts smaller than m and (possibly) empty parts
        cuts = np.sort(rng.integers(0, n, size=n_parts - 1))
        parts = np.split(rng.permutation(n), cuts)
        merged = None
        for p in parts:
            s = stats_with_candidates(X[p], C, keys[p], None, m)
            merged = s if merged is None else merged.merge(s, max_candidates=m)
        np.testing.assert_array_equal(merged.cand_keys, expected)
        rows_by_key = {int(k): X[i] for i, k in enumerate(keys)}
        np.testing.assert_array_equal(
            merged.cand_rows, np.array([rows_by_key[int(k)] for k in expected]))


def test_merge_does_not_mutate_inputs():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(40, 2))
    C = rng.normal(size=(3, 2))
    keys = rng.integers(0, 2**62, 40).astype(np.uint64)
    a = stats_with_candidates(X[:20], C, keys[:20], None, 4)
    b = stats_with_candidates(X[20:], C, keys[20:], None, 4)
    snap = [(s.sums.copy(), s.weights.copy(), s.counts.copy(), s.cand_keys.copy(),
             s.cand_rows.copy(), s.inertia, s.n_rows) for s in (a, b)]
    a.merge(b, max_candidates=4)
    for s, (sums, weights, counts, ck, cr, inertia, n_rows) in zip((a, b), snap):
        np.testing.assert_array_equal(s.sums, sums)
        np.testing.assert_array_equal(s.weights, weights)
        np.testing.assert_array_equal(s.counts, counts)
        np.testing.assert_array_equal(s.cand_keys, ck)
        np.testing.assert_array_equal(s.cand_rows, cr)
        assert (s.inertia, s.n_rows) == (inertia, n_rows)


def test_merge_tolerates_missing_counts_and_candidates():
    a = BatchStats(np.ones((2, 3)), np.array([1.0, 2.0]), 1.5, 3)
    b = BatchStats(np.ones((2, 3)), np.array([0.0, 1.0]), 0.5, 1, np.array([0, 1]))
    m = a.merge(b)
    np.testing.assert_array_equal(m.sums, 2 * np.ones((2, 3)))
    np.testing.assert_array_equal(m.weights, [1.0, 3.0])
    np.testing.assert_array_equal(m.counts, [0, 1])
    assert m.inertia == 2.0 and m.n_rows == 4
    assert m.cand_rows.shape == (0, 3)


# --- bad input -------------------------------------------------------------------------


def assert_user_error(excinfo, *fragments):
    err = excinfo.value
    assert isinstance(err, ValueError)
    assert isinstance(err, MiniBatchKMeansError)
    msg = str(err)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


@pytest.mark.parametrize("fn", [assign, batch_stats])
def test_one_dimensional_x_is_rejected(fn):
    with pytest.raises(ValueError) as e:
        fn(np.arange(5.0), np.ones((2, 5)))
    assert_user_error(e, "X", "(5,)")


@pytest.mark.parametrize("fn", [assign, batch_stats])
def test_one_dimensional_centers_are_rejected(fn):
    with pytest.raises(ValueError) as e:
        fn(np.ones((4, 3)), np.ones(3))
    assert_user_error(e, "centers", "(3,)")


@pytest.mark.parametrize("fn", [assign, batch_stats])
def test_feature_mismatch_is_rejected(fn):
    with pytest.raises(ValueError) as e:
        fn(np.ones((4, 3)), np.ones((2, 5)))
    assert_user_error(e, "3", "5", "features")


def test_assign_rejects_empty_centers():
    with pytest.raises(ValueError) as e:
        assign(np.ones((4, 3)), np.ones((0, 3)))
    assert_user_error(e, "centers")


def test_non_numeric_x_is_rejected():
    with pytest.raises(ValueError) as e:
        assign(np.array([["a", "b"]]), np.ones((1, 2)))
    assert_user_error(e, "X", "dtype")


@pytest.mark.parametrize("bad", [[1.0, -1.0, 1.0, 1.0], [1.0, np.nan, 1.0, 1.0],
                                 [1.0, np.inf, 1.0, 1.0]])
def test_invalid_weights_are_rejected(bad):
    with pytest.raises(ValueError) as e:
        batch_stats(np.ones((4, 2)), np.ones((1, 2)), sample_weight=bad)
    assert_user_error(e, "sample_weight", "non-negative")


@pytest.mark.parametrize("shape", [(3,), (5,), (4, 1)])
def test_wrong_weight_shape_is_rejected(shape):
    with pytest.raises(ValueError) as e:
        batch_stats(np.ones((4, 2)), np.ones((1, 2)), sample_weight=np.ones(shape))
    assert_user_error(e, "sample_weight", str(shape), "(4,)")


def test_private_kernel_is_what_public_calls():
    # the public function is validation + the private kernel: same answers
    rng = np.random.default_rng(13)
    X = rng.normal(size=(100, 3))
    C = rng.normal(size=(4, 3))
    l1, d1 = assign(X, C, dtype="float64")
    l2, d2 = kernels.labels_and_distances(X, C, kernels.row_norms_sq(C))
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(d1, d2)


# --- compiled (numba) row passes against the NumPy path ----------------------------------


@pytest.fixture
def numba_kernel():
    """Skip unless the compiled row passes are loaded (numba installed, not forced off)."""
    pytest.importorskip("numba")
    if kernels._LOADED is None:
        pytest.skip(f"{kernels.KERNEL_ENV}=numpy forces the NumPy path")


def both_paths(fn, *args):
    """``fn(*args)`` with the NumPy row passes, then with the compiled ones."""
    with kernels._use_kernel("numpy"):
        a = fn(*args)
    with kernels._use_kernel("numba"):
        b = fn(*args)
    return a, b


def assert_same_stats(a, b):
    """Equal partial statistics: sums, weights and counts bit for bit (same operations in
    the same row order), inertia to float64 rounding (summed in another order)."""
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.sums, b.sums)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert b.inertia == pytest.approx(a.inertia, rel=1e-12, abs=1e-300)
    assert (a.n_rows, a.sums.dtype, a.weights.dtype, a.counts.dtype) == \
        (b.n_rows, b.sums.dtype, b.weights.dtype, b.counts.dtype)
    assert len(b.cand_keys) == 0 and b.cand_rows.shape == a.cand_rows.shape


def assert_same_assign(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == b[0].dtype == np.int32 and b[1].dtype == np.float64
    np.testing.assert_allclose(b[1], a[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n,k", [(0, 5), (1, 5), (2 * CHUNK_ROWS + 123, 13), (700, 1)])
def test_numba_and_numpy_paths_agree(numba_kernel, dtype, weighted, n, k):
    rng = np.random.default_rng(20)
    X = (rng.normal(size=(n, 6)) * 4).astype(dtype)
    C = (rng.normal(size=(k, 6)) * 4).astype(dtype)
    w = rng.uniform(0, 3, n) if weighted else None
    a, b = both_paths(batch_stats, X, C, w, dtype)
    assert_same_stats(a, b)
    assert b.n_rows == n
    if n:
        sums, weights, counts, _ = brute_stats(X, C, w)
        np.testing.assert_array_equal(b.counts, counts)
        np.testing.assert_allclose(b.sums, sums, rtol=1e-10, atol=1e-9)
    la, lb = both_paths(kernels.labels_and_distances, X, C, kernels.row_norms_sq(C))
    assert_same_assign(la, lb)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_and_numpy_paths_agree_with_partial_stats(numba_kernel, dtype):
    # assignment_stats (what the Spark UDF and the local runner call) is _partial_stats of
    # labels_and_distances's output, on clustered data with weights
    rng = np.random.default_rng(21)
    X, _, centers = blobs(rng, k=9, per=500, d=5)
    X, C = X.astype(dtype), (centers + rng.normal(size=centers.shape)).astype(dtype)
    w = rng.uniform(0.1, 2, len(X))
    c_sq = kernels.row_norms_sq(C)
    with kernels._use_kernel("numpy"):
        ref = kernels._partial_stats(X, *kernels.labels_and_distances(X, C, c_sq), len(C), w)
    a, b = both_paths(kernels.assignment_stats, X, C, c_sq, w)
    assert_same_stats(ref, a)
    assert_same_stats(ref, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_and_numpy_paths_break_ties_alike(numba_kernel, dtype):
    # integer data: rows exactly halfway between two centers, and a duplicated center,
    # give equal entries in the GEMM block; both paths take the first (np.argmin)
    C = np.array([[0, 0], [2, 0], [2, 0], [0, 4]], dtype=dtype)
    X = np.array([[1, 0], [2, 0], [0, 2], [1, 2], [5, 5]], dtype=dtype)
    la, lb = both_paths(kernels.labels_and_distances, X, C, kernels.row_norms_sq(C))
    assert_same_assign(la, lb)
    assert lb[0].tolist() == [0, 1, 0, 0, 3]
    np.testing.assert_array_equal(lb[1], [1.0, 0.0, 4.0, 5.0, 26.0])
    a, b = both_paths(batch_stats, X, C, None, dtype)
    assert_same_stats(a, b)
    assert b.counts.tolist() == [3, 1, 0, 1]


def test_numba_rows_on_their_center_have_zero_distance(numba_kernel):
    rng = np.random.default_rng(22)
    C = (rng.normal(size=(10, 16)) * 100).astype(np.float32)
    X = np.repeat(C, 3, axis=0)
    with kernels._use_kernel("numba"):
        labels, dist = kernels.labels_and_distances(X, C, kernels.row_norms_sq(C))
        s = batch_stats(X, C)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
    np.testing.assert_array_equal(dist, np.zeros(len(X)))
    assert s.inertia == 0.0


def test_arrays_the_compiled_passes_do_not_take_go_through_numpy(numba_kernel):
    # non-contiguous rows or mixed dtypes are not what the compiled passes were built
    # for: labels_and_distances and assignment_stats still answer, through NumPy
    rng = np.random.default_rng(23)
    X = rng.normal(size=(300, 8))
    C = rng.normal(size=(4, 4))
    Xs = X[:, ::2]
    assert not Xs.flags.c_contiguous and kernels._fused_for(Xs, C) is None
    assert kernels._fused_for(X[:, :4].astype(np.float32), C) is None
    assert kernels._fused_for(np.ascontiguousarray(Xs), C) is not None
    with kernels._use_kernel("numba"):
        got = kernels.labels_and_distances(Xs, C, kernels.row_norms_sq(C))
        ref = kernels.labels_and_distances(np.ascontiguousarray(Xs), C, kernels.row_norms_sq(C))
        s = kernels.assignment_stats(Xs, C, kernels.row_norms_sq(C), None)
    assert_same_assign(ref, got)
    assert s.counts.sum() == 300


def test_use_kernel_rejects_unknown_names_and_restores():
    before = kernels._fused
    with pytest.raises(MiniBatchKMeansError):
        with kernels._use_kernel("cuda"):
            pass
    with kernels._use_kernel("numpy"):
        assert kernels._fused is None
    assert kernels._fused is before


def _kernel_in_subprocess(value, block_numba=False):
    """``kernels.KERNEL`` and warnings of a fresh interpreter with ``MBKM_KERNEL=value``
    (unset when None), after a batch_stats call; ``block_numba`` makes numba unimportable."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop(kernels.KERNEL_ENV, None)
    if value is not None:
        env[kernels.KERNEL_ENV] = value
    code = ("import sys, warnings\n"
            f"if {block_numba}: sys.modules['numba'] = None\n"
            "warnings.simplefilter('error')\n"
            "import numpy as np\n"
            "from minibatch_kmeans.core import kernels\n"
            "s = kernels.batch_stats(np.eye(3), np.eye(3)[:2], sample_weight=[1.0, 2, 3])\n"
            "assert s.counts.tolist() == [2, 1], s.counts\n"
            "print(kernels.KERNEL)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_without_numba_the_numpy_path_runs_silently():
    assert _kernel_in_subprocess(None, block_numba=True) == "numpy"


def test_environment_variable_picks_the_kernel_at_import(numba_kernel):
    assert _kernel_in_subprocess("numpy") == "numpy"
    assert _kernel_in_subprocess(None) == "numba"
    assert _kernel_in_subprocess("numba") == "numba"
