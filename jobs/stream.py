"""Keep a k-means model current from a stream of new rows, as a YAML config says.

    python jobs/stream.py --conf conf/stream.yaml
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/stream.py --conf stream.yaml

Reads the new rows of a Parquet directory or a Delta table with Structured Streaming and,
for every micro-batch, runs the data quality gate (invalid rows to the quarantine table
with their reason), applies one mini-batch update to the model with the configured
forgetting (``stream.decay_factor``, or ``stream.half_life`` in batches or rows) and
re-seeding of dying centers, writes the micro-batch's predictions and a metrics row, saves
the model state with the batch id (a micro-batch replayed after a failure is skipped, not
applied twice), saves the current model at ``output.model``, and registers a model version
every ``stream.register_every`` micro-batches. The default trigger, ``available_now``,
processes what is there and stops: a scheduled job that is safe to re-run. See
minibatch_kmeans.app.stream_job.

Exit codes: 0 the stream ended (its trigger, or ``stream.timeout_seconds``), 2 bad
configuration or input (``stream.handle_invalid: error`` and a micro-batch with invalid
rows, a state that belongs to another checkpoint or input), 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.app.config import configure_logging, load_stream_config
from minibatch_kmeans.spark.session import job_session
from minibatch_kmeans.app.stream_job import run_stream

logger = logging.getLogger("minibatch_kmeans_jobs.stream")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/stream.yaml",
                        help="YAML streaming config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. --set "
                        "stream.half_life=10 (repeatable)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_stream_config(args.conf, args.overrides)
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        result = run_stream(spark, cfg)
    print(f"stream {cfg.input.format} {cfg.input.describe()}: {result.batches} micro-batches "
          f"processed ({result.applied_batches} applied, "
          f"{result.batches - result.applied_batches} not applied"
          + (f", {len(result.replayed)} replayed and skipped" if result.replayed else "")
          + ")" + ("" if result.batch_id is None else
                   f"; state at micro-batch {result.batch_id}")
          + ("" if result.num_updates is None else
             f", model updated {result.num_updates} times, saved to {result.model_path}"))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("stream", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
