"""The checkpoint's JSON: an exact round trip of the fit's state, and the resume check."""
import json

import numpy as np
import pytest

from minibatch_kmeans.core.checkpoint import (HISTORY_KEPT, Checkpoint, check_resumable,
                                              from_json, mismatches, to_json)
from minibatch_kmeans.core.kernels import BatchStats
from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
from minibatch_kmeans.errors import InvalidParamError

FINGERPRINT = {"k": 3, "seed": 7, "batchSize": 50, "tol": 1e-4, "dtype": "float32",
               "features": {"kind": "columns", "columns": ["a", "b"], "numFeatures": 2,
                            "weightCol": None},
               "numRows": 1000, "weightTotal": 1000.0}
DERIVED = {"batchSizeUsed": 50, "numBuckets": 20, "localStepsUsed": 1}


def stepped_state(steps=5, seed=0):
    """A state after a few real steps on random batches (awkward floats, an EWA, history)."""
    rng = np.random.default_rng(seed)
    state = MiniBatchState(rng.normal(size=(3, 2)) / 3.0,
                           Convergence(1000, 50, tol=0.1 * np.pi, max_no_improvement=4),
                           reassignment_ratio=0.2)
    for _ in range(steps):
        due = state.reassign_due()
        w = rng.integers(1, 30, size=3).astype(np.float64)
        sums = rng.normal(size=(3, 2)) * w[:, None]
        stats = BatchStats(sums=sums, weights=w, counts=w.astype(np.int64),
                           inertia=float(rng.random() * 100), n_rows=np.int64(w.sum()))
        stats.cand_rows = rng.normal(size=(3, 2))
        state.apply(stats, due, epoch=state.step // 20, bucket=int(rng.integers(20)),
                    seconds=rng.random())
    return state


def test_round_trip_is_exact():
    state = stepped_state()
    ckpt = Checkpoint(state, FINGERPRINT, DERIVED, None)
    text = to_json(ckpt)
    assert "\n" not in text  # one line: also one line of a text file written by Spark
    back = from_json(text)
    s = back.state
    assert s.centers.dtype == np.float64 and s.weight_sums.dtype == np.float64
    assert np.array_equal(s.centers, state.centers)  # bit for bit
    assert np.array_equal(s.weight_sums, state.weight_sums)
    assert (s.step, s.rows_seen, s.n_since_last_reassign) == \
        (state.step, state.rows_seen, state.n_since_last_reassign)
    assert (s.reassignment_ratio, s.spherical) == (state.reassignment_ratio, state.spherical)
    assert s.convergence == state.convergence  # every field, floats exact
    assert s.convergence.ewa is not None and s.convergence.ewa_min is not None
    assert [r.as_dict() for r in s.history] == [r.as_dict() for r in state.history]
    assert back.fingerprint == FINGERPRINT and back.derived == DERIVED
    assert back.step == state.step and back.stop_reason is None and not back.finished
    assert to_json(back) == text


def test_checkpoint_size_does_not_grow_with_the_steps():
    """A checkpoint keeps the last HISTORY_KEPT records: over a 10,000-step fit saved every
    10 steps the bytes written grow with the steps (at most 1,000 x one late checkpoint),
    not with their square (the whole history in every save: about 50 x that again)."""
    state = stepped_state(steps=10_000, seed=3)
    late = len(to_json(Checkpoint(state, FINGERPRINT, DERIVED)))
    state.history = state.history[:2 * HISTORY_KEPT]
    size = len(to_json(Checkpoint(state, FINGERPRINT, DERIVED)))
    assert size == pytest.approx(late, rel=0.05)
    back = from_json(to_json(Checkpoint(state, FINGERPRINT, DERIVED)))
    kept = state.history[-HISTORY_KEPT:]
    assert [r.step for r in back.state.history] == [r.step for r in kept]
    whole = stepped_state(steps=10_000, seed=3)
    written = 0
    for end in range(10, 10_001, 10):
        state.history = whole.history[:end]
        written += len(to_json(Checkpoint(state, FINGERPRINT, DERIVED)))
    assert written <= 1000 * late * 1.05
    # the last save of the old format alone: the whole history, 10,000 records
    assert len(json.dumps([r.as_dict() for r in whole.history], default=float)) > 50 * late


def test_resumed_state_steps_exactly_like_the_original():
    """Serialising between two steps changes nothing: the same next steps, bit for bit."""
    a = stepped_state(steps=4, seed=3)
    b = from_json(to_json(Checkpoint(a, {}, {}))).state
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for state, rng in ((a, rng_a), (b, rng_b)):
        for _ in range(6):
            due = state.reassign_due()
            w = rng.integers(0, 30, size=3).astype(np.float64)
            stats = BatchStats(sums=rng.normal(size=(3, 2)) * w[:, None], weights=w,
                               counts=w.astype(np.int64), inertia=float(rng.random()),
                               n_rows=int(w.sum()))
            stats.cand_rows = rng.normal(size=(3, 2))
            state.apply(stats, due)
    assert np.array_equal(a.centers, b.centers) and a.convergence == b.convergence


def test_stop_reasons():
    state = stepped_state(steps=1)
    assert from_json(to_json(Checkpoint(state, {}, {}, "tol"))).finished
    assert from_json(to_json(Checkpoint(state, {}, {}, "maxIter"))).finished
    interrupted = from_json(to_json(Checkpoint(state, {}, {}, "interrupted")))
    assert interrupted.stop_reason == "interrupted" and not interrupted.finished


def test_mismatch_names_every_differing_field():
    ckpt = Checkpoint(stepped_state(steps=2), FINGERPRINT, DERIVED)
    now = dict(FINGERPRINT, k=4, seed=8)
    with pytest.raises(InvalidParamError) as e:
        check_resumable(ckpt, now, DERIVED, source="checkpoint X")
    msg = str(e.value)
    assert "checkpoint X (step 2)" in msg
    assert "k=3 there but 4 now" in msg and "seed=7 there but 8 now" in msg
    assert "batchSize" not in msg  # only what differs
    with pytest.raises(InvalidParamError, match="numBuckets=20 there but 21 now"):
        check_resumable(ckpt, FINGERPRINT, dict(DERIVED, numBuckets=21))
    features = dict(FINGERPRINT["features"], columns=["a", "c"])
    with pytest.raises(InvalidParamError, match=r"features=.*\"b\".* there but .*\"c\""):
        check_resumable(ckpt, dict(FINGERPRINT, features=features), DERIVED)
    check_resumable(ckpt, dict(FINGERPRINT), dict(DERIVED))  # the same: no error


def test_mismatch_rules():
    # a weight total summed in another order may differ in its last bits
    assert mismatches({"weightTotal": 0.1 + 0.2}, {"weightTotal": 0.3}) == []
    assert mismatches({"tol": 1e-4}, {"tol": 2e-4}) == [("tol", 1e-4, 2e-4)]
    assert mismatches({"a": 1}, {}) == [("a", 1, None)]  # missing is None
    assert mismatches({"a": None}, {}) == []
    assert mismatches({"x": True}, {"x": 1}) == [("x", True, 1)]
    assert mismatches({"c": (1, 2)}, {"c": [1, 2]}) == []  # compared as JSON
    assert mismatches({"n": np.int64(3)}, {"n": 3}) == []


@pytest.mark.parametrize("text, words", [
    ("not json", "invalid JSON"),
    ("[1, 2]", "format"),
    (json.dumps({"format": "something.else"}), "format"),
    (json.dumps({"format": "minibatch_kmeans.checkpoint", "version": 99}), "version 99"),
    (json.dumps({"format": "minibatch_kmeans.checkpoint", "version": 1}), "KeyError"),
])
def test_unreadable_checkpoints_raise(text, words):
    with pytest.raises(InvalidParamError, match=f"file F is not a readable.*{words}"):
        from_json(text, source="file F")


def test_tampered_fields_raise():
    doc = json.loads(to_json(Checkpoint(stepped_state(steps=2), {}, {})))
    doc["state"]["convergence"]["surprise"] = 1
    with pytest.raises(InvalidParamError, match="convergence has fields"):
        from_json(json.dumps(doc))
    doc = json.loads(to_json(Checkpoint(stepped_state(steps=2), {}, {})))
    doc["state"]["weightSums"] = [1.0]
    with pytest.raises(InvalidParamError, match="weight sums of shape"):
        from_json(json.dumps(doc))
