"""Scale benchmark: a table larger than memory, trained in a small driver.

    python bench/scale.py --rows 50000000 --driver-memory 2g --json out/bench/scale.json

Runs in its own process, because a JVM's heap is fixed when it starts: ``bench/run.py``
calls it that way. On a local[2] session with ``spark.driver.memory`` as given (the
executors live in the driver's JVM), it

0. times one Python pass over the Parquet input (a ``mapInArrow`` that only counts the
   rows it is handed): the unit the fit is measured in;
1. fits MiniBatchKMeans with default Params (k=50, seed) straight from the Parquet input;
2. fits scikit-learn's ``KMeans`` on a random sample of ``--sample`` rows (written by
   Spark, read back with pyarrow, so the sample never passes through the small JVM);
3. measures both center sets' cost on the whole table in one shared pass
   (``clustering_costs``): the target is ours <= 1.01 x the sample's centers.

Times are measured and reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

K, D = 50, 32


def _count_rows(batches):
    import pyarrow as pa

    n = 0
    for b in batches:
        n += b.num_rows
    yield pa.RecordBatch.from_pydict({"n": [n]})


def sample_centers(spark, df, cols, rows, sample_rows, seed, path, log):
    """scikit-learn KMeans (one k-means++ run, float32) on ``sample_rows`` random rows:
    (centers, seconds to fit, rows in the sample)."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    if not Path(path, "_SUCCESS").exists():
        df.sample(fraction=min(1.0, 1.02 * sample_rows / rows), seed=seed).limit(sample_rows) \
            .write.mode("overwrite").parquet(path)
    table = pq.read_table(path, columns=cols)
    X = np.column_stack([table.column(c).to_numpy() for c in cols]).astype(np.float32)
    del table
    log.info("scikit-learn KMeans on a %d-row sample", len(X))
    t0 = time.perf_counter()
    km = KMeans(n_clusters=K, n_init=1, random_state=seed).fit(X)
    return km.cluster_centers_.astype(np.float64), time.perf_counter() - t0, len(X)


def scale_bench(rows, driver_memory, sample_rows, seed, data_dir, log) -> dict:
    from run import get_data

    from minibatch_kmeans import MiniBatchKMeans
    from minibatch_kmeans.evaluate.compare import clustering_costs
    from minibatch_kmeans.spark.session import get_spark

    spark = get_spark("minibatch-kmeans-scale", master="local[2]",
                      conf={"spark.driver.memory": driver_memory,
                            "spark.sql.shuffle.partitions": "8"})
    try:
        df, path = get_data(spark, rows, D, K, seed, data_dir)
        cols = [f"x{i}" for i in range(D)]
        df = df.select(*cols)
        t0 = time.perf_counter()
        df.mapInArrow(_count_rows, "n long").agg({"n": "sum"}).first()
        pass_seconds = time.perf_counter() - t0
        log.info("one Python pass: %.1f s", pass_seconds)
        t0 = time.perf_counter()
        model = MiniBatchKMeans(k=K, inputCols=cols, seed=seed).fit(df)
        fit_seconds = time.perf_counter() - t0
        s = model.summary
        log.info("fit: %.1f s (%s, %.2f passes)", fit_seconds, s.fitMode, s.passesOverData)
        ref, ref_seconds, n_sample = sample_centers(
            spark, df, cols, rows, sample_rows, seed, f"{path}_sample{sample_rows}", log)
        t0 = time.perf_counter()
        ours, sample = clustering_costs(df, [model.clusterCenters(), ref], input_cols=cols)
        cost_seconds = time.perf_counter() - t0
    finally:
        spark.stop()
    return {"rows": rows, "features": D, "k": K, "batch_size": s.batchSize,
            "driver_memory": driver_memory, "data": path, "fit_mode": s.fitMode,
            "passes_over_data": s.passesOverData, "jobs": s.numJobs,
            "python_pass_seconds": pass_seconds, "fit_over_pass": fit_seconds / pass_seconds,
            "fit_seconds": fit_seconds, "prepare_seconds": s.prepareSeconds,
            "init_seconds": s.initSeconds, "loop_seconds": s.loopSeconds,
            "steps": s.numSteps, "seconds_per_step": s.loopSeconds / max(s.numSteps, 1),
            "stop_reason": s.stopReason, "cost": ours["cost"],
            "sample_rows": n_sample, "sample_kmeans_seconds": ref_seconds,
            "sample_kmeans_cost": sample["cost"], "cost_ratio": ours["cost"] / sample["cost"],
            "cost_pass_seconds": cost_seconds}


def scale_markdown(r) -> str:
    return "\n".join([
        f"## Scale: {r['rows']:,} x {r['features']} rows, driver memory {r['driver_memory']}",
        "",
        f"Fit ({r['fit_mode']}, default Params) **{r['fit_seconds']:.0f} s = "
        f"{r['fit_over_pass']:.2f} x one Python pass** over the same input "
        f"({r['python_pass_seconds']:.0f} s): {r['passes_over_data']:.2f} passes over the "
        f"data in {r['jobs']} jobs; count and sample {r['prepare_seconds']:.0f} s, init "
        f"{r['init_seconds']:.1f} s, passes {r['loop_seconds']:.0f} s ({r['stop_reason']}).",
        "",
        "| model | full-data cost | ratio |", "| --- | --- | --- |",
        f"| ours | {r['cost']:.6g} | {r['cost_ratio']:.4f} |",
        f"| scikit-learn KMeans on {r['sample_rows']:,} rows ({r['sample_kmeans_seconds']:.0f}"
        f" s) | {r['sample_kmeans_cost']:.6g} | 1 |", ""])


def run_subprocess(rows, driver_memory, sample_rows, seed, data_dir, out, log) -> dict:
    """This benchmark in a fresh Python process and JVM; its result."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__)), "--rows", str(rows), "--driver-memory",
           driver_memory, "--sample", str(sample_rows), "--seed", str(seed), "--data-dir",
           data_dir, "--json", out]
    log.info("scale benchmark: %s", " ".join(cmd))
    env = dict(os.environ)
    env.pop("PYSPARK_GATEWAY_PORT", None)  # its own JVM, not this process's
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    subprocess.run(cmd, check=True, env=env)
    return json.loads(Path(out).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000_000)
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("--sample", type=int, default=5_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", default="out/bench-data")
    p.add_argument("--json", default="out/bench/scale.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    log = logging.getLogger("bench.scale")
    result = scale_bench(args.rows, args.driver_memory, args.sample, args.seed,
                         args.data_dir, log)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(scale_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
