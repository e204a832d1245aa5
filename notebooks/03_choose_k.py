# Databricks notebook source
# MAGIC %md
# MAGIC # Choose k
# MAGIC
# MAGIC Fits mini-batch k-means over a grid of k, measures each fit on held-out rows (cost per
# MAGIC row and silhouette on a sample), recommends the k with the best silhouette and reports
# MAGIC the elbow of the cost curve beside it. Without `dbutils` the widget defaults apply, or
# MAGIC `MBKM_<NAME>` environment variables.

# COMMAND ----------

import os

from minibatch_kmeans.tables.datagen import BlobSpec, write_blobs
from minibatch_kmeans.tables.io import read_table
from minibatch_kmeans.app.notebook import Notebook
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.lifecycle.tune import choose_k, markdown, write_tune

nb = Notebook(globals())
spark = nb.spark()
output_dir = nb.widget("output_dir", nb.default_dir("03"),
                       "output directory (a /Volumes path on Databricks)")
data_path = nb.widget("data_path", "", "input Parquet table (empty: generate blobs)")
rows = int(nb.widget("rows", "100000", "rows to generate"))
true_k = int(nb.widget("true_k", "6", "blobs to generate"))
grid = [int(v) for v in nb.widget("k_values", "2,3,4,5,6,7,8,10", "k values").split(",")]

# COMMAND ----------

if not data_path:
    data_path = os.path.join(output_dir, "blobs")
    write_blobs(spark, BlobSpec(rows=rows, n_features=8, k=true_k, seed=5), data_path)
df = read_table(spark, data_path)
features = [c for c in df.columns if c.startswith("x")]

# COMMAND ----------

# MAGIC %md ## The grid

# COMMAND ----------

result = choose_k(df, MiniBatchKMeans(inputCols=features, batchSize=5000, seed=1), grid,
                  sample_size=min(5000, rows // 5))
files = write_tune(result, output_dir)
nb.show(markdown(result), "cost and silhouette by k")
nb.show_png(files["k_curves.png"])
