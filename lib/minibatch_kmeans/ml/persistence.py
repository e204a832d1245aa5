"""How a saved model is laid out and checked: ``metadata`` (JSON, pyspark's format, naming
the data folder) and a ``data-<token>`` Parquet folder of centers, written before the
metadata so that a save is switched in by its last write; the check that metadata and
data agree. Used by ``MiniBatchKMeansModel`` save/load and by the Spark-free reader
(:mod:`minibatch_kmeans.lifecycle.saved_model`)."""
from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from typing import Sequence, Tuple

import numpy as np

from ..errors import ModelPersistenceError
from ..paths import local_dir

logger = logging.getLogger(__name__)


def new_data_dir() -> str:
    """A fresh name for a save's data folder (never one an earlier save used)."""
    return f"data-{uuid.uuid4().hex[:16]}"


def data_dir(meta: dict) -> str:
    """The data folder a model's metadata names ("data" for models saved before)."""
    return meta.get("dataDir", "data")


def path_exists(spark, path: str) -> bool:
    """Whether ``path`` exists: the driver's filesystem answers for a path it can open
    (:func:`~minibatch_kmeans.paths.local_dir`); Spark for a remote one (analysis only: no
    job; also on Spark Connect)."""
    from pyspark.errors import AnalysisException

    folder = local_dir(path)
    if folder is not None:
        return os.path.exists(folder)
    try:
        spark.read.text(path).schema
    except AnalysisException:
        return False
    return True


def remove_old_data(path: str, keep: str) -> None:
    """Delete the data folders of earlier saves under a path the driver can open; on a
    remote path they stay (the DataFrame API cannot delete) and are never read again."""
    folder = local_dir(path)
    if folder is None:
        logger.info("kept earlier data folders under %s (remote path)", path)
        return
    for old in glob.glob(os.path.join(folder, "data*")):
        if os.path.basename(old) != keep and os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)


def centers_from_table(path: str, meta: dict, table) -> Tuple[np.ndarray, np.ndarray]:
    """(centers, weight sums), float64, of a saved model's data rows (a pandas frame of
    clusterIdx, clusterCenter, weightSum), after :func:`check_saved_shape`."""
    table = table.sort_values("clusterIdx")
    rows = [np.asarray(c, dtype=np.float64) for c in table["clusterCenter"]]
    check_saved_shape(path, meta, list(table["clusterIdx"]), [len(c) for c in rows])
    return np.vstack(rows), table["weightSum"].to_numpy(np.float64)


def check_saved_shape(path: str, meta: dict, cluster_ids: Sequence[int],
                      lengths: Sequence[int]) -> None:
    """Raise ModelPersistenceError unless the data holds centers 0..k-1 of numFeatures
    values each, as the metadata says (``numCenters``; before it was saved, the k Param
    when set): a save cut short, or files mixed by hand."""
    k = meta.get("numCenters", meta.get("paramMap", {}).get("k"))
    d = meta.get("numFeatures")
    found = f"{len(cluster_ids)} centers of {sorted(set(lengths))} values"
    if k is not None and sorted(int(i) for i in cluster_ids) != list(range(int(k))):
        raise ModelPersistenceError(
            f"the model at {path!r} is incomplete: its metadata says k={k} but its data "
            f"holds {found}; save the model again")
    if d is not None and any(n != int(d) for n in lengths):
        raise ModelPersistenceError(
            f"the model at {path!r} is incomplete: its metadata says {d} features but its "
            f"data holds {found}; save the model again")
