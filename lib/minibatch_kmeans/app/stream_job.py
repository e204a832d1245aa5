"""Keep a model current from a Structured Streaming source (``jobs/stream.py``).

:func:`run_stream` reads new rows of a Parquet directory, a Delta table or a Kafka topic
with ``readStream`` and, in ``foreachBatch``, applies one
:meth:`~minibatch_kmeans.MiniBatchKMeansModel.partialFit` per micro-batch
(:class:`BatchUpdater`): the data quality gate first (invalid rows to the quarantine
table with their reason; ``handle_invalid: error`` stops the stream), then the update
with the configured forgetting (decay factor or half-life, per batch or per row) and
re-seeding of dying centers, then the predictions and a metrics row for the micro-batch.

Exactly once
    Spark replays a micro-batch whose commit it had not recorded when the query stopped
    (a crash, a kill). The model state (centers, weights, Params) is saved after every
    micro-batch together with its batch id, as one JSON document written atomically
    (:mod:`minibatch_kmeans.spark.checkpoint`'s stores: a temporary file renamed over on
    driver-local paths, two alternating slots elsewhere). A micro-batch whose id is not
    above the saved one was applied already and is skipped, so no batch updates the
    model twice. The predictions, quarantine and metrics tables are partitioned by
    ``batch_id`` and a batch replaces its own partition, so a replay never duplicates
    rows either. The state remembers the query's id (from Spark's checkpoint): a state
    paired with a new or another checkpoint, whose batch ids start again at 0, is refused.
The current model
    After every micro-batch the model is also saved at ``output.model`` (a directory any
    job loads with ``MiniBatchKMeansModel.load``), and every ``register_every`` applied
    micro-batches registered in MLflow with the tags ``stream_state`` and
    ``stream_batch_id`` (a replayed batch finds its version and does not register twice).

Micro-batches with too many invalid rows (above ``quality.max_invalid_fraction``) or none
valid leave the model as it is (the metrics row says why) and the stream goes on.

The first model
    Without ``stream.model`` the first micro-batch is fitted. One with fewer than k
    distinct valid rows is not applied (the reason, "2 distinct valid rows, fewer than
    k=3", in its metrics row and the state): its distinct rows (at most k-1) are kept in
    the state as ``pending`` and added to the next micro-batches' rows until together
    they reach k, and the first model is fitted on them. A restart goes on from the state.
One query per state
    :func:`start_stream` takes the state directory (an OS lock, or a lease where it is not
    driver-local: :mod:`minibatch_kmeans.app.stream_lock`) and refuses a second query
    while one holds it; it is released when the query stops or fails.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .config import StreamConfig
from .outputs import check_quarantine_columns
from ..paths import driver_path, is_remote
from ..errors import ConfigError, InvalidInputError, MiniBatchKMeansError
from ..ml.estimator import MiniBatchKMeans, MiniBatchKMeansModel
from ..spark.features import select_named
from ..tables.io import write_table
from ..tables.quality import check_feature_schema, check_quality, report_top
from ..spark.checkpoint import Codec, open_store
from .stream_lock import hold_state_dir, watch

logger = logging.getLogger(__name__)

BATCH_ID = "batch_id"
PREDICTION, DISTANCE = "prediction", "distance"

#: The metrics table: one row per micro-batch.
METRICS_SCHEMA = ("batch_id long, applied boolean, reason string, rows long, valid_rows long, "
                  "invalid_rows long, weight double, discount double, cost_per_row double, "
                  "reseeded int, max_center_shift double, num_updates int, "
                  "registered_version string, seconds double, processed_at timestamp")


def _load_state(text: str, source: str) -> dict:
    try:
        state = json.loads(text)
        int(state["batchId"])
    except (ValueError, TypeError, KeyError):
        raise InvalidInputError(f"{source} is not a stream state (expected JSON with a "
                                "batchId)") from None
    return state


#: The stream's state documents, ordered by batch id.
STATE = Codec(lambda state: json.dumps(state, separators=(",", ":")), _load_state,
              lambda state: (int(state["batchId"]), 0))


def _checkpoint_query_id(spark: SparkSession, location: str) -> Optional[str]:
    """The id of the query whose Spark checkpoint is at ``location`` (None: none yet)."""
    if not is_remote(location):
        try:
            with open(os.path.join(driver_path(location), "metadata"), encoding="utf-8") as f:
                return json.loads(f.readline()).get("id")
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
    from pyspark.errors import AnalysisException

    try:
        rows = spark.read.text(location.rstrip("/") + "/metadata").collect()
    except AnalysisException:
        return None
    return json.loads(rows[0][0]).get("id") if rows else None


def read_stream(spark: SparkSession, cfg: StreamConfig) -> DataFrame:
    """The streaming DataFrame the input section names: a Parquet directory (or catalog
    table), a Delta table through Spark's Delta source when the session has it, else
    through the delta-rs source of :mod:`minibatch_kmeans.tables.delta.stream`, or a Kafka
    topic's events parsed as ``stream.value_schema`` (:mod:`minibatch_kmeans.tables.kafka`)."""
    from ..tables import delta
    from ..tables.io import is_delta_dir

    inp, st = cfg.input, cfg.stream
    where = inp.describe()
    if inp.format == "kafka":
        from ..tables.kafka import read_kafka_stream

        return read_kafka_stream(spark, inp.bootstrap_servers, inp.topics, st.value_schema,
                                 st.value_format, st.starting_offsets,
                                 st.max_offsets_per_trigger, st.kafka_options)
    if inp.format == "delta":
        if delta.native_delta_available(spark):
            from ..tables.io import stream_delta

            return stream_delta(spark, inp.path, table=inp.table,
                                starting_version=st.starting_version,
                                max_files_per_trigger=st.max_files_per_trigger or 1000,
                                skip_change_commits=st.skip_change_commits)
        if inp.table:
            raise ConfigError(f"input.table={inp.table!r} with format delta needs Spark's "
                              "Delta source (delta-spark or Databricks); without it set "
                              "input.path to the table's location")
        from ..tables.delta.stream import read_delta_stream

        return read_delta_stream(spark, inp.path, starting_version=st.starting_version,
                                 max_files_per_trigger=st.max_files_per_trigger or 1000,
                                 skip_change_commits=st.skip_change_commits)
    reader = spark.readStream
    if st.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", st.max_files_per_trigger)
    if inp.table:
        return reader.table(inp.table)
    if is_delta_dir(inp.path):
        raise ConfigError(f"input.path {inp.path!r} is a Delta table (it has a _delta_log): "
                          "set input.format to delta (as Parquet files it would include "
                          "the files of removed versions)")
    schema = st.schema
    if schema is None:
        from pyspark.errors import AnalysisException

        try:
            schema = spark.read.parquet(inp.path).schema
        except AnalysisException:
            raise InvalidInputError(
                f"input {where!r} has no Parquet files yet to take the stream's schema from: "
                "set stream.schema (DDL, e.g. 'id long, x0 double, x1 double')") from None
    return reader.schema(schema).parquet(inp.path)


@dataclass
class BatchUpdater:
    """The ``foreachBatch`` function: one model update per micro-batch, exactly once.

    It keeps nothing that a new process could not rebuild: the model comes from the
    state store when its cache does not hold the previous batch (so it also works where
    Spark Connect runs ``foreachBatch`` in a process of its own).

    Attributes
    ----------
    cfg : StreamConfig
    initial : MiniBatchKMeansModel or None
        The model a new stream starts from (None: fitted on the first micro-batch).
    source : str
        The input as the state records it (a state of another source is refused).
    error : MiniBatchKMeansError or None
        What stopped the stream, when it was bad input (for the job's exit code).
    """

    cfg: StreamConfig
    initial: Optional[MiniBatchKMeansModel]
    source: str
    error: Optional[MiniBatchKMeansError] = None
    applied: List[int] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)
    replayed: List[int] = field(default_factory=list)
    pending: Optional[dict] = field(default=None, repr=False)
    _state: Optional[dict] = field(default=None, repr=False)
    _model: Optional[MiniBatchKMeansModel] = field(default=None, repr=False)
    _query_id: Optional[str] = field(default=None, repr=False)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        try:
            self.update(df, int(batch_id))
        except MiniBatchKMeansError as e:
            self.error = e
            raise

    # -- state -------------------------------------------------------------------------
    def _store(self, spark):
        return open_store(self.cfg.output.state, spark, STATE)

    def use(self, state: Optional[dict]) -> None:
        """Take ``state`` (a saved state document, or None) as the current one."""
        self._state = state
        self._model = (MiniBatchKMeansModel._from_dict(state["model"])
                       if state and state.get("model") else None)

    def current(self, spark: SparkSession):
        """(state, model) after the last applied micro-batch; (None, initial) before any."""
        if self._state is None:
            self.use(self._store(spark).load_latest())
        return self._state, (self._model if self._state else self.initial)

    # -- one micro-batch ---------------------------------------------------------------
    def update(self, df: DataFrame, batch_id: int) -> None:
        spark = df.sparkSession
        state, model = self.current(spark)
        if state is not None and batch_id <= int(state["batchId"]):
            logger.info("micro-batch %d was applied already (state at micro-batch %s): "
                        "skipped", batch_id, state["batchId"])
            self.replayed.append(batch_id)
            return
        t0 = time.perf_counter()
        self.pending = (state or {}).get("pending") if model is None else None
        df = df.persist()
        try:
            row, model = self._apply(spark, df, batch_id, model)
        finally:
            df.unpersist()
        applied = row["applied"]
        registered = None
        count = int((state or {}).get("applied", 0)) + int(applied)
        every = self.cfg.stream.register_every
        if applied and every and count % every == 0:
            registered = self._register(model, batch_id)
        row.update(registered_version=registered, seconds=time.perf_counter() - t0)
        out = self.cfg.output
        if out.metrics:
            self._write(spark.createDataFrame([row], METRICS_SCHEMA).drop(BATCH_ID),
                        out.metrics, batch_id)
        new_state = {
            "batchId": batch_id, "queryId": self._query(spark), "source": self.source,
            "applied": count,
            "model": None if model is None else model._to_dict(spark),
            "pending": self.pending if model is None else None,
            "lastBatch": {k: v for k, v in row.items() if k != "processed_at"}}
        self._store(spark).save(new_state)
        self._state, self._model = new_state, model
        if applied and out.model:
            model.write().overwrite().save(out.model)
        (self.applied if applied else self.skipped).append(batch_id)
        logger.info("micro-batch %d: %s rows, %s invalid; %s (%.2f s)", batch_id, row["rows"],
                    row["invalid_rows"], f"applied, update {model.numUpdates}" if applied
                    else f"not applied: {row['reason']}", row["seconds"])

    def _apply(self, spark, df: DataFrame, batch_id: int, model):
        """Quality gate, quarantine, update and predictions of one micro-batch: the
        metrics row and the model after it."""
        cfg, out, st = self.cfg, self.cfg.output, self.cfg.stream
        what = f"micro-batch {batch_id} of {self.source}"
        estimator = MiniBatchKMeans(**cfg.estimator_params()) if model is None else None
        spec = _spec(df, model or estimator)
        cosine = (model or estimator).getDistanceMeasure() == "cosine"
        quality = check_quality(df, spec, cfg.quality, cosine, what=what,
                                extra=_source_checks(cfg))
        row: Dict[str, Any] = dict(
            batch_id=batch_id, applied=False, reason=None, rows=quality.rows,
            valid_rows=quality.valid_rows, invalid_rows=quality.invalid_rows, weight=None,
            discount=None, cost_per_row=None, reseeded=0, max_center_shift=None,
            num_updates=None if model is None else model.numUpdates,
            processed_at=_now())
        if quality.invalid_rows and out.quarantine:
            self._write(quality.quarantine(), out.quarantine, batch_id)
        if quality.invalid_rows and st.handle_invalid == "error":
            raise InvalidInputError(
                f"{what} has {quality.invalid_rows} invalid rows "
                f"({report_top(quality.report())}); expected none with "
                "stream.handle_invalid=error" + (f" (they are in {out.quarantine})"
                                                 if out.quarantine else ""))
        if quality.rows == 0:
            row["reason"] = "no rows"
            return row, model
        if not quality.passed:
            logger.warning("%s: not applied to the model: %s", what, quality.failure)
            row["reason"] = quality.failure
            return row, model
        valid = quality.valid()
        if model is None:
            new = self._first_model(valid, estimator, spec, what, batch_id, row)
            if new is None:
                return row, None
        else:
            new = _with_handle_invalid(model, "skip").partialFit(valid, **st.update_options())
            new = _with_handle_invalid(new, model)
            info = new.lastUpdate
            shift = np.sqrt(((np.array(new.clusterCenters())
                              - np.array(model.clusterCenters())) ** 2).sum(axis=1)).max()
            row.update(weight=info["weight"], discount=info["discount"],
                       cost_per_row=info["cost"] / info["weight"] if info["weight"] else None,
                       reseeded=len(info["reseeded"]), max_center_shift=float(shift),
                       num_updates=new.numUpdates)
        row["applied"] = True
        if out.predictions:
            scorer = new.copy().setPredictionCol(PREDICTION).setDistanceCol(DISTANCE)
            rows = select_named(valid, [*st.id_columns, *spec.columns])
            self._write(select_named(scorer.transform(rows),
                                     [*st.id_columns, PREDICTION, DISTANCE]),
                        out.predictions, batch_id)
        return row, new

    def _first_model(self, valid: DataFrame, estimator: MiniBatchKMeans, spec, what: str,
                     batch_id: int, row: dict) -> Optional[MiniBatchKMeansModel]:
        """The first model, fitted on the valid rows and those carried from earlier
        micro-batches; None (the reason in ``row``, the distinct rows kept in
        ``self.pending``) while they hold fewer than k distinct rows."""
        k = estimator.getK()
        carried = self.pending or {}
        rows = _distinct_rows(valid, spec, k, carried, estimator.getDtype() == "float32")
        if len(rows) < k:
            batches = list(carried.get("batches", [])) + [batch_id]
            row["reason"] = (f"{len(rows)} distinct valid rows, fewer than k={k}"
                             + (f" (with those carried from micro-batches {batches[:-1]})"
                                if carried else "")
                             + ": carried to the next micro-batch to fit the first model")
            self.pending = {"k": k, "batches": batches, "rows": [r for r, _ in rows],
                            "weights": [w for _, w in rows] if spec.weight_col else None}
            logger.warning("%s: not applied: %s", what, row["reason"])
            return None
        data = _with_carried(valid, spec, carried) if carried.get("rows") else valid
        new = estimator.fit(data)
        logger.info("%s: first model fitted on %d rows (k=%d)%s", what,
                    new.trainingInfo.get("numRows", 0) if new.trainingInfo else 0, k,
                    f", {len(carried['rows'])} of them carried from micro-batches "
                    f"{carried['batches']}" if carried.get("rows") else "")
        new.dropSummary()
        row.update(weight=float(new.weightSums.sum()), num_updates=0)
        self.pending = None
        return new

    def _write(self, df: DataFrame, path: str, batch_id: int) -> None:
        """Replace this micro-batch's partition of the table at ``path``."""
        write_table(df.withColumn(BATCH_ID, F.lit(batch_id).cast("long")), path,
                    self.cfg.output.format, mode="overwrite", partition_by=[BATCH_ID],
                    replace_partitions=True)

    def _query(self, spark) -> Optional[str]:
        if self._query_id is None:
            self._query_id = _checkpoint_query_id(spark, self.cfg.output.checkpoint)
        return self._query_id

    def _register(self, model: MiniBatchKMeansModel, batch_id: int) -> str:
        ml = self.cfg.mlflow
        reg = _registry(ml)
        tags = {"stream_state": self.cfg.output.state, "stream_batch_id": str(batch_id)}
        found = reg.find_versions(ml.model_name, tags)
        if found:  # a replay of a batch registered before the state was saved
            return str(found[0].version)
        mv = reg.log_model(model, ml.model_name, training_table=self.source,
                           tags=dict(tags, stream_updates=str(model.numUpdates)))
        logger.info("registered %s version %s after micro-batch %d", ml.model_name,
                    mv.version, batch_id)
        return str(mv.version)


def _distinct_rows(valid: DataFrame, spec, k: int, carried: dict, float32: bool):
    """Up to k distinct rows (features, weight) of positive weight among ``carried``'s
    rows and ``valid``'s (one job collecting at most k rows), as the fit's init counts
    them (in float32 when it computes in float32)."""
    feats = spec.array_expr()
    df = (valid.select(feats.alias("f"), spec.weight_expr().alias("w")).where("w > 0")
          .dropDuplicates(["f"]).limit(k))
    weights = carried.get("weights") or [1.0] * len(carried.get("rows", []))
    out, seen = [], set()
    for f, w in list(zip(carried.get("rows", []), weights)) + [
            (list(r.f), float(r.w)) for r in df.collect()]:
        key = tuple(np.asarray(f, np.float32 if float32 else np.float64).tolist())
        if key not in seen:
            seen.add(key)
            out.append(([float(x) for x in f], float(w)))
    return out[:k]


def _with_carried(valid: DataFrame, spec, carried: dict) -> DataFrame:
    """``valid`` and the rows carried from earlier micro-batches (their features, and
    weight, in ``valid``'s column types; its other columns null)."""
    schema = valid.schema
    rows = carried["rows"]
    weights = carried.get("weights") or [1.0] * len(rows)
    data = valid.sparkSession.createDataFrame(list(zip(rows, weights)),
                                              "f array<double>, w double")
    if spec.kind == "columns":
        cols = [F.col("f")[i].cast(schema[c].dataType).alias(c)
                for i, c in enumerate(spec.columns)]
    elif spec.kind == "vector":
        from pyspark.ml.functions import array_to_vector

        cols = [array_to_vector(F.col("f")).alias(spec.columns[0])]
    else:
        cols = [F.col("f").cast(schema[spec.columns[0]].dataType).alias(spec.columns[0])]
    if spec.weight_col:
        cols.append(F.col("w").cast(schema[spec.weight_col].dataType).alias(spec.weight_col))
    return valid.unionByName(data.select(*cols), allowMissingColumns=True)


def _source_checks(cfg: StreamConfig):
    """The quality gate's problems of the source's own: a Kafka event that does not parse."""
    if cfg.input.format != "kafka":
        return ()
    from ..tables.kafka import malformed_checks

    return malformed_checks(cfg.stream.value_format)


def _spec(df: DataFrame, params):
    """Where ``df``'s features are for a model (its feature count checked) or, before the
    first model, for the estimator that will fit it."""
    return params.featureSpec(df)


def _registry(ml):
    """The MLflow registry of an ``mlflow`` section."""
    from .outputs import registry_module

    return registry_module().tracking(ml.tracking_uri, ml.experiment,
                                      registry_uri=ml.registry_uri, root=ml.root)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _with_handle_invalid(model: MiniBatchKMeansModel, like) -> MiniBatchKMeansModel:
    """``model`` with handleInvalid set to a value, or as ``like`` (a model) has it (set
    or default), so that the state and saved model keep the user's Param."""
    if isinstance(like, str):
        return model.copy().setHandleInvalid(like)
    if like.isSet(like.handleInvalid):
        return model.setHandleInvalid(like.getHandleInvalid())
    model.clear(model.handleInvalid)
    return model


@dataclass(frozen=True)
class StreamResult:
    """What one run of the stream did.

    ``batches`` and ``applied_batches`` count the micro-batches this run processed and
    applied (from the state, so also on Spark Connect); ``applied``, ``skipped`` and
    ``replayed`` list their ids where ``foreachBatch`` runs in this process (classic
    sessions; empty on Spark Connect)."""

    batches: int
    applied_batches: int
    batch_id: Optional[int]
    num_updates: Optional[int]
    model_path: Optional[str]
    applied: List[int] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)
    replayed: List[int] = field(default_factory=list)
    source: str = ""
    code: int = 0
    waiting: Optional[str] = None

    def text(self) -> str:
        """The job's printed line: micro-batches processed and applied, state, model."""
        return (f"stream {self.source}: {self.batches} micro-batches processed "
                f"({self.applied_batches} applied, "
                f"{self.batches - self.applied_batches} not applied"
                + (f", {len(self.replayed)} replayed and skipped" if self.replayed else "")
                + ")" + ("" if self.batch_id is None else
                         f"; state at micro-batch {self.batch_id}")
                + ("" if self.num_updates is None else
                   f", model updated {self.num_updates} times, saved to {self.model_path}")
                + ("" if self.waiting is None else f"; {self.waiting}"))


def _trigger(trigger: str) -> Dict[str, Any]:
    if trigger == "available_now":
        return {"availableNow": True}
    if trigger == "once":
        return {"once": True}
    return {"processingTime": trigger}


def _load_start_model(cfg: StreamConfig) -> MiniBatchKMeansModel:
    """``stream.model``: a saved model's path, or ``models:/<name>@<alias>`` in the
    registry of the ``mlflow`` section."""
    m = re.fullmatch(r"models:/([^@]+)@([\w-]+)", cfg.stream.model)
    if m is None:
        return MiniBatchKMeansModel.load(cfg.stream.model)
    mv, model = _registry(cfg.mlflow).load_spark_model(m.group(1), m.group(2))
    logger.info("stream.model %s is version %s", cfg.stream.model, mv.version)
    return model


def _weighted(model: MiniBatchKMeansModel, how, path: str) -> MiniBatchKMeansModel:
    """The start model with the weights ``stream.initial_weight`` asks for."""
    if how == "model":
        return model
    if how == "sizes":
        sizes = (model.trainingInfo or {}).get("clusterSizes")
        if not sizes:
            raise ConfigError(f"stream.initial_weight=sizes but the model at {path} has no "
                              "training cluster sizes (trained with computeTrainingCost=false "
                              "or built by hand): set a number, or model")
        weights = np.array(sizes, dtype=np.float64)
    else:
        weights = np.full(len(model.clusterCenters()), float(how))
    model = model.copy()
    model._weight_sums = weights
    return model


def _sync_saved_model(model: MiniBatchKMeansModel, path: str) -> None:
    """Save the state's model at ``path`` when what is there is not it (a crash between
    saving the state and saving the model)."""
    try:
        saved = MiniBatchKMeansModel.load(path)
        same = (saved.numUpdates == model.numUpdates
                and np.array_equal(np.array(saved.clusterCenters()),
                                   np.array(model.clusterCenters())))
    except MiniBatchKMeansError:
        same = False
    if not same:
        logger.info("the model at %s is behind the stream state: saved again", path)
        model.write().overwrite().save(path)


@dataclass
class RunningStream:
    """A started stream: its ``query``, the ``updater`` its ``foreachBatch`` calls, the
    ``state`` it started from, and the ``lock`` on its state directory, which
    :meth:`stop` releases (a watcher thread releases it too once the query ends)."""

    query: Any
    updater: BatchUpdater
    state: Optional[dict]
    lock: Any

    def stop(self) -> None:
        """Stop the query (if still running) and release the state directory."""
        try:
            if self.query.isActive:
                self.query.stop()
        finally:
            self.lock.release()


def start_stream(spark: SparkSession, cfg: StreamConfig) -> RunningStream:
    """Take the state directory (refused with ConcurrentWriteError while another query
    holds it: :mod:`minibatch_kmeans.app.stream_lock`), check the state against the
    checkpoint and input, and start the query."""
    source = f"{cfg.input.format} {cfg.input.describe()}"
    lock = hold_state_dir(spark, cfg.output.state, cfg.stream.lease_seconds,
                          what=f"stream {source} (checkpoint {cfg.output.checkpoint})")
    try:
        query, updater, state = _start_query(spark, cfg, source)
    except BaseException:
        lock.release()
        raise
    watch(lock, lambda: query.isActive, query.stop)
    return RunningStream(query, updater, state, lock)


def _start_query(spark: SparkSession, cfg: StreamConfig, source: str):
    """Check the state against the checkpoint and input, and start the query: (query,
    updater, the state it started from)."""
    out, st = cfg.output, cfg.stream
    state = open_store(out.state, spark, STATE).load_latest()
    query_id = _checkpoint_query_id(spark, out.checkpoint)
    if state is not None:
        if state.get("source") != source:
            raise ConfigError(f"the stream state at {out.state} belongs to input "
                              f"{state.get('source')!r}, not {source!r}: use another "
                              "output.state and output.checkpoint for another input")
        if state.get("queryId") and state["queryId"] != query_id:
            raise ConfigError(
                f"the stream state at {out.state} (micro-batch {state['batchId']}) belongs to "
                f"query {state['queryId']}, but the checkpoint at {out.checkpoint} is "
                + ("missing" if query_id is None else f"query {query_id}'s")
                + ": its micro-batch ids would not match; restore that checkpoint, or "
                  "delete both to start over")
        logger.info("resuming from micro-batch %s (the state at %s; %s updates applied)",
                    state["batchId"], out.state, state.get("applied"))
    initial = None
    if state is None and st.model:
        initial = _weighted(_load_start_model(cfg), st.initial_weight, st.model)
        logger.info("starting from the model at %s (k=%d, %d features, weights %s)", st.model,
                    len(initial.clusterCenters()), initial.numFeatures,
                    np.round(initial.weightSums, 3).tolist())
    stream_df = read_stream(spark, cfg)
    updater = BatchUpdater(cfg, initial, source)
    updater.use(state)  # not read again from the store
    _, model = updater.current(spark)
    if state is not None and model is not None and out.model:
        _sync_saved_model(model, out.model)
    if model is not None:  # columns checked before the first micro-batch
        _spec(stream_df, model)
        if model.featureSchema is not None:
            check_feature_schema(stream_df, model.featureSchema, None,
                                 what=f"stream {source}")
    missing = [c for c in st.id_columns if c not in stream_df.columns]
    if missing:
        raise InvalidInputError(f"stream {source} lacks the id column(s) {missing} named in "
                                f"stream.id_columns; columns are {sorted(stream_df.columns)}")
    check_quarantine_columns(stream_df, out, f"stream {source}", partition=BATCH_ID)
    query = (stream_df.writeStream.foreachBatch(updater)
             .option("checkpointLocation", out.checkpoint).trigger(**_trigger(st.trigger))
             .start())
    logger.info("stream %s started (query %s, checkpoint %s, trigger %s)", source, query.id,
                out.checkpoint, st.trigger)
    return query, updater, state


def _remote_error(e: Exception) -> Optional[MiniBatchKMeansError]:
    """Our error raised in a foreachBatch process of its own (Spark Connect), rebuilt from
    the traceback text the query's exception carries; None for anything else."""
    from .. import errors

    m = re.search(r"^minibatch_kmeans\.errors\.(\w+): (.+)$", str(e), flags=re.M)
    cls = getattr(errors, m.group(1), None) if m else None
    if isinstance(cls, type) and issubclass(cls, MiniBatchKMeansError):
        return cls(m.group(2).strip())
    return None


def run_stream(spark: SparkSession, cfg: StreamConfig) -> StreamResult:
    """Run the stream until its trigger ends it (``available_now``, ``once``), or until
    ``timeout_seconds`` (then stop it gracefully), and say what it did.

    Raises
    ------
    MiniBatchKMeansError
        Bad configuration, a state that does not match, or (``handle_invalid: error``)
        a micro-batch with invalid rows.
    """
    running = start_stream(spark, cfg)
    query, updater, before = running.query, running.updater, running.state
    try:
        if cfg.stream.timeout_seconds is None:
            query.awaitTermination()
        elif not query.awaitTermination(cfg.stream.timeout_seconds):
            logger.info("stopping the stream after %.0f s (stream.timeout_seconds)",
                        cfg.stream.timeout_seconds)
            query.stop()
        if query.exception() is not None:
            raise updater.error or RuntimeError(f"the stream failed: {query.exception()}")
    except Exception as e:
        error = updater.error or _remote_error(e)
        if error is not None:
            raise error from None
        raise
    finally:
        running.stop()
    after = open_store(cfg.output.state, spark, STATE).load_latest() or {}
    model = after.get("model")
    before = before or {"batchId": -1, "applied": 0}
    return StreamResult(
        int(after.get("batchId", -1)) - int(before["batchId"]),
        int(after.get("applied", 0)) - int(before["applied"]),
        int(after["batchId"]) if after else None,
        None if model is None else int(model["metadata"].get("numUpdates", 0)),
        cfg.output.model, updater.applied, updater.skipped, updater.replayed,
        f"{cfg.input.format} {cfg.input.describe()}", waiting=_waiting(after))


def _waiting(state: dict) -> Optional[str]:
    """What a state without a model yet waits for (None when it has one)."""
    pending = state.get("pending")
    if state.get("model") is not None or not pending:
        return None
    return (f"no model yet: {len(pending['rows'])} distinct valid rows of k={pending['k']} "
            f"carried from micro-batches {pending['batches']}")
