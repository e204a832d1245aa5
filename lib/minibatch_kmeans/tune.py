"""Moved to :mod:`minibatch_kmeans.lifecycle.tune`; this import
path stays for existing code."""
from .lifecycle.tune import *  # noqa: F401,F403
