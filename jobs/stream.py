"""Keep a k-means model current from a stream of new rows, as a YAML config says.

    python jobs/stream.py --conf conf/stream.yaml
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/stream.py --conf stream.yaml

Reads the new rows of a Parquet directory, a Delta table or a Kafka topic (``input.format:
kafka``) with Structured Streaming and, for every micro-batch, runs the data quality gate (invalid rows to the quarantine table
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
rows, a state that belongs to another checkpoint or input, a state directory another query
holds), 1 anything else. A first micro-batch with fewer than k distinct valid rows (no
``stream.model``) is not applied, and its rows wait for the next micro-batches'.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.config import load_stream_config
from minibatch_kmeans.app.stream_job import run_stream


def run(spark, cfg, args):
    return run_stream(spark, cfg)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("stream", __doc__, load_stream_config, run, argv,
                      default_conf="conf/stream.yaml", example="stream.half_life=10")


if __name__ == "__main__":
    sys.exit(main())
