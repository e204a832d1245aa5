"""The pyspark.ml layer: the MiniBatchKMeans estimator and its model (Params, fit,
transform, persistence). Imports core and spark only."""
