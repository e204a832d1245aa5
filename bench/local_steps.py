"""localSteps A/B: the plain loop (one Spark job per batch) against m batches per job.

Called by ``bench/run.py``. On one prepared table, the same fit (same seed, same
initialisation, no early stopping, the same number of epochs) runs with each ``localSteps``
value; seconds per batch (the loop's seconds over the batches it applied) are set against
a bare Spark job timed between the fits, and each fit's final full-data cost shows what
the merge by weight costs in quality. Times are measured and reported, never asserted.
"""
from __future__ import annotations

import time

import numpy as np


def _bare_job_seconds(spark, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        spark.range(1).toArrow()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def local_steps_bench(spark, df, input_cols, k, batch_size, seed, log,
                      local_steps=(1, 4, 8, 16), epochs=2) -> dict:
    """Fits with each ``local_steps`` value on one prepared copy of ``df``.

    Returns
    -------
    dict
        ``n_rows``, ``batch_size``, ``k``, ``epochs``, ``bare_job`` (median seconds) and
        ``runs``: per value, ``local_steps``, ``steps`` (Spark jobs), ``batches``,
        ``loop_seconds``, ``seconds_per_batch``, ``batch_over_bare`` and ``cost``.
    """
    from minibatch_kmeans.spark.features import resolve
    from minibatch_kmeans.spark.fit import FitParams, SparkMiniBatch
    from minibatch_kmeans.spark.prepare import prepare

    data = prepare(df, resolve(df, "features", input_cols), seed, storage="memory")
    runs, bare = [], []
    try:
        for m in local_steps:
            bare.append(_bare_job_seconds(spark))
            params = FitParams(k=k, batch_size=batch_size, local_steps=m, max_iter=epochs,
                               seed=seed, tol=0.0, max_no_improvement=None).validate()
            s = SparkMiniBatch(data, params).run().summary
            batches = s["numSteps"] * s["localSteps"]
            runs.append({"local_steps": s["localSteps"], "steps": s["numSteps"],
                         "batches": batches, "loop_seconds": s["loopSeconds"],
                         "seconds_per_batch": s["loopSeconds"] / batches,
                         "cost": s["trainingCost"]})
            log.info("localSteps=%d: %d jobs, %.3f s per batch, cost %.6g", m, s["numSteps"],
                     runs[-1]["seconds_per_batch"], s["trainingCost"])
        bare.append(_bare_job_seconds(spark))
    finally:
        data.unpersist()
    bare_job = float(np.median(bare))
    for r in runs:
        r["batch_over_bare"] = r["seconds_per_batch"] / bare_job
        r["cost_over_plain"] = r["cost"] / runs[0]["cost"]
    return {"n_rows": data.n_rows, "batch_size": batch_size, "k": k, "epochs": epochs,
            "bare_job": bare_job, "runs": runs}


def local_steps_markdown(result) -> str:
    lines = [f"## localSteps: batches per Spark job ({result['n_rows']:,} rows, batch "
             f"{result['batch_size']:,}, k={result['k']}, {result['epochs']} epochs)", "",
             f"Same seed and initialisation, no early stopping. Bare Spark job: "
             f"{result['bare_job']:.3f} s (median between the fits).", "",
             "| localSteps | Spark jobs | s per batch | per batch / bare job | final cost "
             "| cost / localSteps=1 |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['local_steps']} | {r['steps']} | {r['seconds_per_batch']:.3f} | "
              f"{r['batch_over_bare']:.2f}x | {r['cost']:.6g} | {r['cost_over_plain']:.4f} |"
              for r in result["runs"]]
    return "\n".join(lines) + "\n"
