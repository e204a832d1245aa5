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

import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.config import load_config
from minibatch_kmeans.app.tune_job import check_tune, run_tune


def run(spark, cfg, args):
    return run_tune(spark, cfg, config_path=args.conf)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("tune", __doc__, load_config, run, argv, default_conf="conf/tune.yaml",
                      example="tune.k=[5,10,20]", check=check_tune)


if __name__ == "__main__":
    sys.exit(main())
