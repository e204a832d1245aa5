"""Micro-benchmarks: the assignment kernel against a bare GEMM; where a Spark step's time goes.

    python bench/micro.py      # smoke test: 50k-row kernel, 200k-row table, 10 steps

Times are medians measured in one run on this machine and reported, never asserted.
"""
from __future__ import annotations

import ctypes
import logging
import time

import numpy as np
import pyarrow as pa

from minibatch_kmeans.core import kernels
from minibatch_kmeans.core.kernels import labels_and_distances, assignment_stats, row_norms_sq
from minibatch_kmeans.core.loop import candidate_salt, max_candidates, select_candidates
from minibatch_kmeans.spark.udfs import STATS_SCHEMA, _rows, stats_function, stats_to_batch

#: "assign" and "assign+stats" run the kernel this process loaded (``kernels.KERNEL``: the
#: compiled numba passes when numba is installed); "assign+stats (numpy)" is the NumPy path.
KERNELS = ("gemm", "assign", "assign+stats", "assign+stats (numpy)", "naive")
COMPONENTS = ("total", "spark_job", "read_batch", "udf_compute", "collect_partials",
              "driver_update", "bare_job", "bare_udf_job")


def _naive(X, C):
    """Full distance matrix, argmin, and ``np.add.at`` sums: the textbook NumPy version."""
    dist = (X ** 2).sum(1)[:, None] - 2 * X @ C.T + (C ** 2).sum(1)
    labels = dist.argmin(1)
    sums = np.zeros(C.shape)
    np.add.at(sums, labels, X)
    return labels, sums, np.bincount(labels, minlength=len(C)), dist.min(1).sum()


def _numpy_stats(X, C, c_sq):
    """The NumPy path of ``assignment_stats``, whichever kernel is loaded."""
    with kernels._use_kernel("numpy"):
        return assignment_stats(X, C, c_sq, None)


def _kernel_seconds(X, C, repeats: int) -> dict:
    """Median seconds of each of ``KERNELS`` on X under centers C, after a warm-up call;
    the kernels take turns, so a burst of machine noise does not hit only one of them."""
    c_sq = row_norms_sq(C)
    out = np.empty((X.shape[0], C.shape[0]), X.dtype)  # no page faults in the GEMM's time
    fns = {"gemm": lambda: np.matmul(X, C.T, out=out),
           "assign": lambda: labels_and_distances(X, C, c_sq),
           "assign+stats": lambda: assignment_stats(X, C, c_sq, None),
           "assign+stats (numpy)": lambda: _numpy_stats(X, C, c_sq),
           "naive": lambda: _naive(X, C)}
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def blas_info() -> dict:
    """BLAS name and version from ``np.__config__``, and OpenBLAS's thread count when the
    loaded library answers (else None)."""
    blas = getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {})
    info = {"name": blas.get("name"), "version": blas.get("version"), "threads": None}
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "openblas" in line}
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, sym):
                info["threads"] = int(getattr(lib, sym)())
    return info


def kernel_micro(log, rows=(50_000, 200_000), d=32, k=100, repeats=7) -> dict:
    """Rows/s of the assignment kernel, the kernel plus partial sums, and a naive NumPy
    version, each against a bare ``X @ C.T`` of the same shape (into a preallocated output,
    so the baseline is the BLAS's speed, not page faults), in float32 and float64.

    Returns
    -------
    dict
        ``{"d", "k", "repeats", "blas", "kernel", "results": [{"dtype", "rows",
        "gemm_gflops", "<kernel>": {"seconds", "rows_per_s", "pct_of_gemm"}, ...}]}``;
        ``kernel`` names the row passes of "assign" and "assign+stats" (numba or numpy).
    """
    rng = np.random.default_rng(0)
    true_c = rng.uniform(-10, 10, (k, d))
    out = {"d": d, "k": k, "repeats": repeats, "blas": blas_info(), "kernel": kernels.KERNEL,
           "results": []}
    for dtype in ("float32", "float64"):
        C = (true_c + rng.normal(0, 0.5, true_c.shape)).astype(dtype)
        for n in rows:
            X = (true_c[rng.integers(k, size=n)] + rng.standard_normal((n, d))).astype(dtype)
            secs = _kernel_seconds(X, C, repeats)
            rec = {"dtype": dtype, "rows": n, "gemm_gflops": 2 * n * d * k / secs["gemm"] / 1e9}
            for name in KERNELS:
                rec[name] = {"seconds": secs[name], "rows_per_s": n / secs[name],
                             "pct_of_gemm": 100 * secs["gemm"] / secs[name]}
            log.info("%s x %d rows (%s kernel): %s", dtype, n, kernels.KERNEL,
                     {m: round(secs[m], 5) for m in KERNELS})
            out["results"].append(rec)
    return out


def _timed_stats_function(centers, dtype, n_cand, salt_value):
    """mapInArrow function doing ``stats_function``'s work on batches materialised first,
    yielding the seconds of the compute alone (decode, assign, stats, candidates, encode)."""
    C = np.ascontiguousarray(centers, dtype=dtype)
    d = C.shape[1]

    def fn(batches):
        batches = [b for b in batches if b.num_rows]
        t = time.perf_counter()
        c_sq, total = row_norms_sq(C), None
        for batch in batches:
            X, w, keys = _rows(batch, d, dtype, False)
            part = assignment_stats(X, C, c_sq, w)
            if n_cand:
                part.cand_keys, part.cand_rows = select_candidates(keys, X, salt_value, n_cand)
            total = part if total is None else total.merge(part, n_cand)
        if total is not None:
            stats_to_batch(total)
        yield pa.RecordBatch.from_pydict({"seconds": [time.perf_counter() - t],
                                          "rows": [sum(b.num_rows for b in batches)]})
    return fn


def _step_parts(spark, fit, state, bucket, n_cand, rng) -> dict:
    """Seconds of every component once on ``bucket``, in random order (``total`` applies
    the step to ``state``), plus the batch's rows and the partials' size in bytes."""
    from minibatch_kmeans.spark.udfs import table_to_stats

    data, C, dtype, step = fit.data, state.centers, fit.p.np_dtype, state.step
    salt = candidate_salt(fit.p.seed, step)
    t = {}

    def total():
        s = time.perf_counter()
        stats = fit.run_batch(bucket, C, n_cand, step)
        u = time.perf_counter()
        state.apply(stats, bool(n_cand))
        t["driver_update"] = time.perf_counter() - u
        t["total"], t["rows"] = time.perf_counter() - s, stats.n_rows

    def spark_job():
        fn = stats_function(C, dtype, n_cand, salt)
        s = time.perf_counter()
        table = data.bucket(bucket).mapInArrow(fn, STATS_SCHEMA).toArrow()
        u = time.perf_counter()
        table_to_stats(table, C.shape[0], fit.d, n_cand or None)
        t["collect_partials"] = time.perf_counter() - u
        t["spark_job"], t["result_bytes"] = u - s, table.nbytes

    def udf_compute():
        fn = _timed_stats_function(C, dtype, n_cand, salt)
        table = data.bucket(bucket).mapInArrow(fn, "seconds double, rows long").toArrow()
        t["udf_compute"] = max(table.column("seconds").to_pylist())

    def read_only(batches):  # nested, so pickled by value (bench/ is not on executors)
        yield pa.RecordBatch.from_pydict({"n": [sum(b.num_rows for b in batches)]})

    jobs = {"total": total, "spark_job": spark_job, "udf_compute": udf_compute,
            "read_batch": lambda: data.bucket(bucket).mapInArrow(read_only, "n long"),
            "bare_job": lambda: spark.range(1),
            "bare_udf_job": lambda: spark.range(1).mapInArrow(lambda it: it, "id long")}
    for name in rng.permutation(list(jobs)):
        s = time.perf_counter()
        df = jobs[name]()
        if df is not None:  # a DataFrame to run; the other parts time themselves
            df.toArrow()
            t[name] = time.perf_counter() - s
    return t


def step_breakdown(spark, df, input_cols, k, batch_size, seed, log, steps=20) -> dict:
    """Median seconds of each part of one mini-batch step on ``df`` (see ``COMPONENTS``).

    Each iteration draws a random bucket and measures every component once, in random
    order, so machine noise hits all of them alike; 2 warm-up iterations are dropped.

    Returns
    -------
    dict
        Median seconds under each name of ``COMPONENTS`` and ``other`` (total minus
        read, compute, collect and update); ``step_over_bare``, ``rows_per_batch``,
        ``result_bytes``, ``prepare_seconds``, ``n_rows``, ``batch_size``, ``k``, ``steps``.
    """
    from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
    from minibatch_kmeans.spark.features import resolve
    from minibatch_kmeans.spark.fit import FitParams, SparkMiniBatch
    from minibatch_kmeans.spark.prepare import N_SLOTS, prepare

    t0 = time.perf_counter()
    data = prepare(df, resolve(df, "features", input_cols), seed)
    prep = time.perf_counter() - t0
    try:
        n = data.n_rows
        data.n_buckets = max(1, min(N_SLOTS, round(n / batch_size)))
        fit = SparkMiniBatch(data, FitParams(k=k, batch_size=batch_size, seed=seed))
        state = MiniBatchState(fit.init_sample(k)[1],
                               Convergence(n, batch_size, max_no_improvement=None))
        rng = np.random.default_rng(seed)
        parts = []
        for _ in range(steps + 2):
            n_cand = max_candidates(k, batch_size) if state.reassign_due() else 0
            parts.append(_step_parts(spark, fit, state, int(rng.integers(data.n_buckets)),
                                     n_cand, rng))
    finally:
        data.unpersist()
    parts = parts[2:]  # the first iterations warm up the Python workers
    med = {c: float(np.median([t[c] for t in parts])) for c in COMPONENTS}
    med["other"] = med["total"] - sum(med[c] for c in ("read_batch", "udf_compute",
                                                       "collect_partials", "driver_update"))
    log.info("step breakdown over %d steps: %s", steps,
             ", ".join(f"{c} {v:.3f} s" for c, v in med.items()))
    return {**med, "step_over_bare": med["total"] / med["bare_job"],
            "rows_per_batch": float(np.mean([t["rows"] for t in parts])),
            "result_bytes": int(np.median([t["result_bytes"] for t in parts])),
            "prepare_seconds": prep, "n_rows": n, "batch_size": batch_size, "k": k,
            "steps": steps}


def kernel_markdown(result) -> str:
    """Markdown section for :func:`kernel_micro`'s result."""
    b = result["blas"]
    lines = ["## Assignment kernel vs bare GEMM", "",
             (f"Rows/s of one pass over a (rows, {result['d']}) batch with k={result['k']} "
              f"centers (median of {result['repeats']}, interleaved), and as a % of a bare "
              f"`X @ C.T` of the same shape; BLAS {b['name']} {b['version']}, "
              f"{b['threads']} threads. Row passes after the GEMM: "
              f"{result.get('kernel', 'numpy')}; the NumPy column runs the NumPy path."), "",
             ("| dtype | rows | GEMM GFLOP/s | GEMM rows/s | assign | assign + partial stats "
              "| assign + partial stats (NumPy) | naive NumPy |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["results"]:
        cells = [f"{r[n]['rows_per_s'] / 1e6:.2f} M ({r[n]['pct_of_gemm']:.0f}%)"
                 if n in r else "-" for n in KERNELS[1:]]
        lines.append(f"| {r['dtype']} | {r['rows']:,} | {r['gemm_gflops']:.1f} | "
                     f"{r['gemm']['rows_per_s'] / 1e6:.2f} M | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def steps_markdown(result) -> str:
    """Markdown section for :func:`step_breakdown`'s result."""
    total = result["total"]
    lines = ["## Where a step's time goes", "",
             (f"Median seconds of each part of a step over {result['steps']} interleaved "
              f"steps on a prepared {result['n_rows']:,}-row table (batch "
              f"{result['batch_size']:,}, mean {result['rows_per_batch']:.0f} rows; "
              f"k={result['k']}; prepare {result['prepare_seconds']:.1f} s). Step / bare Spark "
              f"job: **{result['step_over_bare']:.1f}x**; partials {result['result_bytes']:,} "
              "bytes. `read_batch` is a whole job, so it includes the job floor; `other` is a "
              "difference of medians and may be negative under noise."),
             "", "| part | median s | % of step |", "| --- | --- | --- |"]
    lines += [f"| {c} | {result[c]:.4f} | {100 * result[c] / total:.0f}% |"
              for c in COMPONENTS + ("other",)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs
    from minibatch_kmeans.spark.session import get_spark

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    bench_log = logging.getLogger("micro")
    kernels = kernel_micro(bench_log, rows=(50_000,))
    session = get_spark("micro", conf={"spark.driver.memory": "4g"})
    write_blobs(session, BlobSpec(rows=200_000, n_features=32, k=50, seed=1), "/tmp/micro-blobs")
    cols = [f"x{j}" for j in range(32)]
    table_df = session.read.parquet("/tmp/micro-blobs").select(*cols)
    breakdown = step_breakdown(session, table_df, cols, k=50, batch_size=20_000, seed=1,
                               log=bench_log, steps=10)
    print(kernel_markdown(kernels))
    print(steps_markdown(breakdown))
    session.stop()
