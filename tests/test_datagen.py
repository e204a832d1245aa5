"""Synthetic blobs: known centers, honoured imbalance/outliers, partition-independent rows."""
import numpy as np
import pytest

from minibatch_kmeans.tables.datagen import (BlobSpec, blobs, centers_path, generate_chunk,
                                             read_centers, true_centers, write_blobs)
from minibatch_kmeans.errors import InvalidParamError
from minibatch_kmeans.tables.io import read_table


def chunk_frame(spec, chunk_id=0):
    centers, weights = true_centers(spec)
    return generate_chunk(spec, centers, weights, chunk_id).to_pandas()


# -- NumPy / Arrow only -------------------------------------------------------------------------


def test_true_centers_shapes_and_weights():
    spec = BlobSpec(rows=10, n_features=5, k=7, imbalance=4.0, seed=3, center_box=2.0)
    centers, weights = true_centers(spec)
    assert centers.shape == (7, 5) and weights.shape == (7,)
    assert np.all(np.abs(centers) <= 2.0)
    assert weights.sum() == pytest.approx(1.0)
    assert weights.max() / weights.min() == pytest.approx(4.0)
    again = true_centers(spec)
    np.testing.assert_array_equal(centers, again[0])
    np.testing.assert_array_equal(weights, again[1])
    other = true_centers(BlobSpec(rows=10, n_features=5, k=7, imbalance=4.0, seed=4))
    assert not np.allclose(centers, other[0])


def test_balanced_and_single_cluster_weights():
    _, w = true_centers(BlobSpec(rows=10, n_features=2, k=5))
    np.testing.assert_allclose(w, 0.2)
    c, w = true_centers(BlobSpec(rows=10, n_features=2, k=1, imbalance=10))
    assert c.shape == (1, 2) and w.tolist() == [1.0]


def test_chunk_columns_ids_and_rows():
    spec = BlobSpec(rows=1000, n_features=3, k=4, seed=1, chunk_rows=400)
    assert spec.n_chunks == 3
    df = chunk_frame(spec, 2)
    assert list(df.columns) == ["x0", "x1", "x2", "label", "id"]
    assert [str(t) for t in df.dtypes] == ["float64"] * 3 + ["int32", "int64"]
    assert df["id"].tolist() == list(range(800, 1000))
    assert df["label"].between(0, 3).all()
    first = chunk_frame(spec, 0)
    assert len(first) == 400 and first["id"].tolist() == list(range(400))
    assert first.equals(chunk_frame(spec, 0))  # deterministic
    assert not first[["x0"]].equals(chunk_frame(BlobSpec(rows=1000, n_features=3, k=4, seed=2,
                                                         chunk_rows=400), 0)[["x0"]])


def test_rows_are_centers_plus_noise_of_the_given_spread():
    spec = BlobSpec(rows=20000, n_features=4, k=3, spread=0.5, seed=5, chunk_rows=20000)
    centers, _ = true_centers(spec)
    df = chunk_frame(spec)
    X = df[["x0", "x1", "x2", "x3"]].to_numpy()
    resid = X - centers[df["label"].to_numpy()]
    assert abs(resid.mean()) < 0.02
    assert resid.std() == pytest.approx(0.5, rel=0.03)


def test_imbalance_is_honoured():
    spec = BlobSpec(rows=60000, n_features=2, k=4, imbalance=8.0, seed=2, chunk_rows=60000)
    _, weights = true_centers(spec)
    counts = np.bincount(chunk_frame(spec)["label"].to_numpy(), minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), weights, rtol=0.1)
    assert counts.max() / counts.min() == pytest.approx(8.0, rel=0.15)


def test_outliers_are_honoured():
    spec = BlobSpec(rows=40000, n_features=3, k=3, outlier_fraction=0.05, seed=9,
                    chunk_rows=40000, center_box=10.0, spread=1.0)
    df = chunk_frame(spec)
    out = df["label"] == -1
    assert out.mean() == pytest.approx(0.05, abs=0.006)
    X = df.loc[out, ["x0", "x1", "x2"]].to_numpy()
    assert np.all(np.abs(X) <= 13.0)
    assert X.std() > 5  # uniform over the box, not around a center
    assert (df.loc[~out, "label"] >= 0).all()
    assert not (chunk_frame(BlobSpec(rows=100, n_features=3, k=3))["label"] == -1).any()


@pytest.mark.parametrize("field, value", [
    ("rows", 0), ("n_features", 0), ("k", 0), ("chunk_rows", 0), ("seed", -1),
    ("spread", 0.0), ("spread", float("nan")), ("imbalance", 0.5),
    ("outlier_fraction", 1.0), ("outlier_fraction", -0.1), ("rows", 2.5),
])
def test_bad_spec(field, value):
    kw = dict(rows=10, n_features=2, k=2)
    kw[field] = value
    with pytest.raises(InvalidParamError, match=field):
        BlobSpec(**kw).validate()


# -- through Spark ---------------------------------------------------------------------------


def test_rows_do_not_depend_on_partitioning(spark):
    spec = BlobSpec(rows=2000, n_features=3, k=4, imbalance=3.0, outlier_fraction=0.02,
                    seed=11, chunk_rows=300)
    df1, c1, w1 = blobs(spark, spec, partitions=1)
    df3, c3, w3 = blobs(spark, spec, partitions=3)
    assert df1.columns == ["x0", "x1", "x2", "label", "id"]
    assert [t for _, t in df1.dtypes] == ["double"] * 3 + ["int", "bigint"]
    p1 = df1.toPandas().sort_values("id").reset_index(drop=True)
    p3 = df3.toPandas().sort_values("id").reset_index(drop=True)
    assert len(p1) == 2000 and p1["id"].tolist() == list(range(2000))
    assert p1.equals(p3)
    np.testing.assert_array_equal(c1, c3)
    # the same rows as the driver-side chunk function
    expected = chunk_frame(spec, 6)
    np.testing.assert_array_equal(p1.iloc[1800:].to_numpy(), expected.to_numpy())


def test_write_blobs_saves_table_and_centers(spark, tmp_path):
    spec = BlobSpec(rows=2000, n_features=2, k=3, seed=4, chunk_rows=700)
    out = str(tmp_path / "blobs")
    info = write_blobs(spark, spec, out, partitions=2)
    assert info["centersPath"] == centers_path(out) == out + "_centers"
    table = read_table(spark, out)
    assert table.count() == 2000
    assert sorted(table.columns) == ["id", "label", "x0", "x1"]
    centers, weights = read_centers(spark, out)
    expected_c, expected_w = true_centers(spec)
    np.testing.assert_array_equal(centers, expected_c)
    np.testing.assert_array_equal(weights, expected_w)
    saved = read_table(spark, info["centersPath"])
    assert [t for _, t in saved.dtypes] == ["int", "array<double>", "double"]
    # re-running overwrites (safe to re-run)
    write_blobs(spark, spec, out, partitions=1)
    assert read_table(spark, out).count() == 2000
