"""Where a fit's checkpoints live (their JSON format is :mod:`minibatch_kmeans.core.checkpoint`).

Two stores with the same two methods, ``save(checkpoint)`` and ``load_latest()``. They
keep a fit's checkpoints, or any document a :class:`Codec` turns into text and orders
(the streaming job's state, :mod:`minibatch_kmeans.app.stream_job`):

- :class:`LocalCheckpointStore` for paths the driver can open (plain, ``file:``, and
  ``dbfs:`` through the ``/dbfs`` mount): one file ``checkpoint-<step>.json`` per
  checkpoint, written to a temporary file and renamed over (``os.replace``), so a reader
  sees either the whole file or none; the latest two are kept, older ones deleted.
- :class:`SparkCheckpointStore` for the others (``s3a:``, ``abfss:``, ``hdfs:``...):
  the JSON as one line of text through the DataFrame writer (no ``sparkContext``, no
  ``_jvm``, so also on Spark Connect). Checkpoints alternate between two directories,
  ``slot-0`` and ``slot-1``, each overwritten in turn: a Spark write shows only committed
  files, so while one slot is being rewritten the other still holds the previous
  checkpoint; the reader reads both and takes the higher step.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from minibatch_kmeans.core.checkpoint import Checkpoint
>>> from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
>>> store = LocalCheckpointStore(tempfile.mkdtemp())
>>> state = MiniBatchState(np.eye(2), Convergence(100, 10), step=30)
>>> store.save(Checkpoint(state, {"k": 2}, {}))  # doctest: +ELLIPSIS
'.../checkpoint-000000000030.json'
>>> store.load_latest().step
30
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from ..core.checkpoint import FINAL_REASONS, Checkpoint, check_resumable, from_json, to_json
from ..errors import InvalidParamError
from ..paths import driver_path, is_remote, replace_file
from .params import fit_fingerprint

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^checkpoint-(\d+)\.json$")
_TMP_PREFIX = ".checkpoint-"
_TMP_SUFFIX = ".tmp"
SLOTS = ("slot-0", "slot-1")
#: A temporary file younger than this may be another writer's, still being written: the
#: prune leaves it (a killed writer's is removed once it is older).
STALE_TMP_SECONDS = 3600.0


class Codec(NamedTuple):
    """How a store turns what it keeps into text and back, and orders what it finds:
    ``key(obj)`` is (step, tie-break); the higher key is the latest."""

    dump: Callable[[Any], str]
    load: Callable[[str, str], Any]
    key: Callable[[Any], Tuple[int, int]]


#: A fit's checkpoints (:mod:`minibatch_kmeans.core.checkpoint`): by step, a finished fit
#: after an unfinished one of the same step.
CHECKPOINTS = Codec(to_json, lambda text, source: from_json(text, source=source),
                    lambda c: (c.step, int(c.stop_reason is not None)))


def checkpoint_file_name(step: int) -> str:
    return f"checkpoint-{int(step):012d}.json"


def open_store(path: str, spark=None, codec: Codec = CHECKPOINTS):
    """The store for ``path``: local file I/O when the driver can open it, else Spark's
    DataFrame reader and writer on ``spark``."""
    if is_remote(path):
        if spark is None:
            raise InvalidParamError(f"checkpointDir={path!r} needs a Spark session")
        return SparkCheckpointStore(spark, path, codec)
    return LocalCheckpointStore(driver_path(path), shown=path, codec=codec)


class LocalCheckpointStore:
    """Checkpoints as files in a driver-local directory (created when first saved).

    Parameters
    ----------
    directory : str
        A driver-local directory name.
    keep : int
        Checkpoints kept (the latest by step); older ones are deleted after each save.
    shown : str, optional
        How to name the directory in messages (the path as the user gave it).
    codec : Codec
        What is kept (default: a fit's checkpoints).
    """

    def __init__(self, directory: str, keep: int = 2, shown: Optional[str] = None,
                 codec: Codec = CHECKPOINTS):
        self.directory = directory
        self.keep = max(1, keep)
        self.shown = shown or directory
        self.codec = codec

    def __repr__(self) -> str:
        return f"LocalCheckpointStore({self.shown!r})"

    def steps(self) -> List[Tuple[int, str]]:
        """(step, file name) of the checkpoints present, by step."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = [(int(m.group(1)), name) for name in names for m in [_FILE.match(name)] if m]
        return sorted(found)

    def save(self, ckpt: Checkpoint) -> str:
        """Write ``ckpt`` atomically; delete all but the latest ``keep`` checkpoints (and
        temporary files a killed writer left). Returns the file's path."""
        final = os.path.join(self.directory, checkpoint_file_name(self.codec.key(ckpt)[0]))
        text = self.codec.dump(ckpt).encode("utf-8")
        replace_file(final, lambda f: f.write(text), prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        self._prune()
        return final

    def _prune(self) -> None:
        for _, name in self.steps()[:-self.keep]:
            _remove(os.path.join(self.directory, name))
        now = time.time()
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX) \
                    and now - _mtime(path) > STALE_TMP_SECONDS:
                _remove(path)

    def load_latest(self) -> Optional[Checkpoint]:
        """The checkpoint of the highest step that reads back, or None when there is none;
        an unreadable newer one (a torn or corrupted file) is logged and passed over for
        the older one kept beside it. Raises the newest one's error when none reads."""
        texts = []
        for _, name in reversed(self.steps()):
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    texts.append((f.read(), f"checkpoint file {path!r}"))
            except FileNotFoundError:  # pruned by another writer since listed
                continue
        return _first_readable(self.codec, texts)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return time.time()


def _first_readable(codec: Codec, texts) -> Optional[Checkpoint]:
    """The first of ``texts`` ((text, source) from newest to oldest) that the codec reads;
    None for none given; the first one's error when none reads."""
    first_error = None
    for text, source in texts:
        try:
            return codec.load(text, source)
        except InvalidParamError as e:
            logger.warning("%s; trying the checkpoint before it", e)
            first_error = first_error or e
    if first_error is not None:
        raise first_error
    return None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SparkCheckpointStore:
    """Checkpoints written and read through Spark (any path Spark can write; no JVM calls).

    Parameters
    ----------
    spark : SparkSession
        Classic or Spark Connect.
    path : str
        The checkpoint directory; checkpoints go to ``<path>/slot-0`` and ``<path>/slot-1``
        in turn.
    codec : Codec
        What is kept (default: a fit's checkpoints).
    """

    def __init__(self, spark, path: str, codec: Codec = CHECKPOINTS):
        self.spark = spark
        self.path = path.rstrip("/")
        self.codec = codec
        self._next = 0

    def __repr__(self) -> str:
        return f"SparkCheckpointStore({self.path!r})"

    def slot_path(self, slot: int) -> str:
        return f"{self.path}/{SLOTS[slot]}"

    def read_slot(self, slot: int) -> Optional[Checkpoint]:
        """The checkpoint in a slot, or None (never written, or an overwrite killed before
        it committed); InvalidParamError when it does not read back."""
        text = self._text(slot)
        return None if text is None else self.codec.load(
            text, f"checkpoint {self.slot_path(slot)!r}")

    def _text(self, slot: int) -> Optional[str]:
        from pyspark.errors import AnalysisException

        path = self.slot_path(slot)
        try:
            rows = self.spark.read.option("wholetext", "true").text(path).collect()
        except AnalysisException:  # not written yet (classic raises here, Connect on collect)
            return None
        texts = [r[0] for r in rows if r[0] and r[0].strip()]
        if not texts:
            return None
        if len(texts) > 1:
            raise InvalidParamError(f"checkpoint directory {path!r} holds {len(texts)} files: "
                                    "expected one checkpoint")
        return texts[0]

    def load_latest(self) -> Optional[Checkpoint]:
        """The checkpoint of the higher step of the two slots, or None; an unreadable slot
        (a torn or corrupted write) is logged and passed over, and is the one the next save
        overwrites. Raises when no slot reads back."""
        good, errors = [], []
        for slot in range(len(SLOTS)):
            try:
                ckpt = self.read_slot(slot)
            except InvalidParamError as e:
                logger.warning("%s; using the other slot", e)
                errors.append(e)
                continue
            if ckpt is not None:
                good.append((self.codec.key(ckpt), slot, ckpt))
        if not good:
            if errors:
                raise errors[0]
            return None
        _, slot, ckpt = max(good, key=lambda t: t[0])
        self._next = 1 - slot
        return ckpt

    def save(self, ckpt: Checkpoint) -> str:
        """Overwrite the slot not holding the latest checkpoint. Returns its path."""
        path = self.slot_path(self._next)
        (self.spark.createDataFrame([(self.codec.dump(ckpt),)], "value string").coalesce(1)
         .write.mode("overwrite").text(path))
        self._next = 1 - self._next
        return path


def timed_save(store, ckpt: Checkpoint) -> str:
    """Save and log where and how long it took."""
    t0 = time.perf_counter()
    where = store.save(ckpt)
    logger.info("checkpoint at step %d%s saved to %s (%.2f s)", ckpt.step,
                f" ({ckpt.stop_reason})" if ckpt.stop_reason else "", where,
                time.perf_counter() - t0)
    return where


class FitCheckpoints:
    """A fit's checkpoints in ``checkpointDir`` (none without it): the store, the
    fingerprint and derived values a checkpoint must match, the latest one found there
    (``saved``, checked resumable; None when there is none) and the step last saved."""

    def __init__(self, params, spark, data, initial_centers, derived: dict):
        self.params, self.derived = params, derived
        self.store = self.fingerprint = self.saved = None
        if params.checkpoint_dir is not None:
            self.store = open_store(params.checkpoint_dir, spark)
            self.fingerprint = fit_fingerprint(params, data, initial_centers)
            self.saved = self.store.load_latest()
        if self.saved is not None:
            check_resumable(self.saved, self.fingerprint, derived,
                            source=f"the checkpoint in checkpointDir={params.checkpoint_dir!r}")
        self.last_saved = None

    def save(self, state, reason: Optional[str] = None) -> None:
        """Save the state (with the stop reason once the fit ends), if checkpointing."""
        if self.store is not None:
            timed_save(self.store, Checkpoint(state, self.fingerprint, self.derived, reason))
            self.last_saved = state.step

    def save_if_due(self, state) -> None:
        """Before a step: save every ``checkpointInterval`` steps. Saved before the next
        step, not after the last one: a checkpoint without a stop reason is always one the
        fit went on from."""
        if self.store is not None and state.step > self.last_saved \
                and state.step % self.params.checkpoint_interval == 0:
            self.save(state)

    def save_at_end(self, state, reason: str) -> None:
        """After the loop: save with the stop reason, unless the state was saved already
        and the reason is not final (an interrupted fit resumes from that checkpoint)."""
        if state.step != self.last_saved or reason in FINAL_REASONS:
            self.save(state, reason)
