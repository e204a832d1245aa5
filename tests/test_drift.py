"""Reference statistics and drift reports on simulated drift, checked against NumPy/scipy
on the collected data."""
import json

import numpy as np
import pandas as pd
import pytest
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans.lifecycle.drift import (PSI_EPSILON, DriftThresholds, bin_edges,
                                              drift_markdown, drift_report, holdout_split,
                                              plot_drift, psi, reference_statistics,
                                              schema_differences)
from minibatch_kmeans.errors import InvalidInputError, InvalidParamError
from minibatch_kmeans.evaluate.report import write_json
from minibatch_kmeans.spark.features import FeatureSpec

D, K = 5, 3
COLS = [f"x{i}" for i in range(D)]
CENTERS = np.array([[-4.0, 0.0, 3.0, 1.0, -2.0], [3.0, 4.0, -3.0, 0.0, 2.0],
                    [0.0, -4.0, 0.0, -3.0, 4.0]])


def sample(n, seed, shift=None):
    """n rows of three Gaussian blobs (weights 0.5, 0.3, 0.2); ``shift`` adds to columns."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(K, size=n, p=[0.5, 0.3, 0.2])
    X = CENTERS[labels] + rng.normal(0, 1.0, size=(n, D))
    if shift:
        for j, v in shift.items():
            X[:, j] += v
    return X


def frame(spark, X, cols=COLS):
    return spark.createDataFrame(pd.DataFrame(X, columns=cols))


@pytest.fixture(scope="module")
def fitted(spark):
    df = frame(spark, sample(3000, seed=1))
    train, holdout = holdout_split(df, 0.3, seed=7)
    model = MiniBatchKMeans(k=K, inputCols=COLS, seed=3, batchSize=2000, maxIter=3,
                            computeTrainingCost=False, prepareStorage="memory").fit(train)
    reference = reference_statistics(model, holdout)
    X_ref = holdout.select(*COLS).toPandas().to_numpy()
    return model, reference, X_ref


def nearest(X, model):
    C = np.vstack(model.clusterCenters())
    d = np.sqrt(((X[:, None, :] - C[None]) ** 2).sum(-1))
    return d.argmin(1), d.min(1)


def bin_props(x, edges):
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) / len(x)


def test_holdout_split_is_deterministic_and_by_content(spark):
    X = sample(1000, seed=5)
    a = frame(spark, X)
    b = frame(spark, X[::-1]).repartition(3)  # same rows, other order and partitioning
    rest_a, hold_a = holdout_split(a, 0.25, seed=11)
    rows = sorted(tuple(r) for r in hold_a.collect())
    assert rows == sorted(tuple(r) for r in holdout_split(b, 0.25, seed=11)[1].collect())
    assert 0.2 < len(rows) / 1000 < 0.3
    assert rest_a.count() + len(rows) == 1000
    other = sorted(tuple(r) for r in holdout_split(a, 0.25, seed=12)[1].collect())
    assert other != rows
    with pytest.raises(InvalidParamError, match="fraction=1.5"):
        holdout_split(a, 1.5, seed=1)


def test_reference_statistics_match_numpy(fitted):
    model, ref, X = fitted
    assert ref["rows"] == ref["validRows"] == len(X) and ref["invalidRows"] == 0
    assert ref["k"] == K and list(ref["features"]) == COLS
    assert ref["sampleRows"] == len(X)  # fewer rows than sample_rows: the sample is all rows
    for j, name in enumerate(COLS):
        f = ref["features"][name]
        assert f["mean"] == pytest.approx(X[:, j].mean(), rel=1e-9)
        assert f["std"] == pytest.approx(X[:, j].std(ddof=1), rel=1e-9)
        assert len(f["edges"]) == 9 and f["edges"] == sorted(f["edges"])
        assert np.allclose(f["edges"], np.quantile(X[:, j], np.arange(1, 10) / 10), atol=0.05)
        assert np.allclose(f["proportions"], bin_props(X[:, j], f["edges"]))
        hist = np.histogram(X[:, j], bin_edges(f))[0] / len(X)  # [a, b) bins, -inf/+inf ends
        assert np.allclose(f["proportions"], hist)
        assert sorted(f["sample"]) == pytest.approx(sorted(X[:, j]))
    labels, dist = nearest(X, model)
    assert [c["rows"] for c in ref["clusters"]] == np.bincount(labels, minlength=K).tolist()
    for c in ref["clusters"]:
        assert c["meanDistance"] == pytest.approx(dist[labels == c["cluster"]].mean())
    assert ref["meanDistance"] == pytest.approx(dist.mean())
    assert json.loads(json.dumps(ref, allow_nan=False)) == ref


def test_same_distribution_no_drift(spark, fitted):
    model, ref, _ = fitted
    X = sample(3000, seed=2)
    X[7, 1] = np.nan  # an invalid row: counted, left out of the statistics
    report = drift_report(model, ref, frame(spark, X))
    assert report["drift"] is False and report["reasons"] == []
    assert report["rows"] == 3000 and report["invalidRows"] == 1
    assert sum(report["clusters"]["rows"]) == report["validRows"] == 2999
    assert not report["schema"]["drift"] and report["driftedFeatures"] == []
    assert all(f["psi"] < 0.05 for f in report["features"].values())
    assert report["clusters"]["js"] < 0.01
    assert 0.9 < report["distanceRatio"] < 1.1
    assert report["features"]["x0"]["ksSampleRows"] == ref["sampleRows"]


def test_mean_shift_in_three_features_is_found(spark, fitted, tmp_path):
    model, ref, _ = fitted
    stds = [ref["features"][c]["std"] for c in COLS]
    shifted = sample(3000, seed=2, shift={j: 1.5 * stds[j] for j in (0, 2, 4)})
    report = drift_report(model, ref, frame(spark, shifted))
    assert report["drift"] is True
    assert report["driftedFeatures"] == ["x0", "x2", "x4"]
    for name in ("x0", "x2", "x4"):
        f = report["features"][name]
        assert f["psi"] > 0.2 and f["ksStatistic"] > 0.1 and f["ksPvalue"] < 1e-6
        assert f["meanShiftStd"] == pytest.approx(1.5, abs=0.15)
    assert any("3 of 5 features drifted" in r for r in report["reasons"])
    json.dumps(report, allow_nan=False)
    path = write_json(report, str(tmp_path / "drift.json"))
    assert json.load(open(path))["driftedFeatures"] == ["x0", "x2", "x4"]
    md = drift_markdown(report)
    assert "**Drift: yes**" in md and "| x2 |" in md and md.count("**yes**") == 3
    png = plot_drift(report, str(tmp_path / "drift.png"))
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_figures_match_numpy_and_scipy(spark, fitted):
    """A small new table (fewer rows than the reference sample), so that both KS samples
    are every row and the test can recompute everything from the collected data."""
    model, ref, X_ref = fitted
    X_new = sample(500, seed=9, shift={1: 0.8})
    report = drift_report(model, ref, frame(spark, X_new))
    for j, name in enumerate(COLS):
        f, r = report["features"][name], ref["features"][name]
        now = bin_props(X_new[:, j], r["edges"])
        e = np.maximum(r["proportions"], PSI_EPSILON)
        a = np.maximum(now, PSI_EPSILON)
        assert f["psi"] == pytest.approx(np.sum((a - e) * np.log(a / e)), rel=1e-9)
        assert f["psi"] == pytest.approx(psi(r["proportions"], now), rel=1e-12)
        ks = ks_2samp(X_ref[:, j], X_new[:, j])
        assert f["ksSampleRows"] == 500
        assert f["ksStatistic"] == pytest.approx(ks.statistic)
        assert f["ksPvalue"] == pytest.approx(ks.pvalue, rel=1e-6)
    labels_ref, d_ref = nearest(X_ref, model)
    labels_new, d_new = nearest(X_new, model)
    p = np.bincount(labels_ref, minlength=K) / len(X_ref)
    q = np.bincount(labels_new, minlength=K) / len(X_new)
    assert report["clusters"]["current"] == pytest.approx(q.tolist())
    assert report["clusters"]["js"] == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    assert report["distanceRatio"] == pytest.approx(d_new.mean() / d_ref.mean())
    assert report["driftedFeatures"] == ["x1"]


def test_feature_added_and_removed_is_schema_drift(spark, fitted, tmp_path):
    model, ref, _ = fitted
    X = sample(500, seed=4)
    df = frame(spark, np.column_stack([X, X[:, 0]]), COLS + ["x5"]).drop("x3")
    report = drift_report(model, ref, df)
    assert report["drift"] is True
    assert report["schema"] == {"removed": ["x3"], "added": ["x5"], "retyped": [],
                                "drift": True}
    assert report["features"] is None and report["clusters"] is None
    assert "x3" in report["reasons"][0] and "renamed?" in report["reasons"][0]
    json.dumps(report, allow_nan=False)
    assert "Statistics skipped" in drift_markdown(report)
    assert len(open(plot_drift(report, str(tmp_path / "s.png")), "rb").read()) > 1000
    # a retyped feature and an ignored id column
    df2 = frame(spark, X).withColumn("x1", F.col("x1").cast("float")).withColumn("id", F.lit(1))
    diff = schema_differences(df2, model.featureSchema, model.inputSchema, ignore=["id"])
    assert diff == {"removed": [], "added": [], "retyped": [
        {"column": "x1", "expected": "double", "actual": "float"}], "drift": True}


def test_vector_features_model(spark, fitted):
    """A model on a vector column, built by hand from the fitted centers (no input schema
    recorded: the reference keeps the table's)."""
    X = sample(1000, seed=6)
    df = (frame(spark, X).select(F.array(*COLS).alias("arr"))
          .select(array_to_vector("arr").alias("features")))
    model = MiniBatchKMeansModel(np.vstack(fitted[0].clusterCenters()),
                                 spec=FeatureSpec("vector", ("features",), D))
    ref = reference_statistics(model, df, bins=5, sample_rows=300)
    assert list(ref["features"]) == [f"features[{j}]" for j in range(D)]
    assert ref["inputSchema"] == {"features": "vector"}
    assert ref["sampleRows"] == 300 and len(ref["features"]["features[4]"]["sample"]) == 300
    assert ref["features"]["features[2]"]["mean"] == pytest.approx(X[:, 2].mean())
    assert len(ref["features"]["features[0]"]["proportions"]) == 5
    report = drift_report(model, ref, df)
    assert report["drift"] is False
    assert all(f["psi"] == pytest.approx(0.0, abs=1e-12) and f["ksStatistic"] == 0.0
               for f in report["features"].values())


def test_thresholds_are_validated():
    assert DriftThresholds().as_dict() == {"psi": 0.2, "ks_pvalue": 0.01, "ks_statistic": 0.1,
                                           "js": 0.1, "distance_ratio": 1.5}
    with pytest.raises(InvalidParamError, match="ks_pvalue=2"):
        DriftThresholds(ks_pvalue=2)


def test_report_files_are_replaced_whole_by_concurrent_writers(tmp_path):
    """Two writers of one report file (two monitors sharing an output folder) never share
    a temporary file: the file is always one writer's whole JSON, and no temporary file
    stays behind."""
    import json
    import threading

    from minibatch_kmeans.evaluate.report import write_json, write_text

    path = str(tmp_path / "drift.json")
    barrier = threading.Barrier(2)
    errors = []

    def writer(name):
        barrier.wait()
        try:
            for i in range(50):
                write_json({"writer": name, "i": i, "pad": "x" * 20000}, path)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(open(path).read())["writer"] in ("a", "b")
    write_text("# drift\n", str(tmp_path / "drift.md"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift.json", "drift.md"]


def test_wide_reference_statistics_bound_the_sample_and_name_the_feature_limit(
        spark, monkeypatch):
    """Wide features (issue 18): the hashed sample is cut to MAX_SAMPLE_VALUES values (rows
    x features), so the driver's memory and the JSON stay bounded, and more features than
    MAX_FEATURES (one aggregation's columns) fail before any Spark job, naming the limit.
    The limits are lowered so that 40 features exercise both at test size."""
    from minibatch_kmeans.lifecycle import drift as drift_mod

    d = 40
    X = np.random.default_rng(4).normal(size=(300, d)) + np.repeat([[0.0], [6.0]], 150, 0)
    df = spark.createDataFrame([(x.tolist(),) for x in X], "a array<double>")
    model = MiniBatchKMeans(k=2, featuresCol="a", seed=1,
                            computeTrainingCost=False).fit(df)
    monkeypatch.setattr(drift_mod, "MAX_SAMPLE_VALUES", 20 * d)
    ref = reference_statistics(model, df, bins=4, sample_rows=200)
    assert ref["sampleRows"] == 20
    assert all(len(f["sample"]) == 20 for f in ref["features"].values())
    assert ref["validRows"] == 300 and len(ref["features"]) == d
    monkeypatch.setattr(drift_mod, "MAX_FEATURES", d - 1)
    with pytest.raises(InvalidInputError) as e:
        reference_statistics(model, df, bins=4)
    assert f"at most {d - 1} features" in str(e.value) and f"has {d}" in str(e.value)


def run_counting_jobs(spark, run):
    """``run()``'s result and the number of Spark jobs it started (its own job group)."""
    import uuid

    sc = spark.sparkContext
    group = f"drift-{uuid.uuid4().hex}"
    sc.setJobGroup(group, "counted by the test")
    try:
        result = run()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return result, len(sc.statusTracker().getJobIdsForGroup(group))


def test_the_long_layout_gives_the_narrow_layout_s_statistics(spark, fitted, monkeypatch):
    """Wide tables (from WIDE_FEATURES features) go through the long layout, one row per
    row and feature: forced on the narrow table, it gives the same reference statistics
    and drift report as the narrow layout, in as many Spark jobs."""
    from minibatch_kmeans.lifecycle import drift as drift_mod

    model, _, X = fitted
    X = X.copy()
    X[3, 2] = np.nan  # an invalid row: counted apart in both layouts
    df = frame(spark, X)
    new = frame(spark, sample(800, seed=9, shift={1: 1.0}))
    narrow, narrow_jobs = run_counting_jobs(spark, lambda: reference_statistics(model, df))
    narrow_report = drift_report(model, narrow, new)
    monkeypatch.setattr(drift_mod, "WIDE_FEATURES", 1)
    wide, wide_jobs = run_counting_jobs(spark, lambda: reference_statistics(model, df))
    wide_report = drift_report(model, wide, new)
    assert wide_jobs == narrow_jobs
    for key in ("rows", "invalidRows", "validRows", "sampleRows", "k", "bins"):
        assert wide[key] == narrow[key], key
    assert wide["invalidRows"] == 1
    assert wide["meanDistance"] == pytest.approx(narrow["meanDistance"], rel=1e-12)
    for name in COLS:
        w, n = wide["features"][name], narrow["features"][name]
        assert w["mean"] == pytest.approx(n["mean"], rel=1e-12)
        assert w["std"] == pytest.approx(n["std"], rel=1e-12)
        assert (w["min"], w["max"], w["edges"]) == (n["min"], n["max"], n["edges"])
        assert w["proportions"] == n["proportions"] and w["sample"] == n["sample"]
    for w, n in zip(wide["clusters"], narrow["clusters"]):
        assert w["rows"] == n["rows"]
        assert w["meanDistance"] == pytest.approx(n["meanDistance"], rel=1e-12)
    assert wide_report["driftedFeatures"] == narrow_report["driftedFeatures"] == ["x1"]
    assert wide_report["clusters"]["rows"] == narrow_report["clusters"]["rows"]
    for name in COLS:
        w, n = wide_report["features"][name], narrow_report["features"][name]
        assert w["proportions"] == n["proportions"]
        assert w["psi"] == pytest.approx(n["psi"], rel=1e-12)
        assert w["ksStatistic"] == n["ksStatistic"]
        assert w["mean"] == pytest.approx(n["mean"], rel=1e-12)


def test_reference_statistics_of_2000_features_in_a_fixed_number_of_jobs(spark):
    """d=2,000 (issue 18; the narrow layout did not finish 400): the long layout's plans do
    not grow with the features, the jobs are the three passes of a narrow table, the
    driver holds d x (bins + 5) figures and a sample of at most MAX_SAMPLE_VALUES values,
    and the figures match NumPy's."""
    from minibatch_kmeans.lifecycle import drift as drift_mod

    d, n = 2000, 120
    rng = np.random.default_rng(8)
    centers = np.vstack([np.zeros(d), np.full(d, 5.0)])
    labels = np.repeat([0, 1], n // 2)
    X = centers[labels] + rng.normal(size=(n, d))
    df = spark.createDataFrame([(x.tolist(),) for x in X], "features array<double>")
    model = MiniBatchKMeansModel(centers, spec=FeatureSpec("array", ("features",), d))
    ref, jobs = run_counting_jobs(
        spark, lambda: reference_statistics(model, df, bins=4, sample_rows=50))
    assert d >= drift_mod.WIDE_FEATURES and jobs <= 3 * 2  # three passes (a shuffle each)
    assert ref["validRows"] == n and len(ref["features"]) == d
    assert [c["rows"] for c in ref["clusters"]] == [n // 2, n // 2]
    for j in (0, 777, d - 1):
        f = ref["features"][f"features[{j}]"]
        assert f["mean"] == pytest.approx(X[:, j].mean(), rel=1e-9)
        assert f["std"] == pytest.approx(X[:, j].std(ddof=1), rel=1e-9)
        assert (f["min"], f["max"]) == (X[:, j].min(), X[:, j].max())
        assert f["edges"] == np.quantile(X[:, j], [0.25, 0.5, 0.75], method="inverted_cdf"
                                         ).tolist()
        assert np.allclose(f["proportions"], bin_props(X[:, j], f["edges"]))
        assert len(f["sample"]) == 50
    report, report_jobs = run_counting_jobs(spark, lambda: drift_report(model, ref, df))
    assert report_jobs <= 3 * 2
    assert report["drift"] is False and report["clusters"]["js"] == 0.0
    assert all(f["psi"] == 0.0 for f in report["features"].values())
