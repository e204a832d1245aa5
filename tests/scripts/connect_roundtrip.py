"""Run by tests/test_connect.py in its own process: fit, transform, save and load, and the
comparison with MLlib, through a Spark Connect session (what Databricks serverless runs on).
Prints one JSON line."""
import json
import sys

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession


def main(out_dir: str) -> int:
    spark = SparkSession.builder.remote("local[2]").getOrCreate()
    from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
    from minibatch_kmeans.spark.session import is_connect

    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [6.0, 6.0], [0.0, 6.0]])
    X = np.vstack([rng.normal(c, 0.2, (300, 2)) for c in centers])
    df = spark.createDataFrame(pd.DataFrame(X, columns=["a", "b"]))
    est = MiniBatchKMeans(k=3, inputCols=["a", "b"], batchSize=150, seed=4, distanceCol="d")
    model = est.fit(df)
    preds = model.transform(df).select("prediction", "d").toPandas()
    model.write().overwrite().save(f"{out_dir}/model")
    model.write().overwrite().save(f"{out_dir}/model")  # overwrite works without the JVM
    est.write().overwrite().save(f"{out_dir}/estimator")
    loaded = MiniBatchKMeansModel.load(f"{out_dir}/model")
    reloaded_preds = loaded.transform(df).select("prediction").toPandas()
    # every fit mode runs over Connect: the pass fit (a warm-up job in a thread, the epochs
    # and exact passes) and the per-step fit
    modes = {}
    for mode in ("pass", "step"):
        m = MiniBatchKMeans(k=3, inputCols=["a", "b"], batchSize=150, seed=4,
                            fitMode=mode).fit(df)
        modes[mode] = {"sizes": sorted(m.summary.clusterSizes),
                       "fit_mode": m.summary.fitMode, "cost": m.summary.trainingCost}
    from minibatch_kmeans.evaluate.compare import compare_with_mllib

    compared = compare_with_mllib(df, MiniBatchKMeans(k=3, inputCols=["a", "b"], seed=4,
                                                      batchSize=150),
                                  sample_size=300, references=[],
                                  output_dir=f"{out_dir}/compare")
    print(json.dumps({
        "connect": is_connect(spark),
        "centers": np.array(model.clusterCenters()).tolist(),
        "loaded_centers": np.array(loaded.clusterCenters()).tolist(),
        "sizes": model.summary.clusterSizes,
        "modes": modes,
        "cost": model.summary.trainingCost,
        "compute_cost": loaded.computeCost(df),
        "same_predictions": bool((preds["prediction"] == reloaded_preds["prediction"]).all()),
        "max_distance": float(preds["d"].max()),
        "estimator_k": MiniBatchKMeans.load(f"{out_dir}/estimator").getK(),
        "compare": {key: compared[key] for key in ("agreement", "cost_ratio", "data")},
    }))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
