"""The job that chooses k (``jobs/tune.py``): :func:`~minibatch_kmeans.lifecycle.tune.choose_k`
over the configured grid, its report files, and with an ``mlflow:`` section an MLflow run."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ConfigError
from ..lifecycle.tune import choose_k, markdown, write_tune
from ..ml.estimator import MiniBatchKMeans
from ..paths import local_copies
from .outputs import read_input, registry_module

logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """What :func:`run_tune` measured (:func:`choose_k`'s dict, with its files)."""

    result: Dict[str, Any]
    code: int = 0

    def text(self) -> str:
        return markdown(self.result)


def check_tune(cfg) -> None:
    """What choosing k refuses before Spark starts."""
    if not cfg.tune.k:
        raise ConfigError("tune.k is missing: it is required (the grid of k values, e.g. "
                          "[5, 10, 15, 20])")


def run_tune(spark, cfg, config_path: Optional[str] = None) -> TuneResult:
    """Everything ``jobs/tune.py`` does under ``cfg``
    (:class:`~minibatch_kmeans.app.config.Config` with a ``tune`` section)."""
    check_tune(cfg)
    t = cfg.tune
    logger.info("config tune: k=%s, batch_sizes=%s, holdout_fraction=%g, sample_size=%d",
                list(t.k), None if t.batch_sizes is None else list(t.batch_sizes),
                t.holdout_fraction, t.sample_size)
    params = dict(cfg.estimator_params())
    if params.pop("k", None) is not None:
        logger.info("model.k is replaced by the grid tune.k")
    if t.batch_sizes is not None and params.pop("batchSize", None) is not None:
        logger.info("model.batchSize is replaced by tune.batch_sizes")
    params.setdefault("seed", 1)  # seeds the split and every fit
    df = read_input(spark, cfg.input)
    result: Dict[str, Any] = choose_k(
        df, MiniBatchKMeans(**params), list(t.k),
        batch_sizes=None if t.batch_sizes is None else list(t.batch_sizes),
        holdout_fraction=t.holdout_fraction, sample_size=t.sample_size)
    result["data"]["input"] = f"{cfg.input.describe()} ({result['data']['input']})"
    result["configPath"] = config_path
    write_tune(result, cfg.output.dir)
    if cfg.mlflow is not None:
        with local_copies([result["files"]["k_curves.png"]]) as pngs:  # MLflow: local files
            registry_module().log_job_run(
                cfg.mlflow, "tune", result["params"], result["metrics"], pngs=pngs,
                tags={"input": cfg.input.describe()})
    return TuneResult(result)
