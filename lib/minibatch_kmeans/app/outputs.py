"""What the jobs read and write around the model: the input table, run-keyed output
tables and the quality outputs.

Every output table (a path or a catalog table name) has a ``run_id`` column and is
partitioned by it; writing a run
replaces that run's partition and leaves the others, so a scheduled job re-run for the
same run id never duplicates rows (:func:`write_run_table`), and a re-run with no rows for
a table (no invalid rows left for the quarantine) removes the run's old ones. Run ids are
text: :func:`read_run_table` reads them as written (``"007"`` and ``"7"`` are two runs).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..errors import InvalidInputError
from ..spark.features import clashes
from .config import InputConfig, OutputConfig
from ..tables.io import read_table, remove_partition, write_table
from ..tables.quality import QUALITY_SCHEMA, REASON_COLUMN, QualityResult, quality_rows
from ..evaluate.report import write_json

logger = logging.getLogger(__name__)

RUN_ID = "run_id"


def read_input(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """The table an input section names (path or table, format, Delta version or time)."""
    return read_table(spark, cfg.path, cfg.format, **cfg.read_options())


def write_run_table(df: DataFrame, path: str, fmt: str, run_id: str, *,
                    empty: bool = False) -> None:
    """Write ``df`` with a ``run_id`` column to the table at ``path`` (a path or a catalog
    table name such as ``main.default.scores``, told apart by
    :func:`~minibatch_kmeans.tables.io.table_name`), replacing only that run's rows; a new
    table is created partitioned by ``run_id``. ``empty=True`` says ``df`` has no rows (the
    caller knows, with no Spark job): the run's existing rows are removed and no table is
    created."""
    if empty:
        if remove_partition(df.sparkSession, path, fmt, {RUN_ID: run_id}):
            logger.info("removed run %s from %s table %s: it has no rows now", run_id, fmt,
                        path)
        return
    taken = clashes(df.columns, [RUN_ID])
    if taken:
        raise InvalidInputError(f"the rows to write to {path} have a column {taken[0]!r}, "
                                f"which the run id column {RUN_ID!r} would replace: rename it")
    out = df.withColumn(RUN_ID, F.lit(run_id))
    write_table(out, path, fmt, mode="overwrite", partition_by=[RUN_ID],
                replace_partitions={RUN_ID: run_id})
    logger.info("wrote run %s to %s table %s", run_id, fmt, path)


def read_run_table(spark: SparkSession, path: str, fmt: str = "parquet") -> DataFrame:
    """A table :func:`write_run_table` wrote (by path or catalog name), with ``run_id`` as
    the text each run wrote (Spark would read Parquet's ``run_id=007`` as the integer 7,
    as ``run_id=7``; a catalog table keeps the column's string type)."""
    return read_table(spark, path, fmt, string_partitions=[RUN_ID])


def write_quality_outputs(spark: SparkSession, result: QualityResult, out: OutputConfig,
                          run_id: str, source: str) -> dict:
    """Write the gate's JSON report (any path or URI), its table, and the quarantined rows:
    the run's invalid rows replace its old ones, and a run with none has none left (a
    re-run on clean input removes the first run's); return the report."""
    check_quarantine_columns(result.df, out, source)
    report = dict(result.report(), runId=run_id, input=source)
    if out.quarantine:
        write_run_table(result.quarantine(), out.quarantine, out.format, run_id,
                        empty=not result.invalid_rows)
        if result.invalid_rows:
            report["quarantinePath"] = out.quarantine
    if out.quality:
        table = spark.createDataFrame(quality_rows(report), QUALITY_SCHEMA)
        write_run_table(table, out.quality, out.format, run_id)
    if out.quality_report:
        write_json(report, out.quality_report)
    return report


def check_quarantine_columns(df: DataFrame, out: OutputConfig, source: str,
                             partition: str = RUN_ID) -> None:
    """Refuse, before anything is written, an input with a column that the quarantine
    table adds to the rows it keeps (the reason, and the ``partition`` column): it would
    be overwritten. Only when the output section names a quarantine table."""
    taken = clashes(df.columns, [REASON_COLUMN, partition]) if out.quarantine else []
    if taken:
        raise InvalidInputError(
            f"the input {source} has column(s) {taken}, which the quarantine table {out.quarantine} "
            f"adds to every invalid row it keeps ({REASON_COLUMN!r} and {partition!r}): "
            "rename them in the input, or set output.quarantine to null to write no "
            "quarantine table")


def write_model_tables(spark: SparkSession, model, summary: dict, out: OutputConfig,
                       run_id: str) -> None:
    """The centers table (cluster, center, weight, size) and the metrics table (one row of
    the fit's figures) of a trained model, when the output section names them."""
    if out.centers:
        sizes = summary.get("clusterSizes") or [None] * len(model.clusterCenters())
        rows = [(i, [float(v) for v in c], float(w), None if n is None else int(n))
                for i, (c, w, n) in enumerate(zip(model.clusterCenters(), model.weightSums,
                                                  sizes))]
        table = spark.createDataFrame(
            rows, "cluster int, center array<double>, weight double, size long")
        write_run_table(table, out.centers, out.format, run_id)
    if out.metrics:
        row = {name: summary.get(key) for name, key, _ in METRICS}
        table = spark.createDataFrame([tuple(row.values())],
                                      ", ".join(f"{n} {t}" for n, _, t in METRICS))
        write_run_table(table, out.metrics, out.format, run_id)


#: The metrics table's columns: (column, summary key, Spark SQL type).
METRICS = (("k", "k", "int"), ("num_features", "numFeatures", "int"),
           ("input_rows", "inputRows", "long"), ("invalid_rows", "invalidRows", "long"),
           ("num_rows", "numRows", "long"), ("num_steps", "numSteps", "int"),
           ("num_iter", "numIter", "int"), ("stop_reason", "stopReason", "string"),
           ("training_cost", "trainingCost", "double"),
           ("training_cost_exact", "trainingCostExact", "boolean"),
           ("batch_size", "batchSize", "int"), ("fit_seconds", "fitSeconds", "double"),
           ("input", "inputPath", "string"), ("model_path", "modelPath", "string"))


def default_run_id() -> str:
    """A fresh run id from the UTC time, for a training run given none."""
    return time.strftime("train-%Y%m%dT%H%M%SZ", time.gmtime())


def require_run_id(run_id: Optional[str], job: str) -> str:
    from ..errors import ConfigError

    if not run_id:
        raise ConfigError(f"{job} needs a run id: set run_id in the config or pass --run-id "
                          "(a re-run with the same id replaces that run's output)")
    return run_id


def registry_module():
    """:mod:`minibatch_kmeans.lifecycle.registry`, for a job whose config has an
    ``mlflow:`` section; a :class:`ConfigError` saying what to do when MLflow is not installed."""
    from ..errors import ConfigError

    try:
        from ..lifecycle import registry
    except ImportError as e:
        if (e.name or "").split(".")[0] != "mlflow":
            raise
        raise ConfigError("the config has an mlflow section but mlflow is not installed: "
                          "pip install 'minibatch-kmeans[mlops]', or remove the section"
                          ) from None
    return registry
