"""The comparison with MLlib KMeans: the shared measures, the result, the files, the job."""
import json

import numpy as np
import pytest
from pyspark.ml.clustering import KMeans
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from helpers import blobs, cols, columns_df, sq_cost
from minibatch_kmeans.evaluate.compare import (clustering_costs, compare_with_mllib, markdown,
                                               match_centers)
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.errors import InvalidInputError, InvalidParamError
from minibatch_kmeans_jobs import compare as compare_job

D = 4


@pytest.fixture(scope="module")
def data(spark):
    X, _, centers = blobs(n=3000, k=5, d=D, spread=1.0, seed=11)
    return X, centers, columns_df(spark, X).cache()


@pytest.fixture(scope="module")
def result(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    est = MiniBatchKMeans(k=5, inputCols=cols(D), seed=3, batchSize=500)
    r = compare_with_mllib(data[2], est, sample_size=1000, trajectory_points=5, repeats=3,
                           output_dir=str(out))
    return r, out


def test_result_has_every_key_with_sane_values(result):
    r, _ = result
    assert r["data"] == {**r["data"], "rows": 3000, "features": D, "k": 5}
    assert r["data"]["sample_rows"] == 1000
    # each side fitted its warm-up rows (10,000 by default: here the whole table) untimed
    assert r["data"]["warm_up_rows"] == 3000
    for side in ("ours", "mllib"):
        s = r[side]
        assert s["fit_seconds"] > 0 and s["cost"] > 0
        # three timed fits per side (repeats=3): the time is their median
        runs = s["fit_seconds_runs"]
        assert len(runs) == 3 and s["fit_seconds"] == sorted(runs)[1]
        assert -1 <= s["silhouette"] <= 1
        assert sum(s["cluster_sizes"]) == 3000 and len(s["cluster_sizes"]) == 5
    assert r["ours"]["steps"] >= 1 and 0 < r["ours"]["rows_seen"]
    assert r["mllib"]["iterations"] >= 1
    a = r["agreement"]
    assert -1 <= a["ari"] <= 1 and 0 <= a["nmi"] <= 1
    assert 0 <= a["center_distance_mean"] <= a["center_distance_max"]
    assert r["speedup"] == pytest.approx(r["mllib"]["fit_seconds"] / r["ours"]["fit_seconds"])
    assert r["cost_ratio"] == pytest.approx(r["ours"]["cost"] / r["mllib"]["cost"])
    assert r["mllib"]["params"]["solver"] == "block"
    assert r["mllib"]["params"]["maxIter"] == 20
    assert isinstance(r["mllib"]["native_blas"]["available"], bool)
    # the shared costs are the true costs of each side's centers
    refs = r["references"]
    assert set(refs) == {"sklearn_minibatch", "sklearn_kmeans"}
    best = min(v["cost"] for v in [r["ours"], r["mllib"], *refs.values()])
    assert refs["sklearn_kmeans"]["cost"] <= 1.01 * best
    assert r["ours"]["cost"] <= 1.05 * refs["sklearn_kmeans"]["cost"]
    # the trajectory: costs recorded at increasing times, the last being the final centers
    traj = r["ours"]["trajectory"]
    assert 1 <= len(traj) <= 6
    assert [t["step"] for t in traj] == sorted({t["step"] for t in traj})
    assert traj[-1]["step"] == r["ours"]["passes"]  # one point per pass
    assert traj[-1]["cost"] == pytest.approx(r["ours"]["cost"], rel=1e-9)
    assert all(t["seconds"] <= r["ours"]["fit_seconds"] for t in traj)
    # reaching MLlib's cost means to float64 precision: no "never reached" at cost ratio 1
    reached = r["ours"]["seconds_to_mllib_cost"]
    if r["ours"]["cost"] <= r["mllib"]["cost"] * (1 + 1e-12):
        assert reached is not None and reached <= traj[-1]["seconds"]
    else:
        assert reached is None or reached < traj[-1]["seconds"]


def test_writes_json_markdown_and_pngs(result):
    r, out = result
    saved = json.loads((out / "compare.json").read_text())
    for key in ("data", "ours", "mllib", "agreement", "speedup", "cost_ratio"):
        assert key in saved
    assert saved["ours"]["cost"] == pytest.approx(r["ours"]["cost"])
    md = (out / "compare.md").read_text()
    assert md == markdown(r)
    assert "| full-data cost |" in md and "adjusted Rand index" in md
    assert "each side first fitted 3,000 of its rows, untimed" in md
    assert "the median of 3 timed fits per side, taken in turn (ours: " in md
    for name in ("cost_vs_seconds.png", "cluster_sizes.png", "pca.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert name in md


def test_shared_cost_agrees_with_mllib_training_cost(spark, data):
    X, _, df = data
    vec = df.select(array_to_vector(F.array(*cols(D))).alias("features"))
    model = KMeans(k=5, seed=1, maxIter=50, tol=0.0, solver="block").fit(vec)
    # MLlib's trainingCost is the cost before its last update: equal once Lloyd converged
    assert model.summary.numIter < 50
    [m] = clustering_costs(vec, [np.array(model.clusterCenters())])
    assert m["cost"] == pytest.approx(model.summary.trainingCost, rel=1e-6)
    assert sorted(m["sizes"]) == sorted(model.summary.clusterSizes)


def test_shared_cost_is_exact_and_weighted(spark):
    rng = np.random.default_rng(4)
    X = rng.normal(0, 1, (500, 3)) + 1e4  # far from the origin: no cancellation error
    w = rng.uniform(0, 2, 500)
    C1, C2 = X[:4] + 0.1, X[10:17]
    df = columns_df(spark, X, weights=w)
    m1, m2 = clustering_costs(df, [C1, C2], input_cols=cols(3))
    assert m1["cost"] == pytest.approx(sq_cost(X, C1), rel=1e-9)
    assert m2["cost"] == pytest.approx(sq_cost(X, C2), rel=1e-9)
    assert sum(m1["sizes"]) == 500 and len(m2["sizes"]) == 7
    [mw] = clustering_costs(df, [C1], input_cols=cols(3), weight_col="w")
    assert mw["cost"] == pytest.approx(sq_cost(X, C1, w), rel=1e-9)
    assert sum(mw["weights"]) == pytest.approx(w.sum())


def test_shared_cost_rejects_invalid_rows_and_bad_centers(spark):
    df = spark.createDataFrame([(1.0, 2.0), (float("nan"), 1.0), (None, 0.0)], "a double, b double")
    with pytest.raises(InvalidInputError, match="2 rows have null, NaN or infinite"):
        clustering_costs(df, [[[0.0, 0.0]]], input_cols=["a", "b"])
    with pytest.raises(InvalidParamError, match=r"center set 0 has shape \(1, 3\)"):
        clustering_costs(df, [[[0.0, 0.0, 0.0]]], input_cols=["a", "b"])


def test_hungarian_matching_recovers_a_known_permutation():
    rng = np.random.default_rng(0)
    A = rng.normal(0, 10, (30, 6))
    perm = rng.permutation(30)
    B = A[perm] + rng.normal(0, 0.01, (30, 6))
    m = match_centers(A, B)
    inverse = np.argsort(perm)
    assert m["pairs"] == [(i, int(inverse[i])) for i in range(30)]
    assert m["max"] < 0.1 and m["mean"] <= m["max"]
    with pytest.raises(InvalidParamError, match="cannot be matched"):
        match_centers(A, B[:, :3])


def test_invalid_rows_error_or_skip(spark, tmp_path):
    X, _, _ = blobs(n=400, k=3, d=2, seed=2)
    rows = [tuple(map(float, r)) for r in X] + [(float("nan"), 1.0), (None, 2.0)]
    df = spark.createDataFrame(rows, "x0 double, x1 double")
    with pytest.raises(InvalidInputError, match="2 .*handleInvalid='skip'"):
        compare_with_mllib(df, MiniBatchKMeans(k=3, inputCols=cols(2)))
    est = MiniBatchKMeans(k=3, inputCols=cols(2), handleInvalid="skip", batchSize=100)
    r = compare_with_mllib(df, est, references=["sklearn_minibatch"], sample_size=200)
    assert r["data"]["rows"] == 400 and r["data"]["skipped_rows"] == 2
    assert list(r["references"]) == ["sklearn_minibatch"]
    assert sum(r["mllib"]["cluster_sizes"]) == 400


@pytest.mark.parametrize("params, kwargs, match", [
    ({}, {"mllib": {"fast": True}}, r"mllib Params \['fast'\] are not supported"),
    ({"distanceMeasure": "cosine"}, {}, "squared Euclidean"),
    ({}, {"sample_size": 1}, "sample_size=1 is invalid"),
    ({}, {"repeats": 0}, "repeats=0 is invalid"),
    ({}, {"sample_size": 2_000_000}, r"sample_size=2000000 is invalid: expected an integer in"),
    ({"handleInvalid": "keep"}, {}, "handleInvalid='keep'"),
    ({}, {"references": ["sklearn_dbscan"]}, "references=.*sklearn_dbscan"),
    ({"batchSize": 0}, {}, "batchSize"),
])
def test_bad_options_fail_before_any_fit(data, params, kwargs, match):
    est = MiniBatchKMeans(k=5, inputCols=cols(D), **params)
    with pytest.raises(InvalidParamError, match=match):
        compare_with_mllib(data[2], est, **kwargs)
    with pytest.raises(InvalidParamError, match="expected a configured MiniBatchKMeans"):
        compare_with_mllib(data[2], 5)


def test_compare_job_writes_the_three_kinds_of_files(spark, data, tmp_path, monkeypatch,
                                                     request, capsys):
    monkeypatch.chdir(request.config.rootpath)
    path = str(tmp_path / "table")
    data[2].write.parquet(path)
    out = tmp_path / "out"
    args = ["--conf", "conf/compare.yaml", "--set", f"input.path={path}",
            "--set", f"input.features.inputCols=[{', '.join(cols(D))}]",
            "--set", "model.k=5", "--set", "model.batchSize=500",
            "--set", "compare.sample_size=500", "--set", "compare.mllib.maxIter=5",
            "--set", f"output.dir={out}"]
    code = compare_job.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = json.loads((out / "compare.json").read_text())
    assert saved["mllib"]["params"]["maxIter"] == 5 and saved["data"]["k"] == 5
    assert (out / "compare.md").read_text() in captured.out + "\n"
    assert all((out / n).stat().st_size > 5000 for n in
               ("cost_vs_seconds.png", "cluster_sizes.png", "pca.png"))
    code = compare_job.main(args + ["--set", "compare.mllib.solver=fast"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: compare.mllib.solver='fast' is invalid")
    assert len(err.splitlines()) == 1
