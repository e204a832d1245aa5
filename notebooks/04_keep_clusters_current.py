# Databricks notebook source
# MAGIC %md
# MAGIC # Keep the clusters current from a stream
# MAGIC
# MAGIC Trains a model on a first stage of files, then streams new files into it with
# MAGIC `minibatch_kmeans.app.stream_job.run_stream` (what `jobs/stream.py` runs): one mini-batch
# MAGIC update per micro-batch, old data fading with a half-life, the state saved with the
# MAGIC batch id so a re-run never applies a micro-batch twice. A second stage of files whose
# MAGIC clusters moved shows the centers following them. Without `dbutils` the widget
# MAGIC defaults apply, or `MBKM_<NAME>` environment variables.

# COMMAND ----------

import os

import numpy as np
import pandas as pd

from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans.app.config import StreamConfig
from minibatch_kmeans.app.notebook import Notebook
from minibatch_kmeans.app.stream_job import run_stream

nb = Notebook(globals())
spark = nb.spark()
output_dir = nb.widget("output_dir", nb.default_dir("04"),
                       "output directory (a /Volumes path on Databricks)")
rows = int(nb.widget("rows", "20000", "rows per file"))
k = int(nb.widget("k", "5", "clusters"))
half_life = float(nb.widget("half_life", "1", "half-life in micro-batches"))
incoming = os.path.join(output_dir, "incoming")
rng = np.random.default_rng(4)
true_centers = rng.uniform(-10, 10, size=(k, 3))


def land_files(stage: int, shift: float, files: int = 3) -> None:
    """New files in the incoming folder: blobs around the true centers moved by shift."""
    for i in range(files):
        labels = rng.integers(0, k, rows)
        X = true_centers[labels] + shift + rng.normal(size=(rows, 3))
        frame = pd.DataFrame(X, columns=["x0", "x1", "x2"])
        frame.insert(0, "id", np.arange(rows) + (stage * 100 + i) * rows)
        spark.createDataFrame(frame).coalesce(1).write.mode("append").parquet(incoming)

# COMMAND ----------

# MAGIC %md ## A model on the first stage, then the stream

# COMMAND ----------

land_files(0, shift=0.0)
model = MiniBatchKMeans(k=k, inputCols=["x0", "x1", "x2"], batchSize=5000, seed=1).fit(
    spark.read.parquet(incoming))
model.write().overwrite().save(os.path.join(output_dir, "model0"))
cfg = StreamConfig.from_dict({
    "input": {"path": incoming},
    "stream": {"model": os.path.join(output_dir, "model0"), "half_life": half_life,
               "max_files_per_trigger": 1, "id_columns": ["id"],
               "initial_weight": "sizes"},  # the first model counts as its training rows
    "output": {"dir": os.path.join(output_dir, "stream")}})
first = run_stream(spark, cfg)  # the files there now; a re-run only reads new ones

# COMMAND ----------

# MAGIC %md ## The clusters move: the centers follow

# COMMAND ----------

land_files(1, shift=3.0, files=5)
second = run_stream(spark, cfg)
metrics = spark.read.parquet(cfg.output.metrics).orderBy("batch_id")
nb.show(metrics.select("batch_id", "rows", "discount", "cost_per_row", "max_center_shift",
                       "num_updates"), "one row per micro-batch")
current = MiniBatchKMeansModel.load(cfg.output.model)
moved = np.array(current.clusterCenters())
distance_to_moved = np.linalg.norm(moved[:, None] - (true_centers + 3.0)[None], axis=2).min(1)
nb.show(pd.DataFrame({"cluster": range(k), "distance to the moved true center":
                      distance_to_moved.round(3)}), "where the centers are now")
