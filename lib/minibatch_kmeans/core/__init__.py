"""The algorithm core: NumPy only (numba optional), no Spark import; imports only the
base modules (errors, paths, checks).

Kernels (:mod:`.kernels`), initialisation (:mod:`.init`), the update rule, reassignment
and early stopping (:mod:`.minibatch`), and the driver loop shared by the Spark fit and
the NumPy reference (:mod:`.loop`).
"""
from .init import kmeans_parallel, kmeans_plusplus, random_init
from .kernels import BatchStats, assign, batch_stats
from .loop import local_batch_runner, run_steps
from .minibatch import (STOP_MAX_ITER, STOP_NO_IMPROVEMENT, STOP_TOL, Convergence,
                        MiniBatchState, minibatch_update, reassign_low_count)

__all__ = [
    "BatchStats", "Convergence", "MiniBatchState", "STOP_MAX_ITER", "STOP_NO_IMPROVEMENT",
    "STOP_TOL", "assign", "batch_stats", "kmeans_parallel", "kmeans_plusplus",
    "local_batch_runner", "minibatch_update", "random_init", "reassign_low_count", "run_steps",
]
