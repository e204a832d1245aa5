"""Generate synthetic Gaussian blobs with known centers into Parquet, in parallel by Spark.

    python jobs/generate_data.py --out out/data/blobs --rows 1000000 --features 16 --k 20

Writes the table (x0 .. x{d-1} double, label int (-1 for outliers), id long) at --out and
its true centers (cluster, center, weight) at <out>_centers, both overwritten. The rows
depend on the seed and --chunk-rows, never on --partitions. Exit codes: 0 success, 2 bad
arguments, 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional

from minibatch_kmeans.app.config import LOG_LEVELS, configure_logging
from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs
from minibatch_kmeans.app.cli import job_parser, run_job
from minibatch_kmeans.spark.session import job_session

logger = logging.getLogger("minibatch_kmeans_jobs.generate_data")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = job_parser("generate_data", __doc__)
    p.add_argument("--out", default="out/data/blobs", help="output path (default: %(default)s)")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--k", type=int, default=20, help="number of true clusters")
    p.add_argument("--spread", type=float, default=1.0,
                   help="standard deviation of each blob (centers lie in [-10, 10] per axis)")
    p.add_argument("--imbalance", type=float, default=1.0,
                   help="largest / smallest cluster weight; 1 = balanced")
    p.add_argument("--outlier-fraction", type=float, default=0.0,
                   help="fraction of uniform outliers, labelled -1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--partitions", type=int, default=None,
                   help="Spark partitions (default: one per chunk); does not change the rows")
    p.add_argument("--chunk-rows", type=int, default=100_000,
                   help="rows generated per task (part of the data's identity, like --seed)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    spec = BlobSpec(rows=args.rows, n_features=args.features, k=args.k, spread=args.spread,
                    imbalance=args.imbalance, outlier_fraction=args.outlier_fraction,
                    seed=args.seed, chunk_rows=args.chunk_rows).validate()
    t0 = time.perf_counter()
    with job_session("minibatch-kmeans-generate-data") as spark:
        info = write_blobs(spark, spec, args.out, args.partitions)
    print(f"wrote {info['rows']:,} rows x {info['numFeatures']} features ({info['k']} "
          f"clusters, {info['chunks']} chunks) to {info['path']} in "
          f"{time.perf_counter() - t0:.1f} s; true centers at {info['centersPath']}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("generate_data", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
