# Databricks notebook source
# MAGIC %md
# MAGIC # Train mini-batch k-means and compare it with MLlib KMeans
# MAGIC
# MAGIC Generates a table of Gaussian blobs (or reads yours), fits `MiniBatchKMeans`, and runs
# MAGIC the same table through Spark MLlib's `KMeans`: cost, time and cluster agreement side by
# MAGIC side. Widgets set the sizes; without `dbutils` (run as a plain script) their defaults
# MAGIC apply, or `MBKM_<NAME>` environment variables.

# MAGIC
# MAGIC Install the wheel from `make dist` on the cluster (or `%pip install` it from a volume)
# MAGIC with the `compare` extra.

# COMMAND ----------

import os

from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.evaluate.compare import compare_with_mllib, markdown
from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs
from minibatch_kmeans.tables.io import read_table
from minibatch_kmeans.app.notebook import Notebook
from minibatch_kmeans.evaluate.report import plot_convergence, summary_table

nb = Notebook(globals())
spark = nb.spark()
output_dir = nb.widget("output_dir", nb.default_dir("01"),
                       "output directory (a /Volumes path on Databricks)")
data_path = nb.widget("data_path", "", "input Parquet table (empty: generate blobs)")
rows = int(nb.widget("rows", "200000", "rows to generate"))
n_features = int(nb.widget("features", "16", "features to generate"))
k = int(nb.widget("k", "20", "clusters"))
batch_size = int(nb.widget("batch_size", "10000", "batch size"))

# COMMAND ----------

# MAGIC %md ## The data

# COMMAND ----------

if not data_path:
    data_path = os.path.join(output_dir, "blobs")
    written = write_blobs(spark, BlobSpec(rows=rows, n_features=n_features, k=k, seed=7),
                          data_path)
    print(f"generated {written['rows']:,} rows x {written['numFeatures']} features in {k} blobs")
df = read_table(spark, data_path)
features = [c for c in df.columns if c.startswith("x")]
nb.show(df.limit(5), "first rows")

# COMMAND ----------

# MAGIC %md ## Fit mini-batch k-means

# COMMAND ----------

model = MiniBatchKMeans(k=k, inputCols=features, batchSize=batch_size, seed=1).fit(df)
summary = model.summary.as_dict()
nb.show(summary_table(summary), "fit summary")
nb.show_png(plot_convergence(summary["history"], os.path.join(output_dir, "convergence.png")))

# COMMAND ----------

# MAGIC %md ## Against MLlib KMeans, on the same cached input

# COMMAND ----------

result = compare_with_mllib(df, MiniBatchKMeans(k=k, inputCols=features, seed=1,
                                                batchSize=batch_size),
                            sample_size=min(20000, rows), references=[],
                            output_dir=os.path.join(output_dir, "compare"))
nb.show(markdown(result), "comparison")
for name in ("cost_vs_seconds.png", "cluster_sizes.png"):
    path = os.path.join(output_dir, "compare", name)
    if os.path.exists(path):
        nb.show_png(path)
