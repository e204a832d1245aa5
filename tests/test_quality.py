"""The data quality gate on real DataFrames: counts, quarantine reasons, thresholds."""
import math

import pytest
from pyspark.ml.linalg import Vectors

from minibatch_kmeans.errors import InvalidInputError
from minibatch_kmeans.tables.quality import (DataQualityError, QualityRules, check_quality,
                                             quality_rows)
from minibatch_kmeans.spark.features import resolve

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def table(spark):
    rows = [(1, 1.0, 2.0, 1.0), (2, None, 2.0, 1.0), (3, NAN, 5.0, 1.0), (4, 1.0, INF, 1.0),
            (5, 1.0, 500.0, 1.0), (6, 0.5, 0.5, -1.0), (7, 2.0, 3.0, 2.0), (8, -3.0, 1.0, 1.0)]
    return spark.createDataFrame(rows, "id long, a double, b double, w double")


def test_counts_reasons_and_quarantine(table):
    spec = resolve(table, "features", ["a", "b"], "w")
    rules = QualityRules(ranges={"a": (-1.0, None), "b": (None, 100.0)},
                         max_invalid_fraction=1.0)
    result = check_quality(table, spec, rules)
    assert result.rows == 8
    # invalid: 2 (a null), 3 (a NaN), 4 (b inf), 5 (b above max), 6 (weight), 8 (a below min)
    assert result.invalid_rows == 6 and result.valid_rows == 2 and result.passed
    assert result.by_column == {"a": {"null": 1, "NaN": 1, "below min": 1},
                                "b": {"infinite": 1, "above max": 1},
                                "w": {"invalid weight": 1}}
    assert sorted(r.id for r in result.valid().collect()) == [1, 7]
    reasons = {r.id: r.reason for r in result.quarantine().collect()}
    assert reasons == {2: "a: null", 3: "a: NaN", 4: "b: infinite", 5: "b: above max",
                       6: "w: invalid weight", 8: "a: below min"}
    assert set(result.quarantine().columns) == {"id", "a", "b", "w", "reason"}
    report = result.report()
    assert report["byReason"]["null"] == 1 and report["invalidFraction"] == 6 / 8
    assert report["passed"] is True and report["failure"] is None
    rows = quality_rows(report)
    assert rows[0] == (None, None, 6, 8)
    assert ("a", "null", 1, 8) in rows and len(rows) == 1 + 6


def test_threshold_fails_with_a_one_line_reason(table):
    spec = resolve(table, "features", ["a", "b"])
    result = check_quality(table, spec, QualityRules(max_invalid_fraction=0.05), what="table t")
    assert not result.passed
    with pytest.raises(DataQualityError) as e:
        result.raise_if_failed()
    msg = str(e.value)
    assert "\n" not in msg
    assert "table t has 3 invalid rows of 8 (37.50%)" in msg and "max_invalid_fraction=0.05" in msg


def test_all_invalid_and_empty_fail(spark):
    df = spark.createDataFrame([(None,), (NAN,)], "a double")
    spec = resolve(df, "features", ["a"])
    result = check_quality(df, spec, QualityRules(max_invalid_fraction=1.0))
    assert "no valid rows: all 2 rows are invalid" in result.failure
    empty = check_quality(df.limit(0), spec)
    assert empty.failure == "the input has 0 rows: expected at least 1"


def test_expected_columns_name_missing_and_retyped(table):
    spec = resolve(table, "features", ["a", "b"])
    with pytest.raises(InvalidInputError) as e:
        check_quality(table, spec, QualityRules(expected_columns={
            "id": "string", "a": "double", "zz": "double", "b": "numeric"}))
    msg = str(e.value)
    assert "missing column(s) ['zz']" in msg and "'id' is bigint, expected string" in msg
    assert "'a'" not in msg.split("(columns")[0] and "'b' is" not in msg
    with pytest.raises(InvalidInputError, match=r"ranges name \['id'\]"):
        check_quality(table, spec, QualityRules(ranges={"id": (0, 1)}))


def test_vector_features_and_element_ranges(spark):
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([1.0, NAN]),),
                                (Vectors.dense([1.0, 9.0]),), (None,),
                                (Vectors.dense([1.0, 2.0, 3.0]),)], ["features"])
    spec = resolve(df, "features", None, n_features=2)
    result = check_quality(df, spec, QualityRules(ranges={"features": (0.0, 5.0)},
                                                  max_invalid_fraction=1.0))
    assert result.rows == 5 and result.invalid_rows == 4
    assert result.by_column == {"features": {"NaN": 1, "above max": 1, "null": 1,
                                             "wrong length": 1}}
    reasons = sorted(r.reason for r in result.quarantine().collect())
    assert reasons == ["features: NaN", "features: above max", "features: null",
                       "features: wrong length"]
    assert not math.isnan(result.report()["invalidFraction"])
