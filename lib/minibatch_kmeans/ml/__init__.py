"""The pyspark.ml layer: the MiniBatchKMeans estimator and its model (``estimator``), their
shared Params (``params``), prediction (``predict``) and training summary (``summary``).
Imports core and spark only."""
