"""A saved :class:`~minibatch_kmeans.MiniBatchKMeansModel` read without Spark or MLflow:
its centers, params and feature schema from the model directory (pyarrow and plain file
I/O), and pandas rows scored with NumPy. This is what the MLflow pyfunc model of
:mod:`minibatch_kmeans.lifecycle.registry` runs, and how the registry turns a downloaded
model into a Spark model."""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd

from ..errors import InvalidInputError, ModelPersistenceError
from ..ml.persistence import centers_from_table, data_dir

@dataclass(frozen=True)
class SavedModel:
    """A saved :class:`~minibatch_kmeans.MiniBatchKMeansModel` read with pyarrow and plain
    file I/O (no Spark), enough to score pandas data.

    Attributes
    ----------
    centers : ndarray of shape (k, n_features)
    weight_sums : ndarray of shape (k,)
    metadata : dict
        The model's metadata JSON (``class``, ``uid``, ``paramMap``, ``featureSchema``...).
    params : dict
        Default params overlaid with the set ones.
    """

    centers: np.ndarray
    weight_sums: np.ndarray
    metadata: dict
    params: dict

    @classmethod
    def read(cls, path: str) -> "SavedModel":
        """Read ``path/metadata`` (JSON text) and the data folder it names (Parquet)."""
        import pyarrow.parquet as pq

        parts = sorted(p for p in glob.glob(os.path.join(path, "metadata", "part-*"))
                       if not os.path.basename(p).startswith("."))
        text = ""
        for part in parts:
            with open(part, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                break
        if not text:
            raise ModelPersistenceError(
                f"cannot read a model from {path!r}: no metadata/part-* file with the JSON "
                "metadata (expected a directory written by MiniBatchKMeansModel.save)")
        meta = json.loads(text.splitlines()[0])
        if not str(meta.get("class", "")).endswith("MiniBatchKMeansModel"):
            raise ModelPersistenceError(
                f"cannot read a MiniBatchKMeansModel from {path!r}: it holds a "
                f"{meta.get('class')}")
        table = pq.read_table(os.path.join(path, data_dir(meta))).to_pandas()
        centers, weight_sums = centers_from_table(path, meta, table)
        params = dict(meta.get("defaultParamMap", {}))
        params.update(meta.get("paramMap", {}))
        return cls(centers, weight_sums, meta, params)

    @property
    def feature_schema(self) -> Optional[dict]:
        return self.metadata.get("featureSchema")

    @property
    def kind(self) -> str:
        fs = self.feature_schema
        if fs:
            return fs["kind"]
        return "columns" if self.params.get("inputCols") else "vector"

    @property
    def feature_columns(self) -> List[str]:
        fs = self.feature_schema
        if fs:
            return list(fs["columns"])
        return list(self.params.get("inputCols") or [self.params.get("featuresCol",
                                                                     "features")])

    def to_spark_model(self):
        """The :class:`~minibatch_kmeans.MiniBatchKMeansModel` (as ``load`` would return;
        reads nothing through Spark, so it works for a driver-local path on a cluster)."""
        from ..ml.estimator import MiniBatchKMeansModel

        return MiniBatchKMeansModel._from_dict({"metadata": self.metadata,
                                                "centers": self.centers,
                                                "weightSums": self.weight_sums})

    def feature_matrix(self, frame: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
        """The features of a pandas frame as float64 ``(n, d)`` and a mask of invalid rows
        (null, NaN, infinite, wrong length, or all-zero under cosine distance)."""
        d = self.centers.shape[1]
        cols = self.feature_columns
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InvalidInputError(
                f"the input has columns {list(frame.columns)} but the model needs "
                f"{missing} ({self.kind} features {cols})")
        if self.kind == "columns":
            X = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64,
                                                                           na_value=np.nan)
            bad = np.zeros(len(frame), dtype=bool)
        else:
            X = np.full((len(frame), d), np.nan)
            bad = np.zeros(len(frame), dtype=bool)
            for i, v in enumerate(frame[cols[0]].tolist()):
                if v is None:
                    continue
                row = np.asarray(v.toArray() if hasattr(v, "toArray") else v,
                                 dtype=np.float64).reshape(-1)
                if row.shape[0] == d:
                    X[i] = row
                else:
                    bad[i] = True
        bad |= ~np.isfinite(X).all(axis=1)
        if self.params.get("distanceMeasure") == "cosine":
            bad |= ~np.nan_to_num(X).any(axis=1)
        return X, bad

    def predict_pandas(self, frame: pd.DataFrame, with_distance: bool = False) -> pd.DataFrame:
        """Nearest center (column ``prediction``) and, when asked, the distance to it
        (``distance``), for each row of ``frame``, with the Spark model's arithmetic.

        Invalid rows raise under ``handleInvalid='error'``; under ``'skip'`` they get a
        null prediction and a NaN distance (Spark's transform drops them)."""
        from ..core.kernels import predict_matrix

        X, bad = self.feature_matrix(frame)
        skip = self.params.get("handleInvalid", "error") == "skip"
        if bad.any() and not skip:
            raise InvalidInputError(
                f"{int(bad.sum())} rows have null, NaN or infinite features, a wrong length "
                "or a zero vector under cosine distance; expected none with "
                "handleInvalid='error'")
        dtype = np.float32 if self.params.get("dtype", "float32") == "float32" else np.float64
        labels = np.zeros(len(frame), dtype=np.int32)
        dist = np.full(len(frame), np.nan)
        ok = ~bad
        if ok.any():
            lab, dis = predict_matrix(X[ok], self.centers,
                                      self.params.get("distanceMeasure") == "cosine", dtype)
            labels[ok] = lab
            dist[ok] = dis
        pred = pd.Series(labels, index=frame.index, name="prediction")
        if bad.any():
            pred = pred.astype("Int32").mask(bad)
        out = pred.to_frame()
        if with_distance:
            out["distance"] = dist
        return out
