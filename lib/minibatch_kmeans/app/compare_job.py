"""The comparison job (``jobs/compare.py``): our fit against MLlib KMeans (and scikit-learn)
on the configured table, its report files, and with an ``mlflow:`` section an MLflow run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from ..errors import ConfigError
from ..evaluate.compare import compare_with_mllib, markdown
from ..ml.estimator import MiniBatchKMeans
from ..paths import local_copies
from .outputs import read_input, registry_module

@dataclass
class CompareResult:
    """What :func:`run_compare` measured (:func:`compare_with_mllib`'s dict)."""

    result: Dict[str, Any]
    code: int = 0

    def text(self) -> str:
        return markdown(self.result)


def check_compare(cfg) -> None:
    """What the comparison refuses before Spark starts."""
    if "k" not in cfg.estimator_params():
        raise ConfigError("model.k is missing: it is required (the k both models fit)")


def run_compare(spark, cfg) -> CompareResult:
    """Everything ``jobs/compare.py`` does under ``cfg``
    (:class:`~minibatch_kmeans.app.config.Config` with a ``compare`` section)."""
    check_compare(cfg)
    c = cfg.compare
    params = cfg.estimator_params()
    params.setdefault("handleInvalid", c.handle_invalid)
    df = read_input(spark, cfg.input)
    result = compare_with_mllib(
        df, MiniBatchKMeans(**params), mllib=dict(c.mllib), sample_size=c.sample_size,
        local_max_mb=c.local_max_mb, references=c.references,
        trajectory_points=c.trajectory_points, warm_up_rows=c.warm_up_rows,
        repeats=c.repeats, output_dir=cfg.output.dir)
    if cfg.mlflow is not None:
        o, m = result["ours"], result["mllib"]
        metrics = {"speedup": result["speedup"], "cost_ratio": result["cost_ratio"],
                   "ours.fit_seconds": o["fit_seconds"], "ours.cost": o["cost"],
                   "ours.silhouette": o["silhouette"], "mllib.fit_seconds": m["fit_seconds"],
                   "mllib.cost": m["cost"], "mllib.silhouette": m["silhouette"],
                   "ari": result["agreement"]["ari"], "nmi": result["agreement"]["nmi"]}
        written = sorted(p for p in result["files"].values() if p.endswith(".png"))
        with local_copies(written) as pngs:  # MLflow logs local files
            registry_module().log_job_run(
                cfg.mlflow, "compare", {"k": params["k"], "ours": params,
                                        "mllib": dict(c.mllib)},
                metrics, pngs=pngs, tags={"input": cfg.input.describe()})
    return CompareResult(result)
