"""Which engine handles a Delta table: Spark's own Delta source when the session has it
(Databricks, or delta-spark with its jars), else the delta-rs fallback of this package.

:func:`native_delta_available` tells, from settings only (no Spark job, no
``sparkContext``, so also on Spark Connect). Set the environment variable
``MINIBATCH_KMEANS_DELTA`` to ``spark`` or ``deltalake`` to override the detection
(Databricks Connect from a laptop, for example). The fallback needs the optional
``deltalake`` package (delta-rs, ``pip install minibatch-kmeans[delta]``), imported by
:func:`require_deltalake` only when a Delta table is used.
"""
from __future__ import annotations

import os

from pyspark.sql import SparkSession

from ...errors import InvalidParamError

#: Overrides the detection of Spark's Delta source: "spark" or "deltalake".
ENGINE_ENV = "MINIBATCH_KMEANS_DELTA"


def session_conf(spark: SparkSession, key: str) -> str:
    """The session's setting ``key``, or "" when unset or not shown."""
    try:
        return spark.conf.get(key, None) or ""
    except Exception:  # noqa: BLE001 - a session may refuse to show a setting
        return ""


def native_delta_available(spark: SparkSession) -> bool:
    """Whether ``spark`` reads and writes Delta itself.

    True on Databricks (``DATABRICKS_RUNTIME_VERSION``, or a Databricks cluster's settings
    seen through Spark Connect) and for sessions configured for delta-spark
    (``spark.sql.extensions`` has ``io.delta.sql.DeltaSparkSessionExtension``, or
    ``spark.sql.catalog.spark_catalog`` is a ``DeltaCatalog``). Reads settings only: no
    Spark job, no ``sparkContext``. ``MINIBATCH_KMEANS_DELTA=spark|deltalake`` overrides.
    """
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced in ("spark", "native"):
        return True
    if forced in ("deltalake", "delta-rs"):
        return False
    if forced:
        raise InvalidParamError(f"{ENGINE_ENV}={forced!r} is not valid: expected 'spark' or "
                                "'deltalake' (or unset to detect)")
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    if "io.delta.sql.DeltaSparkSessionExtension" in session_conf(spark, "spark.sql.extensions"):
        return True
    if session_conf(spark, "spark.sql.catalog.spark_catalog").endswith("DeltaCatalog"):
        return True
    return bool(session_conf(spark, "spark.databricks.clusterUsageTags.sparkVersion"))


def require_deltalake():
    """The ``deltalake`` module; an ImportError saying how to install it when missing."""
    try:
        import deltalake
    except ImportError:
        raise ImportError(
            "this Spark session has no Delta source (Databricks, or delta-spark with its "
            "jars) and the deltalake package is not installed: install it with "
            "pip install 'minibatch-kmeans[delta]'") from None
    return deltalake
