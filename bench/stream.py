"""What the streaming job costs per micro-batch beyond the model update itself.

    .venv/bin/python bench/stream.py [--files 6 --rows 100000 --features 16 --k 20]

Writes ``--files`` Parquet files of blobs, then in the same session times (1) the
partialFit calls alone on each file read as a table and (2) the stream (``run_stream``,
one file per micro-batch, Parquet outputs: predictions, metrics, state, model), and prints
the per-micro-batch seconds of both and their ratio. The first micro-batch of each is left
out (Python workers and caches warming up). Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--no-predictions", action="store_true",
                   help="stream without the predictions table (what scoring costs)")
    args = p.parse_args(argv)
    from minibatch_kmeans import MiniBatchKMeansModel
    from minibatch_kmeans.app.config import StreamConfig
    from minibatch_kmeans.spark.session import get_spark
    from minibatch_kmeans.app.stream_job import run_stream

    spark = get_spark("bench-stream", master="local[2]",
                      conf={"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": 4,
                            "spark.ui.showConsoleProgress": "false"})
    root = tempfile.mkdtemp(prefix="mbkm-bench-stream-")
    try:
        rng = np.random.default_rng(1)
        centers = rng.uniform(-10, 10, (args.k, args.features))
        cols = [f"x{j}" for j in range(args.features)]
        files = []
        for i in range(args.files):
            X = centers[rng.integers(0, args.k, args.rows)] + rng.normal(
                size=(args.rows, args.features))
            frame = pd.DataFrame(X, columns=cols)
            frame.insert(0, "id", np.arange(args.rows) + i * args.rows)
            path = os.path.join(root, "in", f"part-{i:03d}.parquet")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            frame.to_parquet(path, index=False)
            os.utime(path, (1_700_000_000 + i,) * 2)
            files.append(path)
        start = MiniBatchKMeansModel(centers + 0.5, np.full(args.k, 1000.0)).setInputCols(cols)
        start.write().save(os.path.join(root, "start"))

        model, alone = start, []
        for path in files:
            t0 = time.perf_counter()
            model = model.partialFit(spark.read.parquet(path), halfLife=5)
            alone.append(time.perf_counter() - t0)
        cfg = StreamConfig.from_dict({
            "input": {"path": os.path.join(root, "in")},
            "stream": {"model": os.path.join(root, "start"), "half_life": 5,
                       "max_files_per_trigger": 1, "id_columns": ["id"]},
            "output": {"dir": os.path.join(root, "out")} | (
                {"predictions": None} if args.no_predictions else {})})
        run_stream(spark, cfg)
        metrics = spark.read.parquet(cfg.output.metrics).toPandas().sort_values("batch_id")
        streamed = metrics["seconds"].tolist()
        same = np.allclose(np.array(MiniBatchKMeansModel.load(cfg.output.model)
                                    .clusterCenters()), np.array(model.clusterCenters()),
                           rtol=1e-9)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a, s = float(np.median(alone[1:])), float(np.median(streamed[1:]))
    print(f"{args.files} micro-batches of {args.rows:,} rows x {args.features} features, "
          f"k={args.k}{', no predictions' if args.no_predictions else ''}: partialFit "
          f"alone {a:.2f} s, stream micro-batch {s:.2f} s (median, "
          f"first left out): {s / a:.1f}x; same centers: {same}")
    print(json.dumps({"rows": args.rows, "features": args.features, "k": args.k,
                      "partial_fit_seconds": a, "micro_batch_seconds": s, "ratio": s / a,
                      "same_centers": bool(same), "predictions": not args.no_predictions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
