"""A fit's checkpoint as JSON: the full :class:`MiniBatchState` plus what must match to
resume it (NumPy only; where checkpoints are stored is :mod:`minibatch_kmeans.spark.checkpoint`).

A checkpoint holds

- ``state``: centers and weight sums (float64, exactly: Python's ``repr`` of a float, which
  ``json`` writes, reads back to the same bits), step, rows seen, the reassignment
  counter, every :class:`Convergence` field (the EWA, its minimum, the no-improvement
  counter and the scaled ``tol``) and the last :data:`HISTORY_KEPT` history records (so
  that a checkpoint's size does not grow with the fit's length: a resumed fit's history
  starts there);
- ``fingerprint``: what the fit's result depends on (Params by name, the feature layout,
  the prepared table's row count and weight): resuming under another fingerprint raises;
- ``derived``: what the fit derived before its loop (batch size after clamping, local
  steps, buckets, init size, step budget), checked as well;
- ``stopReason``: None while the fit runs, the reason once it stopped (``"interrupted"``
  means it can go on).

The random state is the seed (in the fingerprint) plus the step: after initialisation
every random choice (an epoch's bucket order, a step's re-seeding candidates) is a
counter-based function of (seed, epoch or step), see :mod:`minibatch_kmeans.core.rng`.

Nothing read from a checkpoint is unpickled or executed: it is plain JSON.

Examples
--------
>>> import numpy as np
>>> from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
>>> state = MiniBatchState(np.array([[0.1, 0.2], [1 / 3, 2.0]]), Convergence(100, 10))
>>> text = to_json(Checkpoint(state, {"k": 2}, {"numBuckets": 10}))
>>> back = from_json(text)
>>> bool((back.state.centers == state.centers).all()), back.step, back.finished
(True, 0, False)
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InvalidParamError
from .minibatch import (STOP_MAX_ITER, STOP_NO_IMPROVEMENT, STOP_TOL, Convergence,
                        MiniBatchState, StepRecord)

FORMAT = "minibatch_kmeans.checkpoint"
VERSION = 1
#: Stop reasons after which a fit is over; a checkpoint with one of these resumes to no steps.
FINAL_REASONS = (STOP_MAX_ITER, STOP_TOL, STOP_NO_IMPROVEMENT)
#: History records a checkpoint keeps (the latest): its size stays bounded however long
#: the fit (about 20 KB of history at most), and a fit saved every 10 steps writes bytes in
#: proportion to its steps, not to their square.
HISTORY_KEPT = 100
#: Relative tolerance for float fingerprint values (a weight total summed by Spark may
#: differ in its last bits with the order of the partitions).
FLOAT_RTOL = 1e-9


@dataclass
class Checkpoint:
    """One saved point of a fit.

    Attributes
    ----------
    state : MiniBatchState
    fingerprint : dict
        JSON values naming what the result depends on (see :func:`mismatches`).
    derived : dict
        JSON values the fit derived before its loop.
    stop_reason : str or None
    """

    state: MiniBatchState
    fingerprint: Dict[str, Any]
    derived: Dict[str, Any]
    stop_reason: Optional[str] = None

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def finished(self) -> bool:
        """Whether the fit had stopped for good (not merely interrupted)."""
        return self.stop_reason in FINAL_REASONS


def _plain(value):
    """``json.dumps`` default: NumPy scalars and arrays as plain Python values."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_dict(ckpt: Checkpoint) -> dict:
    """The JSON document of a checkpoint, as a dict (nothing is mutated)."""
    s = ckpt.state
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": int(s.step),
        "stopReason": ckpt.stop_reason,
        "fingerprint": ckpt.fingerprint,
        "derived": ckpt.derived,
        "state": {
            "centers": np.asarray(s.centers, dtype=np.float64).tolist(),
            "weightSums": np.asarray(s.weight_sums, dtype=np.float64).tolist(),
            "step": int(s.step),
            "rowsSeen": int(s.rows_seen),
            "nSinceLastReassign": int(s.n_since_last_reassign),
            "reassignmentRatio": float(s.reassignment_ratio),
            "spherical": bool(s.spherical),
            "convergence": dataclasses.asdict(s.convergence),
            "history": [dataclasses.asdict(r) for r in s.history[-HISTORY_KEPT:]],
        },
    }


def to_json(ckpt: Checkpoint) -> str:
    """One line of JSON (no newline inside, so it is also one line of a text file)."""
    return json.dumps(to_dict(ckpt), default=_plain, separators=(",", ":"))


def from_json(text: str, source: str = "the checkpoint") -> Checkpoint:
    """Parse :func:`to_json`'s output. Raises InvalidParamError naming ``source`` when the
    text is not a checkpoint of this format (and version)."""
    def bad(why):
        raise InvalidParamError(f"{source} is not a readable minibatch_kmeans checkpoint: "
                                f"{why}")

    try:
        doc = json.loads(text)
    except ValueError as e:
        bad(f"invalid JSON ({e})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        bad(f"expected a JSON object with format {FORMAT!r}")
    if doc.get("version") != VERSION:
        bad(f"version {doc.get('version')!r}, expected {VERSION}")
    try:
        s = doc["state"]
        centers = np.array(s["centers"], dtype=np.float64)
        weight_sums = np.array(s["weightSums"], dtype=np.float64)
        if centers.ndim != 2 or weight_sums.shape != (centers.shape[0],):
            bad(f"centers of shape {centers.shape} and weight sums of shape "
                f"{weight_sums.shape}, expected (k, n_features) and (k,)")
        conv = Convergence(**_fields(Convergence, s["convergence"], "convergence"))
        history = [StepRecord(**_fields(StepRecord, r, "history")) for r in s["history"]]
        state = MiniBatchState(centers, conv, s["reassignmentRatio"], s["spherical"],
                               weight_sums, s["step"], s["rowsSeen"], s["nSinceLastReassign"],
                               history)
        return Checkpoint(state, dict(doc["fingerprint"]), dict(doc["derived"]),
                          doc["stopReason"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, InvalidParamError):
            raise
        bad(f"{type(e).__name__}: {e}")


def _fields(cls, values: dict, where: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not isinstance(values, dict) or not required <= set(values) <= names:
        got = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{where} has fields {got}, expected {sorted(names)}")
    return values


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=0.0))
    return a == b


def mismatches(saved: Dict[str, Any], current: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(name, saved value, current value) of every key whose values differ, sorted by name;
    a key missing on one side counts as None there. Values are compared after a JSON round
    trip (tuples are lists), floats to a relative 1e-9."""
    a = json.loads(json.dumps(saved, default=_plain))
    b = json.loads(json.dumps(current, default=_plain))
    return [(name, a.get(name), b.get(name)) for name in sorted(set(a) | set(b))
            if not _same(a.get(name), b.get(name))]


def check_resumable(ckpt: Checkpoint, fingerprint: Dict[str, Any], derived: Dict[str, Any],
                    source: str = "the checkpoint") -> None:
    """Raise InvalidParamError naming every field in which ``ckpt`` was written by another
    fit than the one described by ``fingerprint`` and ``derived``."""
    diff = mismatches(ckpt.fingerprint, fingerprint) + mismatches(ckpt.derived, derived)
    if diff:
        fields = "; ".join(f"{name}={_short(old)} there but {_short(new)} now"
                           for name, old, new in diff)
        raise InvalidParamError(
            f"cannot resume from {source} (step {ckpt.step}): it was written by another fit "
            f"({fields}); expected the same Params and input, or use another checkpointDir "
            "(or run id) to start afresh")


def _short(value) -> str:
    text = json.dumps(value, default=_plain)
    return text if len(text) <= 80 else text[:77] + "..."
