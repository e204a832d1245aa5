"""The benchmark (make bench): MiniBatchKMeans with default Params against MLlib KMeans at
every table size, the kernel against GEMM, and where a per-step fit's time goes.

    python bench/run.py [--quick] [--label NAME] [--cases 10k 100k demo 1M 10M k1000]

1. Comparison (``minibatch_kmeans.evaluate.compare.compare_with_mllib``) on generated blobs, ours
   with **default Params except k and seed** (``fitMode="auto"``): 10k, 100k, 1M and 10M
   rows x 32 features with k=50, the ``make demo`` table (1M x 16, k=20) and 1M x 64 with
   k=1000. MLlib runs its block solver on the same cached input. Our fit runs again with
   seeds 2 and 3 for the quality column (cost / optimum per seed), and the table reports
   our passes over the data and Spark jobs per fit. A small comparison runs first to warm
   up the JVM and the Python workers.
2. Real data: scikit-learn's digits and ``china.jpg`` colour quantisation, ours (default
   Params) against scikit-learn's MiniBatchKMeans, median cost of 3 seeds each, and MLlib's
   time on digits.
3. Kernel: assignment rows/s against a bare NumPy GEMM of the same shape (float32, float64).
4. Steps (``fitMode="step"``): a per-step breakdown (read the batch, the UDF's compute,
   collect the partials, driver update, a bare Spark job) at 1M and 10M rows.
5. Scoring: ``transform`` + writing predictions against MLlib's, on the 2M table as Parquet
   and cached (``bench/scoring.py``).
6. localSteps (step mode): 1, 4, 8 and 16 batches per Spark job (``bench/local_steps.py``).
7. Scale: 50M rows from Parquet with 2 GB of driver memory: our fit against one Python
   pass over the same input, and its cost against scikit-learn KMeans fitted on a 5M-row
   sample (``bench/scale.py``, in its own process and JVM).

The Markdown starts with issue 15's targets: target, measured, ratio to the target.

Writes ``bench/results/<date>-<label>.json`` and ``.md`` (plus each comparison's files under
``out/bench/<label>/<case>``). Times are measured in one run and reported, never asserted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BOTH = ("sklearn_minibatch", "sklearn_kmeans")
#: name: (rows, features, k, data seed, references run on the driver)
CASES = {
    "10k": (10_000, 32, 50, 1, BOTH),
    "100k": (100_000, 32, 50, 1, BOTH),
    "demo": (1_000_000, 16, 20, 7, BOTH),  # make demo's table (generate_data --seed 7)
    "1M": (1_000_000, 32, 50, 1, BOTH),
    "10M": (10_000_000, 32, 50, 1, ()),
    # Lloyd at k=1000 would take many minutes on the driver: only MiniBatchKMeans there.
    "k1000": (1_000_000, 64, 1000, 1, ("sklearn_minibatch",)),
}
QUICK = {name: CASES[name] for name in ("10k", "100k", "1M")}
#: Our fit's seeds: the first is compared with MLlib, all give the quality column.
SEEDS = (1, 2, 3)
STEP_ROWS = (1_000_000, 10_000_000)
SCORING_ROWS = 2_000_000
SCALE_ROWS = 50_000_000


def get_data(spark, rows, features, k, seed, data_dir):
    """A blobs table on disk (generated once): (DataFrame, path)."""
    from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs

    path = f"{data_dir}/blobs-{rows}x{features}-k{k}-s{seed}"
    if not Path(path, "_SUCCESS").exists():
        write_blobs(spark, BlobSpec(rows=rows, n_features=features, k=k, seed=seed,
                                    spread=1.0, center_box=10.0), path)
    return spark.read.parquet(path), path


def compare_case(spark, name, args, log):
    from minibatch_kmeans import MiniBatchKMeans
    from minibatch_kmeans.evaluate.compare import clustering_costs, compare_with_mllib
    from minibatch_kmeans.tables.datagen import read_centers

    rows, d, k, data_seed, refs = (QUICK if args.quick else CASES)[name]
    df, path = get_data(spark, rows, d, k, data_seed, args.data_dir)
    cols = [f"x{i}" for i in range(d)]
    log.info("case %s: %d x %d, k=%d, default Params", name, rows, d, k)
    t0 = time.perf_counter()
    r = compare_with_mllib(df.select(*cols), MiniBatchKMeans(k=k, inputCols=cols,
                                                             seed=SEEDS[0]),
                           references=refs, local_max_mb=args.local_max_mb,
                           output_dir=f"out/bench/{args.label}/{name}")
    r["case"], r["data"]["path"] = name, path
    # our other seeds, on the same cached input; their costs with the generating centers'
    data = df.select(*cols).cache()
    try:
        data.count()
        fits = []
        for seed in SEEDS[1:]:
            t1 = time.perf_counter()
            model = MiniBatchKMeans(k=k, inputCols=cols, seed=seed).fit(data)
            fits.append({"seed": seed, "fit_seconds": time.perf_counter() - t1,
                         "passes_over_data": model.summary.passesOverData,
                         "centers": model.clusterCenters()})
        truth = read_centers(spark, path)[0]
        costs = clustering_costs(data, [f.pop("centers") for f in fits] + [truth],
                                 input_cols=cols)
    finally:
        data.unpersist()
    for f, c in zip(fits, costs):
        f["cost"] = c["cost"]
    r["other_seeds"] = fits
    r["true_centers_cost"] = costs[-1]["cost"]
    r["wall_seconds"] = time.perf_counter() - t0
    r["agreement"].pop("matching", None)  # in the case's own compare.json
    log.info("case %s: speedup %.2f, cost / optimum %s", name, r["speedup"],
             [round(c / _optimum(r), 5) for c in _our_costs(r)])
    return r


def warm_up(spark, args, log):
    """One small comparison first, so that no case pays for starting Python workers or
    for the JVM's first compilation of MLlib's code (both would land on the first case)."""
    from minibatch_kmeans import MiniBatchKMeans
    from minibatch_kmeans.evaluate.compare import compare_with_mllib

    df, _ = get_data(spark, 200_000, 32, 50, args.seed, args.data_dir)
    cols = [f"x{i}" for i in range(32)]
    t0 = time.perf_counter()
    compare_with_mllib(df.select(*cols).limit(20_000),
                       MiniBatchKMeans(k=50, inputCols=cols, seed=args.seed, fitMode="pass"),
                       references=(), trajectory_points=2)
    log.info("warm-up comparison: %.1f s", time.perf_counter() - t0)


def _our_costs(r):
    return [r["ours"]["cost"]] + [f["cost"] for f in r.get("other_seeds", [])]


def _optimum(r):
    """The lowest cost known: the generating centers', or any model's if lower."""
    refs = [v for v in r["references"].values() if isinstance(v, dict)]
    return min([m["cost"] for m in [r["ours"], r["mllib"], *refs]]
               + _our_costs(r) + [r["true_centers_cost"]])


def datasets_bench(spark, log, seeds=SEEDS):
    """scikit-learn's digits and china.jpg colour quantisation: our default fit against
    scikit-learn's MiniBatchKMeans (its defaults), median cost of ``seeds``; MLlib's time
    on digits (compare_with_mllib, seed 1)."""
    import numpy as np
    import pandas as pd
    from sklearn.cluster import MiniBatchKMeans as SkMiniBatchKMeans
    from sklearn.datasets import load_digits, load_sample_image

    from minibatch_kmeans import MiniBatchKMeans
    from minibatch_kmeans.evaluate.compare import compare_with_mllib

    china = load_sample_image("china.jpg").reshape(-1, 3).astype(np.float64) / 255.0
    out = []
    for name, X, k in (("digits", load_digits().data.astype(np.float64), 10),
                       ("china.jpg", china, 64)):
        cols = [f"c{i}" for i in range(X.shape[1])]
        df = spark.createDataFrame(pd.DataFrame(X, columns=cols)).cache()
        df.count()
        ours, theirs, seconds = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            m = MiniBatchKMeans(k=k, inputCols=cols, seed=seed).fit(df)
            seconds.append(time.perf_counter() - t0)
            C = np.array(m.clusterCenters())
            ours.append(float((((X[:, None, :] - C[None]) ** 2).sum(-1)).min(1).sum())
                        if len(X) * k <= 2e7 else m.summary.trainingCost)
            theirs.append(float(SkMiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1)
                                .fit(X).inertia_))
        row = {"name": name, "rows": len(X), "features": X.shape[1], "k": k,
               "ours_costs": ours, "sklearn_minibatch_costs": theirs,
               "ours_median": statistics.median(ours),
               "sklearn_median": statistics.median(theirs),
               "ours_seconds_median": statistics.median(seconds)}
        row["ratio"] = row["ours_median"] / row["sklearn_median"]
        if name == "digits":
            r = compare_with_mllib(df, MiniBatchKMeans(k=k, inputCols=cols, seed=1),
                                   references=(), trajectory_points=2)
            row["mllib_seconds"] = r["mllib"]["fit_seconds"]
            row["ours_compare_seconds"] = r["ours"]["fit_seconds"]
            row["speedup"] = r["speedup"]
        df.unpersist()
        log.info("dataset %s: ours / scikit-learn MiniBatchKMeans (median cost) %.4f",
                 name, row["ratio"])
        out.append(row)
    return out


def datasets_markdown(rows) -> str:
    lines = ["## Real data: ours (default Params) vs scikit-learn MiniBatchKMeans", "",
             "Median full-data cost of seeds 1, 2, 3; scikit-learn with its defaults.", "",
             "| data | rows x d | k | ours median cost | sklearn median cost | ratio | ours s "
             "| MLlib s (speedup) |", "| --- " * 8 + "|"]
    for r in rows:
        ml = (f"{r['mllib_seconds']:.1f} ({r['speedup']:.1f}x)" if "mllib_seconds" in r
              else "n/a")
        lines.append(f"| {r['name']} | {r['rows']:,} x {r['features']} | {r['k']} | "
                     f"{r['ours_median']:.6g} | {r['sklearn_median']:.6g} | {r['ratio']:.4f} "
                     f"| {r['ours_seconds_median']:.1f} | {ml} |")
    return "\n".join(lines)


def cases_markdown(cases) -> str:
    lines = ["## MiniBatchKMeans (default Params) vs MLlib KMeans (block solver)", "",
             "Each row is one `compare_with_mllib` run: both fits on the same cached input, "
             "seed 1; ours again with seeds 2 and 3 for the cost column. Costs by one shared "
             "float64 function over all rows. Optimum: the cost of the blobs' generating "
             "centers, or any model's when lower. Passes: rows handed to Python or the "
             "driver / rows (a large table: the epochs sample, then every exact pass), "
             "besides the JVM-only count and sample jobs.", "",
             "| case | rows x d | k | ours s | MLlib s | MLlib / ours | ours s, seeds 2, 3 "
             "| ours cost / optimum (seeds 1, 2, 3) | MLlib cost / optimum "
             "| passes over the data | jobs | mode |",
             "| --- " * 12 + "|"]
    for r in cases:
        d, o, m = r["data"], r["ours"], r["mllib"]
        best = _optimum(r)
        per_seed = ", ".join(f"{c / best:.4f}" for c in _our_costs(r))
        others = ", ".join(f"{f['fit_seconds']:.1f}" for f in r.get("other_seeds", []))
        lines.append(
            f"| {r['case']} | {d['rows']:,} x {d['features']} | {d['k']} "
            f"| {o['fit_seconds']:.1f} | {m['fit_seconds']:.1f} | **{r['speedup']:.1f}x** | "
            f"{others} | {per_seed} | {m['cost'] / best:.4f} | {o['passes_over_data']:.2f} | "
            f"{o['jobs']} | {o['fit_mode']} |")
    lines += ["", "Our fit seconds split (count and sample / init / passes; stop reason):", ""]
    lines += [f"- {r['case']}: {r['ours']['prepare_seconds']:.1f} / "
              f"{r['ours']['init_seconds']:.1f} / {r['ours']['loop_seconds']:.1f} s "
              f"({r['ours']['stop_reason']}); MLlib {r['mllib']['iterations']} iterations"
              for r in cases]
    return "\n".join(lines)


def _median_fit(r) -> float:
    """Our median fit seconds over seeds 1-3 (each a fit with default Params on the same
    cached input): one run on this shared machine can take twice as long as the next."""
    return float(statistics.median([r["ours"]["fit_seconds"]]
                           + [f["fit_seconds"] for f in r.get("other_seeds", [])]))


def _speed_row(r, want):
    median = r["mllib"]["fit_seconds"] / _median_fit(r)
    return (f"{median:.1f}x (median of seeds 1-3, {_median_fit(r):.1f} s vs "
            f"{r['mllib']['fit_seconds']:.1f} s; seed 1 alone {r['speedup']:.1f}x)",
            median / want)


def _target_rows(result):
    """(target, measured, ratio, met) per issue-15 target that this run measured. The ratio
    is measured / target, oriented so that >= 1 means the target is met; speed is our
    median fit over seeds 1-3 against MLlib's one fit."""
    rows = []
    cases = {r["case"]: r for r in result["cases"]}
    for name, want in (("1M", 10), ("10M", 10), ("demo", 5), ("100k", 1), ("10k", 1)):
        r = cases.get(name)
        if r is not None:
            rows.append((f"1. {name}: fit >= {want}x faster than MLlib", *_speed_row(r, want)))
    for name in ("10k", "100k", "demo", "1M", "10M"):
        r = cases.get(name)
        if r is not None:
            worst = max(_our_costs(r)) / _optimum(r)
            rows.append((f"2. {name}: cost <= 1.01 x optimum, seeds 1-3 (worst)",
                         f"{worst:.4f}", 1.01 / worst))
    for ds in result.get("datasets", []):
        rows.append((f"2. {ds['name']}: median cost <= 1.02 x scikit-learn MiniBatchKMeans",
                     f"{ds['ratio']:.4f}", 1.02 / ds["ratio"]))
    r = result.get("scale")
    if r:
        rows.append((f"3. {r['rows'] // 10**6}M from Parquet, {r['driver_memory']} driver: "
                     "fit <= 3 x one Python pass", f"{r['fit_over_pass']:.2f} x "
                     f"({r['fit_seconds']:.0f} s vs {r['python_pass_seconds']:.0f} s)",
                     3 / r["fit_over_pass"]))
        rows.append((f"3. {r['rows'] // 10**6}M: cost <= 1.01 x scikit-learn KMeans on a "
                     f"{r['sample_rows'] // 10**6}M sample", f"{r['cost_ratio']:.4f}",
                     1.01 / r["cost_ratio"]))
    r = cases.get("k1000")
    if r is not None:
        rows.append(("4. k=1000: fit >= 10x faster than MLlib", *_speed_row(r, 10)))
        if isinstance(r["references"].get("sklearn_minibatch"), dict):
            rel = r["ours"]["cost"] / r["references"]["sklearn_minibatch"]["cost"]
            rows.append(("4. k=1000: cost <= scikit-learn MiniBatchKMeans", f"{rel:.4f} x",
                         1 / rel))
    return [(t, v, q, q >= 1) for t, v, q in rows]


def targets_markdown(result) -> str:
    lines = ["## Issue 15 targets", "",
             "Ratio: measured against the target, >= 1.00 when the target is met.", "",
             "| target | measured | ratio | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t} | {v} | {q:.2f} | {'yes' if ok else 'no'} |"
              for t, v, q, ok in _target_rows(result)]
    return "\n".join(lines)


def markdown(result) -> str:
    from micro import kernel_markdown, steps_markdown
    from local_steps import local_steps_markdown
    from scale import scale_markdown
    from scoring import scoring_markdown

    blas = result["native_blas"]
    lines = [f"# Benchmark {result['label']} ({result['date']})", "",
             f"Machine: {result['machine']}. MLlib native BLAS: "
             + (f"yes ({blas['library']})" if blas["available"] else
                "**no** (MLlib ran on its Java fallback)") + ".",
             f"Total wall time {result['wall_seconds'] / 60:.0f} min.", "",
             targets_markdown(result), ""]
    if result["cases"]:
        lines += [cases_markdown(result["cases"]), ""]
    if result.get("datasets"):
        lines += [datasets_markdown(result["datasets"]), ""]
    if result.get("kernel"):
        lines += [kernel_markdown(result["kernel"]), ""]
    for s in result.get("steps", []):
        lines += [steps_markdown(s), ""]
    if result.get("step_ratio"):
        a, b = result["steps"][0], result["steps"][-1]
        lines += [f"Per-step seconds, {b['n_rows']:,} rows / {a['n_rows']:,} rows at batch "
                  f"{a['batch_size']:,}: **{result['step_ratio']:.2f}** (flat is 1.0).", ""]
    if result.get("scoring"):
        lines += [scoring_markdown(result["scoring"]), ""]
    if result.get("local_steps"):
        lines += [local_steps_markdown(result["local_steps"]), ""]
    if result.get("scale"):
        lines += [scale_markdown(result["scale"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=None, help=f"some of {list(CASES)}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--local-max-mb", type=int, default=1024)
    p.add_argument("--step-rows", type=int, nargs="*", default=list(STEP_ROWS))
    p.add_argument("--step-batch", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-kernel", action="store_true")
    p.add_argument("--no-datasets", action="store_true")
    p.add_argument("--scoring-rows", type=int, default=SCORING_ROWS,
                   help="rows of the scoring table (0: no scoring benchmark)")
    p.add_argument("--local-steps-rows", type=int, default=2_000_000,
                   help="rows of the localSteps A/B (0: not run)")
    p.add_argument("--scale-rows", type=int, default=SCALE_ROWS,
                   help="rows of the scale benchmark (0: not run)")
    p.add_argument("--scale-memory", default="2g", help="its driver memory")
    p.add_argument("--scale-sample", type=int, default=5_000_000,
                   help="rows of its scikit-learn KMeans sample")
    p.add_argument("--data-dir", default="out/bench-data")
    p.add_argument("--label", default="bench")
    p.add_argument("--quick", action="store_true",
                   help="the 10k, 100k and 1M cases and 100k/1M step tables only")
    args = p.parse_args(argv)
    if args.quick:
        args.step_rows = [100_000, 1_000_000]
        args.scoring_rows = min(args.scoring_rows, 200_000)
        args.scale_rows = 0
        args.local_steps_rows = min(args.local_steps_rows, 200_000)
    cases = args.cases if args.cases is not None else list(QUICK if args.quick else CASES)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    log = logging.getLogger("bench")
    from micro import kernel_micro, step_breakdown
    from local_steps import local_steps_bench
    from scale import run_subprocess
    from scoring import scoring_bench

    from minibatch_kmeans.evaluate.compare import native_blas
    from minibatch_kmeans.spark.session import get_spark

    t_start = time.perf_counter()
    spark = get_spark("minibatch-kmeans-bench", master="local[2]",
                      conf={"spark.driver.memory": "18g", "spark.sql.shuffle.partitions": "8",
                            "spark.ui.showConsoleProgress": "false"})
    date = dt.date.today().isoformat()
    warm_up(spark, args, log)
    result = {"label": args.label, "date": date,
              "machine": f"{os.cpu_count()} cores, local[2], driver memory 18g",
              "native_blas": native_blas(),
              "cases": [compare_case(spark, c, args, log) for c in cases]}
    if not args.no_datasets:
        result["datasets"] = datasets_bench(spark, log)
    if not args.no_kernel:
        result["kernel"] = kernel_micro(log)
    result["steps"] = []
    for rows in args.step_rows:
        df, _ = get_data(spark, rows, 32, 50, args.seed, args.data_dir)
        result["steps"].append(step_breakdown(spark, df, [f"x{i}" for i in range(32)], 50,
                                              args.step_batch, args.seed, log,
                                              steps=args.steps))
    result["scoring"] = []
    if args.scoring_rows:
        df, _ = get_data(spark, args.scoring_rows, 32, 50, args.seed, args.data_dir)
        cols = [f"x{i}" for i in range(32)]
        result["scoring"] = [
            scoring_bench(spark, df, cols, 50, args.seed, log, f"out/bench/{args.label}/scored",
                          cached=cached) for cached in (False, True)]
    if args.local_steps_rows:
        df, _ = get_data(spark, args.local_steps_rows, 32, 50, args.seed, args.data_dir)
        result["local_steps"] = local_steps_bench(spark, df, [f"x{i}" for i in range(32)], 50,
                                                  args.step_batch, args.seed, log)
    if len(result["steps"]) >= 2:
        result["step_ratio"] = (result["steps"][-1]["total"]
                                / result["steps"][0]["total"])
    spark.stop()  # before the scale run's own JVM starts
    if args.scale_rows:
        result["scale"] = run_subprocess(
            args.scale_rows, args.scale_memory, args.scale_sample, args.seed, args.data_dir,
            f"out/bench/{args.label}/scale.json", log)
    result["wall_seconds"] = time.perf_counter() - t_start
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    from minibatch_kmeans.evaluate.report import write_json

    write_json(result, str(out / f"{date}-{args.label}.json"))
    md = markdown(result)
    (out / f"{date}-{args.label}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
