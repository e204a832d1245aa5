"""Monitoring a deployed model: drift of a new slice of data, retraining, promotion.

What ``jobs/monitor.py`` does (its runner: :func:`minibatch_kmeans.app.monitor_job.run_monitor`),
as functions it calls in order:

1. :func:`load_champion`: the version holding the alias ``champion``, its Spark model and
   its reference statistics (registered with it; see
   :func:`minibatch_kmeans.lifecycle.drift.reference_statistics`).
2. :func:`minibatch_kmeans.lifecycle.drift.drift_report` on the new slice, written by
   :func:`write_drift_files` (JSON, Markdown, PNG) and logged as MLflow metrics
   (:func:`drift_metrics`).
3. When the report finds drift (or retraining is forced), :func:`train_challenger`: the
   slice's valid rows are split by a hash of their features
   (:func:`~minibatch_kmeans.evaluate.holdout.holdout_split`); a challenger is fitted on the rest,
   starting from the champion's centers when the schema is unchanged (same feature
   columns and types, no column added, same k), from a fresh initialisation otherwise;
   champion (when it can score the data) and challenger are measured on the same
   holdout, the way :func:`minibatch_kmeans.lifecycle.tune.choose_k` measures its grid (cost per
   row and silhouette, :func:`~minibatch_kmeans.evaluate.holdout.measure_centers`).
4. :func:`decide`: promote when the challenger's holdout cost per row is at most the
   champion's times ``1 - min_improvement``; when the champion cannot score the data
   (feature columns removed, renamed or retyped, or the challenger uses other features),
   when the challenger passes the absolute gate (``max_cost_per_row``,
   ``min_silhouette``).
5. :func:`register_challenger`: the challenger becomes a new model version (alias
   ``challenger``; reference statistics, holdout metrics, trigger and warm start as tags);
   :func:`promote_challenger`: a promotion moves ``champion`` to it with compare-and-set
   against the champion the job started from, under the alias lock (lost to another
   job: kept, with that reason); the decision and its
   reasons go on the version's tags and the MLflow run either way
   (:meth:`~minibatch_kmeans.lifecycle.registry.Registry.record_decision`).

Outcomes, the job's exit codes: :data:`NO_DRIFT` (0), :data:`PROMOTED` (3),
:data:`KEPT` (4); a bad config or input (no champion, no reference statistics, a failed
quality gate) exits 2 and anything else 1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from pyspark.sql import DataFrame

from ..evaluate.holdout import (holdout_metrics, holdout_size, holdout_split, measure_centers,
                                silhouette_sample)
from .drift import drift_markdown, plot_drift, reference_statistics
from ..errors import InvalidInputError
from ..ml.estimator import MiniBatchKMeans
from .registry import CHALLENGER, CHAMPION, Registry, RegistryError
from ..evaluate.report import write_json, write_text
from ..spark import features as feat

logger = logging.getLogger(__name__)

#: Exit codes of the monitoring job (also 2: bad config or input, 1: other failure).
NO_DRIFT, PROMOTED, KEPT = 0, 3, 4
OUTCOMES = {NO_DRIFT: "no drift", PROMOTED: "drift and promoted", KEPT: "drift and kept"}


def load_champion(registry: Registry, name: str):
    """``(ModelVersion, MiniBatchKMeansModel, reference statistics)`` of the champion.

    Raises
    ------
    InvalidInputError
        No version holds ``champion``, or it has no reference statistics.
    """
    if registry.champion(name) is None:
        raise InvalidInputError(
            f"registered model {name!r} has no champion: train one and promote it first "
            "(jobs/train.py with an mlflow section promotes the first version; or "
            "Registry.log_model(..., reference_stats=...) then Registry.promote)")
    mv, model = registry.load_champion_spark(name)
    reference = registry.json_tag(mv, "reference_stats")
    if reference is None:
        raise InvalidInputError(
            f"{name} version {mv.version} (champion) has no reference statistics (tag "
            "reference_stats): register it with reference_stats=reference_statistics(...) "
            "computed on held-out training rows")
    logger.info("champion: %s version %s (k=%d, %d features)", name, mv.version,
                len(model.clusterCenters()), model.numFeatures)
    return mv, model, reference


# -- the drift report --------------------------------------------------------------------


def drift_metrics(report: Mapping[str, Any]) -> Dict[str, float]:
    """Flat MLflow metrics of a drift report: ``drift``, ``schema_drift``, ``rows``,
    ``invalid_rows``, ``drifted_features``, ``js``, ``distance_ratio`` and per feature
    ``psi.<f>``, ``ks_statistic.<f>``, ``ks_pvalue.<f>``, ``mean_shift_std.<f>``."""
    out: Dict[str, Any] = {"drift": float(report["drift"]),
                           "schema_drift": float(report["schema"]["drift"]),
                           "rows": report.get("rows"), "invalid_rows": report.get("invalidRows"),
                           "drifted_features": len(report.get("driftedFeatures") or []),
                           "distance_ratio": report.get("distanceRatio")}
    if report.get("clusters"):
        out["js"] = report["clusters"]["js"]
    for name, f in (report.get("features") or {}).items():
        key = name.replace("[", "_").replace("]", "")
        out.update({f"psi.{key}": f["psi"], f"ks_statistic.{key}": f["ksStatistic"],
                    f"ks_pvalue.{key}": f["ksPvalue"], f"mean_shift_std.{key}": f["meanShiftStd"]})
    return {k: float(v) for k, v in out.items() if v is not None}


def write_drift_files(report: Mapping[str, Any], json_path: Optional[str],
                      md_path: Optional[str], png_path: Optional[str],
                      outcome: Optional[Mapping[str, Any]] = None) -> None:
    """Write the report (and the outcome, when known) as JSON, Markdown and PNG to
    driver-local paths (None skips one); overwrites them."""
    if json_path:
        write_json(dict(report, outcome=outcome), json_path)
    if md_path:
        text = drift_markdown(report)
        if outcome:
            text += "\n" + outcome_markdown(outcome)
        write_text(text, md_path)
    if png_path:
        plot_drift(report, png_path)


def outcome_markdown(outcome: Mapping[str, Any]) -> str:
    lines = [f"**Outcome: {outcome['outcome']}**", ""]
    reasons = outcome.get("reasons") or {}
    if reasons.get("why"):
        lines.append(f"- {reasons['why']}")
    rows = [("cost per row", "champion_cost_per_row", "challenger_cost_per_row"),
            ("silhouette", "champion_silhouette", "challenger_silhouette")]
    if "challenger_cost_per_row" in reasons:
        lines += ["", "| holdout | champion | challenger |", "| --- | ---: | ---: |"]
        for label, a, b in rows:
            lines.append(f"| {label} | {_fmt(reasons.get(a))} | {_fmt(reasons.get(b))} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


# -- the challenger ---------------------------------------------------------------------


@dataclass
class Challenger:
    """A fitted challenger and what it was measured with.

    Attributes
    ----------
    model : MiniBatchKMeansModel
    warm_start : bool
        Started from the champion's centers.
    champion_scores : bool
        The champion could score the holdout (so ``champion_metrics`` is set).
    why_not_comparable : str or None
        Why the champion could not score the data.
    metrics, champion_metrics : dict
        ``holdout_cost``, ``holdout_cost_per_row``, ``silhouette``, ``holdout_sizes``.
    reference : dict
        The challenger's reference statistics, on the holdout.
    rows : dict
        ``train`` and ``holdout`` row counts.
    """

    model: Any
    warm_start: bool
    champion_scores: bool
    why_not_comparable: Optional[str]
    metrics: Dict[str, Any]
    champion_metrics: Optional[Dict[str, Any]]
    reference: Dict[str, Any]
    rows: Dict[str, int] = field(default_factory=dict)


def comparable(champion, spec: feat.FeatureSpec, schema: Mapping[str, Any]) -> Optional[str]:
    """Why the champion cannot score the slice the challenger is trained on, or None
    when it can (its feature columns are there, same types, same order as the
    challenger's)."""
    if schema["removed"] or schema["retyped"]:
        return "schema drift: " + ", ".join(
            ([f"feature column(s) {schema['removed']} removed"] if schema["removed"] else [])
            + ([f"{[r['column'] for r in schema['retyped']]} retyped"]
               if schema["retyped"] else []))
    fs = champion.featureSchema or {}
    given = champion.getInputCols() if champion.isDefined(champion.inputCols) else None
    theirs = list(fs.get("columns") or given or [champion.getFeaturesCol()])
    if theirs != list(spec.columns) or champion.numFeatures != spec.n_features:
        return (f"the champion uses features {theirs} ({champion.numFeatures}) but the "
                f"challenger {list(spec.columns)} ({spec.n_features})")
    return None


def train_challenger(valid: DataFrame, params: Mapping[str, Any], champion,
                     schema: Mapping[str, Any], holdout_fraction: float, seed: int,
                     sample_size: int) -> Challenger:
    """Fit a challenger on the valid rows of the new slice and measure it (and the
    champion, when it can score them) on a held-out part.

    Parameters
    ----------
    valid : DataFrame
        Rows that passed the quality gate.
    params : mapping
        ``MiniBatchKMeans`` Params (features from the monitor's input section); ``k``
        defaults to the champion's, ``seed`` to ``seed``.
    champion : MiniBatchKMeansModel
    schema : mapping
        ``schema`` of the drift report
        (:func:`~minibatch_kmeans.lifecycle.drift.schema_differences`).
    holdout_fraction, seed : float, int
        The split (by a hash of the feature columns).
    sample_size : int
        Holdout rows for the silhouette.
    """

    params = dict(params)
    champion_centers = np.array(champion.clusterCenters())
    params.setdefault("k", len(champion_centers))
    params.setdefault("seed", int(seed))
    est = MiniBatchKMeans(**params)
    spec = est.featureSpec(valid)
    why = comparable(champion, spec, schema)
    warm = (why is None and not schema["drift"] and est.getK() == len(champion_centers))
    if warm:
        est.setInitialCenters(champion_centers.tolist())
    rest, holdout = holdout_split(valid, holdout_fraction, seed, cols=list(spec.columns))
    holdout = holdout.persist()
    try:
        n_hold, w_hold = holdout_size(holdout, spec)
        if n_hold < est.getK():
            raise InvalidInputError(
                f"the holdout has {n_hold} rows (monitor.holdout_fraction="
                f"{holdout_fraction}): expected at least k={est.getK()}")
        logger.info("challenger: k=%d, %s start, %d holdout rows%s", est.getK(),
                    "warm (champion's centers)" if warm else "fresh", n_hold,
                    f"; champion not scored: {why}" if why else "")
        model = est.fit(rest)
        centers = {"challenger": np.array(model.clusterCenters())}
        if why is None:
            centers["champion"] = champion_centers
        sample = silhouette_sample(holdout, spec, sample_size, seed)
        measured = measure_centers(holdout, sample, spec, centers, w_hold)
        reference = reference_statistics(model, holdout)
    finally:
        holdout.unpersist()
    for name, m in measured.items():
        logger.info("%s on the holdout: cost per row %.6g, silhouette %s", name,
                    m["holdout_cost_per_row"], _fmt(m["silhouette"]))
    return Challenger(model, warm, why is None, why, measured["challenger"],
                      measured.get("champion"), reference,
                      {"train": int(model.summary.numRows), "holdout": n_hold})


# -- the decision -----------------------------------------------------------------------


def decide(challenger: Mapping[str, Any], champion: Optional[Mapping[str, Any]],
           min_improvement: float, gate, why_not_comparable: Optional[str] = None
           ) -> Tuple[str, Dict[str, Any]]:
    """``("promoted" or "kept", reasons)`` from holdout metrics.

    Parameters
    ----------
    challenger, champion : mapping or None
        ``holdout_cost_per_row`` and ``silhouette`` of each (champion None: it could not
        score the data, so the absolute gate decides).
    min_improvement : float
        Relative: promote when ``challenger <= champion * (1 - min_improvement)``.
    gate : AbsoluteGate
        ``max_cost_per_row`` and ``min_silhouette`` (None: not checked; neither set: the
        challenger is kept).

    Returns
    -------
    decision : str
    reasons : dict
        ``rule`` (``relative`` or ``absolute``), ``why`` (one sentence), the metrics and
        bounds compared.

    Examples
    --------
    >>> from minibatch_kmeans.app.config import AbsoluteGate
    >>> decide({"holdout_cost_per_row": 4.0, "silhouette": 0.6},
    ...        {"holdout_cost_per_row": 5.0, "silhouette": 0.5}, 0.02, AbsoluteGate())[0]
    'promoted'
    """
    cost, sil = challenger["holdout_cost_per_row"], challenger.get("silhouette")
    reasons: Dict[str, Any] = {"challenger_cost_per_row": cost, "challenger_silhouette": sil}
    if champion is not None:
        base = champion["holdout_cost_per_row"]
        bound = base * (1 - min_improvement)
        ok = cost is not None and base is not None and cost <= bound
        reasons.update(rule="relative", champion_scored=True, champion_cost_per_row=base,
                       champion_silhouette=champion.get("silhouette"),
                       min_improvement=min_improvement, required_cost_per_row=bound,
                       relative_improvement=(1 - cost / base) if base else None)
        reasons["why"] = (
            f"challenger holdout cost per row {cost:.6g} "
            f"{'<=' if ok else '>'} champion's {base:.6g} x (1 - {min_improvement:g}) = "
            f"{bound:.6g}: " + ("better by at least the required margin" if ok
                                else "not better by the required margin"))
        return ("promoted" if ok else "kept"), reasons
    checks, failed = [], []
    if gate.max_cost_per_row is not None:
        good = cost is not None and cost <= gate.max_cost_per_row
        checks.append(f"cost per row {_fmt(cost)} {'<=' if good else '>'} "
                      f"{gate.max_cost_per_row:g}")
        failed += [] if good else ["max_cost_per_row"]
    if gate.min_silhouette is not None:
        good = sil is not None and sil >= gate.min_silhouette
        checks.append(f"silhouette {_fmt(sil)} {'>=' if good else '<'} "
                      f"{gate.min_silhouette:g}")
        failed += [] if good else ["min_silhouette"]
    ok = bool(checks) and not failed
    reasons.update(rule="absolute", champion_scored=False,
                   champion_not_scored_because=why_not_comparable,
                   max_cost_per_row=gate.max_cost_per_row, min_silhouette=gate.min_silhouette,
                   gate_failed=failed)
    reasons["why"] = (f"the champion could not score the data ({why_not_comparable}); "
                      + (f"absolute gate {'passed' if ok else 'failed'}: " + "; ".join(checks)
                         if checks else "no absolute gate is configured "
                         "(monitor.absolute_gate), so the challenger is kept"))
    return ("promoted" if ok else "kept"), reasons


def register_challenger(registry: Registry, name: str, champion_mv, challenger: Challenger,
                        decision: str, reasons: Dict[str, Any], *,
                        tags: Optional[Mapping[str, Any]] = None,
                        training_table: Optional[str] = None) -> Tuple[Any, str, Dict]:
    """Register the challenger as a new version of ``name``, then
    :func:`promote_challenger`. Mutates the registry. Returns ``(ModelVersion, final
    decision, reasons)``: a promotion lost to another job becomes ``"kept"``."""

    holdout = holdout_metrics(challenger.rows.get("holdout"), challenger.metrics,
                              challenger.reference)
    mv = registry.log_model(
        challenger.model, name, training_table=training_table, holdout_metrics=holdout,
        reference_stats=challenger.reference,
        tags={"warm_start": str(challenger.warm_start).lower(),
              "champion_at_start": str(champion_mv.version), **(tags or {})})
    reasons = dict(reasons, warm_start=challenger.warm_start)
    decision, reasons = promote_challenger(registry, name, mv, champion_mv, decision, reasons)
    return mv, decision, reasons


def promote_challenger(registry: Registry, name: str, mv, champion_mv, decision: str,
                       reasons: Dict[str, Any]) -> Tuple[str, Dict]:
    """Give the registered challenger ``mv`` the alias ``challenger``; when ``decision`` is
    ``"promoted"``, move ``champion`` to it with compare-and-set against ``champion_mv``
    (the champion the job started from; :meth:`Registry.promote` holds the alias lock from
    the check to the move, so of two jobs promoting against one champion exactly one
    wins); record the decision on the version and the active run. Mutates the registry.
    Returns ``(final decision, reasons)``: a promotion lost to another job (or to the
    lock's timeout) becomes ``"kept"``, the reason saying why."""
    registry.promote(name, mv.version, CHALLENGER, reason=reasons["why"])
    reasons = dict(reasons, champion_version=str(champion_mv.version))
    if decision == "promoted":
        try:
            registry.promote(name, mv.version, CHAMPION,
                             expected_current=champion_mv.version, reason=reasons["why"])
        except RegistryError as e:
            decision = "kept"
            reasons["why"] = f"{reasons['why']}; but not promoted: {e}"
    registry.record_decision(name, mv.version, decision, reasons)
    return decision, reasons


def challenger_metrics(challenger: Challenger) -> Dict[str, float]:
    """Flat MLflow metrics of the holdout comparison."""
    out = {}
    for who, m in (("challenger", challenger.metrics),
                   ("champion", challenger.champion_metrics)):
        if m:
            out.update({f"{who}.cost_per_row": m["holdout_cost_per_row"],
                        f"{who}.silhouette": m["silhouette"]})
    out.update({"challenger.warm_start": float(challenger.warm_start),
                "holdout_rows": challenger.rows.get("holdout")})
    return {k: float(v) for k, v in out.items() if v is not None}
