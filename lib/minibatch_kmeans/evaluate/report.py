"""What a fit looks like to people: the convergence plot, the summary table, the JSON.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
they work on headless drivers and leave a notebook's backend alone.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterable, List, Mapping, Optional

import numpy as np

from ..paths import write_file

logger = logging.getLogger(__name__)


def _records(history: Iterable[Any]) -> List[dict]:
    return [h.as_dict() if hasattr(h, "as_dict") else dict(h) for h in history]


def plot_convergence(history: Iterable[Any], path: str, title: Optional[str] = None) -> str:
    """Draw batch inertia per step and its exponentially weighted average (EWA) against
    the step, with the center shift below, as a PNG.

    Parameters
    ----------
    history : iterable of dict or StepRecord
        A fit's per-step history (``model.summary.history``): step, epoch,
        batch_inertia, ewa (None on the first step), center_shift.
    path : str
        PNG file: a path or a URI (:func:`save_figure`); parent folders are created.
    title : str, optional

    Returns
    -------
    path : str
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    recs = _records(history)
    steps = np.array([r["step"] for r in recs], dtype=float)
    inertia = np.array([r["batch_inertia"] for r in recs], dtype=float)
    ewa = np.array([np.nan if r.get("ewa") is None else r["ewa"] for r in recs], dtype=float)
    shift = np.array([r.get("center_shift", np.nan) for r in recs], dtype=float)
    epochs = [r.get("epoch", 0) for r in recs]

    fig = Figure(figsize=(8, 5.5), dpi=110, constrained_layout=True)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax.plot(steps, inertia, ".-", color="0.65", lw=0.8, ms=3, label="batch inertia")
    ax.plot(steps, ewa, "-", color="C0", lw=2, label="EWA of batch inertia")
    pos = inertia[np.isfinite(inertia) & (inertia > 0)]
    if pos.size and pos.max() / pos.min() > 20:
        ax.set_yscale("log")
    ax.set_ylabel("inertia per unit weight")
    ax.legend(loc="upper right", frameon=False)
    ax.grid(alpha=0.3)
    for i in range(1, len(epochs)):
        if epochs[i] != epochs[i - 1]:
            for a in (ax, ax2):
                a.axvline(steps[i] - 0.5, color="0.85", lw=0.8, zorder=0)
    sp = shift[np.isfinite(shift) & (shift > 0)]
    ax2.plot(steps, np.where(shift > 0, shift, np.nan), "-", color="C1", lw=1)
    if sp.size:
        ax2.set_yscale("log")
    ax2.set_ylabel("center shift²")
    ax2.set_xlabel("step" + (" (grey lines: epoch boundaries)" if len(set(epochs)) > 1 else ""))
    ax2.grid(alpha=0.3)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not recs:
        ax.text(0.5, 0.5, "no steps", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title or "mini-batch k-means convergence")
    write_file(path, lambda f: fig.savefig(f, format="png"))
    logger.info("wrote convergence plot %s (%d steps)", path, len(recs))
    return path


def _fmt_int(v) -> str:
    return f"{int(v):,}"


def _fmt_num(v) -> str:
    return f"{float(v):.6g}"


def _fmt_seconds(v) -> str:
    return f"{float(v):.1f} s"


def summary_table(summary: Mapping[str, Any]) -> str:
    """A short Markdown table of a fit: k, rows, steps, epochs, stop reason, training
    cost, seconds, and where the model, summary and plot are.

    ``summary`` is ``model.summary.as_dict()`` plus, optionally, the job's keys
    ``inputPath``, ``modelPath``, ``summaryPath``, ``plotPath`` and ``jobFitSeconds``.
    Missing keys are left out.
    """
    s = dict(summary)
    rows = []

    def add(name, key, fmt=str):
        if s.get(key) is not None:
            rows.append((name, fmt(s[key])))

    add("input", "inputPath")
    add("k", "k", _fmt_int)
    add("features", "numFeatures", _fmt_int)
    add("rows", "numRows", _fmt_int)
    if s.get("numSkipped"):
        add("rows skipped", "numSkipped", _fmt_int)
    add("fit mode", "fitMode")
    add("passes over the data", "passesOverData", lambda v: f"{v:.2f}")
    add("Spark jobs", "numJobs", _fmt_int)
    add("batch size", "batchSize", _fmt_int)
    add("steps", "numSteps", _fmt_int)
    add("epochs", "numIter", _fmt_int)
    add("stop reason", "stopReason")
    if s.get("trainingCost") is not None:
        exact = s.get("trainingCostExact", True)
        rows.append(("training cost", _fmt_num(s["trainingCost"])
                     + ("" if exact else " (estimate)")))
    sizes = s.get("clusterSizes")
    if sizes:
        rows.append(("cluster sizes (min / max)", f"{min(sizes):,} / {max(sizes):,}"))
    seconds = s.get("jobFitSeconds", s.get("fitSeconds"))
    if seconds is not None:
        parts = [f"{k} {float(s[key]):.1f}" for k, key in
                 (("prepare" if s.get("fitMode") == "step" else "count and sample",
                   "prepareSeconds"), ("init", "initSeconds"),
                  ("steps" if s.get("fitMode") == "step" else "passes", "loopSeconds"),
                  ("final pass", "finalPassSeconds"))
                 if s.get(key) is not None]
        rows.append(("fit seconds", _fmt_seconds(seconds)
                     + (f" ({', '.join(parts)})" if parts else "")))
    add("model", "modelPath")
    add("summary", "summaryPath")
    add("plot", "plotPath")
    width = max([len(r[0]) for r in rows] + [5])
    vwidth = max([len(r[1]) for r in rows] + [5])
    lines = [f"| {'field':<{width}} | {'value':<{vwidth}} |",
             f"| {'-' * width} | {'-' * vwidth} |"]
    lines += [f"| {n:<{width}} | {v.replace('|', '/'):<{vwidth}} |" for n, v in rows]
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def write_json(data: Mapping[str, Any], path: str) -> str:
    """Write ``data`` as indented JSON (NumPy values converted, NaN and infinity as null)
    to ``path``: a driver-local path (``/Volumes/...`` too), or a URI (``s3a://``,
    ``abfss://``, ``gs://``, ``hdfs://``, ``dbfs:``, ``file:``) written through Hadoop's
    FileSystem (:func:`minibatch_kmeans.paths.write_file`); replaced whole, parent folders
    created."""
    text = json.dumps(_jsonable(dict(data)), indent=2, allow_nan=False) + "\n"
    write_file(path, lambda f: f.write(text.encode("utf-8")))
    logger.info("wrote summary %s", path)
    return path


def write_text(text: str, path: str) -> str:
    """Write ``text`` to a path or URI, replaced whole (:func:`write_json`'s way)."""
    write_file(path, lambda f: f.write(text.encode("utf-8")))
    return path


# -- the comparison with MLlib -----------------------------------------------------------

_MODEL_LABELS = {"ours": "ours (MiniBatchKMeans)", "mllib": "MLlib KMeans",
                 "sklearn_minibatch": "scikit-learn MiniBatchKMeans",
                 "sklearn_kmeans": "scikit-learn KMeans"}


def new_figure(size):
    """A matplotlib Figure of ``size`` inches on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110, constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as a PNG to ``path``, a path or URI (parent directories created;
    replaced whole, as :func:`write_json` does); returns the path."""
    write_file(path, lambda f: fig.savefig(f, format="png"))
    logger.info("wrote %s", path)
    return path


def plot_cost_vs_seconds(result: Mapping[str, Any], path: str) -> str:
    """Our full-data cost against elapsed fit seconds (from the recorded trajectory), with
    MLlib's final cost and fit time marked, and any scikit-learn references as points."""
    o, m = result["ours"], result["mllib"]
    traj = [t for t in o.get("trajectory", []) if t.get("cost") is not None]
    fig = new_figure((8, 5))
    ax = fig.subplots()
    if traj:
        ax.plot([t["seconds"] for t in traj], [t["cost"] for t in traj], "o-", color="C0",
                ms=4, label="ours: full-data cost of the centers at that moment")
    ax.plot([o["fit_seconds"]], [o["cost"]], "*", color="C0", ms=14,
            label=f"ours final: {o['cost']:.4g} at {o['fit_seconds']:.1f} s")
    ax.axhline(m["cost"], color="C3", ls="--", lw=1)
    ax.axvline(m["fit_seconds"], color="C3", ls=":", lw=1)
    ax.plot([m["fit_seconds"]], [m["cost"]], "s", color="C3", ms=9,
            label=f"MLlib final: {m['cost']:.4g} at {m['fit_seconds']:.1f} s")
    for i, (name, r) in enumerate((k, v) for k, v in result.get("references", {}).items()
                                  if isinstance(v, dict)):
        ax.plot([r["fit_seconds"]], [r["cost"]], "^", color=f"C{i + 4}", ms=8,
                label=f"{_MODEL_LABELS.get(name, name)} (driver only): {r['cost']:.4g}")
    costs = [t["cost"] for t in traj] + [o["cost"], m["cost"]]
    if max(costs) / max(min(costs), 1e-300) > 20:
        ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("seconds since the fit started (log)")
    ax.set_ylabel("full-data cost (sum of squared distances)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    d = result["data"]
    ax.set_title(f"cost against time: {d['rows']:,} rows x {d['features']}, k={d['k']}")
    return save_figure(fig, path)


def plot_cluster_sizes(result: Mapping[str, Any], path: str) -> str:
    """Cluster sizes side by side: ours sorted by size, each next to its matched MLlib
    cluster (Hungarian matching of the centers)."""
    ours = np.asarray(result["ours"]["cluster_sizes"])
    mllib = np.asarray(result["mllib"]["cluster_sizes"])
    match = dict(result["agreement"]["matching"])
    order = np.argsort(-ours, kind="stable")
    paired = np.array([mllib[match[i]] if i in match else 0 for i in order])
    k = len(ours)
    fig = new_figure((max(6, min(18, 0.18 * k + 3)), 4.5))
    ax = fig.subplots()
    x = np.arange(k)
    ax.bar(x - 0.2, ours[order], 0.4, color="C0", label="ours")
    ax.bar(x + 0.2, paired, 0.4, color="C3", label="MLlib (matched center)")
    ax.set_xlabel("cluster (ours, largest first)")
    ax.set_ylabel("rows")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(frameon=False)
    ax.set_title("cluster sizes over the full data")
    return save_figure(fig, path)


def plot_pca(X: np.ndarray, labels: np.ndarray, centers: Mapping[str, np.ndarray], path: str,
             max_points: int = 20_000, seed: int = 0) -> str:
    """A 2-D PCA projection of sample rows coloured by our clusters, with our centers and
    MLlib's drawn on top."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_points:
        idx = np.random.default_rng(seed).choice(len(X), max_points, replace=False)
        X, labels = X[idx], np.asarray(labels)[idx]
    mean = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    basis = vt[:2].T if vt.shape[0] >= 2 else np.eye(X.shape[1], 2)
    P = (X - mean) @ basis
    fig = new_figure((7, 6))
    ax = fig.subplots()
    ax.scatter(P[:, 0], P[:, 1], c=np.asarray(labels) % 20, cmap="tab20", s=2, alpha=0.4,
               linewidths=0, rasterized=True)
    styles = {"ours": dict(marker="o", facecolors="none", edgecolors="k", label="our centers"),
              "mllib": dict(marker="x", c="C3", label="MLlib centers")}
    for name, style in styles.items():
        if name in centers:
            C = (np.asarray(centers[name]) - mean) @ basis
            ax.scatter(C[:, 0], C[:, 1], s=60, linewidths=1.5, **style)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(frameon=False, loc="best")
    ax.set_title(f"{len(X):,} sample rows coloured by our clusters (PCA)")
    return save_figure(fig, path)
