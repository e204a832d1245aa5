"""Choose k: mini-batch fits over a grid of k, measured on held-out rows, as a YAML config says.

    python jobs/tune.py --conf conf/tune.yaml [--set tune.k=[5,10,20] --set input.path=...]
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/tune.py --conf tune.yaml

The config is a train config plus a ``tune`` section: ``k`` (the grid), ``batch_sizes``
(optional: tried for every k, instead of model.batchSize), ``holdout_fraction`` and
``sample_size``. The input is split by a hash of each row's features and model.seed; every
grid point fits :class:`minibatch_kmeans.MiniBatchKMeans` (the model section, its k
replaced) on the training part and is measured on the holdout: cost per row and silhouette
on a fixed sample (:func:`minibatch_kmeans.lifecycle.tune.choose_k`). The recommended k has the
largest silhouette; the elbow of the cost curve is reported beside it. Writes tune.json,
tune.md and k_curves.png under output.dir and prints the Markdown table. Exit codes: 0
success, 2 bad configuration or input, 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.app.config import configure_logging, load_config
from minibatch_kmeans.paths import driver_path, is_remote
from minibatch_kmeans.errors import ConfigError
from minibatch_kmeans.app.outputs import read_input, registry_module
from minibatch_kmeans.spark.session import job_session
from minibatch_kmeans.lifecycle.tune import choose_k, markdown, write_tune

logger = logging.getLogger("minibatch_kmeans_jobs.tune")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/tune.yaml",
                        help="YAML job config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set tune.k=[5,10,20] "
                             "(repeatable)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.conf, args.overrides)
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    t = cfg.tune
    logger.info("config tune: k=%s, batch_sizes=%s, holdout_fraction=%g, sample_size=%d",
                list(t.k), None if t.batch_sizes is None else list(t.batch_sizes),
                t.holdout_fraction, t.sample_size)
    if not t.k:
        raise ConfigError("tune.k is missing: it is required (the grid of k values, e.g. "
                          "[5, 10, 15, 20])")
    if is_remote(cfg.output.dir):
        raise ConfigError(f"output.dir={cfg.output.dir!r} is invalid: expected a folder on "
                          "the driver (or dbfs:/) for tune.json, tune.md and k_curves.png")
    params = cfg.estimator_params()
    if params.pop("k", None) is not None:
        logger.info("model.k is replaced by the grid tune.k")
    if t.batch_sizes is not None and params.pop("batchSize", None) is not None:
        logger.info("model.batchSize is replaced by tune.batch_sizes")
    seed = params.pop("seed", None)
    seed = 1 if seed is None else seed  # seeds the split and every fit
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        df = read_input(spark, cfg.input)
        result = choose_k(df, list(t.k), batch_sizes=None if t.batch_sizes is None
                          else list(t.batch_sizes), holdout_fraction=t.holdout_fraction,
                          sample_size=t.sample_size, seed=seed, **params)
    result["data"]["input"] = f"{cfg.input.describe()} ({result['data']['input']})"
    result["configPath"] = args.conf
    write_tune(result, driver_path(cfg.output.dir))
    if cfg.mlflow is not None:
        registry_module().log_job_run(
            cfg.mlflow, "tune", result["params"], result["metrics"],
            pngs=[result["files"]["k_curves.png"]], tags={"input": cfg.input.describe()})
    print(markdown(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("tune", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
