"""One session factory, no guessing.

``get_spark`` returns the active session when there is one (Databricks, Spark Connect,
spark-submit, a test fixture) and builds a local one only when there is none. Library
code never sets the master or jars of a session it did not build: those come from
spark-submit, the cluster, or the job's configuration. A local session it builds gets the
connector jars ``make jars`` fetched (:func:`connector_conf`: Delta and Kafka), when they
are there.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import sys
import weakref
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional

from pyspark.sql import SparkSession

from ..redaction import SPARK_REDACTION_REGEX, redact

logger = logging.getLogger(__name__)



#: HotSpot compiles no method of more than 8,000 bytes of bytecode (its HugeMethodLimit),
#: and Spark's whole-stage code for a projection over many columns (the validity test and
#: casts of 64 features: 9,141 bytes) then runs interpreted, each pass 2-3x slower. With
#: this limit Spark compiles such a stage piecewise instead, as its documentation advises
#: on HotSpot. Sessions built here set it; fits set it for their own jobs.
JIT_SIZED_CODEGEN = {"spark.sql.codegen.hugeMethodLimit": "8000"}

#: A "local" fit brings its rows to the driver as task results of tens of MB. Above
#: spark.task.maxDirectResultSize (1 MB by default) each result is stored in the block
#: manager and fetched back from it: more copies of the table through the JVM's heap.
#: Local sessions built here take results up to Spark's RPC message cap (128 MB) directly,
#: the driver being in the same JVM (1M x 32: the collect 1.0-1.7 s instead of 1.1-2.7 s,
#: in 2 fresh processes of 3 fits each). It is a setting of the JVM's start, so a session
#: built elsewhere keeps its own.
LOCAL_SESSION_CONF = {"spark.task.maxDirectResultSize": "128m"}


#: Names a folder of connector jars other than the one ``make jars`` fills.
JARS_ENV = "MINIBATCH_KMEANS_JARS"
#: What turns Spark's own Delta source on (delta-spark's jars on the classpath).
DELTA_CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog":
                  "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def connector_jars() -> List[str]:
    """The Spark connector jars (delta-spark, the Kafka source and what they need) that
    ``make jars`` fetched from Maven Central into this environment's ``jars/spark``
    folder, or those in the folder ``MINIBATCH_KMEANS_JARS`` names; [] when there are
    none."""
    folder = os.environ.get(JARS_ENV) or os.path.join(sys.prefix, "jars", "spark")
    return sorted(glob.glob(os.path.join(folder, "*.jar")))


def connector_conf(jars: Optional[List[str]] = None) -> Dict[str, str]:
    """Settings for a local session that puts ``jars`` (default: :func:`connector_jars`)
    on its classpath and, when delta-spark is among them, turns Delta on; {} without
    jars. On spark-submit, the same is ``--packages io.delta:delta-spark_2.13:4.4.0`` plus
    the two ``DELTA_CONF`` settings (see the README)."""
    jars = connector_jars() if jars is None else list(jars)
    if not jars:
        return {}
    conf = {"spark.jars": ",".join(jars)}
    if any(os.path.basename(j).startswith("delta-spark") for j in jars):
        conf.update(DELTA_CONF)
        # A local session reads a table's log in a few partitions, not Delta's default 50
        # (a small native write: 27 s with 50 here, 3 s with 2).
        conf["spark.databricks.delta.snapshotPartitions"] = "2"
    return conf


def is_connect(spark) -> bool:
    """True for a Spark Connect session (Databricks serverless): no RDD, no sparkContext.

    A Connect session exists only once its module is imported, so a classic session is told
    apart without importing the Connect client (grpc and its kin: about 0.3 s, which the
    first fit in a process would pay)."""
    module = sys.modules.get("pyspark.sql.connect.session")
    return module is not None and isinstance(spark, module.SparkSession)


def existing_session() -> Optional[SparkSession]:
    """This thread's active session, else the process's default one (built in another
    thread: a notebook's, a test's, the job that started this thread), else None."""
    try:
        return SparkSession.active()
    except Exception:  # noqa: BLE001 - pyspark raises its own error when there is none
        return None


def session_settings(master: Optional[str], conf: Optional[Mapping[str, str]] = None
                     ) -> Dict[str, str]:
    """The settings :func:`get_spark` builds a session with: its own, then (``master``
    set: a session it starts itself, not spark-submit's or Connect's) the connector jars'
    and, for a ``local`` master, :data:`LOCAL_SESSION_CONF`; ``conf`` last, so it wins."""
    # Spark's own redaction (UI, event log, its log lines) by default misses names with
    # only "key" in them, such as fs.s3a.access.key: redact what ours does.
    settings = {"spark.ui.showConsoleProgress": "false",
                "spark.redaction.regex": SPARK_REDACTION_REGEX,
                **JIT_SIZED_CODEGEN}
    if master is not None:
        if master.startswith("local"):
            settings.update(LOCAL_SESSION_CONF)
        settings.update(connector_conf())
    settings.update({str(k): str(v) for k, v in (conf or {}).items()})
    return settings


def get_spark(app_name: str = "minibatch-kmeans", master: Optional[str] = None,
              conf: Optional[Mapping[str, str]] = None) -> SparkSession:
    """Return the active SparkSession, or build one.

    Parameters
    ----------
    app_name : str
    master : str, optional
        Used only when no session is active and the process was not started by
        spark-submit or for Spark Connect (``SPARK_REMOTE``); default ``local[2]``.
    conf : mapping, optional
        Extra settings for a session this function builds. Values whose names contain
        key, secret, token or password are never logged.
    """
    active = existing_session()
    if active is not None:
        return active
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_REMOTE" in os.environ
    builder = SparkSession.builder.appName(app_name)
    if not launched:
        master = master or "local[2]"
        builder = builder.master(master)
        # Local Python workers must run this interpreter, which has this package installed
        # (pyspark reads the worker's interpreter from the environment, not the conf).
        if not os.environ.get("PYSPARK_PYTHON"):
            os.environ["PYSPARK_PYTHON"] = sys.executable
    settings = session_settings(None if launched else master, conf)
    for k, v in settings.items():
        builder = builder.config(k, v)
    logger.info("starting Spark session %s (%s)", app_name,
                ", ".join(f"{k}={redact(k, v)}" for k, v in sorted(settings.items())))
    return builder.getOrCreate()


@contextmanager
def job_session(app_name: str, master: Optional[str] = None,
                conf: Optional[Mapping[str, str]] = None) -> Iterator[SparkSession]:
    """:func:`get_spark` for a job: stops the session on exit only if it built it (a
    notebook's, a test's or spark-submit's active session is left running)."""
    owned = existing_session() is None
    spark = get_spark(app_name, master, conf)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


@contextmanager
def job_description(spark, text: str) -> Iterator[None]:
    """Spark jobs started by this thread in the block show ``text`` in the Spark UI: the
    job description on classic Spark (restored afterwards), a job tag on Spark Connect
    (commas and spaces become dashes, as tags allow). Never fails the block."""
    if is_connect(spark):
        tag = re.sub(r"[,\s]+", "-", text.strip()) or "mbkm"
        try:
            spark.addTag(tag)
        except Exception:  # noqa: BLE001 - a label only
            yield
            return
        try:
            yield
        finally:
            spark.removeTag(tag)
        return
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setJobDescription(before)


def is_cached(df) -> bool:
    """Whether ``df`` is persisted (its plan then carries an exact row count)."""
    try:
        level = df.storageLevel
    except Exception:  # noqa: BLE001 - a session that cannot tell
        return False
    return bool(level.useMemory or level.useDisk)


_PARALLELISM = weakref.WeakKeyDictionary()


def default_parallelism(spark) -> int:
    """Task slots of the session's cluster (``defaultParallelism``) without touching
    ``sparkContext`` (unavailable on Spark Connect): read from the conf, or else from how
    many partitions ``spark.range`` makes by default."""
    value = spark.conf.get("spark.default.parallelism", None)
    if value:
        return int(value)
    return _range_parallelism(spark)


def _range_parallelism(spark) -> int:
    """Partitions of a default ``spark.range``: a two-stage job (0.2-0.5 s here), so the
    answer is kept for the session's lifetime."""
    if spark not in _PARALLELISM:
        from pyspark.sql import functions as F

        parts = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
        row = parts.agg(F.countDistinct("p").alias("n")).first()
        _PARALLELISM[spark] = max(1, int(row["n"]))
    return _PARALLELISM[spark]


@contextmanager
def temporary_conf(spark, settings: Mapping[str, str]) -> Iterator[bool]:
    """Set SQL settings for the ``with`` block, then restore each as it was (set or unset).

    Yields whether all of them could be set. When the session refuses one (Databricks
    serverless accepts only some settings), that one and those after it keep the session's
    values; those set before it hold for the block. Nothing raises either way."""
    before = {k: spark.conf.get(k, None) for k in settings}
    applied = []
    try:
        for k, v in settings.items():
            spark.conf.set(k, v)
            applied.append(k)
    except Exception as e:  # noqa: BLE001 - any refusal means: run with the session's own
        logger.info("could not set %s (%s); keeping the session's settings", k, e)
    try:
        yield len(applied) == len(settings)
    finally:
        for k in applied:
            if before[k] is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, before[k])


@contextmanager
def jit_sized_codegen(spark) -> Iterator[None]:
    """:data:`JIT_SIZED_CODEGEN` for the ``with`` block, unless the session already keeps
    generated methods that small (then nothing changes)."""
    (name, value), = JIT_SIZED_CODEGEN.items()
    current = spark.conf.get(name, None)
    if current is not None and current.strip().isdigit() and int(current) <= int(value):
        yield
        return
    with temporary_conf(spark, JIT_SIZED_CODEGEN):
        yield
