"""The distributed fit against its NumPy reference, and its independence of partitioning."""
import numpy as np
import pytest
from pyspark.sql import functions as F

from helpers import blobs, cols, columns_df, sq_cost
from minibatch_kmeans.core.loop import local_batch_runner, max_candidates, run_steps
from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.fit import FitParams, SparkMiniBatch, check_initial_centers, fit
from minibatch_kmeans.spark.prepare import prepare
from minibatch_kmeans.spark.udfs import STATS_SCHEMA, stats_function, table_to_stats


@pytest.fixture(scope="module")
def data(spark):
    X, y, C = blobs(n=2400, k=4, d=3, seed=1)
    return X, y, C, columns_df(spark, X, partitions=3)


def _prepared_arrays(prep):
    t = prep.df.where(F.col("slot") >= 0).toArrow()
    slots = t.column("slot").to_numpy()
    keys = t.column("key").to_numpy()
    X = np.column_stack([t.column(f).to_numpy() for f in prep.feature_names])
    assert X.dtype == np.float32
    return slots, keys, X


@pytest.mark.parametrize("spherical", [False, True])
def test_spark_steps_equal_numpy_reference(data, spherical):
    """The same steps on the same rows give the same centers in Spark and in NumPy,
    reassignments included (a large ratio forces them)."""
    X, _, C, df = data
    spec = resolve(df, "features", cols(3))
    init = X[:4] + 0.5  # poor start: reassignments and real movement
    params = FitParams(k=4, batch_size=150, max_iter=2, seed=11, tol=0.0,
                       max_no_improvement=None, reassignment_ratio=0.3,
                       distance="cosine" if spherical else "euclidean").validate()
    prep = prepare(df, spec, params.seed, "float32", spherical)
    try:
        res = SparkMiniBatch(prep, params).run(init.tolist())
        slots, keys, Xs = _prepared_arrays(prep)
        buckets = []
        for b in range(prep.n_buckets):
            lo, hi = prep.bucket_bounds(b)
            buckets.append(np.flatnonzero((slots >= lo) & (slots < hi)))
    finally:
        prep.unpersist()
    if spherical:
        Xs = Xs / np.linalg.norm(Xs, axis=1, keepdims=True).astype(np.float32)
    state = MiniBatchState(check_initial_centers(init, 4, 3, spherical),
                           Convergence(len(Xs), 150, 0.0, None), 0.3, spherical)
    runner = local_batch_runner(Xs, keys, buckets, params.seed, dtype=np.float32)
    reason = run_steps(state, prep.n_buckets, 2 * prep.n_buckets, params.seed, runner,
                       max_candidates(4, 150))
    assert reason == res.summary["stopReason"] == "maxIter"
    assert state.step == res.summary["numSteps"] == 2 * prep.n_buckets
    assert sum(r.reassigned for r in state.history) > 0  # the test exercises reassignment
    assert [r.reassigned for r in state.history] == [r.reassigned for r in res.history]
    np.testing.assert_allclose(res.centers, state.centers, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.weight_sums, state.weight_sums)


def test_same_seed_same_centers_on_1_and_4_partitions(spark, data):
    X, _, _, _ = data
    spec_cols = cols(3)
    results = []
    for parts in (1, 4):
        df = columns_df(spark, X, partitions=parts)
        assert df.rdd.getNumPartitions() == parts
        spec = resolve(df, "features", spec_cols)
        params = FitParams(k=4, batch_size=200, max_iter=3, seed=7, init_mode="k-means++",
                           fit_mode="step")
        results.append(fit(df, spec, params))
    a, b = results
    assert a.summary["numSteps"] == b.summary["numSteps"]
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-9, atol=1e-9)
    assert a.summary["clusterSizes"] == b.summary["clusterSizes"]


def test_partial_statistics_merge_in_any_order(spark, data):
    """Per-partition partials of a stats job merge to the same totals in any order, and
    equal the statistics of the whole table computed at once."""
    X, _, C, df = data
    spec = resolve(df, "features", cols(3))
    feats = [x.alias(f"f{i}") for i, x in enumerate(spec.feature_exprs())]
    fn = stats_function(C, np.float64)
    table = df.repartition(5).select(*feats).mapInArrow(fn, STATS_SCHEMA).toArrow()
    assert table.num_rows == 5
    whole = table_to_stats(table, 4, 3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        shuffled = table.take(rng.permutation(table.num_rows))
        s = table_to_stats(shuffled, 4, 3)
        np.testing.assert_array_equal(s.sums, whole.sums)  # canonical order: bit-identical
        assert s.inertia == whole.inertia
    d = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    np.testing.assert_allclose(whole.inertia, d.min(1).sum(), rtol=1e-9)
    np.testing.assert_array_equal(whole.counts, np.bincount(lab, minlength=4))
    for j in range(4):
        np.testing.assert_allclose(whole.sums[j], X[lab == j].sum(0), rtol=1e-9)


def test_step_reads_only_its_bucket(data):
    """A bucket is a slot range: its rows are disjoint from other buckets' and together
    they cover every valid row once."""
    X, _, _, df = data
    spec = resolve(df, "features", cols(3))
    prep = prepare(df, spec, 3)
    try:
        prep.n_buckets = 6
        counts = [prep.bucket(b).count() for b in range(6)]
        keys = set()
        for b in range(6):
            ks = {r["key"] for r in prep.bucket(b).select("key").collect()}
            assert not (keys & ks)
            keys |= ks
        assert sum(counts) == len(X)
        assert max(counts) < 2 * len(X) / 6
    finally:
        prep.unpersist()


@pytest.mark.parametrize("before", [None, "true"])
def test_prepare_leaves_the_cache_compression_setting_as_it_was(spark, data, before):
    """prepare builds its cache uncompressed (nothing in it compresses) and then restores
    the session's setting, set or unset."""
    name = "spark.sql.inMemoryColumnarStorage.compressed"
    _, _, _, df = data
    if before is None:
        spark.conf.unset(name)
    else:
        spark.conf.set(name, before)
    prep = prepare(df, resolve(df, "features", cols(3)), 3)
    try:
        assert prep.n_rows == df.count()
        assert spark.conf.get(name) == "true"  # as set, or the default when unset
    finally:
        prep.unpersist()
        spark.conf.unset(name)


def test_temporary_conf_sets_then_restores_set_and_unset_settings(spark):
    from minibatch_kmeans.spark.session import temporary_conf

    settings = {"spark.sql.codegen.wholeStage": "false",
                "spark.sql.inMemoryColumnarStorage.batchSize": "123"}
    spark.conf.set("spark.sql.codegen.wholeStage", "true")
    spark.conf.unset("spark.sql.inMemoryColumnarStorage.batchSize")
    with temporary_conf(spark, settings) as applied:
        assert applied
        assert {k: spark.conf.get(k) for k in settings} == settings
    assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
    assert spark.conf.get("spark.sql.inMemoryColumnarStorage.batchSize") == "10000"
    spark.conf.unset("spark.sql.codegen.wholeStage")


def test_default_parallelism_without_the_conf_is_measured_once_per_session(spark):
    from minibatch_kmeans.spark import session as session_mod

    session_mod._PARALLELISM.pop(spark, None)
    assert session_mod._range_parallelism(spark) == 2  # the test session is local[2]
    session_mod._PARALLELISM[spark] = 7  # a second call answers from the memo, no job
    try:
        assert session_mod._range_parallelism(spark) == 7
    finally:
        session_mod._PARALLELISM.pop(spark, None)


# -- prepared rows on disk (tables larger than memory) ------------------------------------

def test_disk_layout_fits_the_same_centers_as_the_cache(spark, tmp_path):
    """The scratch Parquet copy holds the same rows in the same buckets as the cache, so
    a fit on it gives the same centers (weights, invalid rows and reseeding included);
    afterwards the scratch directory is gone."""
    X, _, _ = blobs(n=3000, k=4, d=3, seed=2)
    X[::97, 1] = np.nan  # invalid rows, skipped and counted the same way
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    df = columns_df(spark, X, weights=w, partitions=3)
    spec = resolve(df, "features", cols(3), "w")
    params = dict(k=4, batch_size=100, max_iter=2, seed=5, handle_invalid="skip",
                  reassignment_ratio=0.3, fit_mode="step")
    memory = fit(df, spec, FitParams(prepare_storage="memory", **params))
    disk = fit(df, spec, FitParams(prepare_storage="disk", scratch_dir=str(tmp_path),
                                   **params))
    assert (memory.summary["prepareStorage"], disk.summary["prepareStorage"]) \
        == ("memory", "disk")
    np.testing.assert_allclose(disk.centers, memory.centers, rtol=1e-12, atol=1e-12)
    for key in ("numSteps", "numRows", "numSkipped", "clusterSizes"):
        assert disk.summary[key] == memory.summary[key], key
    assert disk.summary["numSkipped"] == len(X[::97])
    assert list(tmp_path.iterdir()) == []


def test_disk_layout_reads_only_the_blocks_of_a_slot_range(spark, data, tmp_path):
    """One file per block, sorted by slot; a bucket's rows come from its blocks' files
    alone: with every other block's files deleted, the bucket still reads the same rows."""
    import pyarrow.parquet as pq

    X, _, _, df = data
    prep = prepare(df, resolve(df, "features", cols(3)), 3, storage="disk",
                   scratch_dir=str(tmp_path), block_rows=300)
    try:
        root = tmp_path / next(p.name for p in tmp_path.iterdir())
        blocks = sorted(int(p.name.split("=")[1]) for p in root.glob("block=*"))
        assert blocks == list(range(8))  # 2400 rows / 300 a block; no invalid rows
        for b in blocks:
            [part] = (root / f"block={b}").glob("*.parquet")
            slots = pq.read_table(part, columns=["slot"]).column("slot").to_numpy()
            assert np.all(np.diff(slots) >= 0) and np.all(slots >> prep.block_shift == b)
        prep.n_buckets = 16
        expected = sorted(r["key"] for r in prep.bucket(5).select("key").collect())
        assert len(expected) > 0
        lo, hi = prep.bucket_bounds(5)
        keep = set(range(lo >> prep.block_shift, ((hi - 1) >> prep.block_shift) + 1))
        for b in set(blocks) - keep:
            for f in (root / f"block={b}").iterdir():
                f.unlink()
        assert sorted(r["key"] for r in prep.bucket(5).select("key").collect()) == expected
    finally:
        prep.unpersist()
    assert not root.exists()


def test_auto_storage_follows_the_session_memory(spark, data, monkeypatch, tmp_path):
    from minibatch_kmeans.spark import prepare as prepare_mod

    _, _, _, df = data
    assert [prepare_mod.parse_bytes(v) for v in ("2g", "512m", "1024", "64k")] \
        == [2 << 30, 512 << 20, 1024 << 20, 64 << 10]
    # the test session: local, spark.driver.memory=2g, default spark.memory.fraction
    assert prepare_mod.storage_memory(spark) == int(((2 << 30) - (300 << 20)) * 0.6)
    df.write.parquet(str(tmp_path / "t"))
    table = spark.read.parquet(str(tmp_path / "t"))
    assert 0 < prepare_mod.plan_bytes(table) < 1 << 20  # from the files' sizes
    # far below memory by Spark's estimate: memory, without counting
    assert prepare_mod.choose_storage(table, table, 44) == ("memory", None)
    # not far below: counted, then the rows' real size decides
    monkeypatch.setattr(prepare_mod, "MEMORY_SHARE", 1e-4)  # about 100 KB of 1 GB
    assert prepare_mod.choose_storage(table, table, 44) == ("memory", 2400)
    assert prepare_mod.choose_storage(table, table, 1000) == ("disk", 2400)


def test_bad_storage_settings_name_what_was_given(spark, data):
    from minibatch_kmeans.errors import InvalidParamError
    from minibatch_kmeans.spark.prepare import parse_bytes

    _, _, _, df = data
    with pytest.raises(InvalidParamError, match="prepareStorage='tape'.*memory"):
        FitParams(prepare_storage="tape").validate()
    with pytest.raises(InvalidParamError, match="'lots'.*512m or 2g"):
        parse_bytes("lots")


# -- several steps per Spark job (localSteps) ---------------------------------------------

def test_local_steps_on_one_partition_equal_plain_steps(spark, data):
    """On one partition, a job of m local steps is m plain mini-batch steps over its
    sub-batches (equal slot sub-ranges in ascending order), from the same centers."""
    from minibatch_kmeans.core.kernels import assign
    from minibatch_kmeans.core.loop import bucket_order
    from minibatch_kmeans.core.minibatch import minibatch_update

    X, _, _, _ = data
    df = columns_df(spark, X, partitions=1)
    spec = resolve(df, "features", cols(3))
    init = X[:4] + 0.5
    params = FitParams(k=4, batch_size=150, local_steps=4, max_iter=2, seed=11, tol=0.0,
                       max_no_improvement=None, reassignment_ratio=0.0).validate()
    prep = prepare(df, spec, params.seed)
    try:
        res = SparkMiniBatch(prep, params).run(init.tolist())
        slots, _, Xs = _prepared_arrays(prep)
        groups = prep.n_buckets
    finally:
        prep.unpersist()
    assert (groups, res.summary["localSteps"], res.summary["numSteps"]) == (4, 4, 8)
    C, W = init.astype(np.float64), np.zeros(4)
    for epoch in range(2):
        for g in bucket_order(params.seed, epoch, groups):
            lo, hi = g * (1 << 20) // groups, (g + 1) * (1 << 20) // groups
            for j in range(4):
                sub = Xs[(slots >= lo) & (slots < hi) & ((slots - lo) * 4 // (hi - lo) == j)]
                labels, _ = assign(sub, C)
                sums = np.stack([sub[labels == c].sum(0, dtype=np.float64) for c in range(4)])
                C, W = minibatch_update(C, W, sums, np.bincount(labels, minlength=4))
    np.testing.assert_allclose(res.centers, C, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.weight_sums, W)


def test_local_steps_across_partitions_keep_the_quality_of_plain_steps(spark):
    """Tasks update their own copies of the centers; merged by weight, the fit reaches
    the plain loop's cost on well-separated blobs."""
    X, _, C = blobs(n=6000, k=6, d=4, seed=3, spread=1.0, scale=3.0)
    df = columns_df(spark, X, partitions=3)
    spec = resolve(df, "features", cols(4))
    costs = {}
    for m in (1, 5):
        params = FitParams(k=6, batch_size=100, local_steps=m, max_iter=3, seed=2,
                           fit_mode="step")
        r = fit(df, spec, params)
        assert r.summary["localSteps"] == m
        costs[m] = r.summary["trainingCost"]
    assert costs[5] <= 1.01 * costs[1]
    assert costs[1] <= 1.01 * sq_cost(X, C)
