"""The pass fit (fitMode auto/local/pass) against its NumPy reference: the same epochs over
the same rows on the driver, the same exact passes over the partitions."""
import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from helpers import blobs, cols, columns_df, sq_cost
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.core.kernels import assignment_stats, row_norms_sq
from minibatch_kmeans.core.loop import candidate_salt, max_candidates, select_candidates
from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
from minibatch_kmeans.core.passes import merge_epochs, minibatch_epochs, run_passes
from minibatch_kmeans.core.rng import row_keys
from minibatch_kmeans.errors import InvalidInputError
from minibatch_kmeans.spark import passes as passes_mod
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.fit import FitParams, check_initial_centers, fit
from minibatch_kmeans.spark.prepare import valid_features
from minibatch_kmeans.spark.udfs import farthest_rows, stats_to_batch, table_to_stats


@pytest.fixture(scope="module")
def data(spark):
    X, y, C = blobs(n=2400, k=4, d=3, seed=1)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(X))
    return X, w, C, columns_df(spark, X, weights=w, partitions=3)


def _partitions(df, spec, seed, spherical):
    """Each input partition's valid rows as the pass's tasks see them: (keys, X float32,
    weights or None), by partition id."""
    rows = valid_features(df, spec, "float32", spherical)
    t = rows.withColumn("pid", F.spark_partition_id()).toArrow()
    pid = t.column("pid").to_numpy()
    X = np.column_stack([t.column(f"f{j}").to_numpy() for j in range(spec.n_features)])
    w = t.column("weight").to_numpy() if spec.weight_col else None
    keys = row_keys(X, seed)
    out = []
    for p in np.unique(pid):
        m = pid == p
        out.append((keys[m], X[m], None if w is None else w[m]))
    return out


@pytest.mark.parametrize("weighted,spherical", [(False, False), (True, False), (False, True)])
def test_pass_fit_equals_numpy_reference(data, weighted, spherical):
    """Spark's pass fit and a NumPy replay of it (the epochs over every row, sampled whole
    on the driver, re-seeding, the exact passes merged over the partitions) give the same
    centers, cost and sizes."""
    X, w, C, df = data
    spec = resolve(df, "features", cols(3), "w" if weighted else None)
    init = X[:4] + 0.5  # a poor start: re-seeding and real movement
    params = FitParams(k=4, batch_size=128, max_iter=3, seed=11, tol=0.0,
                       max_no_improvement=None, reassignment_ratio=0.3, initial_centers=init,
                       distance="cosine" if spherical else "euclidean",
                       fit_mode="pass").validate()
    res = fit(df, spec, params)
    assert res.summary["fitMode"] == "pass" and not res.summary["partitionDependent"]

    parts = _partitions(df, spec, params.seed, spherical)
    if spherical:
        parts = [(k_, x / np.linalg.norm(x, axis=1, keepdims=True).astype(np.float32), w_)
                 for k_, x, w_ in parts]
    state = MiniBatchState(check_initial_centers(init, 4, 3, spherical),
                           Convergence(len(X), 128, 0.0, None), 0.3, spherical)
    n_cand = max_candidates(4, 128)

    keys = np.concatenate([p_[0] for p_ in parts])
    Xall = np.concatenate([p_[1] for p_ in parts])
    wall = None if not weighted else np.concatenate([p_[2] for p_ in parts])

    def epochs_pass(C0, W0, n_c):
        r = minibatch_epochs(Xall, C0, W0, 128, 3, passes_mod.order_salt(11, 0), keys=keys,
                             sample_weight=wall, tol=0.0, max_no_improvement=None,
                             spherical=spherical, reassignment_ratio=0.3)
        r.stats.cand_keys, r.stats.cand_rows = select_candidates(
            keys, Xall, candidate_salt(11, 0), n_c)
        return merge_epochs([r], n_c)

    def exact_pass(C0):  # per partition, merged as the driver merges a stats job
        Cd = np.ascontiguousarray(C0, dtype=np.float32)
        batches = [stats_to_batch(assignment_stats(Xp, Cd, row_norms_sq(Cd), wp))
                   for _, Xp, wp in parts]
        return table_to_stats(pa.Table.from_batches(batches), 4, 3)

    def farthest_pass(C0, m):  # each partition's farthest rows, then the farthest of all
        Cd = np.ascontiguousarray(C0, dtype=np.float32)
        found = [farthest_rows(Xp, Cd, row_norms_sq(Cd), m) for _, Xp, _ in parts]
        dist = np.concatenate([f[0] for f in found])
        rows = np.concatenate([f[1] for f in found])
        return rows[np.lexsort((np.arange(len(dist)), -dist))[:m]]

    out = run_passes(state, epochs_pass, exact_pass, max_passes=passes_mod.MAX_PASSES,
                     tol=0.0, n_candidates=n_cand, farthest_pass=farthest_pass)
    assert out.reason == res.summary["stopReason"]
    assert [r.kind for r in state.history] == [r.kind for r in res.history]
    np.testing.assert_allclose(res.centers, state.centers, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.weight_sums, state.weight_sums, rtol=1e-9)
    assert res.summary["clusterSizes"] == out.exact.counts.tolist()
    expected = out.exact.inertia / 2 if spherical else out.exact.inertia
    assert res.summary["trainingCost"] == pytest.approx(expected, rel=1e-9)
    if not spherical:
        assert res.summary["trainingCost"] == pytest.approx(
            sq_cost(X, res.centers, w if weighted else None), rel=1e-5)


def test_local_and_pass_modes_agree_on_a_table_sampled_whole(spark, data):
    """A table small enough for the epochs sample to hold it whole gives the same centers in
    either mode and on any partitioning: the epochs run on the driver over the rows in
    their keys' order, the exact passes sum the same rows."""
    X, _, _, _ = data
    kw = dict(k=4, inputCols=cols(3), seed=3, batchSize=256)
    local = MiniBatchKMeans(fitMode="local", **kw).fit(columns_df(spark, X, partitions=1))
    for parts in (1, 4):
        m = MiniBatchKMeans(fitMode="pass", **kw).fit(columns_df(spark, X, partitions=parts))
        assert m.summary.fitMode == "pass" and not m.summary.partitionDependent
        np.testing.assert_allclose(np.array(local.clusterCenters()),
                                   np.array(m.clusterCenters()), rtol=1e-6, atol=1e-6)
        assert local.summary.clusterSizes == m.summary.clusterSizes


def test_auto_mode_picks_local_for_small_tables(spark, data, monkeypatch):
    X, _, _, df = data
    kw = dict(k=4, inputCols=cols(3), seed=3)
    assert MiniBatchKMeans(**kw).fit(df).summary.fitMode == "local"
    monkeypatch.setattr(passes_mod, "LOCAL_MAX_BYTES", 100)
    big = MiniBatchKMeans(**kw).fit(df)
    # the count, the sample, every exact pass, the workers' warm-up
    assert big.summary.fitMode == "pass" and big.summary.numJobs == 2 + big.summary.numPasses
    assert big.summary.trainingCost <= 1.01 * sq_cost(X, blobs(n=2400, k=4, d=3, seed=1)[2])


def test_epochs_pass_runs_on_a_sample_of_a_large_table(spark, data, monkeypatch):
    """Past epoch_sample_rows() rows the epochs pass runs on a random sample (drawn in the
    JVM, partition-dependent); the exact passes still see every row."""
    X, _, C, df = data
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS", 600)
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS_PER_CENTER", 10)
    m = MiniBatchKMeans(k=4, inputCols=cols(3), seed=3, fitMode="pass").fit(df)
    s = m.summary
    assert 400 < s.epochRows < 900 and sum(s.clusterSizes) == 2400
    assert s.partitionDependent
    assert s.passesOverData == pytest.approx(s.epochRows / 2400 + s.numPasses - 1)
    assert s.trainingCost <= 1.01 * sq_cost(X, C)
    assert passes_mod.epoch_sample_rows(4, 3) == 600
    monkeypatch.setattr(passes_mod, "EPOCH_SAMPLE_MAX_BYTES", 3 * 4 * 100)
    assert passes_mod.epoch_sample_rows(4, 3) == 100  # at most so many bytes of features


def test_an_init_larger_than_the_epochs_sample_samples_by_itself(spark, data, monkeypatch):
    """An initSize beyond what the Bernoulli sample brought: the init draws its own rows
    by key from the table (the keyed rows are built only then)."""
    X, _, C, df = data
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS", 100)
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS_PER_CENTER", 10)
    drawn = []
    init_sample = passes_mod.Initializer.init_sample
    monkeypatch.setattr(passes_mod.Initializer, "init_sample",
                        lambda self, size: drawn.append(size) or init_sample(self, size))
    m = MiniBatchKMeans(k=4, inputCols=cols(3), seed=3, fitMode="pass", initSize=1000,
                        initMode="k-means++").fit(df)
    assert drawn == [1000] and m.summary.epochRows < 200
    assert m.summary.trainingCost <= 1.01 * sq_cost(X, C)


def test_sampled_pass_fits_keep_their_quality_on_any_partitioning(spark, data, monkeypatch):
    X, _, C, _ = data
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS", 800)
    monkeypatch.setattr(passes_mod, "EPOCH_ROWS_PER_CENTER", 10)
    for parts in (1, 4):
        df = columns_df(spark, X, partitions=parts)
        m = MiniBatchKMeans(k=4, inputCols=cols(3), seed=7, fitMode="pass").fit(df)
        assert m.summary.partitionDependent
        assert m.summary.trainingCost <= 1.01 * sq_cost(X, C)


def test_invalid_rows_in_a_pass_fit(spark):
    X, _, C = blobs(n=1000, k=3, d=2, seed=5)
    X[::50, 0] = np.nan
    df = columns_df(spark, X)
    kw = dict(k=3, inputCols=cols(2), seed=1, fitMode="pass")
    with pytest.raises(InvalidInputError, match=r"20 invalid rows \(null value in column 'x0'"):
        MiniBatchKMeans(**kw).fit(df)
    m = MiniBatchKMeans(handleInvalid="skip", **kw).fit(df)
    assert m.summary.numSkipped == 20 and m.summary.numRows == 980
    assert sum(m.summary.clusterSizes) == 980


def test_interrupted_pass_fit_resumes_to_the_same_centers(spark, data, tmp_path):
    """Checkpoints after every pass: a fit stopped after its epochs pass resumes from
    there (no new initialisation) and ends where an uninterrupted fit ends."""
    X, _, _, df = data
    spec = resolve(df, "features", cols(3))
    base = dict(k=4, seed=9, fit_mode="pass", tol=0.0)
    full = fit(df, spec, FitParams(**base))
    ck = str(tmp_path / "ck")
    asked = []

    def stop_after_first():
        asked.append(1)
        return len(asked) > 1

    first = fit(df, spec, FitParams(checkpoint_dir=ck, **base), should_stop=stop_after_first)
    assert first.summary["stopReason"] == "interrupted"
    assert [r.kind for r in first.history] == ["epochs"]
    again = fit(df, spec, FitParams(checkpoint_dir=ck, **base))
    assert again.summary["resumedFromStep"] == 1
    np.testing.assert_array_equal(again.centers, full.centers)
    assert again.summary["clusterSizes"] == full.summary["clusterSizes"]
    done = fit(df, spec, FitParams(checkpoint_dir=ck, **base))  # finished: one exact pass
    np.testing.assert_array_equal(done.centers, full.centers)
    assert done.summary["trainingCost"] == pytest.approx(full.summary["trainingCost"])


def test_a_fit_keeps_generated_methods_jit_sized_for_its_own_jobs(spark, data):
    """Fits run with spark.sql.codegen.hugeMethodLimit at 8000 (HotSpot interprets larger
    methods) and give the session its own value back; a lower value is left alone."""
    _, _, _, df = data
    name = "spark.sql.codegen.hugeMethodLimit"
    spec = resolve(df, "features", cols(3))
    original = spark.conf.get(name, None)
    try:
        for session_value, during in (("65535", "8000"), ("4000", "4000")):
            spark.conf.set(name, session_value)
            seen = []
            fit(df, spec, FitParams(k=4, seed=1, fit_mode="pass").validate(),
                on_step=lambda rec, state: seen.append(spark.conf.get(name)))
            assert seen and set(seen) == {during}
            assert spark.conf.get(name) == session_value
    finally:
        if original is None:
            spark.conf.unset(name)
        else:
            spark.conf.set(name, original)


@pytest.mark.parametrize("mode", ["pass", "step"])
def test_every_spark_job_of_a_fit_is_described(spark, data, tmp_path, mode):
    """Each job of a fit that reads the input carries a description in the Spark UI (what
    it does for the fit): recorded here by the tasks themselves, from the input's own
    Python UDF (a step-mode fit reads the input once, to prepare its cached copy)."""
    from pyspark import TaskContext

    X, w, C, df = data
    log = tmp_path / "descriptions"
    log.mkdir()

    def record(x):
        text = TaskContext.get().getLocalProperty("spark.job.description") or "(none)"
        (log / f"{abs(hash(text))}.txt").write_text(text)
        return x

    traced = df.withColumn("x0", F.udf(record, "double")("x0"))
    MiniBatchKMeans(k=4, inputCols=cols(3), seed=1, fitMode=mode, batchSize=500).fit(traced)
    seen = {p.read_text() for p in log.iterdir()}
    assert seen and "(none)" not in seen, seen
    if mode == "step":
        assert seen == {"mbkm fit: prepare (keyed rows, cached)"}
        return
    assert {"mbkm fit: count the rows", "mbkm fit: the epochs' sample to the driver"} <= seen
    assert any(s.startswith("mbkm fit: exact pass after pass") for s in seen), seen
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None
