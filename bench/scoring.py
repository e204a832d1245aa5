"""Scoring throughput: our ``transform`` against MLlib ``KMeansModel.transform``.

Both models have the same k and are fitted on the same small sample (scoring speed does not
depend on how good the centers are). Each job scores the whole table and writes the id and
the prediction as Parquet, as a scoring job does; MLlib's job includes the VectorAssembler
its model needs. A floor job reads the same feature columns and writes a prediction
from one cheap SQL expression (no model), so the report shows how much of each time is
reading and writing.
"""
from __future__ import annotations

import shutil
import time

import numpy as np

JOBS = ("ours", "mllib", "floor")


def scoring_bench(spark, df, cols, k, seed, log, out_dir, id_col="id", repeats=3,
                  cached=False) -> dict:
    """Rows/s of each job in ``JOBS`` (best of ``repeats``, interleaved in random order).

    Returns
    -------
    dict
        ``rows``, ``cached``, ``seconds`` and ``rows_per_s`` per job, and
        ``ours_over_mllib`` (rows/s ratio).
    """
    from pyspark import StorageLevel
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from minibatch_kmeans import MiniBatchKMeans

    df = df.select(id_col, *cols)
    if cached:
        df = df.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    n = df.count()
    sample = df.limit(50_000).persist(StorageLevel.MEMORY_AND_DISK_DESER)
    ours = MiniBatchKMeans(k=k, inputCols=cols, batchSize=10_000, maxIter=5, seed=seed,
                           computeTrainingCost=False).fit(sample)
    assembler = VectorAssembler(inputCols=cols, outputCol="features")
    mllib = KMeans(k=k, maxIter=5, seed=seed).fit(assembler.transform(sample))
    sample.unpersist()

    def write(scored):
        scored.select(id_col, "prediction").write.mode("overwrite").parquet(out_dir)

    jobs = {"ours": lambda: write(ours.transform(df)),
            "mllib": lambda: write(mllib.transform(assembler.transform(df))),
            "floor": lambda: write(df.withColumn(
                "prediction", (F.greatest(*cols) > F.least(*cols)).cast("int")))}
    seconds = {j: [] for j in JOBS}
    rng = np.random.default_rng(seed)
    try:
        for _ in range(repeats):
            for name in rng.permutation(JOBS):
                t0 = time.perf_counter()
                jobs[name]()
                seconds[name].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if cached:
            df.unpersist()
    best = {j: min(v) for j, v in seconds.items()}
    rate = {j: n / s for j, s in best.items()}
    log.info("scoring %d rows (cached=%s): %s", n, cached,
             ", ".join(f"{j} {best[j]:.2f} s" for j in JOBS))
    return {"rows": n, "k": k, "features": len(cols), "cached": cached, "repeats": repeats,
            "seconds": best, "rows_per_s": rate,
            "ours_over_mllib": rate["ours"] / rate["mllib"]}


def scoring_markdown(results) -> str:
    """Markdown section for a list of :func:`scoring_bench` results."""
    lines = ["## Scoring: transform + write predictions", "",
             ("Best of interleaved repeats. Each job scores every row and writes id + prediction "
              "as Parquet; MLlib's includes its VectorAssembler. `floor`: read the same "
              "features and write a prediction from one cheap SQL expression (no "
              "model)."), "",
             "| input | rows | k | ours rows/s | MLlib rows/s | floor rows/s | ours / MLlib |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        v = r["rows_per_s"]
        lines.append(f"| {'cached' if r['cached'] else 'Parquet'} | {r['rows']:,} | {r['k']} | "
                     f"{v['ours'] / 1e6:.2f} M | {v['mllib'] / 1e6:.2f} M | "
                     f"{v['floor'] / 1e6:.2f} M | **{r['ours_over_mllib']:.2f}x** |")
    return "\n".join(lines) + "\n"
