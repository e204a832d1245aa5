"""What a fit is asked and what it returns: the validated Params (:class:`FitParams`),
the result (:class:`FitResult`), and the small rules every fit mode shares (initial
centers, init sample size, the input's checks, the checkpoint fingerprint, the cost)."""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..core.minibatch import StepRecord
from ..checks import Rule
from ..errors import InvalidInputError, InvalidParamError
from .prepare import STORAGES, Prepared

logger = logging.getLogger(__name__)

INIT_MODES = ("k-means||", "k-means++", "random")
INIT_SCOPES = ("sample", "table")
DISTANCES = ("euclidean", "cosine")
HANDLE_INVALID = ("error", "skip")
DTYPES = ("float32", "float64")
#: "auto": "local" for a small table, else "pass" (:mod:`.passes`); "step": one Spark job
#: per mini-batch over a prepared copy (:mod:`.fit`).
FIT_MODES = ("auto", "local", "pass", "step")
#: batchSize of the step mode when unset.
STEP_BATCH = 10000

#: Upper bound of initSteps and initRuns: more rounds or runs than this only cost time.
MAX_INIT_ROUNDS = 100

#: Every Param's constraint, written once: Param name -> (FitParams field, or None for a
#: Param the fit does not see, rule). FitParams.validate, the estimator and model, and the
#: YAML config's model section all check with it, so each rule and message is one entry.
PARAM_RULES = {
    "k": ("k", Rule("integer", 2)),
    "maxIter": ("max_iter", Rule("integer", 0)),
    "tol": ("tol", Rule("number", 0)),
    "seed": ("seed", Rule("integer", optional=True)),
    "initMode": ("init_mode", Rule("choice", choices=INIT_MODES)),
    "initSteps": ("init_steps", Rule("integer", 1, MAX_INIT_ROUNDS)),
    "initScope": ("init_scope", Rule("choice", choices=INIT_SCOPES)),
    "initRuns": ("init_runs", Rule("integer", 0, MAX_INIT_ROUNDS,
                                   expected=f"an integer in [0, {MAX_INIT_ROUNDS}] (0: 3 runs "
                                            "for random init, else 1)")),
    "distanceMeasure": ("distance", Rule("choice", choices=DISTANCES)),
    "batchSize": ("batch_size", Rule("integer", 1, optional=True,
                                     expected="an integer >= 1, or unset for automatic")),
    "fitMode": ("fit_mode", Rule("choice", choices=FIT_MODES)),
    "localSteps": ("local_steps", Rule("integer", 1, expected="an integer >= 1 (1: one "
                                                              "step per Spark job)")),
    "initSize": ("init_size", Rule("integer", 1, optional=True,
                                   expected="an integer >= 1, or unset for 3 * batchSize")),
    "maxNoImprovement": ("max_no_improvement",
                         Rule("integer", 0, optional=True,
                              expected="an integer >= 0 (0 disables early stopping)")),
    "reassignmentRatio": ("reassignment_ratio",
                          Rule("number", 0, 1, expected="a number in [0, 1] (0 disables "
                                                        "reassignment)")),
    "handleInvalid": ("handle_invalid", Rule("choice", choices=HANDLE_INVALID)),
    "initialCenters": ("initial_centers", Rule("matrix", optional=True)),
    "dtype": ("dtype", Rule("choice", choices=DTYPES)),
    "computeTrainingCost": ("compute_training_cost", Rule("boolean")),
    "prepareStorage": ("prepare_storage", Rule("choice", choices=STORAGES)),
    "scratchDir": ("scratch_dir", Rule("string", optional=True)),
    "checkpointDir": ("checkpoint_dir", Rule("string", optional=True)),
    "checkpointInterval": ("checkpoint_interval",
                           Rule("integer", 1, expected="an integer >= 1 (steps between "
                                                       "checkpoints)")),
    "featuresCol": (None, Rule("string")),
    "inputCols": (None, Rule("names", optional=True)),
    "predictionCol": (None, Rule("string")),
    "distanceCol": (None, Rule("string", optional=True)),
    "weightCol": (None, Rule("string", optional=True)),
}


@dataclass
class FitParams:
    """Everything the fit needs besides the data (the estimator's Params, validated)."""

    k: int = 2
    max_iter: int = 20
    tol: float = 1e-4
    seed: int = 0
    init_mode: str = "k-means||"
    init_steps: int = 2
    init_scope: str = "sample"
    init_runs: int = 0
    distance: str = "euclidean"
    batch_size: Optional[int] = None
    fit_mode: str = "auto"
    local_steps: int = 1
    init_size: Optional[int] = None
    max_no_improvement: Optional[int] = 10
    reassignment_ratio: float = 0.01
    handle_invalid: str = "error"
    initial_centers: Optional[Sequence[Sequence[float]]] = None
    dtype: str = "float32"
    compute_training_cost: bool = True
    prepare_storage: str = "auto"
    scratch_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_interval: int = 10
    log_every: int = 10

    def validate(self) -> "FitParams":
        """Check every field against :data:`PARAM_RULES` (errors name the Params);
        ``max_no_improvement`` 0 becomes None (disabled). Returns self."""
        for name, (field_name, rule) in PARAM_RULES.items():
            if field_name is not None:
                setattr(self, field_name, rule(name, getattr(self, field_name)))
        if self.max_no_improvement == 0:
            self.max_no_improvement = None
        return self

    @property
    def step_batch_size(self) -> int:
        """batchSize of the step mode: as given, else :data:`STEP_BATCH`."""
        return self.batch_size or STEP_BATCH

    @property
    def spherical(self) -> bool:
        return self.distance == "cosine"

    @property
    def np_dtype(self):
        return np.float32 if self.dtype == "float32" else np.float64


@dataclass
class FitResult:
    """What a fit produces: centers, their accumulated weights, and the summary."""

    centers: np.ndarray
    weight_sums: np.ndarray
    summary: dict
    history: List[StepRecord] = field(default_factory=list)


def check_initial_centers(centers, k: int, n_features: int, spherical: bool) -> np.ndarray:
    """Validate user-given centers; return a float64 copy (the input is never mutated)."""
    try:
        C = np.array(centers, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidParamError(f"initialCenters must be a k x n_features list of numbers: {e}")
    if C.ndim != 2 or C.shape != (k, n_features):
        raise InvalidParamError(
            f"initial centers have shape {C.shape} but k={k} and {n_features} features")
    if not np.all(np.isfinite(C)):
        raise InvalidParamError("initial centers contain NaN or infinite values")
    if spherical:
        norms = np.linalg.norm(C, axis=1)
        if np.any(norms == 0):
            raise InvalidParamError(
                "initial centers include a zero vector, which has no direction under "
                "distanceMeasure='cosine'")
        C = C / norms[:, None]
    return C


def default_init_size(k: int, batch_size: int, n_rows: int, init_size: Optional[int]) -> int:
    """scikit-learn's rule: 3 * batch size (or 3 k when that is larger), at most n."""
    if init_size is None:
        size = 3 * batch_size
        if size < k:
            size = 3 * k
    elif init_size < k:
        warnings.warn(f"initSize={init_size} should be larger than k={k}; using "
                      f"min(3 * k, rows)", RuntimeWarning, stacklevel=3)
        size = 3 * k
    else:
        size = init_size
    return int(min(size, n_rows))


def fit_fingerprint(params: FitParams, data: Prepared, initial_centers=None) -> dict:
    """What a fit's result depends on, as JSON values named like the Params: a checkpoint
    resumes only under the same fingerprint. The input is known by its feature layout,
    valid and invalid row counts, total weight and the XOR of its rows' keys (which hash
    the seed and each row's features)."""
    p, spec = params, data.spec
    given = None
    if initial_centers is not None:
        text = json.dumps(np.asarray(initial_centers, dtype=np.float64).tolist())
        given = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return {
        "k": int(p.k), "seed": int(p.seed), "maxIter": int(p.max_iter), "tol": float(p.tol),
        "initMode": p.init_mode, "initSteps": int(p.init_steps), "initScope": p.init_scope,
        "initRuns": int(p.init_runs), "initSize": p.init_size, "initialCenters": given,
        "distanceMeasure": p.distance, "batchSize": p.batch_size, "fitMode": p.fit_mode,
        "localSteps": int(p.local_steps), "maxNoImprovement": p.max_no_improvement,
        "reassignmentRatio": float(p.reassignment_ratio), "dtype": p.dtype,
        "features": {"kind": spec.kind, "columns": list(spec.columns),
                     "numFeatures": spec.n_features, "weightCol": spec.weight_col},
        "numRows": int(data.n_rows), "numInvalid": int(data.n_invalid),
        "weightTotal": float(data.weight_total), "contentHash": int(data.content_hash),
    }


def cost_from_inertia(inertia: float, spherical: bool) -> float:
    """Euclidean inertia as the cost Spark reports: for unit vectors and unit centers the
    cosine distance ``1 - cos`` is half the squared Euclidean distance."""
    return inertia / 2.0 if spherical else inertia


def check_prepared(data: Prepared, params: FitParams) -> None:
    """Raise for an empty input, or invalid rows under handleInvalid='error'."""
    if data.n_rows == 0 and data.n_invalid == 0:
        raise InvalidInputError("the input is empty: expected at least one row to cluster")
    invalid = data.spec.summarize_invalid(data.n_invalid, data.invalid)
    if data.n_invalid and params.handle_invalid == "error":
        raise InvalidInputError(
            f"the input has {invalid}; expected none with handleInvalid='error' (set "
            "handleInvalid='skip' to skip them)")
    if data.n_rows == 0:
        raise InvalidInputError(f"no valid rows: all {data.n_invalid} rows are invalid "
                                f"({invalid})")
    if data.n_invalid:
        logger.warning("skipping %s", invalid)
    if data.n_rows < params.k:
        raise InvalidInputError(
            f"k={params.k} but the input has only {data.n_rows} valid rows: expected at "
            f"least k rows")


