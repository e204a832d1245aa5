"""Moved to :mod:`minibatch_kmeans.ml.estimator`; this import path stays for existing code
and for saved Pipelines, whose metadata names their stages' classes by it."""
from .ml.estimator import (MiniBatchKMeans, MiniBatchKMeansModel,  # noqa: F401
                           MiniBatchKMeansSummary)
