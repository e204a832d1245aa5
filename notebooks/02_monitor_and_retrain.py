# Databricks notebook source
# MAGIC %md
# MAGIC # Monitor the champion, retrain and promote on drift
# MAGIC
# MAGIC Trains a first model on a reference table and registers it in MLflow as the champion,
# MAGIC with reference statistics from held-out rows. Then a new slice arrives whose means
# MAGIC have moved in a few features: the drift report finds it, a challenger is trained
# MAGIC (warm start from the champion's centers), both are judged on the same held-out rows,
# MAGIC and the challenger replaces the champion only when it is better by the threshold.
# MAGIC On Databricks the defaults are the workspace's tracking server, Unity Catalog's
# MAGIC registry (`catalog.schema.name`) and a `/Volumes` output directory; without `dbutils`
# MAGIC the widget defaults apply, or `MBKM_<NAME>` environment variables.

# COMMAND ----------

import os

from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.app.config import MonitorConfig
from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs
from minibatch_kmeans.evaluate.holdout import holdout_split
from minibatch_kmeans.lifecycle.drift import drift_markdown, reference_statistics
from minibatch_kmeans.tables.io import read_table
from minibatch_kmeans.app.monitor_job import run_monitor
from minibatch_kmeans.app.notebook import Notebook
from minibatch_kmeans.lifecycle.registry import tracking

nb = Notebook(globals())
spark = nb.spark()
output_dir = nb.widget("output_dir", nb.default_dir("02"),
                       "output directory (a /Volumes path on Databricks)")
tracking_uri = nb.widget("tracking_uri", "", "MLflow tracking URI (empty: the workspace's on "
                         "Databricks, else SQLite under the output directory)")
model_name = nb.widget("model_name", nb.default("minibatch-kmeans-notebook",
                                                "main.default.minibatch_kmeans_notebook"),
                       "registered model (catalog.schema.name in Unity Catalog)")
experiment = nb.widget("experiment", nb.default("minibatch-kmeans-notebooks",
                                                "/Shared/minibatch-kmeans-notebooks"),
                       "MLflow experiment (a workspace path on Databricks)")
rows = int(nb.widget("rows", "100000", "rows per table"))
k = int(nb.widget("k", "10", "clusters"))
shift = float(nb.widget("shift", "3.0", "mean shift of x0, x1, x2 in the new slice"))

# COMMAND ----------

# MAGIC %md ## A champion trained on the reference table

# COMMAND ----------

spec = BlobSpec(rows=rows, n_features=8, k=k, seed=11)
reference_path = os.path.join(output_dir, "reference")
write_blobs(spark, spec, reference_path)
reference_df = read_table(spark, reference_path)
features = [c for c in reference_df.columns if c.startswith("x")]
train, holdout = holdout_split(reference_df, 0.1, seed=1, cols=features)
model = MiniBatchKMeans(k=k, inputCols=features, batchSize=5000, seed=1).fit(train)

registry = tracking(tracking_uri or None, experiment,
                    root=os.path.join(output_dir, "store"))
version = registry.log_model(model, model_name, training_table=reference_path,
                             reference_stats=reference_statistics(model, holdout))
if registry.champion(model_name) is None:
    registry.promote(model_name, version.version, expected_current=None,
                     reason="first model")
print(f"champion: {model_name} version {registry.champion(model_name).version}")

# COMMAND ----------

# MAGIC %md ## A new slice whose means moved

# COMMAND ----------

slice_path = os.path.join(output_dir, "slice")
moved = read_table(spark, reference_path)
for column in ("x0", "x1", "x2"):
    moved = moved.withColumn(column, moved[column] + shift)
moved.write.mode("overwrite").parquet(slice_path)

config = MonitorConfig.from_dict({
    "input": {"path": slice_path, "features": {"inputCols": features}},
    "model": {"batchSize": 5000, "seed": 2},
    "mlflow": {"tracking_uri": tracking_uri or None, "root": os.path.join(output_dir, "store"),
               "experiment": experiment, "model_name": model_name},
    "monitor": {"ignore_columns": ["id", "label"], "holdout_fraction": 0.2,
                "sample_size": 5000, "min_improvement": 0.02},
    "output": {"dir": os.path.join(output_dir, "monitor")},
})
result = run_monitor(spark, config, run_id="notebook")
print(result.text())

# COMMAND ----------

# MAGIC %md ## The drift report and the decision

# COMMAND ----------

nb.show(drift_markdown(result.report), "drift")
nb.show_png(os.path.join(output_dir, "monitor", "notebook", "drift.png"))  # the run's dir
print(f"champion now: version {registry.champion(model_name).version}")
