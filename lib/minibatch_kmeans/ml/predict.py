"""Predicting with centers as the Arrow UDF a model's transform runs on the executors
(:func:`predict_udf`), around the NumPy
:func:`~minibatch_kmeans.core.kernels.predict_matrix`."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import types as T

from ..errors import InvalidInputError
from ..core.kernels import predict_matrix
from ..spark import features as feat

def predict_udf(centers: np.ndarray, cosine: bool, dtype, with_distance: bool,
                spec: feat.FeatureSpec):
    """An Arrow UDF mapping one double column per feature (and, for array input, the
    array's length) to the nearest center.

    An Arrow UDF (not a pandas one) hands each column over as a ``pyarrow.Array``, which
    becomes a NumPy column without building pandas Series: transform + writing the
    predictions of 2M x 32 rows took 7.5 s against 9.6 s with the pandas UDF it replaced."""
    from pyspark.sql.functions import arrow_udf

    d = centers.shape[1]
    described = spec.describe()
    rtype = (T.StructType([T.StructField("prediction", T.IntegerType()),
                           T.StructField("distance", T.DoubleType())])
             if with_distance else T.IntegerType())

    def predict(*cols: pa.Array) -> pa.Array:
        X = np.empty((len(cols[0]), d))
        for j in range(d):  # nulls arrive as NaN
            X[:, j] = cols[j].to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(X).all(axis=1)
        if len(cols) > d:  # array/vector input: the length must be d (null: NaN)
            bad |= cols[d].to_numpy(zero_copy_only=False) != d
        if cosine:
            bad |= ~X.any(axis=1)
        if bad.any():
            raise InvalidInputError(
                f"{int(bad.sum())} rows have null, NaN or infinite features"
                + (", a wrong length" if len(cols) > d else "")
                + (" or a zero vector (cosine distance)" if cosine else "")
                + f" ({described}); expected none with handleInvalid='error' (set "
                "handleInvalid='skip' to leave them out)")
        labels, dist = predict_matrix(X, centers, cosine, dtype)
        labels = pa.array(labels.astype(np.int32))
        if not with_distance:
            return labels
        return pa.StructArray.from_arrays([labels, pa.array(dist, pa.float64())],
                                          names=["prediction", "distance"])

    return arrow_udf(predict, rtype)
