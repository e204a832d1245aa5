"""Compare MiniBatchKMeans with Spark MLlib KMeans on one table, as a YAML config says.

    python jobs/compare.py --conf conf/compare.yaml [--set model.k=30 --set input.path=...]
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/compare.py --conf compare.yaml

Both models train on the same input, cached once before either clock starts (the model
section configures ours and gives k, seed and maxIter to both; compare.mllib configures
MLlib). Writes compare.json, compare.md and three PNGs (cost against seconds, cluster sizes,
a PCA picture) under output.dir, and prints the Markdown table. Exit codes: 0 success, 2
bad configuration or input, 1 anything else.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.evaluate.compare import compare_with_mllib, markdown
from minibatch_kmeans.app.config import configure_logging, load_config
from minibatch_kmeans.paths import driver_path, is_remote
from minibatch_kmeans.errors import ConfigError
from minibatch_kmeans.app.outputs import read_input, registry_module
from minibatch_kmeans.spark.session import job_session

logger = logging.getLogger("minibatch_kmeans_jobs.compare")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/compare.yaml",
                        help="YAML job config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.k=30 (repeatable)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.conf, args.overrides)
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    if is_remote(cfg.output.dir):
        raise ConfigError(f"output.dir={cfg.output.dir!r} is invalid: expected a folder on "
                          "the driver (or dbfs:/) for compare.json, compare.md and the PNGs")
    ours = cfg.estimator_params()
    if "k" not in ours:
        raise ConfigError("model.k is missing: it is required (the k both models fit)")
    shared = {"k": ours.pop("k"), "input_cols": ours.pop("inputCols", None),
              "features_col": ours.pop("featuresCol", "features"),
              "weight_col": ours.pop("weightCol", None)}
    for key, name in (("seed", "seed"), ("maxIter", "max_iter")):
        if key in ours:
            shared[name] = ours.pop(key)
    c = cfg.compare
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        df = read_input(spark, cfg.input)
        result = compare_with_mllib(
            df, **shared, ours=ours, mllib=dict(c.mllib), sample_size=c.sample_size,
            local_max_mb=c.local_max_mb, references=c.references,
            trajectory_points=c.trajectory_points,
            handle_invalid=c.handle_invalid, output_dir=driver_path(cfg.output.dir))
    if cfg.mlflow is not None:
        o, m = result["ours"], result["mllib"]
        metrics = {"speedup": result["speedup"], "cost_ratio": result["cost_ratio"],
                   "ours.fit_seconds": o["fit_seconds"], "ours.cost": o["cost"],
                   "ours.silhouette": o["silhouette"], "mllib.fit_seconds": m["fit_seconds"],
                   "mllib.cost": m["cost"], "mllib.silhouette": m["silhouette"],
                   "ari": result["agreement"]["ari"], "nmi": result["agreement"]["nmi"]}
        pngs = sorted(glob.glob(os.path.join(driver_path(cfg.output.dir), "*.png")))
        registry_module().log_job_run(
            cfg.mlflow, "compare", {"k": shared["k"], "ours": ours, "mllib": dict(c.mllib)},
            metrics, pngs=pngs, tags={"input": cfg.input.describe()})
    print(markdown(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("compare", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
